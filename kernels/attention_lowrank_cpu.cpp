// Low-rank attention, CPU twin of the fused CUDA kernel (issue 6). The task loop (one task = KV head g and a chunk
// of queries; keys rebuilt per tile into a per-task buffer, RoPE'd at each key's position, scored by every head of
// the group and query of the chunk with an online softmax; probabilities times the compressed values accumulated in
// rank space, r_vmax wide) is kernels/lowrank_tasks_cpu.h, shared with attention_lowrank_quant_cpu; this file's
// tile reads fp32 c_k rows (key t at position t; sinks: the full key as cached; alloc=spectrum: each KV head's
// block packed at its own rank, rebuilt with that many terms) and c_v at voff; the task loop also reads the recent
// window (window=N: full keys and values of each query's last N tokens).
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
        lowrank_rebuild_cpu(kt, ckg + size_t(t0 + t) * kr, ukg, kr, hd);
      }
    }
    const float* value_row(int t, int& rank) const {
      const int tok = t0 + t;
      rank = a.vrank[tok];
      return cvg + a.voff[tok];
    }
    int position(int e) const { return e; }  // key t at position t
  };
  lowrank_tasks::run(z, a, pool, [&] { return Tile{a}; });
}

}  // namespace llm
