// The task loop of the two CPU low-rank attentions: attention_lowrank_cpu (fp32 rows, key t at position t,
// optional full-key sinks) and attention_lowrank_quant_cpu (quantised rank rows, entry e at its own position).
// One task = (KV head g, a chunk of kQChunk queries); it walks the keys in tiles of kTile: a Tile policy rebuilds
// the tile's keys from c_k with U_K into a per-task buffer (the CUDA kernels' shared-memory tile: rebuilt keys never
// go to the cache) and names their positions, rope_cpu rotates them, every (head of the group, query of the chunk)
// scores them with lowrank_tile_softmax against the Tile's value rows, and z is normalised at the end. Rebuilding
// once per (g, query chunk, key tile) and reusing the tile for all the group's heads and the chunk's queries keeps
// the rebuild cost at r_k*head_dim per key per chunk instead of per query. Internal to those two files and to
// engine/kv_prefill.cpp (which shares lowrank_rebuild_cpu).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/lowrank_cpu.h"
#include "kernels/ops_cpu.h"
#include "kernels/simd_cpu.h"
#include "kernels/threadpool_cpu.h"

namespace llm {

// x_hat (hd) = sum_j c[j] * row j of `up` (r x hd), j in order: a key rebuilt from its first r coefficients (the
// tiles' key rebuild, and kv_prefill's). x_hat is held in registers across the r basis rows (simd::axpy_rows)
// instead of updated in memory once per row.
inline void lowrank_rebuild_cpu(float* x_hat, const float* c, const float* up, int r, int hd) {
  std::fill_n(x_hat, hd, 0.0f);
  simd::axpy_rows(x_hat, c, up, hd, r, hd);
}

// One key tile of the rank-space online softmax, shared by attention_lowrank_cpu and attention_lowrank_quant_cpu
// (they differ only in where a tile's keys and value rows come from): scores query q against the tile's first nv
// (<= kTile) rebuilt keys (rows of hd floats) into sc, rescales z (rv floats), the running max m and sum l, and
// adds p_t * value row t, where value_row(t, rank) returns the row (valid for the tile) and sets its rank.
// The scores are simd::dot's; the weighted rows go through simd::axpy_ragged, which holds z in registers across the
// tile's rows (each z[r] still sums its rows in key order).
template <class ValueRow>
inline void lowrank_tile_softmax(const float* q, const float* keys, int nv, int hd, float scale, float* sc, float& m,
                                 float& l, float* z, int rv, ValueRow value_row) {
  float tmax = -std::numeric_limits<float>::infinity();
  for (int t = 0; t < nv; ++t) {
    sc[t] = simd::dot(q, keys + size_t(t) * hd, hd) * scale;
    tmax = std::max(tmax, sc[t]);
  }
  const float m_new = std::max(m, tmax);
  const float corr = std::exp(m - m_new);  // 0 on the first tile (m = -inf)
  if (corr != 1.0f)
    for (int r = 0; r < rv; ++r) z[r] *= corr;
  float lsum = l * corr;
  constexpr int kRows = 32;
  const float* rows[kRows];
  int ranks[kRows];
  for (int t0 = 0; t0 < nv; t0 += kRows) {
    const int n = std::min(kRows, nv - t0);
    for (int t = 0; t < n; ++t) {
      const float p = std::exp(sc[t0 + t] - m_new);
      lsum += p;
      sc[t0 + t] = p;
      rows[t] = value_row(t0 + t, ranks[t]);
    }
    simd::axpy_ragged(z, sc + t0, rows, ranks, n, rv);
  }
  l = lsum;
  m = m_new;
}

}  // namespace llm

namespace llm::lowrank_tasks {

constexpr int kTile = 32;    // keys rebuilt at a time
constexpr int kQChunk = 32;  // queries sharing one rebuild
// Decode and short calls (one query chunk) also split the keys, flash-decoding style, so that n_kv_heads tasks do
// not leave threads idle: splits of kSplitKeys keys (at most kMaxSplits), each with its own running max, sum and
// z, merged in split order afterwards. The split count depends on the shapes only (never on the thread count),
// so a result is the same whatever the pool; one split is the unsplit arithmetic exactly.
constexpr int kSplitKeys = 8 * kTile;
constexpr int kMaxSplits = 16;

// make_tile() is called once per worker and returns its Tile (with its own scratch buffers):
//   void load(int g, int t0, int nt, float* keys, int* kpos): keys t0 .. t0+nt-1 of KV head g rebuilt (before
//       RoPE) into keys (nt rows of head_dim), their positions into kpos
//   const float* value_row(int t, int& rank): the value row of key t0 + t of the last load; sets its rank
//   int position(int e): the position of key (entry) e; positions ascend with e
// Args: LowRankAttentionArgs or LowRankQuantAttentionArgs, of which run reads the shared fields q (n_q, n_heads,
// head_dim; RoPE applied; the queries are the last n_q of the n_kv keys), n_q, n_kv, n_heads, n_kv_heads, head_dim,
// r_vmax, inv_freq, rope_layout, rope_cs and the recent window's window, k_win, v_win, win_lo, win_stride (shapes already
// checked); writes z (n_q, n_heads, r_vmax).
//
// window > 0: which form of a key a query reads depends on the query (full inside its recent window: keys e >=
// win_lo with position(e) > p - window), so a tile that reaches into some query's window of the chunk also gets the
// window's full keys RoPE'd, and each such query scores a copy of the tile with its window's rows replaced by the
// full ones, reading the window's values (all head_dim coefficients) from v_win.
template <class Args, class MakeTile>
void run(float* z, const Args& a, ThreadPool* pool, MakeTile make_tile) {
  const int hd = a.head_dim, rv = a.r_vmax, W = a.window;
  const int gs = a.n_heads / a.n_kv_heads;
  const int n_chunks = (a.n_q + kQChunk - 1) / kQChunk;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int first = a.n_kv - a.n_q;  // key (position or entry) of query 0
  const int S = n_chunks == 1 ? std::clamp((a.n_kv + kSplitKeys - 1) / kSplitKeys, 1, kMaxSplits) : 1;
  const int split_keys = S > 1 ? ((a.n_kv + S - 1) / S + kTile - 1) / kTile * kTile : a.n_kv;  // whole tiles
  // S > 1: each split's unnormalised z and its running max / sum, (S, n_q, n_heads[, r_vmax])
  std::vector<float> part_z(S > 1 ? size_t(S) * a.n_q * a.n_heads * rv : 0);
  std::vector<float> part_m(S > 1 ? size_t(S) * a.n_q * a.n_heads : 0), part_l(part_m.size());
  auto zrow = [&](int split, int i, int h) {
    return S > 1 ? part_z.data() + ((size_t(split) * a.n_q + i) * a.n_heads + h) * rv
                 : z + (size_t(i) * a.n_heads + h) * rv;
  };
  auto rope = [&](float* x, const int* p, int n) {  // (the same bits either way)
    if (a.rope_cs)
      rope_table_apply_cpu(x, p, n, hd, hd, a.rope_cs, a.rope_layout);
    else
      rope_cpu(x, p, n, 1, hd, hd, a.inv_freq, a.rope_layout, nullptr);
  };
  parallel_for(pool, int64_t(a.n_kv_heads) * n_chunks * S, [&](int64_t b, int64_t e) {
    auto tile = make_tile();
    std::vector<float> keys(size_t(kTile) * hd);  // rebuilt, RoPE'd keys of one tile
    std::vector<float> kfull(W > 0 ? size_t(kTile) * hd : 0), mixed(kfull.size());  // window: full keys, a query's mix
    std::vector<int> kpos(kTile);
    std::vector<float> m, l, sc(kTile);  // running max / sum per (head, query)
    for (int64_t task = b; task < e; ++task) {
      const int split = static_cast<int>(task % S), gc = static_cast<int>(task / S);
      const int g = gc / n_chunks, chunk = gc % n_chunks;
      const int i0 = chunk * kQChunk, i1 = std::min(a.n_q, i0 + kQChunk);
      const int nq = i1 - i0;
      m.assign(size_t(gs) * nq, -std::numeric_limits<float>::infinity());
      l.assign(size_t(gs) * nq, 0.0f);
      for (int hh = 0; hh < gs; ++hh)
        for (int i = i0; i < i1; ++i) std::fill_n(zrow(split, i, g * gs + hh), rv, 0.0f);
      // keys [0, t_end) are seen by some query of the chunk; this split walks [s0, s1) of them
      const int t_end = first + i1, s0 = split * split_keys, s1 = std::min(t_end, s0 + split_keys);
      const int p_lo = W > 0 ? tile.position(first + i0) : 0;  // the chunk's first query: the widest window
      for (int t0 = s0; t0 < s1; t0 += kTile) {
        const int nt = std::min(kTile, s1 - t0);
        tile.load(g, t0, nt, keys.data(), kpos.data());
        rope(keys.data(), kpos.data(), nt);
        int w_first = t0 + nt;  // the tile's first key inside some query's window (none: t0 + nt)
        if (W > 0) {
          w_first = std::max(t0, a.win_lo);
          while (w_first < t0 + nt && kpos[w_first - t0] <= p_lo - W) ++w_first;
          for (int t = w_first; t < t0 + nt; ++t)
            std::copy_n(a.k_win + (size_t(g) * a.win_stride + t - a.win_lo) * hd, hd,
                        kfull.data() + size_t(t - t0) * hd);
          if (w_first < t0 + nt)
            rope(kfull.data() + size_t(w_first - t0) * hd, kpos.data() + (w_first - t0), t0 + nt - w_first);
        }
        for (int i = i0; i < i1; ++i) {
          const int nv = std::min(nt, first + i - t0 + 1);  // causal: keys t0 .. first + i
          if (nv <= 0) continue;
          int wf = w_first;  // keys wf .. are read in full by this query
          if (wf < t0 + nv) {
            const int p = tile.position(first + i);
            while (wf < t0 + nv && kpos[wf - t0] <= p - W) ++wf;
          }
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
            lowrank_tile_softmax(q, tk, nv, hd, scale, sc.data(), m[si], l[si], zrow(split, i, h), rv,
                                 [&](int t, int& rank) -> const float* {
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
          const size_t si = size_t(hh) * nq + (i - i0);
          if (S > 1) {  // merged below
            const size_t pi = (size_t(split) * a.n_q + i) * a.n_heads + g * gs + hh;
            part_m[pi] = m[si], part_l[pi] = l[si];
            continue;
          }
          const float inv = 1.0f / l[si];
          float* zi = zrow(0, i, g * gs + hh);
          for (int r = 0; r < rv; ++r) zi[r] *= inv;
        }
    }
  });
  if (S == 1) return;
  // the splits' softmax pieces rescaled to their common max, in split order (a split a query does not reach,
  // past its causal end, has sum 0 and is skipped; split 0 holds key 0, which every query sees)
  for (int i = 0; i < a.n_q; ++i)
    for (int h = 0; h < a.n_heads; ++h) {
      float mx = -std::numeric_limits<float>::infinity();
      for (int sp = 0; sp < S; ++sp) {
        const size_t pi = (size_t(sp) * a.n_q + i) * a.n_heads + h;
        if (part_l[pi] > 0.0f) mx = std::max(mx, part_m[pi]);
      }
      float* zi = z + (size_t(i) * a.n_heads + h) * rv;
      std::fill_n(zi, rv, 0.0f);
      float sum = 0.0f;
      for (int sp = 0; sp < S; ++sp) {
        const size_t pi = (size_t(sp) * a.n_q + i) * a.n_heads + h;
        if (part_l[pi] == 0.0f) continue;
        const float f = std::exp(part_m[pi] - mx);
        sum += part_l[pi] * f;
        const float* pz = zrow(sp, i, h);
        for (int r = 0; r < rv; ++r) zi[r] += f * pz[r];
      }
      const float inv = 1.0f / sum;
      for (int r = 0; r < rv; ++r) zi[r] *= inv;
    }
}

}  // namespace llm::lowrank_tasks
