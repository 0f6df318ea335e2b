// llm run: not built yet (issue 4). Replaced by the real command when that issue lands.
#include <cstdio>

#include "commands.h"

namespace llm_cli {
int cmd_run(int, char**) {
  std::fprintf(stderr, "llm run: not implemented yet (issue 4)\n");
  return 2;
}
}  // namespace llm_cli
