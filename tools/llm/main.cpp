// llm: the command-line front end. A thin layer over libllm; see README.md for every subcommand.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "commands.h"
#include "loader/error.h"

namespace {

struct Command {
  const char* name;
  int (*fn)(int, char**);
  const char* summary;
};

const Command kCommands[] = {
    {"inspect", llm_cli::cmd_inspect, "print a model's config and tensor table"},
    {"tokenize", llm_cli::cmd_tokenize, "text -> token ids (or pieces)"},
    {"run", llm_cli::cmd_run, "prompt -> generated text, streamed"},
    {"chat", llm_cli::cmd_chat, "interactive chat with the model's template"},
    {"perplexity", llm_cli::cmd_perplexity, "perplexity of a text file"},
    {"bench", llm_cli::cmd_bench, "prefill/decode speed, bytes moved, bandwidth"},
    {"compress", llm_cli::cmd_compress, "build a low-rank KV compression profile"},
    {"eval", llm_cli::cmd_eval, "long-context tasks in LongBench format"},
};

void usage() {
  std::printf("usage: llm COMMAND [flags]   (llm COMMAND --help for its flags)\n\ncommands:\n");
  for (const auto& c : kCommands) std::printf("  %-12s %s\n", c.name, c.summary);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "--help")) {
    usage();
    return argc < 2 ? 2 : 0;
  }
  for (const auto& c : kCommands) {
    if (std::strcmp(argv[1], c.name) != 0) continue;
    try {
      return c.fn(argc - 2, argv + 2);
    } catch (const llm::Error& e) {
      std::fprintf(stderr, "llm: error: %s\n", e.what());
      return 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "llm: internal error: %s\n", e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "llm: unknown command '%s'\n", argv[1]);
  usage();
  return 2;
}
