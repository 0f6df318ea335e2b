// The CPU ops of kernels/ops_cpu.h against naive double-precision references written here from the maths
// (not from the ops' code), on seeded random data over several shapes, plus hand-computable cases.
// Tolerances: fp32 ops against a double reference agree to ~1e-6 relative per accumulated term; we allow
// 1e-4 * (1 + |ref|) for sums of up to a few thousand terms.
#include <atomic>
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <thread>
#include <tuple>
#include <vector>

#include "kernels/ops_cpu.h"
#include "kernels/threadpool_cpu.h"
#include "loader/error.h"
#include "loader/ggml_quants.h"
#include "test_util.h"

using namespace llm;
using llm_test::randn;

namespace {

void put16(uint8_t* p, float f) {
  uint16_t h = f32_to_fp16(f);
  std::memcpy(p, &h, 2);
}

// Random weights of a block type, built block by block from the GGML layouts.
std::vector<uint8_t> random_quant(GGMLType t, int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> sc(0.001f, 0.05f);
  const size_t rb = ggml_row_bytes(t, cols);
  std::vector<uint8_t> out(rb * rows);
  const int64_t nb = cols / 32;
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* row = out.data() + r * rb;
    if (t == GGMLType::F32) {
      auto v = randn(cols, seed + r);
      std::memcpy(row, v.data(), cols * 4);
      continue;
    }
    if (t == GGMLType::F16) {
      auto v = randn(cols, seed + r);
      for (int64_t i = 0; i < cols; ++i) put16(row + 2 * i, v[i]);
      continue;
    }
    const int bb = static_cast<int>(ggml_type_traits(t).block_bytes);
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* blk = row + b * bb;
      for (int i = 0; i < bb; ++i) blk[i] = static_cast<uint8_t>(byte(g));
      put16(blk, sc(g));
      if (t == GGMLType::Q4_1) put16(blk + 2, -sc(g) * 8);
    }
  }
  return out;
}

QMatrix qm(GGMLType t, const std::vector<uint8_t>& data, int64_t rows, int64_t cols) {
  return QMatrix{t, data.data(), rows, cols, ggml_row_bytes(t, cols)};
}

bool close(double got, double ref, double tol = 1e-4) { return std::fabs(got - ref) <= tol * (1.0 + std::fabs(ref)); }

}  // namespace

TEST_CASE("rmsnorm: hand-computed row and random rows") {
  // x = (3, 4): mean square 12.5, scale 1/sqrt(12.5 + 0) -> (0.848528, 1.131371) times w = (1, 2)
  float x[2] = {3, 4}, w[2] = {1, 2}, out[2];
  rmsnorm_cpu(out, x, w, 1, 2, 0.0f);
  CHECK(out[0] == doctest::Approx(0.8485281).epsilon(1e-6));
  CHECK(out[1] == doctest::Approx(2.2627417).epsilon(1e-6));
  ThreadPool pool(2);
  for (int dim : {7, 64, 576}) {
    const int n = 9;
    auto xs = randn(size_t(n) * dim, dim), ws = randn(dim, dim + 1);
    std::vector<float> o(xs.size());
    rmsnorm_cpu(o.data(), xs.data(), ws.data(), n, dim, 1e-5f, &pool);
    for (int i = 0; i < n; ++i) {
      double ss = 0;
      for (int j = 0; j < dim; ++j) ss += double(xs[i * dim + j]) * xs[i * dim + j];
      double s = 1.0 / std::sqrt(ss / dim + 1e-5);
      for (int j = 0; j < dim; ++j) CHECK(close(o[i * dim + j], xs[i * dim + j] * s * ws[j], 1e-5));
    }
  }
}

TEST_CASE("rope table: rope_table_apply_cpu rotates as rope_cpu does, bit for bit, at any position") {
  RopeScaling l3;  // Llama-3.1's scaled frequencies, head_dim 128; and a plain head_dim 64
  l3.type = RopeScaling::Type::llama3;
  l3.factor = 8, l3.low_freq_factor = 1, l3.high_freq_factor = 4, l3.original_max_position = 8192;
  for (const auto& [hd, theta, sc] : {std::tuple{128, 500000.0f, l3}, std::tuple{64, 10000.0f, RopeScaling{}}}) {
    std::vector<float> f(hd / 2);
    rope_inv_freq_cpu(f.data(), hd, theta, sc);
    const std::vector<int> pos = {0, 1, 7, 300, 4095, 100000, 131071, 2};
    const int n_pos = 131072;
    std::vector<float> cs(size_t(n_pos) * hd, -9.0f);
    rope_table_cpu(cs.data(), 0, 4096, hd, f.data());  // in two pieces, as the session grows it
    rope_table_cpu(cs.data(), 4096, n_pos, hd, f.data());
    for (RopeLayout layout : {RopeLayout::half_split, RopeLayout::interleaved}) {
      const auto x = randn(pos.size() * hd, 5);
      std::vector<float> a = x, b = x;
      rope_cpu(a.data(), pos.data(), int(pos.size()), 1, hd, hd, f.data(), layout);
      rope_table_apply_cpu(b.data(), pos.data(), int(pos.size()), hd, hd, cs.data(), layout);
      CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
      CHECK(a != x);
    }
  }
}

TEST_CASE("rope: frequencies, llama3 scaling, both layouts agree up to the pairing permutation") {
  RopeScaling none;
  std::vector<float> f(32);
  rope_inv_freq_cpu(f.data(), 64, 10000.0f, none);
  CHECK(f[0] == 1.0f);
  CHECK(f[1] == doctest::Approx(std::pow(10000.0, -2.0 / 64)).epsilon(1e-6));
  // Llama-3.1: theta 500000, factor 8, low 1, high 4, original 8192, head_dim 128.
  RopeScaling l3;
  l3.type = RopeScaling::Type::llama3;
  l3.factor = 8;
  l3.low_freq_factor = 1;
  l3.high_freq_factor = 4;
  l3.original_max_position = 8192;
  std::vector<float> a(64), b(64);
  rope_inv_freq_cpu(a.data(), 128, 500000.0f, none);
  rope_inv_freq_cpu(b.data(), 128, 500000.0f, l3);
  int scaled = 0, kept = 0, smooth = 0;
  for (int j = 0; j < 64; ++j) {
    double wl = 2 * M_PI / a[j];
    if (wl < 8192.0 / 4) {
      CHECK(b[j] == a[j]);
      ++kept;
    } else if (wl > 8192.0) {
      CHECK(b[j] == doctest::Approx(a[j] / 8).epsilon(1e-6));
      ++scaled;
    } else {
      double s = (8192.0 / wl - 1) / (4 - 1);
      CHECK(b[j] == doctest::Approx((1 - s) * a[j] / 8 + s * a[j]).epsilon(1e-5));
      ++smooth;
    }
  }
  CHECK(kept > 0);
  CHECK(scaled > 0);
  CHECK(smooth > 0);

  // Hand case: head_dim 2, pos 1, inv_freq 1 rotates (1, 0) by 1 rad.
  float v[2] = {1, 0}, one = 1.0f;
  int pos1 = 1;
  rope_cpu(v, &pos1, 1, 1, 2, 2, &one, RopeLayout::interleaved);
  CHECK(v[0] == doctest::Approx(std::cos(1.0)));
  CHECK(v[1] == doctest::Approx(std::sin(1.0)));

  // interleaved on a vector permuted (2j <- j, 2j+1 <- j+half) equals half_split on the original, permuted
  const int hd = 64, heads = 3, n = 5, half = hd / 2;
  auto x = randn(size_t(n) * heads * hd, 42);
  std::vector<float> y(x.size());
  for (int i = 0; i < n * heads; ++i)
    for (int j = 0; j < half; ++j) {
      y[i * hd + 2 * j] = x[i * hd + j];
      y[i * hd + 2 * j + 1] = x[i * hd + j + half];
    }
  int pos[n] = {0, 1, 7, 100, 4000};
  rope_cpu(x.data(), pos, n, heads, hd, heads * hd, f.data(), RopeLayout::half_split);
  ThreadPool pool(2);
  rope_cpu(y.data(), pos, n, heads, hd, heads * hd, f.data(), RopeLayout::interleaved, &pool);
  for (int i = 0; i < n * heads; ++i)
    for (int j = 0; j < half; ++j) {
      CHECK(y[i * hd + 2 * j] == x[i * hd + j]);
      CHECK(y[i * hd + 2 * j + 1] == x[i * hd + j + half]);
    }
}

// Naive causal GQA attention in double.
static std::vector<double> attention_ref(const std::vector<float>& q, const std::vector<float>& k,
                                         const std::vector<float>& v, int n_q, int n_kv, int H, int G, int d,
                                         int stride) {
  std::vector<double> out(size_t(n_q) * H * d, 0.0);
  for (int i = 0; i < n_q; ++i)
    for (int h = 0; h < H; ++h) {
      int g = h / (H / G), last = n_kv - n_q + i;
      std::vector<double> s(last + 1);
      double mx = -1e300, sum = 0;
      for (int j = 0; j <= last; ++j) {
        double acc = 0;
        for (int e = 0; e < d; ++e) acc += double(q[(i * H + h) * d + e]) * k[(size_t(g) * stride + j) * d + e];
        s[j] = acc / std::sqrt(double(d));
        mx = std::max(mx, s[j]);
      }
      for (auto& x : s) sum += (x = std::exp(x - mx));
      for (int j = 0; j <= last; ++j)
        for (int e = 0; e < d; ++e) out[(i * H + h) * d + e] += s[j] / sum * v[(size_t(g) * stride + j) * d + e];
    }
  return out;
}

TEST_CASE("attention: causal GQA, prefill blocks and decode, against a double reference") {
  ThreadPool pool(2);
  struct Shape { int H, G, d, n_q, n_kv, stride; };
  for (Shape s : {Shape{9, 3, 64, 7, 7, 16}, Shape{9, 3, 64, 1, 33, 40}, Shape{4, 4, 16, 5, 12, 12},
                  Shape{8, 1, 32, 3, 3, 3}}) {
    auto q = randn(size_t(s.n_q) * s.H * s.d, 1 + s.H);
    auto k = randn(size_t(s.G) * s.stride * s.d, 2 + s.d);
    auto v = randn(size_t(s.G) * s.stride * s.d, 3 + s.n_kv);
    std::vector<float> out(q.size());
    attention_cpu(out.data(), q.data(), k.data(), v.data(), s.n_q, s.n_kv, s.H, s.G, s.d, s.stride, &pool);
    auto ref = attention_ref(q, k, v, s.n_q, s.n_kv, s.H, s.G, s.d, s.stride);
    double err = 0;
    for (size_t i = 0; i < out.size(); ++i) err = std::max(err, std::fabs(out[i] - ref[i]));
    CHECK(err < 1e-5);
  }
  // hand case: one query, two keys with equal scores -> the mean of the two values
  float q1[2] = {0, 0}, k2[4] = {1, 0, 0, 1}, v2[4] = {1, 2, 3, 4}, o[2];
  attention_cpu(o, q1, k2, v2, 1, 2, 1, 1, 2, 2);
  CHECK(o[0] == doctest::Approx(2.0));
  CHECK(o[1] == doctest::Approx(3.0));
}

TEST_CASE("matmul: quantised weights (fused decode GEMV and tiled prefill) against dequantize_row") {
  ThreadPool pool(2);
  for (GGMLType t : {GGMLType::F32, GGMLType::F16, GGMLType::Q4_0, GGMLType::Q4_1, GGMLType::Q8_0,
                     GGMLType::Q5_0}) {
    for (auto shape : {std::pair<int64_t, int64_t>{37, 64}, {17, 576}, {5, 1536}}) {
      const int64_t rows = shape.first, cols = shape.second;  // not a structured binding: INFO captures them
      if (t == GGMLType::Q5_0 && cols % 32) continue;
      auto data = random_quant(t, rows, cols, rows * 131 + cols);
      QMatrix w = qm(t, data, rows, cols);
      std::vector<float> deq(size_t(rows) * cols);
      for (int64_t r = 0; r < rows; ++r) dequantize_row(t, data.data() + r * w.row_bytes, deq.data() + r * cols, cols);
      for (int n : {1, 6}) {
        auto x = randn(size_t(n) * cols, n + cols);
        std::vector<float> out(size_t(n) * rows), out1(size_t(n) * rows);
        matmul_cpu(out.data(), x.data(), w, n, &pool);
        matmul_cpu(out1.data(), x.data(), w, n, nullptr);
        for (int i = 0; i < n; ++i)
          for (int64_t r = 0; r < rows; ++r) {
            double ref = 0, mag = 0;
            for (int64_t c = 0; c < cols; ++c) {
              ref += double(deq[r * cols + c]) * x[i * cols + c];
              mag += std::fabs(double(deq[r * cols + c]) * x[i * cols + c]);
            }
            INFO(ggml_type_name(t) << " rows " << rows << " cols " << cols << " n " << n);
            CHECK(std::fabs(out[i * rows + r] - ref) <= 1e-5 * mag + 1e-6);
            CHECK(out1[i * rows + r] == out[i * rows + r]);  // threads change nothing
            if (n == 1) CHECK(matrow_dot_cpu(w, r, x.data()) == doctest::Approx(out[r]).epsilon(1e-5));
          }
      }
    }
  }
}

TEST_CASE("embedding: rows dequantised, bad ids rejected") {
  auto data = random_quant(GGMLType::Q8_0, 10, 64, 9);
  QMatrix w = qm(GGMLType::Q8_0, data, 10, 64);
  std::vector<float> out(2 * 64), ref(64);
  int ids[2] = {3, 9};
  embedding_cpu(out.data(), ids, 2, w);
  dequantize_row(GGMLType::Q8_0, data.data() + 9 * w.row_bytes, ref.data(), 64);
  for (int i = 0; i < 64; ++i) CHECK(out[64 + i] == ref[i]);
  int bad = 10;
  CHECK_THROWS_AS(embedding_cpu(out.data(), &bad, 1, w), llm::Error);
}

TEST_CASE("swiglu, softmax, argmax, sample_probs") {
  float g[3] = {0, 1, -2}, u[3] = {5, 2, 1}, o[3];
  swiglu_cpu(o, g, u, 3);
  CHECK(o[0] == 0.0f);
  CHECK(o[1] == doctest::Approx(2.0 / (1 + std::exp(-1.0))));
  CHECK(o[2] == doctest::Approx(-2.0 / (1 + std::exp(2.0))));
  float s[3] = {1000, 1000, 1000 - std::log(2.0f)};  // large values: must not overflow
  softmax_cpu(s, 3);
  CHECK(s[0] == doctest::Approx(0.4));
  CHECK(s[2] == doctest::Approx(0.2));
  float a[4] = {1, 5, 5, 2};
  CHECK(argmax_cpu(a, 4) == 1);
  float p[4] = {0, 0.25f, 0, 0.75f};
  CHECK(sample_probs_cpu(p, 4, 0.0f) == 1);
  CHECK(sample_probs_cpu(p, 4, 0.2f) == 1);
  CHECK(sample_probs_cpu(p, 4, 0.3f) == 3);
  CHECK(sample_probs_cpu(p, 4, 0.9999f) == 3);
}

TEST_CASE("thread pools: two pools used concurrently give the single-threaded results") {
  auto data = random_quant(GGMLType::Q4_1, 256, 576, 5);
  QMatrix w = qm(GGMLType::Q4_1, data, 256, 576);
  auto x = randn(576 * 3, 6);
  std::vector<float> ref(256 * 3);
  matmul_cpu(ref.data(), x.data(), w, 3, nullptr);
  ThreadPool p1(2), p2(3);
  std::vector<float> o1(ref.size()), o2(ref.size());
  bool ok1 = true, ok2 = true;
  std::thread t1([&] {
    for (int it = 0; it < 50; ++it) {
      matmul_cpu(o1.data(), x.data(), w, 3, &p1);
      ok1 = ok1 && o1 == ref;
    }
  });
  std::thread t2([&] {
    for (int it = 0; it < 50; ++it) {
      matmul_cpu(o2.data(), x.data(), w, 3, &p2);
      ok2 = ok2 && o2 == ref;
    }
  });
  t1.join();
  t2.join();
  CHECK(ok1);
  CHECK(ok2);
}

// Back-to-back short jobs with more threads than chunks: the pattern of a decode step (many small ops). A worker
// still holding the previous job's exhausted claim once could take a chunk of the next job before it was
// published (kernels/threadpool_cpu.cpp, run()); with 16 threads on the GPU machine that crashed matmul_cpu. On
// 2 cores the window is rarely hit, so this test mostly guards the contract: each chunk exactly once, all done
// when run returns.
TEST_CASE("thread pool: back-to-back short jobs run every chunk exactly once, all finished when run returns") {
  for (int threads : {3, 16}) {
    CAPTURE(threads);
    ThreadPool pool(threads);
    long wrong = 0;
    for (int job = 0; job < 20000; ++job) {
      const int n = 2 + job % 9;
      std::atomic<int> hits[10] = {};
      std::atomic<int> outside{0};
      pool.run(n, [&](int64_t c) {
        if (c < 0 || c >= n)
          outside.fetch_add(1);
        else
          hits[c].fetch_add(1);
      });
      for (int c = 0; c < n; ++c) wrong += hits[c].load() != 1;
      wrong += outside.load();
    }
    CHECK(wrong == 0);
  }
}

TEST_CASE("matmul_group: equals separate matmuls (decode and prefill)") {
  ThreadPool pool(2);
  auto a = random_quant(GGMLType::Q4_1, 37, 64, 1), b = random_quant(GGMLType::Q8_0, 9, 64, 2),
       c = random_quant(GGMLType::Q4_0, 20, 64, 3);
  QMatrix wa = qm(GGMLType::Q4_1, a, 37, 64), wb = qm(GGMLType::Q8_0, b, 9, 64), wc = qm(GGMLType::Q4_0, c, 20, 64);
  for (int n : {1, 3}) {
    auto x = randn(size_t(n) * 64, 11);
    std::vector<float> oa(n * 37), ob(n * 9), oc(n * 20), ra(n * 37), rb(n * 9), rc(n * 20);
    float* outs[3] = {oa.data(), ob.data(), oc.data()};
    const QMatrix* ws[3] = {&wa, &wb, &wc};
    matmul_group_cpu(outs, ws, 3, x.data(), n, &pool);
    matmul_cpu(ra.data(), x.data(), wa, n);
    matmul_cpu(rb.data(), x.data(), wb, n);
    matmul_cpu(rc.data(), x.data(), wc, n);
    CHECK(oa == ra);
    CHECK(ob == rb);
    CHECK(oc == rc);
  }
}
