// Helpers for the CUDA tests: skip without a device, host<->device copies, seeded bf16 data, comparisons that
// print the worst element so a failure on the GPU machine says where to look.
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <type_traits>
#include <vector>

#include "kernels/common.cuh"
#include "loader/ggml_quants.h"

namespace llm_cuda_test {

using llm::bf16;
using llm::DeviceBuffer;

// Every CUDA test starts with: if (!have_cuda()) return;
inline bool have_cuda() {
  if (llm::cuda_devices() > 0) return true;
  std::fprintf(stderr, "SKIPPED: no CUDA device (%s)\n", doctest::getContextOptions()->currentTest
                                                           ? doctest::getContextOptions()->currentTest->m_name
                                                           : "");
  return false;
}

// True when the CUDA sources run on the CPU emulator (emu/, LLM_CUDA_EMU): tests that would take minutes there
// shrink (and say so with a "SKIPPED under emulation" / "reduced under emulation" line) instead of skipping.
inline bool cuda_emulated() {
#if defined(LLM_CUDA_EMULATED)
  return true;
#else
  return false;
#endif
}

template <class T>
DeviceBuffer upload(const std::vector<T>& v) {
  DeviceBuffer d(v.size() * sizeof(T));
  CUDA_CHECK(cudaMemcpy(d.ptr, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}
template <class T>
std::vector<T> download(const DeviceBuffer& d, size_t n) {
  std::vector<T> v(n);
  CUDA_CHECK(cudaDeviceSynchronize());
  CUDA_CHECK(cudaMemcpy(v.data(), d.ptr, n * sizeof(T), cudaMemcpyDeviceToHost));
  return v;
}
inline std::vector<float> download_bf16(const DeviceBuffer& d, size_t n) {
  std::vector<uint16_t> raw = download<uint16_t>(d, n);
  std::vector<float> f(n);
  for (size_t i = 0; i < n; ++i) f[i] = llm::bf16_to_f32(raw[i]);
  return f;
}

// n values uniform in [-scale, scale), rounded to bf16 (bits in `bits`, the same values as floats returned).
inline std::vector<float> random_bf16(std::mt19937& rng, size_t n, float scale, std::vector<uint16_t>& bits) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> f(n);
  bits.resize(n);
  for (size_t i = 0; i < n; ++i) {
    bits[i] = llm::f32_to_bf16(u(rng));
    f[i] = llm::bf16_to_f32(bits[i]);
  }
  return f;
}
inline std::vector<float> random_f32(std::mt19937& rng, size_t n, float scale) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> f(n);
  for (auto& x : f) x = u(rng);
  return f;
}

// ---- the 16-bit element types of the full-cache kernels (bf16 and f16: TEST_CASE_TEMPLATE over both) ----------
using llm::f16;
template <class T>
uint16_t elem_bits(float x) {
  return std::is_same_v<T, f16> ? llm::f32_to_fp16(x) : llm::f32_to_bf16(x);
}
template <class T>
float elem_float(uint16_t b) {
  return std::is_same_v<T, f16> ? llm::fp16_to_f32(b) : llm::bf16_to_f32(b);
}
// The GGML type of a matrix stored in T (what the CPU twins read).
template <class T>
llm::GGMLType elem_ggml_type() {
  return std::is_same_v<T, f16> ? llm::GGMLType::F16 : llm::GGMLType::BF16;
}
// Tolerances sized for bf16 rounding (unit roundoff 2^-9) times this: f16 keeps 3 more mantissa bits (2^-12), so
// the parts of a tolerance that come from rounding 16-bit values shrink 8x.
template <class T>
constexpr float elem_tol() {
  return std::is_same_v<T, f16> ? 0.125f : 1.0f;
}
template <class T>
std::vector<float> download_elem(const DeviceBuffer& d, size_t n) {
  std::vector<uint16_t> raw = download<uint16_t>(d, n);
  std::vector<float> f(n);
  for (size_t i = 0; i < n; ++i) f[i] = elem_float<T>(raw[i]);
  return f;
}
// n values uniform in [-scale, scale), rounded to T (bits in `bits`, the same values as floats returned).
template <class T>
std::vector<float> random_elem(std::mt19937& rng, size_t n, float scale, std::vector<uint16_t>& bits) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> f(n);
  bits.resize(n);
  for (size_t i = 0; i < n; ++i) {
    bits[i] = elem_bits<T>(u(rng));
    f[i] = elem_float<T>(bits[i]);
  }
  return f;
}

// |got - ref| <= atol + rtol * |ref| everywhere; reports the count and the worst element.
inline void check_close(const char* what, const std::vector<float>& got, const std::vector<float>& ref, float atol,
                        float rtol) {
  REQUIRE(got.size() == ref.size());
  size_t bad = 0, worst = 0;
  double worst_excess = -1.0, max_abs = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = std::fabs(double(got[i]) - double(ref[i]));
    max_abs = std::max(max_abs, d);
    const double excess = d - (atol + rtol * std::fabs(double(ref[i])));
    if (excess > 0 || std::isnan(got[i])) ++bad;
    if (excess > worst_excess || std::isnan(got[i])) {
      worst_excess = excess;
      worst = i;
    }
  }
  INFO(what << ": " << bad << " of " << ref.size() << " elements outside atol " << atol << " + rtol " << rtol
            << "; max |diff| " << max_abs << "; worst at " << worst << ": got " << got[worst] << " ref " << ref[worst]);
  CHECK(bad == 0);
}

}  // namespace llm_cuda_test
