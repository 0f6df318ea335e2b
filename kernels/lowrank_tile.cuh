// The block program of the two low-rank attention kernels: kernels/attention_lowrank.cu (fp32/bf16 c_k, c_v rows,
// key t at position t) and kernels/attention_lowrank_quant.cu (packed quantised rank rows, entry e at pos[e]).
// The two differ only in how a tile of c_k / c_v values reaches shared memory and in the position a rebuilt key is
// rotated by; both come in as a Tile policy, everything else (shared-memory layout, rebuild + RoPE, scores, online
// softmax, rank-space accumulation, partials, the split combine) is this one code. Written for correctness by
// construction: every phase a plain loop over (row, column) items with a block barrier between phases, all state in
// shared memory; the index arithmetic mirrors the CPU twins (attention_lowrank_cpu, attention_lowrank_quant_cpu).
//
// Block program, block = (KV head g, queries [i0, i0+nq), keys [k_begin, k_end) of one split), kThreads threads:
//   once:     U_K of head g (r_k x head_dim), inverse frequencies, the group's queries (gs*nq rows) -> shared
//   per tile of 32 keys t0..t0+nt:
//     load    Tile::load: c_k values (nt x r_k) and c_v values zero-padded to r_vmax (nt x r_vmax) -> shared
//     rebuild key_t[d] = sum_j c_k[t, j] U_K[j, d] for both dims of each RoPE pair, rotate by Tile::key_pos * inv_freq
//     score   s[row, t] = q_row . key_t / sqrt(head_dim), -inf where t is past the tile, the query or the split
//     softmax one warp per row (lane = key): running max m, sum l, correction exp(m_old - m_new), p in place
//     acc     z[row, r] = z[row, r] * corr + sum_t p[row, t] c_v[t, r]
//   end:      write (z, m, l) unnormalised to the partials; combine_block merges the splits and divides by l.
//
// Included by those two kernel files only. `extern __shared__` and the launches stay in the .cu files (the
// emulator rewrites those in .cu sources only); the kernels hand their dynamic shared memory to block_program.
#pragma once
#include <cstddef>

#include "kernels/common.cuh"
#include "loader/config.h"

namespace llm::lowrank_tile {

constexpr int kT = 32;         // keys per tile: one per lane in the softmax phase
constexpr int kThreads = 128;  // 4 warps
static_assert(kT == 32, "the softmax phase maps one key to one lane");

// Shared-memory floats of block_program; it carves its regions in exactly this order. A Tile that needs more (the
// quantised kernel's positions) puts it right after: smem + smem_floats(...).
__host__ __device__ inline size_t smem_floats(int gs, int qch, int D, int rk, int rv) {
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
// window=N (a Tile with win_first): the tile's full keys (RoPE'd) and full-rank value rows, right after smem_floats.
__host__ __device__ inline size_t smem_window_floats(int D, int rv) {
  return size_t(kT) * (D + 1)  // sKf   full RoPE'd keys of the tile rows some query reads in full
         + size_t(kT) * rv;    // sCvf  their full-rank value coefficients
}

// Tile policy (one per kernel file):
//   __device__ void load(int t0, int nt, float* sCk, float* sCv) const: keys t0 .. t0+nt-1 of KV head blockIdx.x;
//       sCk[t * r_k + j] = c_k value j, sCv[t * r_vmax + r] = c_v value r (0 past the key's rank); every thread of
//       the block takes part (items strided by blockDim.x); block_program syncs before and after.
//   __device__ int key_pos(int t0, int t) const: the RoPE position of key t0 + t (read after load's barrier).
//   optional, __device__ int key_rank() const: the c_k values of this block's KV head that can be nonzero (<= r_k;
//       alloc=spectrum): the rebuild sums only those (load still zero-fills sCk to r_k).
//   optional, __device__ void sink_key(int tok, int ia, int ib, float& ka, float& kb) const: may replace dims ia, ib
//       of key tok's rebuilt (pre-RoPE) key with a cached full key (RowsTile's sinks=N); RoPE follows as usual.
//   optional, the recent window (window=N; RowsWindowTile): __device__ int win_first(int p) const: the first key a
//       query at key p reads in full (p - N + 1); keys win_first(p) .. p are scored with full_key(tok, ia, ib, ka,
//       kb) (dims ia, ib of the full pre-RoPE key, RoPE'd at key_pos like the rebuilt ones) and accumulated with
//       full_value(tok, r) (r < r_vmax == head_dim), older ones with the compressed forms. The boundary is per query
//       (inside a tile in the prefill); with qch > 1 those rows live in smem_window_floats() more floats after
//       smem_floats(), with qch == 1 (decode) they replace the tile's rows in place (no extra shared memory).
// Args: the kernel's argument struct (LowRankAttentionCudaArgs<T> or LowRankQuantDecodeArgs); block_program reads
// its shared fields q (n_q, n_heads, head_dim; RoPE applied), uk (n_kv_heads, r_k, head_dim), inv_freq (head_dim/2),
// n_heads, n_kv_heads, head_dim, r_k, r_vmax and rope_layout. n_q queries, the last n_q of n_kv keys; qch queries a
// block. Grid (n_kv_heads, ceil(n_q / qch), splits); the partials are (n_q, n_heads, splits) x (r_vmax + 2).
template <class Args, class Tile>
__device__ __forceinline__ void block_program(float* smem, float* part_z, float* part_ml, const Args& a, int n_q,
                                              int n_kv, int qch, const Tile& tile) {
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
  constexpr bool kWin = requires { tile.win_first(0); };
  // window: with one query per block (decode) every row has the same boundary, so the window's full keys and values
  // replace the tile's own rows in sK / sCv (no more shared memory, the score and accumulate phases unchanged);
  // with several (prefill) each query has its own boundary inside the tile: full rows in sKf / sCvf beside them
  const bool win_sep = kWin && qch > 1;
  float* sKf = sCorr + rows;            // win_sep only (smem_window_floats)
  float* sCvf = sKf + size_t(kT) * LD;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;
  const int g = blockIdx.x, i0 = blockIdx.y * qch, split = blockIdx.z, S = gridDim.z;
  const int nq = min(qch, n_q - i0);  // >= 1: gridDim.y = ceil(n_q / qch)
  const int first = n_kv - n_q;       // key (position or entry) of query 0
  int chunk = (n_kv + S - 1) / S;
  chunk = (chunk + kT - 1) / kT * kT;  // tiles stay aligned to multiples of 32, as in the CPU twins
  const int k_begin = split * chunk;
  // causal: the chunk's last query (key first + i0 + nq - 1) sees keys < first + i0 + nq
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

  for (int t0 = k_begin; t0 < k_end; t0 += kT) {
    const int nt = min(kT, k_end - t0);
    __syncthreads();  // the previous tile's readers are done; the initial writes are visible

    tile.load(t0, nt, sCk, sCv);
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
        int rkb = rk;  // terms of the rebuild (a block's own key rank with alloc=spectrum)
        if constexpr (requires { tile.key_rank(); }) rkb = tile.key_rank();
        for (int jj = 0; jj < rkb; ++jj) {
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
            float xa = ka[m], xb = kb[m];
            if constexpr (requires { tile.sink_key(t0, ia, ib, xa, xb); }) tile.sink_key(t0 + t, ia, ib, xa, xb);
            if constexpr (kWin)  // decode: inside the query's window the full key replaces the rebuilt one
              if (!win_sep && t0 + t >= tile.win_first(first + i0)) tile.full_key(t0 + t, ia, ib, xa, xb);
            // fp32 product, accurate sincosf: as rope_cpu
            const float ang = static_cast<float>(tile.key_pos(t0, t)) * sF[j];
            float sn, cs;
            sincosf(ang, &sn, &cs);
            sK[t * LD + ia] = xa * cs - xb * sn;
            sK[t * LD + ib] = xa * sn + xb * cs;
          }
        }
      }
      if constexpr (kWin) {
        // window: rows tf .. nt-1 of the tile are read in full by some query of the block (the block's first query
        // has the lowest boundary); their full-rank values into sCv (decode: sCv is read only after this phase) or
        // sCvf, and with several queries their full keys RoPE'd into sKf (other regions than the rebuild's, so the
        // same phase). Decode at long context: only the last tile or two have any.
        const int tf = max(0, tile.win_first(first + i0) - t0), nf = max(0, nt - tf);
        for (int idx = tid; idx < (win_sep ? nf : 0) * half; idx += blockDim.x) {
          const int t = tf + idx / half, j = idx % half;
          const int ia = interleaved ? 2 * j : j, ib = interleaved ? 2 * j + 1 : j + half;
          float xa, xb;
          tile.full_key(t0 + t, ia, ib, xa, xb);
          const float ang = static_cast<float>(tile.key_pos(t0, t)) * sF[j];
          float sn, cs;
          sincosf(ang, &sn, &cs);
          sKf[t * LD + ia] = xa * cs - xb * sn;
          sKf[t * LD + ib] = xa * sn + xb * cs;
        }
        float* cvf = win_sep ? sCvf : sCv;
        for (int idx = tid; idx < nf * rv; idx += blockDim.x) {
          const int t = tf + idx / rv, r = idx % rv;
          cvf[t * rv + r] = tile.full_value(t0 + t, r);
        }
      }
    }
    __syncthreads();

    // scores: item = (row R, key t); query qi sees keys up to first + i0 + qi (key order: position or entry)
    for (int idx = tid; idx < rows * kT; idx += blockDim.x) {
      const int R = idx / kT, t = idx - R * kT;
      const int qi = R % qch;
      float s = -INFINITY;
      if (t < nt && qi < nq && t0 + t <= first + i0 + qi) {
        const float* qr = sQ + size_t(R) * LD;
        const float* kr = sK + t * LD;
        if constexpr (kWin)
          if (win_sep && t0 + t >= tile.win_first(first + i0 + qi)) kr = sKf + t * LD;  // in this query's window
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
      if constexpr (kWin) {  // keys tw .. of the tile are in this query's window: their full-rank rows
        const int tw = win_sep ? min(nt, max(0, tile.win_first(first + i0 + R % qch) - t0)) : nt;
        for (int t = 0; t < tw; ++t) acc = fmaf(p[t], sCv[t * rv + r], acc);
        for (int t = tw; t < nt; ++t) acc = fmaf(p[t], sCvf[t * rv + r], acc);
      } else {
        for (int t = 0; t < nt; ++t) acc = fmaf(p[t], sCv[t * rv + r], acc);
      }
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

// Block = (head h, query i) of grid (n_heads, n_q); merges the S partials of that (i, h) and normalises into
// z (n_q, n_heads, rv).
__device__ __forceinline__ void combine_block(float* z, const float* part_z, const float* part_ml, int n_heads, int rv,
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

// ---- host side ---------------------------------------------------------------------------------------------
// The shape checks both launchers make (who = the launcher's name, for the message).
inline void check_shape(const char* who, int head_dim, int n_heads, int n_kv_heads, int r_k, int r_vmax) {
  const int D = head_dim;
  if (D < 2 || D > 256 || D % 2 != 0) fail(who, ": head_dim ", D, " unsupported (even, at most 256)");
  if (n_kv_heads <= 0 || n_heads <= 0 || n_heads % n_kv_heads != 0)
    fail(who, ": n_heads ", n_heads, " is not a multiple of n_kv_heads ", n_kv_heads);
  if (r_k < 1 || r_k > D || r_vmax < 1 || r_vmax > D)
    fail(who, ": ranks r_k ", r_k, ", r_vmax ", r_vmax, " must be in [1, head_dim ", D, "]");
}

// The current device's opt-in shared memory per block, bytes.
inline int smem_optin_bytes() {
  int dev = 0, optin = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  return optin;
}

}  // namespace llm::lowrank_tile
