// llm eval: not built yet (issue 8). Replaced by the real command when that issue lands.
#include <cstdio>

#include "commands.h"

namespace llm_cli {
int cmd_eval(int, char**) {
  std::fprintf(stderr, "llm eval: not implemented yet (issue 8)\n");
  return 2;
}
}  // namespace llm_cli
