// Warp-level tensor-core primitives with register layouts the code relies on (unlike nvcuda::wmma, whose fragment
// layout is opaque): mma.sync m16n8k16 bf16 -> fp32, ldmatrix (x4, plain and transposed) and cp.async, as PTX on
// sm_80+; the emulated build (LLM_CUDA_EMULATED, emu/cuda_emu.h) gets CPU versions with the same per-lane layouts,
// computed through warp collectives, so a kernel written against them runs and is checked without a GPU.
//
// Layouts (PTX ISA, "Matrix fragments for mma.m16n8k16 with floating point type"; lane = 4 * g + t, g = lane / 4,
// t = lane % 4; a 32-bit register holds two bf16, the lower-indexed element in the low half):
//   A (16 x 16, row-major): a[0] = (row g,   cols 2t, 2t+1)   a[1] = (row g+8, cols 2t, 2t+1)
//                           a[2] = (row g,   cols 2t+8, 2t+9) a[3] = (row g+8, cols 2t+8, 2t+9)
//   B (16 x 8, k x n):      b[0] = (rows 2t, 2t+1, col g)    b[1] = (rows 2t+8, 2t+9, col g)
//   C, D (16 x 8, fp32):    c[0], c[1] = (row g, cols 2t, 2t+1)   c[2], c[3] = (row g+8, cols 2t, 2t+1)
//   ldmatrix .x4: lanes 8i .. 8i+7 give the row addresses (16 bytes each, shared memory) of 8x8 matrix i; register
//   r[i] of lane (g, t) gets matrix i's (row g, cols 2t, 2t+1), or with .trans its (rows 2t, 2t+1, col g).
// The emulation's products and sums are fp32 in k order (tensor cores may differ in the last bits); its cp.async
// copies at once (a missing wait is not caught there).
#pragma once
#include <cstdint>
#include <cstring>

#include <cuda_bf16.h>

namespace llm::tc {

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return u;
}

#if defined(LLM_CUDA_EMULATED)

inline float bf16_lo(uint32_t u) { return __uint_as_float(u << 16); }
inline float bf16_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

// d += A B for this lane's four outputs (layouts above)
inline void mma_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  struct Regs {
    uint32_t a[4], b[2];
  };
  const Regs mine{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}};
  uint64_t ptr[32];
  ::emu::warp_allgather(0xffffffffu, reinterpret_cast<uintptr_t>(&mine), ptr, "tc::mma_bf16");
  Regs all[32];
  for (int l = 0; l < 32; ++l) all[l] = *reinterpret_cast<const Regs*>(static_cast<uintptr_t>(ptr[l]));
  ::emu::warp_exchange(0xffffffffu, 0, -1, "tc::mma_bf16 (done reading)");
  const int lane = ::emu::lane_id(), g = lane >> 2, t = lane & 3;
  float A[2][16], B[16][2];  // this lane's rows g, g+8 of A and columns 2t, 2t+1 of B
  for (int tt = 0; tt < 4; ++tt) {
    const Regs& r = all[4 * g + tt];  // rows g, g+8, cols 2tt, 2tt+1 (+8)
    A[0][2 * tt] = bf16_lo(r.a[0]), A[0][2 * tt + 1] = bf16_hi(r.a[0]);
    A[1][2 * tt] = bf16_lo(r.a[1]), A[1][2 * tt + 1] = bf16_hi(r.a[1]);
    A[0][2 * tt + 8] = bf16_lo(r.a[2]), A[0][2 * tt + 9] = bf16_hi(r.a[2]);
    A[1][2 * tt + 8] = bf16_lo(r.a[3]), A[1][2 * tt + 9] = bf16_hi(r.a[3]);
    for (int e = 0; e < 2; ++e) {
      const Regs& q = all[4 * (2 * t + e) + tt];  // column n = 2t + e, rows 2tt, 2tt+1 (+8)
      B[2 * tt][e] = bf16_lo(q.b[0]), B[2 * tt + 1][e] = bf16_hi(q.b[0]);
      B[2 * tt + 8][e] = bf16_lo(q.b[1]), B[2 * tt + 9][e] = bf16_hi(q.b[1]);
    }
  }
  for (int i = 0; i < 2; ++i)
    for (int e = 0; e < 2; ++e) {
      float s = d[2 * i + e];
      for (int k = 0; k < 16; ++k) s += A[i][k] * B[k][e];
      d[2 * i + e] = s;
    }
}

template <bool kTrans>
inline void ldsm_x4_impl(uint32_t (&r)[4], const void* row) {
  uint64_t ptr[32];
  ::emu::warp_allgather(0xffffffffu, reinterpret_cast<uintptr_t>(row), ptr, "tc::ldsm_x4");
  const int lane = ::emu::lane_id(), g = lane >> 2, t = lane & 3;
  for (int i = 0; i < 4; ++i) {
    auto elem = [&](int rr, int c) {  // matrix i, row rr, column c (bf16 bits)
      uint16_t v;
      std::memcpy(&v, reinterpret_cast<const char*>(static_cast<uintptr_t>(ptr[8 * i + rr])) + 2 * c, 2);
      return uint32_t(v);
    };
    r[i] = kTrans ? elem(2 * t, g) | elem(2 * t + 1, g) << 16 : elem(g, 2 * t) | elem(g, 2 * t + 1) << 16;
  }
  ::emu::warp_exchange(0xffffffffu, 0, -1, "tc::ldsm_x4 (done reading)");
}
inline void ldsm_x4(uint32_t (&r)[4], const void* row) { ldsm_x4_impl<false>(r, row); }
inline void ldsm_x4_trans(uint32_t (&r)[4], const void* row) { ldsm_x4_impl<true>(r, row); }

inline void cp_async16(void* smem, const void* gmem) { std::memcpy(smem, gmem, 16); }
inline void cp_async_commit() {}
template <int N>
inline void cp_async_wait() {}

#else

__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row)));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row)));
}

// 16 bytes global -> shared, bypassing L1 (.cg: the cache is streamed once)
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(smem)), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// wait until at most N of this thread's committed groups are still in flight
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

#endif

}  // namespace llm::tc
