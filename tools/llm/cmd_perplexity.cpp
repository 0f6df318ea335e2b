// llm perplexity: not built yet (issue 4). Replaced by the real command when that issue lands.
#include <cstdio>

#include "commands.h"

namespace llm_cli {
int cmd_perplexity(int, char**) {
  std::fprintf(stderr, "llm perplexity: not implemented yet (issue 4)\n");
  return 2;
}
}  // namespace llm_cli
