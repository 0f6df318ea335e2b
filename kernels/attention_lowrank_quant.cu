// Attention over the unified (rank-space, mixed-precision) cache; contract in kernels/attention_lowrank_quant_cuda.h,
// CPU twin attention_lowrank_quant_cpu. The block program (once per block: U_K, inverse frequencies, queries; per
// tile of 32 entries: load, rebuild + RoPE, scores, online softmax, rank-space accumulation; then the partials and
// the split combine) is kernels/lowrank_tile.cuh, shared with kernels/attention_lowrank.cu. This file gives it its
// tile (PackedTile): item = (entry, value), c_k values (nt x r_k) and c_v values padded to r_vmax (nt x r_vmax)
// dequantised from the packed rows (offset, width, rank of the entry), and the entries' positions (sPos, after the
// block program's regions) by which the rebuilt keys are rotated; causality runs in entry order.
//
// Napkin math, Llama-3-8B (8 KV heads, head_dim 128, r_k 32, ranks 32/64/128, mostly 4-bit, group 32): an entry
// is ~(32 + 64) * 0.5 B + 3 groups * 4 B ~ 60 B per KV head, against 512 B for a bf16 head_dim K+V pair. As in
// the fp32/bf16 low-rank kernel the rebuild (r_k * head_dim FMA per entry and KV head) dominates, not the bytes.
#include <algorithm>

#include "kernels/attention_lowrank_quant_cuda.h"
#include "kernels/lowrank_tile.cuh"

namespace llm {

namespace {
using lowrank_tile::kT;
using lowrank_tile::kThreads;
constexpr int kMaxQ = 16;  // queries per block (halved until the shared memory fits)

// Shared-memory floats of one block: the block program's regions, then sPos (the tile's entry positions, int32,
// the size of a float).
__host__ __device__ inline size_t lrq_smem_floats(int gs, int qch, int D, int rk, int rv) {
  return lowrank_tile::smem_floats(gs, qch, D, rk, rv) + kT;
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

// Tile of the unified cache: entry e of KV head g is a packed c_k rank row at off[e] followed by its c_v rank row
// (vrank[e] values), both of width bits[e]; it is rotated by its own position pos[e] (entries are kept in entry
// order, not position order).
struct PackedTile {
  const uint8_t* data;
  const uint64_t* offg;     // KV head g's offsets (stride)
  const uint8_t* bitsg;     // KV head g's widths
  const uint16_t* vrankg;   // KV head g's value ranks
  const int32_t* pos;       // positions, every KV head
  int* sPos;                // shared: positions of the tile's entries
  int rk, rv, group, row16;
  // item = (entry t, value j); each reads the entry's width and offset (cached) and one value's bytes
  __device__ __forceinline__ void load(int t0, int nt, float* sCk, float* sCv) const {
    for (int idx = threadIdx.x; idx < nt * rk; idx += blockDim.x) {
      const int t = idx / rk, j = idx - t * rk, e = t0 + t;
      sCk[idx] = rank_row_value(data + offg[e], rk, j, bitsg[e], group, row16);
    }
    for (int idx = threadIdx.x; idx < nt * rv; idx += blockDim.x) {
      const int t = idx / rv, r = idx - t * rv, e = t0 + t;
      const int w = bitsg[e], n = vrankg[e];
      float v = 0.0f;
      if (r < n) {
        const uint8_t* vrow = data + offg[e] + rank_row_bytes(rk, w, group, row16);
        v = rank_row_value(vrow, n, r, w, group, row16);
      }
      sCv[idx] = v;
    }
    for (int t = threadIdx.x; t < nt; t += blockDim.x) sPos[t] = pos[t0 + t];
  }
  __device__ __forceinline__ int key_pos(int, int t) const { return sPos[t]; }
};

// Block = (KV head g, query chunk, split): the block program of kernels/lowrank_tile.cuh over this file's tile.
__global__ void __launch_bounds__(kThreads)
    attn_lowrank_quant_kernel(float* part_z, float* part_ml, LowRankQuantDecodeArgs a, int qch) {
  extern __shared__ float smem[];
  const int g = blockIdx.x, gs = a.n_heads / a.n_kv_heads;
  const size_t st = size_t(g) * a.stride;
  const PackedTile tile{a.data,
                        a.off + st,
                        a.bits + st,
                        a.vrank + st,
                        a.pos,
                        reinterpret_cast<int*>(smem + lowrank_tile::smem_floats(gs, qch, a.head_dim, a.r_k, a.r_vmax)),
                        a.r_k,
                        a.r_vmax,
                        a.group,
                        a.row16};
  lowrank_tile::block_program(smem, part_z, part_ml, a, a.n_q, *a.n_kv, qch, tile);
}

// Block = (head h, query i); merges the S partials of that (i, h) and normalises.
__global__ void attn_lowrank_quant_combine_kernel(float* z, const float* part_z, const float* part_ml, int n_heads,
                                                  int rv, int S) {
  lowrank_tile::combine_block(z, part_z, part_ml, n_heads, rv, S);
}

void check_args(const char* who, const LowRankQuantDecodeArgs& a, int splits) {
  lowrank_tile::check_shape(who, a.head_dim, a.n_heads, a.n_kv_heads, a.r_k, a.r_vmax);
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
  const int optin = lowrank_tile::smem_optin_bytes();
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
