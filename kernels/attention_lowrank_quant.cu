// Attention over the unified (rank-space, mixed-precision) cache; contract in kernels/attention_lowrank_quant_cuda.h,
// CPU twin attention_lowrank_quant_cpu. Written for correctness by construction, as kernels/attention_lowrank.cu:
// every phase a plain loop over (row, column) items with a block barrier between phases, all state in shared
// memory; the index arithmetic mirrors the CPU twin.
//
// Block program, block = (KV head g, queries [i0, i0+nq), entries [k_begin, k_end) of one split), 128 threads:
//   once:     U_K of head g (r_k x head_dim), inverse frequencies, the group's queries (gs*nq rows) -> shared
//   per tile of 32 entries t0..t0+nt:
//     load    item = (entry, value): c_k values (nt x r_k) and c_v values padded to r_vmax (nt x r_vmax) dequantised
//             from the packed rows (offset, width, rank of the entry) -> shared; positions -> shared
//     rebuild key_t[d] = sum_j c_k[t, j] U_K[j, d] for both dims of each RoPE pair, rotate by pos[t0+t] * inv_freq
//     score   s[row, t] = q_row . key_t / sqrt(head_dim), -inf where t is past the tile, the query or the split
//     softmax one warp per row (lane = entry): running max m, sum l, correction exp(m_old - m_new), p in place
//     acc     z[row, r] = z[row, r] * corr + sum_t p[row, t] c_v[t, r]
//   end:      write (z, m, l) unnormalised to the partials; the combine kernel merges the splits, divides by l.
//
// Napkin math, Llama-3-8B (8 KV heads, head_dim 128, r_k 32, ranks 32/64/128, mostly 4-bit, group 32): an entry
// is ~(32 + 64) * 0.5 B + 3 groups * 4 B ~ 60 B per KV head, against 512 B for a bf16 head_dim K+V pair. As in
// the fp32/bf16 low-rank kernel the rebuild (r_k * head_dim FMA per entry and KV head) dominates, not the bytes.
#include <algorithm>

#include "kernels/attention_lowrank_quant_cuda.h"

namespace llm {

namespace {
constexpr int kT = 32;         // entries per tile: one per lane in the softmax phase
constexpr int kThreads = 128;  // 4 warps
constexpr int kMaxQ = 16;      // queries per block (halved until the shared memory fits)
static_assert(kT == 32, "the softmax phase maps one entry to one lane");

// Shared-memory floats of one block; the kernel carves its regions in exactly this order.
__host__ __device__ inline size_t lrq_smem_floats(int gs, int qch, int D, int rk, int rv) {
  const size_t rows = size_t(gs) * qch;
  return size_t(rk) * D           // sU    U_K rows
         + D / 2                  // sF    inverse frequencies
         + rows * (D + 1)         // sQ    queries, padded rows
         + size_t(kT) * (D + 1)   // sK    rebuilt RoPE'd keys, padded rows
         + size_t(kT) * rk        // sCk   dequantised c_k tile
         + size_t(kT) * rv        // sCv   dequantised c_v tile, zero-padded to r_vmax
         + rows * kT              // sS    scores, then probabilities
         + rows * rv              // sAcc  z accumulators
         + 3 * rows               // sM, sL, sCorr
         + kT;                    // sPos  positions of the tile's entries (int32, same size as a float)
}

// Rank-row layout (quantize_rank_row_cpu): groups of gs values from the first on, the last holding the remainder.
__device__ __forceinline__ int rank_group_size(int n, int group) { return group <= 0 || group >= n ? n : group; }
__device__ __forceinline__ size_t rank_row_bytes(int n, int bits, int group, int row16) {
  if (bits == 16) return size_t(n) * row16;
  const int gs = rank_group_size(n, group), full = n / gs, tail = n - full * gs;
  return size_t(full) * (4 + (size_t(gs) * bits + 7) / 8) + (tail ? 4 + (size_t(tail) * bits + 7) / 8 : 0);
}
__device__ __forceinline__ uint32_t load_u16(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8; }
// Value j of a rank row of n values. Multi-byte fields are assembled from single bytes (rows start at any byte).
__device__ __forceinline__ float rank_row_value(const uint8_t* row, int n, int j, int bits, int group, int row16) {
  if (bits == 16) {
    if (row16 == 4) {
      const uint8_t* p = row + size_t(j) * 4;
      return __uint_as_float(uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24);
    }
    return __uint_as_float(load_u16(row + size_t(j) * 2) << 16);  // bf16 -> fp32: exact
  }
  const int gs = rank_group_size(n, group), gi = j / gs, in = j - gi * gs;
  const uint8_t* g = row + size_t(gi) * (4 + (size_t(gs) * bits + 7) / 8);
  const float sc = __half2float(__ushort_as_half(static_cast<unsigned short>(load_u16(g))));
  const float mn = __half2float(__ushort_as_half(static_cast<unsigned short>(load_u16(g + 2))));
  const int per_byte = 8 / bits, mask = (1 << bits) - 1;
  const int code = (g[4 + in / per_byte] >> ((in % per_byte) * bits)) & mask;
  return __fadd_rn(mn, __fmul_rn(sc, static_cast<float>(code)));  // dequantize_group's mn + sc * code, no FMA
}

__global__ void __launch_bounds__(kThreads)
    attn_lowrank_quant_kernel(float* part_z, float* part_ml, LowRankQuantDecodeArgs a, int qch) {
  extern __shared__ float smem[];
  const int D = a.head_dim, half = D / 2, LD = D + 1, rk = a.r_k, rv = a.r_vmax;
  const int gs = a.n_heads / a.n_kv_heads, rows = gs * qch, n_q = a.n_q;
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
  int* sPos = reinterpret_cast<int*>(sCorr + rows);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;
  const int g = blockIdx.x, i0 = blockIdx.y * qch, split = blockIdx.z, S = gridDim.z;
  const int nq = min(qch, n_q - i0);  // >= 1: gridDim.y = ceil(n_q / qch)
  const int n_kv = *a.n_kv;
  const int first = n_kv - n_q;  // entry index of query 0
  int chunk = (n_kv + S - 1) / S;
  chunk = (chunk + kT - 1) / kT * kT;  // tiles stay aligned to multiples of 32, as in the CPU twin
  const int k_begin = split * chunk;
  // causal: the chunk's last query (entry first + i0 + nq - 1) sees entries < first + i0 + nq
  const int k_end = min(min(n_kv, k_begin + chunk), first + i0 + nq);
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
  const uint64_t* offg = a.off + size_t(g) * a.stride;
  const uint8_t* bitsg = a.bits + size_t(g) * a.stride;
  const uint16_t* vrankg = a.vrank + size_t(g) * a.stride;

  for (int t0 = k_begin; t0 < k_end; t0 += kT) {
    const int nt = min(kT, k_end - t0);
    __syncthreads();  // the previous tile's readers are done; the initial writes are visible

    // load: item = (entry t, value j); each reads the entry's width and offset (cached) and one value's bytes
    for (int idx = tid; idx < nt * rk; idx += blockDim.x) {
      const int t = idx / rk, j = idx - t * rk, e = t0 + t;
      sCk[idx] = rank_row_value(a.data + offg[e], rk, j, bitsg[e], a.group, a.row16);
    }
    for (int idx = tid; idx < nt * rv; idx += blockDim.x) {
      const int t = idx / rv, r = idx - t * rv, e = t0 + t;
      const int w = bitsg[e], n = vrankg[e];
      float v = 0.0f;
      if (r < n) {
        const uint8_t* vrow = a.data + offg[e] + rank_row_bytes(rk, w, a.group, a.row16);
        v = rank_row_value(vrow, n, r, w, a.group, a.row16);
      }
      sCv[idx] = v;
    }
    for (int t = tid; t < nt; t += blockDim.x) sPos[t] = a.pos[t0 + t];
    __syncthreads();

    // rebuild + RoPE: item = (rotation pair j, key group kg); the item rebuilds both dims of pair j for keys
    // t = kg, kg + KG, ... (per key the sum over jj runs in the CPU twin's order)
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
            const float ang = static_cast<float>(sPos[t]) * sF[j];  // fp32 product, accurate sincosf: as rope_cpu
            float sn, cs;
            sincosf(ang, &sn, &cs);
            sK[t * LD + ia] = ka[m] * cs - kb[m] * sn;
            sK[t * LD + ib] = ka[m] * sn + kb[m] * cs;
          }
        }
      }
    }
    __syncthreads();

    // scores: item = (row R, entry t); query qi sees entries up to first + i0 + qi (entry order, not position)
    for (int idx = tid; idx < rows * kT; idx += blockDim.x) {
      const int R = idx / kT, t = idx - R * kT;
      const int qi = R % qch;
      float s = -INFINITY;
      if (t < nt && qi < nq && t0 + t <= first + i0 + qi) {
        const float* qr = sQ + size_t(R) * LD;
        const float* kr = sK + t * LD;
        float dot = 0.0f;
        for (int d = 0; d < D; ++d) dot = fmaf(qr[d], kr[d], dot);
        s = dot * scale;
      }
      sS[idx] = s;
    }
    __syncthreads();

    // online softmax: one warp per row, lane = entry of the tile
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

  // partials: P = (query i, head h, split); an empty entry range writes m = -inf, l = 0, z = 0
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
__global__ void attn_lowrank_quant_combine_kernel(float* z, const float* part_z, const float* part_ml, int n_heads,
                                                  int rv, int S) {
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

void check_args(const char* who, const LowRankQuantDecodeArgs& a, int splits) {
  const int D = a.head_dim;
  if (D < 2 || D > 256 || D % 2 != 0) fail(who, ": head_dim ", D, " unsupported (even, at most 256)");
  if (a.n_kv_heads <= 0 || a.n_heads <= 0 || a.n_heads % a.n_kv_heads != 0)
    fail(who, ": n_heads ", a.n_heads, " is not a multiple of n_kv_heads ", a.n_kv_heads);
  if (a.r_k < 1 || a.r_k > D || a.r_vmax < 1 || a.r_vmax > D)
    fail(who, ": ranks r_k ", a.r_k, ", r_vmax ", a.r_vmax, " must be in [1, head_dim ", D, "]");
  if (a.row16 != 2 && a.row16 != 4) fail(who, ": row16 ", a.row16, " must be 2 (bf16) or 4 (fp32) bytes a value");
  if (a.n_q < 1 || a.n_q > a.stride)
    fail(who, ": n_q ", a.n_q, " must be in [1, stride ", a.stride, "] (the queries are the last n_q entries)");
  if (a.n_q > 65535) fail(who, ": ", a.n_q, " queries in one call; at most 65535 (the combine's grid y)");
  if (splits < 1 || splits > 65535)
    fail(who, ": splits ", splits, " must be in [1, 65535] (attention_lowrank_quant_splits)");
  if (!a.q || !a.data || !a.off || !a.bits || !a.vrank || !a.pos || !a.uk || !a.inv_freq || !a.n_kv)
    fail(who, ": a device pointer is null (q, data, off, bits, vrank, pos, uk, inv_freq and n_kv are all required)");
}
}  // namespace

size_t attention_lowrank_quant_smem_bytes(int group_heads, int q_per_block, int head_dim, int r_k, int r_vmax) {
  return lrq_smem_floats(group_heads, q_per_block, head_dim, r_k, r_vmax) * sizeof(float);
}

int attention_lowrank_quant_splits(int n_kv_heads, int capacity, int sm_count) {
  int s = ceil_div(4 * sm_count, std::max(n_kv_heads, 1));
  s = std::min(s, ceil_div(std::max(capacity, 1), kT));
  return std::max(s, 1);
}

size_t attention_lowrank_quant_workspace_floats(int n_q, int n_heads, int r_vmax, int splits) {
  return size_t(n_q) * n_heads * splits * (r_vmax + 2);
}

void attention_lowrank_quant_cuda(float* z, const LowRankQuantDecodeArgs& a, int splits, float* workspace,
                                  cudaStream_t st) {
  const char* who = "attention_lowrank_quant_cuda";
  check_args(who, a, splits);
  if (!z || !workspace) fail(who, ": z and workspace (device) are required");
  const int gs = a.n_heads / a.n_kv_heads;
  int dev = 0, optin = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  int qch = std::min(kMaxQ, a.n_q);
  while (qch > 1 && attention_lowrank_quant_smem_bytes(gs, qch, a.head_dim, a.r_k, a.r_vmax) > size_t(optin))
    qch /= 2;
  const size_t smem = attention_lowrank_quant_smem_bytes(gs, qch, a.head_dim, a.r_k, a.r_vmax);
  if (smem > size_t(optin))
    fail(who, ": needs ", smem, " bytes of shared memory per block, the device allows ", optin, " (group ", gs,
         ", head_dim ", a.head_dim, ", r_k ", a.r_k, ", r_vmax ", a.r_vmax, ")");
  float* part_z = workspace;
  float* part_ml = workspace + size_t(a.n_q) * a.n_heads * splits * a.r_vmax;
  CUDA_CHECK(cudaFuncSetAttribute(attn_lowrank_quant_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid(a.n_kv_heads, ceil_div(a.n_q, qch), splits);
  attn_lowrank_quant_kernel<<<grid, kThreads, smem, st>>>(part_z, part_ml, a, qch);
  CUDA_CHECK_LAUNCH();
  attn_lowrank_quant_combine_kernel<<<dim3(a.n_heads, a.n_q), kThreads, 0, st>>>(z, part_z, part_ml, a.n_heads,
                                                                                 a.r_vmax, splits);
  CUDA_CHECK_LAUNCH();
}

}  // namespace llm
