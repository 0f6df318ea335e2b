// Low-rank attention on the GPU (issue 6): keys rebuilt from the compressed cache in shared memory with U_K,
// RoPE'd at each key's own position and scored; the softmax-weighted sum of the compressed values is accumulated
// in rank space (z, r_vmax wide per head) for the W_fused GEMM. Rebuilt keys and values never reach global memory.
// CPU twin: attention_lowrank_cpu (kernels/lowrank_cpu.h), the same arguments and the same maths; cache layout in
// engine/kv_lowrank.h and docs/kv-compression.md "Cache layout".
//
// Cache dtype: fp32 (what the CPU engine stores: kv_lowrank_create) or bf16 (half the bytes streamed; the CUDA
// engine's choice once wired in). Queries, U_K, inverse frequencies and z are fp32; accumulation is fp32.
// Any even head_dim up to 256; 1 <= r_k, r_vmax <= head_dim; any GQA group (n_heads % n_kv_heads == 0).
//
// Both kernels share one block program: a block = (KV head g, a chunk of queries, a range of keys). It walks its
// keys in tiles of 32: loads the tile's c_k rows and packed c_v into shared memory, rebuilds + RoPEs the 32 keys
// once for every query head of the group and every query of the chunk, scores, online softmax, accumulates z.
// It writes an unnormalised partial (z, max, sum); a combine kernel merges the key ranges and normalises.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include <cuda_runtime.h>

#include "kernels/common.cuh"
#include "loader/config.h"

namespace llm {

// Device pointers; the same meaning as LowRankAttentionArgs (kernels/lowrank_cpu.h):
//   q:     (n_q, n_heads, head_dim) fp32, RoPE applied; query i at position n_kv - n_q + i
//   ck:    (n_kv_heads, ck_stride, r_k)  T = float or bf16; token t at row t (one layer's block)
//   uk:    (n_kv_heads, r_k, head_dim) fp32; row j = basis vector j of U_K
//   cv:    (n_kv_heads, cv_stride)       T; token t's c_v (vrank[t] values) at voff[t] inside its head's block
//   voff:  (>= n_kv) int64, vrank: (>= n_kv) int32 (1..r_vmax), shared by every KV head
//   inv_freq: (head_dim/2) fp32 (rope_inv_freq_cpu's output, llama3 scaling included)
//   k_sink: (n_kv_heads, k_sink_stride, head_dim) fp32, optional (sinks=N): full keys (before RoPE) of the tokens
//           t < n_sink, used instead of the keys rebuilt from c_k and RoPE'd at t like them (the CPU twin's sinks).
//           fp32 as the CPU cache holds them: N rows per (layer, KV head) cost nothing next to the cache, and the
//           tokens most attended to keep the precision the CPU gives them.
//   window (window=N > 0): a query at position p reads tokens p-N+1 .. p in full (the CPU twin's k_win / v_win):
//           the full pre-RoPE key and all head_dim value coefficients (DOWN_V v; needs r_vmax == head_dim), older
//           tokens compressed. Tokens before the call's first query (position n_kv - n_q) come from the ring
//           k_win / v_win (n_kv_heads, window, head_dim) fp32, token t in slot t % window (kv_lowrank_window_write
//           fills it after the attention); the call's own tokens from k_new / v_new (n_q, n_kv_heads, head_dim) fp32
//           (this call's W_K x and kv_lowrank_write_cuda's v_full), token n_kv - n_q + i at row i.
// Which kernels attention_lowrank_{decode,prefill}_cuda run: automatic = the tensor-core kernels (bf16 cache; see
// attention_lowrank_tc_supported) when the arguments allow them, else the block program (kernels/lowrank_tile.cuh);
// generic = the block program always; tensor = the tensor-core kernels, refusing arguments they cannot take (the
// message says why).
enum class LowRankKernel { automatic, generic, tensor };

template <class T>
struct LowRankAttentionCudaArgs {
  const float* q = nullptr;
  const T* ck = nullptr;
  const float* uk = nullptr;
  const T* cv = nullptr;
  const int64_t* voff = nullptr;
  const int32_t* vrank = nullptr;
  int64_t ck_stride = 0, cv_stride = 0;
  int r_k = 0, r_vmax = 0;
  int n_heads = 0, n_kv_heads = 0, head_dim = 0;
  const float* inv_freq = nullptr;
  RopeLayout rope_layout = RopeLayout::half_split;
  const float* k_sink = nullptr;
  int64_t k_sink_stride = 0;
  int n_sink = 0;
  const float* k_win = nullptr;
  const float* v_win = nullptr;
  const float* k_new = nullptr;
  const float* v_new = nullptr;
  int window = 0;
  // alloc=spectrum, packed (optional, device, n_kv_heads each): KV head g's c_k block starts at ck + ck_off[g] and
  // holds k_ranks[g] <= r_k values per token (row stride k_ranks[g]; ck_stride unused); U_K stays (n_kv_heads, r_k,
  // head_dim) with its rows past k_ranks[g] unused. Null: every block r_k wide at ck + g * ck_stride * r_k.
  const int64_t* ck_off = nullptr;
  const int* k_ranks = nullptr;
  // Every vrank[] entry is a multiple of v_align (the engine: the gcd of the policy's ranks, head_dim included with
  // vsinks). 8 or more lets the tensor-core decode kernel copy c_v in 16-byte pieces; 1 promises nothing.
  int v_align = 1;
  LowRankKernel kernel = LowRankKernel::automatic;
};

// The tensor-core kernels (kernels/attention_lowrank_tc.cu) take: bf16 cache, head_dim 64 or 128, r_k 16, 32 or 64,
// r_vmax a multiple of 16, v_align and cv_stride multiples of 8, GQA group <= 8, sinks (k_sink) or not, no window
// or alloc=spectrum, 16-byte aligned ck and cv. False: *why (when given) names the first argument they cannot take.
bool attention_lowrank_tc_supported(const LowRankAttentionCudaArgs<bf16>& a, std::string* why = nullptr);
// Whether attention_lowrank_{prefill,decode}_cuda run the tensor-core kernels for these arguments, by a.kernel:
// tensor always (they refuse what they cannot take), automatic when attention_lowrank_tc_supported, generic never.
// False: *why (when given) says why the block program runs instead.
bool attention_lowrank_tc_chosen(const LowRankAttentionCudaArgs<bf16>& a, std::string* why = nullptr);
// The tensor-core decode kernel itself (attention_lowrank_decode_cuda's tensor branch; same arguments and partial
// workspace), refusing arguments it cannot take.
void attention_lowrank_tc_decode_cuda(float* z, const LowRankAttentionCudaArgs<bf16>& a, const int* pos, int splits,
                                      float* workspace, cudaStream_t st);
// The tensor-core prefill kernel (attention_lowrank_prefill_cuda's tensor branch: z written directly, normalised;
// no workspace), refusing arguments it cannot take.
void attention_lowrank_tc_prefill_cuda(float* z, const LowRankAttentionCudaArgs<bf16>& a, int n_q, int n_kv,
                                       cudaStream_t st);

// Prefill (n_q queries, causal, GQA): grid (n_kv_heads, ceil(n_q / queries-per-block)), one key range (no split).
//   z: (n_q, n_heads, r_vmax) fp32 device. workspace: attention_lowrank_prefill_workspace_floats() floats.
size_t attention_lowrank_prefill_workspace_floats(int n_q, int n_heads, int r_vmax);
template <class T>
void attention_lowrank_prefill_cuda(float* z, const LowRankAttentionCudaArgs<T>& a, int n_q, int n_kv,
                                    float* workspace, cudaStream_t st);

// Decode (one query at position *pos, n_kv = *pos + 1 read on the device so one captured graph serves every
// step): split-K flash decoding, grid (n_kv_heads, splits); each block reads its key range of ONE KV head once
// for all the query heads of the group. z: (n_heads, r_vmax) fp32. splits: attention_lowrank_decode_splits().
int attention_lowrank_decode_splits(int n_kv_heads, int capacity, int sm_count);
size_t attention_lowrank_decode_workspace_floats(int n_heads, int r_vmax, int splits);
template <class T>
void attention_lowrank_decode_cuda(float* z, const LowRankAttentionCudaArgs<T>& a, const int* pos, int splits,
                                   float* workspace, cudaStream_t st);

// The compressed-cache write of a block of n tokens at positions pos[0] + i, or pos[i] with pos_each (selective
// propagation's kept tokens, issue 7: not consecutive) (what kv_lowrank_attention does on
// the CPU between the projections and the attention; the hook the CUDA forward pass needs):
//   q:   (n, n_heads, head_dim) fp32, RoPE'd in place (rope_cpu's maths, both layouts)
//   kc:  (n, n_kv_heads, r_k) fp32, W_K' x (keys already projected, before RoPE) -> ck row pos of each KV head
//   v:   (n, n_kv_heads, head_dim) fp32, W_V x -> c_v = U_V[:, :r_t]^T v at the token's rank, at voff[pos] in cv
//   uv:  (n_kv_heads, r_vmax, head_dim) fp32, rows of U_V^T
// ck, cv, voff, vrank, strides, ranks and inv_freq as in LowRankAttentionCudaArgs (voff/vrank already hold the
// new tokens' entries: the rank policy runs on the host). pos is a device pointer (one decode graph, every step).
// v_full (optional, window=N): (n, n_kv_heads, r_vmax) fp32 gets every coefficient U_V[:, :r_vmax]^T v of the
// tokens (the attention's v_new; c_v is its first vrank values). ck_off / k_ranks (optional, alloc=spectrum packed,
// as LowRankAttentionCudaArgs): KV head g's first k_ranks[g] values of kc go to ck + ck_off[g] + pos * k_ranks[g].
template <class T>
void kv_lowrank_write_cuda(float* q, const float* kc, const float* v, const float* uv, T* ck, T* cv,
                           const int64_t* voff, const int32_t* vrank, int64_t ck_stride, int64_t cv_stride, int n,
                           int n_heads, int n_kv_heads, int head_dim, int r_k, int r_vmax, const float* inv_freq,
                           RopeLayout layout, const int* pos, cudaStream_t st, bool pos_each = false,
                           float* v_full = nullptr, const int64_t* ck_off = nullptr, const int* k_ranks = nullptr);

// The recent window's ring (window=N), after the attention of a block of n tokens at positions pos[0] + i: the
// last min(n, N) of them copied from k_new / v_new (n, n_kv_heads, head_dim) fp32 into one layer's k_win / v_win
// (n_kv_heads, window, head_dim) at slot position % window (the tokens they replace left the window; their
// compressed forms are in ck / cv, which kv_lowrank_write_cuda writes for every token). pos is read on the device
// (the decode graph runs it at every step).
void kv_lowrank_window_write_cuda(float* k_win, float* v_win, const float* k_new, const float* v_new, int n,
                                  int n_kv_heads, int head_dim, int window, const int* pos, cudaStream_t st);

// Attention sinks (sinks=N): the full pre-RoPE keys k = W_K x of the tokens of a block of n at positions
// pos[0] + i < n_sink (what kv_lowrank_attention computes on the CPU with the model's W_K), into one layer's
// k_sink (n_kv_heads, n_sink, head_dim) fp32 at row pos[0] + i; tokens at later positions write nothing, so the
// decode graph runs it at every step (pos is read on the device). wk: (n_kv_heads * head_dim, dim) bf16 rows of
// W_K; x: (n, dim) bf16 (the normed input of the W_QKV' projection); fp32 accumulation.
void kv_lowrank_sink_write_cuda(float* k_sink, const bf16* wk, const bf16* x, int n, int dim, int n_kv_heads,
                                int head_dim, int n_sink, const int* pos, cudaStream_t st);

// Dynamic shared memory one block needs (bytes), for the launch checks and the docs.
// window: window=N > 0 (with q_per_block > 1, the prefill: the full rows of a tile beside the rebuilt ones,
// kernels/lowrank_tile.cuh smem_window_floats; the decode's one query replaces the tile's rows in place).
size_t attention_lowrank_smem_bytes(int group, int q_per_block, int head_dim, int r_k, int r_vmax, int window = 0);

}  // namespace llm
