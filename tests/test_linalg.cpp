// The host half of the batched GPU eigensolver (kernels/linalg_cuda.h), testable without a GPU: cuSOLVER's
// LAPACK-convention output (ascending, column-major, arbitrary signs) turned into eigh_jacobi_cpu's conventions,
// the input checks, and the errors eigh_batched_cuda / the cuda profile path give without a device. The device
// half is tests/cuda/test_linalg_cuda.cu.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "engine/kv_profile.h"
#include "engine/llm.h"
#include "kernels/linalg_cuda.h"
#include "kernels/lowrank_cpu.h"
#include "loader/error.h"
#include "tests/test_util.h"

using namespace llm;

namespace {

std::vector<double> random_symmetric(int n, std::mt19937& rng) {
  std::normal_distribution<double> N(0.0, 1.0);
  std::vector<double> a(size_t(n) * n);
  for (int i = 0; i < n; ++i)
    for (int j = i; j < n; ++j) a[size_t(i) * n + j] = a[size_t(j) * n + i] = N(rng);
  return a;
}

}  // namespace

TEST_CASE("eigh_from_lapack: ascending column-major with any signs -> eigh_jacobi_cpu's conventions, exactly") {
  std::mt19937 rng(11);
  for (int n : {1, 2, 5, 64}) {
    std::vector<double> a = random_symmetric(n, rng), work = a;
    std::vector<double> ev(n), vec(size_t(n) * n);
    eigh_jacobi_cpu(work.data(), n, ev.data(), vec.data());
    // what LAPACK / cuSOLVER would hand back: ascending, column j (column-major) the eigenvector, sign arbitrary
    std::vector<double> w(n), v(size_t(n) * n);
    std::bernoulli_distribution flip(0.5);
    for (int j = 0; j < n; ++j) {
      const int src = n - 1 - j;
      w[j] = ev[src];
      const double s = flip(rng) ? -1.0 : 1.0;
      for (int i = 0; i < n; ++i) v[size_t(j) * n + i] = s * vec[size_t(i) * n + src];
    }
    std::vector<double> ev2(n), vec2(size_t(n) * n);
    eigh_from_lapack(w.data(), v.data(), n, ev2.data(), vec2.data());
    CHECK(ev2 == ev);
    CHECK(vec2 == vec);
  }
}

TEST_CASE("eigh_from_lapack: hand case (2x2 rotation by 30 degrees, eigenvalues 1 and 3)") {
  const double c = std::sqrt(3.0) / 2.0, s = 0.5;
  // eigenvalue 1: +-(-s, c); eigenvalue 3: +-(c, s). Given with the "wrong" signs, column-major, ascending.
  const double w[2] = {1.0, 3.0};
  const double v[4] = {s, -c, -c, -s};
  double ev[2], vec[4];
  eigh_from_lapack(w, v, 2, ev, vec);
  CHECK(ev[0] == 3.0);
  CHECK(ev[1] == 1.0);
  // row-major, column j = eigenvector j, largest component positive
  CHECK(vec[0] == c);
  CHECK(vec[2] == s);
  CHECK(vec[1] == -s);
  CHECK(vec[3] == c);
}

TEST_CASE("eigh_check_symmetric / eigh_batched_cuda: bad input is refused before any device work") {
  const double ok[4] = {2, 1, 1, 2}, ns[8] = {2, 1, 1, 2, 1, 2, 0, 1}, nan[4] = {1, 0, 0, NAN};
  CHECK_NOTHROW(eigh_check_symmetric(ok, 2, "t", 0));
  CHECK_THROWS_WITH_AS(eigh_check_symmetric(ns, 2, "t", 1), doctest::Contains("matrix 1 is not symmetric"), Error);
  CHECK_THROWS_WITH_AS(eigh_check_symmetric(nan, 2, "t", 0), doctest::Contains("NaN"), Error);
  CHECK_THROWS_WITH_AS(eigh_check_symmetric(ok, 0, "t", 0), doctest::Contains("must be positive"), Error);
  double ev[4], vec[16];
  CHECK_THROWS_WITH_AS(eigh_batched_cuda(ns, 2, 2, ev, vec), doctest::Contains("not symmetric"), Error);
  CHECK_THROWS_WITH_AS(eigh_batched_cuda(ok, 2, -1, ev, vec), doctest::Contains("batch"), Error);
  if (!eigh_cuda_available())
    CHECK_THROWS_WITH_AS(eigh_batched_cuda(ok, 2, 1, ev, vec), doctest::Contains("use --device cpu"), Error);
}

TEST_CASE("kv profiles with Device::cuda and no GPU: a clear error, not a crash") {
  if (eigh_cuda_available()) {
    std::fprintf(stderr, "SKIPPED: the GPU eigensolver is available (tests/cuda/test_linalg_cuda.cu covers it)\n");
    return;
  }
  if (!llm_test::have_demo_model()) return;
  llm::Model m(llm_test::demo_model_path(), {.n_threads = 2});
  CHECK_THROWS_WITH_AS(kv_profile_from_weights(m.config(), m.weights(), m.thread_pool(), {}, KVMetric::energy,
                                               Device::cuda),
                       doctest::Contains("use --device cpu"), Error);
}
