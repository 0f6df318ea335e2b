// llm bench: not built yet (issue 5). Replaced by the real command when that issue lands.
#include <cstdio>

#include "commands.h"

namespace llm_cli {
int cmd_bench(int, char**) {
  std::fprintf(stderr, "llm bench: not implemented yet (issue 5)\n");
  return 2;
}
}  // namespace llm_cli
