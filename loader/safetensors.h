// safetensors reader: one file or a sharded HF directory (model.safetensors.index.json), memory-mapped.
// The header is checked against the format's rules: 8-byte little-endian length, JSON header <= 100 MB and
// inside the file, data_offsets [begin, end) inside the byte buffer, offsets sorted cover the buffer with no
// overlaps and no holes, shape x dtype size == byte span, shapes non-negative. Dtypes F32, F16, BF16 load; any
// other dtype string (I64, F8_E4M3, ...) is named in a clear error.
//
// Alignment: a tensor's data pointer is 8 + header_len + begin bytes into the file. Writers (ours included) pad
// the header to a multiple of 8, but the format does not require it, so readers must not assume an aligned
// pointer (copy or use memcpy-style loads).
#pragma once
#include <cstdio>
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

  const TensorView* find(const std::string& name) const;  // nullptr when absent
};

// The JSON header may be at most this many bytes (the format's limit).
constexpr size_t kSafetensorsMaxHeader = 100u * 1000u * 1000u;

SafetensorsFile safetensors_open(const std::string& path);
SafetensorsFile safetensors_parse(const uint8_t* data, size_t size, const std::string& name);  // fuzzer, tests

// A sharded checkpoint: reads DIR/model.safetensors.index.json ("weight_map": tensor -> shard file), opens each
// shard once, and checks that every tensor of the weight map is in the shard it names and that no tensor is in
// two shards. Shards are returned in file-name order.
std::vector<SafetensorsFile> safetensors_open_index(const std::string& index_path);

// Writing (the random-model generator and tests): tensors are written in the given order, contiguously.
struct SafetensorsWriteTensor {
  std::string name;
  GGMLType type;  // F32, F16 or BF16
  std::vector<int64_t> shape;
  const void* data;  // nullptr: the data comes from a SafetensorsWriter's stream instead (see below)
};
void safetensors_write(const std::string& path, const std::vector<SafetensorsWriteTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Streaming writer for files too large to hold in memory (the generator at Llama-3-8B's shape): the header
// (all names, types, shapes) is written first, then each tensor's bytes in the same order, with append().
// close() checks that exactly the announced bytes were appended.
struct SafetensorsWriter {
  std::string path;
  std::FILE* f = nullptr;
  std::vector<size_t> sizes;  // bytes per tensor, in order
  size_t next = 0;            // index of the tensor being appended
  size_t written = 0;         // bytes of it appended so far

  SafetensorsWriter(const std::string& path, const std::vector<SafetensorsWriteTensor>& tensors,
                    const std::map<std::string, std::string>& metadata = {});
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;
  ~SafetensorsWriter();
  void append(const void* bytes, size_t n);  // any chunking; must not run past the current tensor's end
  void close();
};

// "F32" <-> GGMLType for the three dtypes we load; safetensors_dtype_name throws for any other type.
const char* safetensors_dtype_name(GGMLType t);

}  // namespace llm
