// Cyclic Jacobi eigen-solver for the small symmetric matrices of the KV profiles (head_dim x head_dim: W W^T of
// a KV head, or a key/value covariance). Jacobi is slow for big n (O(n^3) per sweep, ~6-10 sweeps) but exact to
// rounding, simple, and n <= 256 here: a 128 x 128 matrix takes a few milliseconds.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/lowrank_cpu.h"
#include "loader/error.h"

namespace llm {

void eigh_jacobi_cpu(double* a, int n, double* evals, double* evecs) {
  if (n <= 0) fail("eigh_jacobi: matrix size must be positive, got ", n);
  double amax = 0.0;
  for (int64_t i = 0; i < int64_t(n) * n; ++i) {
    if (!std::isfinite(a[i])) fail("eigh_jacobi: the matrix holds a NaN or Inf at (", i / n, ", ", i % n, ")");
    amax = std::max(amax, std::fabs(a[i]));
  }
  for (int i = 0; i < n; ++i)
    for (int j = i + 1; j < n; ++j)
      if (std::fabs(a[i * n + j] - a[j * n + i]) > 1e-9 * amax)
        fail("eigh_jacobi: the matrix is not symmetric at (", i, ", ", j, "): ", a[i * n + j], " vs ", a[j * n + i]);
  std::vector<double> v(size_t(n) * n, 0.0);
  for (int i = 0; i < n; ++i) v[size_t(i) * n + i] = 1.0;
  auto off = [&] {
    double s = 0.0;
    for (int i = 0; i < n; ++i)
      for (int j = i + 1; j < n; ++j) s += a[i * n + j] * a[i * n + j];
    return s;
  };
  double total = 0.0;
  for (int64_t i = 0; i < int64_t(n) * n; ++i) total += a[i] * a[i];
  for (int sweep = 0; sweep < 100; ++sweep) {
    if (off() <= 1e-30 * total || total == 0.0) break;
    for (int p = 0; p < n - 1; ++p)
      for (int q = p + 1; q < n; ++q) {
        const double apq = a[p * n + q];
        if (apq == 0.0) continue;
        const double app = a[p * n + p], aqq = a[q * n + q];
        // rotation that zeroes a_pq: tan(2 phi) = 2 a_pq / (a_qq - a_pp), take the smaller root for stability
        const double theta = (aqq - app) / (2.0 * apq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1.0));
        const double c = 1.0 / std::sqrt(t * t + 1.0), s = t * c;
        for (int k = 0; k < n; ++k) {  // A <- A J (columns p, q)
          const double akp = a[k * n + p], akq = a[k * n + q];
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (int k = 0; k < n; ++k) {  // A <- J^T A (rows p, q)
          const double apk = a[p * n + k], aqk = a[q * n + k];
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
        a[p * n + q] = a[q * n + p] = 0.0;
        for (int k = 0; k < n; ++k) {  // V <- V J
          const double vkp = v[size_t(k) * n + p], vkq = v[size_t(k) * n + q];
          v[size_t(k) * n + p] = c * vkp - s * vkq;
          v[size_t(k) * n + q] = s * vkp + c * vkq;
        }
      }
  }
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return a[x * n + x] > a[y * n + y]; });
  for (int j = 0; j < n; ++j) {
    const int src = order[j];
    evals[j] = a[src * n + src];
    // sign convention (deterministic profiles): the largest-magnitude component of each eigenvector is positive
    int imax = 0;
    for (int i = 1; i < n; ++i)
      if (std::fabs(v[size_t(i) * n + src]) > std::fabs(v[size_t(imax) * n + src])) imax = i;
    const double sgn = v[size_t(imax) * n + src] < 0 ? -1.0 : 1.0;
    for (int i = 0; i < n; ++i) evecs[size_t(i) * n + j] = sgn * v[size_t(i) * n + src];
  }
}

}  // namespace llm
