// Helpers shared by the two low-rank attention kernel tests (test_lowrank_cuda.cu: the fp32/bf16 cache,
// test_lowrank_quant_cuda.cu: the unified cache): the two shapes both run (the demo model's and Llama-3-8B's), the
// seeded queries, U_K and inverse frequencies both caches are scored with, and the device's SM count (the default
// split count depends on it).
#pragma once
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "cuda_test_util.cuh"
#include "kernels/ops_cpu.h"

namespace llm_lowrank_test {

struct Shape {
  int n_heads, n_kv_heads, hd, r_k;
  std::vector<int> ranks;  // value ranks drawn per token (entry and KV head); the largest is r_vmax
  bool llama3;             // llama3 RoPE scaling (factor 8, frequency factors 1 and 4, original 8192 positions)
  float theta;
};
inline const Shape kDemo{9, 3, 64, 16, {16, 32, 64}, false, 100000.0f};
inline const Shape kLlama3{32, 8, 128, 32, {32, 64, 128}, true, 500000.0f};

inline int shape_r_vmax(const Shape& s) { return *std::max_element(s.ranks.begin(), s.ranks.end()); }

// Seeded queries q (n_q, n_heads, hd) and U_K (n_kv_heads, r_k, hd), drawn from rng in that order, and the shape's
// inverse frequencies (no draws). Keys ~ unit scale: uk uniform in +-3/sqrt(r_k) makes var(key_d) = 1 for c_k
// uniform in +-1.
inline void make_queries_basis(std::mt19937& rng, const Shape& s, int n_q, std::vector<float>& q,
                               std::vector<float>& uk, std::vector<float>& inv_freq) {
  q = llm_cuda_test::random_f32(rng, size_t(n_q) * s.n_heads * s.hd, 2.0f);
  uk = llm_cuda_test::random_f32(rng, size_t(s.n_kv_heads) * s.r_k * s.hd, 3.0f / std::sqrt(float(s.r_k)));
  llm::RopeScaling sc;
  if (s.llama3) {
    sc.type = llm::RopeScaling::Type::llama3;
    sc.factor = 8.0f;
    sc.low_freq_factor = 1.0f;
    sc.high_freq_factor = 4.0f;
    sc.original_max_position = 8192;
  }
  inv_freq.resize(s.hd / 2);
  llm::rope_inv_freq_cpu(inv_freq.data(), s.hd, s.theta, sc);
}

inline int sm_count() {
  int dev = 0, sms = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  return sms;
}

}  // namespace llm_lowrank_test
