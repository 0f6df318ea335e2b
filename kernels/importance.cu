// Importance accumulators without the m x m matrix: row statistics, then column sums of the recomputed
// probabilities (contract and passes in kernels/importance_cuda.h; CPU twin attention_importance_cpu).
#include <cmath>

#include "kernels/importance_cuda.h"

namespace llm {

namespace {
constexpr int kT = 32;             // tile: 32 queries x 32 keys
constexpr int kIW = 4;             // warps per block
constexpr int kRW = kT / kIW;      // query rows per warp (lane = key column)
constexpr int kKLD = kT + 1;       // transposed key tile: sKT[d * kKLD + c] (padding: conflict-free both ways)

template <int D>
struct ImpSmem {
  static constexpr int QLD = D + 4;  // query tile row stride (floats): rows stay 16-byte aligned for float4
};

// Query rows q0 .. q0 + kT - 1 of head h into sQ (fp32; rows past m are zero).
template <int D>
__device__ __forceinline__ void load_q_tile(float* sQ, const bf16* q, int q0, int h, int m, int n_heads) {
  constexpr int QLD = ImpSmem<D>::QLD;
  for (int t = threadIdx.x; t < kT * D; t += kIW * 32) {
    const int r = t / D, d = t - r * D;
    sQ[r * QLD + d] = q0 + r < m ? __bfloat162float(q[(size_t(q0 + r) * n_heads + h) * D + d]) : 0.0f;
  }
}
// Keys k0 .. k0 + kT - 1 of KV head g into sKT transposed (fp32; keys past m are zero).
template <int D>
__device__ __forceinline__ void load_k_tile(float* sKT, const bf16* k, int k0, int g, int m, int capacity) {
  for (int t = threadIdx.x; t < kT * D; t += kIW * 32) {
    const int c = t / D, d = t - c * D;
    sKT[d * kKLD + c] = k0 + c < m ? __bfloat162float(k[(size_t(g) * capacity + k0 + c) * D + d]) : 0.0f;
  }
}
// s[r] = q(row warp*kRW + r) . k(column lane) for the warp's kRW rows. Passes 1 and 2 call this same function on
// the same data, so they get bit-identical scores (p <= 1 exactly at the row maximum).
template <int D>
__device__ __forceinline__ void tile_scores(float (&s)[kRW], const float* sQ, const float* sKT) {
  constexpr int QLD = ImpSmem<D>::QLD;
  const int lane = threadIdx.x & 31, row0 = (threadIdx.x >> 5) * kRW;
#pragma unroll
  for (int r = 0; r < kRW; ++r) s[r] = 0.0f;
#pragma unroll 4
  for (int d = 0; d < D; d += 4) {
    const float k0 = sKT[d * kKLD + lane], k1 = sKT[(d + 1) * kKLD + lane];
    const float k2 = sKT[(d + 2) * kKLD + lane], k3 = sKT[(d + 3) * kKLD + lane];
#pragma unroll
    for (int r = 0; r < kRW; ++r) {
      const float4 qv = *reinterpret_cast<const float4*>(sQ + (row0 + r) * QLD + d);  // broadcast
      s[r] = fmaf(qv.x, k0, s[r]);
      s[r] = fmaf(qv.y, k1, s[r]);
      s[r] = fmaf(qv.z, k2, s[r]);
      s[r] = fmaf(qv.w, k3, s[r]);
    }
  }
}

// Pass 1: grid (ceil(m / kT), n_heads). rmax[h*m + i] = max_j s_ij, rinv[h*m + i] = 1 / sum_j exp(s_ij - max).
template <int D>
__global__ void __launch_bounds__(kIW * 32) importance_rows_kernel(float* rmax, float* rinv, const bf16* q,
                                                                   const bf16* k, int m, int n_heads, int gqa,
                                                                   int capacity, float scale) {
  __shared__ __align__(16) float sQ[kT * ImpSmem<D>::QLD];
  __shared__ float sKT[D * kKLD];
  const int h = blockIdx.y, g = h / gqa, q0 = blockIdx.x * kT;
  const int lane = threadIdx.x & 31, row0 = (threadIdx.x >> 5) * kRW;
  load_q_tile<D>(sQ, q, q0, h, m, n_heads);
  float M[kRW], L[kRW];
#pragma unroll
  for (int r = 0; r < kRW; ++r) M[r] = -INFINITY, L[r] = 0.0f;
  const int last_key = min(m - 1, q0 + kT - 1);  // the last key any row of this tile sees
  for (int k0 = 0; k0 <= last_key; k0 += kT) {
    __syncthreads();  // the previous key tile is no longer read (and sQ is visible on the first pass)
    load_k_tile<D>(sKT, k, k0, g, m, capacity);
    __syncthreads();
    float s[kRW];
    tile_scores<D>(s, sQ, sKT);
    const int j = k0 + lane;
#pragma unroll
    for (int r = 0; r < kRW; ++r) {
      const int i = q0 + row0 + r;
      const float sc = j <= i && j < m ? __fmul_rn(s[r], scale) : -INFINITY;  // no FMA contraction: pass 2 must see the same value
      const float m_new = fmaxf(M[r], warp_max(sc));
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // only rows past m (never written) stay empty
      L[r] = L[r] * expf(M[r] - m_use) + warp_sum(expf(sc - m_use));
      M[r] = m_new;
    }
  }
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < kRW; ++r) {
      const int i = q0 + row0 + r;
      if (i < m) {
        rmax[size_t(h) * m + i] = M[r];
        rinv[size_t(h) * m + i] = 1.0f / L[r];  // the CPU's inv = 1 / sum
      }
    }
  }
}

// Pass 2: grid (ceil(m / kT), n_kv_heads). Column sums of p over the group's heads and the queries i >= j.
template <int D>
__global__ void __launch_bounds__(kIW * 32) importance_cols_kernel(float* cum, float* win, const float* rmax,
                                                                   const float* rinv, const bf16* q, const bf16* k,
                                                                   int m, int n_heads, int gqa, int capacity,
                                                                   float scale, int win_from) {
  __shared__ __align__(16) float sQ[kT * ImpSmem<D>::QLD];
  __shared__ float sKT[D * kKLD];
  __shared__ float sM[kT], sI[kT];
  __shared__ float red_c[kIW][kT], red_w[kIW][kT];
  const int g = blockIdx.y, k0 = blockIdx.x * kT;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, row0 = warp * kRW;
  const int j = k0 + lane;
  load_k_tile<D>(sKT, k, k0, g, m, capacity);
  float col_c = 0.0f, col_w = 0.0f;
  for (int hh = 0; hh < gqa; ++hh) {
    const int h = g * gqa + hh;
    for (int q0 = k0; q0 < m; q0 += kT) {  // query tiles from the diagonal down (queries i >= j only)
      __syncthreads();                      // the previous query tile is no longer read
      load_q_tile<D>(sQ, q, q0, h, m, n_heads);
      for (int r = threadIdx.x; r < kT; r += kIW * 32) {
        const bool ok = q0 + r < m;
        sM[r] = ok ? rmax[size_t(h) * m + q0 + r] : 0.0f;
        sI[r] = ok ? rinv[size_t(h) * m + q0 + r] : 0.0f;
      }
      __syncthreads();
      float s[kRW];
      tile_scores<D>(s, sQ, sKT);
#pragma unroll
      for (int r = 0; r < kRW; ++r) {
        const int i = q0 + row0 + r;
        if (i < m && j < m && j <= i) {
          const float p = expf(__fmul_rn(s[r], scale) - sM[row0 + r]) * sI[row0 + r];
          col_c += p;
          if (i >= win_from) col_w += p;
        }
      }
    }
  }
  red_c[warp][lane] = col_c;
  red_w[warp][lane] = col_w;
  __syncthreads();
  if (threadIdx.x < kT && k0 + int(threadIdx.x) < m) {
    float c = 0.0f, w = 0.0f;
    for (int v = 0; v < kIW; ++v) c += red_c[v][threadIdx.x], w += red_w[v][threadIdx.x];
    cum[size_t(g) * m + k0 + threadIdx.x] = c;
    win[size_t(g) * m + k0 + threadIdx.x] = w;
  }
}

template <int D>
void launch(float* cum, float* win, const bf16* q, const bf16* k, int m, int n_heads, int n_kv_heads, int capacity,
            int w, float* workspace, cudaStream_t st) {
  const int gqa = n_heads / n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));  // the CPU twin's scale, bit for bit
  float* rmax = workspace;
  float* rinv = workspace + size_t(n_heads) * m;
  const int tiles = ceil_div(m, kT);
  importance_rows_kernel<D><<<dim3(tiles, n_heads), kIW * 32, 0, st>>>(rmax, rinv, q, k, m, n_heads, gqa, capacity,
                                                                      scale);
  CUDA_CHECK_LAUNCH();
  const int win_from = m - (w < m ? w : m);
  importance_cols_kernel<D><<<dim3(tiles, n_kv_heads), kIW * 32, 0, st>>>(cum, win, rmax, rinv, q, k, m, n_heads,
                                                                         gqa, capacity, scale, win_from);
  CUDA_CHECK_LAUNCH();
}
}  // namespace

size_t attention_importance_workspace_floats(int m, int n_heads) { return 2 * size_t(m) * n_heads; }

void attention_importance_cuda(float* cum, float* win, const bf16* q, const bf16* k, int m, int n_heads,
                               int n_kv_heads, int head_dim, int capacity, int w, float* workspace, cudaStream_t st) {
  const char* who = "attention_importance_cuda";
  if (head_dim != 64 && head_dim != 128) fail(who, ": head_dim ", head_dim, " unsupported (64 or 128)");
  if (n_kv_heads <= 0 || n_heads % n_kv_heads != 0)
    fail(who, ": n_heads ", n_heads, " is not a multiple of n_kv_heads ", n_kv_heads);
  if (m <= 0) return;
  if (m > capacity) fail(who, ": ", m, " tokens do not fit the cache capacity ", capacity);
  if (head_dim == 64)
    launch<64>(cum, win, q, k, m, n_heads, n_kv_heads, capacity, w, workspace, st);
  else
    launch<128>(cum, win, q, k, m, n_heads, n_kv_heads, capacity, w, workspace, st);
}

}  // namespace llm
