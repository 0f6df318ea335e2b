// Helpers for the safetensors / model-file tests: a fresh temporary directory per test, raw file writing (to
// build malformed files byte by byte), and running the gen_model tool.
#pragma once
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace llm_test {

// A directory under the system temp dir, removed at scope exit. Unique per process and call.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag) {
    static std::atomic<int> counter{0};  // test-local uniqueness only; no engine state
    path = std::filesystem::temp_directory_path() /
           ("llm_test_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream o(path, std::ios::binary);
  o.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A safetensors file from a header text and a byte buffer: 8-byte LE length, header, buffer.
inline std::string safetensors_bytes(const std::string& header, const std::string& buffer, uint64_t len_override = 0) {
  uint64_t n = len_override ? len_override : header.size();
  std::string s;
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return s + header + buffer;
}

inline std::string gen_model_path() { return std::string(LLM_BINARY_DIR) + "/gen_model"; }

// Runs gen_model with the tiny test config; returns its exit status.
inline int run_gen_model(const std::string& out_dir, const std::string& extra = "") {
  std::string cmd = gen_model_path() + " --config " + data_path("models/tiny/config.json") + " -o " + out_dir +
                    " " + extra + " > /dev/null";
  return std::system(cmd.c_str());
}

}  // namespace llm_test
