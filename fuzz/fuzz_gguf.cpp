// libFuzzer target for the GGUF parser: any byte string must either parse or throw llm::Error; never crash,
// read out of bounds or allocate without bound. Parsed tensors of supported types are dequantised (capped in
// size) so the block decoders see hostile bytes too. Seeds: fuzz/corpus/gguf/ (tools/make_gguf_fuzz_seeds.py).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "loader/error.h"
#include "loader/ggml_quants.h"
#include "loader/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    llm::GGUFFile f = llm::gguf_parse(data, size, "fuzz.gguf");
    std::vector<float> out;
    for (const llm::TensorView& t : f.tensors) {
      if (!llm::ggml_type_supported(t.type) || t.numel() > (1 << 16)) continue;
      out.resize(size_t(t.numel()));
      llm::tensor_to_f32(t, out.data());
    }
    for (const auto& [key, v] : f.metadata) {
      if (v.type == llm::GGUFValueType::STRING) (void)f.get_string(key);
      if (v.is_int()) (void)f.get_int(key);
    }
  } catch (const llm::Error&) {
  }
  return 0;
}
