// llm chat: interactive chat with the model's template. Reads one user message per stdin line (works with a
// pipe as well as a terminal); the conversation is kept in one session and only the new tokens are fed.
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "commands.h"
#include "gen_common.h"
#include "loader/error.h"

namespace llm_cli {

int cmd_chat(int argc, char** argv) {
  const std::vector<FlagSpec> spec = concat(concat(model_flags(),
                                                   {
                                                       {"-n,--n-predict", "N", "max tokens per reply (default 512)"},
                                                       {"-c,--ctx-size", "N", "context size (default 4096)"},
                                                       {"-s,--system", "TEXT", "system prompt"},
                                                   }),
                                            sampling_flags());
  Args a = parse_args("chat", argc, argv, spec);
  if (a.has("help")) {
    print_help("chat", "[-m PATH] [-s SYSTEM] [-n N] [--temp T] ...  (one message per line on stdin; /exit quits)",
               spec);
    return 0;
  }
  if (!a.positional.empty()) llm::fail("llm chat: unexpected argument '", a.positional[0], "'");
  const long long n_predict = a.get_int("n-predict", 512);
  if (n_predict < 1) llm::fail("llm chat: -n must be at least 1, got ", n_predict);
  llm::GenerateOptions g;
  g.max_tokens = static_cast<int>(n_predict);
  g.sampling = sampling_params(a);
  const int n_ctx = context_size(a, 4096);
  llm::Model model(a.get("model", default_model_path()), load_options(a));
  llm::Session session(model, {.n_ctx = n_ctx});
  std::vector<llm::ChatTurn> turns;
  if (a.has("system")) turns.push_back({"system", a.get("system")});
  const bool interactive = isatty(STDIN_FILENO);
  std::string line;
  for (;;) {
    if (interactive) std::fprintf(stderr, "> "), std::fflush(stderr);
    if (!std::getline(std::cin, line)) break;
    if (line == "/exit" || line == "/quit") break;
    if (line.empty()) continue;
    turns.push_back({"user", line});
    const std::vector<int> all = model.tokenize(model.chat_prompt(turns, true), false, true);
    // feed only what the cache does not hold yet (the rendered conversation extends what was generated)
    const auto& hist = session.history();
    size_t common = 0;
    while (common < hist.size() && common < all.size() && hist[common] == all[common]) ++common;
    if (common < hist.size()) {  // the template re-tokenised differently: start the cache over
      session.reset();
      common = 0;
    }
    if (all.size() >= static_cast<size_t>(n_ctx))
      llm::fail("llm chat: the conversation is ", all.size(), " tokens and no longer fits the context of ", n_ctx,
                " (raise -c)");
    session.feed(std::vector<int>(all.begin() + common, all.end()));
    llm::GenerateResult r = session.generate(g, [](const std::string& piece, int) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
      return true;
    });
    std::fputc('\n', stdout);
    std::fflush(stdout);
    turns.push_back({"assistant", r.text});
  }
  print_session_stats(session);
  return 0;
}

}  // namespace llm_cli
