// llm compress: not built yet (issue 6). Replaced by the real command when that issue lands.
#include <cstdio>

#include "commands.h"

namespace llm_cli {
int cmd_compress(int, char**) {
  std::fprintf(stderr, "llm compress: not implemented yet (issue 6)\n");
  return 2;
}
}  // namespace llm_cli
