// MappedFile: a read-only memory map of a whole file (RAII, movable). Opening fails with llm::Error naming the
// path and the reason.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace llm {

struct MappedFile {
  std::string path;
  const uint8_t* data = nullptr;
  size_t size = 0;

  MappedFile() = default;
  explicit MappedFile(const std::string& path);
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();
};

}  // namespace llm
