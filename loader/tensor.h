// Tensor types and views shared by every loader and backend.
//
// Shape convention (one place, everywhere in the engine): shape[0] is the OUTERMOST dimension, as in
// PyTorch/safetensors. A weight matrix W (out_features x in_features) has shape {out, in} and is stored
// row by row, each row `in` elements long. GGUF writes dimensions innermost first (ne[0] = in); the GGUF
// loader reverses them so that both formats describe the same matrix the same way.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace llm {

// Values are GGML's type ids, so a GGUF tensor's type field converts directly.
enum class GGMLType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
  I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39,
};

struct GGMLTypeTraits {
  const char* name;     // "Q4_K"; "?" for an id we do not know
  int64_t block_elems;  // elements per block (1 for plain types)
  int64_t block_bytes;  // bytes per block (0 for an id we do not know)
};
GGMLTypeTraits ggml_type_traits(GGMLType t);
inline const char* ggml_type_name(GGMLType t) { return ggml_type_traits(t).name; }
// Bytes for n elements of type t; n must be a multiple of the block size (throws llm::Error otherwise).
size_t ggml_row_bytes(GGMLType t, int64_t n);
// True for the types the engine can dequantise (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K).
bool ggml_type_supported(GGMLType t);
// "F32, F16, BF16, Q4_0, ..." for error messages.
std::string ggml_supported_type_list();

// A tensor as it lies in a mapped file: never owns its data.
struct TensorView {
  std::string name;
  GGMLType type = GGMLType::F32;
  std::vector<int64_t> shape;  // outermost first; see the convention above
  const uint8_t* data = nullptr;
  size_t nbytes = 0;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  int64_t rows() const { return shape.size() <= 1 ? 1 : numel() / shape.back(); }
  int64_t cols() const { return shape.empty() ? 1 : shape.back(); }
};

std::string shape_str(const std::vector<int64_t>& shape);  // "[576, 49152]"

}  // namespace llm
