// The subcommands of `llm`. Each lives in its own cmd_*.cpp and returns the process exit code; llm::Error
// thrown out of one is printed by main() as "llm: error: ..." with exit code 1.
#pragma once

namespace llm_cli {
int cmd_inspect(int argc, char** argv);
int cmd_tokenize(int argc, char** argv);
int cmd_run(int argc, char** argv);
int cmd_chat(int argc, char** argv);
int cmd_perplexity(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_compress(int argc, char** argv);
int cmd_eval(int argc, char** argv);
}  // namespace llm_cli
