// Low-rank KV cache (issue 6): the Jacobi eigensolver, the --kv spec grammar and its errors, the rank policies,
// the low-rank attention kernel against "rebuild keys and values, full attention, then W_O", and on the demo
// model: full ranks equal the uncompressed engine, profiles round-trip and refuse another model.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

#include "engine/kv_lowrank.h"
#include "engine/kv_profile.h"
#include "engine/llm.h"
#include "engine/model.h"
#include "kernels/lowrank_cpu.h"
#include "kernels/ops_cpu.h"
#include "kernels/threadpool_cpu.h"
#include "loader/error.h"
#include "loader/safetensors.h"
#include "tests/test_util.h"

using namespace llm;

namespace {

// A random orthonormal basis (rows) of R^n: eigenvectors of a random symmetric matrix.
std::vector<float> random_basis_rows(int n, std::mt19937& rng) {
  std::normal_distribution<double> N(0.0, 1.0);
  std::vector<double> a(size_t(n) * n), ev(n), vec(size_t(n) * n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j <= i; ++j) a[size_t(i) * n + j] = a[size_t(j) * n + i] = N(rng);
  eigh_jacobi_cpu(a.data(), n, ev.data(), vec.data());
  std::vector<float> rows(size_t(n) * n);
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < n; ++i) rows[size_t(j) * n + i] = static_cast<float>(vec[size_t(i) * n + j]);
  return rows;
}

std::string tmp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("llm_test_kv_" + name)).string();
}

}  // namespace

TEST_CASE("eigh_jacobi: hand cases") {
  double a[4] = {2, 1, 1, 2}, ev[2], u[4];
  eigh_jacobi_cpu(a, 2, ev, u);
  CHECK(ev[0] == doctest::Approx(3.0));
  CHECK(ev[1] == doctest::Approx(1.0));
  const double s = 1.0 / std::sqrt(2.0);  // columns (1,1)/sqrt2 and (1,-1)/sqrt2, largest component positive
  CHECK(u[0] == doctest::Approx(s));
  CHECK(u[2] == doctest::Approx(s));
  CHECK(u[1] == doctest::Approx(s));
  CHECK(u[3] == doctest::Approx(-s));
  double d[9] = {1, 0, 0, 0, 5, 0, 0, 0, -2}, ev3[3], u3[9];  // diagonal, unsorted: sorted descending
  eigh_jacobi_cpu(d, 3, ev3, u3);
  CHECK(ev3[0] == 5.0);
  CHECK(ev3[1] == 1.0);
  CHECK(ev3[2] == -2.0);
  CHECK(u3[0 * 3 + 1] == 1.0);  // column 1 = e_0
  CHECK(u3[1 * 3 + 0] == 1.0);  // column 0 = e_1
  double ns[4] = {1, 2, 3, 4};
  CHECK_THROWS_WITH_AS(eigh_jacobi_cpu(ns, 2, ev, u), doctest::Contains("not symmetric"), Error);
  double nan[1] = {std::nan("")};
  CHECK_THROWS_WITH_AS(eigh_jacobi_cpu(nan, 1, ev, u), doctest::Contains("NaN"), Error);
}

TEST_CASE("eigh_jacobi: random SPD matrices: A U = U diag, U^T U = I, descending") {
  std::mt19937 rng(7);
  std::normal_distribution<double> N(0.0, 1.0);
  for (int n : {1, 3, 16, 64, 128}) {
    std::vector<double> b(size_t(n) * n), a(size_t(n) * n, 0.0);
    for (double& x : b) x = N(rng);
    for (int i = 0; i < n; ++i)  // A = B B^T + 0.1 I
      for (int j = 0; j < n; ++j) {
        double s = i == j ? 0.1 : 0.0;
        for (int k = 0; k < n; ++k) s += b[size_t(i) * n + k] * b[size_t(j) * n + k];
        a[size_t(i) * n + j] = s;
      }
    std::vector<double> work = a, ev(n), u(size_t(n) * n);
    eigh_jacobi_cpu(work.data(), n, ev.data(), u.data());
    double amax = 0.0, err_au = 0.0, err_ortho = 0.0;
    for (double x : a) amax = std::max(amax, std::fabs(x));
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) {
        double au = 0.0, utu = 0.0;
        for (int k = 0; k < n; ++k) {
          au += a[size_t(i) * n + k] * u[size_t(k) * n + j];
          utu += u[size_t(k) * n + i] * u[size_t(k) * n + j];
        }
        err_au = std::max(err_au, std::fabs(au - u[size_t(i) * n + j] * ev[j]));
        err_ortho = std::max(err_ortho, std::fabs(utu - (i == j ? 1.0 : 0.0)));
      }
    CHECK(err_au < 1e-10 * amax * n);
    CHECK(err_ortho < 1e-10 * n);
    for (int j = 1; j < n; ++j) CHECK(ev[j - 1] >= ev[j]);
    CHECK(ev[n - 1] > 0.0);
  }
}

TEST_CASE("kv spec: grammar, fractions of head_dim, defaults") {
  CHECK_FALSE(kv_spec_parse("full").lowrank);
  KVSpec s = kv_spec_parse("svd:k=32,v=32/64/128,policy=seed,basis=weights");
  CHECK(s.lowrank);
  KVRanks r = kv_spec_ranks(s, 128);
  CHECK(r.k == 32);
  CHECK(r.v_low == 32);
  CHECK(r.v_med == 64);
  CHECK(r.v_high == 128);
  r = kv_spec_ranks(kv_spec_parse("svd:k=1/4,v=d/4/d/2/d"), 64);  // the demo model's head_dim
  CHECK(r.k == 16);
  CHECK(r.v_low == 16);
  CHECK(r.v_med == 32);
  CHECK(r.v_high == 64);
  r = kv_spec_ranks(kv_spec_parse("svd"), 64);  // defaults: k=d/4, v=d/4/d/2/d, seed, weights
  CHECK(r.k == 16);
  CHECK(r.v_low == 16);
  CHECK(r.v_high == 64);
  s = kv_spec_parse("svd:k=3/8,v=1/2,policy=uniform,basis=calib");
  CHECK(s.policy == KVRankPolicy::uniform);
  CHECK(s.basis == KVBasis::calib);
  r = kv_spec_ranks(s, 64);
  CHECK(r.k == 24);
  CHECK(r.v_low == 32);
  CHECK(r.v_high == 32);
  CHECK(kv_spec_describe(s, r) == "svd:k=24,v=32,policy=uniform,basis=calib,metric=score");
  // window=A/B: a fraction of the session's context (kv_window_tokens resolves it), described as written
  s = kv_spec_parse("svd:k=1/4,window=1/4");
  CHECK(s.window == 1);
  CHECK(s.window_den == 4);
  CHECK(kv_window_tokens(s, 512) == 128);
  CHECK(kv_spec_describe(s, kv_spec_ranks(s, 64)) == "svd:k=16,v=16/32/64,policy=seed,basis=weights,metric=score,window=1/4");
  CHECK(kv_spec_parse("svd:window=1/1").window_den == 1);
}

TEST_CASE("kv spec: bad specs give clear errors") {
  auto ranks = [](const std::string& spec) { return kv_spec_ranks(kv_spec_parse(spec), 64); };
  CHECK_THROWS_WITH_AS(ranks("svd:k=65"), doctest::Contains("exceeds head_dim 64"), Error);
  CHECK_THROWS_WITH_AS(ranks("svd:k=0"), doctest::Contains("rank 0"), Error);
  CHECK_THROWS_WITH_AS(ranks("svd:k=16,v=8/200/64"), doctest::Contains("exceeds head_dim"), Error);
  CHECK_THROWS_WITH_AS(ranks("svd:k=1/3"), doctest::Contains("whole"), Error);
  CHECK_THROWS_WITH_AS(ranks("svd:v=64/32/16"), doctest::Contains("ascending"), Error);
  CHECK_THROWS_WITH_AS(kv_spec_parse("svd:policy=best"), doctest::Contains("unknown policy 'best'"), Error);
  CHECK_THROWS_WITH_AS(kv_spec_parse("svd:basis=random"), doctest::Contains("unknown basis"), Error);
  CHECK_THROWS_WITH_AS(kv_spec_parse("svd:metric=l2"), doctest::Contains("unknown metric 'l2'"), Error);
  CHECK(kv_spec_parse("svd:metric=energy").metric == KVMetric::energy);
  CHECK(kv_spec_parse("svd").metric == KVMetric::score);
  CHECK_THROWS_WITH_AS(kv_spec_parse("lowrank"), doctest::Contains("unknown cache kind"), Error);
  CHECK_THROWS_WITH_AS(kv_spec_parse("svd:k"), doctest::Contains("KEY=VALUE"), Error);
  CHECK_THROWS_WITH_AS(kv_spec_parse("svd:k=abc"), doctest::Contains("not a rank"), Error);
  for (const char* w : {"svd:window=5/4", "svd:window=0/4", "svd:window=1/0", "svd:window=1/", "svd:window=/4",
                        "svd:window=-1", "svd:window=1/2/3", "svd:window=70000"})
    CHECK_THROWS_WITH_AS(kv_spec_parse(w), doctest::Contains("fraction A/B of the context size in (0, 1]"), Error);
  CHECK_THROWS_WITH_AS(kv_spec_parse("svd:k=16/32/64"), doctest::Contains("k takes one rank"), Error);
  CHECK_THROWS_WITH_AS(kv_spec_parse("svd:k=16,k=32"), doctest::Contains("given twice"), Error);
  CHECK_THROWS_WITH_AS(kv_spec_parse("svd:q=16"), doctest::Contains("unknown key 'q'"), Error);
  CHECK_THROWS_WITH_AS(kv_spec_parse("svd:v=16/32/48/64"), doctest::Contains("one rank or three"), Error);
  CHECK_THROWS_WITH_AS(kv_spec_parse("svd:v=16/32/64,policy=uniform"), doctest::Contains("uniform takes one"), Error);
  CHECK_THROWS_WITH_AS(kv_spec_parse("svd:k=1/0"), doctest::Contains("division by zero"), Error);
}

TEST_CASE("kv spec: JSON config file") {
  const std::string p = tmp_path("config.json");
  {
    std::ofstream(p) << R"({"kv": "svd", "k": "1/4", "v": [16, "d/2", 64], "policy": "seed", "basis": "weights"})";
  }
  KVRanks r = kv_spec_ranks(kv_spec_from_json_file(p), 64);
  CHECK(r.k == 16);
  CHECK(r.v_med == 32);
  CHECK(r.v_high == 64);
  { std::ofstream(p) << R"({"kv": "svd", "rank": 3})"; }
  CHECK_THROWS_WITH_AS(kv_spec_from_json_file(p), doctest::Contains("unknown key \"rank\""), Error);
  { std::ofstream(p) << R"({"kv": "svd", "k": )"; }
  CHECK_THROWS_WITH_AS(kv_spec_from_json_file(p), doctest::Contains("not valid JSON"), Error);
  { std::ofstream(p) << R"({"kv": "full"})"; }
  CHECK_FALSE(kv_spec_from_json_file(p).lowrank);
  std::filesystem::remove(p);
  CHECK_THROWS_WITH_AS(kv_spec_from_json_file(p), doctest::Contains("cannot read"), Error);
}

TEST_CASE("rank policies: seed (prefill by position ratio, decode by step), uniform, importance") {
  const KVRanks r{16, 16, 32, 64};
  int step = 0;
  std::vector<int32_t> out(10);
  kv_policy_ranks(out.data(), KVRankPolicy::seed, r, 0, 10, step, {});
  // ratios 0, .1 low; .2, .3 medium; .4 .5 .6 high; .7 .8 medium (> .8 is low); .9 low
  CHECK(out == std::vector<int32_t>{16, 16, 32, 32, 64, 64, 64, 32, 32, 16});
  std::vector<int32_t> dec;
  for (int t = 0; t < 40; ++t) {
    int32_t x = 0;
    kv_policy_ranks(&x, KVRankPolicy::seed, r, 10 + t, 1, step, {});
    dec.push_back(x);
  }
  CHECK(dec[0] == 64);
  CHECK(dec[9] == 64);
  CHECK(dec[10] == 32);
  CHECK(dec[29] == 32);
  CHECK(dec[30] == 16);
  CHECK(dec[39] == 16);
  kv_policy_ranks(out.data(), KVRankPolicy::seed, r, 50, 10, step, {});  // a new prefill restarts the steps
  CHECK(step == 0);
  kv_policy_ranks(out.data(), KVRankPolicy::uniform, KVRanks{16, 32, 32, 32}, 0, 10, step, {});
  CHECK(std::all_of(out.begin(), out.end(), [](int32_t x) { return x == 32; }));
  CHECK_THROWS_WITH_AS(kv_policy_ranks(out.data(), KVRankPolicy::importance, r, 0, 10, step, {}),
                       doctest::Contains("importance policy needs token importance scores (issue 7)"), Error);
  std::vector<float> scores = {0.1f, 0.9f, 0.2f, 0.8f, 0.3f, 0.7f, 0.4f, 0.6f, 0.5f, 0.0f};
  kv_policy_ranks(out.data(), KVRankPolicy::importance, r, 0, 10, step, scores);
  // top 20% (0.9, 0.8) high, next 40% (0.7 .. 0.4) medium, rest low
  CHECK(out == std::vector<int32_t>{16, 64, 16, 64, 16, 32, 32, 32, 32, 16});
}

TEST_CASE("attention_lowrank: equals rebuild keys+values, full attention, then W_O; W_fused path; nesting") {
  std::mt19937 rng(11);
  std::normal_distribution<float> N(0.0f, 1.0f);
  const int n_heads = 4, n_kv_heads = 2, hd = 16, rk = 8, rv = 16, dim = 12, gs = n_heads / n_kv_heads;
  ThreadPool pool(2);
  std::vector<float> inv_freq(hd / 2);
  rope_inv_freq_cpu(inv_freq.data(), hd, 10000.0f, RopeScaling{});
  std::vector<float> uk, uv;  // (n_kv_heads, hd, hd) basis rows
  for (int g = 0; g < n_kv_heads; ++g) {
    auto bk = random_basis_rows(hd, rng), bv = random_basis_rows(hd, rng);
    uk.insert(uk.end(), bk.begin(), bk.end());
    uv.insert(uv.end(), bv.begin(), bv.end());
  }
  // nested truncation: c_v at rank r is the first r entries of the full-rank c_v, and U_r c_v,r is the
  // orthogonal projection of v onto the first r basis vectors (residual orthogonal to them)
  {
    std::vector<float> v(hd), c(hd), rec(hd, 0.0f);
    for (float& x : v) x = N(rng);
    for (int j = 0; j < hd; ++j) {
      c[j] = 0.0f;
      for (int d = 0; d < hd; ++d) c[j] += uv[size_t(j) * hd + d] * v[d];
    }
    const int r = 5;
    for (int j = 0; j < r; ++j)
      for (int d = 0; d < hd; ++d) rec[d] += c[j] * uv[size_t(j) * hd + d];
    for (int j = 0; j < r; ++j) {  // <v - proj, u_j> = 0
      float dot = 0.0f;
      for (int d = 0; d < hd; ++d) dot += (v[d] - rec[d]) * uv[size_t(j) * hd + d];
      CHECK(std::fabs(dot) < 1e-5f);
    }
    float full = 0.0f;  // at full rank the projection is v
    for (int j = 0; j < hd; ++j) full += c[j] * uv[size_t(j) * hd + 3];
    CHECK(full == doctest::Approx(v[3]).epsilon(1e-5));
  }
  // n_kv 75: more than one key tile and one query chunk; 600: one query chunk (1 or 20 queries) splits the keys
  // (lowrank_tasks kSplitKeys: 3 splits merged afterwards)
  for (int n_kv : {75, 600})
  for (RopeLayout layout : {RopeLayout::half_split, RopeLayout::interleaved})
    for (int n_q : {n_kv, 1, 40, 20}) {
      CAPTURE(n_kv);
      CAPTURE(n_q);
      // the cache
      std::vector<float> ck(size_t(n_kv_heads) * n_kv * rk);
      for (float& x : ck) x = N(rng);
      std::vector<int32_t> vrank(n_kv);
      std::vector<int64_t> voff(n_kv + 1, 0);
      for (int t = 0; t < n_kv; ++t) {
        vrank[t] = (t % 3 == 0) ? 4 : (t % 3 == 1) ? 8 : 16;
        voff[t + 1] = voff[t] + vrank[t];
      }
      const int64_t cv_stride = voff[n_kv] + 7;  // any stride >= the used length
      std::vector<float> cv(size_t(n_kv_heads) * cv_stride);
      for (float& x : cv) x = N(rng);
      std::vector<float> q(size_t(n_q) * n_heads * hd);
      for (float& x : q) x = N(rng);
      // reference: rebuild keys (then RoPE) and values, ordinary attention
      std::vector<float> kf(size_t(n_kv_heads) * n_kv * hd, 0.0f), vf(kf.size(), 0.0f);
      std::vector<int> pos(n_kv);
      for (int t = 0; t < n_kv; ++t) pos[t] = t;
      // attention sinks (n_q = 40 only): the first tokens' full keys replace the rebuilt ones
      const int n_sink = n_q == 40 ? 5 : 0;
      std::vector<float> ksink(size_t(n_kv_heads) * 6 * hd);  // stride 6 >= n_sink
      for (float& x : ksink) x = N(rng);
      for (int g = 0; g < n_kv_heads; ++g)
        for (int t = 0; t < n_kv; ++t) {
          float* k = kf.data() + (size_t(g) * n_kv + t) * hd;
          float* v = vf.data() + (size_t(g) * n_kv + t) * hd;
          if (t < n_sink)
            std::copy_n(ksink.data() + (size_t(g) * 6 + t) * hd, hd, k);
          else
            for (int j = 0; j < rk; ++j)
              for (int d = 0; d < hd; ++d) k[d] += ck[(size_t(g) * n_kv + t) * rk + j] * uk[(size_t(g) * hd + j) * hd + d];
          for (int j = 0; j < vrank[t]; ++j)
            for (int d = 0; d < hd; ++d) v[d] += cv[size_t(g) * cv_stride + voff[t] + j] * uv[(size_t(g) * hd + j) * hd + d];
        }
      for (int g = 0; g < n_kv_heads; ++g)
        rope_cpu(kf.data() + size_t(g) * n_kv * hd, pos.data(), n_kv, 1, hd, hd, inv_freq.data(), layout);
      std::vector<float> att(size_t(n_q) * n_heads * hd);
      attention_cpu(att.data(), q.data(), kf.data(), vf.data(), n_q, n_kv, n_heads, n_kv_heads, hd, n_kv);
      // the kernel: basis rows of U_K truncated to r_k per head
      std::vector<float> ukr(size_t(n_kv_heads) * rk * hd);
      for (int g = 0; g < n_kv_heads; ++g)
        std::copy_n(uk.data() + size_t(g) * hd * hd, rk * hd, ukr.data() + size_t(g) * rk * hd);
      LowRankAttentionArgs a;
      a.q = q.data();
      a.ck = ck.data();
      a.uk = ukr.data();
      a.cv = cv.data();
      a.voff = voff.data();
      a.vrank = vrank.data();
      a.ck_stride = n_kv;
      a.cv_stride = cv_stride;
      a.r_k = rk;
      a.r_vmax = rv;
      a.n_q = n_q;
      a.n_kv = n_kv;
      a.n_heads = n_heads;
      a.n_kv_heads = n_kv_heads;
      a.head_dim = hd;
      a.inv_freq = inv_freq.data();
      a.rope_layout = layout;
      a.k_sink = ksink.data();
      a.k_sink_stride = 6;
      a.n_sink = n_sink;
      std::vector<float> z(size_t(n_q) * n_heads * rv);
      attention_lowrank_cpu(z.data(), a, &pool);
      // rebuild-values-then-W_O vs W_fused z
      std::vector<float> wo(size_t(dim) * n_heads * hd);
      for (float& x : wo) x = N(rng);
      double max_err = 0.0, max_ref = 0.0;
      for (int i = 0; i < n_q; ++i)
        for (int o = 0; o < dim; ++o) {
          double ref = 0.0, fused = 0.0;
          for (int h = 0; h < n_heads; ++h) {
            const int g = h / gs;
            for (int d = 0; d < hd; ++d) ref += double(wo[size_t(o) * n_heads * hd + h * hd + d]) * att[(size_t(i) * n_heads + h) * hd + d];
            for (int j = 0; j < rv; ++j) {
              double wf = 0.0;  // W_fused[o, h, j] = sum_d W_O[o, h*hd + d] U_V,g[d, j]
              for (int d = 0; d < hd; ++d) wf += double(wo[size_t(o) * n_heads * hd + h * hd + d]) * uv[(size_t(g) * hd + j) * hd + d];
              fused += wf * z[(size_t(i) * n_heads + h) * rv + j];
            }
          }
          max_err = std::max(max_err, std::fabs(ref - fused));
          max_ref = std::max(max_ref, std::fabs(ref));
        }
      CHECK(max_err < 1e-4 * (1.0 + max_ref));
    }
}

TEST_CASE("kv_rope_average: hand case and the explicit average of R_D C R_D^T built with rope_cpu") {
  // one rotation pair, C_q = e_1 e_1^T, frequency pi/2 averaged over D = 0..3 (one full period): isotropic 0.5 I
  {
    const double C[4] = {1, 0, 0, 0};
    const float w = static_cast<float>(M_PI / 2);
    double M[4];
    kv_rope_average(C, 2, &w, RopeLayout::interleaved, 4, M);
    CHECK(M[0] == doctest::Approx(0.5));
    CHECK(M[3] == doctest::Approx(0.5));
    CHECK(std::fabs(M[1]) < 1e-7);
    CHECK(std::fabs(M[2]) < 1e-7);
    kv_rope_average(C, 2, &w, RopeLayout::interleaved, 1, M);  // D = 0 only: unchanged
    CHECK(M[0] == doctest::Approx(1.0));
    CHECK(std::fabs(M[3]) < 1e-12);
  }
  // a random C in both layouts: M = mean_D R_{-D}^T C R_{-D} = mean_D R_D C R_D^T, R_D's columns = rope_cpu of
  // the unit vectors at position D (so the sign convention is the engine's own)
  std::mt19937 rng(5);
  std::normal_distribution<double> N(0.0, 1.0);
  const int hd = 8, n_dist = 7;
  std::vector<float> inv(hd / 2);
  rope_inv_freq_cpu(inv.data(), hd, 10.0f, RopeScaling{});
  std::vector<double> C(size_t(hd) * hd);
  for (int i = 0; i < hd; ++i)
    for (int j = 0; j <= i; ++j) C[size_t(i) * hd + j] = C[size_t(j) * hd + i] = N(rng);
  for (RopeLayout layout : {RopeLayout::half_split, RopeLayout::interleaved}) {
    std::vector<double> ref(size_t(hd) * hd, 0.0), M(ref.size());
    for (int D = 0; D < n_dist; ++D) {
      std::vector<float> R(size_t(hd) * hd, 0.0f);  // row i = R_D e_i (so R_D[a][i] = R[i*hd + a])
      std::vector<int> pos(hd, D);
      for (int i = 0; i < hd; ++i) R[size_t(i) * hd + i] = 1.0f;
      rope_cpu(R.data(), pos.data(), hd, 1, hd, hd, inv.data(), layout);
      for (int a = 0; a < hd; ++a)
        for (int b = 0; b < hd; ++b) {
          double s = 0.0;  // (R C R^T)[a][b] = sum_ij R[a][i] C[i][j] R[b][j]
          for (int i = 0; i < hd; ++i)
            for (int j = 0; j < hd; ++j) s += double(R[size_t(i) * hd + a]) * C[size_t(i) * hd + j] * R[size_t(j) * hd + b];
          ref[size_t(a) * hd + b] += s / n_dist;
        }
    }
    kv_rope_average(C.data(), hd, inv.data(), layout, n_dist, M.data());
    for (size_t i = 0; i < M.size(); ++i) CHECK(M[i] == doctest::Approx(ref[i]).epsilon(1e-5));
  }
}

TEST_CASE("kv_basis_whitened: biorthogonal nested pair, optimal in the metric, energy case orthonormal") {
  std::mt19937 rng(9);
  std::normal_distribution<double> N(0.0, 1.0);
  const int hd = 12;
  auto spd = [&](double ridge) {
    std::vector<double> b(size_t(hd) * hd), a(size_t(hd) * hd, 0.0);
    for (double& x : b) x = N(rng);
    for (int i = 0; i < hd; ++i)
      for (int j = 0; j < hd; ++j) {
        double s = i == j ? ridge : 0.0;
        for (int k = 0; k < hd; ++k) s += b[size_t(i) * hd + k] * b[size_t(j) * hd + k];
        a[size_t(i) * hd + j] = s;
      }
    return a;
  };
  const std::vector<double> C = spd(0.1), M = spd(0.5);
  std::vector<float> down(size_t(hd) * hd), up(down.size()), eig(hd), edown(down.size()), eup(down.size()), eeig(hd);
  std::vector<double> work = C;
  kv_basis_whitened(work.data(), M.data(), hd, down.data(), up.data(), eig.data());
  work = C;
  kv_basis_whitened(work.data(), nullptr, hd, edown.data(), eup.data(), eeig.data());
  CHECK(edown == eup);
  double worst = 0.0, nonortho = 0.0;
  for (int i = 0; i < hd; ++i)
    for (int j = 0; j < hd; ++j) {
      double s = 0.0, o = 0.0;
      for (int d = 0; d < hd; ++d) {
        s += double(down[size_t(i) * hd + d]) * up[size_t(j) * hd + d];
        o += double(up[size_t(i) * hd + d]) * up[size_t(j) * hd + d];
      }
      worst = std::max(worst, std::fabs(s - (i == j ? 1.0 : 0.0)));
      if (i != j) nonortho = std::max(nonortho, std::fabs(o));
    }
  CHECK(worst < 1e-4);      // down_i . up_j = delta_ij: the rank-r prefix is a (skew) projection
  CHECK(nonortho > 1e-2);   // and the pair is genuinely not orthonormal
  // nested truncation equals the definition x_hat = up_r^T (down_r x), and its M-error tr(E^T M E C) is the tail
  // of S C S's spectrum, never above the orthonormal (energy) basis's M-error
  KVProfile p, pe;
  p.n_layers = pe.n_layers = 1;
  p.n_kv_heads = pe.n_kv_heads = 1;
  p.head_dim = pe.head_dim = hd;
  p.k_basis = down;
  p.k_up = up;
  pe.k_basis = edown;
  pe.k_up = eup;
  KVCalibration cal;
  cal.head_dim = hd;
  cal.n_kv_heads = 1;
  cal.kk = C;
  cal.vv = C;
  double tr_mc = 0.0;
  for (int i = 0; i < hd; ++i)
    for (int j = 0; j < hd; ++j) tr_mc += M[size_t(i) * hd + j] * C[size_t(j) * hd + i];
  const std::vector<double> metric = M;
  for (int r : {1, 4, 7, hd}) {
    std::vector<double> x(hd), xh(hd, 0.0);
    for (double& v : x) v = N(rng);
    for (int j = 0; j < r; ++j) {  // c_j = down_j . x, then sum_j c_j up_j
      double c = 0.0;
      for (int d = 0; d < hd; ++d) c += down[size_t(j) * hd + d] * x[d];
      for (int d = 0; d < hd; ++d) xh[d] += c * up[size_t(j) * hd + d];
    }
    std::vector<double> xf(hd, 0.0);  // the same from the full-rank code by zeroing c_j for j >= r
    std::vector<double> cfull(hd, 0.0);
    for (int j = 0; j < hd; ++j)
      for (int d = 0; d < hd; ++d) cfull[j] += down[size_t(j) * hd + d] * x[d];
    for (int j = 0; j < r; ++j)
      for (int d = 0; d < hd; ++d) xf[d] += cfull[j] * up[size_t(j) * hd + d];
    for (int d = 0; d < hd; ++d) CHECK(xh[d] == doctest::Approx(xf[d]).epsilon(1e-9));
    double tail = 0.0;
    for (int j = r; j < hd; ++j) tail += eig[j];
    const double err = kv_projection_error(p, cal, true, r, metric);
    CHECK(err * tr_mc == doctest::Approx(tail).epsilon(1e-2));  // S whitens M + eps I: approximately
    CHECK(err <= kv_projection_error(pe, cal, true, r, metric) + 1e-6);
    if (r == hd) {
      for (int d = 0; d < hd; ++d) CHECK(xh[d] == doctest::Approx(x[d]).epsilon(1e-4));
      CHECK(std::fabs(err) < 1e-6);
    }
  }
}

// ---- the demo model -------------------------------------------------------------------------------------------

TEST_CASE("low-rank cache on the demo model: full ranks equal the uncompressed engine (prefill and decode)") {
  if (!llm_test::have_demo_model()) return;
  llm::Model full(llm_test::demo_model_path(), {.n_threads = 2});
  llm::Model lr(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:k=d,v=d,policy=uniform"});
  CHECK(lr.kv_description() == "svd:k=64,v=64,policy=uniform,basis=weights,metric=score");
  const std::vector<int> toks = full.tokenize("The quick brown fox jumps over the lazy dog. Then it ran home", true);
  llm::Session a(full, {.n_ctx = 64}), b(lr, {.n_ctx = 64});
  const std::vector<float> la = a.feed_all_logits(toks);
  const std::vector<float> lb = b.feed_all_logits(toks);
  REQUIRE(la.size() == lb.size());
  double max_diff = 0.0, max_abs = 0.0;
  for (size_t i = 0; i < la.size(); ++i) {
    max_diff = std::max(max_diff, double(std::fabs(la[i] - lb[i])));
    max_abs = std::max(max_abs, double(std::fabs(la[i])));
  }
  CHECK(max_diff < 2e-3 * max_abs);
  // decode: greedy tokens and their logits stay equal
  llm::GenerateOptions g;
  g.max_tokens = 6;
  g.stop_at_eos = false;
  auto ra = a.generate(g), rb = b.generate(g);
  CHECK(ra.tokens == rb.tokens);
  a.feed({ra.tokens.back()});
  b.feed({rb.tokens.back()});
  const int V = a.vocab_size();
  double dd = 0.0;
  for (int i = 0; i < V; ++i) dd = std::max(dd, double(std::fabs(a.logits()[i] - b.logits()[i])));
  CHECK(dd < 2e-3 * max_abs);
  // the orthonormal (energy) bases at full rank too
  llm::Model lre(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:k=d,v=d,policy=uniform,metric=energy"});
  CHECK(lre.kv_description() == "svd:k=64,v=64,policy=uniform,basis=weights,metric=energy");
  llm::Session e(lre, {.n_ctx = 64});
  const std::vector<float> le = e.feed_all_logits(toks);
  double max_de = 0.0;
  for (size_t i = 0; i < la.size(); ++i) max_de = std::max(max_de, double(std::fabs(la[i] - le[i])));
  CHECK(max_de < 2e-3 * max_abs);
  // the compressed cache at rank d/4 keys + seed values holds < 1/2.5 of the full cache's bytes
  llm::Model small(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:k=1/4,v=d/4/d/2/d,policy=seed"});
  llm::Session c(small, {.n_ctx = 64});
  c.feed(toks);
  CHECK(c.kv_cache_bytes() * 2.5 <= a.kv_cache_bytes() * double(toks.size()) / a.n_past() + 1);
  // sinks=4: the first 4 tokens' full keys are kept and counted; with sinks at full ranks nothing changes
  llm::Model sk(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:k=1/4,v=d/4/d/2/d,policy=seed,sinks=4"});
  CHECK(sk.kv_description() == "svd:k=16,v=16/32/64,policy=seed,basis=weights,metric=score,sinks=4");
  llm::Session cs(sk, {.n_ctx = 64});
  cs.feed(toks);
  CHECK(cs.kv_cache_bytes() == c.kv_cache_bytes() + size_t(4) * 64 * 30 * 3 * sizeof(float));
  llm::Model skf(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:k=d,v=d,policy=uniform,sinks=3"});
  llm::Session fs(skf, {.n_ctx = 64});
  const std::vector<float> lf = fs.feed_all_logits(toks);
  double max_ds = 0.0;
  for (size_t i = 0; i < la.size(); ++i) max_ds = std::max(max_ds, double(std::fabs(la[i] - lf[i])));
  CHECK(max_ds < 2e-3 * max_abs);
  CHECK_THROWS_WITH_AS(llm::Model(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:sinks=x"}),
                       doctest::Contains("sinks=x"), Error);
  CHECK_THROWS_WITH_AS(llm::Model(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:k=65"}),
                       doctest::Contains("exceeds head_dim 64"), Error);
  llm::Model imp(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:policy=importance"});
  llm::Session si(imp, {.n_ctx = 64});
  si.feed(toks);  // issue 7's unified policy: the prefill computes the scores itself
  CHECK(si.n_past() == static_cast<int>(toks.size()));
  si.reset();
  si.set_token_scores(std::vector<float>(toks.size(), 1.0f));  // the hook still works (and replaces them)
  si.feed(toks);
  CHECK(si.n_past() == static_cast<int>(toks.size()));
  si.reset();
  si.set_token_scores(std::vector<float>(3, 1.0f));
  CHECK_THROWS_WITH_AS(si.feed(toks), doctest::Contains("3 scores given"), Error);
}

TEST_CASE("kv profiles on the demo model: save/load, another model refused, calib beats weights on its data") {
  if (!llm_test::have_demo_model()) return;
  llm::Model m(llm_test::demo_model_path(), {.n_threads = 2});
  const Config& c = m.config();
  KVProfile p = kv_profile_from_weights(c, m.weights(), m.thread_pool());
  // orthonormal rows
  const float* U = p.k_rows(3, 1);
  double worst = 0.0;
  for (int i = 0; i < c.head_dim; ++i)
    for (int j = 0; j < c.head_dim; ++j) {
      double s = 0.0;
      for (int d = 0; d < c.head_dim; ++d) s += double(U[i * c.head_dim + d]) * U[j * c.head_dim + d];
      worst = std::max(worst, std::fabs(s - (i == j ? 1.0 : 0.0)));
    }
  CHECK(worst < 1e-5);
  const std::string path = tmp_path("profile.safetensors");
  kv_profile_save(p, path);
  KVProfile q = kv_profile_load(path);
  CHECK(q.k_basis == p.k_basis);
  CHECK(q.v_eig == p.v_eig);
  CHECK_NOTHROW(kv_profile_check(q, c, m.weights(), path));
  llm::Model withp(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:k=1/4", .kv_profile = path});
  CHECK(withp.kv_description() == "svd:k=16,v=16/32/64,policy=seed,basis=weights,metric=energy");
  CHECK_THROWS_WITH_AS(llm::Model(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:metric=score", .kv_profile = path}),
                       doctest::Contains("has metric energy"), Error);
  {  // a version-1 profile (no up matrices, no metric) still loads: up = down, energy
    const std::vector<int64_t> bshape = {p.n_layers, p.n_kv_heads, p.head_dim, p.head_dim};
    const std::vector<int64_t> eshape = {p.n_layers, p.n_kv_heads, p.head_dim};
    const std::string v1 = tmp_path("profile_v1.safetensors");
    safetensors_write(v1,
                      {{"k_basis", GGMLType::F32, bshape, p.k_basis.data()},
                       {"v_basis", GGMLType::F32, bshape, p.v_basis.data()},
                       {"k_eigenvalues", GGMLType::F32, eshape, p.k_eig.data()},
                       {"v_eigenvalues", GGMLType::F32, eshape, p.v_eig.data()}},
                      {{"format", "llm-kv-profile"}, {"version", "1"}, {"basis", "weights"}, {"arch", p.arch},
                       {"n_layers", std::to_string(p.n_layers)}, {"n_kv_heads", std::to_string(p.n_kv_heads)},
                       {"head_dim", std::to_string(p.head_dim)}, {"dim", std::to_string(p.dim)},
                       {"model_hash", p.model_hash}});
    KVProfile old = kv_profile_load(v1);
    CHECK(old.metric == KVMetric::energy);
    CHECK(old.k_up == p.k_basis);
    CHECK(old.v_up == p.v_basis);
    std::filesystem::remove(v1);
  }
  CHECK_THROWS_WITH_AS(llm::Model(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:basis=calib", .kv_profile = path}),
                       doctest::Contains("basis"), Error);
  p.model_hash = "0123456789abcdef";  // same shapes, other weights
  kv_profile_save(p, path);
  CHECK_THROWS_WITH_AS(llm::Model(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd", .kv_profile = path}),
                       doctest::Contains("another model"), Error);
  KVProfile two = q;  // another shape: 2 layers
  two.n_layers = 2;
  const size_t nb = size_t(2) * two.n_kv_heads;
  two.k_basis.resize(nb * two.head_dim * two.head_dim);
  two.v_basis.resize(nb * two.head_dim * two.head_dim);
  two.k_up.resize(nb * two.head_dim * two.head_dim);
  two.v_up.resize(nb * two.head_dim * two.head_dim);
  two.k_eig.resize(nb * two.head_dim);
  two.v_eig.resize(nb * two.head_dim);
  kv_profile_save(two, path);
  CHECK_THROWS_WITH_AS(kv_profile_check(kv_profile_load(path), c, m.weights(), path),
                       doctest::Contains("made for another model"), Error);
  std::filesystem::remove(path);
  CHECK_THROWS_WITH_AS(llm::Model(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:basis=calib"}),
                       doctest::Contains("llm compress --basis calib"), Error);
  // calibration on a short text: its eigenbasis captures at least as much of its own keys as any basis
  const std::vector<int> toks =
      m.tokenize("Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing "
                 "to do: once or twice she had peeped into the book her sister was reading.", true);
  KVCalibration cal = kv_calibration_collect(m, toks, 32);
  CHECK(cal.count == static_cast<int64_t>(toks.size()));
  KVProfile pc = kv_profile_from_calibration(c, m.weights(), cal);
  for (int r : {8, 16, 32}) {
    CHECK(kv_projection_error(pc, cal, true, r) <= kv_projection_error(p, cal, true, r) + 1e-9);
    CHECK(kv_projection_error(pc, cal, false, r) <= kv_projection_error(p, cal, false, r) + 1e-9);
  }
  CHECK(kv_projection_error(pc, cal, true, c.head_dim) == doctest::Approx(0.0).epsilon(1e-6));
  // the score metric: on its own data the score-aware calib basis has a lower score error (q.k under the
  // RoPE-averaged query moment; values after W_O) than the orthonormal one, and is exact at full rank
  KVProfile ps = kv_profile_from_calibration(c, m.weights(), cal, KVMetric::score);
  CHECK(ps.metric == KVMetric::score);
  const std::vector<double> mk = kv_key_metric(c, cal.qq, cal.n_ctx);
  const std::vector<double> mv = kv_value_metric(c, m.weights(), m.thread_pool());
  for (int r : {8, 16, 32}) {
    CHECK(kv_projection_error(ps, cal, true, r, mk) < kv_projection_error(pc, cal, true, r, mk));
    CHECK(kv_projection_error(ps, cal, false, r, mv) < kv_projection_error(pc, cal, false, r, mv));
  }
  CHECK(std::fabs(kv_projection_error(ps, cal, true, c.head_dim, mk)) < 1e-5);
  const std::string spath = tmp_path("profile_score.safetensors");
  kv_profile_save(ps, spath);
  KVProfile ps2 = kv_profile_load(spath);
  CHECK(ps2.metric == KVMetric::score);
  CHECK(ps2.k_up == ps.k_up);
  CHECK(ps2.v_up == ps.v_up);
  CHECK(ps2.calib_ctx == 32);
  std::filesystem::remove(spath);
}
