// Low-rank attention kernels (issue 6): prefill and split-K decode share one block program, then a combine kernel.
// Written for correctness by construction (every phase a plain loop over (row, column) items with a block barrier
// between phases, all state in shared memory); the index arithmetic mirrors attention_lowrank_cpu line by line.
//
// Block program, block = (KV head g, queries [i0, i0+nq), keys [k_begin, k_end) of one split), 128 threads:
//   once:     U_K of head g (r_k x head_dim), inverse frequencies, the group's queries (gs*nq rows) -> shared
//   per tile of 32 keys t0..t0+nt:
//     load    c_k rows (nt x r_k, contiguous) and the tile's c_v padded to r_vmax (nt x r_vmax) -> shared
//     rebuild key_t[d] = sum_j c_k[t, j] U_K[j, d] for both dims of each RoPE pair, rotate by (t0+t) * inv_freq
//     score   s[row, t] = q_row . key_t / sqrt(head_dim), -inf where t is past the tile, the query or the split
//     softmax one warp per row (lane = key): running max m, sum l, correction exp(m_old - m_new), p in place
//     acc     z[row, r] = z[row, r] * corr + sum_t p[row, t] c_v[t, r]
//   end:      write (z, m, l) unnormalised to the partials; combine merges the splits and divides by l.
//
// Napkin math, Llama-3-8B (8 KV heads, head_dim 128, r_k 32, seed values 0.4*32 + 0.4*64 + 0.2*128 = 64 dims):
//   bytes per token per layer: 8 * (32 + 64) * 2 B = 1.5 KB bf16 (3 KB fp32) vs 4 KB for the full bf16 cache.
//   rebuild: r_k * head_dim = 4096 FMA per key per KV head: at 32K context 1.07 GFMA per layer, 69 GFLOP per
//   token over 32 layers (~1.1 ms of fp32 FMA on an H100) against ~0.5 ms to stream the bf16 compressed cache.
//   The rebuild, not the bytes, is what this kernel's decode time will show; see docs/kv-compression.md.
#include <algorithm>

#include "kernels/attention_lowrank_cuda.h"

namespace llm {

namespace {
constexpr int kT = 32;         // keys per tile: one per lane in the softmax phase
constexpr int kThreads = 128;  // 4 warps
constexpr int kPrefillQ = 16;  // queries per prefill block (halved until the shared memory fits)
static_assert(kT == 32, "the softmax phase maps one key to one lane");

// Shared-memory floats of one block; the kernel carves its regions in exactly this order.
__host__ __device__ inline size_t lr_smem_floats(int gs, int qch, int D, int rk, int rv) {
  const size_t rows = size_t(gs) * qch;
  return size_t(rk) * D           // sU    U_K rows
         + D / 2                  // sF    inverse frequencies
         + rows * (D + 1)         // sQ    queries, padded rows
         + size_t(kT) * (D + 1)   // sK    rebuilt RoPE'd keys, padded rows
         + size_t(kT) * rk        // sCk   c_k tile
         + size_t(kT) * rv        // sCv   c_v tile, zero-padded to r_vmax
         + rows * kT              // sS    scores, then probabilities
         + rows * rv              // sAcc  z accumulators
         + 3 * rows;              // sM, sL, sCorr
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    attn_lowrank_kernel(float* part_z, float* part_ml, LowRankAttentionCudaArgs<T> a, int n_q, int n_kv_host,
                        const int* pos, int qch) {
  extern __shared__ float smem[];
  const int D = a.head_dim, half = D / 2, LD = D + 1, rk = a.r_k, rv = a.r_vmax;
  const int gs = a.n_heads / a.n_kv_heads, rows = gs * qch;
  float* sU = smem;
  float* sF = sU + size_t(rk) * D;
  float* sQ = sF + half;
  float* sK = sQ + size_t(rows) * LD;
  float* sCk = sK + size_t(kT) * LD;
  float* sCv = sCk + size_t(kT) * rk;
  float* sS = sCv + size_t(kT) * rv;
  float* sAcc = sS + size_t(rows) * kT;
  float* sM = sAcc + size_t(rows) * rv;
  float* sL = sM + rows;
  float* sCorr = sL + rows;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;
  const int g = blockIdx.x, i0 = blockIdx.y * qch, split = blockIdx.z, S = gridDim.z;
  const int nq = min(qch, n_q - i0);  // >= 1: gridDim.y = ceil(n_q / qch)
  const int n_kv = pos ? pos[0] + 1 : n_kv_host;
  const int first_pos = n_kv - n_q;  // position of query 0
  int chunk = (n_kv + S - 1) / S;
  chunk = (chunk + kT - 1) / kT * kT;  // tiles stay aligned to multiples of 32, as in the CPU twin
  const int k_begin = split * chunk;
  // causal: the chunk's last query (position first_pos + i0 + nq - 1) sees keys < first_pos + i0 + nq
  const int k_end = min(min(n_kv, k_begin + chunk), first_pos + i0 + nq);
  const float scale = 1.0f / sqrtf(static_cast<float>(D));
  const bool interleaved = a.rope_layout == RopeLayout::interleaved;

  const float* ukg = a.uk + size_t(g) * rk * D;
  for (int idx = tid; idx < rk * D; idx += blockDim.x) sU[idx] = ukg[idx];
  for (int idx = tid; idx < half; idx += blockDim.x) sF[idx] = a.inv_freq[idx];
  for (int idx = tid; idx < rows * D; idx += blockDim.x) {
    const int R = idx / D, d = idx - R * D;
    const int hh = R / qch, qi = R - hh * qch;  // row R = (head hh of the group, query qi of the chunk)
    sQ[size_t(R) * LD + d] = qi < nq ? a.q[(size_t(i0 + qi) * a.n_heads + g * gs + hh) * D + d] : 0.0f;
  }
  for (int idx = tid; idx < rows * rv; idx += blockDim.x) sAcc[idx] = 0.0f;
  for (int idx = tid; idx < rows; idx += blockDim.x) {
    sM[idx] = -INFINITY;
    sL[idx] = 0.0f;
    sCorr[idx] = 1.0f;
  }
  const T* ckg = a.ck + size_t(g) * a.ck_stride * rk;
  const T* cvg = a.cv + size_t(g) * a.cv_stride;

  for (int t0 = k_begin; t0 < k_end; t0 += kT) {
    const int nt = min(kT, k_end - t0);
    __syncthreads();  // the previous tile's readers are done; the initial writes are visible

    // load: c_k rows t0 .. t0+nt-1 are contiguous; c_v per token at voff (zero past its rank = pad(c_v))
    const T* ckt = ckg + size_t(t0) * rk;
    for (int idx = tid; idx < nt * rk; idx += blockDim.x) sCk[idx] = to_f32(ckt[idx]);
    for (int idx = tid; idx < nt * rv; idx += blockDim.x) {
      const int t = idx / rv, r = idx - t * rv, tok = t0 + t;
      sCv[idx] = r < a.vrank[tok] ? to_f32(cvg[a.voff[tok] + r]) : 0.0f;
    }
    __syncthreads();

    // rebuild + RoPE: item = (rotation pair j, key group kg); the item rebuilds both dims of pair j for keys
    // t = kg, kg + KG, ... so each U_K element loaded from shared memory serves all its keys (per key the sum over
    // jj runs in the CPU twin's order). KG = threads per pair, at most the tile.
    {
      const int KG = min(kT, max(1, static_cast<int>(blockDim.x) / half));
      const int per = (kT + KG - 1) / KG;  // keys per item
      for (int idx = tid; idx < half * KG; idx += blockDim.x) {
        const int j = idx % half, kg = idx / half;
        const int ia = interleaved ? 2 * j : j, ib = interleaved ? 2 * j + 1 : j + half;
        float ka[kT], kb[kT];
#pragma unroll
        for (int m = 0; m < kT; ++m) ka[m] = kb[m] = 0.0f;
        for (int jj = 0; jj < rk; ++jj) {
          const float ua = sU[jj * D + ia], ub = sU[jj * D + ib];
#pragma unroll
          for (int m = 0; m < kT; ++m) {
            const int t = kg + m * KG;
            if (m < per && t < nt) {
              const float c = sCk[t * rk + jj];
              ka[m] = fmaf(c, ua, ka[m]);
              kb[m] = fmaf(c, ub, kb[m]);
            }
          }
        }
#pragma unroll
        for (int m = 0; m < kT; ++m) {
          const int t = kg + m * KG;
          if (m < per && t < nt) {
            const float ang = static_cast<float>(t0 + t) * sF[j];  // fp32 product, accurate sincosf: as rope_cpu
            float sn, cs;
            sincosf(ang, &sn, &cs);
            sK[t * LD + ia] = ka[m] * cs - kb[m] * sn;
            sK[t * LD + ib] = ka[m] * sn + kb[m] * cs;
          }
        }
      }
    }
    __syncthreads();

    // scores: item = (row R, key t)
    for (int idx = tid; idx < rows * kT; idx += blockDim.x) {
      const int R = idx / kT, t = idx - R * kT;
      const int qi = R % qch;
      const int kp = t0 + t, qp = first_pos + i0 + qi;
      float s = -INFINITY;
      if (t < nt && qi < nq && kp <= qp) {
        const float* qr = sQ + size_t(R) * LD;
        const float* kr = sK + t * LD;
        float dot = 0.0f;
        for (int d = 0; d < D; ++d) dot = fmaf(qr[d], kr[d], dot);
        s = dot * scale;
      }
      sS[idx] = s;
    }
    __syncthreads();

    // online softmax: one warp per row, lane = key of the tile
    for (int R = warp; R < rows; R += nw) {
      const float s = sS[R * kT + lane];
      const float m_old = sM[R];
      const float m_new = fmaxf(m_old, warp_max(s));
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // nothing seen yet: p = 0, corr = 0
      const float p = expf(s - m_use);
      const float corr = expf(m_old - m_use);
      const float psum = warp_sum(p);
      sS[R * kT + lane] = p;
      __syncwarp();  // every lane has read sM[R] before lane 0 overwrites it
      if (lane == 0) {
        sM[R] = m_new;
        sL[R] = sL[R] * corr + psum;
        sCorr[R] = corr;
      }
    }
    __syncthreads();

    // accumulate in rank space: item = (row R, rank dim r); each item owned by one thread for the whole tile
    for (int idx = tid; idx < rows * rv; idx += blockDim.x) {
      const int R = idx / rv, r = idx - R * rv;
      const float* p = sS + R * kT;
      float acc = sAcc[idx] * sCorr[R];
      for (int t = 0; t < nt; ++t) acc = fmaf(p[t], sCv[t * rv + r], acc);
      sAcc[idx] = acc;
    }
  }
  __syncthreads();

  // partials: P = (query i, head h, split); an empty key range writes m = -inf, l = 0, z = 0
  for (int idx = tid; idx < rows * rv; idx += blockDim.x) {
    const int R = idx / rv, r = idx - R * rv;
    const int hh = R / qch, qi = R - hh * qch;
    if (qi >= nq) continue;
    const size_t P = (size_t(i0 + qi) * a.n_heads + g * gs + hh) * S + split;
    part_z[P * rv + r] = sAcc[idx];
    if (r == 0) {
      part_ml[P * 2] = sM[R];
      part_ml[P * 2 + 1] = sL[R];
    }
  }
}

// Block = (head h, query i); merges the S partials of that (i, h) and normalises.
__global__ void attn_lowrank_combine_kernel(float* z, const float* part_z, const float* part_ml, int n_heads, int rv,
                                            int S) {
  const int h = blockIdx.x, i = blockIdx.y;
  const size_t P0 = (size_t(i) * n_heads + h) * S;
  float M = -INFINITY;
  for (int s = 0; s < S; ++s)
    if (part_ml[(P0 + s) * 2 + 1] > 0.0f) M = fmaxf(M, part_ml[(P0 + s) * 2]);
  for (int r = threadIdx.x; r < rv; r += blockDim.x) {
    float O = 0.0f, L = 0.0f;
    for (int s = 0; s < S; ++s) {
      const float l = part_ml[(P0 + s) * 2 + 1];
      if (l > 0.0f) {
        const float w = expf(part_ml[(P0 + s) * 2] - M);
        O += part_z[(P0 + s) * rv + r] * w;
        L += l * w;
      }
    }
    z[(size_t(i) * n_heads + h) * rv + r] = L > 0.0f ? O / L : 0.0f;
  }
}

__device__ __forceinline__ void store_f32(float* p, float x) { *p = x; }
__device__ __forceinline__ void store_f32(bf16* p, float x) { *p = __float2bfloat16_rn(x); }

// Block = one token i at position p = pos[0] + i; three independent loops over its items (no shared memory).
template <class T>
__global__ void __launch_bounds__(kThreads)
    kv_lowrank_write_kernel(float* q, const float* kc, const float* v, const float* uv, T* ck, T* cv,
                            const int64_t* voff, const int32_t* vrank, int64_t ck_stride, int64_t cv_stride,
                            int n_heads, int nkv, int D, int rk, int rv, const float* inv_freq, bool interleaved,
                            const int* pos) {
  const int i = blockIdx.x, p = pos[0] + i, half = D / 2;
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
  // c_k: item = (KV head g, dim jj)
  for (int idx = threadIdx.x; idx < nkv * rk; idx += blockDim.x) {
    const int g = idx / rk, jj = idx - g * rk;
    store_f32(ck + (size_t(g) * ck_stride + p) * rk + jj, kc[(size_t(i) * nkv + g) * rk + jj]);
  }
  // c_v: item = (KV head g, rank dim j < vrank[p]); c_v[j] = U_V row j . v
  const int r_t = vrank[p];
  const int64_t off = voff[p];
  for (int idx = threadIdx.x; idx < nkv * rv; idx += blockDim.x) {
    const int g = idx / rv, j = idx - g * rv;
    if (j >= r_t) continue;
    const float* u = uv + (size_t(g) * rv + j) * D;
    const float* vv = v + (size_t(i) * nkv + g) * D;
    float acc = 0.0f;
    for (int d = 0; d < D; ++d) acc = fmaf(u[d], vv[d], acc);
    store_f32(cv + size_t(g) * cv_stride + off + j, acc);
  }
}

template <class T>
void check_args(const char* who, const LowRankAttentionCudaArgs<T>& a) {
  const int D = a.head_dim;
  if (D < 2 || D > 256 || D % 2 != 0) fail(who, ": head_dim ", D, " unsupported (even, at most 256)");
  if (a.n_kv_heads <= 0 || a.n_heads <= 0 || a.n_heads % a.n_kv_heads != 0)
    fail(who, ": n_heads ", a.n_heads, " is not a multiple of n_kv_heads ", a.n_kv_heads);
  if (a.r_k < 1 || a.r_k > D || a.r_vmax < 1 || a.r_vmax > D)
    fail(who, ": ranks r_k ", a.r_k, ", r_vmax ", a.r_vmax, " must be in [1, head_dim ", D, "]");
  if (!a.q || !a.ck || !a.uk || !a.cv || !a.voff || !a.vrank || !a.inv_freq)
    fail(who, ": a device pointer is null (q, ck, uk, cv, voff, vrank and inv_freq are all required)");
}

int smem_optin_bytes() {
  int dev = 0, optin = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  return optin;
}

template <class T>
void launch_block_program(float* part_z, float* part_ml, const LowRankAttentionCudaArgs<T>& a, int n_q,
                          int n_kv_host, const int* pos, int qch, int splits, size_t smem, cudaStream_t st) {
  CUDA_CHECK(cudaFuncSetAttribute(attn_lowrank_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid(a.n_kv_heads, ceil_div(n_q, qch), splits);
  attn_lowrank_kernel<T><<<grid, kThreads, smem, st>>>(part_z, part_ml, a, n_q, n_kv_host, pos, qch);
  CUDA_CHECK_LAUNCH();
}

void launch_combine(float* z, const float* part_z, const float* part_ml, int n_q, int n_heads, int rv, int splits,
                    cudaStream_t st) {
  attn_lowrank_combine_kernel<<<dim3(n_heads, n_q), kThreads, 0, st>>>(z, part_z, part_ml, n_heads, rv, splits);
  CUDA_CHECK_LAUNCH();
}
}  // namespace

size_t attention_lowrank_smem_bytes(int group, int q_per_block, int head_dim, int r_k, int r_vmax) {
  return lr_smem_floats(group, q_per_block, head_dim, r_k, r_vmax) * sizeof(float);
}

size_t attention_lowrank_prefill_workspace_floats(int n_q, int n_heads, int r_vmax) {
  return size_t(n_q) * n_heads * (r_vmax + 2);
}

template <class T>
void attention_lowrank_prefill_cuda(float* z, const LowRankAttentionCudaArgs<T>& a, int n_q, int n_kv,
                                    float* workspace, cudaStream_t st) {
  check_args("attention_lowrank_prefill_cuda", a);
  if (n_q <= 0) return;
  if (n_kv < n_q || n_kv > a.ck_stride)
    fail("attention_lowrank_prefill_cuda: n_kv ", n_kv, " outside [n_q ", n_q, ", ck_stride ", a.ck_stride, "]");
  const int gs = a.n_heads / a.n_kv_heads, optin = smem_optin_bytes();
  int qch = kPrefillQ;
  while (qch > 1 && attention_lowrank_smem_bytes(gs, qch, a.head_dim, a.r_k, a.r_vmax) > size_t(optin)) qch /= 2;
  const size_t smem = attention_lowrank_smem_bytes(gs, qch, a.head_dim, a.r_k, a.r_vmax);
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
  const int gs = a.n_heads / a.n_kv_heads;
  const size_t smem = attention_lowrank_smem_bytes(gs, 1, a.head_dim, a.r_k, a.r_vmax);
  if (smem > size_t(smem_optin_bytes()))
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
                           RopeLayout layout, const int* pos, cudaStream_t st) {
  if (head_dim < 2 || head_dim % 2 != 0) fail("kv_lowrank_write_cuda: head_dim ", head_dim, " must be even");
  if (n_kv_heads <= 0 || n_heads % n_kv_heads != 0)
    fail("kv_lowrank_write_cuda: n_heads ", n_heads, " is not a multiple of n_kv_heads ", n_kv_heads);
  if (r_k < 1 || r_k > head_dim || r_vmax < 1 || r_vmax > head_dim)
    fail("kv_lowrank_write_cuda: ranks r_k ", r_k, ", r_vmax ", r_vmax, " must be in [1, head_dim ", head_dim, "]");
  if (!pos) fail("kv_lowrank_write_cuda: pos (device, the first token's position) is required");
  if (n <= 0) return;
  kv_lowrank_write_kernel<T><<<n, kThreads, 0, st>>>(q, kc, v, uv, ck, cv, voff, vrank, ck_stride, cv_stride,
                                                     n_heads, n_kv_heads, head_dim, r_k, r_vmax, inv_freq,
                                                     layout == RopeLayout::interleaved, pos);
  CUDA_CHECK_LAUNCH();
}

template void kv_lowrank_write_cuda<float>(float*, const float*, const float*, const float*, float*, float*,
                                           const int64_t*, const int32_t*, int64_t, int64_t, int, int, int, int, int,
                                           int, const float*, RopeLayout, const int*, cudaStream_t);
template void kv_lowrank_write_cuda<bf16>(float*, const float*, const float*, const float*, bf16*, bf16*,
                                          const int64_t*, const int32_t*, int64_t, int64_t, int, int, int, int, int,
                                          int, const float*, RopeLayout, const int*, cudaStream_t);
template void attention_lowrank_prefill_cuda<float>(float*, const LowRankAttentionCudaArgs<float>&, int, int, float*,
                                                    cudaStream_t);
template void attention_lowrank_prefill_cuda<bf16>(float*, const LowRankAttentionCudaArgs<bf16>&, int, int, float*,
                                                   cudaStream_t);
template void attention_lowrank_decode_cuda<float>(float*, const LowRankAttentionCudaArgs<float>&, const int*, int,
                                                   float*, cudaStream_t);
template void attention_lowrank_decode_cuda<bf16>(float*, const LowRankAttentionCudaArgs<bf16>&, const int*, int,
                                                  float*, cudaStream_t);

}  // namespace llm
