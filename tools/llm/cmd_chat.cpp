// llm chat: not built yet (issue 4). Replaced by the real command when that issue lands.
#include <cstdio>

#include "commands.h"

namespace llm_cli {
int cmd_chat(int, char**) {
  std::fprintf(stderr, "llm chat: not implemented yet (issue 4)\n");
  return 2;
}
}  // namespace llm_cli
