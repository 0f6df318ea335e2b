// llm run: prompt -> generated text streamed to stdout; stats to stderr.
#include <cstdio>

#include "commands.h"
#include "gen_common.h"
#include "loader/error.h"

namespace llm_cli {

int cmd_run(int argc, char** argv) {
  const std::vector<FlagSpec> spec = concat(concat(model_flags(),
                                                   {
                                                       {"-p,--prompt", "TEXT", "the prompt"},
                                                       {"-f,--file", "FILE", "read the prompt from a file"},
                                                       {"-n,--n-predict", "N", "tokens to generate (default 128)"},
                                                       {"-c,--ctx-size", "N", "context size (default 4096)"},
                                                       {"--chat", nullptr, "wrap the prompt in the model's chat template"},
                                                       {"--stop", "TEXT", "stop when the output contains TEXT"},
                                                       {"--ignore-eos", nullptr, "keep generating after EOS"},
                                                   }),
                                            sampling_flags());
  Args a = parse_args("run", argc, argv, spec);
  if (a.has("help")) {
    print_help("run", "[-m PATH] -p TEXT [-n N] [--temp T] [--top-k K] [--top-p P] [--min-p P] [--seed S] [--chat] [-c CTX]",
               spec);
    return 0;
  }
  if (!a.positional.empty()) llm::fail("llm run: unexpected argument '", a.positional[0], "' (the prompt is given with -p)");
  if (a.has("prompt") && a.has("file")) llm::fail("llm run: give the prompt with -p or -f, not both");
  if (!a.has("prompt") && !a.has("file")) llm::fail("llm run: no prompt: give one with -p TEXT or -f FILE");
  const std::string prompt = a.has("file") ? read_text_file(a.get("file")) : a.get("prompt");
  if (prompt.empty()) llm::fail("llm run: the prompt is empty");
  const long long n_predict = a.get_int("n-predict", 128);
  if (n_predict < 1) llm::fail("llm run: -n must be at least 1, got ", n_predict);
  llm::GenerateOptions g;
  g.max_tokens = static_cast<int>(n_predict);
  g.sampling = sampling_params(a);
  g.stop_at_eos = !a.has("ignore-eos");
  if (a.has("stop")) g.stop.push_back(a.get("stop"));
  const int n_ctx = context_size(a, 4096);

  llm::Model model(a.get("model", default_model_path()), load_options(a));
  if (model.config().max_seq_len > 0 && n_ctx > model.config().max_seq_len)
    llm::fail("llm run: -c ", n_ctx, " exceeds the model's maximum context of ", model.config().max_seq_len);
  std::vector<int> tokens = a.has("chat") ? model.tokenize(model.chat_prompt({{"user", prompt}}, true), false, true)
                                          : model.tokenize(prompt, true, false);
  if (tokens.empty()) llm::fail("llm run: the prompt encodes to no tokens");
  if (tokens.size() >= static_cast<size_t>(n_ctx))
    llm::fail("llm run: the prompt is ", tokens.size(), " tokens but the context is ", n_ctx,
              " (room is needed for at least one generated token); raise -c or shorten the prompt");
  llm::Session session(model, {.n_ctx = n_ctx});
  session.feed(tokens);
  const llm::GenerateResult r = session.generate(g, [](const std::string& piece, int) {
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    return true;
  });
  std::fputc('\n', stdout);
  if (r.stop == llm::StopReason::context_full)
    std::fprintf(stderr, "llm run: stopped early: the context of %d tokens is full (raise -c)\n", n_ctx);
  print_session_stats(session);
  return 0;
}

}  // namespace llm_cli
