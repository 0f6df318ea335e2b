// safetensors: header parsing with every rule of the format checked, sharded directories, and writing.
// Format: u64 little-endian N, N bytes of UTF-8 JSON {name: {dtype, shape, data_offsets: [begin, end]},
// "__metadata__": {str: str}}, then the byte buffer (the rest of the file). Offsets are relative to the buffer.
#include "loader/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>
#include <sstream>

#include "loader/error.h"

namespace llm {

using nlohmann::json;

namespace {

// Dtype strings the format defines; we load three of them and name the rest in the error.
bool dtype_from_string(const std::string& s, GGMLType* out) {
  if (s == "F32") *out = GGMLType::F32;
  else if (s == "F16") *out = GGMLType::F16;
  else if (s == "BF16") *out = GGMLType::BF16;
  else return false;
  return true;
}

std::string truncate_for_message(const std::string& s) {
  return s.size() <= 64 ? s : s.substr(0, 64) + "...";
}

// The one place an offset or shape number from the header becomes an integer: must be a JSON unsigned
// integer (negative numbers and floats are errors, not wrapped or rounded).
uint64_t header_uint(const json& v, const std::string& name, const std::string& tensor, const char* field) {
  if (!v.is_number_unsigned())
    fail(name, ": tensor '", tensor, "': ", field, " must hold non-negative integers, got ", v.dump(),
         " (the file is corrupt: re-download or re-export it)");
  return v.get<uint64_t>();
}

struct Entry {
  TensorView view;
  uint64_t begin = 0, end = 0;
};

}  // namespace

const char* safetensors_dtype_name(GGMLType t) {
  switch (t) {
    case GGMLType::F32: return "F32";
    case GGMLType::F16: return "F16";
    case GGMLType::BF16: return "BF16";
    default: fail("safetensors: cannot write type ", ggml_type_name(t), " (supported: F32, F16, BF16)");
  }
}

const TensorView* SafetensorsFile::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

SafetensorsFile safetensors_parse(const uint8_t* data, size_t size, const std::string& name) {
  SafetensorsFile out;
  out.path = name;
  if (size < 8)
    fail(name, ": truncated safetensors file: ", size, " bytes, less than the 8-byte header length "
         "(re-download or re-export it)");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  if (n > kSafetensorsMaxHeader)
    fail(name, ": safetensors header length ", n, " exceeds the format's limit of ", kSafetensorsMaxHeader,
         " bytes (not a safetensors file, or corrupt)");
  if (n > size - 8)
    fail(name, ": safetensors header length ", n, " runs past the end of the file (", size,
         " bytes): the file is truncated or not safetensors; re-download it");
  if (n < 2 || data[8] != '{')
    fail(name, ": safetensors header does not start with '{' (not a safetensors file, or corrupt)");

  json header;
  try {
    header = json::parse(data + 8, data + 8 + n);
  } catch (const json::exception& e) {
    fail(name, ": safetensors header is not valid JSON: ", e.what());
  }
  if (!header.is_object()) fail(name, ": safetensors header is not a JSON object");

  const uint8_t* buffer = data + 8 + n;
  const uint64_t buffer_len = size - 8 - n;
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& key = it.key();
    const json& v = it.value();
    if (key == "__metadata__") {
      if (!v.is_object()) fail(name, ": __metadata__ must be an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) fail(name, ": __metadata__ value of '", m.key(), "' is not a string");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string tname = truncate_for_message(key);
    if (!v.is_object()) fail(name, ": tensor '", tname, "': entry is not an object");
    auto dt = v.find("dtype");
    auto sh = v.find("shape");
    auto off = v.find("data_offsets");
    if (dt == v.end() || !dt->is_string()) fail(name, ": tensor '", tname, "': missing or non-string 'dtype'");
    if (sh == v.end() || !sh->is_array()) fail(name, ": tensor '", tname, "': missing or non-array 'shape'");
    if (off == v.end() || !off->is_array() || off->size() != 2)
      fail(name, ": tensor '", tname, "': 'data_offsets' must be [begin, end]");
    Entry e;
    e.view.name = key;
    const std::string dts = dt->get<std::string>();
    if (!dtype_from_string(dts, &e.view.type))
      fail(name, ": tensor '", tname, "' has dtype ", truncate_for_message(dts),
           ", which is not supported (supported: F32, F16, BF16); convert the checkpoint to bf16");
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto& d : *sh) {
      uint64_t dim = header_uint(d, name, tname, "shape");
      if (dim > static_cast<uint64_t>(INT64_MAX)) overflow = true;
      else e.view.shape.push_back(static_cast<int64_t>(dim));
      if (__builtin_mul_overflow(numel, dim, &numel)) overflow = true;
    }
    e.begin = header_uint((*off)[0], name, tname, "data_offsets");
    e.end = header_uint((*off)[1], name, tname, "data_offsets");
    if (e.end < e.begin)
      fail(name, ": tensor '", tname, "': data_offsets [", e.begin, ", ", e.end, ") end before they begin");
    if (e.end > buffer_len)
      fail(name, ": tensor '", tname, "': data_offsets [", e.begin, ", ", e.end,
           ") are out of range: the byte buffer has ", buffer_len, " bytes (file truncated? re-download it)");
    const uint64_t elem = static_cast<uint64_t>(ggml_type_traits(e.view.type).block_bytes);
    uint64_t want = 0;
    if (overflow || __builtin_mul_overflow(numel, elem, &want) || want != e.end - e.begin)
      fail(name, ": tensor '", tname, "': shape ", shape_str(e.view.shape), " x ", dts, " (", elem,
           " bytes) does not match its byte span of ", e.end - e.begin, " bytes");
    e.view.data = buffer + e.begin;
    e.view.nbytes = static_cast<size_t>(e.end - e.begin);
    entries.push_back(std::move(e));
  }

  // Sorted by offset, the tensors must tile the buffer exactly: each begins where the previous ended.
  // Zero-size tensors sort first among equals so that [8,8) then [8,16) counts as contiguous.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t pos = 0;
  std::string prev = "(start of buffer)";
  for (const auto& e : entries) {
    if (e.begin < pos)
      fail(name, ": tensors '", truncate_for_message(prev), "' and '", truncate_for_message(e.view.name),
           "' overlap: '", truncate_for_message(e.view.name), "' begins at ", e.begin, " before ", pos,
           " (the file is corrupt)");
    if (e.begin > pos)
      fail(name, ": hole in the byte buffer: bytes [", pos, ", ", e.begin, ") between '",
           truncate_for_message(prev), "' and '", truncate_for_message(e.view.name),
           "' belong to no tensor (the file is corrupt)");
    pos = e.end;
    prev = e.view.name;
  }
  if (pos != buffer_len)
    fail(name, ": hole in the byte buffer: bytes [", pos, ", ", buffer_len,
         ") after the last tensor belong to no tensor (the file is corrupt or was appended to)");
  out.tensors.reserve(entries.size());
  for (auto& e : entries) out.tensors.push_back(std::move(e.view));
  return out;
}

SafetensorsFile safetensors_open(const std::string& path) {
  MappedFile map(path);
  static const uint8_t empty[1] = {0};
  SafetensorsFile f = safetensors_parse(map.data ? map.data : empty, map.size, path);
  f.map = std::move(map);  // the views point into the mapping, which a move keeps in place
  return f;
}

std::vector<SafetensorsFile> safetensors_open_index(const std::string& index_path) {
  std::ifstream in(index_path, std::ios::binary);
  if (!in) fail(index_path, ": cannot open: ", std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  json index;
  try {
    index = json::parse(ss.str());
  } catch (const json::exception& e) {
    fail(index_path, ": not valid JSON: ", e.what());
  }
  auto wm = index.is_object() ? index.find("weight_map") : index.end();
  if (!index.is_object() || wm == index.end() || !wm->is_object())
    fail(index_path, ": missing the 'weight_map' object (tensor name -> shard file)");
  const std::filesystem::path dir = std::filesystem::path(index_path).parent_path();
  std::map<std::string, std::vector<std::string>> by_shard;  // shard file -> tensors it should hold
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string()) fail(index_path, ": weight_map entry '", it.key(), "' is not a file name");
    std::string shard = it.value().get<std::string>();
    if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
      fail(index_path, ": weight_map entry '", it.key(), "' names '", shard,
           "', which is not a file name in the same directory");
    by_shard[shard].push_back(it.key());
  }
  if (by_shard.empty()) fail(index_path, ": weight_map is empty");

  std::vector<SafetensorsFile> shards;
  std::map<std::string, std::string> seen;  // tensor -> shard holding it
  for (const auto& [shard, names] : by_shard) {
    SafetensorsFile f = safetensors_open((dir / shard).string());
    for (const auto& n : names)
      if (!f.find(n))
        fail(index_path, ": weight_map puts tensor '", n, "' in ", shard, ", but ", f.path,
             " does not contain it (incomplete download?)");
    for (const auto& t : f.tensors) {
      auto [it, fresh] = seen.emplace(t.name, shard);
      if (!fresh) fail(index_path, ": tensor '", t.name, "' is in two shards: ", it->second, " and ", shard);
    }
    shards.push_back(std::move(f));
  }
  return shards;
}

// ---- writing ------------------------------------------------------------------------------------------

namespace {

std::string make_header(const std::vector<SafetensorsWriteTensor>& tensors,
                        const std::map<std::string, std::string>& metadata, std::vector<size_t>* sizes) {
  // nlohmann's object sorts keys; the format does not care about key order, only about offsets.
  json h = json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t pos = 0;
  std::set<std::string> names;
  for (const auto& t : tensors) {
    if (t.name == "__metadata__" || !names.insert(t.name).second)
      fail("safetensors_write: duplicate or reserved tensor name '", t.name, "'");
    int64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) fail("safetensors_write: tensor '", t.name, "' has a negative dimension ", shape_str(t.shape));
      numel *= d;
    }
    const size_t bytes = static_cast<size_t>(numel) * ggml_type_traits(t.type).block_bytes;
    h[t.name] = {{"dtype", safetensors_dtype_name(t.type)}, {"shape", t.shape}, {"data_offsets", {pos, pos + bytes}}};
    sizes->push_back(bytes);
    pos += bytes;
  }
  std::string s = h.dump();
  // Pad with spaces (allowed by the format) so the byte buffer starts 8-byte aligned.
  while ((s.size() + 8) % 8 != 0) s.push_back(' ');
  return s;
}

void write_all(std::FILE* f, const void* p, size_t n, const std::string& path) {
  if (n && std::fwrite(p, 1, n, f) != n) fail(path, ": write failed: ", std::strerror(errno));
}

}  // namespace

SafetensorsWriter::SafetensorsWriter(const std::string& p, const std::vector<SafetensorsWriteTensor>& tensors,
                                     const std::map<std::string, std::string>& metadata)
    : path(p) {
  const std::string header = make_header(tensors, metadata, &sizes);
  f = std::fopen(path.c_str(), "wb");
  if (!f) fail(path, ": cannot create: ", std::strerror(errno));
  uint8_t len[8];
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  write_all(f, len, 8, path);
  write_all(f, header.data(), header.size(), path);
  while (next < sizes.size() && sizes[next] == 0) ++next;
}

void SafetensorsWriter::append(const void* bytes, size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(bytes);
  while (n > 0) {
    if (next >= sizes.size()) fail(path, ": appended more bytes than the header announced");
    size_t take = std::min(n, sizes[next] - written);
    write_all(f, p, take, path);
    p += take;
    n -= take;
    written += take;
    if (written == sizes[next]) {
      written = 0;
      ++next;
      while (next < sizes.size() && sizes[next] == 0) ++next;
    }
  }
}

void SafetensorsWriter::close() {
  if (!f) return;
  std::FILE* g = std::exchange(f, nullptr);
  bool ok = std::fclose(g) == 0;
  if (!ok) fail(path, ": write failed on close: ", std::strerror(errno));
  if (next != sizes.size()) fail(path, ": closed after ", next, " of ", sizes.size(), " tensors were written");
}

SafetensorsWriter::~SafetensorsWriter() {
  if (f) std::fclose(f);  // an unfinished file is left behind truncated; its reader will say so
}

void safetensors_write(const std::string& path, const std::vector<SafetensorsWriteTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  SafetensorsWriter w(path, tensors, metadata);
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!tensors[i].data && w.sizes[i]) fail("safetensors_write: tensor '", tensors[i].name, "' has no data");
    w.append(tensors[i].data, w.sizes[i]);
  }
  w.close();
}

}  // namespace llm
