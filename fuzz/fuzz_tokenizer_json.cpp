// libFuzzer target: tokenizer_from_json on arbitrary bytes must either load or throw llm::Error (never crash,
// hang or leak). When it loads, encoding and decoding a fixed text must work too.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "loader/error.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    llm::Tokenizer t = llm::tokenizer_from_json(text, "", "fuzz.json");
    std::vector<int32_t> ids = t.encode("Hello world 123 <|x|>", true, true);
    (void)t.decode(ids);
  } catch (const llm::Error&) {
  }
  return 0;
}
