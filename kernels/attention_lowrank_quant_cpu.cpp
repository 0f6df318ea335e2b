// Attention over the low-rank mixed-precision cache: CPU twin of the CUDA kernel for svd combined with
// quant/keep/evict (issue 7's unified policy; declaration and layout in kernels/quant_cpu.h). The task loop is
// attention_lowrank_cpu's (kernels/lowrank_tasks_cpu.h: one task = KV head g and a chunk of queries; keys walked in
// tiles; one rebuild per tile shared by the group's heads and the chunk's queries; online softmax; values
// accumulated in rank space), with this file's tile making the three differences: each entry's rows are
// dequantised from its own width as the tile is loaded, each key is RoPE'd at the entry's own position (tokens may
// have been dropped), and ranks are per entry and KV head. Optional per-entry key ranks (krank: a head_dim-long row
// is the full key, not rebuilt) and a recent window read from side rows (window > 0: each query reads its own
// window in full, so a tile is mixed per query as in attention_lowrank_cpu's window loop).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/lowrank_tasks_cpu.h"
#include "kernels/quant_cpu.h"
#include "loader/error.h"

namespace llm {

void attention_lowrank_quant_cpu(float* z, const LowRankQuantAttentionArgs& a, ThreadPool* pool) {
  const int hd = a.head_dim, rk = a.r_k, rv = a.r_vmax;
  if (a.n_q <= 0 || a.n_kv < a.n_q || a.n_kv_heads <= 0 || a.n_heads % a.n_kv_heads != 0 || rk < 1 || rk > hd ||
      rv < 1 || rv > hd || hd % 2 != 0)
    fail("attention_lowrank_quant: bad shapes (n_q ", a.n_q, ", n_kv ", a.n_kv, ", heads ", a.n_heads, "/",
         a.n_kv_heads, ", head_dim ", hd, ", r_k ", rk, ", r_vmax ", rv, ")");
  struct Tile {
    const LowRankQuantAttentionArgs& a;
    std::vector<float> vals;  // dequantised value coefficients of one tile (kTile x r_vmax)
    std::vector<float> crow;  // one dequantised c_k row
    std::vector<int> kr;      // value ranks of the tile's entries
    void load(int g, int t0, int nt, float* keys, int* kpos) {
      const int hd = a.head_dim, rk = a.r_k, rv = a.r_vmax;
      const uint8_t* data = a.data[g];
      const uint64_t* off = a.off[g];
      const uint8_t* bits = a.bits[g];
      const uint16_t* vrank = a.vrank[g];
      const float* ukg = a.uk + size_t(g) * rk * hd;
      for (int t = 0; t < nt; ++t) {
        const int en = t0 + t, w = bits[en], kl = a.krank ? a.krank[g][en] : rk;
        const uint8_t* row = data + off[en];
        if (a.krank && kl == hd) {  // the full key itself
          dequantize_rank_row_cpu(keys + size_t(t) * hd, row, hd, w, a.group);
        } else {
          dequantize_rank_row_cpu(crow.data(), row, kl, w, a.group);
          lowrank_tasks::rebuild_key(keys + size_t(t) * hd, crow.data(), ukg, kl, hd);  // key = U_K[:, :kl] c_k
        }
        kpos[t] = a.pos[en];
        kr[t] = vrank[en];
        dequantize_rank_row_cpu(vals.data() + size_t(t) * rv, row + quant_rank_row_bytes(kl, w, a.group), kr[t], w,
                                a.group);
      }
    }
    const float* value_row(int t, int& rank) const {
      rank = kr[t];
      return vals.data() + size_t(t) * a.r_vmax;
    }
  };
  auto make_tile = [&] {
    return Tile{a, std::vector<float>(size_t(lowrank_tasks::kTile) * rv), std::vector<float>(hd),
                std::vector<int>(lowrank_tasks::kTile)};
  };
  if (a.window < 0 || (a.window > 0 && (!a.k_win || !a.v_win || rv != hd || a.win_lo < 0 || a.win_lo > a.n_kv - a.n_q ||
                                        a.win_stride < a.n_kv - a.win_lo)))
    fail("attention_lowrank_quant: bad recent window (window ", a.window, ", rows from ", a.win_lo, ", stride ",
         a.win_stride, ", r_vmax ", rv, " must equal head_dim ", hd, ", n_kv ", a.n_kv, ", n_q ", a.n_q, ")");
  if (a.window == 0) {
    lowrank_tasks::run(z, a, pool, make_tile);
    return;
  }
  // window > 0: the task loop of lowrank_tasks::run with each query's window rows swapped into a copy of the tile
  using lowrank_tasks::kQChunk;
  using lowrank_tasks::kTile;
  const int W = a.window, gs = a.n_heads / a.n_kv_heads, n_chunks = (a.n_q + kQChunk - 1) / kQChunk;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int first = a.n_kv - a.n_q;  // entry of query 0
  parallel_for(pool, int64_t(a.n_kv_heads) * n_chunks, [&](int64_t b, int64_t e) {
    auto tile = make_tile();
    std::vector<float> keys(size_t(kTile) * hd), kfull(size_t(kTile) * hd), mixed(size_t(kTile) * hd);
    std::vector<int> kpos(kTile);
    std::vector<float> m, l, sc(kTile);
    for (int64_t task = b; task < e; ++task) {
      const int g = static_cast<int>(task / n_chunks), chunk = static_cast<int>(task % n_chunks);
      const int i0 = chunk * kQChunk, i1 = std::min(a.n_q, i0 + kQChunk), nq = i1 - i0;
      m.assign(size_t(gs) * nq, -std::numeric_limits<float>::infinity());
      l.assign(size_t(gs) * nq, 0.0f);
      for (int hh = 0; hh < gs; ++hh)
        for (int i = i0; i < i1; ++i) std::fill_n(z + (size_t(i) * a.n_heads + g * gs + hh) * rv, rv, 0.0f);
      const int t_end = first + i1;
      const int p_lo = a.pos[first + i0];  // the chunk's first query position: the widest reach back
      for (int t0 = 0; t0 < t_end; t0 += kTile) {
        const int nt = std::min(kTile, t_end - t0);
        tile.load(g, t0, nt, keys.data(), kpos.data());
        rope_cpu(keys.data(), kpos.data(), nt, 1, hd, hd, a.inv_freq, a.rope_layout, nullptr);
        int w_first = std::max(t0, a.win_lo);  // the tile's first entry inside some query's window
        while (w_first < t0 + nt && kpos[w_first - t0] <= p_lo - W) ++w_first;
        if (w_first < t0 + nt) {
          for (int t = w_first; t < t0 + nt; ++t)
            std::copy_n(a.k_win + (size_t(g) * a.win_stride + t - a.win_lo) * hd, hd,
                        kfull.data() + size_t(t - t0) * hd);
          rope_cpu(kfull.data() + size_t(w_first - t0) * hd, kpos.data() + (w_first - t0), t0 + nt - w_first, 1, hd, hd,
                   a.inv_freq, a.rope_layout, nullptr);
        }
        for (int i = i0; i < i1; ++i) {
          const int p = a.pos[first + i], nv = std::min(nt, first + i - t0 + 1);
          if (nv <= 0) continue;
          int wf = w_first;  // entries wf .. are read in full by this query
          while (wf < t0 + nv && kpos[wf - t0] <= p - W) ++wf;
          const float* tk = keys.data();
          if (wf < t0 + nv) {
            std::copy_n(keys.data(), size_t(wf - t0) * hd, mixed.data());
            std::copy_n(kfull.data() + size_t(wf - t0) * hd, size_t(t0 + nv - wf) * hd,
                        mixed.data() + size_t(wf - t0) * hd);
            tk = mixed.data();
          }
          for (int hh = 0; hh < gs; ++hh) {
            const int h = g * gs + hh;
            const float* q = a.q + (size_t(i) * a.n_heads + h) * hd;
            const size_t si = size_t(hh) * nq + (i - i0);
            lowrank_tile_softmax(q, tk, nv, hd, scale, sc.data(), m[si], l[si], z + (size_t(i) * a.n_heads + h) * rv,
                                 rv, [&](int t, int& rank) -> const float* {
                                   if (t0 + t >= wf) {
                                     rank = hd;
                                     return a.v_win + (size_t(g) * a.win_stride + t0 + t - a.win_lo) * hd;
                                   }
                                   return tile.value_row(t, rank);
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
