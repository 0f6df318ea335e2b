// Attention over the low-rank mixed-precision cache: CPU twin of the CUDA kernel for svd combined with
// quant/keep/evict (issue 7's unified policy; declaration and layout in kernels/quant_cpu.h). The structure is
// attention_lowrank_cpu's (one task = KV head g and a chunk of queries; keys walked in tiles; one rebuild per
// tile shared by the group's heads and the chunk's queries; online softmax; values accumulated in rank space),
// with three differences: each entry's rows are dequantised from its own width as the tile is loaded, each key
// is RoPE'd at the entry's own position (tokens may have been dropped), and ranks are per entry and KV head.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/lowrank_cpu.h"
#include "kernels/ops_cpu.h"
#include "kernels/quant_cpu.h"
#include "kernels/threadpool_cpu.h"
#include "loader/error.h"

namespace llm {

namespace {
constexpr int kTile = 32;    // entries loaded (dequantised + rebuilt) at a time
constexpr int kQChunk = 32;  // queries sharing one tile
}  // namespace

void attention_lowrank_quant_cpu(float* z, const LowRankQuantAttentionArgs& a, ThreadPool* pool) {
  const int hd = a.head_dim, rk = a.r_k, rv = a.r_vmax;
  if (a.n_q <= 0 || a.n_kv < a.n_q || a.n_kv_heads <= 0 || a.n_heads % a.n_kv_heads != 0 || rk < 1 || rk > hd ||
      rv < 1 || rv > hd || hd % 2 != 0)
    fail("attention_lowrank_quant: bad shapes (n_q ", a.n_q, ", n_kv ", a.n_kv, ", heads ", a.n_heads, "/",
         a.n_kv_heads, ", head_dim ", hd, ", r_k ", rk, ", r_vmax ", rv, ")");
  const int gs = a.n_heads / a.n_kv_heads;
  const int n_chunks = (a.n_q + kQChunk - 1) / kQChunk;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int first = a.n_kv - a.n_q;  // entry index of query 0
  parallel_for(pool, int64_t(a.n_kv_heads) * n_chunks, [&](int64_t b, int64_t e) {
    std::vector<float> keys(size_t(kTile) * hd);  // rebuilt, RoPE'd keys of one tile
    std::vector<float> vals(size_t(kTile) * rv);  // dequantised value coefficients of one tile
    std::vector<float> crow(rk);                  // one dequantised c_k row
    std::vector<int> kpos(kTile), kr(kTile);
    std::vector<float> m, l, sc(kTile);
    for (int64_t task = b; task < e; ++task) {
      const int g = static_cast<int>(task / n_chunks), chunk = static_cast<int>(task % n_chunks);
      const int i0 = chunk * kQChunk, i1 = std::min(a.n_q, i0 + kQChunk);
      const int nq = i1 - i0;
      m.assign(size_t(gs) * nq, -std::numeric_limits<float>::infinity());
      l.assign(size_t(gs) * nq, 0.0f);
      for (int hh = 0; hh < gs; ++hh)
        for (int i = i0; i < i1; ++i) std::fill_n(z + (size_t(i) * a.n_heads + g * gs + hh) * rv, rv, 0.0f);
      const uint8_t* data = a.data[g];
      const uint64_t* off = a.off[g];
      const uint8_t* bits = a.bits[g];
      const uint16_t* vrank = a.vrank[g];
      const float* ukg = a.uk + size_t(g) * rk * hd;
      const int t_end = first + i1;  // entries [0, t_end) are seen by some query of the chunk
      for (int t0 = 0; t0 < t_end; t0 += kTile) {
        const int nt = std::min(kTile, t_end - t0);
        for (int t = 0; t < nt; ++t) {
          const int en = t0 + t, w = bits[en];
          const uint8_t* row = data + off[en];
          dequantize_rank_row_cpu(crow.data(), row, rk, w, a.group);
          float* kt = keys.data() + size_t(t) * hd;  // key = U_K[:, :r_k] c_k
          std::fill_n(kt, hd, 0.0f);
          for (int j = 0; j < rk; ++j) {
            const float cj = crow[j];
            const float* u = ukg + size_t(j) * hd;
            for (int d = 0; d < hd; ++d) kt[d] += cj * u[d];
          }
          kpos[t] = a.pos[en];
          kr[t] = vrank[en];
          dequantize_rank_row_cpu(vals.data() + size_t(t) * rv, row + quant_rank_row_bytes(rk, w, a.group), kr[t], w,
                                  a.group);
        }
        rope_cpu(keys.data(), kpos.data(), nt, 1, hd, hd, a.inv_freq, a.rope_layout, nullptr);
        for (int hh = 0; hh < gs; ++hh) {
          const int h = g * gs + hh;
          for (int i = i0; i < i1; ++i) {
            const int nv = std::min(nt, first + i - t0 + 1);  // causal: entries t0 .. first + i
            if (nv <= 0) continue;
            const float* q = a.q + (size_t(i) * a.n_heads + h) * hd;
            const size_t si = size_t(hh) * nq + (i - i0);
            lowrank_tile_softmax(q, keys.data(), nv, hd, scale, sc.data(), m[si], l[si],
                                 z + (size_t(i) * a.n_heads + h) * rv, rv, [&](int t, int& rank) {
                                   rank = kr[t];
                                   return vals.data() + size_t(t) * rv;
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
