// Attention over the mixed-precision KV cache, and prefill attention with importance accumulators (issue 7;
// declarations and layouts in kernels/quant_cpu.h). Both keep attention_cpu's arithmetic order (scores, max,
// exp, sum, then the weighted sum of values) so that the fp32 special cases match it bit for bit.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/attention_softmax_cpu.h"
#include "kernels/quant_cpu.h"
#include "kernels/simd_cpu.h"
#include "kernels/threadpool_cpu.h"

namespace llm {

// Work shape (the arithmetic is per (query, head) as above, so the results do not depend on it): each cached row is
// dequantised once per block of queries and read by every query head of its KV group. A block of up to kQB
// queries runs in three parallel passes: (1) per (KV head, chunk of kChunk entries) the key rows, scored by every
// query and head of the group into S; (2) per (query, head) the softmax of its S row, in key order; (3) per
// (KV head, value columns d0 .. d0 + W) the value rows' columns, accumulated into every head's output in key
// order. The column split keeps whole scale groups and a multiple of 16 values (the widest SIMD step, so each
// output value sees the same axpy arithmetic as a whole row would); decode (one query) still has
// n_kv_heads * head_dim / W tasks for the threads.
void attention_quant_cpu(float* out, const QuantAttentionArgs& a, ThreadPool* pool) {
  const int hd = a.head_dim, H = a.n_heads, Hkv = a.n_kv_heads, G = H / Hkv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  constexpr int kQB = 8, kChunk = 128;
  int W = a.group;
  while (W < 32 && hd % (2 * W) == 0) W *= 2;
  if (W % 16 != 0 || hd % W != 0) W = hd;
  const int n_cols = hd / W;
  std::vector<float> S(size_t(std::min(a.n_q, kQB)) * H * a.n_kv), inv(size_t(std::min(a.n_q, kQB)) * H);
  for (int i0 = 0; i0 < a.n_q; i0 += kQB) {
    const int nb = std::min(kQB, a.n_q - i0);
    const int first_last = a.n_kv - a.n_q + i0;  // entries query i sees: 0 .. first_last + (i - i0)
    const int count = first_last + nb;           // entries the block reads
    auto srow = [&](int i, int h) { return S.data() + (size_t(i) * H + h) * a.n_kv; };
    const int n_chunks = (count + kChunk - 1) / kChunk;
    parallel_for(pool, int64_t(Hkv) * n_chunks, [&](int64_t b, int64_t e) {
      std::vector<float> row(hd);  // one dequantised key: the "registers" of the CUDA kernel
      for (int64_t t = b; t < e; ++t) {
        const int g = static_cast<int>(t / n_chunks), j0 = static_cast<int>(t % n_chunks) * kChunk;
        const int j1 = std::min(count, j0 + kChunk);
        for (int j = j0; j < j1; ++j) {
          dequantize_row_cpu(row.data(), a.data[g] + a.off[g][j], hd, a.bits[g][j], a.group);
          for (int i = std::max(0, j - first_last); i < nb; ++i)
            for (int h = g * G; h < (g + 1) * G; ++h)
              srow(i, h)[j] = simd::dot(a.q + (int64_t(i0 + i) * H + h) * hd, row.data(), hd) * scale;
        }
      }
    });
    parallel_for(pool, int64_t(nb) * H, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const int i = static_cast<int>(t / H), h = static_cast<int>(t % H);
        float* att = srow(i, h);
        inv[t] = attention_softmax_cpu(att, first_last + i + 1, [&](int j) { return att[j]; });
      }
    });
    parallel_for(pool, int64_t(Hkv) * n_cols, [&](int64_t b, int64_t e) {
      // columns d0 .. d0 + W of up to kRows dequantised value rows, and one (query, head)'s weights for them: each
      // output slice accumulates a block of rows in registers (simd::axpy_rows: axpy's arithmetic, row by row)
      constexpr int kRows = 64;
      std::vector<float> rows(size_t(kRows) * W), p(kRows);
      for (int64_t t = b; t < e; ++t) {
        const int g = static_cast<int>(t / n_cols), d0 = static_cast<int>(t % n_cols) * W;
        for (int i = 0; i < nb; ++i)
          for (int h = g * G; h < (g + 1) * G; ++h)
            std::fill_n(out + (int64_t(i0 + i) * H + h) * hd + d0, W, 0.0f);
        for (int j0 = 0; j0 < count; j0 += kRows) {
          const int j1 = std::min(count, j0 + kRows);
          for (int j = j0; j < j1; ++j) {
            const int bits = a.bits[g][j];
            dequantize_row_part_cpu(rows.data() + size_t(j - j0) * W,
                                    a.data[g] + a.off[g][j] + quant_row_bytes(hd, bits, a.group), bits, a.group, d0, W);
          }
          for (int i = 0; i < nb; ++i) {
            const int n_rows = std::min(j1, first_last + i + 1) - j0;  // query i reads entries 0 .. first_last + i
            if (n_rows <= 0) continue;
            for (int h = g * G; h < (g + 1) * G; ++h) {
              const float* s_ih = srow(i, h);
              const float inv_ih = inv[size_t(i) * H + h];
              for (int r = 0; r < n_rows; ++r) p[r] = s_ih[j0 + r] * inv_ih;
              simd::axpy_rows(out + (int64_t(i0 + i) * H + h) * hd + d0, p.data(), rows.data(), W, n_rows, W);
            }
          }
        }
      }
    });
  }
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
          att[j] = p;
        }
        simd::axpy_rows(oi, att.data(), vg, head_dim, i + 1, head_dim);  // oi += p_j v_j, j in order
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
