// Decode GEMV (warp per output row, 16-byte streaming loads) and the cuBLASLt GEMM for prefill.
//
// Napkin math, Llama-3-8B, one decoded token: the matrices hold 7.5 G bf16 weights = 15.0 GB (+1.05 GB LM head
// included). At 3.35 TB/s that is 4.5 ms -> 223 tok/s; the goal (190 tok/s) needs ~85% of peak from the GEMV.
// Per-SM bytes in flight for that: ~3.35 TB/s * ~1 us latency / 132 SMs ~ 25 KB. Each lane issues 4 independent
// 16-byte weight loads before using any (2 KB per warp), so ~12 resident warps per SM suffice; 256-thread
// blocks with ~40 registers allow 64.
// Prefill: 2 * 7.5e9 * 2048 = 3.1e13 FLOP for a 2048-token prompt; at ~600 TFLOP/s (cuBLASLt bf16 on H100
// SXM) ~52 ms, which is most of the 58 ms budget of the 35K tok/s goal.
#include "kernels/matmul_cuda.h"

namespace llm {

namespace {
constexpr int kGemvWarps = 8;  // rows per block

template <class T>
__device__ __forceinline__ float dot8(const uint4& a, const uint4& b) {
  float fa[8], fb[8];
  elem8_to_f32<T>(a, fa);
  elem8_to_f32<T>(b, fb);
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < 8; ++i) s = fmaf(fa[i], fb[i], s);
  return s;
}

// SPLIT warps share a row (columns interleaved by 32-lane groups of 16-byte vectors), partial sums added in shared
// memory: a matrix of few rows (Llama-3-8B: wo 4096 x 4096, qkv 6144 x 4096, down 4096 x 14336) otherwise
// has one warp per row, ~31 resident warps per SM. Measured on the H100 (docs/performance.md, "First GPU session"):
// the decode step's qkv + wo + down went from 2.76 to 2.62 ms per token (decode 160.7 -> 166.0 tok/s at 1K).
template <class T, int SPLIT>
__global__ void __launch_bounds__(kGemvWarps * 32) gemv_kernel(float* y, const T* w, const T* x, int rows, int cols) {
  constexpr int kRows = kGemvWarps / SPLIT;  // rows per block
  __shared__ float part[kGemvWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, sub = warp % SPLIT;
  const int row = blockIdx.x * kRows + warp / SPLIT;
  float acc0 = 0.0f, acc1 = 0.0f;
  if (row < rows) {
    const uint4* wr = reinterpret_cast<const uint4*>(w + static_cast<size_t>(row) * cols);
    const uint4* xv = reinterpret_cast<const uint4*>(x);
    const int nv = cols / 8;
    constexpr int G = 32 * SPLIT;  // vectors between a lane's consecutive loads
    int i = sub * 32 + lane;
    // main loop: 4 loads of W in flight per lane; W is read once (streaming, evict-first), x stays in L1/L2
    for (; i + 3 * G < nv; i += 4 * G) {
      const uint4 w0 = __ldcs(wr + i), w1 = __ldcs(wr + i + G), w2 = __ldcs(wr + i + 2 * G), w3 = __ldcs(wr + i + 3 * G);
      const uint4 x0 = __ldg(xv + i), x1 = __ldg(xv + i + G), x2 = __ldg(xv + i + 2 * G), x3 = __ldg(xv + i + 3 * G);
      acc0 += dot8<T>(w0, x0) + dot8<T>(w2, x2);
      acc1 += dot8<T>(w1, x1) + dot8<T>(w3, x3);
    }
    for (; i < nv; i += G) acc0 += dot8<T>(__ldcs(wr + i), __ldg(xv + i));
  }
  const float s = warp_sum(acc0 + acc1);
  if constexpr (SPLIT == 1) {
    if (lane == 0 && row < rows) y[row] = s;
  } else {
    if (lane == 0) part[warp] = s;
    __syncthreads();
    if (sub == 0 && lane == 0 && row < rows) {
      float t = part[warp];
#pragma unroll
      for (int k = 1; k < SPLIT; ++k) t += part[warp + k];
      y[row] = t;
    }
  }
}

void lt_check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    fail("cuBLASLt ", what, " failed with status ", static_cast<int>(s), " (", cublasGetStatusString(s), ")");
}
}  // namespace

template <class T>
void gemv_cuda(float* y, const T* w, const T* x, int rows, int cols, cudaStream_t st) {
  if (cols % 8 != 0) fail("gemv_cuda (", elem_name<T>(), "): cols ", cols, " must be a multiple of 8");
  if (rows <= 0) return;
  // warps per row: enough warps in the grid (~16K, two per resident slot of 132 SMs x 64) whatever the row count,
  // but each lane keeps at least 4 of its row's 16-byte vectors (a short row, e.g. the demo model's 576 columns,
  // stays one warp: splitting it would only add blocks)
  int split = rows >= 16384 ? 1 : rows >= 8192 ? 2 : rows >= 4096 ? 4 : 8;
  while (split > 1 && cols / 8 < split * 32 * 4) split /= 2;
  const int threads = kGemvWarps * 32;
  switch (split) {
    case 1: gemv_kernel<T, 1><<<ceil_div(rows, kGemvWarps), threads, 0, st>>>(y, w, x, rows, cols); break;
    case 2: gemv_kernel<T, 2><<<ceil_div(rows, kGemvWarps / 2), threads, 0, st>>>(y, w, x, rows, cols); break;
    case 4: gemv_kernel<T, 4><<<ceil_div(rows, kGemvWarps / 4), threads, 0, st>>>(y, w, x, rows, cols); break;
    default: gemv_kernel<T, 8><<<rows, threads, 0, st>>>(y, w, x, rows, cols); break;
  }
  CUDA_CHECK_LAUNCH();
}

CublasLt::CublasLt() : workspace(32u << 20) { lt_check(cublasLtCreate(&handle), "cublasLtCreate"); }
CublasLt::~CublasLt() {
  if (handle) cublasLtDestroy(handle);
}

template <class T>
void gemm_cuda(CublasLt& lt, float* out, const T* x, const T* w, int n, int rows, int cols, cudaStream_t st) {
  constexpr cudaDataType_t type = std::is_same_v<T, f16> ? CUDA_R_16F : CUDA_R_16BF;
  if (n <= 0 || rows <= 0) return;
  // Column-major view: out^T (rows x n) = W^T^T ... i.e. C = op(A) * B with A = W seen column-major as
  // (cols x rows) and transposed, B = x seen column-major as (cols x n), C = out seen column-major (rows x n).
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  struct Cleanup {
    cublasLtMatmulDesc_t& op;
    cublasLtMatrixLayout_t &la, &lb, &lc;
    cublasLtMatmulPreference_t& pref;
    ~Cleanup() {
      if (pref) cublasLtMatmulPreferenceDestroy(pref);
      if (lc) cublasLtMatrixLayoutDestroy(lc);
      if (lb) cublasLtMatrixLayoutDestroy(lb);
      if (la) cublasLtMatrixLayoutDestroy(la);
      if (op) cublasLtMatmulDescDestroy(op);
    }
  } cleanup{op, la, lb, lc, pref};
  lt_check(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "MatmulDescCreate");
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  lt_check(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)), "set TRANSA");
  lt_check(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)), "set TRANSB");
  lt_check(cublasLtMatrixLayoutCreate(&la, type, cols, rows, cols), "layout A");
  lt_check(cublasLtMatrixLayoutCreate(&lb, type, cols, n, cols), "layout B");
  lt_check(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, rows, n, rows), "layout C");
  lt_check(cublasLtMatmulPreferenceCreate(&pref), "PreferenceCreate");
  size_t ws = lt.workspace.bytes;
  lt_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)),
           "set workspace");
  const cublasLtMatmulAlgo_t* algo = nullptr;
  for (const auto& a : lt.algos)
    if (a.n == n && a.rows == rows && a.cols == cols && a.type == type) algo = &a.algo;
  if (!algo) {
    cublasLtMatmulHeuristicResult_t heur{};
    int found = 0;
    lt_check(cublasLtMatmulAlgoGetHeuristic(lt.handle, op, la, lb, lc, lc, pref, 1, &heur, &found), "heuristic");
    if (found == 0)
      fail("cuBLASLt found no ", elem_name<T>(), " GEMM algorithm for (", n, " x ", cols, ") . (", cols, " x ", rows,
           ")^T");
    lt.algos.push_back({n, rows, cols, type, heur.algo});
    algo = &lt.algos.back().algo;
  }
  const float alpha = 1.0f, beta = 0.0f;
  lt_check(cublasLtMatmul(lt.handle, op, &alpha, w, la, x, lb, &beta, out, lc, out, lc, algo, lt.workspace.ptr,
                          lt.workspace.bytes, st),
           "Matmul");
}

template void gemv_cuda<bf16>(float*, const bf16*, const bf16*, int, int, cudaStream_t);
template void gemv_cuda<f16>(float*, const f16*, const f16*, int, int, cudaStream_t);
template void gemm_cuda<bf16>(CublasLt&, float*, const bf16*, const bf16*, int, int, int, cudaStream_t);
template void gemm_cuda<f16>(CublasLt&, float*, const f16*, const f16*, int, int, int, cudaStream_t);

}  // namespace llm
