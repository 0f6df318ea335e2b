// GGUF v2/v3 reader: metadata of every value type (nested arrays included), tensor infos, alignment
// (general.alignment, default 32), data offsets. The file is memory-mapped; tensors point into the map.
// Every structural problem (truncation, bad magic, unsupported version, offsets out of range or overlapping,
// unknown tensor type) throws llm::Error naming the file and the problem.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "loader/mmap.h"
#include "loader/tensor.h"

namespace llm {

enum class GGUFValueType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* gguf_value_type_name(GGUFValueType t);

struct GGUFValue {
  GGUFValueType type = GGUFValueType::UINT8;
  GGUFValueType elem_type = GGUFValueType::UINT8;  // arrays only
  int64_t i = 0;    // every integer type (uint64 values above INT64_MAX are stored wrapped) and bool
  double f = 0.0;   // FLOAT32, FLOAT64
  std::string s;    // STRING
  std::vector<GGUFValue> arr;  // ARRAY

  bool is_int() const;  // any integer type or bool
};

struct GGUFFile {
  std::string path;
  uint32_t version = 0;
  uint64_t alignment = 32;
  size_t data_offset = 0;  // start of the tensor data section
  std::map<std::string, GGUFValue> metadata;
  std::vector<TensorView> tensors;  // in file order; shape outermost first (see loader/tensor.h)
  MappedFile map;

  const GGUFValue* find(const std::string& key) const;  // nullptr when absent
  const TensorView* find_tensor(const std::string& name) const;
  // Typed getters: throw llm::Error naming the file and key when absent or of the wrong type.
  std::string get_string(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;  // accepts integer values too
  bool get_bool(const std::string& key) const;
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<float> get_float_array(const std::string& key) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;
};

GGUFFile gguf_open(const std::string& path);
// Parse from memory (used by the fuzzer and tests); `name` is used in error messages. The bytes must outlive
// the returned tensors' data pointers.
GGUFFile gguf_parse(const uint8_t* data, size_t size, const std::string& name);

}  // namespace llm
