// safetensors reader: one file or a sharded HF directory (model.safetensors.index.json), memory-mapped.
// The header is checked against the format's rules: 8-byte little-endian length, JSON header <= 100 MB,
// data_offsets inside the buffer, no overlaps and no holes, shape x dtype size == byte span. Dtypes F32, F16,
// BF16 load; any other is named in a clear error.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "loader/mmap.h"
#include "loader/tensor.h"

namespace llm {

struct SafetensorsFile {
  std::string path;
  std::map<std::string, std::string> metadata;  // "__metadata__"
  std::vector<TensorView> tensors;               // in data-offset order
  MappedFile map;
};

SafetensorsFile safetensors_open(const std::string& path);
SafetensorsFile safetensors_parse(const uint8_t* data, size_t size, const std::string& name);  // fuzzer, tests

// Writing (the random-model generator and tests): tensors are written in the given order.
struct SafetensorsWriteTensor {
  std::string name;
  GGMLType type;  // F32, F16 or BF16
  std::vector<int64_t> shape;
  const void* data;
};
void safetensors_write(const std::string& path, const std::vector<SafetensorsWriteTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace llm
