// libFuzzer target for the safetensors header parser: any byte string must either parse or throw llm::Error;
// never crash, read out of bounds or allocate without bound. Parsed tensors (capped in size) are converted to
// f32 so their byte spans are really read, and the JSON header is also fed to config_from_hf_json, which sees
// the same kind of hostile JSON. Seeds: fuzz/corpus/safetensors/ (tools/make_safetensors_fuzz_seeds.py).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "loader/error.h"
#include "loader/ggml_quants.h"
#include "loader/model_file.h"
#include "loader/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    llm::SafetensorsFile f = llm::safetensors_parse(data, size, "fuzz.safetensors");
    std::vector<float> out;
    size_t total = 0;
    for (const llm::TensorView& t : f.tensors) {
      // Empty tensors are skipped: an empty vector's data() may be null, and memcpy(null, src, 0) is UB that
      // UBSan reports inside tensor_to_f32 (the caller's problem, not the parser's).
      if (t.numel() == 0 || t.numel() > (1 << 16)) continue;
      out.resize(static_cast<size_t>(t.numel()));
      llm::tensor_to_f32(t, out.data());
      total += t.nbytes;
    }
    if (total > size) __builtin_trap();  // views must lie inside the input
  } catch (const llm::Error&) {
  }
  if (size > 8) {
    try {
      llm::config_from_hf_json(std::string(reinterpret_cast<const char*>(data) + 8, size - 8), "fuzz/config.json");
    } catch (const llm::Error&) {
    }
  }
  return 0;
}
