// Attention kernels: flash prefill (WMMA) and split-K flash decoding with its combine kernel.
//
// Napkin math, Llama-3-8B (32 layers, 8 KV heads, head_dim 128, bf16 or f16 cache: 2 bytes either way):
//  - Decode reads 2 * 32 * 8 * 128 * 2 B = 128 KB of cache per cached token: 1.07 GB at 8K, 4.3 GB at 32K
//    (1.3 ms at 3.35 TB/s on top of the 4.5 ms of weights -> 173 tok/s ceiling at 32K; goal 150 = 87%).
//    Each KV head is read once for its 4 query heads (GQA-aware), so the cache is streamed exactly once.
//  - Prefill of 2048 tokens: 4 * (2048^2 / 2) * 128 * 32 heads * 32 layers = 1.1e12 FLOP; at ~200 TFLOP/s for
//    this simple WMMA kernel ~5.5 ms of the 58 ms budget (the GEMMs take the rest).
#include <mma.h>

#include <algorithm>

#include "kernels/attention_cuda.h"

namespace llm {

namespace {
constexpr float kLog2e = 1.4426950408889634f;

// ================================ prefill ================================================================
// Block = 4 warps = 64 query rows (16 per warp) of one query head. Per key tile of 64:
//   S = Q K^T (WMMA, fp32 into shared memory) -> per-row online softmax in fp32 (one warp per row, 2 columns per
//   lane) -> P (T, shared) -> O += P V with O kept in shared memory (fp32) and rescaled there.
// Keeping O in shared memory rather than in accumulator fragments costs shared-memory bandwidth but needs no
// knowledge of the fragment layout: correct by construction.
constexpr int kBr = 64, kBc = 64, kPW = 4;

template <int D>
struct PrefillSmem {
  static constexpr int QLD = D + 8, SLD = kBc + 4, PLD = kBc + 8, OLD = D + 4;  // padded leading dims
  static constexpr size_t q = size_t(kBr) * QLD * 2, k = size_t(kBc) * QLD * 2, v = k;
  static constexpr size_t s = size_t(kPW) * 16 * SLD * 4, p = size_t(kPW) * 16 * PLD * 2;
  static constexpr size_t o = size_t(kPW) * 16 * OLD * 4, ml = size_t(kBr) * 2 * 4;
  static constexpr size_t bytes = q + k + v + s + p + o + ml;
  // WMMA pointers must be 32-byte aligned: every region size above is a multiple of 32 bytes.
  static_assert(q % 32 == 0 && s % 32 == 0 && p % 32 == 0 && o % 32 == 0, "WMMA alignment");
};

template <int D, class T>
__global__ void __launch_bounds__(kPW * 32) attn_prefill_kernel(T* out, const T* q, const T* kc,
                                                                const T* vc, int n_q, int n_kv, int n_heads,
                                                                int group, int capacity, float scale_log2) {
  using namespace nvcuda;
  using L = PrefillSmem<D>;
  constexpr int QLD = L::QLD, SLD = L::SLD, PLD = L::PLD, OLD = L::OLD;
  extern __shared__ __align__(128) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem);
  T* sK = reinterpret_cast<T*>(smem + L::q);
  T* sV = reinterpret_cast<T*>(smem + L::q + L::k);
  float* sS = reinterpret_cast<float*>(smem + L::q + L::k + L::v);
  T* sP = reinterpret_cast<T*>(smem + L::q + L::k + L::v + L::s);
  float* sO = reinterpret_cast<float*>(smem + L::q + L::k + L::v + L::s + L::p);
  float* sM = reinterpret_cast<float*>(smem + L::q + L::k + L::v + L::s + L::p + L::o);
  float* sL = sM + kBr;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int h = blockIdx.y, kvh = h / group, q0 = blockIdx.x * kBr;
  const int pos0 = n_kv - n_q;
  constexpr int VPR = D / 8;  // 16-byte vectors per row

  for (int t = tid; t < kBr * VPR; t += kPW * 32) {
    const int r = t / VPR, c = (t - r * VPR) * 8;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (q0 + r < n_q) val = *reinterpret_cast<const uint4*>(q + (size_t(q0 + r) * n_heads + h) * D + c);
    *reinterpret_cast<uint4*>(sQ + r * QLD + c) = val;
  }
  for (int t = tid; t < kPW * 16 * OLD; t += kPW * 32) sO[t] = 0.0f;
  for (int t = tid; t < kBr; t += kPW * 32) {
    sM[t] = -INFINITY;
    sL[t] = 0.0f;
  }

  T* wQ = sQ + warp * 16 * QLD;
  float* wS = sS + warp * 16 * SLD;
  T* wP = sP + warp * 16 * PLD;
  float* wO = sO + warp * 16 * OLD;
  const T* kb = kc + size_t(kvh) * capacity * D;
  const T* vb = vc + size_t(kvh) * capacity * D;
  const int last_key = min(n_kv - 1, pos0 + q0 + kBr - 1);  // the last key any row of this tile sees

  for (int k0 = 0; k0 <= last_key; k0 += kBc) {
    __syncthreads();  // previous tile's K/V reads done; initial Q/O/M/L writes visible
    for (int t = tid; t < kBc * VPR; t += kPW * 32) {
      const int r = t / VPR, c = (t - r * VPR) * 8;
      uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);  // zeros past n_kv: no NaN garbage in P.V
      if (k0 + r < n_kv) {
        kv = *reinterpret_cast<const uint4*>(kb + size_t(k0 + r) * D + c);
        vv = *reinterpret_cast<const uint4*>(vb + size_t(k0 + r) * D + c);
      }
      *reinterpret_cast<uint4*>(sK + r * QLD + c) = kv;
      *reinterpret_cast<uint4*>(sV + r * QLD + c) = vv;
    }
    __syncthreads();

    // S = Q K^T (16 x 64 per warp)
#pragma unroll
    for (int nt = 0; nt < kBc / 16; ++nt) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
      wmma::fill_fragment(c, 0.0f);
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;  // K^T: element (d, j) at sK[j*QLD+d]
        wmma::load_matrix_sync(a, wQ + kk * 16, QLD);
        wmma::load_matrix_sync(b, sK + nt * 16 * QLD + kk * 16, QLD);
        wmma::mma_sync(c, a, b, c);
      }
      wmma::store_matrix_sync(wS + nt * 16, c, SLD, wmma::mem_row_major);
    }
    __syncwarp();

    // online softmax, one row at a time; lane owns columns lane and lane + 32
    for (int r = 0; r < 16; ++r) {
      const int row = warp * 16 + r;
      const int qpos = pos0 + q0 + row;
      const int key0 = k0 + lane, key1 = k0 + lane + 32;
      float s0 = wS[r * SLD + lane] * scale_log2, s1 = wS[r * SLD + lane + 32] * scale_log2;
      if (key0 > qpos || key0 >= n_kv) s0 = -INFINITY;
      if (key1 > qpos || key1 >= n_kv) s1 = -INFINITY;
      const float m_old = sM[row];
      const float m_new = fmaxf(m_old, warp_max(fmaxf(s0, s1)));
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // a row with nothing seen yet stays all-zero
      const float p0 = exp2f(s0 - m_use), p1 = exp2f(s1 - m_use);
      const float alpha = exp2f(m_old - m_use);
      const float rs = warp_sum(p0 + p1);
      wP[r * PLD + lane] = from_f32<T>(p0);
      wP[r * PLD + lane + 32] = from_f32<T>(p1);
      for (int d = lane; d < D; d += 32) wO[r * OLD + d] *= alpha;
      __syncwarp();  // every lane has read sM[row] before lane 0 overwrites it
      if (lane == 0) {
        sM[row] = m_new;
        sL[row] = sL[row] * alpha + rs;
      }
    }
    __syncwarp();

    // O += P V (16 x D per warp)
#pragma unroll
    for (int nt = 0; nt < D / 16; ++nt) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
      wmma::load_matrix_sync(c, wO + nt * 16, OLD, wmma::mem_row_major);
#pragma unroll
      for (int kk = 0; kk < kBc / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;  // V: element (j, d) at sV[j*QLD+d]
        wmma::load_matrix_sync(a, wP + kk * 16, PLD);
        wmma::load_matrix_sync(b, sV + kk * 16 * QLD + nt * 16, QLD);
        wmma::mma_sync(c, a, b, c);
      }
      wmma::store_matrix_sync(wO + nt * 16, c, OLD, wmma::mem_row_major);
    }
    __syncwarp();
  }

  for (int r = 0; r < 16; ++r) {
    const int row = warp * 16 + r, qi = q0 + row;
    if (qi >= n_q) break;  // warp-uniform
    const float inv = 1.0f / sL[row];
    T* o = out + (size_t(qi) * n_heads + h) * D;
    for (int d = lane; d < D; d += 32) o[d] = from_f32<T>(wO[r * OLD + d] * inv);
  }
}

template <int D, class T>
void launch_prefill(T* out, const T* q, const T* k, const T* v, int n_q, int n_kv, int n_heads,
                    int n_kv_heads, int capacity, cudaStream_t st) {
  const size_t smem = PrefillSmem<D>::bytes;
  CUDA_CHECK(cudaFuncSetAttribute(attn_prefill_kernel<D, T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid(ceil_div(n_q, kBr), n_heads);
  const float scale_log2 = kLog2e / sqrtf(float(D));
  attn_prefill_kernel<D, T><<<grid, kPW * 32, smem, st>>>(out, q, k, v, n_q, n_kv, n_heads, n_heads / n_kv_heads,
                                                       capacity, scale_log2);
  CUDA_CHECK_LAUNCH();
}

// ================================ decode ===================================================================
// Block = 4 warps over one chunk of one KV head's keys. A "slot" is a group of D/8 lanes that owns one key at a
// time (each lane 8 dims = one 16-byte load of K and one of V); a warp holds 32/(D/8) slots, so one warp-wide
// load instruction reads 512 contiguous bytes. Every slot keeps its own online-softmax state (m, l, acc) for all
// the query heads of the group (GM >= group, compile-time so the state stays in registers), with U keys in flight
// per slot per iteration. At the end the block merges its slots in shared memory and writes one partial.
constexpr int kDW = 4;  // warps per decode block
constexpr int kU = 4;   // keys per slot per iteration

template <int D, int GM, class E>  // E: the element type (T is the slot width here)
__global__ void __launch_bounds__(kDW * 32) attn_decode_kernel(float* part_o, float* part_ml, const E* q,
                                                               const E* kc, const E* vc, const int* pos,
                                                               int group, int capacity, float scale_log2) {
  constexpr int T = D / 8, SW = 32 / T, SLOTS = kDW * SW;
  __shared__ float s_acc[SLOTS][GM][D];
  __shared__ float s_m[SLOTS][GM], s_l[SLOTS][GM];
  const int kvh = blockIdx.x, split = blockIdx.y, S = gridDim.y;
  const int n_kv = pos[0] + 1;
  int chunk = (n_kv + S - 1) / S;
  chunk = (chunk + 63) / 64 * 64;
  const int start = split * chunk, end = min(n_kv, start + chunk);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int sub = lane % T, j = lane / T, slot = warp * SW + j;

  float qf[GM][8];
#pragma unroll
  for (int hh = 0; hh < GM; ++hh) {
    if (hh < group) {
      const uint4 u = *reinterpret_cast<const uint4*>(q + size_t(kvh * group + hh) * D + sub * 8);
      elem8_to_f32<E>(u, qf[hh]);
#pragma unroll
      for (int i = 0; i < 8; ++i) qf[hh][i] *= scale_log2;
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i) qf[hh][i] = 0.0f;
    }
  }
  float m[GM], l[GM], acc[GM][8];
#pragma unroll
  for (int hh = 0; hh < GM; ++hh) {
    m[hh] = -INFINITY;
    l[hh] = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[hh][i] = 0.0f;
  }
  const E* kb = kc + size_t(kvh) * capacity * D + sub * 8;
  const E* vb = vc + size_t(kvh) * capacity * D + sub * 8;

  // warp-uniform loop (the shuffles below need every lane); key of (iteration, u) = it + j + u * SLOTS
  for (int it = start + warp * SW; it < end; it += SLOTS * kU) {
    uint4 kr[kU], vr[kU];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int key = it + j + u * SLOTS;
      kr[u] = vr[u] = make_uint4(0, 0, 0, 0);
      if (key < end) {
        kr[u] = __ldcs(reinterpret_cast<const uint4*>(kb + size_t(key) * D));
        vr[u] = __ldcs(reinterpret_cast<const uint4*>(vb + size_t(key) * D));
      }
    }
    float s[kU][GM];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      float kf[8];
      elem8_to_f32<E>(kr[u], kf);
#pragma unroll
      for (int hh = 0; hh < GM; ++hh) {
        float d = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; ++i) d = fmaf(qf[hh][i], kf[i], d);
#pragma unroll
        for (int o = T / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);  // within the slot's T lanes
        s[u][hh] = it + j + u * SLOTS < end ? d : -INFINITY;
      }
    }
#pragma unroll
    for (int hh = 0; hh < GM; ++hh) {
      float mx = m[hh];
#pragma unroll
      for (int u = 0; u < kU; ++u) mx = fmaxf(mx, s[u][hh]);
      const float m_use = mx == -INFINITY ? 0.0f : mx;
      const float alpha = exp2f(m[hh] - m_use);
      l[hh] *= alpha;
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[hh][i] *= alpha;
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const float p = exp2f(s[u][hh] - m_use);
        l[hh] += p;
        float vf[8];
        elem8_to_f32<E>(vr[u], vf);
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[hh][i] = fmaf(p, vf[i], acc[hh][i]);
      }
      m[hh] = mx;
    }
  }

#pragma unroll
  for (int hh = 0; hh < GM; ++hh) {
#pragma unroll
    for (int i = 0; i < 8; ++i) s_acc[slot][hh][sub * 8 + i] = acc[hh][i];
    if (sub == 0) {
      s_m[slot][hh] = m[hh];
      s_l[slot][hh] = l[hh];
    }
  }
  __syncthreads();
  for (int t = threadIdx.x; t < group * D; t += kDW * 32) {
    const int hh = t / D, d = t - hh * D;
    float M = -INFINITY;
    for (int sl = 0; sl < SLOTS; ++sl) M = fmaxf(M, s_m[sl][hh]);
    float O = 0.0f, Lsum = 0.0f;
    if (M != -INFINITY) {
      for (int sl = 0; sl < SLOTS; ++sl) {
        const float w = exp2f(s_m[sl][hh] - M);  // an empty slot (m = -inf) weighs 0
        O += s_acc[sl][hh][d] * w;
        Lsum += s_l[sl][hh] * w;
      }
    }
    const size_t base = (size_t(kvh) * S + split) * group + hh;
    part_o[base * D + d] = O;
    if (d == 0) {
      part_ml[base * 2] = M;
      part_ml[base * 2 + 1] = Lsum;
    }
  }
}

// One block per query head, one thread per dimension: merge the splits' partials.
template <class T>
__global__ void attn_combine_kernel(T* out, const float* part_o, const float* part_ml, int group, int splits,
                                    int D) {
  const int h = blockIdx.x, kvh = h / group, hh = h - kvh * group, d = threadIdx.x;
  float M = -INFINITY;
  for (int s = 0; s < splits; ++s) {
    const size_t base = (size_t(kvh) * splits + s) * group + hh;
    if (part_ml[base * 2 + 1] > 0.0f) M = fmaxf(M, part_ml[base * 2]);
  }
  float O = 0.0f, Lsum = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const size_t base = (size_t(kvh) * splits + s) * group + hh;
    const float l = part_ml[base * 2 + 1];
    if (l > 0.0f) {
      const float w = exp2f(part_ml[base * 2] - M);
      O += part_o[base * D + d] * w;
      Lsum += l * w;
    }
  }
  out[size_t(h) * D + d] = from_f32<T>(Lsum > 0.0f ? O / Lsum : 0.0f);
}

template <int D, int GM, class T>
void launch_decode(float* part_o, float* part_ml, const T* q, const T* k, const T* v, const int* pos,
                   int n_kv_heads, int group, int capacity, int splits, cudaStream_t st) {
  const float scale_log2 = kLog2e / sqrtf(float(D));
  attn_decode_kernel<D, GM, T><<<dim3(n_kv_heads, splits), kDW * 32, 0, st>>>(part_o, part_ml, q, k, v, pos, group,
                                                                          capacity, scale_log2);
  CUDA_CHECK_LAUNCH();
}

template <int D, class T>
void dispatch_decode(float* part_o, float* part_ml, const T* q, const T* k, const T* v, const int* pos,
                     int n_kv_heads, int group, int capacity, int splits, cudaStream_t st) {
  if (group <= 1)
    launch_decode<D, 1>(part_o, part_ml, q, k, v, pos, n_kv_heads, group, capacity, splits, st);
  else if (group <= 2)
    launch_decode<D, 2>(part_o, part_ml, q, k, v, pos, n_kv_heads, group, capacity, splits, st);
  else if (group <= 4)
    launch_decode<D, 4>(part_o, part_ml, q, k, v, pos, n_kv_heads, group, capacity, splits, st);
  else if (group <= 8)
    launch_decode<D, 8>(part_o, part_ml, q, k, v, pos, n_kv_heads, group, capacity, splits, st);
  else
    fail("attention_decode_cuda: ", group, " query heads per KV head; at most 8 are supported");
}

void check_heads(const char* who, int n_heads, int n_kv_heads, int head_dim) {
  if (head_dim != 64 && head_dim != 128) fail(who, ": head_dim ", head_dim, " unsupported (64 or 128)");
  if (n_kv_heads <= 0 || n_heads % n_kv_heads != 0)
    fail(who, ": n_heads ", n_heads, " is not a multiple of n_kv_heads ", n_kv_heads);
}
}  // namespace

template <class T>
void attention_prefill_cuda(T* out, const T* q, const T* k, const T* v, int n_q, int n_kv, int n_heads,
                            int n_kv_heads, int head_dim, int capacity, cudaStream_t st) {
  check_heads("attention_prefill_cuda", n_heads, n_kv_heads, head_dim);
  if (n_q <= 0) return;
  if (n_kv < n_q || n_kv > capacity) fail("attention_prefill_cuda: n_kv ", n_kv, " outside [n_q ", n_q, ", capacity ", capacity, "]");
  if (head_dim == 64)
    launch_prefill<64>(out, q, k, v, n_q, n_kv, n_heads, n_kv_heads, capacity, st);
  else
    launch_prefill<128>(out, q, k, v, n_q, n_kv, n_heads, n_kv_heads, capacity, st);
}

int attention_decode_splits(int n_kv_heads, int capacity, int sm_count) {
  // ~4 blocks per SM when the context is long; never more splits than 64-key chunks of the capacity
  int s = ceil_div(4 * sm_count, n_kv_heads);
  s = std::min(s, ceil_div(capacity, 64));
  return std::max(s, 1);
}

size_t attention_decode_workspace_floats(int n_heads, int head_dim, int splits) {
  return size_t(n_heads) * splits * (head_dim + 2);
}

template <class T>
void attention_decode_cuda(T* out, const T* q, const T* k, const T* v, const int* pos, int n_heads,
                           int n_kv_heads, int head_dim, int capacity, int splits, float* workspace, cudaStream_t st) {
  check_heads("attention_decode_cuda", n_heads, n_kv_heads, head_dim);
  const int group = n_heads / n_kv_heads;
  float* part_o = workspace;
  float* part_ml = workspace + size_t(n_heads) * splits * head_dim;
  if (head_dim == 64)
    dispatch_decode<64>(part_o, part_ml, q, k, v, pos, n_kv_heads, group, capacity, splits, st);
  else
    dispatch_decode<128>(part_o, part_ml, q, k, v, pos, n_kv_heads, group, capacity, splits, st);
  attn_combine_kernel<T><<<n_heads, head_dim, 0, st>>>(out, part_o, part_ml, group, splits, head_dim);
  CUDA_CHECK_LAUNCH();
}

#define LLM_ATTENTION_INST(T)                                                                                 \
  template void attention_prefill_cuda<T>(T*, const T*, const T*, const T*, int, int, int, int, int, int,   \
                                          cudaStream_t);                                                    \
  template void attention_decode_cuda<T>(T*, const T*, const T*, const T*, const int*, int, int, int, int, int, \
                                         float*, cudaStream_t);
LLM_ATTENTION_INST(bf16)
LLM_ATTENTION_INST(f16)
#undef LLM_ATTENTION_INST

}  // namespace llm
