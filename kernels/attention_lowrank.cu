// Low-rank attention kernels (issue 6): prefill and split-K decode share one block program, then a combine kernel.
// The block program (load a tile, rebuild + RoPE the keys, score, online softmax, accumulate in rank space, write
// partials) and the combine live in kernels/lowrank_tile.cuh, shared with the unified cache's kernel
// (attention_lowrank_quant.cu); this file gives it its tile (RowsTile: c_k rows t0.. contiguous, c_v per token at
// voff, zero-padded to r_vmax, key t rotated by position t), launches it, and writes new tokens (kv_lowrank_write).
//
// Napkin math, Llama-3-8B (8 KV heads, head_dim 128, r_k 32, seed values 0.4*32 + 0.4*64 + 0.2*128 = 64 dims):
//   bytes per token per layer: 8 * (32 + 64) * 2 B = 1.5 KB bf16 (3 KB fp32) vs 4 KB for the full bf16 cache.
//   rebuild: r_k * head_dim = 4096 FMA per key per KV head: at 32K context 1.07 GFMA per layer, 69 GFLOP per
//   token over 32 layers (~1.1 ms of fp32 FMA on an H100) against ~0.5 ms to stream the bf16 compressed cache.
//   The rebuild, not the bytes, is what this kernel's decode time will show; see docs/kv-compression.md.
#include <algorithm>
#include <type_traits>

#include "kernels/attention_lowrank_cuda.h"
#include "kernels/lowrank_tile.cuh"

namespace llm {

namespace {
using lowrank_tile::kT;
using lowrank_tile::kThreads;
constexpr int kPrefillQ = 16;  // queries per prefill block (halved until the shared memory fits)

// Tile of the fp32/bf16 cache: key t is token t (RoPE position t); its c_k row is contiguous with the next ones,
// its c_v (vrank[t] values) starts at voff[t] inside the KV head's block. Sinks (n_sink > 0): a token t < n_sink
// takes its cached full key instead of the rebuilt one.
template <class T>
struct RowsTile {
  const T* ckg;  // KV head g's c_k block (ck_stride, r_k)
  const T* cvg;  // KV head g's c_v block (cv_stride)
  const int64_t* voff;
  const int32_t* vrank;
  int rk, rv;
  const float* ksg = nullptr;  // KV head g's full keys (k_sink_stride, head_dim), sinks=N
  int n_sink = 0, hd = 0;
  int rkg = 0;  // KV head g's own key rank (alloc=spectrum packed: its c_k row stride), else rk
  // c_k rows t0 .. t0+nt-1 are contiguous (rkg values each, zero-filled to rk); c_v per token at voff (zero past
  // its rank = pad(c_v))
  __device__ __forceinline__ void load(int t0, int nt, float* sCk, float* sCv) const {
    const T* ckt = ckg + size_t(t0) * rkg;
    if (rkg == rk) {
      for (int idx = threadIdx.x; idx < nt * rk; idx += blockDim.x) sCk[idx] = to_f32(ckt[idx]);
    } else {
      for (int idx = threadIdx.x; idx < nt * rk; idx += blockDim.x) {
        const int t = idx / rk, j = idx - t * rk;
        sCk[idx] = j < rkg ? to_f32(ckt[t * rkg + j]) : 0.0f;
      }
    }
    for (int idx = threadIdx.x; idx < nt * rv; idx += blockDim.x) {
      const int t = idx / rv, r = idx - t * rv, tok = t0 + t;
      sCv[idx] = r < vrank[tok] ? to_f32(cvg[voff[tok] + r]) : 0.0f;
    }
  }
  __device__ __forceinline__ int key_pos(int t0, int t) const { return t0 + t; }
  __device__ __forceinline__ int key_rank() const { return rkg; }
  // the rebuild of a sink token is discarded for its cached key (fp32, before RoPE), as attention_lowrank_cpu
  __device__ __forceinline__ void sink_key(int tok, int ia, int ib, float& ka, float& kb) const {
    if (tok < n_sink) {
      const float* k = ksg + size_t(tok) * hd;
      ka = k[ia];
      kb = k[ib];
    }
  }
};

// window=N: RowsTile plus the recent window (the block program's optional win_first / full_key / full_value):
// token tok >= first (this call's) from the new rows, older ones from the ring slot tok % window.
template <class T>
struct RowsWindowTile : RowsTile<T> {
  const float* kwg;  // KV head g's ring rows (window, head_dim): k_win + g * window * head_dim
  const float* vwg;
  const float* kng;  // KV head g's row of the call's token 0: k_new + g * head_dim (row stride n_kv_heads*head_dim)
  const float* vng;
  int window = 0, first = 0, row_stride = 0;
  __device__ __forceinline__ int win_first(int p) const { return p - window + 1; }
  __device__ __forceinline__ const float* full_row(const float* ring, const float* fresh, int tok) const {
    return tok >= first ? fresh + size_t(tok - first) * row_stride : ring + size_t(tok % window) * this->hd;
  }
  __device__ __forceinline__ void full_key(int tok, int ia, int ib, float& ka, float& kb) const {
    const float* k = full_row(kwg, kng, tok);
    ka = k[ia];
    kb = k[ib];
  }
  __device__ __forceinline__ float full_value(int tok, int r) const { return full_row(vwg, vng, tok)[r]; }
};

// Block = (KV head g, query chunk, split): the block program of kernels/lowrank_tile.cuh over this file's tile.
template <class T, bool kWindow>
__global__ void __launch_bounds__(kThreads)
    attn_lowrank_kernel(float* part_z, float* part_ml, LowRankAttentionCudaArgs<T> a, int n_q, int n_kv_host,
                        const int* pos, int qch) {
  extern __shared__ float smem[];
  const int g = blockIdx.x;
  const int n_kv = pos ? pos[0] + 1 : n_kv_host;
  const RowsTile<T> tile{a.ck_off ? a.ck + a.ck_off[g] : a.ck + size_t(g) * a.ck_stride * a.r_k,
                         a.cv + size_t(g) * a.cv_stride,
                         a.voff,
                         a.vrank,
                         a.r_k,
                         a.r_vmax,
                         a.n_sink > 0 ? a.k_sink + size_t(g) * a.k_sink_stride * a.head_dim : nullptr,
                         a.n_sink,
                         a.head_dim,
                         a.k_ranks ? a.k_ranks[g] : a.r_k};
  if constexpr (kWindow) {
    const size_t ring = size_t(g) * a.window * a.head_dim;
    const RowsWindowTile<T> wt{tile,
                               a.k_win + ring,
                               a.v_win + ring,
                               a.k_new + size_t(g) * a.head_dim,
                               a.v_new + size_t(g) * a.head_dim,
                               a.window,
                               n_kv - n_q,
                               a.n_kv_heads * a.head_dim};
    lowrank_tile::block_program(smem, part_z, part_ml, a, n_q, n_kv, qch, wt);
  } else {
    lowrank_tile::block_program(smem, part_z, part_ml, a, n_q, n_kv, qch, tile);
  }
}

// Block = (head h, query i); merges the S partials of that (i, h) and normalises.
__global__ void attn_lowrank_combine_kernel(float* z, const float* part_z, const float* part_ml, int n_heads, int rv,
                                            int S) {
  lowrank_tile::combine_block(z, part_z, part_ml, n_heads, rv, S);
}

__device__ __forceinline__ void store_f32(float* p, float x) { *p = x; }
__device__ __forceinline__ void store_f32(bf16* p, float x) { *p = __float2bfloat16_rn(x); }

// Block = one token i at position p = pos[0] + i (pos_each: pos[i]); three independent loops over its items (no
// shared memory).
template <class T>
__global__ void __launch_bounds__(kThreads)
    kv_lowrank_write_kernel(float* q, const float* kc, const float* v, const float* uv, T* ck, T* cv,
                            const int64_t* voff, const int32_t* vrank, int64_t ck_stride, int64_t cv_stride,
                            int n_heads, int nkv, int D, int rk, int rv, const float* inv_freq, bool interleaved,
                            const int* pos, bool pos_each, float* v_full, const int64_t* ck_off,
                            const int* k_ranks) {
  const int i = blockIdx.x, p = pos_each ? pos[i] : pos[0] + i, half = D / 2;
  // q: item = (head hh, rotation pair j), as rope_cpu
  float* qi = q + size_t(i) * n_heads * D;
  for (int idx = threadIdx.x; idx < n_heads * half; idx += blockDim.x) {
    const int hh = idx / half, j = idx - hh * half;
    const int ia = interleaved ? 2 * j : j, ib = interleaved ? 2 * j + 1 : j + half;
    const float ang = static_cast<float>(p) * inv_freq[j];
    float sn, cs;
    sincosf(ang, &sn, &cs);
    float* x = qi + size_t(hh) * D;
    const float a = x[ia], b = x[ib];
    x[ia] = a * cs - b * sn;
    x[ib] = a * sn + b * cs;
  }
  // c_k: item = (KV head g, dim jj); packed (alloc=spectrum): the block's own rank, the padding's zeros dropped
  for (int idx = threadIdx.x; idx < nkv * rk; idx += blockDim.x) {
    const int g = idx / rk, jj = idx - g * rk;
    const float x = kc[(size_t(i) * nkv + g) * rk + jj];
    if (!ck_off) {
      store_f32(ck + (size_t(g) * ck_stride + p) * rk + jj, x);
    } else if (jj < k_ranks[g]) {
      store_f32(ck + ck_off[g] + size_t(p) * k_ranks[g] + jj, x);
    }
  }
  // c_v: item = (KV head g, rank dim j < vrank[p]); c_v[j] = U_V row j . v (v_full: every j < r_vmax too)
  const int r_t = vrank[p];
  const int64_t off = voff[p];
  for (int idx = threadIdx.x; idx < nkv * rv; idx += blockDim.x) {
    const int g = idx / rv, j = idx - g * rv;
    if (j >= r_t && !v_full) continue;
    const float* u = uv + (size_t(g) * rv + j) * D;
    const float* vv = v + (size_t(i) * nkv + g) * D;
    float acc = 0.0f;
    for (int d = 0; d < D; ++d) acc = fmaf(u[d], vv[d], acc);
    if (j < r_t) store_f32(cv + size_t(g) * cv_stride + off + j, acc);
    if (v_full) v_full[(size_t(i) * nkv + g) * rv + j] = acc;
  }
}

// Block = (one of the last min(n, window) tokens of the block, KV head g): its full key and value coefficients
// into the ring slot of its position.
__global__ void __launch_bounds__(kThreads)
    kv_lowrank_window_write_kernel(float* k_win, float* v_win, const float* k_new, const float* v_new, int n, int nkv,
                                   int D, int window, const int* pos) {
  const int i = n - min(n, window) + blockIdx.x, g = blockIdx.y, slot = (pos[0] + i) % window;
  const size_t src = (size_t(i) * nkv + g) * D, dst = (size_t(g) * window + slot) * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    k_win[dst + d] = k_new[src + d];
    v_win[dst + d] = v_new[src + d];
  }
}

// Block = (token i of the first min(n, n_sink), KV head g); exits when pos[0] + i >= n_sink (every step of a decode
// graph launches it). One warp per output dim d: k[d] = W_K row (g, d) . x_i, lanes strided over dim, fp32.
__global__ void __launch_bounds__(kThreads)
    kv_lowrank_sink_write_kernel(float* k_sink, const bf16* wk, const bf16* x, int dim, int D, int n_sink,
                                 const int* pos) {
  const int i = blockIdx.x, g = blockIdx.y, p = pos[0] + i;
  if (p >= n_sink) return;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  const bf16* xi = x + size_t(i) * dim;
  for (int d = warp; d < D; d += nw) {
    const bf16* w = wk + (size_t(g) * D + d) * dim;
    float acc = 0.0f;
    for (int e = lane; e < dim; e += 32) acc = fmaf(to_f32(w[e]), to_f32(xi[e]), acc);
    acc = warp_sum(acc);
    if (lane == 0) k_sink[(size_t(g) * n_sink + p) * D + d] = acc;
  }
}

template <class T>
void check_args(const char* who, const LowRankAttentionCudaArgs<T>& a) {
  lowrank_tile::check_shape(who, a.head_dim, a.n_heads, a.n_kv_heads, a.r_k, a.r_vmax);
  if (!a.q || !a.ck || !a.uk || !a.cv || !a.voff || !a.vrank || !a.inv_freq)
    fail(who, ": a device pointer is null (q, ck, uk, cv, voff, vrank and inv_freq are all required)");
  if (a.n_sink < 0 || (a.n_sink > 0 && (!a.k_sink || a.k_sink_stride < a.n_sink)))
    fail(who, ": sinks ", a.n_sink, " need k_sink with k_sink_stride >= n_sink (got ", a.k_sink_stride, ")");
  if (!a.ck_off != !a.k_ranks)
    fail(who, ": ck_off and k_ranks (alloc=spectrum, packed c_k blocks) are given together or not at all");
  if (a.window < 0 || (a.window > 0 && (!a.k_win || !a.v_win || !a.k_new || !a.v_new || a.r_vmax != a.head_dim)))
    fail(who, ": window ", a.window, " needs k_win, v_win, k_new and v_new, and r_vmax ", a.r_vmax,
         " equal to head_dim ", a.head_dim, " (the window's values are read at full rank)");
}

// attention_lowrank_tc_chosen for the bf16 cache; the fp32 cache never (tensor is refused for it)
template <class T>
bool use_tensor_cores(const char* who, const LowRankAttentionCudaArgs<T>& a) {
  if constexpr (std::is_same_v<T, bf16>) {
    return attention_lowrank_tc_chosen(a);
  } else {
    if (a.kernel == LowRankKernel::tensor)
      fail(who, ": the tensor-core kernel reads the bf16 cache (this one is fp32)");
    return false;
  }
}

template <class T>
void launch_block_program(float* part_z, float* part_ml, const LowRankAttentionCudaArgs<T>& a, int n_q,
                          int n_kv_host, const int* pos, int qch, int splits, size_t smem, cudaStream_t st) {
  const dim3 grid(a.n_kv_heads, ceil_div(n_q, qch), splits);
  if (a.window > 0) {  // a session constant: the decode graph always holds the same instantiation
    CUDA_CHECK(cudaFuncSetAttribute(attn_lowrank_kernel<T, true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(smem)));
    attn_lowrank_kernel<T, true><<<grid, kThreads, smem, st>>>(part_z, part_ml, a, n_q, n_kv_host, pos, qch);
  } else {
    CUDA_CHECK(cudaFuncSetAttribute(attn_lowrank_kernel<T, false>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(smem)));
    attn_lowrank_kernel<T, false><<<grid, kThreads, smem, st>>>(part_z, part_ml, a, n_q, n_kv_host, pos, qch);
  }
  CUDA_CHECK_LAUNCH();
}

void launch_combine(float* z, const float* part_z, const float* part_ml, int n_q, int n_heads, int rv, int splits,
                    cudaStream_t st) {
  attn_lowrank_combine_kernel<<<dim3(n_heads, n_q), kThreads, 0, st>>>(z, part_z, part_ml, n_heads, rv, splits);
  CUDA_CHECK_LAUNCH();
}
}  // namespace

size_t attention_lowrank_smem_bytes(int group, int q_per_block, int head_dim, int r_k, int r_vmax, int window) {
  return (lowrank_tile::smem_floats(group, q_per_block, head_dim, r_k, r_vmax) +
          (window > 0 && q_per_block > 1 ? lowrank_tile::smem_window_floats(head_dim, r_vmax) : 0)) *
         sizeof(float);
}

size_t attention_lowrank_prefill_workspace_floats(int n_q, int n_heads, int r_vmax) {
  return size_t(n_q) * n_heads * (r_vmax + 2);
}

template <class T>
void attention_lowrank_prefill_cuda(float* z, const LowRankAttentionCudaArgs<T>& a, int n_q, int n_kv,
                                    float* workspace, cudaStream_t st) {
  check_args("attention_lowrank_prefill_cuda", a);
  if (use_tensor_cores("attention_lowrank_prefill_cuda", a)) {
    if constexpr (std::is_same_v<T, bf16>) {
      attention_lowrank_tc_prefill_cuda(z, a, n_q, n_kv, st);
      return;
    }
  }
  if (n_q <= 0) return;
  if (n_kv < n_q || n_kv > a.ck_stride)
    fail("attention_lowrank_prefill_cuda: n_kv ", n_kv, " outside [n_q ", n_q, ", ck_stride ", a.ck_stride, "]");
  const int gs = a.n_heads / a.n_kv_heads, optin = lowrank_tile::smem_optin_bytes();
  int qch = kPrefillQ;
  while (qch > 1 && attention_lowrank_smem_bytes(gs, qch, a.head_dim, a.r_k, a.r_vmax, a.window) > size_t(optin))
    qch /= 2;
  const size_t smem = attention_lowrank_smem_bytes(gs, qch, a.head_dim, a.r_k, a.r_vmax, a.window);
  if (smem > size_t(optin))
    fail("attention_lowrank_prefill_cuda: needs ", smem, " bytes of shared memory per block, the device allows ",
         optin, " (group ", gs, ", head_dim ", a.head_dim, ", r_k ", a.r_k, ", r_vmax ", a.r_vmax, ")");
  float* part_z = workspace;
  float* part_ml = workspace + size_t(n_q) * a.n_heads * a.r_vmax;
  launch_block_program(part_z, part_ml, a, n_q, n_kv, nullptr, qch, 1, smem, st);
  launch_combine(z, part_z, part_ml, n_q, a.n_heads, a.r_vmax, 1, st);
}

int attention_lowrank_decode_splits(int n_kv_heads, int capacity, int sm_count) {
  // ~4 blocks per SM when the context is long; never more splits than 32-key tiles of the capacity
  int s = ceil_div(4 * sm_count, n_kv_heads);
  s = std::min(s, ceil_div(capacity, kT));
  return std::max(s, 1);
}

size_t attention_lowrank_decode_workspace_floats(int n_heads, int r_vmax, int splits) {
  return size_t(n_heads) * splits * (r_vmax + 2);
}

template <class T>
void attention_lowrank_decode_cuda(float* z, const LowRankAttentionCudaArgs<T>& a, const int* pos, int splits,
                                   float* workspace, cudaStream_t st) {
  check_args("attention_lowrank_decode_cuda", a);
  if (!pos) fail("attention_lowrank_decode_cuda: pos (device, the new token's position) is required");
  if (splits < 1) fail("attention_lowrank_decode_cuda: splits ", splits, " must be >= 1");
  if (use_tensor_cores("attention_lowrank_decode_cuda", a)) {
    if constexpr (std::is_same_v<T, bf16>) {
      attention_lowrank_tc_decode_cuda(z, a, pos, splits, workspace, st);
      return;
    }
  }
  const int gs = a.n_heads / a.n_kv_heads;
  const size_t smem = attention_lowrank_smem_bytes(gs, 1, a.head_dim, a.r_k, a.r_vmax, a.window);
  if (smem > size_t(lowrank_tile::smem_optin_bytes()))
    fail("attention_lowrank_decode_cuda: needs ", smem, " bytes of shared memory per block (group ", gs,
         ", head_dim ", a.head_dim, ", r_k ", a.r_k, "): more than the device allows");
  float* part_z = workspace;
  float* part_ml = workspace + size_t(a.n_heads) * splits * a.r_vmax;
  launch_block_program(part_z, part_ml, a, 1, 0, pos, 1, splits, smem, st);
  launch_combine(z, part_z, part_ml, 1, a.n_heads, a.r_vmax, splits, st);
}

template <class T>
void kv_lowrank_write_cuda(float* q, const float* kc, const float* v, const float* uv, T* ck, T* cv,
                           const int64_t* voff, const int32_t* vrank, int64_t ck_stride, int64_t cv_stride, int n,
                           int n_heads, int n_kv_heads, int head_dim, int r_k, int r_vmax, const float* inv_freq,
                           RopeLayout layout, const int* pos, cudaStream_t st, bool pos_each, float* v_full,
                           const int64_t* ck_off, const int* k_ranks) {
  if (head_dim < 2 || head_dim % 2 != 0) fail("kv_lowrank_write_cuda: head_dim ", head_dim, " must be even");
  if (n_kv_heads <= 0 || n_heads % n_kv_heads != 0)
    fail("kv_lowrank_write_cuda: n_heads ", n_heads, " is not a multiple of n_kv_heads ", n_kv_heads);
  if (r_k < 1 || r_k > head_dim || r_vmax < 1 || r_vmax > head_dim)
    fail("kv_lowrank_write_cuda: ranks r_k ", r_k, ", r_vmax ", r_vmax, " must be in [1, head_dim ", head_dim, "]");
  if (!pos) fail("kv_lowrank_write_cuda: pos (device, the first token's position) is required");
  if (!ck_off != !k_ranks) fail("kv_lowrank_write_cuda: ck_off and k_ranks are given together or not at all");
  if (n <= 0) return;
  kv_lowrank_write_kernel<T><<<n, kThreads, 0, st>>>(q, kc, v, uv, ck, cv, voff, vrank, ck_stride, cv_stride,
                                                     n_heads, n_kv_heads, head_dim, r_k, r_vmax, inv_freq,
                                                     layout == RopeLayout::interleaved, pos, pos_each, v_full,
                                                     ck_off, k_ranks);
  CUDA_CHECK_LAUNCH();
}

void kv_lowrank_window_write_cuda(float* k_win, float* v_win, const float* k_new, const float* v_new, int n,
                                  int n_kv_heads, int head_dim, int window, const int* pos, cudaStream_t st) {
  if (window < 0 || n_kv_heads < 1 || head_dim < 1)
    fail("kv_lowrank_window_write_cuda: bad shapes (window ", window, ", n_kv_heads ", n_kv_heads, ", head_dim ",
         head_dim, ")");
  if (n <= 0 || window == 0) return;
  if (!k_win || !v_win || !k_new || !v_new || !pos)
    fail("kv_lowrank_window_write_cuda: a device pointer is null (k_win, v_win, k_new, v_new and pos are required)");
  kv_lowrank_window_write_kernel<<<dim3(std::min(n, window), n_kv_heads), kThreads, 0, st>>>(
      k_win, v_win, k_new, v_new, n, n_kv_heads, head_dim, window, pos);
  CUDA_CHECK_LAUNCH();
}

void kv_lowrank_sink_write_cuda(float* k_sink, const bf16* wk, const bf16* x, int n, int dim, int n_kv_heads,
                                int head_dim, int n_sink, const int* pos, cudaStream_t st) {
  if (n_sink < 0 || dim < 1 || n_kv_heads < 1 || head_dim < 1)
    fail("kv_lowrank_sink_write_cuda: bad shapes (sinks ", n_sink, ", dim ", dim, ", n_kv_heads ", n_kv_heads,
         ", head_dim ", head_dim, ")");
  if (n <= 0 || n_sink == 0) return;
  if (!k_sink || !wk || !x || !pos)
    fail("kv_lowrank_sink_write_cuda: a device pointer is null (k_sink, wk, x and pos are all required)");
  // tokens i >= n_sink are never sinks (pos[0] >= 0): no blocks for them
  kv_lowrank_sink_write_kernel<<<dim3(std::min(n, n_sink), n_kv_heads), kThreads, 0, st>>>(k_sink, wk, x, dim,
                                                                                        head_dim, n_sink, pos);
  CUDA_CHECK_LAUNCH();
}

template void kv_lowrank_write_cuda<float>(float*, const float*, const float*, const float*, float*, float*,
                                           const int64_t*, const int32_t*, int64_t, int64_t, int, int, int, int, int,
                                           int, const float*, RopeLayout, const int*, cudaStream_t, bool,
                                           float*, const int64_t*, const int*);
template void kv_lowrank_write_cuda<bf16>(float*, const float*, const float*, const float*, bf16*, bf16*,
                                          const int64_t*, const int32_t*, int64_t, int64_t, int, int, int, int, int,
                                          int, const float*, RopeLayout, const int*, cudaStream_t, bool, float*,
                                          const int64_t*, const int*);
template void attention_lowrank_prefill_cuda<float>(float*, const LowRankAttentionCudaArgs<float>&, int, int, float*,
                                                    cudaStream_t);
template void attention_lowrank_prefill_cuda<bf16>(float*, const LowRankAttentionCudaArgs<bf16>&, int, int, float*,
                                                   cudaStream_t);
template void attention_lowrank_decode_cuda<float>(float*, const LowRankAttentionCudaArgs<float>&, const int*, int,
                                                   float*, cudaStream_t);
template void attention_lowrank_decode_cuda<bf16>(float*, const LowRankAttentionCudaArgs<bf16>&, const int*, int,
                                                  float*, cudaStream_t);

}  // namespace llm
