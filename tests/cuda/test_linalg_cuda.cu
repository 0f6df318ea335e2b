// The batched GPU eigensolver (eigh_batched_cuda, kernels/linalg.cu: cuSOLVER XsyevBatched in fp64) against the
// CPU Jacobi solver eigh_jacobi_cpu on seeded random symmetric positive definite matrices at head_dim 64 and 128
// and several batch sizes, hand cases (a diagonal matrix, a 2x2 rotation), the reconstruction A = V diag(w) V^T,
// and a KV profile of the demo model made on both devices. Without a GPU every case prints SKIPPED and passes.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "cuda_test_util.cuh"
#include "engine/kv_profile.h"
#include "engine/llm.h"
#include "kernels/linalg_cuda.h"
#include "kernels/lowrank_cpu.h"
#include "tests/test_util.h"

using namespace llm;
using namespace llm_cuda_test;

namespace {

// The one gate of this file: a device, and one that runs cuSOLVER (eigh_cuda_available, kernels/linalg_cuda.h,
// is where a CPU emulator of CUDA without cuSOLVER is excluded).
bool have_cusolver() {
  if (!have_cuda()) return false;
  if (eigh_cuda_available()) return true;
  std::fprintf(stderr, "SKIPPED: this CUDA device cannot run cuSOLVER (eigh_cuda_available() is false)\n");
  return false;
}

// A = Q diag(w) Q^T with Q random orthogonal (Gram-Schmidt of a Gaussian matrix) and eigenvalues w spread over
// [1, 1 + gap * n) at least `gap` apart: SPD, dense, and well separated so eigenvectors are defined to rounding.
std::vector<double> random_spd(int n, double gap, std::mt19937& rng) {
  std::normal_distribution<double> N(0.0, 1.0);
  std::uniform_real_distribution<double> U(0.0, 0.5);
  std::vector<double> q(size_t(n) * n);  // rows orthonormal
  for (auto& x : q) x = N(rng);
  for (int i = 0; i < n; ++i) {
    double* r = q.data() + size_t(i) * n;
    for (int pass = 0; pass < 2; ++pass)
      for (int k = 0; k < i; ++k) {
        const double* o = q.data() + size_t(k) * n;
        double d = 0.0;
        for (int t = 0; t < n; ++t) d += r[t] * o[t];
        for (int t = 0; t < n; ++t) r[t] -= d * o[t];
      }
    double nr = 0.0;
    for (int t = 0; t < n; ++t) nr += r[t] * r[t];
    nr = std::sqrt(nr);
    for (int t = 0; t < n; ++t) r[t] /= nr;
  }
  std::vector<double> w(n), a(size_t(n) * n, 0.0);
  for (int i = 0; i < n; ++i) w[i] = 1.0 + gap * (i + U(rng));
  std::shuffle(w.begin(), w.end(), rng);
  for (int i = 0; i < n; ++i)
    for (int j = i; j < n; ++j) {
      double s = 0.0;
      for (int k = 0; k < n; ++k) s += q[size_t(k) * n + i] * w[k] * q[size_t(k) * n + j];
      a[size_t(i) * n + j] = a[size_t(j) * n + i] = s;
    }
  return a;
}

// B B^T / n + 0.1 I with B Gaussian: an SPD matrix with an unprescribed (Marchenko-Pastur-like) spectrum.
std::vector<double> random_gram(int n, std::mt19937& rng) {
  std::normal_distribution<double> N(0.0, 1.0);
  std::vector<double> b(size_t(n) * n), a(size_t(n) * n);
  for (auto& x : b) x = N(rng);
  for (int i = 0; i < n; ++i)
    for (int j = i; j < n; ++j) {
      double s = 0.0;
      for (int k = 0; k < n; ++k) s += b[size_t(i) * n + k] * b[size_t(j) * n + k];
      a[size_t(i) * n + j] = a[size_t(j) * n + i] = s / n + (i == j ? 0.1 : 0.0);
    }
  return a;
}

// Properties every result must have: descending, A v_j = w_j v_j via the reconstruction A = V diag(w) V^T,
// V^T V = I, and the sign rule (largest-magnitude component positive).
void check_decomposition(const double* a, int n, const double* w, const double* v) {
  double amax = 0.0, rec = 0.0, orth = 0.0;
  for (int i = 0; i < n * n; ++i) amax = std::max(amax, std::fabs(a[i]));
  for (int j = 1; j < n; ++j) CHECK(w[j] <= w[j - 1]);
  for (int i = 0; i < n; ++i)
    for (int k = 0; k < n; ++k) {
      double s = 0.0, o = 0.0;
      for (int j = 0; j < n; ++j) {
        s += v[size_t(i) * n + j] * w[j] * v[size_t(k) * n + j];
        o += v[size_t(j) * n + i] * v[size_t(j) * n + k];
      }
      rec = std::max(rec, std::fabs(s - a[size_t(i) * n + k]));
      orth = std::max(orth, std::fabs(o - (i == k ? 1.0 : 0.0)));
    }
  CHECK(rec <= 1e-10 * amax);
  CHECK(orth <= 1e-10);
  for (int j = 0; j < n; ++j) {
    int imax = 0;
    for (int i = 1; i < n; ++i)
      if (std::fabs(v[size_t(i) * n + j]) > std::fabs(v[size_t(imax) * n + j])) imax = i;
    CHECK(v[size_t(imax) * n + j] > 0.0);
  }
}

}  // namespace

TEST_CASE("eigh_batched_cuda equals eigh_jacobi_cpu on random SPD matrices (n 64, 128; several batch sizes)") {
  if (!have_cusolver()) return;
  std::mt19937 rng(2024);
  for (int n : {64, 128})
    for (int batch : {1, 3, 16, 37}) {
      CAPTURE(n);
      CAPTURE(batch);
      const size_t nn = size_t(n) * n;
      std::vector<double> a(batch * nn);
      for (int b = 0; b < batch; ++b) {
        std::vector<double> m = random_spd(n, 0.5, rng);
        std::copy(m.begin(), m.end(), a.begin() + b * nn);
      }
      std::vector<double> w(size_t(batch) * n), v(batch * nn);
      eigh_batched_cuda(a.data(), n, batch, w.data(), v.data());
      double dw = 0.0, dv = 0.0;
      for (int b = 0; b < batch; ++b) {
        std::vector<double> work(a.begin() + b * nn, a.begin() + (b + 1) * nn), wc(n), vc(nn);
        eigh_jacobi_cpu(work.data(), n, wc.data(), vc.data());
        check_decomposition(a.data() + b * nn, n, w.data() + size_t(b) * n, v.data() + b * nn);
        for (int j = 0; j < n; ++j) dw = std::max(dw, std::fabs(w[size_t(b) * n + j] - wc[j]) / wc[0]);
        // same sign rule on both sides: the eigenvectors themselves agree, not just up to sign
        for (size_t i = 0; i < nn; ++i) dv = std::max(dv, std::fabs(v[b * nn + i] - vc[i]));
      }
      CHECK(dw < 1e-12);
      CHECK(dv < 1e-9);
    }
}

TEST_CASE("eigh_batched_cuda: Gram matrices (unprescribed spectrum) decompose exactly; eigenvalues match Jacobi") {
  if (!have_cusolver()) return;
  std::mt19937 rng(7);
  const int n = 128, batch = 5;
  const size_t nn = size_t(n) * n;
  std::vector<double> a(batch * nn);
  for (int b = 0; b < batch; ++b) {
    std::vector<double> m = random_gram(n, rng);
    std::copy(m.begin(), m.end(), a.begin() + b * nn);
  }
  std::vector<double> w(size_t(batch) * n), v(batch * nn);
  eigh_batched_cuda(a.data(), n, batch, w.data(), v.data());
  for (int b = 0; b < batch; ++b) {
    check_decomposition(a.data() + b * nn, n, w.data() + size_t(b) * n, v.data() + b * nn);
    std::vector<double> work(a.begin() + b * nn, a.begin() + (b + 1) * nn), wc(n), vc(nn);
    eigh_jacobi_cpu(work.data(), n, wc.data(), vc.data());
    for (int j = 0; j < n; ++j) CHECK(std::fabs(w[size_t(b) * n + j] - wc[j]) <= 1e-12 * wc[0]);
  }
}

TEST_CASE("eigh_batched_cuda: hand cases (diagonal matrix, 2x2 rotation) in one batch") {
  if (!have_cusolver()) return;
  // batch of two 4x4 matrices: diag(3, -1, 7, 0.5), and the 2x2 rotation R diag(3, 1) R^T (R by 30 degrees)
  // embedded top-left with diag(0.25, 0.125) below
  const double c = std::sqrt(3.0) / 2.0, s = 0.5;
  std::vector<double> a(32, 0.0);
  a[0] = 3.0, a[5] = -1.0, a[10] = 7.0, a[15] = 0.5;
  double* r = a.data() + 16;
  r[0] = 3 * c * c + s * s, r[1] = r[4] = (3 - 1) * c * s, r[5] = 3 * s * s + c * c, r[10] = 0.25, r[15] = 0.125;
  std::vector<double> w(8), v(32);
  eigh_batched_cuda(a.data(), 4, 2, w.data(), v.data());
  const double ew[8] = {7, 3, 0.5, -1, 3, 1, 0.25, 0.125};
  for (int j = 0; j < 8; ++j) CHECK(w[j] == doctest::Approx(ew[j]).epsilon(1e-13));
  // diagonal: eigenvector j is the unit vector of the j-th largest diagonal entry (indices 2, 0, 3, 1), +1
  const int unit[4] = {2, 0, 3, 1};
  for (int j = 0; j < 4; ++j)
    for (int i = 0; i < 4; ++i) CHECK(std::fabs(v[i * 4 + j] - (i == unit[j] ? 1.0 : 0.0)) < 1e-14);
  // rotation: (c, s) for 3 and (-s, c) for 1 (largest component positive), then e2, e3
  const double* vr = v.data() + 16;
  const double ev[16] = {c, -s, 0, 0, s, c, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
  for (int i = 0; i < 16; ++i) CHECK(std::fabs(vr[i] - ev[i]) < 1e-14);
}

TEST_CASE("eigh_batched_cuda: Llama-3-8B profile shape (512 matrices of 128), timed against the CPU Jacobi") {
  if (!have_cusolver()) return;
  std::mt19937 rng(99);
  const int n = 128, batch = 512;  // 32 layers x 8 KV heads x {K, V}
  const size_t nn = size_t(n) * n;
  std::vector<double> a(batch * nn);
  std::vector<double> proto = random_spd(n, 0.5, rng);
  for (int b = 0; b < batch; ++b)  // cheap variety: scaled and shifted copies of one SPD matrix
    for (size_t i = 0; i < nn; ++i) a[b * nn + i] = proto[i] * (1.0 + 0.01 * b) + (i % (n + 1) == 0 ? 0.1 * b : 0.0);
  std::vector<double> w(size_t(batch) * n), v(batch * nn);
  eigh_batched_cuda(a.data(), n, 8, w.data(), v.data());  // warm-up (context, cuSOLVER handle)
  const auto t0 = std::chrono::steady_clock::now();
  eigh_batched_cuda(a.data(), n, batch, w.data(), v.data());
  const double gpu_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<double> work(a.begin(), a.begin() + nn), wc(n), vc(nn);
  const auto t1 = std::chrono::steady_clock::now();
  eigh_jacobi_cpu(work.data(), n, wc.data(), vc.data());
  const double cpu_one_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  MESSAGE("eigh 512 x (128 x 128) fp64: GPU batched " << gpu_s * 1e3 << " ms (copies and host reordering "
          "included); CPU Jacobi " << cpu_one_s * 1e3 << " ms per matrix (x512 = " << cpu_one_s * 512e3
          << " ms on one core)");
  for (int b : {0, 255, 511}) check_decomposition(a.data() + b * nn, n, w.data() + size_t(b) * n, v.data() + b * nn);
  for (int j = 0; j < n; ++j) CHECK(std::fabs(w[j] - wc[j]) <= 1e-12 * wc[0]);
}

TEST_CASE("kv profiles of the demo model made with --device cuda equal the CPU ones (energy and score)") {
  if (!have_cusolver()) return;
  if (!llm_test::have_demo_model()) return;
  llm::Model m(llm_test::demo_model_path(), {.n_threads = 2});
  const Config& c = m.config();
  const int hd = c.head_dim;
  for (KVMetric metric : {KVMetric::energy, KVMetric::score}) {
    CAPTURE(kv_metric_name(metric));
    KVProfile pc = kv_profile_from_weights(c, m.weights(), m.thread_pool(), {}, metric, Device::cpu);
    KVProfile pg = kv_profile_from_weights(c, m.weights(), m.thread_pool(), {}, metric, Device::cuda);
    size_t compared = 0, total = 0;
    double worst_eig = 0.0, worst_vec = 0.0;
    for (int which = 0; which < 2; ++which) {
      const std::vector<float>& ec = which ? pc.v_eig : pc.k_eig;
      const std::vector<float>& eg = which ? pg.v_eig : pg.k_eig;
      const std::vector<float>& dc = which ? pc.v_basis : pc.k_basis;
      const std::vector<float>& dg = which ? pg.v_basis : pg.k_basis;
      for (size_t blk = 0; blk < size_t(c.n_layers) * c.n_kv_heads; ++blk) {
        const float* e = ec.data() + blk * hd;
        for (int j = 0; j < hd; ++j) {
          worst_eig = std::max(worst_eig, std::fabs(double(e[j]) - eg[blk * hd + j]) / std::fabs(double(e[0])));
          // eigenvectors are only defined where the eigenvalue is isolated: compare rows with a relative gap
          const double gap = std::min(j > 0 ? e[j - 1] - e[j] : INFINITY, j + 1 < hd ? e[j] - e[j + 1] : INFINITY);
          ++total;
          if (gap < 1e-4 * std::fabs(e[0])) continue;
          ++compared;
          for (int i = 0; i < hd; ++i) {
            const size_t k = blk * hd * hd + size_t(j) * hd + i;
            worst_vec = std::max(worst_vec, std::fabs(double(dc[k]) - dg[k]) / (1.0 + std::fabs(double(dc[k]))));
          }
        }
      }
    }
    MESSAGE("demo profile (" << kv_metric_name(metric) << "), cuda vs cpu: " << compared << " of " << total
            << " eigenvectors isolated and compared; max |eigenvalue diff| " << worst_eig
            << " (relative to the largest), max |basis diff| " << worst_vec);
    CHECK(worst_eig < 1e-5);
    CHECK(compared > total / 2);
    CHECK(worst_vec < 1e-3);
  }
}
