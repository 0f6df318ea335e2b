// complete: the smallest useful program on libllm. Loads a model, feeds a prompt, streams a greedy completion.
//   complete MODEL "PROMPT" [N]
#include <cstdio>
#include <cstdlib>
#include <string>

#include "engine/llm.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL PROMPT [N]\n", argv[0]);
    return 2;
  }
  try {
    llm::Model model(argv[1]);
    llm::Session session(model, {.n_ctx = 512});
    session.feed_text(argv[2], /*add_bos=*/true);
    llm::GenerateOptions options;
    options.max_tokens = argc > 3 ? std::atoi(argv[3]) : 32;
    session.generate(options, [](const std::string& piece, int) {
      std::fputs(piece.c_str(), stdout);
      std::fflush(stdout);
      return true;
    });
    std::fputc('\n', stdout);
  } catch (const llm::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
