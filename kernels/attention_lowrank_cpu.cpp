// Low-rank attention, CPU twin of the fused CUDA kernel (issue 6). The task loop (one task = KV head g and a chunk
// of queries; keys rebuilt per tile into a per-task buffer, RoPE'd at each key's position, scored by every head of
// the group and query of the chunk with an online softmax; probabilities times the compressed values accumulated in
// rank space, r_vmax wide) is kernels/lowrank_tasks_cpu.h, shared with attention_lowrank_quant_cpu; this file's
// tile reads fp32 c_k rows (key t at position t; sinks: the full key as cached; alloc=spectrum: each KV head's
// block packed at its own rank, rebuilt with that many terms) and c_v at voff.
//
// Cost per layer: n_q * n_kv * n_heads * (head_dim + r_v) for scores and accumulation, plus
// ceil(n_q / kQChunk) * n_kv * n_kv_heads * r_k * head_dim for the rebuilds.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/lowrank_cpu.h"
#include "kernels/lowrank_tasks_cpu.h"
#include "loader/error.h"

namespace llm {

namespace {

// KV head g's c_k block and its rank: packed (ck_off / k_ranks) or every block r_k wide.
const float* ck_block(const LowRankAttentionArgs& a, int g) {
  return a.ck_off ? a.ck + a.ck_off[g] : a.ck + size_t(g) * a.ck_stride * a.r_k;
}
int ck_rank(const LowRankAttentionArgs& a, int g) { return a.k_ranks ? a.k_ranks[g] : a.r_k; }

// The rebuilt key of token t of KV head g (before RoPE): the sink's full key, or sum_j c_k[t, j] * up_j.
void load_key(const LowRankAttentionArgs& a, int g, int t, float* kt) {
  if (t < a.n_sink) {
    std::copy_n(a.k_sink + (size_t(g) * a.k_sink_stride + t) * a.head_dim, a.head_dim, kt);
    return;
  }
  const int kr = ck_rank(a, g);
  lowrank_tasks::rebuild_key(kt, ck_block(a, g) + size_t(t) * kr, a.uk + size_t(g) * a.r_k * a.head_dim, kr,
                             a.head_dim);
}

// window > 0: which form of a key a query reads depends on the query (full inside its recent window), so the task
// loop of lowrank_tasks::run (one tile for every query of the chunk) is kept for the keys outside every window of
// the chunk; a tile that reaches into some query's window also gets its full keys loaded, and each such query
// scores a copy of the tile with its window's rows replaced by the full ones.
void attention_lowrank_window(float* z, const LowRankAttentionArgs& a, ThreadPool* pool) {
  using lowrank_tasks::kQChunk;
  using lowrank_tasks::kTile;
  const int hd = a.head_dim, rv = a.r_vmax, W = a.window;
  const int gs = a.n_heads / a.n_kv_heads;
  const int n_chunks = (a.n_q + kQChunk - 1) / kQChunk;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int first = a.n_kv - a.n_q;  // position of query 0
  parallel_for(pool, int64_t(a.n_kv_heads) * n_chunks, [&](int64_t b, int64_t e) {
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
      const float* cvg = a.cv + size_t(g) * a.cv_stride;
      const int t_end = first + i1;
      for (int t0 = 0; t0 < t_end; t0 += kTile) {
        const int nt = std::min(kTile, t_end - t0);
        for (int t = 0; t < nt; ++t) {
          kpos[t] = t0 + t;
          load_key(a, g, t0 + t, keys.data() + size_t(t) * hd);
        }
        rope_cpu(keys.data(), kpos.data(), nt, 1, hd, hd, a.inv_freq, a.rope_layout, nullptr);
        const int w_first = std::max(t0, std::max(a.win_lo, first + i0 - W + 1));  // first key of the tile inside
        const bool any_window = w_first < t0 + nt;                                    // some query's window
        if (any_window) {
          for (int t = w_first; t < t0 + nt; ++t)
            std::copy_n(a.k_win + (size_t(g) * a.win_stride + t - a.win_lo) * hd, hd,
                        kfull.data() + size_t(t - t0) * hd);
          rope_cpu(kfull.data() + size_t(w_first - t0) * hd, kpos.data() + (w_first - t0), t0 + nt - w_first, 1, hd, hd,
                   a.inv_freq, a.rope_layout, nullptr);
        }
        for (int hh = 0; hh < gs; ++hh) {
          const int h = g * gs + hh;
          for (int i = i0; i < i1; ++i) {
            const int p = first + i, nv = std::min(nt, p - t0 + 1);
            if (nv <= 0) continue;
            const int wf = std::max(t0, p - W + 1);  // keys wf .. p are read in full
            const float* tk = keys.data();
            if (wf < t0 + nv) {
              std::copy_n(keys.data(), size_t(wf - t0) * hd, mixed.data());
              std::copy_n(kfull.data() + size_t(wf - t0) * hd, size_t(t0 + nv - wf) * hd,
                          mixed.data() + size_t(wf - t0) * hd);
              tk = mixed.data();
            }
            const float* q = a.q + (size_t(i) * a.n_heads + h) * hd;
            const size_t si = size_t(hh) * nq + (i - i0);
            lowrank_tile_softmax(q, tk, nv, hd, scale, sc.data(), m[si], l[si], z + (size_t(i) * a.n_heads + h) * rv,
                                 rv, [&](int t, int& rank) -> const float* {
                                   const int tok = t0 + t;
                                   if (tok >= wf) {
                                     rank = hd;
                                     return a.v_win + (size_t(g) * a.win_stride + tok - a.win_lo) * hd;
                                   }
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

}  // namespace

void attention_lowrank_cpu(float* z, const LowRankAttentionArgs& a, ThreadPool* pool) {
  const int hd = a.head_dim, rk = a.r_k, rv = a.r_vmax;
  if (a.n_q <= 0 || a.n_kv < a.n_q || a.n_kv_heads <= 0 || a.n_heads % a.n_kv_heads != 0 || rk < 1 || rk > hd ||
      rv < 1 || rv > hd || hd % 2 != 0 || a.n_sink < 0 || (a.n_sink > 0 && (!a.k_sink || a.k_sink_stride < a.n_sink)))
    fail("attention_lowrank: bad shapes (n_q ", a.n_q, ", n_kv ", a.n_kv, ", heads ", a.n_heads, "/", a.n_kv_heads,
         ", head_dim ", hd, ", r_k ", rk, ", r_vmax ", rv, ", sinks ", a.n_sink, ")");
  if (a.window < 0 ||
      (a.window > 0 && (!a.k_win || !a.v_win || rv != hd || a.win_lo < 0 ||
                        a.win_lo > std::max(0, a.n_kv - a.n_q - a.window + 1) || a.win_stride < a.n_kv - a.win_lo)))
    fail("attention_lowrank: bad recent window (window ", a.window, ", rows from ", a.win_lo, ", stride ", a.win_stride,
         ", r_vmax ", rv, " must equal head_dim ", hd, ", n_kv ", a.n_kv, ", n_q ", a.n_q, ")");
  if ((a.ck_off == nullptr) != (a.k_ranks == nullptr))
    fail("attention_lowrank: the packed c_k layout needs both ck_off and k_ranks (or neither)");
  for (int g = 0; a.k_ranks && g < a.n_kv_heads; ++g)
    if (a.k_ranks[g] < 1 || a.k_ranks[g] > rk)
      fail("attention_lowrank: KV head ", g, "'s key rank ", a.k_ranks[g], " is outside 1..r_k ", rk);
  if (a.window > 0) {
    attention_lowrank_window(z, a, pool);
    return;
  }
  struct Tile {
    const LowRankAttentionArgs& a;
    const float* cvg = nullptr;
    int t0 = 0;  // the key of the last load's first row
    // rebuild: key_t = sum_j c_k[t, j] * up_j (sink tokens: their full key as cached)
    void load(int g, int first_key, int nt, float* keys, int* kpos) {
      const int hd = a.head_dim, kr = ck_rank(a, g);
      const float* ckg = ck_block(a, g);
      const float* ukg = a.uk + size_t(g) * a.r_k * hd;
      cvg = a.cv + size_t(g) * a.cv_stride;
      t0 = first_key;
      for (int t = 0; t < nt; ++t) {
        float* kt = keys + size_t(t) * hd;
        kpos[t] = t0 + t;
        if (t0 + t < a.n_sink) {
          std::copy_n(a.k_sink + (size_t(g) * a.k_sink_stride + t0 + t) * hd, hd, kt);
          continue;
        }
        lowrank_tasks::rebuild_key(kt, ckg + size_t(t0 + t) * kr, ukg, kr, hd);
      }
    }
    const float* value_row(int t, int& rank) const {
      const int tok = t0 + t;
      rank = a.vrank[tok];
      return cvg + a.voff[tok];
    }
  };
  lowrank_tasks::run(z, a, pool, [&] { return Tile{a}; });
}

}  // namespace llm
