// Shared helpers for the tests: where the data lives and how to skip a test that needs a file.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

// Built with AddressSanitizer (gcc defines __SANITIZE_ADDRESS__, clang answers __has_feature): the few
// demo-model cases that take minutes under it run a smaller workload there (tools/sanitize_and_fuzz.sh) and say so.
#if defined(__SANITIZE_ADDRESS__)
#define LLM_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LLM_TEST_SANITIZED 1
#endif
#endif
#ifndef LLM_TEST_SANITIZED
#define LLM_TEST_SANITIZED 0
#endif

namespace llm_test {

inline constexpr bool sanitized = LLM_TEST_SANITIZED != 0;

inline std::string source_path(const std::string& rel) { return std::string(LLM_SOURCE_DIR) + "/" + rel; }
inline std::string data_path(const std::string& rel) { return source_path("tests/data/" + rel); }

// The demo model is installed by tools/setup.sh; tests that need it say so loudly and skip when it is absent.
inline std::string demo_model_path() { return source_path("models/SmolLM2-135M-Instruct.Q4_1.gguf"); }
inline bool have_demo_model() {
  bool ok = std::filesystem::exists(demo_model_path());
  if (!ok) std::fprintf(stderr, "SKIPPED: demo model missing at %s (run tools/setup.sh)\n", demo_model_path().c_str());
  return ok;
}

// Seeded data: n normal floats (mean 0, standard deviation scale); n token ids in [0, vocab).
inline std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> x(n);
  for (auto& v : x) v = d(g);
  return x;
}
inline std::vector<int> tokens_of(int n, int vocab, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::vector<int> t(n);
  for (auto& x : t) x = int(g() % uint64_t(vocab));
  return t;
}

inline float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
  return d;
}

}  // namespace llm_test
