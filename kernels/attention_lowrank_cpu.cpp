// Low-rank attention, CPU twin of the fused CUDA kernel (issue 6). One task = (KV head g, a chunk of queries);
// it walks the keys in tiles of kTile: rebuilds the tile's keys from c_k with U_K into a per-task buffer (the
// CUDA kernel's shared-memory tile: rebuilt keys never go to the cache), applies RoPE at each key's position,
// scores every (head of the group, query of the chunk) against them with an online softmax, and accumulates
// the probabilities times the compressed values in rank space (z, r_vmax wide). Rebuilding once per
// (g, query chunk, key tile) and reusing the tile for all the group's heads and the chunk's queries keeps the
// rebuild cost at r_k*head_dim per key per chunk instead of per query.
//
// Cost per layer: n_q * n_kv * n_heads * (head_dim + r_v) for scores and accumulation, plus
// ceil(n_q / kQChunk) * n_kv * n_kv_heads * r_k * head_dim for the rebuilds.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/lowrank_cpu.h"
#include "kernels/ops_cpu.h"
#include "kernels/threadpool_cpu.h"
#include "loader/error.h"

namespace llm {

namespace {
constexpr int kTile = 32;    // keys rebuilt at a time
constexpr int kQChunk = 32;  // queries sharing one rebuild
}  // namespace

void attention_lowrank_cpu(float* z, const LowRankAttentionArgs& a, ThreadPool* pool) {
  const int hd = a.head_dim, rk = a.r_k, rv = a.r_vmax;
  if (a.n_q <= 0 || a.n_kv < a.n_q || a.n_kv_heads <= 0 || a.n_heads % a.n_kv_heads != 0 || rk < 1 || rk > hd ||
      rv < 1 || rv > hd || hd % 2 != 0 || a.n_sink < 0 || (a.n_sink > 0 && (!a.k_sink || a.k_sink_stride < a.n_sink)))
    fail("attention_lowrank: bad shapes (n_q ", a.n_q, ", n_kv ", a.n_kv, ", heads ", a.n_heads, "/", a.n_kv_heads,
         ", head_dim ", hd, ", r_k ", rk, ", r_vmax ", rv, ", sinks ", a.n_sink, ")");
  const int gs = a.n_heads / a.n_kv_heads;
  const int n_chunks = (a.n_q + kQChunk - 1) / kQChunk;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int first_pos = a.n_kv - a.n_q;  // position of query 0
  parallel_for(pool, int64_t(a.n_kv_heads) * n_chunks, [&](int64_t b, int64_t e) {
    std::vector<float> keys(size_t(kTile) * hd);           // rebuilt, RoPE'd keys of one tile
    std::vector<int> kpos(kTile);
    std::vector<float> m, l, sc(kTile);                      // running max / sum per (head, query)
    for (int64_t task = b; task < e; ++task) {
      const int g = static_cast<int>(task / n_chunks), chunk = static_cast<int>(task % n_chunks);
      const int i0 = chunk * kQChunk, i1 = std::min(a.n_q, i0 + kQChunk);
      const int nq = i1 - i0;
      m.assign(size_t(gs) * nq, -std::numeric_limits<float>::infinity());
      l.assign(size_t(gs) * nq, 0.0f);
      for (int hh = 0; hh < gs; ++hh)
        for (int i = i0; i < i1; ++i) std::fill_n(z + (size_t(i) * a.n_heads + g * gs + hh) * rv, rv, 0.0f);
      const float* ckg = a.ck + size_t(g) * a.ck_stride * rk;
      const float* ukg = a.uk + size_t(g) * rk * hd;
      const float* cvg = a.cv + size_t(g) * a.cv_stride;
      const int t_end = first_pos + i1;  // keys [0, t_end) are seen by some query of the chunk
      for (int t0 = 0; t0 < t_end; t0 += kTile) {
        const int nt = std::min(kTile, t_end - t0);
        // rebuild: key_t = sum_j c_k[t, j] * up_j (sink tokens: their full key as cached)
        for (int t = 0; t < nt; ++t) {
          float* kt = keys.data() + size_t(t) * hd;
          kpos[t] = t0 + t;
          if (t0 + t < a.n_sink) {
            std::copy_n(a.k_sink + (size_t(g) * a.k_sink_stride + t0 + t) * hd, hd, kt);
            continue;
          }
          std::fill_n(kt, hd, 0.0f);
          const float* c = ckg + size_t(t0 + t) * rk;
          for (int j = 0; j < rk; ++j) {
            const float cj = c[j];
            const float* u = ukg + size_t(j) * hd;
            for (int d = 0; d < hd; ++d) kt[d] += cj * u[d];
          }
        }
        rope_cpu(keys.data(), kpos.data(), nt, 1, hd, hd, a.inv_freq, a.rope_layout, nullptr);
        for (int hh = 0; hh < gs; ++hh) {
          const int h = g * gs + hh;
          for (int i = i0; i < i1; ++i) {
            const int qpos = first_pos + i;
            const int nv = std::min(nt, qpos - t0 + 1);  // causal: keys t0 .. qpos
            if (nv <= 0) continue;
            const float* q = a.q + (size_t(i) * a.n_heads + h) * hd;
            const size_t si = size_t(hh) * nq + (i - i0);
            lowrank_tile_softmax(q, keys.data(), nv, hd, scale, sc.data(), m[si], l[si],
                                 z + (size_t(i) * a.n_heads + h) * rv, rv, [&](int t, int& rank) {
                                   const int tok = t0 + t;
                                   rank = a.vrank[tok];
                                   return cvg + a.voff[tok];
                                 });
          }
        }
      }
      for (int hh = 0; hh < gs; ++hh)
        for (int i = i0; i < i1; ++i) {
          const float inv = 1.0f / l[size_t(hh) * nq + (i - i0)];
          float* zi = z + (size_t(i) * a.n_heads + g * gs + hh) * rv;
          for (int r = 0; r < rv; ++r) zi[r] *= inv;
        }
    }
  });
}

}  // namespace llm
