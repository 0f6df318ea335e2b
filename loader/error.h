// llm::Error: the one exception type of the engine. Messages name the file or field, what was expected,
// what was found, and what to do ("re-download", "supported: ..."). The CLI prints e.what() and exits 1.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace llm {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// errorf("tensor ", name, ": expected ", a, " got ", b) -> throws Error with the pieces streamed together.
template <class... Args>
[[noreturn]] inline void fail(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  throw Error(os.str());
}

}  // namespace llm
