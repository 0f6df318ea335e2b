#include "loader/tensor.h"

#include "loader/error.h"

namespace llm {

GGMLTypeTraits ggml_type_traits(GGMLType t) {
  switch (t) {
    case GGMLType::F32: return {"F32", 1, 4};
    case GGMLType::F16: return {"F16", 1, 2};
    case GGMLType::BF16: return {"BF16", 1, 2};
    case GGMLType::Q4_0: return {"Q4_0", 32, 18};
    case GGMLType::Q4_1: return {"Q4_1", 32, 20};
    case GGMLType::Q5_0: return {"Q5_0", 32, 22};
    case GGMLType::Q5_1: return {"Q5_1", 32, 24};
    case GGMLType::Q8_0: return {"Q8_0", 32, 34};
    case GGMLType::Q8_1: return {"Q8_1", 32, 36};
    case GGMLType::Q2_K: return {"Q2_K", 256, 84};
    case GGMLType::Q3_K: return {"Q3_K", 256, 110};
    case GGMLType::Q4_K: return {"Q4_K", 256, 144};
    case GGMLType::Q5_K: return {"Q5_K", 256, 176};
    case GGMLType::Q6_K: return {"Q6_K", 256, 210};
    case GGMLType::Q8_K: return {"Q8_K", 256, 292};
    case GGMLType::IQ2_XXS: return {"IQ2_XXS", 256, 66};
    case GGMLType::IQ2_XS: return {"IQ2_XS", 256, 74};
    case GGMLType::IQ3_XXS: return {"IQ3_XXS", 256, 98};
    case GGMLType::IQ1_S: return {"IQ1_S", 256, 50};
    case GGMLType::IQ4_NL: return {"IQ4_NL", 32, 18};
    case GGMLType::IQ3_S: return {"IQ3_S", 256, 110};
    case GGMLType::IQ2_S: return {"IQ2_S", 256, 82};
    case GGMLType::IQ4_XS: return {"IQ4_XS", 256, 136};
    case GGMLType::I8: return {"I8", 1, 1};
    case GGMLType::I16: return {"I16", 1, 2};
    case GGMLType::I32: return {"I32", 1, 4};
    case GGMLType::I64: return {"I64", 1, 8};
    case GGMLType::F64: return {"F64", 1, 8};
    case GGMLType::IQ1_M: return {"IQ1_M", 256, 56};
    case GGMLType::TQ1_0: return {"TQ1_0", 256, 54};
    case GGMLType::TQ2_0: return {"TQ2_0", 256, 66};
    case GGMLType::MXFP4: return {"MXFP4", 32, 17};
  }
  return {"?", 1, 0};
}

bool ggml_type_supported(GGMLType t) {
  switch (t) {
    case GGMLType::F32: case GGMLType::F16: case GGMLType::BF16:
    case GGMLType::Q4_0: case GGMLType::Q4_1: case GGMLType::Q5_0: case GGMLType::Q5_1: case GGMLType::Q8_0:
    case GGMLType::Q2_K: case GGMLType::Q3_K: case GGMLType::Q4_K: case GGMLType::Q5_K: case GGMLType::Q6_K:
      return true;
    default:
      return false;
  }
}

std::string ggml_supported_type_list() {
  return "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K";
}

size_t ggml_row_bytes(GGMLType t, int64_t n) {
  auto tr = ggml_type_traits(t);
  if (tr.block_bytes == 0) fail("unknown GGML type id ", static_cast<uint32_t>(t));
  if (n < 0 || n % tr.block_elems != 0)
    fail("a row of ", n, " elements is not a whole number of ", tr.name, " blocks (", tr.block_elems, " each)");
  return static_cast<size_t>(n / tr.block_elems) * static_cast<size_t>(tr.block_bytes);
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace llm
