// Attention over the mixed-precision KV cache, and prefill attention with importance accumulators (issue 7;
// declarations and layouts in kernels/quant_cpu.h). Both keep attention_cpu's arithmetic order (scores, max,
// exp, sum, then the weighted sum of values) so that the fp32 special cases match it bit for bit.
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/attention_softmax_cpu.h"
#include "kernels/quant_cpu.h"
#include "kernels/simd_cpu.h"
#include "kernels/threadpool_cpu.h"

namespace llm {

void attention_quant_cpu(float* out, const QuantAttentionArgs& a, ThreadPool* pool) {
  const int hd = a.head_dim, group = a.n_heads / a.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  parallel_for(pool, int64_t(a.n_q) * a.n_heads, [&](int64_t b, int64_t e) {
    std::vector<float> att(a.n_kv);
    std::vector<float> row(hd);  // one dequantised key or value: the "registers" of the CUDA kernel
    for (int64_t t = b; t < e; ++t) {
      const int i = static_cast<int>(t / a.n_heads), h = static_cast<int>(t % a.n_heads), g = h / group;
      const int last = a.n_kv - a.n_q + i;
      const float* qi = a.q + (int64_t(i) * a.n_heads + h) * hd;
      const uint8_t* data = a.data[g];
      const uint64_t* off = a.off[g];
      const uint8_t* bits = a.bits[g];
      const float inv = attention_softmax_cpu(att.data(), last + 1, [&](int j) {
        const uint8_t* kj = data + off[j];
        if (bits[j] == 16) {
          std::memcpy(row.data(), kj, size_t(hd) * sizeof(float));
        } else {
          dequantize_row_cpu(row.data(), kj, hd, bits[j], a.group);
        }
        return simd::dot(qi, row.data(), hd) * scale;
      });
      float* oi = out + (int64_t(i) * a.n_heads + h) * hd;
      for (int d = 0; d < hd; ++d) oi[d] = 0.0f;
      for (int j = 0; j <= last; ++j) {
        const float p = att[j] * inv;
        const uint8_t* vj = data + off[j] + quant_row_bytes(hd, bits[j], a.group);
        dequantize_row_cpu(row.data(), vj, hd, bits[j], a.group);
        simd::axpy(oi, p, row.data(), hd);
      }
    }
  });
}

void attention_importance_cpu(float* out, float* cum, float* win, float* scratch, const float* q, const float* k,
                              const float* v, int m, int n_heads, int n_kv_heads, int head_dim, int w,
                              ThreadPool* pool) {
  const int group = n_heads / n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  float* cum_h = scratch;                         // (n_heads, m)
  float* win_h = scratch + int64_t(n_heads) * m;  // (n_heads, m)
  const int win_from = m - std::min(w, m);
  parallel_for(pool, n_heads, [&](int64_t hb, int64_t he) {
    std::vector<float> att(m);
    for (int h = static_cast<int>(hb); h < he; ++h) {
      const int g = h / group;
      float* ch = cum_h + int64_t(h) * m;
      float* wh = win_h + int64_t(h) * m;
      for (int j = 0; j < m; ++j) ch[j] = wh[j] = 0.0f;
      const float* kg = k + int64_t(g) * m * head_dim;
      const float* vg = v ? v + int64_t(g) * m * head_dim : nullptr;
      for (int i = 0; i < m; ++i) {
        const float* qi = q + (int64_t(i) * n_heads + h) * head_dim;
        const float inv = attention_softmax_cpu(att.data(), i + 1, [&](int j) {
          return simd::dot(qi, kg + int64_t(j) * head_dim, head_dim) * scale;
        });
        const bool in_win = i >= win_from;
        if (!v) {  // accumulators only
          for (int j = 0; j <= i; ++j) {
            const float p = att[j] * inv;
            ch[j] += p;
            if (in_win) wh[j] += p;
          }
          continue;
        }
        float* oi = out + (int64_t(i) * n_heads + h) * head_dim;
        for (int d = 0; d < head_dim; ++d) oi[d] = 0.0f;
        for (int j = 0; j <= i; ++j) {
          const float p = att[j] * inv;
          ch[j] += p;
          if (in_win) wh[j] += p;
          simd::axpy(oi, p, vg + int64_t(j) * head_dim, head_dim);
        }
      }
    }
  });
  for (int g = 0; g < n_kv_heads; ++g)
    for (int j = 0; j < m; ++j) {
      float c = 0, wv = 0;
      for (int r = 0; r < group; ++r) c += cum_h[int64_t(g * group + r) * m + j], wv += win_h[int64_t(g * group + r) * m + j];
      cum[int64_t(g) * m + j] = c;
      win[int64_t(g) * m + j] = wv;
    }
}

}  // namespace llm
