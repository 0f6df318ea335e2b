// A tiny GGUF byte writer for tests: builds valid files and, by overriding single fields, broken ones.
#pragma once
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "loader/tensor.h"

namespace llm_test {

struct GGUFBuilder {
  struct Tensor {
    std::string name;
    std::vector<uint64_t> ne;  // innermost first, as the file stores it
    uint32_t type;
    int64_t offset = -1;  // -1: next aligned free offset
  };
  uint32_t version = 3;
  uint64_t alignment = 32;  // used for layout; written only when write_alignment is set
  bool write_alignment = false;
  std::vector<uint8_t> kv;
  uint64_t n_kv = 0;
  std::vector<Tensor> tensors;
  uint64_t max_data = ~uint64_t(0);  // cap on the data section written (to make offsets point past the end)

  static void put(std::vector<uint8_t>& b, const void* p, size_t n) {
    const uint8_t* c = static_cast<const uint8_t*>(p);
    b.insert(b.end(), c, c + n);
  }
  template <class T>
  static void put(std::vector<uint8_t>& b, T v) { put(b, &v, sizeof v); }
  static void put_str(std::vector<uint8_t>& b, const std::string& s) {
    put<uint64_t>(b, s.size());
    put(b, s.data(), s.size());
  }

  void key(const std::string& k, uint32_t type) {
    put_str(kv, k);
    put<uint32_t>(kv, type);
    ++n_kv;
  }
  void add_u32(const std::string& k, uint32_t v) { key(k, 4); put(kv, v); }
  void add_i32(const std::string& k, int32_t v) { key(k, 5); put(kv, v); }
  void add_f32(const std::string& k, float v) { key(k, 6); put(kv, v); }
  void add_str(const std::string& k, const std::string& v) { key(k, 8); put_str(kv, v); }
  void add_str_array(const std::string& k, const std::vector<std::string>& v) {
    key(k, 9);
    put<uint32_t>(kv, 8);
    put<uint64_t>(kv, v.size());
    for (const auto& s : v) put_str(kv, s);
  }
  void add_tensor(const std::string& name, std::vector<uint64_t> ne, llm::GGMLType type, int64_t offset = -1) {
    tensors.push_back({name, std::move(ne), static_cast<uint32_t>(type), offset});
  }

  std::vector<uint8_t> build() const {
    std::vector<uint8_t> b;
    put(b, "GGUF", 4);
    put<uint32_t>(b, version);
    put<uint64_t>(b, tensors.size());
    put<uint64_t>(b, n_kv + (write_alignment ? 1 : 0));
    put(b, kv.data(), kv.size());
    if (write_alignment) {
      put_str(b, "general.alignment");
      put<uint32_t>(b, 4);
      put<uint32_t>(b, uint32_t(alignment));
    }
    uint64_t next = 0, end = 0;
    for (const Tensor& t : tensors) {
      put_str(b, t.name);
      put<uint32_t>(b, uint32_t(t.ne.size()));
      uint64_t n = 1;
      for (uint64_t d : t.ne) {
        put<uint64_t>(b, d);
        n *= d;
      }
      put<uint32_t>(b, t.type);
      auto tr = llm::ggml_type_traits(static_cast<llm::GGMLType>(t.type));
      uint64_t nbytes = tr.block_bytes ? n / uint64_t(tr.block_elems) * uint64_t(tr.block_bytes) : 64;
      uint64_t off = t.offset >= 0 ? uint64_t(t.offset) : next;
      put<uint64_t>(b, off);
      next = (off + nbytes + alignment - 1) / alignment * alignment;
      end = std::max(end, off + nbytes);
    }
    while (b.size() % alignment) b.push_back(0);
    end = std::min(end, max_data);
    for (uint64_t i = 0; i < end; ++i) b.push_back(uint8_t(i * 7));
    return b;
  }
};

}  // namespace llm_test
