// llm tokenize: not built yet (issue 3). Replaced by the real command when that issue lands.
#include <cstdio>

#include "commands.h"

namespace llm_cli {
int cmd_tokenize(int, char**) {
  std::fprintf(stderr, "llm tokenize: not implemented yet (issue 3)\n");
  return 2;
}
}  // namespace llm_cli
