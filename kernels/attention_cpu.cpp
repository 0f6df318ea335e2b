// Causal GQA attention against a KV cache laid out (n_kv_heads, kv_stride, head_dim) per layer: each KV
// head's keys are contiguous, so the scores for a query stream one contiguous block (and issue 6/7 caches keep
// the same per-(layer, KV head) streaming order). Work is split over (query, head) pairs.
#include <cmath>
#include <vector>

#include "kernels/ops_cpu.h"
#include "kernels/threadpool_cpu.h"

namespace llm {

static inline float dot_f32(const float* a, const float* b, int n) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

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
      float mx = -INFINITY;
      for (int j = 0; j <= last; ++j) {
        float s = dot_f32(qi, kg + static_cast<int64_t>(j) * head_dim, head_dim) * scale;
        att[j] = s;
        mx = s > mx ? s : mx;
      }
      float sum = 0.0f;
      for (int j = 0; j <= last; ++j) {
        att[j] = std::exp(att[j] - mx);
        sum += att[j];
      }
      const float inv = 1.0f / sum;
      float* oi = out + (static_cast<int64_t>(i) * n_heads + h) * head_dim;
      for (int d = 0; d < head_dim; ++d) oi[d] = 0.0f;
      for (int j = 0; j <= last; ++j) {
        const float p = att[j] * inv;
        const float* vj = vg + static_cast<int64_t>(j) * head_dim;
        for (int d = 0; d < head_dim; ++d) oi[d] += p * vj[d];
      }
    }
  });
}

}  // namespace llm
