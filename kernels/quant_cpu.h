// CPU twins of the mixed-precision KV-cache kernels (issue 7; maths in docs/DESIGN.md "Family 2", user guide in
// docs/prefill-compression.md, cache layout in engine/kv_prefill.h). The CUDA kernels (a later session) are
// tested against these.
//
// One cached row (head_dim values of one token's key or value for one KV head) at `bits`:
//   bits 2, 4, 8: head_dim/group groups, each [fp16 scale][fp16 min][group*bits/8 bytes of codes]; value
//                 x ~= min + code * scale, code in [0, 2^bits - 1] (asymmetric, round to nearest). Codes are
//                 packed little-end first: at 4 bits byte = c0 | c1 << 4, at 2 bits c0 | c1 << 2 | c2 << 4 | c3 << 6.
//   bits 16:      the "16-bit" class kept at full precision. The CPU stores it as fp32 (so a cache whose every
//                 token is at 16 bits reproduces the full fp32 cache exactly); the CUDA cache will store fp16/bf16.
//                 quant_row_bytes reports what is stored here (4 bytes a value).
#pragma once
#include <cstddef>
#include <cstdint>

#include "loader/config.h"

namespace llm {

class ThreadPool;

// Bytes of one row of n values at bits (2, 4, 8, 16) with groups of `group` values (group divides n, group % 4 == 0).
size_t quant_row_bytes(int n, int bits, int group);
// The same row as the CUDA cache would hold it (16-bit class at 2 bytes a value): the number the reports use.
size_t quant_row_bytes_16(int n, int bits, int group);
// Quantise x (n) into dst (quant_row_bytes(n, bits, group) bytes). Error bound per value (tests check it):
// |x - dequant(x)| <= scale/2 + fp16 rounding of min and scale, scale = (max - min) / (2^bits - 1) of the group.
void quantize_row_cpu(uint8_t* dst, const float* x, int n, int bits, int group);
void dequantize_row_cpu(float* dst, const uint8_t* src, int n, int bits, int group);
// Values d0 .. d0 + len - 1 of such a row (d0 and len multiples of group) into dst (len): the same values
// dequantize_row_cpu gives there (the decode attention's value columns, kernels/attention_quant_cpu.cpp).
void dequantize_row_part_cpu(float* dst, const uint8_t* src, int bits, int group, int d0, int len);

// Normalised Walsh-Hadamard rotation in place: x <- H x / sqrt(n), n a power of two (H the Sylvester matrix,
// H[i][j] = (-1)^popcount(i & j)). Orthonormal and its own inverse, so q.k = (Hq).(Hk) and sum p (Hv) = H sum p v.
// `quant:...,hadamard` (engine/kv_prefill.h) caches the rotated rows: an outlier channel's energy is spread over
// the whole row, so a per-token group no longer takes its range from one channel.
void hadamard_rotate_cpu(float* x, int n);

// Rank-space rows (svd + quant, the unified policy): a row holds the first n low-rank coefficients of one token's
// key (n = r_k) or value (n = its value rank), most important coefficient first. Any n >= 1 is allowed, so the
// group rule differs from the head_dim rows: groups of `group` values from the first coefficient on, the LAST
// group holding the n mod group remainder when group does not divide n (its codes padded to a whole byte);
// group <= 0 or group >= n: one group for the whole row. Each group is [fp16 scale][fp16 min][codes] exactly as
// above, so a row whose length is a multiple of group is byte-identical to quantize_row_cpu's. Same error bound.
size_t quant_rank_row_bytes(int n, int bits, int group);
size_t quant_rank_row_bytes_16(int n, int bits, int group);  // 16-bit class at 2 bytes a value (reports)
void quantize_rank_row_cpu(uint8_t* dst, const float* x, int n, int bits, int group);
void dequantize_rank_row_cpu(float* dst, const uint8_t* src, int n, int bits, int group);

// ---- attention over the mixed-precision cache (kernels/attention_quant_cpu.cpp) ------------------------------
// Causal GQA attention of n_q queries against n_kv cached entries (a layer's kept tokens, in position order).
// Entry e of KV head g lies at data[g] + off[g][e]: its key row then its value row, both at bits[g][e] (the
// same width for K and V). Each key/value is dequantised into a head_dim buffer on the stack of the task and
// used at once: nothing is dequantised into a full-size buffer.
//   q:   (n_q, n_heads, head_dim) RoPE applied (keys were cached after RoPE)
//   out: (n_q, n_heads, head_dim)
// Query i sees entries 0 .. n_kv - n_q + i (the last n_q entries are the queries' own tokens). Same arithmetic
// order as attention_cpu, so a cache of fp32 rows gives bit-identical results.
struct QuantAttentionArgs {
  const float* q = nullptr;
  const uint8_t* const* data = nullptr;   // (n_kv_heads) pointers
  const uint64_t* const* off = nullptr;   // (n_kv_heads) pointers to (n_kv) byte offsets
  const uint8_t* const* bits = nullptr;   // (n_kv_heads) pointers to (n_kv) widths
  int n_q = 0, n_kv = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, group = 0;
};
void attention_quant_cpu(float* out, const QuantAttentionArgs& a, ThreadPool* pool = nullptr);

// ---- attention over the low-rank mixed-precision cache (kernels/attention_lowrank_quant_cpu.cpp) -------------
// svd combined with quant/keep/evict (issue 7's unified policy; cache layout in engine/kv_prefill.h). Causal GQA
// attention of n_q queries against n_kv entries of one layer (in position order; the queries are the last n_q).
// Entry e of KV head g lies at data[g] + off[g][e]: its key coefficients c_k (r_k values, before RoPE) then its
// value coefficients c_v (vrank[g][e] values), both rank-space rows at bits[g][e] (quantize_rank_row_cpu).
// Per tile of keys (the CUDA kernel's shared-memory tile) each c_k row is dequantised, the key rebuilt with
// U_K (uk rows), RoPE'd at the entry's own position pos[e], and scored against the group's heads and a chunk of
// queries with an online softmax; the probabilities times the dequantised c_v accumulate in rank space (z,
// r_vmax wide, zero beyond each entry's rank). Nothing is dequantised or rebuilt into a full-size buffer.
//   q:  (n_q, n_heads, head_dim) RoPE applied;   uk: (n_kv_heads, r_k, head_dim) rows of the rebuild basis
//   z:  (n_q, n_heads, r_vmax) out; W_fused projects it (engine/kv_lowrank.h)
struct LowRankQuantAttentionArgs {
  const float* q = nullptr;
  const uint8_t* const* data = nullptr;   // (n_kv_heads) pointers
  const uint64_t* const* off = nullptr;   // (n_kv_heads) pointers to (n_kv) byte offsets
  const uint8_t* const* bits = nullptr;   // (n_kv_heads) pointers to (n_kv) widths
  const uint16_t* const* vrank = nullptr; // (n_kv_heads) pointers to (n_kv) value ranks, 1..r_vmax
  const int32_t* pos = nullptr;           // (n_kv) positions (RoPE of the rebuilt keys)
  const float* uk = nullptr;
  int r_k = 0, r_vmax = 0, group = 0;     // group: the rank-row group (quant_rank_row_bytes)
  int n_q = 0, n_kv = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0;
  const float* inv_freq = nullptr;        // (head_dim/2) RoPE inverse frequencies
  RopeLayout rope_layout = RopeLayout::half_split;
  const float* rope_cs = nullptr;         // optional: rope_table_cpu rows covering every entry's position
  // Optional (the CPU unified cache's window=/sinks=/alloc=spectrum; engine/kv_prefill.h):
  //   krank: (n_kv_heads) pointers to (n_kv) key row lengths. A length below head_dim is that many c_k values,
  //          rebuilt with the first krank rows of uk (r_k is then uk's row stride per KV head); head_dim means the
  //          row is the full pre-RoPE key itself (no rebuild). nullptr: every key row is r_k coefficients.
  //   window > 0: a query at position p reads entries e >= win_lo with pos[e] > p - window from k_win / v_win
  //          ((n_kv_heads, win_stride, head_dim): full pre-RoPE keys and all head_dim value coefficients; needs
  //          r_vmax == head_dim) at row e - win_lo, and the cache's (compressed) rows for the older entries. Every
  //          entry inside some query's window must be >= win_lo.
  const uint16_t* const* krank = nullptr;
  const float* k_win = nullptr;
  const float* v_win = nullptr;
  int64_t win_stride = 0;
  int win_lo = 0, window = 0;
};
void attention_lowrank_quant_cpu(float* z, const LowRankQuantAttentionArgs& a, ThreadPool* pool = nullptr);

// ---- attention with importance accumulators (prefill) ------------------------------------------------------
// Causal self-attention of m tokens (exactly attention_cpu with n_q = n_kv = m) that also accumulates, without
// forming the m x m matrix, for every KV head g and key j:
//   cum[g, j] = sum over all queries i >= j and the heads h of group g of p_{i,h}(j)        (H2O's A_cum, raw)
//   win[g, j] = the same sum over the last `w` queries only                                (SnapKV's window, raw)
// Work is split by query head, each head owning an (m) accumulator row, then reduced over the group in a fixed
// order: deterministic whatever the thread count.
//   q: (m, n_heads, head_dim); k, v: (n_kv_heads, m, head_dim); out: (m, n_heads, head_dim)
//   cum, win: (n_kv_heads, m); scratch: (2, n_heads, m) floats
// v == nullptr: the accumulators only (out is not touched; the low-rank prefill scores first, then attends in
// rank space with attention_lowrank_quant_cpu).
void attention_importance_cpu(float* out, float* cum, float* win, float* scratch, const float* q, const float* k,
                              const float* v, int m, int n_heads, int n_kv_heads, int head_dim, int w,
                              ThreadPool* pool = nullptr);

}  // namespace llm
