// Low-rank attention on tensor cores (issue 6), decode and prefill: the bf16 cache's common case (sinks= included;
// no window, one key rank for every KV head, value ranks multiples of 8). The decode keeps everything between the
// cache and the rank-space sum in registers; the prefill (below, "prefill") shares its rebuild. attention_lowrank_
// {decode,prefill}_cuda (kernels/attention_lowrank.cu) pick them; the block program of kernels/lowrank_tile.cuh
// stays for everything else and is their reference on the device.
//
// Why: the block program rebuilds keys with fp32 FMAs out of shared memory; on the H100 that made the 32K decode
// 20x slower than the full cache (docs/performance.md: 1439 against 70 us per layer, issue-bound, IPC 1.7). In the
// decode the three products of a tile are mma.sync m16n8k16 (bf16 in, fp32 accumulate), chained through registers:
//   rebuild  K (16 keys x D)      = C_k (16 x r_k) U_K (r_k x D)          A = c_k rows (ldmatrix), B = U_K^T rows
//   RoPE     on the fp32 accumulators: a lane holds both dims of its RoPE pairs (half-split: n-tiles j and j + D/16;
//            interleaved: the two columns of one tile), the angle reduced to [-pi, pi] in fp32 and __sincosf'd
//   scores   S (16 rows x 16 keys) = Q (rows: the group's heads, hi part in rows 0-7, lo part in rows 8-15)
//                                     K^T; the rebuild's accumulators are the B fragments as they stand (pairs of
//                                     columns 2t, 2t+1 = the k pairs of B), so a key never leaves its registers.
//                                     Q = hi + lo in two bf16 (the query keeps ~16 bits); a head's score = row h + row
//                                     h + 8, both in the same lane.
//   softmax  online per head in base 2 (log2(e) folded into Q); a lane holds 4 keys of one head
//   values   Z^T (r_v x heads) += C_v^T (ranks x 16 keys) P^T (keys x heads): A = the tile's packed c_v rows through
//            ldmatrix.trans (a row address per key, a zero row past the key's own rank), B = P as the score
//            accumulators leave it. Only the tile's largest rank is multiplied (m-tiles of 16 ranks).
// Precision: c_k, c_v are bf16 in the cache; U_K, the rebuilt RoPE'd keys and P are rounded to bf16 (the full
// cache also stores keys in bf16); scores and sums fp32. Tests: tests/cuda/test_lowrank_cuda.cu, against the CPU
// twin with tolerances from that error model.
//
// Block = (KV head g, split); 4 warps, each walks every 4th 16-key tile of the split's range with its own online
// softmax and a 3-stage cp.async pipeline (its own shared-memory stages, so warps never wait on each other), then
// the block merges the warps and writes one partial per (head, split) for the block program's combine kernel.
// Shared-memory pieces are 16 bytes and XOR-swizzled inside each 128-byte line (swz below), so the ldmatrix rows of
// a tile (c_k rows of r_k*2 bytes, c_v rows of 32..256 bytes at any 16-byte offset) fall on distinct banks.
#include <algorithm>
#include <string>

#include "kernels/attention_lowrank_cuda.h"
#include "kernels/lowrank_tile.cuh"
#include "kernels/mma.cuh"

namespace llm {

namespace {

constexpr int kWarps = 4, kThreads = 32 * kWarps, kTok = 16, kStages = 3;

// 16-byte piece c of a region -> its slot: the low 3 bits XORed with bits 3-5 and 6-8 of c (a permutation inside
// each 128-byte line)
__device__ __forceinline__ int swz(int c) { return c ^ (((c >> 3) ^ (c >> 6)) & 7); }

// sin and cos of an fp32 angle as sincosf of that angle: reduced by 2 pi in two fp32 parts (exact enough up to
// |ang| ~ 1e5, 32K positions times frequencies <= 1), then the fast intrinsic on [-pi, pi]
__device__ __forceinline__ void rope_sincos(float ang, float& sn, float& cs) {
  const float k = rintf(ang * 0.159154943091895336f);
  float r = fmaf(-k, 6.28318548202514648f, ang);
  r = fmaf(-k, -1.74845553146951715e-7f, r);
  __sincosf(r, &sn, &cs);
}

__device__ __forceinline__ void rotate(float& x, float& y, float sn, float cs) {
  const float a = x, b = y;
  x = a * cs - b * sn;
  y = a * sn + b * cs;
}

// The four n-tiles (8 dims each) of rebuild group jj, in accumulator order: half-split 2jj, 2jj+1 and their RoPE
// partners 2jj+H, 2jj+1+H (H = D/16); interleaved 4jj .. 4jj+3 (a pair's two dims are one tile's columns 2t, 2t+1)
template <int D, bool kInter>
__device__ __forceinline__ constexpr int group_tile(int jj, int u) {
  return kInter ? 4 * jj + u : 2 * jj + (u & 1) + (u >> 1) * (D / 16);
}

// This lane's inverse frequencies for rebuild_group: group jj, slot u (half-split: pair 8 (2jj + u/2) + 2tq + u%2
// of n-tiles 2jj, 2jj+1; interleaved: pair 4 (4jj + u) + tq, the columns 2tq, 2tq+1 of n-tile 4jj + u)
template <int D, bool kInter>
__device__ __forceinline__ void lane_freqs(float (&fr)[D / 32][4], const float* inv_freq) {
  const int tq = threadIdx.x & 3;
#pragma unroll
  for (int jj = 0; jj < D / 32; ++jj)
#pragma unroll
    for (int u = 0; u < 4; ++u)
      fr[jj][u] = inv_freq[kInter ? 4 * (4 * jj + u) + tq : 8 * (2 * jj + (u >> 1)) + 2 * tq + (u & 1)];
}

// Block-wide: U_K of KV head g (uk, RK x D fp32 rows) into sUt as bf16 rows of dims (D, RK + 8), the B operand of
// rebuild_group, and the 16 zero bytes of zero_row (the value rows past a key's rank). The caller syncs after.
template <int D, int RK>
__device__ __forceinline__ void stage_basis(bf16* sUt, unsigned char* zero_row, const float* uk, int g) {
  const float* ukg = uk + size_t(g) * RK * D;
  for (int idx = threadIdx.x; idx < RK * D; idx += blockDim.x) {
    const int j = idx / D, d = idx - j * D;
    sUt[d * (RK + 8) + j] = __float2bfloat16_rn(ukg[idx]);
  }
  if (threadIdx.x < 4) reinterpret_cast<uint32_t*>(zero_row)[threadIdx.x] = 0u;
}

// A query pair (x0, x1) as two bf16 pairs: hi = the rounded values, lo = what rounding left (~16 bits together)
__device__ __forceinline__ void pack_hi_lo(float x0, float x1, uint32_t& hi, uint32_t& lo) {
  const float h0 = __bfloat162float(__float2bfloat16_rn(x0)), h1 = __bfloat162float(__float2bfloat16_rn(x1));
  hi = tc::pack_bf16(h0, h1);
  lo = tc::pack_bf16(x0 - h0, x1 - h1);
}

// Keys t0 .. t0+15 of a tile, rebuilt for group jj's n-tiles (acc[u] = n-tile group_tile(jj, u): rows = keys gq,
// gq + 8, columns = dims 8 n + 2 tq, +1) from the c_k A fragments ka and U_K^T in shared memory (sUt, rows of
// RK + 8), sinks applied (a token < n_sink takes its cached full key before RoPE, as the CPU twin), RoPE'd at each
// key's own position. fr: this lane's inverse frequencies of the group (see the kernels' fr).
template <int D, int KS, bool kInter>
__device__ __forceinline__ void rebuild_group(float (&acc)[4][4], int jj, const uint32_t (&ka)[KS][4],
                                              const bf16* sUt, const float (&fr)[4], int t0, int k_end,
                                              const LowRankAttentionCudaArgs<bf16>& a, int g) {
  constexpr int ULD = 16 * KS + 8;
  const int lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
  int nti[4];
#pragma unroll
  for (int u = 0; u < 4; ++u) nti[u] = group_tile<D, kInter>(jj, u);
#pragma unroll
  for (int u = 0; u < 4; ++u) acc[u][0] = acc[u][1] = acc[u][2] = acc[u][3] = 0.0f;
#pragma unroll
  for (int ks = 0; ks < KS; ++ks) {
#pragma unroll
    for (int pp = 0; pp < 2; ++pp) {
      // matrices: (n-tile nti[2pp], ranks lo), (same, ranks hi), (nti[2pp+1], lo), (same, hi)
      const int mi = lane >> 3, nn = nti[2 * pp + (mi >> 1)];
      uint32_t bb[4];
      tc::ldsm_x4(bb, sUt + (8 * nn + (lane & 7)) * ULD + 16 * ks + 8 * (mi & 1));
      const uint32_t b0[2] = {bb[0], bb[1]}, b1[2] = {bb[2], bb[3]};
      tc::mma_bf16(acc[2 * pp], ka[ks], b0);
      tc::mma_bf16(acc[2 * pp + 1], ka[ks], b1);
    }
  }
  // sinks=N: only the first tile or two of a context have any
  if (t0 < a.n_sink) {
    const float* ksg = a.k_sink + size_t(g) * a.k_sink_stride * D;
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int tok = t0 + gq + 8 * (c >> 1);
        if (tok < a.n_sink && tok < k_end) acc[u][c] = ksg[size_t(tok) * D + 8 * nti[u] + 2 * tq + (c & 1)];
      }
  }
  const float pa = static_cast<float>(t0 + gq), pb = static_cast<float>(t0 + gq + 8);
#pragma unroll
  for (int u = 0; u < 4; ++u) {
    if (kInter) {
      float sn, cs;
      rope_sincos(pa * fr[u], sn, cs);
      rotate(acc[u][0], acc[u][1], sn, cs);
      rope_sincos(pb * fr[u], sn, cs);
      rotate(acc[u][2], acc[u][3], sn, cs);
    } else if (u < 2) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float sn, cs;
        rope_sincos(pa * fr[2 * u + e], sn, cs);
        rotate(acc[u][e], acc[u + 2][e], sn, cs);
        rope_sincos(pb * fr[2 * u + e], sn, cs);
        rotate(acc[u][2 + e], acc[u + 2][2 + e], sn, cs);
      }
    }
  }
}

template <int D, int KS, bool kInter>
__global__ void __launch_bounds__(kThreads, 2)
    attn_lowrank_tc_decode_kernel(float* part_z, float* part_ml, LowRankAttentionCudaArgs<bf16> a, const int* pos) {
  constexpr int RK = 16 * KS;   // key rank
  constexpr int ULD = RK + 8;   // sUt row (bf16): 16 bytes of padding keep ldmatrix rows on distinct banks
  constexpr int NG = D / 32;    // groups of 4 n-tiles (32 dims) the rebuild works on at a time
  constexpr int QK = D / 16;    // k-steps of the score product
  constexpr int MT = D / 16;    // m-tiles of 16 value ranks, at most
  extern __shared__ __align__(16) unsigned char smem_tc[];
  const int rv = a.r_vmax, gs = a.n_heads / a.n_kv_heads;
  const int stage_bytes = kTok * RK * 2 + kTok * rv * 2;
  unsigned char* zero_row = smem_tc;                          // 16 bytes of zeros: c_v past a key's rank
  bf16* sUt = reinterpret_cast<bf16*>(smem_tc + 16);          // (D, ULD): row d = U_K[:, d] (the B operand)
  unsigned char* stages = smem_tc + 16 + size_t(D) * ULD * 2;  // kWarps x kStages x stage_bytes

  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, gq = lane >> 2, tq = lane & 3;
  const int g = blockIdx.x, split = blockIdx.y, S = gridDim.y;
  const int n_kv = pos[0] + 1;
  const int tiles = (n_kv + kTok - 1) / kTok, per = (tiles + S - 1) / S;
  const int k_begin = split * per * kTok, k_end = min(n_kv, k_begin + per * kTok);

  stage_basis<D, RK>(sUt, zero_row, a.uk, g);

  // queries of the group: rows gq < gs, hi in A rows 0-7 (a[0], a[2]), lo in rows 8-15 (a[1], a[3])
  uint32_t qa[QK][4];
  {
    const float scale = 1.44269504088896341f / sqrtf(static_cast<float>(D));  // log2(e) / sqrt(D)
    const float* qr = a.q + size_t(g * gs + min(gq, gs - 1)) * D;
#pragma unroll
    for (int ks = 0; ks < QK; ++ks) {
      float x[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) x[e] = gq < gs ? qr[16 * ks + 2 * tq + (e & 1) + 8 * (e >> 1)] * scale : 0.0f;
      pack_hi_lo(x[0], x[1], qa[ks][0], qa[ks][1]);
      pack_hi_lo(x[2], x[3], qa[ks][2], qa[ks][3]);
    }
  }
  float fr[NG][4];
  lane_freqs<D, kInter>(fr, a.inv_freq);

  const bf16* ckg = a.ck + size_t(g) * a.ck_stride * RK;
  const bf16* cvg = a.cv + size_t(g) * a.cv_stride;
  unsigned char* wst = stages + size_t(w) * kStages * stage_bytes;
  auto tile_start = [&](int i) { return k_begin + kTok * (w + kWarps * i); };
  // the packed c_v range of the warp's tile i: first value, 16-byte pieces (read a tile before its copy is issued)
  struct VRange {
    int64_t v0;
    int nc;
  };
  auto v_range = [&](int i) {
    const int t0 = tile_start(i);
    VRange r{0, 0};
    if (t0 < k_end) {
      const int last = t0 + min(kTok, k_end - t0) - 1;
      r.v0 = a.voff[t0];
      r.nc = static_cast<int>((a.voff[last] + a.vrank[last] - r.v0) / 8);
    }
    return r;
  };
  // cp.async of the warp's tile i into stage s: c_k rows (RK*2 bytes each), then the tile's packed c_v range
  auto issue = [&](int i, int s, VRange r) {
    const int t0 = tile_start(i);
    if (t0 < k_end) {
      const int nt = min(kTok, k_end - t0);
      unsigned char* dst = wst + size_t(s) * stage_bytes;
      const unsigned char* src = reinterpret_cast<const unsigned char*>(ckg + size_t(t0) * RK);
      for (int c = lane; c < nt * RK / 8; c += 32) tc::cp_async16(dst + 16 * swz(c), src + 16 * size_t(c));
      const unsigned char* vs = reinterpret_cast<const unsigned char*>(cvg + r.v0);
      unsigned char* vd = dst + kTok * RK * 2;
      for (int c = lane; c < r.nc; c += 32) tc::cp_async16(vd + 16 * swz(c), vs + 16 * size_t(c));
    }
    tc::cp_async_commit();
  };
  __syncthreads();  // sUt and the zero row

  float oacc[MT][4];
#pragma unroll
  for (int m = 0; m < MT; ++m) oacc[m][0] = oacc[m][1] = oacc[m][2] = oacc[m][3] = 0.0f;
  float m_run = -INFINITY, l_run = 0.0f;  // head gq: running max (base 2) and this lane's share of the sum

  // this lane's value row of a tile (the ldmatrix.trans below): key vt, ranks 16 m + 8 vh ..; its rank and first
  // 16-byte piece are read a tile ahead, so their latency hides behind the current tile's work
  const int vt = (lane & 7) + ((lane >> 4) << 3), vh = (lane >> 3) & 1;
  auto row_meta = [&](int i, int& vr, int& vc) {
    const int t0 = tile_start(i);
    vr = vc = 0;
    if (t0 < k_end && vt < k_end - t0) {
      vr = a.vrank[t0 + vt];
      vc = static_cast<int>((a.voff[t0 + vt] - a.voff[t0]) / 8);
    }
  };
  int vr, vc;
  row_meta(0, vr, vc);
  issue(0, 0, v_range(0));
  issue(1, 1, v_range(1));
  VRange r_next = v_range(2);
  for (int i = 0;; ++i) {
    const int t0 = tile_start(i);
    if (t0 >= k_end) break;
    const VRange r_after = v_range(i + 3);
    issue(i + 2, (i + 2) % kStages, r_next);
    r_next = r_after;
    int vr_next, vc_next;
    row_meta(i + 1, vr_next, vc_next);
    tc::cp_async_wait<kStages - 1>();
    __syncwarp();
    const unsigned char* st = wst + size_t(i % kStages) * stage_bytes;
    const int nt = min(kTok, k_end - t0);

    // c_k A fragments: matrix mi = lane / 8 is (keys 8 (mi & 1) .., ranks 16 ks + 8 (mi >> 1) ..)
    uint32_t ka[KS][4];
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      const int mi = lane >> 3, key = (lane & 7) + 8 * (mi & 1);
      tc::ldsm_x4(ka[ks], st + 16 * swz(key * (RK / 8) + 2 * ks + (mi >> 1)));
    }

    float sacc[2][4];  // scores: [key n-tile][c]: rows gq (hi) / gq + 8 (lo), keys 8 n + 2 tq + (c & 1)
#pragma unroll
    for (int n = 0; n < 2; ++n) sacc[n][0] = sacc[n][1] = sacc[n][2] = sacc[n][3] = 0.0f;
#pragma unroll
    for (int jj = 0; jj < NG; ++jj) {
      float acc[4][4];
      rebuild_group<D, KS, kInter>(acc, jj, ka, sUt, fr[jj], t0, k_end, a, g);
      int nti[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) nti[u] = group_tile<D, kInter>(jj, u);
      // scores: n-tiles (acc 2kk, 2kk+1) are the 16 dims of the query's k-step nti[2kk] / 2
#pragma unroll
      for (int kk = 0; kk < 2; ++kk) {
        const int qks = nti[2 * kk] / 2;
        const uint32_t b_lo[2] = {tc::pack_bf16(acc[2 * kk][0], acc[2 * kk][1]),
                                  tc::pack_bf16(acc[2 * kk + 1][0], acc[2 * kk + 1][1])};
        const uint32_t b_hi[2] = {tc::pack_bf16(acc[2 * kk][2], acc[2 * kk][3]),
                                  tc::pack_bf16(acc[2 * kk + 1][2], acc[2 * kk + 1][3])};
#pragma unroll
        for (int q = 0; q < QK; ++q)  // static register index for qa
          if (q == qks) {
            tc::mma_bf16(sacc[0], qa[q], b_lo);
            tc::mma_bf16(sacc[1], qa[q], b_hi);
          }
      }
    }

    // online softmax for head gq over keys 8n + 2tq + e of the tile
    float s[2][2], tmax = -INFINITY;
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int key = 8 * n + 2 * tq + e;
        s[n][e] = key < nt ? sacc[n][e] + sacc[n][2 + e] : -INFINITY;
        tmax = fmaxf(tmax, s[n][e]);
      }
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 2));
    const float m_new = fmaxf(m_run, tmax);
    const float m_use = m_new == -INFINITY ? 0.0f : m_new;
    const float alpha = exp2f(m_run - m_use);
    float p[2][2], psum = 0.0f;
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        p[n][e] = exp2f(s[n][e] - m_use);
        psum += p[n][e];
      }
    l_run = l_run * alpha + psum;
    m_run = m_new;
    const uint32_t pb2[2] = {tc::pack_bf16(p[0][0], p[0][1]), tc::pack_bf16(p[1][0], p[1][1])};
    // rescale Z^T: this lane's columns are heads 2tq, 2tq + 1, whose factors live in lanes 4 * head
    const float a0 = __shfl_sync(0xffffffffu, alpha, 8 * tq), a1 = __shfl_sync(0xffffffffu, alpha, 8 * tq + 4);
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      oacc[m][0] *= a0;
      oacc[m][1] *= a1;
      oacc[m][2] *= a0;
      oacc[m][3] *= a1;
    }

    // values: matrices (keys 0-7, ranks lo), (0-7, hi), (8-15, lo), (8-15, hi) of each m-tile; the zero row past
    // a key's rank or the range
    int rmax = vr;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) rmax = max(rmax, __shfl_xor_sync(0xffffffffu, rmax, o));
    const unsigned char* vbase = st + kTok * RK * 2;
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      if (16 * m < rmax) {  // warp-uniform
        const int rc = 2 * m + vh;
        const unsigned char* row = 8 * rc < vr ? vbase + 16 * swz(vc + rc) : zero_row;
        uint32_t va[4];
        tc::ldsm_x4_trans(va, row);
        tc::mma_bf16(oacc[m], va, pb2);
      }
    }
    vr = vr_next;
    vc = vc_next;
    __syncwarp();  // every lane is done with this stage before the next iteration's cp.async refills it
  }
  tc::cp_async_wait<0>();

  // merge the warps: per warp and head, (m, l) and Z^T rows; then one partial per (head, split)
  l_run += __shfl_xor_sync(0xffffffffu, l_run, 1);
  l_run += __shfl_xor_sync(0xffffffffu, l_run, 2);
  __syncthreads();  // every warp is done with its stages: they become the merge area
  float* sML = reinterpret_cast<float*>(stages);  // (kWarps, 8, 2)
  float* sZ = sML + kWarps * 16;                   // (kWarps, 8, rv)
  if (tq == 0 && gq < gs) {
    sML[(w * 8 + gq) * 2] = m_run;
    sML[(w * 8 + gq) * 2 + 1] = l_run;
  }
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int head = 2 * tq + (c & 1), r = 16 * m + gq + 8 * (c >> 1);
      if (head < gs && r < rv) sZ[(size_t(w) * 8 + head) * rv + r] = oacc[m][c];
    }
  __syncthreads();
  constexpr float kLn2 = 0.693147180559945309f;
  for (int idx = tid; idx < gs * rv; idx += kThreads) {
    const int h = idx / rv, r = idx - h * rv;
    float M = -INFINITY;
    for (int ww = 0; ww < kWarps; ++ww)
      if (sML[(ww * 8 + h) * 2 + 1] > 0.0f) M = fmaxf(M, sML[(ww * 8 + h) * 2]);
    float O = 0.0f, L = 0.0f;
    for (int ww = 0; ww < kWarps; ++ww) {
      const float l = sML[(ww * 8 + h) * 2 + 1];
      if (l > 0.0f) {
        const float f = exp2f(sML[(ww * 8 + h) * 2] - M);
        O += sZ[(size_t(ww) * 8 + h) * rv + r] * f;
        L += l * f;
      }
    }
    const size_t P = size_t(g * gs + h) * S + split;
    part_z[P * rv + r] = O;
    if (r == 0) {
      part_ml[P * 2] = L > 0.0f ? M * kLn2 : -INFINITY;  // the combine works in natural units
      part_ml[P * 2 + 1] = L;
    }
  }
}

// ---- prefill ----------------------------------------------------------------------------------------------------
// Block = (64 queries, one query head h); 4 warps, warp w owns queries 16w .. 16w+15 (the A rows of its products).
// The block walks the keys its last query sees in tiles of 64 (2-stage cp.async pipeline over the whole block):
//   rebuild  warp w rebuilds + RoPEs keys 16w .. 16w+15 of the tile (rebuild_group, as the decode), stored bf16 in
//            shared memory (sK, rows of D + 8)
//   scores   S (16 queries x 64 keys) = Q K^T: Q hi and lo parts in registers (two products), K^T B fragments by
//            ldmatrix from sK; causal mask; online softmax per query row in base 2
//   values   Z (16 x r_v) += P (16 x 64) C_v (64 x r_v): P as A fragments straight from the score accumulators,
//            C_v B fragments by ldmatrix.trans of the packed rows (a zero row past a key's rank), per 16 keys only
//            as far as their largest rank
// Rebuilding per (query block, head) repeats a KV head's keys for each head of its group: ~1/8 of the block's mma
// work at r_k 32, against no key ever written to global memory. z is written normalised (no split).
constexpr int kPQ = 64, kPK = 64;  // queries per block, keys per tile

size_t tc_prefill_smem_bytes(int head_dim, int r_k, int r_vmax) {
  return 16 + size_t(head_dim) * (r_k + 8) * 2 + size_t(kPK) * (head_dim + 8) * 2 +
         2 * (size_t(kPK) * r_k * 2 + size_t(kPK) * r_vmax * 2) + 2 * 2 * kPK * 4;
}

template <int D, int KS, bool kInter>
__global__ void __launch_bounds__(kThreads)
    attn_lowrank_tc_prefill_kernel(float* z, LowRankAttentionCudaArgs<bf16> a, int n_q, int n_kv) {
  constexpr int RK = 16 * KS, ULD = RK + 8, KLD = D + 8, NG = D / 32, QK = D / 16, NO = D / 8;
  extern __shared__ __align__(16) unsigned char smem_tcp[];
  const int rv = a.r_vmax, gs = a.n_heads / a.n_kv_heads;
  const int stage_bytes = kPK * RK * 2 + kPK * rv * 2;
  unsigned char* zero_row = smem_tcp;
  bf16* sUt = reinterpret_cast<bf16*>(smem_tcp + 16);
  bf16* sK = sUt + size_t(D) * ULD;                                       // (kPK, KLD) rebuilt RoPE'd keys
  unsigned char* stages = reinterpret_cast<unsigned char*>(sK + size_t(kPK) * KLD);
  int* sMeta = reinterpret_cast<int*>(stages + 2 * size_t(stage_bytes));  // [stage][rank | piece][key]

  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, gq = lane >> 2, tq = lane & 3;
  const int i0 = blockIdx.x * kPQ, h = blockIdx.y, g = h / gs;
  const int first = n_kv - n_q, nq = min(kPQ, n_q - i0);
  const int k_end = first + i0 + nq;  // the block's last query sees keys < k_end

  stage_basis<D, RK>(sUt, zero_row, a.uk, g);
  // this warp's query rows gq and gq + 8 (clamped to the last query: rows past nq are computed, never written)
  uint32_t qh[QK][4], ql[QK][4];
  {
    const float scale = 1.44269504088896341f / sqrtf(static_cast<float>(D));
    const float* q0 = a.q + (size_t(min(i0 + 16 * w + gq, n_q - 1)) * a.n_heads + h) * D;
    const float* q1 = a.q + (size_t(min(i0 + 16 * w + gq + 8, n_q - 1)) * a.n_heads + h) * D;
#pragma unroll
    for (int ks = 0; ks < QK; ++ks) {
      float x[8];  // (row gq | gq + 8) x (dims 2tq, 2tq + 1 | + 8)
#pragma unroll
      for (int e = 0; e < 8; ++e)
        x[e] = ((e >> 1) & 1 ? q1 : q0)[16 * ks + 2 * tq + (e & 1) + 8 * (e >> 2)] * scale;
#pragma unroll
      for (int r = 0; r < 4; ++r)  // a[r] = elements 2r, 2r+1: (row gq | gq+8 by r & 1, dims + 8 by r >> 1)
        pack_hi_lo(x[2 * r], x[2 * r + 1], qh[ks][r], ql[ks][r]);
    }
  }
  float fr[NG][4];
  lane_freqs<D, kInter>(fr, a.inv_freq);

  const bf16* ckg = a.ck + size_t(g) * a.ck_stride * RK;
  const bf16* cvg = a.cv + size_t(g) * a.cv_stride;
  // tile k into stage s: c_k rows and the packed c_v range by cp.async, each key's rank and first 16-byte piece
  // (relative to the range) into sMeta by plain loads (visible after the barrier that precedes their use)
  auto load = [&](int k, int s) {
    const int t0 = k * kPK;
    if (t0 < k_end) {
      const int nt = min(kPK, k_end - t0);
      unsigned char* dst = stages + size_t(s) * stage_bytes;
      const unsigned char* src = reinterpret_cast<const unsigned char*>(ckg + size_t(t0) * RK);
      for (int c = tid; c < nt * RK / 8; c += kThreads) tc::cp_async16(dst + 16 * swz(c), src + 16 * size_t(c));
      const int64_t v0 = a.voff[t0];
      const int nc = static_cast<int>((a.voff[t0 + nt - 1] + a.vrank[t0 + nt - 1] - v0) / 8);
      const unsigned char* vs = reinterpret_cast<const unsigned char*>(cvg + v0);
      unsigned char* vd = dst + kPK * RK * 2;
      for (int c = tid; c < nc; c += kThreads) tc::cp_async16(vd + 16 * swz(c), vs + 16 * size_t(c));
      for (int i = tid; i < kPK; i += kThreads) {
        sMeta[(s * 2 + 0) * kPK + i] = i < nt ? a.vrank[t0 + i] : 0;
        sMeta[(s * 2 + 1) * kPK + i] = i < nt ? static_cast<int>((a.voff[t0 + i] - v0) / 8) : 0;
      }
    }
    tc::cp_async_commit();
  };

  float oacc[NO][4];
#pragma unroll
  for (int j = 0; j < NO; ++j) oacc[j][0] = oacc[j][1] = oacc[j][2] = oacc[j][3] = 0.0f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};  // rows gq, gq + 8
  const int qp0 = first + i0 + 16 * w + gq;                           // row gq's position (row gq + 8: + 8)
  const int warp_last = first + i0 + min(16 * w + 15, nq - 1);        // the warp's last query position
  const bool warp_has_rows = 16 * w < nq;

  const int n_tiles = (k_end + kPK - 1) / kPK;
  load(0, 0);
  for (int k = 0; k < n_tiles; ++k) {
    load(k + 1, (k + 1) & 1);
    tc::cp_async_wait<1>();
    __syncthreads();  // tile k's stage and metadata are in; sUt too (first pass)
    const int s = k & 1, t0 = k * kPK, nt = min(kPK, k_end - t0);
    const unsigned char* st = stages + size_t(s) * stage_bytes;
    if (16 * w < nt) {  // rebuild keys 16w .. 16w+15
      uint32_t ka[KS][4];
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        const int mi = lane >> 3, key = 16 * w + (lane & 7) + 8 * (mi & 1);
        tc::ldsm_x4(ka[ks], st + 16 * swz(key * (RK / 8) + 2 * ks + (mi >> 1)));
      }
#pragma unroll
      for (int jj = 0; jj < NG; ++jj) {
        float acc[4][4];
        rebuild_group<D, KS, kInter>(acc, jj, ka, sUt, fr[jj], t0 + 16 * w, k_end, a, g);
#pragma unroll
        for (int u = 0; u < 4; ++u)
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const int key = 16 * w + gq + 8 * r, dim = 8 * group_tile<D, kInter>(jj, u) + 2 * tq;
            uint32_t* dst = reinterpret_cast<uint32_t*>(sK + size_t(key) * KLD + dim);
            *dst = tc::pack_bf16(acc[u][2 * r], acc[u][2 * r + 1]);
          }
      }
    }
    __syncthreads();  // sK holds the tile's keys

    if (warp_has_rows && t0 <= warp_last) {
      float sacc[kPK / 8][4];
#pragma unroll
      for (int n = 0; n < kPK / 8; ++n) sacc[n][0] = sacc[n][1] = sacc[n][2] = sacc[n][3] = 0.0f;
#pragma unroll
      for (int ks = 0; ks < QK; ++ks)
#pragma unroll
        for (int np = 0; np < kPK / 16; ++np) {
          // matrices: (keys 16np .., dims lo), (same, dims hi), (keys 16np + 8 .., lo), (same, hi)
          const int mi = lane >> 3;
          uint32_t bb[4];
          tc::ldsm_x4(bb, sK + size_t(16 * np + (lane & 7) + 8 * (mi >> 1)) * KLD + 16 * ks + 8 * (mi & 1));
          const uint32_t b0[2] = {bb[0], bb[1]}, b1[2] = {bb[2], bb[3]};
          tc::mma_bf16(sacc[2 * np], qh[ks], b0);
          tc::mma_bf16(sacc[2 * np], ql[ks], b0);
          tc::mma_bf16(sacc[2 * np + 1], qh[ks], b1);
          tc::mma_bf16(sacc[2 * np + 1], ql[ks], b1);
        }
      // causal mask (key position <= the row's query position; keys past the tile are past every query) and the
      // online softmax of rows gq (c = 0, 1) and gq + 8 (c = 2, 3)
      float tmax[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int n = 0; n < kPK / 8; ++n)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int kp = t0 + 8 * n + 2 * tq + (c & 1), r = c >> 1;
          if (kp > qp0 + 8 * r) sacc[n][c] = -INFINITY;
          tmax[r] = fmaxf(tmax[r], sacc[n][c]);
        }
      float alpha[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        tmax[r] = fmaxf(tmax[r], __shfl_xor_sync(0xffffffffu, tmax[r], 1));
        tmax[r] = fmaxf(tmax[r], __shfl_xor_sync(0xffffffffu, tmax[r], 2));
        const float m_new = fmaxf(m_run[r], tmax[r]);
        const float m_use = m_new == -INFINITY ? 0.0f : m_new;
        alpha[r] = exp2f(m_run[r] - m_use);
        m_run[r] = m_new;
        l_run[r] *= alpha[r];
#pragma unroll
        for (int n = 0; n < kPK / 8; ++n)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float p = exp2f(sacc[n][2 * r + e] - m_use);
            sacc[n][2 * r + e] = p;
            l_run[r] += p;
          }
      }
#pragma unroll
      for (int j = 0; j < NO; ++j) {
        oacc[j][0] *= alpha[0];
        oacc[j][1] *= alpha[0];
        oacc[j][2] *= alpha[1];
        oacc[j][3] *= alpha[1];
      }
      // values, 16 keys at a time; lane's ldmatrix row: key 16kk + (lane & 7) + 8 ((lane >> 3) & 1), ranks of
      // n-tile j + (lane >> 4)
      const unsigned char* vbase = st + kPK * RK * 2;
#pragma unroll
      for (int kk = 0; kk < kPK / 16; ++kk) {
        const uint32_t pa[4] = {tc::pack_bf16(sacc[2 * kk][0], sacc[2 * kk][1]),
                                tc::pack_bf16(sacc[2 * kk][2], sacc[2 * kk][3]),
                                tc::pack_bf16(sacc[2 * kk + 1][0], sacc[2 * kk + 1][1]),
                                tc::pack_bf16(sacc[2 * kk + 1][2], sacc[2 * kk + 1][3])};
        const int key = 16 * kk + (lane & 7) + 8 * ((lane >> 3) & 1);
        const int vr = sMeta[(s * 2 + 0) * kPK + key], vc = sMeta[(s * 2 + 1) * kPK + key];
        int rmax = vr;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) rmax = max(rmax, __shfl_xor_sync(0xffffffffu, rmax, o));
#pragma unroll
        for (int j = 0; j < NO; j += 2) {
          if (8 * j < rmax) {  // warp-uniform
            const int chunk = j + (lane >> 4);
            const unsigned char* row = 8 * chunk < vr ? vbase + 16 * swz(vc + chunk) : zero_row;
            uint32_t bb[4];
            tc::ldsm_x4_trans(bb, row);
            const uint32_t b0[2] = {bb[0], bb[1]}, b1[2] = {bb[2], bb[3]};
            tc::mma_bf16(oacc[j], pa, b0);
            tc::mma_bf16(oacc[j + 1], pa, b1);
          }
        }
      }
    }
    __syncthreads();  // every warp is done with this stage and sK before the next loads and rebuild
  }
  tc::cp_async_wait<0>();

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
  }
#pragma unroll
  for (int j = 0; j < NO; ++j)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int row = 16 * w + gq + 8 * (c >> 1), rank = 8 * j + 2 * tq + (c & 1);
      if (row < nq && rank < rv) {
        const float l = l_run[c >> 1];
        z[(size_t(i0 + row) * a.n_heads + h) * rv + rank] = l > 0.0f ? oacc[j][c] / l : 0.0f;
      }
    }
}

__global__ void attn_lowrank_tc_combine_kernel(float* z, const float* part_z, const float* part_ml, int n_heads, int rv,
                                               int S) {
  lowrank_tile::combine_block(z, part_z, part_ml, n_heads, rv, S);
}

size_t tc_smem_bytes(int head_dim, int r_k, int r_vmax) {
  return 16 + size_t(head_dim) * (r_k + 8) * 2 + size_t(kWarps) * kStages * (kTok * r_k * 2 + kTok * r_vmax * 2);
}

// Calls f.template operator()<D, KS, kInter>() with the kernels' instantiation for the arguments: head_dim 64 or
// 128, r_k = 16 KS for KS 1, 2 or 4 (attention_lowrank_tc_supported has checked them), the RoPE layout.
template <class F>
void with_instance(const LowRankAttentionCudaArgs<bf16>& a, F&& f) {
  auto layout = [&]<int D, int KS>() {
    if (a.rope_layout == RopeLayout::interleaved)
      f.template operator()<D, KS, true>();
    else
      f.template operator()<D, KS, false>();
  };
  const int ks = a.r_k / 16;
  if (a.head_dim == 64) {
    if (ks == 1) layout.template operator()<64, 1>();
    else if (ks == 2) layout.template operator()<64, 2>();
    else layout.template operator()<64, 4>();
  } else {
    if (ks == 1) layout.template operator()<128, 1>();
    else if (ks == 2) layout.template operator()<128, 2>();
    else layout.template operator()<128, 4>();
  }
}

}  // namespace

bool attention_lowrank_tc_supported(const LowRankAttentionCudaArgs<bf16>& a, std::string* why) {
  auto no = [&](std::string reason) {
    if (why) *why = std::move(reason);
    return false;
  };
  if (a.head_dim != 64 && a.head_dim != 128)
    return no("head_dim " + std::to_string(a.head_dim) + " (the tensor-core kernel takes 64 or 128)");
  if (a.r_k != 16 && a.r_k != 32 && a.r_k != 64)
    return no("key rank " + std::to_string(a.r_k) + " (the tensor-core kernel takes 16, 32 or 64)");
  if (a.r_vmax % 16 != 0) return no("r_vmax " + std::to_string(a.r_vmax) + " is not a multiple of 16");
  if (a.v_align % 8 != 0)
    return no("value ranks aligned to " + std::to_string(a.v_align) + " (every rank must be a multiple of 8)");
  if (a.cv_stride % 8 != 0) return no("cv_stride " + std::to_string(a.cv_stride) + " is not a multiple of 8");
  if (a.n_kv_heads <= 0 || a.n_heads % a.n_kv_heads != 0 || a.n_heads / a.n_kv_heads > 8)
    return no("GQA group " + std::to_string(a.n_kv_heads > 0 ? a.n_heads / a.n_kv_heads : 0) + " (at most 8)");
  if (a.window > 0) return no("window= (full keys and values of the recent tokens beside the compressed ones)");
  if (a.ck_off || a.k_ranks) return no("alloc=spectrum (a key rank per KV head)");
  if (reinterpret_cast<uintptr_t>(a.ck) % 16 != 0 || reinterpret_cast<uintptr_t>(a.cv) % 16 != 0)
    return no("ck or cv not 16-byte aligned");
  return true;
}

bool attention_lowrank_tc_chosen(const LowRankAttentionCudaArgs<bf16>& a, std::string* why) {
  if (a.kernel == LowRankKernel::tensor) return true;
  if (a.kernel == LowRankKernel::generic) {
    if (why) *why = "LowRankKernel::generic asked for";
    return false;
  }
  return attention_lowrank_tc_supported(a, why);
}

void attention_lowrank_tc_decode_cuda(float* z, const LowRankAttentionCudaArgs<bf16>& a, const int* pos, int splits,
                                      float* workspace, cudaStream_t st) {
  std::string why;
  if (!attention_lowrank_tc_supported(a, &why))
    fail("attention_lowrank_decode_cuda: the tensor-core kernel cannot take these arguments: ", why,
         "; use LowRankKernel::automatic or ::generic");
  const size_t smem = tc_smem_bytes(a.head_dim, a.r_k, a.r_vmax);
  if (smem > size_t(lowrank_tile::smem_optin_bytes()))
    fail("attention_lowrank_decode_cuda: the tensor-core kernel needs ", smem, " bytes of shared memory per block");
  float* part_z = workspace;
  float* part_ml = workspace + size_t(a.n_heads) * splits * a.r_vmax;
  with_instance(a, [&]<int D, int KS, bool kInter>() {
    auto* kernel = attn_lowrank_tc_decode_kernel<D, KS, kInter>;
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    kernel<<<dim3(a.n_kv_heads, splits), kThreads, smem, st>>>(part_z, part_ml, a, pos);
    CUDA_CHECK_LAUNCH();
  });
  attn_lowrank_tc_combine_kernel<<<dim3(a.n_heads, 1), kThreads, 0, st>>>(z, part_z, part_ml, a.n_heads, a.r_vmax,
                                                                          splits);
  CUDA_CHECK_LAUNCH();
}

void attention_lowrank_tc_prefill_cuda(float* z, const LowRankAttentionCudaArgs<bf16>& a, int n_q, int n_kv,
                                       cudaStream_t st) {
  std::string why;
  if (!attention_lowrank_tc_supported(a, &why))
    fail("attention_lowrank_prefill_cuda: the tensor-core kernel cannot take these arguments: ", why,
         "; use LowRankKernel::automatic or ::generic");
  if (n_q <= 0) return;
  if (n_kv < n_q || n_kv > a.ck_stride)
    fail("attention_lowrank_prefill_cuda: n_kv ", n_kv, " outside [n_q ", n_q, ", ck_stride ", a.ck_stride, "]");
  const size_t smem = tc_prefill_smem_bytes(a.head_dim, a.r_k, a.r_vmax);
  if (smem > size_t(lowrank_tile::smem_optin_bytes()))
    fail("attention_lowrank_prefill_cuda: the tensor-core kernel needs ", smem, " bytes of shared memory per block");
  with_instance(a, [&]<int D, int KS, bool kInter>() {
    auto* kernel = attn_lowrank_tc_prefill_kernel<D, KS, kInter>;
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    kernel<<<dim3(ceil_div(n_q, kPQ), a.n_heads), kThreads, smem, st>>>(z, a, n_q, n_kv);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace llm
