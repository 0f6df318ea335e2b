// Causal GQA attention against a KV cache laid out (n_kv_heads, kv_stride, head_dim) per layer: each KV
// head's keys are contiguous, so the scores for a query stream one contiguous block (and issue 6/7 caches keep
// the same per-(layer, KV head) streaming order). Work is split over (query, head) pairs.
#include <cmath>
#include <vector>

#include "kernels/attention_softmax_cpu.h"
#include "kernels/ops_cpu.h"
#include "kernels/simd_cpu.h"
#include "kernels/threadpool_cpu.h"

namespace llm {

void attention_cpu(float* out, const float* q, const float* k, const float* v, int n_q, int n_kv, int n_heads,
                   int n_kv_heads, int head_dim, int64_t kv_stride, ThreadPool* pool) {
  const int group = n_heads / n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const int64_t tasks = static_cast<int64_t>(n_q) * n_heads;
  parallel_for(pool, tasks, [&](int64_t b, int64_t e) {
    std::vector<float> att(n_kv);
    for (int64_t t = b; t < e; ++t) {
      const int i = static_cast<int>(t / n_heads), h = static_cast<int>(t % n_heads);
      const int g = h / group;
      const int last = n_kv - n_q + i;  // the last key this query sees
      const float* qi = q + (static_cast<int64_t>(i) * n_heads + h) * head_dim;
      const float* kg = k + static_cast<int64_t>(g) * kv_stride * head_dim;
      const float* vg = v + static_cast<int64_t>(g) * kv_stride * head_dim;
      const float inv = attention_softmax_cpu(att.data(), last + 1, [&](int j) {
        return simd::dot(qi, kg + static_cast<int64_t>(j) * head_dim, head_dim) * scale;
      });
      float* oi = out + (static_cast<int64_t>(i) * n_heads + h) * head_dim;
      for (int d = 0; d < head_dim; ++d) oi[d] = 0.0f;
      for (int j = 0; j <= last; ++j) att[j] *= inv;  // the weights p_j
      // oi += p_j v_j for j = 0 .. last in order, the output held in registers across the rows
      simd::axpy_rows(oi, att.data(), vg, head_dim, last + 1, head_dim);
    }
  });
}

}  // namespace llm
