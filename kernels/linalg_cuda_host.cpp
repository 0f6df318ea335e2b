// Host half of the batched GPU eigensolver (kernels/linalg_cuda.h): input checks and the conversion of
// cuSOLVER's LAPACK-convention output to eigh_jacobi_cpu's conventions. Built in every configuration, so the
// conversion is tested on machines without a GPU; without the CUDA backend it also holds eigh_batched_cuda's stub.
#include <algorithm>
#include <cmath>

#include "kernels/linalg_cuda.h"
#include "loader/error.h"

namespace llm {

void eigh_check_symmetric(const double* a, int n, const char* what, int64_t index) {
  if (n <= 0) fail(what, ": matrix size must be positive, got ", n);
  const double* m = a + index * int64_t(n) * n;
  double amax = 0.0;
  for (int64_t i = 0; i < int64_t(n) * n; ++i) {
    if (!std::isfinite(m[i]))
      fail(what, ": matrix ", index, " holds a NaN or Inf at (", i / n, ", ", i % n, ")");
    amax = std::max(amax, std::fabs(m[i]));
  }
  for (int i = 0; i < n; ++i)
    for (int j = i + 1; j < n; ++j)
      if (std::fabs(m[i * n + j] - m[j * n + i]) > 1e-9 * amax)
        fail(what, ": matrix ", index, " is not symmetric at (", i, ", ", j, "): ", m[i * n + j], " vs ", m[j * n + i]);
}

void eigh_from_lapack(const double* w, const double* v, int n, double* evals, double* evecs) {
  for (int j = 0; j < n; ++j) {
    const int src = n - 1 - j;  // ascending -> descending
    const double* col = v + int64_t(src) * n;
    evals[j] = w[src];
    // sign rule of eigh_jacobi_cpu: the largest-magnitude component (the first on exact ties) is positive
    int imax = 0;
    for (int i = 1; i < n; ++i)
      if (std::fabs(col[i]) > std::fabs(col[imax])) imax = i;
    const double sgn = col[imax] < 0 ? -1.0 : 1.0;
    for (int i = 0; i < n; ++i) evecs[int64_t(i) * n + j] = sgn * col[i];
  }
}

#if !LLM_HAVE_CUDA
bool eigh_cuda_available() { return false; }

void eigh_batched_cuda(const double* a, int n, int batch, double*, double*) {
  if (batch < 0) fail("eigh_batched_cuda: batch must be >= 0, got ", batch);
  for (int b = 0; b < batch; ++b) eigh_check_symmetric(a, n, "eigh_batched_cuda", b);
  fail("device cuda: this build has no CUDA backend (configure with -DLLM_CUDA=ON on a machine with the CUDA "
       "Toolkit); use --device cpu");
}
#endif

}  // namespace llm
