// GGUF reader. Layout (little-endian, v2/v3):
//   magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
//   n_kv x (string key | u32 value type | value)
//   n_tensors x (string name | u32 n_dims | n_dims x u64 ne (innermost first) | u32 ggml type | u64 offset)
//   padding to `general.alignment` (default 32) | tensor data (offsets relative to here, each aligned)
// A string is u64 length + bytes (no terminator); an array is u32 element type + u64 count + elements.
//
// Hostile input: every read goes through Reader, which checks the bytes left first. Counts (n_kv, n_tensors,
// array lengths) are checked against the smallest encoding one element could have before anything is
// reserved, so a 100-byte file cannot make us allocate gigabytes; nested arrays are limited in depth so a
// file cannot exhaust the stack.
#include "loader/gguf.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>

#include "loader/error.h"

namespace llm {

const char* gguf_value_type_name(GGUFValueType t) {
  switch (t) {
    case GGUFValueType::UINT8: return "uint8";
    case GGUFValueType::INT8: return "int8";
    case GGUFValueType::UINT16: return "uint16";
    case GGUFValueType::INT16: return "int16";
    case GGUFValueType::UINT32: return "uint32";
    case GGUFValueType::INT32: return "int32";
    case GGUFValueType::FLOAT32: return "float32";
    case GGUFValueType::BOOL: return "bool";
    case GGUFValueType::STRING: return "string";
    case GGUFValueType::ARRAY: return "array";
    case GGUFValueType::UINT64: return "uint64";
    case GGUFValueType::INT64: return "int64";
    case GGUFValueType::FLOAT64: return "float64";
  }
  return "?";
}

bool GGUFValue::is_int() const {
  switch (type) {
    case GGUFValueType::UINT8: case GGUFValueType::INT8: case GGUFValueType::UINT16: case GGUFValueType::INT16:
    case GGUFValueType::UINT32: case GGUFValueType::INT32: case GGUFValueType::UINT64: case GGUFValueType::INT64:
    case GGUFValueType::BOOL:
      return true;
    default:
      return false;
  }
}

namespace {

constexpr int kMaxArrayDepth = 8;    // real files nest at most one level; deeper is hostile
constexpr uint32_t kMaxDims = 4;     // GGML_MAX_DIMS
// Every metadata array element becomes a GGUFValue (~100 bytes), so a hostile file of N bytes could otherwise
// ask for ~100 N bytes. Real files hold < 1M elements (Llama-3: 128k tokens + types + 280k merges).
constexpr uint64_t kMaxArrayElems = uint64_t(1) << 23;

// Smallest number of bytes one value of type t can occupy (0 for an invalid type id).
size_t min_value_bytes(uint32_t t) {
  switch (static_cast<GGUFValueType>(t)) {
    case GGUFValueType::UINT8: case GGUFValueType::INT8: case GGUFValueType::BOOL: return 1;
    case GGUFValueType::UINT16: case GGUFValueType::INT16: return 2;
    case GGUFValueType::UINT32: case GGUFValueType::INT32: case GGUFValueType::FLOAT32: return 4;
    case GGUFValueType::UINT64: case GGUFValueType::INT64: case GGUFValueType::FLOAT64: return 8;
    case GGUFValueType::STRING: return 8;   // the length
    case GGUFValueType::ARRAY: return 12;   // element type + count
  }
  return 0;
}

struct Reader {
  const uint8_t* p;
  size_t size;
  size_t pos = 0;
  const std::string& name;
  uint64_t array_elems = 0;  // over the whole file, checked against kMaxArrayElems

  size_t left() const { return size - pos; }

  [[noreturn]] void truncated(size_t need, const std::string& what) const {
    fail(name, ": truncated GGUF file: need ", need, " bytes for ", what, " at byte offset ", pos, " but the file has ",
         left(), " left (", size, " bytes in all); the file is incomplete or corrupt: re-download it");
  }
  void need(size_t n, const std::string& what) const {
    if (n > left()) truncated(n, what);
  }
  template <class T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p + pos, sizeof(T));  // unaligned-safe; GGUF is little-endian like every host we support
    pos += sizeof(T);
    return v;
  }
  std::string read_string(const std::string& what) {
    uint64_t n = read<uint64_t>(what + " (string length)");
    if (n > left())
      fail(name, ": ", what, ": string length ", n, " at byte offset ", pos - 8, " runs past the end of the file (",
           left(), " bytes left); the file is truncated or corrupt: re-download it");
    std::string s(reinterpret_cast<const char*>(p + pos), static_cast<size_t>(n));
    pos += static_cast<size_t>(n);
    return s;
  }
};

GGUFValue read_value(Reader& r, uint32_t type_id, const std::string& key, int depth) {
  if (min_value_bytes(type_id) == 0)
    fail(r.name, ": metadata key '", key, "': unknown value type id ", type_id,
         " (GGUF value types are 0..12); the file is corrupt or from a newer GGUF version");
  GGUFValue v;
  v.type = static_cast<GGUFValueType>(type_id);
  const std::string what = "metadata key '" + key + "'";
  switch (v.type) {
    case GGUFValueType::UINT8: v.i = r.read<uint8_t>(what); break;
    case GGUFValueType::INT8: v.i = r.read<int8_t>(what); break;
    case GGUFValueType::UINT16: v.i = r.read<uint16_t>(what); break;
    case GGUFValueType::INT16: v.i = r.read<int16_t>(what); break;
    case GGUFValueType::UINT32: v.i = r.read<uint32_t>(what); break;
    case GGUFValueType::INT32: v.i = r.read<int32_t>(what); break;
    case GGUFValueType::UINT64: v.i = static_cast<int64_t>(r.read<uint64_t>(what)); break;
    case GGUFValueType::INT64: v.i = r.read<int64_t>(what); break;
    case GGUFValueType::FLOAT32: v.f = r.read<float>(what); break;
    case GGUFValueType::FLOAT64: v.f = r.read<double>(what); break;
    case GGUFValueType::BOOL: {
      uint8_t b = r.read<uint8_t>(what);
      if (b > 1) fail(r.name, ": ", what, ": bool value ", int(b), " is neither 0 nor 1; the file is corrupt");
      v.i = b;
      break;
    }
    case GGUFValueType::STRING: v.s = r.read_string(what); break;
    case GGUFValueType::ARRAY: {
      if (depth >= kMaxArrayDepth)
        fail(r.name, ": ", what, ": arrays nested deeper than ", kMaxArrayDepth, " levels; the file is corrupt");
      uint32_t et = r.read<uint32_t>(what + " (array element type)");
      size_t min_bytes = min_value_bytes(et);
      if (min_bytes == 0)
        fail(r.name, ": ", what, ": unknown array element type id ", et,
             " (GGUF value types are 0..12); the file is corrupt or from a newer GGUF version");
      v.elem_type = static_cast<GGUFValueType>(et);
      uint64_t n = r.read<uint64_t>(what + " (array length)");
      if (n > r.left() / min_bytes)
        fail(r.name, ": ", what, ": array of ", n, " ", gguf_value_type_name(v.elem_type),
             " values cannot fit in the ", r.left(), " bytes left in the file; the file is truncated or corrupt: "
             "re-download it");
      r.array_elems += n;
      if (r.array_elems > kMaxArrayElems)
        fail(r.name, ": ", what, ": the metadata arrays hold more than ", kMaxArrayElems,
             " elements in all, far more than any real model; the file is corrupt");
      v.arr.reserve(static_cast<size_t>(n));
      for (uint64_t k = 0; k < n; ++k) v.arr.push_back(read_value(r, et, key, depth + 1));
      break;
    }
  }
  return v;
}

bool checked_mul(uint64_t a, uint64_t b, uint64_t& out) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return false;
  out = a * b;
  return true;
}

}  // namespace

GGUFFile gguf_parse(const uint8_t* data, size_t size, const std::string& name) {
  GGUFFile f;
  f.path = name;
  Reader r{data, size, 0, name};

  if (size < 4 || std::memcmp(data, "GGUF", 4) != 0) {
    std::string got;
    for (size_t k = 0; k < std::min<size_t>(size, 4); ++k) {
      char c = static_cast<char>(data[k]);
      got += (c >= 32 && c < 127) ? std::string(1, c) : "\\x" + std::to_string(int(data[k]));
    }
    fail(name, ": not a GGUF file: expected magic \"GGUF\" in the first 4 bytes, found \"", got, "\" (",
         size, " bytes in file); pass a .gguf model file");
  }
  r.pos = 4;
  f.version = r.read<uint32_t>("the version");
  if (f.version != 2 && f.version != 3) {
    if (f.version == 0x02000000u || f.version == 0x03000000u)
      fail(name, ": big-endian GGUF files are not supported; use the little-endian file");
    fail(name, ": unsupported GGUF version ", f.version, "; supported: 2, 3",
         f.version == 1 ? " (version 1 is obsolete: re-convert the model with a current llama.cpp)" : "");
  }
  uint64_t n_tensors = r.read<uint64_t>("the tensor count");
  uint64_t n_kv = r.read<uint64_t>("the metadata count");
  // Smallest key/value: 8-byte key length + 4-byte type + 1-byte value. Smallest tensor info: 8-byte name length
  // + 4-byte n_dims + one 8-byte dim + 4-byte type + 8-byte offset.
  if (n_kv > r.left() / 13)
    fail(name, ": header claims ", n_kv, " metadata entries but only ", r.left(),
         " bytes follow; the file is truncated or corrupt: re-download it");
  if (n_tensors > r.left() / 32)
    fail(name, ": header claims ", n_tensors, " tensors but only ", r.left(),
         " bytes follow; the file is truncated or corrupt: re-download it");

  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = r.read_string("metadata key #" + std::to_string(k));
    uint32_t type_id = r.read<uint32_t>("the value type of metadata key '" + key + "'");
    GGUFValue v = read_value(r, type_id, key, 0);
    if (f.metadata.count(key)) fail(name, ": metadata key '", key, "' appears twice; the file is corrupt");
    f.metadata.emplace(std::move(key), std::move(v));
  }

  if (const GGUFValue* a = f.find("general.alignment")) {
    if (!a->is_int() || a->type == GGUFValueType::BOOL)
      fail(name, ": general.alignment has type ", gguf_value_type_name(a->type), ", expected an integer");
    if (a->i <= 0 || (a->i & (a->i - 1)) != 0 || a->i > (int64_t(1) << 30))
      fail(name, ": general.alignment = ", a->i, " is not a power of two (1 .. 2^30); the file is corrupt");
    f.alignment = static_cast<uint64_t>(a->i);
  }

  struct Info {
    uint64_t offset;
    size_t index;
  };
  std::vector<uint64_t> offsets;
  f.tensors.reserve(static_cast<size_t>(n_tensors));
  std::set<std::string> names;
  for (uint64_t k = 0; k < n_tensors; ++k) {
    TensorView t;
    t.name = r.read_string("the name of tensor #" + std::to_string(k));
    const std::string what = "tensor '" + t.name + "'";
    uint32_t n_dims = r.read<uint32_t>(what + " (n_dims)");
    if (n_dims < 1 || n_dims > kMaxDims)
      fail(name, ": ", what, ": n_dims = ", n_dims, " but GGUF tensors have 1 to ", kMaxDims,
           " dimensions; the file is corrupt");
    std::vector<int64_t> ne(n_dims);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t v = r.read<uint64_t>(what + " (dimension " + std::to_string(d) + ")");
      if (v == 0 || v > uint64_t(std::numeric_limits<int64_t>::max()) || !checked_mul(numel, v, numel) ||
          numel > uint64_t(std::numeric_limits<int64_t>::max()))
        fail(name, ": ", what, ": dimension ", d, " = ", v, " is zero or makes the element count overflow; "
             "the file is corrupt");
      ne[d] = static_cast<int64_t>(v);
    }
    uint32_t type_id = r.read<uint32_t>(what + " (type)");
    t.type = static_cast<GGMLType>(type_id);
    auto tr = ggml_type_traits(t.type);
    if (tr.block_bytes == 0)
      fail(name, ": ", what, ": unknown GGML tensor type id ", type_id, "; supported types: ",
           ggml_supported_type_list(), " (the file may come from a newer llama.cpp)");
    if (ne[0] % tr.block_elems != 0)
      fail(name, ": ", what, ": row length ", ne[0], " is not a multiple of the ", tr.name, " block size ",
           tr.block_elems, "; the file is corrupt");
    uint64_t rows = numel / static_cast<uint64_t>(ne[0]);
    uint64_t row_bytes = static_cast<uint64_t>(ne[0] / tr.block_elems) * static_cast<uint64_t>(tr.block_bytes);
    uint64_t nbytes = 0;
    if (!checked_mul(row_bytes, rows, nbytes) || nbytes > size)
      fail(name, ": ", what, ": shape ", shape_str(ne), " of ", tr.name, " needs more bytes than the whole file has (",
           size, "); the file is truncated or corrupt: re-download it");
    uint64_t offset = r.read<uint64_t>(what + " (data offset)");
    if (!names.insert(t.name).second) fail(name, ": tensor name '", t.name, "' appears twice; the file is corrupt");
    std::reverse(ne.begin(), ne.end());  // GGUF is innermost first; we are outermost first (loader/tensor.h)
    t.shape = std::move(ne);
    t.nbytes = static_cast<size_t>(nbytes);
    offsets.push_back(offset);
    f.tensors.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment after the tensor infos.
  uint64_t a = f.alignment;
  uint64_t data_start = (uint64_t(r.pos) + a - 1) / a * a;
  f.data_offset = static_cast<size_t>(data_start);
  if (!f.tensors.empty() && data_start > size)
    fail(name, ": truncated GGUF file: the tensor data section should start at byte ", data_start, " but the file has ",
         size, " bytes; the file is incomplete: re-download it");
  uint64_t data_size = f.tensors.empty() ? 0 : size - data_start;

  std::vector<Info> order;
  order.reserve(f.tensors.size());
  for (size_t k = 0; k < f.tensors.size(); ++k) {
    TensorView& t = f.tensors[k];
    uint64_t off = offsets[k];
    if (off % a != 0)
      fail(name, ": tensor '", t.name, "': data offset ", off, " is not a multiple of the alignment ", a,
           "; the file is corrupt");
    if (off > data_size || t.nbytes > data_size - off)
      fail(name, ": tensor '", t.name, "': data [", off, ", ", off + t.nbytes, ") relative to the data section (",
           data_start, ") is out of range: the data section has ", data_size,
           " bytes; the file is truncated or corrupt: re-download it");
    t.data = data + data_start + off;
    order.push_back({off, k});
  }
  std::sort(order.begin(), order.end(), [](const Info& x, const Info& y) { return x.offset < y.offset; });
  for (size_t k = 1; k < order.size(); ++k) {
    const TensorView& prev = f.tensors[order[k - 1].index];
    const TensorView& cur = f.tensors[order[k].index];
    if (order[k - 1].offset + prev.nbytes > order[k].offset)
      fail(name, ": tensors '", prev.name, "' [", order[k - 1].offset, ", ", order[k - 1].offset + prev.nbytes,
           ") and '", cur.name, "' [", order[k].offset, ", ", order[k].offset + cur.nbytes,
           ") overlap in the data section; the file is corrupt");
  }
  return f;
}

GGUFFile gguf_open(const std::string& path) {
  MappedFile m(path);
  GGUFFile f = gguf_parse(m.data, m.size, path);
  f.map = std::move(m);  // the mapping's address does not change, so the tensor pointers stay valid
  return f;
}

const GGUFValue* GGUFFile::find(const std::string& key) const {
  auto it = metadata.find(key);
  return it == metadata.end() ? nullptr : &it->second;
}

const TensorView* GGUFFile::find_tensor(const std::string& tname) const {
  for (const TensorView& t : tensors)
    if (t.name == tname) return &t;
  return nullptr;
}

namespace {

const GGUFValue& must_find(const GGUFFile& f, const std::string& key, const char* expected) {
  const GGUFValue* v = f.find(key);
  if (!v) fail(f.path, ": missing GGUF metadata key '", key, "' (expected ", expected, ")");
  return *v;
}

[[noreturn]] void wrong_type(const GGUFFile& f, const std::string& key, const GGUFValue& v, const char* expected) {
  std::string got = gguf_value_type_name(v.type);
  if (v.type == GGUFValueType::ARRAY) got += std::string(" of ") + gguf_value_type_name(v.elem_type);
  fail(f.path, ": GGUF metadata key '", key, "' has type ", got, ", expected ", expected);
}

bool is_float(const GGUFValue& v) { return v.type == GGUFValueType::FLOAT32 || v.type == GGUFValueType::FLOAT64; }

}  // namespace

std::string GGUFFile::get_string(const std::string& key) const {
  const GGUFValue& v = must_find(*this, key, "a string");
  if (v.type != GGUFValueType::STRING) wrong_type(*this, key, v, "string");
  return v.s;
}

int64_t GGUFFile::get_int(const std::string& key) const {
  const GGUFValue& v = must_find(*this, key, "an integer");
  if (!v.is_int()) wrong_type(*this, key, v, "an integer");
  return v.i;
}

double GGUFFile::get_float(const std::string& key) const {
  const GGUFValue& v = must_find(*this, key, "a number");
  if (is_float(v)) return v.f;
  if (v.is_int() && v.type != GGUFValueType::BOOL) return static_cast<double>(v.i);
  wrong_type(*this, key, v, "a number");
}

bool GGUFFile::get_bool(const std::string& key) const {
  const GGUFValue& v = must_find(*this, key, "a bool");
  if (v.type != GGUFValueType::BOOL) wrong_type(*this, key, v, "bool");
  return v.i != 0;
}

std::vector<std::string> GGUFFile::get_string_array(const std::string& key) const {
  const GGUFValue& v = must_find(*this, key, "an array of strings");
  if (v.type != GGUFValueType::ARRAY || v.elem_type != GGUFValueType::STRING)
    wrong_type(*this, key, v, "array of string");
  std::vector<std::string> out;
  out.reserve(v.arr.size());
  for (const GGUFValue& e : v.arr) out.push_back(e.s);
  return out;
}

std::vector<float> GGUFFile::get_float_array(const std::string& key) const {
  const GGUFValue& v = must_find(*this, key, "an array of numbers");
  if (v.type != GGUFValueType::ARRAY || v.elem_type == GGUFValueType::STRING ||
      v.elem_type == GGUFValueType::ARRAY || v.elem_type == GGUFValueType::BOOL)
    wrong_type(*this, key, v, "array of numbers");
  std::vector<float> out;
  out.reserve(v.arr.size());
  for (const GGUFValue& e : v.arr) out.push_back(is_float(e) ? static_cast<float>(e.f) : static_cast<float>(e.i));
  return out;
}

std::vector<int64_t> GGUFFile::get_int_array(const std::string& key) const {
  const GGUFValue& v = must_find(*this, key, "an array of integers");
  if (v.type != GGUFValueType::ARRAY) wrong_type(*this, key, v, "array of integers");
  GGUFValue probe;
  probe.type = v.elem_type;
  if (!probe.is_int()) wrong_type(*this, key, v, "array of integers");
  std::vector<int64_t> out;
  out.reserve(v.arr.size());
  for (const GGUFValue& e : v.arr) out.push_back(e.i);
  return out;
}

}  // namespace llm
