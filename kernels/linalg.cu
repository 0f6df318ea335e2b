// Batched symmetric eigensolver on the GPU for the KV profiles (kernels/linalg_cuda.h): cuSOLVER in fp64, then
// the host puts the results into eigh_jacobi_cpu's conventions (descending, row-major columns, sign rule).
// Why cusolverDnXsyevBatched and not syevjBatched: the latter only takes n <= 32 and head_dim is 64 or 128.
#include <cusolverDn.h>

#include <algorithm>
#include <climits>
#include <vector>

#include "kernels/common.cuh"
#include "kernels/linalg_cuda.h"

// cusolverDnXsyevBatched arrived with cuSOLVER 11.7.1 (CUDA 12.6 Update 2); older toolkits, or a build with
// -DLLM_EIGH_NO_XSYEV_BATCHED, loop cusolverDnDsyevd over the batch instead.
#if CUSOLVER_VERSION >= 11701 && !defined(LLM_EIGH_NO_XSYEV_BATCHED)
#define LLM_EIGH_XSYEV_BATCHED 1
#else
#define LLM_EIGH_XSYEV_BATCHED 0
#endif

namespace llm {

namespace {

const char* cusolver_status_name(cusolverStatus_t s) {
  switch (s) {
    case CUSOLVER_STATUS_SUCCESS: return "success";
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "not initialized (is the CUDA driver working?)";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "allocation failed (out of device memory)";
    case CUSOLVER_STATUS_INVALID_VALUE: return "invalid value";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "architecture mismatch";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "execution failed";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "internal error";
    case CUSOLVER_STATUS_NOT_SUPPORTED: return "not supported";
    default: return "error";
  }
}

// CUSOLVER_CHECK(cusolverDn...(...)): throws llm::Error naming the call, the file:line and the status.
#define CUSOLVER_CHECK(expr)                                                                                  \
  do {                                                                                                        \
    cusolverStatus_t st_ = (expr);                                                                            \
    if (st_ != CUSOLVER_STATUS_SUCCESS)                                                                       \
      ::llm::fail("cuSOLVER error in ", #expr, " at ", __FILE__, ":", __LINE__, ": ", cusolver_status_name(st_), \
                  " (status ", static_cast<int>(st_), "); profiles can be made with --device cpu meanwhile");     \
  } while (0)

// cuSOLVER handle, its parameters object and a stream; init() after construction so that a failure half way
// still frees what was made (the destructor runs on a constructed object).
struct Solver {
  cudaStream_t stream = nullptr;
  cusolverDnHandle_t handle = nullptr;
  cusolverDnParams_t params = nullptr;
  void init() {
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    CUSOLVER_CHECK(cusolverDnCreate(&handle));
    CUSOLVER_CHECK(cusolverDnSetStream(handle, stream));
    CUSOLVER_CHECK(cusolverDnCreateParams(&params));
  }
  ~Solver() {
    if (params) cusolverDnDestroyParams(params);
    if (handle) cusolverDnDestroy(handle);
    if (stream) cudaStreamDestroy(stream);
  }
};

// Eigen-decompose nb column-major n x n matrices at dA in place (eigenvectors overwrite them; eigenvalues
// ascending into dW, info per matrix into dInfo). Only the lower triangle (column-major) is read.
void syev_chunk(Solver& s, double* dA, double* dW, int* dInfo, int n, int nb) {
#if LLM_EIGH_XSYEV_BATCHED
  size_t dev_bytes = 0, host_bytes = 0;
  CUSOLVER_CHECK(cusolverDnXsyevBatched_bufferSize(s.handle, s.params, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER,
                                                   n, CUDA_R_64F, dA, n, CUDA_R_64F, dW, CUDA_R_64F, &dev_bytes,
                                                   &host_bytes, nb));
  DeviceBuffer work(dev_bytes);
  std::vector<char> host_work(host_bytes);
  CUSOLVER_CHECK(cusolverDnXsyevBatched(s.handle, s.params, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n,
                                        CUDA_R_64F, dA, n, CUDA_R_64F, dW, CUDA_R_64F, work.ptr, dev_bytes,
                                        host_bytes ? host_work.data() : nullptr, host_bytes, dInfo, nb));
#else
  int lwork = 0;
  CUSOLVER_CHECK(cusolverDnDsyevd_bufferSize(s.handle, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n, dA, n, dW,
                                             &lwork));
  DeviceBuffer work(size_t(std::max(lwork, 1)) * sizeof(double));
  for (int b = 0; b < nb; ++b)
    CUSOLVER_CHECK(cusolverDnDsyevd(s.handle, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n,
                                    dA + int64_t(b) * n * n, n, dW + int64_t(b) * n, work.as<double>(), lwork,
                                    dInfo + b));
#endif
  CUDA_CHECK(cudaStreamSynchronize(s.stream));
}

}  // namespace

bool eigh_cuda_available() { return cuda_devices() > 0; }

void eigh_batched_cuda(const double* a, int n, int batch, double* evals, double* evecs) {
  if (batch < 0) fail("eigh_batched_cuda: batch must be >= 0, got ", batch);
  for (int b = 0; b < batch; ++b) eigh_check_symmetric(a, n, "eigh_batched_cuda", b);
  if (!eigh_cuda_available())
    fail("device cuda: no CUDA device found (nvidia-smi shows none) for the batched eigensolver; use --device cpu");
  if (batch == 0) return;
  const int64_t nn = int64_t(n) * n;
  // cuSOLVER's batched syev needs n * lda * batch <= INT32_MAX; chunks of <= 256 MiB also bound the memory
  const int64_t cap = std::max<int64_t>(1, std::min<int64_t>(INT_MAX / nn, (int64_t(256) << 20) / (nn * 8)));
  const int chunk = static_cast<int>(std::min<int64_t>(batch, cap));
  Solver s;
  s.init();
  DeviceBuffer dA(size_t(chunk) * nn * sizeof(double)), dW(size_t(chunk) * n * sizeof(double)),
      dInfo(size_t(chunk) * sizeof(int));
  std::vector<double> v(size_t(chunk) * nn), w(size_t(chunk) * n);
  std::vector<int> info(chunk);
  for (int b0 = 0; b0 < batch; b0 += chunk) {
    const int nb = std::min(chunk, batch - b0);
    // row-major symmetric == column-major symmetric: upload as is
    CUDA_CHECK(cudaMemcpyAsync(dA.ptr, a + b0 * nn, size_t(nb) * nn * sizeof(double), cudaMemcpyHostToDevice, s.stream));
    syev_chunk(s, dA.as<double>(), dW.as<double>(), dInfo.as<int>(), n, nb);
    CUDA_CHECK(cudaMemcpy(info.data(), dInfo.ptr, size_t(nb) * sizeof(int), cudaMemcpyDeviceToHost));
    for (int b = 0; b < nb; ++b) {
      if (info[b] < 0) fail("eigh_batched_cuda: cuSOLVER rejected parameter ", -info[b], " (n ", n, ", batch ", nb, ")");
      if (info[b] > 0)
        fail("eigh_batched_cuda: cuSOLVER did not converge on matrix ", b0 + b, " (info ", info[b],
             "); make the profile with --device cpu");
    }
    CUDA_CHECK(cudaMemcpy(v.data(), dA.ptr, size_t(nb) * nn * sizeof(double), cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(w.data(), dW.ptr, size_t(nb) * n * sizeof(double), cudaMemcpyDeviceToHost));
    for (int b = 0; b < nb; ++b)
      eigh_from_lapack(w.data() + int64_t(b) * n, v.data() + b * nn, n, evals + (b0 + b) * int64_t(n),
                       evecs + (b0 + b) * nn);
  }
}

}  // namespace llm
