// Shared helpers for the tests: where the data lives and how to skip a test that needs a file.
#pragma once
#include <cstdio>
#include <filesystem>
#include <string>

namespace llm_test {

inline std::string source_path(const std::string& rel) { return std::string(LLM_SOURCE_DIR) + "/" + rel; }
inline std::string data_path(const std::string& rel) { return source_path("tests/data/" + rel); }

// The demo model is installed by tools/setup.sh; tests that need it say so loudly and skip when it is absent.
inline std::string demo_model_path() { return source_path("models/SmolLM2-135M-Instruct.Q4_1.gguf"); }
inline bool have_demo_model() {
  bool ok = std::filesystem::exists(demo_model_path());
  if (!ok) std::fprintf(stderr, "SKIPPED: demo model missing at %s (run tools/setup.sh)\n", demo_model_path().c_str());
  return ok;
}

}  // namespace llm_test
