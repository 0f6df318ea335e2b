// Attention over the low-rank mixed-precision cache: CPU twin of the CUDA kernel for svd combined with
// quant/keep/evict (issue 7's unified policy; declaration and layout in kernels/quant_cpu.h). The task loop is
// attention_lowrank_cpu's (kernels/lowrank_tasks_cpu.h: one task = KV head g and a chunk of queries; keys walked in
// tiles; one rebuild per tile shared by the group's heads and the chunk's queries; online softmax; values
// accumulated in rank space), with this file's tile making the three differences: each entry's rows are
// dequantised from its own width as the tile is loaded, each key is RoPE'd at the entry's own position (tokens may
// have been dropped), and ranks are per entry and KV head. Optional per-entry key ranks (krank: a head_dim-long row
// is the full key, not rebuilt) and a recent window read from side rows (window > 0: each query reads its own
// window in full; the task loop mixes the tile per query, as for attention_lowrank_cpu).
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
          lowrank_rebuild_cpu(keys + size_t(t) * hd, crow.data(), ukg, kl, hd);  // key = U_K[:, :kl] c_k
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
    int position(int e) const { return a.pos[e]; }
  };
  auto make_tile = [&] {
    return Tile{a, std::vector<float>(size_t(lowrank_tasks::kTile) * rv), std::vector<float>(hd),
                std::vector<int>(lowrank_tasks::kTile)};
  };
  if (a.window < 0 || (a.window > 0 && (!a.k_win || !a.v_win || rv != hd || a.win_lo < 0 || a.win_lo > a.n_kv - a.n_q ||
                                        a.win_stride < a.n_kv - a.win_lo)))
    fail("attention_lowrank_quant: bad recent window (window ", a.window, ", rows from ", a.win_lo, ", stride ",
         a.win_stride, ", r_vmax ", rv, " must equal head_dim ", hd, ", n_kv ", a.n_kv, ", n_q ", a.n_q, ")");
  lowrank_tasks::run(z, a, pool, make_tile);
}

}  // namespace llm
