// The warp-level tensor-core primitives of kernels/mma.cuh against their documented register layouts (PTX ISA,
// "Matrix fragments for mma.m16n8k16 with floating point type" and "ldmatrix"), element by element: fragments are
// filled from row-major matrices in global memory by the layout formulas in mma.cuh's header comment, and the
// results compared with a CPU product. On a GPU this checks that the layouts the low-rank tensor-core kernel
// (kernels/attention_lowrank_tc.cu) is written against are the hardware's; on the emulator, that the emulation
// implements the same layouts.
#include <vector>

#include "cuda_test_util.cuh"
#include "kernels/mma.cuh"

using namespace llm;
using namespace llm_cuda_test;

namespace {

__device__ __forceinline__ uint32_t pair_bits(const bf16* p) {  // p[0] in the low half, p[1] in the high half
  return uint32_t(__bfloat16_as_ushort(p[0])) | uint32_t(__bfloat16_as_ushort(p[1])) << 16;
}

// One warp: D (16x8) = A (16x16, row-major) B (16x8, row-major k x n) + C, each fragment from the layout formulas.
__global__ void mma_layout_kernel(float* d, const bf16* A, const bf16* B, const float* C) {
  const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
  const uint32_t a[4] = {pair_bits(A + g * 16 + 2 * t), pair_bits(A + (g + 8) * 16 + 2 * t),
                         pair_bits(A + g * 16 + 2 * t + 8), pair_bits(A + (g + 8) * 16 + 2 * t + 8)};
  bf16 b0[2] = {B[(2 * t) * 8 + g], B[(2 * t + 1) * 8 + g]}, b1[2] = {B[(2 * t + 8) * 8 + g], B[(2 * t + 9) * 8 + g]};
  const uint32_t b[2] = {pair_bits(b0), pair_bits(b1)};
  float c[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t], C[(g + 8) * 8 + 2 * t + 1]};
  tc::mma_bf16(c, a, b);
  d[g * 8 + 2 * t] = c[0];
  d[g * 8 + 2 * t + 1] = c[1];
  d[(g + 8) * 8 + 2 * t] = c[2];
  d[(g + 8) * 8 + 2 * t + 1] = c[3];
}

// One warp: four 8x8 bf16 matrices (row-major, 16-byte rows) staged in shared memory with the rows of matrix i in
// reverse order and 32 bytes apart (so the row addresses the lanes give matter); out[lane][i] = register i.
template <bool kTrans>
__global__ void ldmatrix_layout_kernel(uint32_t* out, const bf16* M) {
  __shared__ __align__(16) bf16 s[4 * 8 * 16];
  const int lane = threadIdx.x;
  for (int idx = lane; idx < 4 * 8 * 8; idx += 32) {
    const int i = idx / 64, r = (idx / 8) % 8, c = idx % 8;
    s[(i * 8 + (7 - r)) * 16 + c] = M[idx];
  }
  __syncwarp();
  const int i = lane >> 3, r = lane & 7;
  uint32_t v[4];
  if (kTrans)
    tc::ldsm_x4_trans(v, s + (i * 8 + (7 - r)) * 16);
  else
    tc::ldsm_x4(v, s + (i * 8 + (7 - r)) * 16);
  for (int k = 0; k < 4; ++k) out[lane * 4 + k] = v[k];
}

uint16_t bits(float x) { return static_cast<uint16_t>(llm::f32_to_bf16(x)); }

}  // namespace

TEST_CASE("cuda tensor-core primitives: mma.sync m16n8k16 bf16 with the documented fragment layouts") {
  if (!have_cuda()) return;
  std::mt19937 rng(91);
  // small integers times powers of two: every product and sum is exact in fp32, so the comparison is exact
  std::uniform_int_distribution<int> pick(-8, 8);
  std::vector<float> A(16 * 16), B(16 * 8), C(16 * 8);
  for (float& x : A) x = pick(rng) * 0.25f;
  for (float& x : B) x = pick(rng) * 0.5f;
  for (float& x : C) x = pick(rng) * 1.0f;
  std::vector<float> ref(16 * 8);
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 8; ++j) {
      float s = C[i * 8 + j];
      for (int k = 0; k < 16; ++k) s += A[i * 16 + k] * B[k * 8 + j];
      ref[i * 8 + j] = s;
    }
  std::vector<bf16> Ab(A.size()), Bb(B.size());
  for (size_t i = 0; i < A.size(); ++i) Ab[i] = __float2bfloat16_rn(A[i]);
  for (size_t i = 0; i < B.size(); ++i) Bb[i] = __float2bfloat16_rn(B[i]);
  DeviceBuffer dA = upload(Ab), dB = upload(Bb), dC = upload(C), dD(16 * 8 * 4);
  mma_layout_kernel<<<1, 32>>>(dD.as<float>(), dA.as<bf16>(), dB.as<bf16>(), dC.as<float>());
  CUDA_CHECK_LAUNCH();
  check_close("mma m16n8k16", download<float>(dD, 16 * 8), ref, 0.0f, 0.0f);
}

TEST_CASE("cuda tensor-core primitives: ldmatrix x4 (plain and .trans) with the documented layouts") {
  if (!have_cuda()) return;
  std::vector<float> M(4 * 64);
  for (int i = 0; i < 256; ++i) M[i] = float(i - 100);  // distinct, bf16-exact
  std::vector<bf16> Mb(M.size());
  for (size_t i = 0; i < M.size(); ++i) Mb[i] = __float2bfloat16_rn(M[i]);
  DeviceBuffer dM = upload(Mb), dout(32 * 4 * 4);
  for (int trans = 0; trans < 2; ++trans) {
    CAPTURE(trans);
    if (trans)
      ldmatrix_layout_kernel<true><<<1, 32>>>(dout.as<uint32_t>(), dM.as<bf16>());
    else
      ldmatrix_layout_kernel<false><<<1, 32>>>(dout.as<uint32_t>(), dM.as<bf16>());
    CUDA_CHECK_LAUNCH();
    const std::vector<uint32_t> got = download<uint32_t>(dout, 32 * 4);
    int bad = 0;
    for (int lane = 0; lane < 32; ++lane)
      for (int i = 0; i < 4; ++i) {
        const int g = lane >> 2, t = lane & 3;
        auto at = [&](int r, int c) { return uint32_t(bits(M[i * 64 + r * 8 + c])); };
        const uint32_t want = trans ? (at(2 * t, g) | at(2 * t + 1, g) << 16) : (at(g, 2 * t) | at(g, 2 * t + 1) << 16);
        if (got[size_t(lane) * 4 + i] != want) ++bad;
      }
    CHECK(bad == 0);
  }
}
