// Helpers shared by the low-rank attention kernel tests (test_lowrank_cuda.cu: the fp32/bf16 cache,
// test_lowrank_quant_cuda.cu: the unified cache, test_attention_lowrank_sinks_cuda.cu: sinks): the two shapes all
// run (the demo model's and Llama-3-8B's), the seeded queries, U_K and inverse frequencies the caches are scored
// with, the device's SM count (the default split count depends on it), and for the fp32/bf16 cache a seeded host
// cache, the CPU twin's arguments over it and its device copy in the cache dtype.
#pragma once
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <type_traits>
#include <vector>

#include "cuda_test_util.cuh"
#include "kernels/attention_lowrank_cuda.h"
#include "kernels/lowrank_cpu.h"
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

// A seeded compressed cache of n_kv tokens (capacity rows of c_k per KV head) and n_q queries, in host memory.
struct Inputs {
  int r_vmax = 0;
  std::vector<float> q, ck, uk, cv, inv_freq;
  std::vector<int64_t> voff;
  std::vector<int32_t> vrank;
  int64_t ck_stride = 0, cv_stride = 0;
};

// Draws, in this order: the value ranks, q and U_K (make_queries_basis), c_k, c_v. cv_slack: rows past the last
// value block (blocks need not be packed back to back). round_bf16: c_k and c_v rounded to bf16 values, so the
// CPU twin sees what a bf16 cache holds.
inline void fill_inputs(Inputs& in, std::mt19937& rng, const Shape& s, int n_q, int n_kv, int capacity,
                        int cv_slack, bool round_bf16) {
  in.r_vmax = shape_r_vmax(s);
  in.ck_stride = capacity;
  std::uniform_int_distribution<int> pick(0, int(s.ranks.size()) - 1);
  in.vrank.resize(n_kv);
  in.voff.assign(n_kv + 1, 0);
  for (int t = 0; t < n_kv; ++t) {
    in.vrank[t] = s.ranks[pick(rng)];
    in.voff[t + 1] = in.voff[t] + in.vrank[t];
  }
  in.cv_stride = in.voff[n_kv] + cv_slack;
  make_queries_basis(rng, s, n_q, in.q, in.uk, in.inv_freq);
  in.ck = llm_cuda_test::random_f32(rng, size_t(s.n_kv_heads) * capacity * s.r_k, 1.0f);
  in.cv = llm_cuda_test::random_f32(rng, size_t(s.n_kv_heads) * in.cv_stride, 1.0f);
  if (round_bf16) {
    for (float& x : in.ck) x = llm::bf16_to_f32(llm::f32_to_bf16(x));
    for (float& x : in.cv) x = llm::bf16_to_f32(llm::f32_to_bf16(x));
  }
}

// The CPU twin's arguments over the host cache (no sinks).
inline llm::LowRankAttentionArgs cpu_args(const Inputs& in, const Shape& s, int n_q, int n_kv,
                                          llm::RopeLayout layout) {
  llm::LowRankAttentionArgs a;
  a.q = in.q.data();
  a.ck = in.ck.data();
  a.uk = in.uk.data();
  a.cv = in.cv.data();
  a.voff = in.voff.data();
  a.vrank = in.vrank.data();
  a.ck_stride = in.ck_stride;
  a.cv_stride = in.cv_stride;
  a.r_k = s.r_k;
  a.r_vmax = in.r_vmax;
  a.n_q = n_q;
  a.n_kv = n_kv;
  a.n_heads = s.n_heads;
  a.n_kv_heads = s.n_kv_heads;
  a.head_dim = s.hd;
  a.inv_freq = in.inv_freq.data();
  a.rope_layout = layout;
  return a;
}

template <class T>
std::vector<T> to_cache_dtype(const std::vector<float>& v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else {
    std::vector<T> out(v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = __float2bfloat16_rn(v[i]);  // exact: v is bf16-representable
    return out;
  }
}

// Device copies of the inputs in cache dtype T, and the kernel arguments pointing at them (no sinks).
template <class T>
struct DeviceInputs {
  llm_cuda_test::DeviceBuffer q, ck, uk, cv, voff, vrank, inv;
  llm::LowRankAttentionCudaArgs<T> a;
};
template <class T>
void upload_inputs(DeviceInputs<T>& d, const Inputs& in, const Shape& s, llm::RopeLayout layout) {
  using llm_cuda_test::upload;
  d.q = upload(in.q);
  d.ck = upload(to_cache_dtype<T>(in.ck));
  d.uk = upload(in.uk);
  d.cv = upload(to_cache_dtype<T>(in.cv));
  d.voff = upload(in.voff);
  d.vrank = upload(in.vrank);
  d.inv = upload(in.inv_freq);
  d.a.q = d.q.template as<float>();
  d.a.ck = d.ck.template as<T>();
  d.a.uk = d.uk.template as<float>();
  d.a.cv = d.cv.template as<T>();
  d.a.voff = d.voff.template as<int64_t>();
  d.a.vrank = d.vrank.template as<int32_t>();
  d.a.ck_stride = in.ck_stride;
  d.a.cv_stride = in.cv_stride;
  d.a.r_k = s.r_k;
  d.a.r_vmax = in.r_vmax;
  d.a.n_heads = s.n_heads;
  d.a.n_kv_heads = s.n_kv_heads;
  d.a.head_dim = s.hd;
  d.a.inv_freq = d.inv.template as<float>();
  d.a.rope_layout = layout;
  int align = 0;  // what the engine passes: the gcd of the ranks the policy can give
  for (int r : s.ranks) align = std::gcd(align, r);
  d.a.v_align = align;
}

// The kernels' outputs z (n_q, n_heads, r_vmax) on the host: the prefill of n_q queries over n_kv keys, and the
// split-K decode of the one query at position n_kv - 1.
template <class T>
std::vector<float> prefill_z(const llm::LowRankAttentionCudaArgs<T>& a, int n_q, int n_kv) {
  const size_t n_z = size_t(n_q) * a.n_heads * a.r_vmax;
  llm_cuda_test::DeviceBuffer z(n_z * 4),
      ws(llm::attention_lowrank_prefill_workspace_floats(n_q, a.n_heads, a.r_vmax) * 4);
  llm::attention_lowrank_prefill_cuda<T>(z.as<float>(), a, n_q, n_kv, ws.as<float>(), nullptr);
  return llm_cuda_test::download<float>(z, n_z);
}
template <class T>
std::vector<float> decode_z(const llm::LowRankAttentionCudaArgs<T>& a, int n_kv, int splits) {
  const size_t n_z = size_t(a.n_heads) * a.r_vmax;
  llm_cuda_test::DeviceBuffer dpos = llm_cuda_test::upload(std::vector<int>{n_kv - 1}), z(n_z * 4),
                              ws(llm::attention_lowrank_decode_workspace_floats(a.n_heads, a.r_vmax, splits) * 4);
  llm::attention_lowrank_decode_cuda<T>(z.as<float>(), a, dpos.as<int>(), splits, ws.as<float>(), nullptr);
  return llm_cuda_test::download<float>(z, n_z);
}

}  // namespace llm_lowrank_test
