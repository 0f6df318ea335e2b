// CPU twins of the low-rank KV-cache kernels (issue 6; maths in docs/DESIGN.md "Family 1", cache layout in
// engine/kv_lowrank.h) and the small dense linear algebra the profiles need. The CUDA kernels (a later session)
// are tested against these.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "loader/config.h"

namespace llm {

class ThreadPool;

// ---- linear algebra (kernels/linalg_cpu.cpp) ---------------------------------------------------------------
// Symmetric eigen-decomposition by cyclic Jacobi rotations, in double precision.
//   a:     (n, n) symmetric, row-major; destroyed (left nearly diagonal)
//   evals: (n)    eigenvalues, sorted descending
//   evecs: (n, n) row-major; COLUMN j is the unit eigenvector of evals[j] (A U = U diag(evals), U^T U = I)
// Throws llm::Error when a is not symmetric (|a_ij - a_ji| > 1e-9 * max|a|) or holds a NaN/Inf.
void eigh_jacobi_cpu(double* a, int n, double* evals, double* evecs);

// ---- rank-space projection and rebuild (the cache writes and the attention's tile) ---------------------------
// c = the first r rows of `down` (r x hd, row-major) times x: the coefficients c_k = DOWN_K[:r] k or
// c_v = DOWN_V[:r] v of one head's key or value.
inline void lowrank_project_cpu(float* c, const float* down, const float* x, int r, int hd) {
  for (int j = 0; j < r; ++j) {
    float acc = 0.0f;
    for (int d = 0; d < hd; ++d) acc += down[size_t(j) * hd + d] * x[d];
    c[j] = acc;
  }
}
// lowrank_rebuild_cpu (a key rebuilt from its first r coefficients) is in kernels/lowrank_tasks_cpu.h, with the
// vector helpers it uses.

// ---- low-rank attention (kernels/attention_lowrank_cpu.cpp) -------------------------------------------------
// Causal GQA attention over a low-rank cache, prefill and decode alike. Keys are rebuilt per tile of keys in
// a small per-task buffer (the shared-memory tile of the CUDA kernel), RoPE'd at each key's own position, and
// scored; values are never rebuilt: the softmax-weighted sum is accumulated in rank space.
//   q:      (n_q, n_heads, head_dim)       queries, RoPE applied; query i sits at position n_kv - n_q + i
//   ck:     (n_kv_heads, ck_stride, r_k)   compressed keys c_k = U_K[:, :r_k]^T k (before RoPE); token t at row t
//   uk:     (n_kv_heads, r_k, head_dim)    row j = basis vector j of U_K (U_K^T's first r_k rows)
//   ck_off, k_ranks: optional (alloc=spectrum, packed; n_kv_heads each): KV head g's c_k block starts at
//           ck + ck_off[g] and holds k_ranks[g] (1..r_k) values per token (row stride k_ranks[g]; ck_stride unused);
//           the rebuild sums k_ranks[g] terms, uk's rows past it are unused. Null: every block r_k wide as above
//   cv:     (n_kv_heads, cv_stride)        packed compressed values: token t's c_v (vrank[t] floats) at voff[t]
//   voff:   (n_kv)                         offset of token t inside a KV head's region (same for every head)
//   vrank:  (n_kv)                         rank of token t's value, 1..r_vmax
//   k_sink: (n_kv_heads, k_sink_stride, head_dim)  optional: full keys (before RoPE) of tokens t < n_sink, used
//                                          instead of the rebuilt ones (attention sinks kept at full key rank)
//   window: optional recent window (window > 0): a query at position p reads, for keys t with p - t < window,
//           k_win (n_kv_heads, win_stride, head_dim; full keys before RoPE) and v_win (same; full-rank value
//           coefficients, head_dim of them: needs r_vmax == head_dim) at row t - win_lo instead of the compressed
//           forms; rows cover tokens win_lo .. n_kv-1 (win_lo <= n_kv - n_q - window + 1, or 0)
//   out z:  (n_q, n_heads, r_vmax)         z_h = sum_t p_t pad(c_v,t), zero-padded to r_vmax
// Head h reads KV head h / (n_heads / n_kv_heads). Scores scaled by 1/sqrt(head_dim); online softmax in fp32.
struct LowRankAttentionArgs {
  const float* q = nullptr;
  const float* ck = nullptr;
  const float* uk = nullptr;
  const float* cv = nullptr;
  const int64_t* voff = nullptr;
  const int32_t* vrank = nullptr;
  int64_t ck_stride = 0, cv_stride = 0;
  int r_k = 0, r_vmax = 0;
  int n_q = 0, n_kv = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0;
  const float* inv_freq = nullptr;  // (head_dim/2) RoPE inverse frequencies
  RopeLayout rope_layout = RopeLayout::half_split;
  const float* rope_cs = nullptr;   // optional: rope_table_cpu rows covering every key position (else rope_cpu)
  const float* k_sink = nullptr;
  int64_t k_sink_stride = 0;
  int n_sink = 0;
  const float* k_win = nullptr;
  const float* v_win = nullptr;
  int64_t win_stride = 0;
  int win_lo = 0, window = 0;
  const int64_t* ck_off = nullptr;
  const int* k_ranks = nullptr;
};
void attention_lowrank_cpu(float* z, const LowRankAttentionArgs& a, ThreadPool* pool = nullptr);

}  // namespace llm
