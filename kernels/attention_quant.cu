// Split-K decode attention over the mixed-precision packed KV cache (contract in kernels/attention_quant_cuda.h,
// CPU twin attention_quant_cpu in kernels/attention_quant_cpu.cpp).
//
// Napkin math, Llama-3-8B (32 layers, 8 KV heads, head_dim 128), group 32: per entry and head a 4-bit K+V pair is
// 2 * 4 * (4 + 16) = 160 B (bf16: 512 B), 8-bit 288 B, 2-bit 96 B, plus 8 B of offset and 1 B of width. A
// 0.2/0.5/0.3 mix of 8/4/2 bits is ~167 B + 9 B: ~2.9x fewer bytes than bf16 at 32K, so at the same GB/s the
// cache part of a 32K decode step drops from 1.3 ms to ~0.45 ms on an H100.
#include <algorithm>

#include "kernels/attention_quant_cuda.h"
#include "kernels/quant_cuda.h"

namespace llm {

namespace {
constexpr float kLog2e = 1.4426950408889634f;
constexpr int kQW = 4;  // warps per block
constexpr int kQU = 4;  // entries per warp in flight per iteration (memory-level parallelism)

template <int D, int GM>
__global__ void __launch_bounds__(kQW * 32) attn_quant_decode_kernel(float* part_o, float* part_ml,
                                                                     QuantDecodeArgs a, int gqa, float scale_log2) {
  constexpr int E = D / 32;  // values per lane
  __shared__ float s_acc[kQW][GM][D];
  __shared__ float s_m[kQW][GM], s_l[kQW][GM];
  const int kvh = blockIdx.x, split = blockIdx.y, S = gridDim.y, qi = blockIdx.z;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int visible = *a.n_kv - a.n_q + qi + 1;  // entries 0 .. visible - 1 (the CPU twin's `last` + 1)
  const int chunk = visible > 0 ? (visible + S - 1) / S : 0;
  const int start = split * chunk, end = min(visible, start + chunk);

  float qf[GM][E];
#pragma unroll
  for (int hh = 0; hh < GM; ++hh) {
    const bf16* qh = a.q + (size_t(qi) * a.n_heads + kvh * gqa + hh) * D + lane * E;
#pragma unroll
    for (int i = 0; i < E; ++i) qf[hh][i] = 0.0f;
    if (hh < gqa) {  // padding heads (GM > gqa) keep q = 0 and are never written out
#pragma unroll
      for (int i = 0; i < E; ++i) qf[hh][i] = __bfloat162float(qh[i]) * scale_log2;
    }
  }
  float m[GM], l[GM], acc[GM][E];
#pragma unroll
  for (int hh = 0; hh < GM; ++hh) {
    m[hh] = -INFINITY;
    l[hh] = 0.0f;
#pragma unroll
    for (int i = 0; i < E; ++i) acc[hh][i] = 0.0f;
  }
  const uint64_t* off = a.off + size_t(kvh) * a.stride;
  const uint8_t* bits = a.bits + size_t(kvh) * a.stride;

  // warp-uniform loop: every lane of a warp handles the same entries (the warp_sum below needs all 32)
  for (int e0 = start + warp * kQU; e0 < end; e0 += kQW * kQU) {
    float kf[kQU][E], vf[kQU][E];
#pragma unroll
    for (int u = 0; u < kQU; ++u) {
      const int e = e0 + u;
#pragma unroll
      for (int i = 0; i < E; ++i) kf[u][i] = vf[u][i] = 0.0f;
      if (e < end) {
        const int b = bits[e];
        const uint8_t* krow = a.data + off[e];
        quant_load_values<E>(kf[u], krow, lane * E, b, a.group, a.row16);
        quant_load_values<E>(vf[u], krow + quant_row_bytes_cuda(D, b, a.group, a.row16), lane * E, b, a.group,
                             a.row16);
      }
    }
    // scores of the kQU entries (an entry past `end` scores -inf and has zero values), then one rescale per head
    float s[kQU][GM];
#pragma unroll
    for (int u = 0; u < kQU; ++u) {
#pragma unroll
      for (int hh = 0; hh < GM; ++hh) {
        float d = 0.0f;
#pragma unroll
        for (int i = 0; i < E; ++i) d = fmaf(qf[hh][i], kf[u][i], d);
        d = warp_sum(d);  // score in log2 units: q . k / sqrt(D) * log2(e); every lane gets it
        s[u][hh] = e0 + u < end ? d : -INFINITY;
      }
    }
#pragma unroll
    for (int hh = 0; hh < GM; ++hh) {
      float mx = m[hh];
#pragma unroll
      for (int u = 0; u < kQU; ++u) mx = fmaxf(mx, s[u][hh]);  // finite: entry e0 < end always exists
      const float alpha = exp2f(m[hh] - mx);                   // 0 on the first entries (m = -inf)
      l[hh] *= alpha;
#pragma unroll
      for (int i = 0; i < E; ++i) acc[hh][i] *= alpha;
#pragma unroll
      for (int u = 0; u < kQU; ++u) {
        const float p = exp2f(s[u][hh] - mx);
        l[hh] += p;
#pragma unroll
        for (int i = 0; i < E; ++i) acc[hh][i] = fmaf(p, vf[u][i], acc[hh][i]);
      }
      m[hh] = mx;
    }
  }

  // merge the block's warps (a warp that saw no entry has m = -inf, l = 0, acc = 0 and weighs 0)
#pragma unroll
  for (int hh = 0; hh < GM; ++hh) {
#pragma unroll
    for (int i = 0; i < E; ++i) s_acc[warp][hh][lane * E + i] = acc[hh][i];
    if (lane == 0) {
      s_m[warp][hh] = m[hh];
      s_l[warp][hh] = l[hh];
    }
  }
  __syncthreads();
  for (int t = threadIdx.x; t < gqa * D; t += kQW * 32) {
    const int hh = t / D, d = t - hh * D;
    float M = -INFINITY;
    for (int w = 0; w < kQW; ++w) M = fmaxf(M, s_m[w][hh]);
    float O = 0.0f, L = 0.0f;
    if (M != -INFINITY) {
      for (int w = 0; w < kQW; ++w) {
        const float f = exp2f(s_m[w][hh] - M);
        O += s_acc[w][hh][d] * f;
        L += s_l[w][hh] * f;
      }
    }
    const size_t base = ((size_t(qi) * gridDim.x + kvh) * S + split) * gqa + hh;
    part_o[base * D + d] = O;
    if (d == 0) {
      part_ml[base * 2] = M;
      part_ml[base * 2 + 1] = L;
    }
  }
}

// Grid (n_heads, n_q), one thread per dimension: merge the splits' partials of one query head.
__global__ void attn_quant_combine_kernel(bf16* out, const float* part_o, const float* part_ml, int n_kv_heads,
                                          int gqa, int splits, int D) {
  const int h = blockIdx.x, qi = blockIdx.y, kvh = h / gqa, hh = h - kvh * gqa, d = threadIdx.x;
  const int n_heads = gridDim.x;
  auto base = [&](int s) { return ((size_t(qi) * n_kv_heads + kvh) * splits + s) * gqa + hh; };
  float M = -INFINITY;
  for (int s = 0; s < splits; ++s)
    if (part_ml[base(s) * 2 + 1] > 0.0f) M = fmaxf(M, part_ml[base(s) * 2]);
  float O = 0.0f, L = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float l = part_ml[base(s) * 2 + 1];
    if (l > 0.0f) {
      const float f = exp2f(part_ml[base(s) * 2] - M);
      O += part_o[base(s) * D + d] * f;
      L += l * f;
    }
  }
  out[(size_t(qi) * n_heads + h) * D + d] = __float2bfloat16_rn(L > 0.0f ? O / L : 0.0f);
}

template <int D, int GM>
void launch(float* part_o, float* part_ml, const QuantDecodeArgs& a, int gqa, int splits, cudaStream_t st) {
  const float scale_log2 = kLog2e / sqrtf(float(D));
  attn_quant_decode_kernel<D, GM><<<dim3(a.n_kv_heads, splits, a.n_q), kQW * 32, 0, st>>>(part_o, part_ml, a, gqa,
                                                                                          scale_log2);
  CUDA_CHECK_LAUNCH();
}

template <int D>
void dispatch(float* part_o, float* part_ml, const QuantDecodeArgs& a, int gqa, int splits, cudaStream_t st) {
  if (gqa <= 1)
    launch<D, 1>(part_o, part_ml, a, gqa, splits, st);
  else if (gqa <= 2)
    launch<D, 2>(part_o, part_ml, a, gqa, splits, st);
  else if (gqa <= 4)
    launch<D, 4>(part_o, part_ml, a, gqa, splits, st);
  else
    launch<D, 8>(part_o, part_ml, a, gqa, splits, st);
}
}  // namespace

int attention_quant_decode_splits(int n_kv_heads, int max_entries, int sm_count) {
  int s = ceil_div(8 * sm_count, n_kv_heads);
  s = std::min(s, ceil_div(max_entries, 64));
  return std::max(s, 1);
}

size_t attention_quant_workspace_floats(int n_q, int n_heads, int head_dim, int splits) {
  return size_t(n_q) * n_heads * splits * (head_dim + 2);
}

void attention_quant_decode_cuda(bf16* out, const QuantDecodeArgs& a, int splits, float* workspace, cudaStream_t st) {
  const char* who = "attention_quant_decode_cuda";
  if (a.head_dim != 64 && a.head_dim != 128) fail(who, ": head_dim ", a.head_dim, " unsupported (64 or 128)");
  if (a.n_kv_heads <= 0 || a.n_heads % a.n_kv_heads != 0)
    fail(who, ": n_heads ", a.n_heads, " is not a multiple of n_kv_heads ", a.n_kv_heads);
  const int gqa = a.n_heads / a.n_kv_heads;
  if (gqa > 8) fail(who, ": ", gqa, " query heads per KV head; at most 8 are supported");
  quant_check_cuda(who, a.head_dim, a.group, a.row16);
  if (a.n_q <= 0) return;
  if (splits <= 0) fail(who, ": splits ", splits, " must be positive (attention_quant_decode_splits)");
  if (a.n_q > 65535) fail(who, ": ", a.n_q, " queries in one call; at most 65535 (grid z)");
  float* part_o = workspace;
  float* part_ml = workspace + size_t(a.n_q) * a.n_heads * splits * a.head_dim;
  if (a.head_dim == 64)
    dispatch<64>(part_o, part_ml, a, gqa, splits, st);
  else
    dispatch<128>(part_o, part_ml, a, gqa, splits, st);
  attn_quant_combine_kernel<<<dim3(a.n_heads, a.n_q), a.head_dim, 0, st>>>(out, part_o, part_ml, a.n_kv_heads, gqa,
                                                                           splits, a.head_dim);
  CUDA_CHECK_LAUNCH();
}

}  // namespace llm
