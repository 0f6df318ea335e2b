// llm inspect: not built yet (issue 2). Replaced by the real command when that issue lands.
#include <cstdio>

#include "commands.h"

namespace llm_cli {
int cmd_inspect(int, char**) {
  std::fprintf(stderr, "llm inspect: not implemented yet (issue 2)\n");
  return 2;
}
}  // namespace llm_cli
