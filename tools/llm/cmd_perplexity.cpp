// llm perplexity: perplexity of a text file with the sliding-window algorithm of tests/data/golden/README.md
// (windows of -c tokens every --stride tokens, each token scored once; see llm::perplexity).
#include <cstdio>

#include "commands.h"
#include "gen_common.h"
#include "loader/error.h"

namespace llm_cli {

int cmd_perplexity(int argc, char** argv) {
  const std::vector<FlagSpec> spec = concat(model_flags(), {
                                                               {"-f,--file", "FILE", "the text to score"},
                                                               {"-c,--ctx-size", "N", "window size (default 512)"},
                                                               {"--stride", "S", "window stride (default: half the window)"},
                                                               {"--max-tokens", "N", "score only the first N tokens of the text"},
                                                               {"--json", nullptr, "print one JSON object"},
                                                           });
  Args a = parse_args("perplexity", argc, argv, spec);
  if (a.has("help")) {
    print_help("perplexity", "[-m PATH] -f FILE [-c CTX] [--stride S] [--json]", spec);
    return 0;
  }
  if (!a.positional.empty()) llm::fail("llm perplexity: unexpected argument '", a.positional[0], "'");
  if (!a.has("file")) llm::fail("llm perplexity: no text: give a file with -f FILE");
  const int n_ctx = context_size(a, 512);
  const long long stride = a.get_int("stride", n_ctx / 2 > 0 ? n_ctx / 2 : 1);
  if (stride < 1 || stride > n_ctx) llm::fail("llm perplexity: --stride must be in [1, ", n_ctx, "], got ", stride);
  const long long max_tokens = a.get_int("max-tokens", 0);
  if (max_tokens < 0) llm::fail("llm perplexity: --max-tokens must be >= 0, got ", max_tokens);
  const std::string text = read_text_file(a.get("file"));
  if (text.empty()) llm::fail("llm perplexity: '", a.get("file"), "' is empty");

  llm::Model model(a.get("model", default_model_path()), load_options(a));
  std::vector<int> tokens = model.tokenize(text, true, false);
  if (max_tokens > 0 && tokens.size() > static_cast<size_t>(max_tokens)) tokens.resize(max_tokens);
  llm::PerplexityResult r = llm::perplexity(model, tokens, n_ctx, static_cast<int>(stride), progress_bar("perplexity"));
  if (a.has("json")) {
    std::printf(
        "{\"ppl\": %.6f, \"nll\": %.8f, \"tokens\": %lld, \"text_tokens\": %zu, \"windows\": %d, \"ctx\": %d, "
        "\"stride\": %lld, \"seconds\": %.3f, \"tok_per_s\": %.1f, \"kv\": \"%s\", \"kv_bytes_per_token\": %.1f}\n",
        r.ppl, r.nll, static_cast<long long>(r.tokens), tokens.size(), r.windows, n_ctx, stride, r.seconds,
        r.seconds > 0 ? r.tokens / r.seconds : 0.0, model.kv_description().c_str(), r.kv_bytes_per_token);
  } else {
    std::printf("perplexity: %.4f  (mean nll %.6f over %lld tokens, %d windows of %d, stride %lld, %.1f s, kv %s)\n",
                r.ppl, r.nll, static_cast<long long>(r.tokens), r.windows, n_ctx, stride, r.seconds,
                model.kv_description().c_str());
  }
  return 0;
}

}  // namespace llm_cli
