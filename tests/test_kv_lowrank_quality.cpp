// Low-rank KV cache quality options (issue 6's 3% goal): the recent window `window=N` (the last N tokens' full keys
// and full-rank value coefficients beside the compressed cache) and value sinks `vsinks=N` (the first N tokens'
// values at rank head_dim). The kernel against a per-query reference (each
// query reads full keys/values inside its own window, rebuilt ones outside); the spec and its errors; and on the demo
// model: a window covering every token equals the full cache at any rank, full ranks with a window equal it too,
// decode through the ring equals one prefill, the window lowers the error, and its bytes are counted.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "engine/kv_lowrank.h"
#include "engine/llm.h"
#include "engine/model.h"
#include "kernels/lowrank_cpu.h"
#include "kernels/ops_cpu.h"
#include "kernels/threadpool_cpu.h"
#include "loader/error.h"
#include "loader/ggml_quants.h"
#include "tests/test_util.h"

using namespace llm;

namespace {

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0.0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, double(std::fabs(a[i] - b[i])));
  return d;
}

double max_abs(const std::vector<float>& a) {
  double m = 0.0;
  for (float x : a) m = std::max(m, double(std::fabs(x)));
  return m;
}

}  // namespace

TEST_CASE("attention_lowrank window: each query reads full keys/values inside its window, rebuilt ones outside") {
  std::mt19937 rng(5);
  std::normal_distribution<float> N(0.0f, 1.0f);
  const int n_heads = 4, n_kv_heads = 2, hd = 16, rk = 6, gs = n_heads / n_kv_heads;
  const int n_kv = 75;
  ThreadPool pool(2);
  std::vector<float> inv_freq(hd / 2);
  rope_inv_freq_cpu(inv_freq.data(), hd, 10000.0f, RopeScaling{});
  std::vector<float> ukr(size_t(n_kv_heads) * rk * hd), ck(size_t(n_kv_heads) * n_kv * rk);
  for (float& x : ukr) x = N(rng);
  for (float& x : ck) x = N(rng);
  std::vector<int32_t> vrank(n_kv);
  std::vector<int64_t> voff(n_kv + 1, 0);
  for (int t = 0; t < n_kv; ++t) {
    vrank[t] = t % 2 == 0 ? 4 : 9;
    voff[t + 1] = voff[t] + vrank[t];
  }
  std::vector<float> cv(size_t(n_kv_heads) * voff[n_kv]);
  for (float& x : cv) x = N(rng);
  // the kernel's arguments over this cache for n_q queries q (the window's fields left to the caller)
  auto args = [&](const std::vector<float>& q, int n_q, int r_vmax, RopeLayout layout) {
    LowRankAttentionArgs a;
    a.q = q.data();
    a.ck = ck.data();
    a.uk = ukr.data();
    a.cv = cv.data();
    a.voff = voff.data();
    a.vrank = vrank.data();
    a.ck_stride = n_kv;
    a.cv_stride = voff[n_kv];
    a.r_k = rk;
    a.r_vmax = r_vmax;
    a.n_q = n_q;
    a.n_kv = n_kv;
    a.n_heads = n_heads;
    a.n_kv_heads = n_kv_heads;
    a.head_dim = hd;
    a.inv_freq = inv_freq.data();
    a.rope_layout = layout;
    return a;
  };
  for (RopeLayout layout : {RopeLayout::half_split, RopeLayout::interleaved})
    for (int n_q : {n_kv, 1, 40})
      for (int W : {1, 7, 40, 100}) {
        const int first = n_kv - n_q, lo = std::max(0, first - W + 1), nw = n_kv - lo;
        std::vector<float> kw(size_t(n_kv_heads) * nw * hd), vw(kw.size()), q(size_t(n_q) * n_heads * hd);
        for (float& x : kw) x = N(rng);
        for (float& x : vw) x = N(rng);
        for (float& x : q) x = N(rng);
        LowRankAttentionArgs a = args(q, n_q, hd, layout);
        a.k_win = kw.data();
        a.v_win = vw.data();
        a.win_stride = nw;
        a.win_lo = lo;
        a.window = W;
        std::vector<float> z(size_t(n_q) * n_heads * hd);
        attention_lowrank_cpu(z.data(), a, &pool);
        // reference: per query, the keys (RoPE'd) and the value coefficient rows it should read, plain softmax
        double max_err = 0.0;
        for (int i = 0; i < n_q; ++i) {
          const int p = first + i;
          for (int h = 0; h < n_heads; ++h) {
            const int g = h / gs;
            std::vector<double> s(p + 1), zr(hd, 0.0);
            for (int t = 0; t <= p; ++t) {
              const bool in_window = p - t < W;
              std::vector<float> k(hd, 0.0f);
              if (in_window) {
                std::copy_n(kw.data() + (size_t(g) * nw + t - lo) * hd, hd, k.data());
              } else {
                for (int j = 0; j < rk; ++j)
                  for (int d = 0; d < hd; ++d)
                    k[d] += ck[(size_t(g) * n_kv + t) * rk + j] * ukr[(size_t(g) * rk + j) * hd + d];
              }
              const int pos = t;
              rope_cpu(k.data(), &pos, 1, 1, hd, hd, inv_freq.data(), layout);
              double dot = 0.0;
              for (int d = 0; d < hd; ++d) dot += double(q[(size_t(i) * n_heads + h) * hd + d]) * k[d];
              s[t] = dot / std::sqrt(double(hd));
            }
            const double mx = *std::max_element(s.begin(), s.end());
            double sum = 0.0;
            for (int t = 0; t <= p; ++t) sum += std::exp(s[t] - mx);
            for (int t = 0; t <= p; ++t) {
              const double pt = std::exp(s[t] - mx) / sum;
              if (p - t < W)
                for (int r = 0; r < hd; ++r) zr[r] += pt * vw[(size_t(g) * nw + t - lo) * hd + r];
              else
                for (int r = 0; r < vrank[t]; ++r) zr[r] += pt * cv[size_t(g) * voff[n_kv] + voff[t] + r];
            }
            for (int r = 0; r < hd; ++r)
              max_err = std::max(max_err, std::fabs(zr[r] - z[(size_t(i) * n_heads + h) * hd + r]));
          }
        }
        CAPTURE(n_q);
        CAPTURE(W);
        CHECK(max_err < 1e-4);
      }
  // bad windows: values must be full-rank wide (r_vmax == head_dim), rows must cover every query's window
  std::vector<float> q(size_t(n_heads) * hd), kw(size_t(n_kv_heads) * n_kv * hd), z(size_t(n_heads) * hd);
  LowRankAttentionArgs b = args(q, 1, 9, RopeLayout::half_split);
  b.k_win = kw.data();
  b.v_win = kw.data();
  b.win_stride = 8;
  b.win_lo = n_kv - 8;
  b.window = 8;
  CHECK_THROWS_WITH_AS(attention_lowrank_cpu(z.data(), b, &pool), doctest::Contains("must equal head_dim"), Error);
  b.r_vmax = hd;
  attention_lowrank_cpu(z.data(), b, &pool);  // the window's rows n_kv-8 .. n_kv-1 cover the one query's 8 keys
  b.win_lo = n_kv - 7;
  b.win_stride = 7;
  CHECK_THROWS_WITH_AS(attention_lowrank_cpu(z.data(), b, &pool), doctest::Contains("bad recent window"), Error);
}

TEST_CASE("kv spec: window=N, its JSON key, and its errors") {
  KVSpec s = kv_spec_parse("svd:k=1/4,v=d/4/d/2/d,policy=seed,window=16");
  CHECK(s.window == 16);
  CHECK(kv_spec_describe(s, kv_spec_ranks(s, 64)) ==
        "svd:k=16,v=16/32/64,policy=seed,basis=weights,metric=score,window=16");
  CHECK(kv_spec_parse("svd:k=1/4").window == 0);  // the default: off
  CHECK(kv_spec_describe(kv_spec_parse("svd"), kv_spec_ranks(kv_spec_parse("svd"), 64)).find("window") ==
        std::string::npos);
  CHECK_THROWS_WITH_AS(kv_spec_parse("svd:window=x"), doctest::Contains("window=x: expected a number of recent tokens"),
                       Error);
  CHECK_THROWS_WITH_AS(kv_spec_parse("svd:window=-3"), doctest::Contains("window=-3"), Error);
  CHECK_THROWS_WITH_AS(kv_spec_parse("svd:window=99999999"), doctest::Contains("[0, 65536]"), Error);
  CHECK_THROWS_WITH_AS(kv_spec_parse("svd:window=4,window=8"), doctest::Contains("window given twice"), Error);
  CHECK(kv_spec_parse("svd:vsinks=2").vsinks == 2);
  CHECK_THROWS_WITH_AS(kv_spec_parse("svd:vsinks=a"), doctest::Contains("vsinks=a: expected a number of tokens"),
                       Error);
  CHECK(kv_config_key_known("vsinks"));
  CHECK(kv_config_key_known("window"));
  CHECK(std::string(kv_config_keys_text()).find("window") != std::string::npos);
  const std::string path = (std::filesystem::temp_directory_path() / "llm_test_kvq_window.json").string();
  {
    std::ofstream(path) << R"({"k": "1/4", "window": 32, "vsinks": 1})";
    KVSpec j = kv_spec_from_json_file(path);
    CHECK(j.lowrank);
    CHECK(j.window == 32);
    CHECK(j.vsinks == 1);
  }
  {
    std::ofstream(path) << R"({"kv": "svd", "window": "1/8"})";  // a fraction of the context, as a string
    KVSpec j = kv_spec_from_json_file(path);
    CHECK(j.window == 1);
    CHECK(j.window_den == 8);
    std::ofstream(path) << R"({"kv": "svd", "window": "9/8"})";
    CHECK_THROWS_WITH_AS(kv_spec_from_json_file(path), doctest::Contains("(0, 1]"), Error);
  }
  {
    std::ofstream(path) << R"({"kv": "svd", "window": "32"})";
    CHECK_THROWS_WITH_AS(kv_spec_from_json_file(path), doctest::Contains("\"window\" must be a number"), Error);
  }
  {
    std::ofstream(path) << R"({"kv": "full", "window": 32})";
    CHECK_THROWS_WITH_AS(kv_spec_from_json_file(path), doctest::Contains("low-rank keys"), Error);
  }
  std::filesystem::remove(path);
}

TEST_CASE("kv_key_rank_allocation: the largest eigenvalues, at least one per block, the same total, prefixes") {
  KVProfile p;
  p.n_layers = 2;
  p.n_kv_heads = 2;
  p.head_dim = 4;
  // blocks (l, g) l-major: a steep spectrum, a flat one, a tiny one, a medium one
  p.k_eig = {100, 50, 20, 10,  /**/ 9, 8, 7, 6,  /**/ 0.5f, 0.1f, 0.05f, 0.01f,  /**/ 30, 12, 5, 1};
  std::vector<int> r = kv_key_rank_allocation(p, 2);  // 8 ranks: 1 each, then 4 more: 50, 20, 12, 10
  CHECK(r == std::vector<int>{4, 1, 1, 2});
  r = kv_key_rank_allocation(p, 3);  // 12 ranks: 1 each, then 8 more: 50 20 12 10 8 7 6 5
  CHECK(r == std::vector<int>{4, 4, 1, 3});
  r = kv_key_rank_allocation(p, 4);
  CHECK(r == std::vector<int>{4, 4, 4, 4});
  r = kv_key_rank_allocation(p, 1);
  CHECK(r == std::vector<int>{1, 1, 1, 1});
  CHECK_THROWS_WITH_AS(kv_key_rank_allocation(p, 5), doctest::Contains("outside [1, head_dim = 4]"), Error);
  p.k_eig.clear();
  CHECK_THROWS_WITH_AS(kv_key_rank_allocation(p, 2), doctest::Contains("no key eigenvalues"), Error);
}

TEST_CASE("kv spec: alloc=uniform|spectrum and its errors") {
  CHECK_FALSE(kv_spec_parse("svd").k_alloc_spectrum);
  CHECK_FALSE(kv_spec_parse("svd:alloc=uniform").k_alloc_spectrum);
  KVSpec s = kv_spec_parse("svd:k=1/4,alloc=spectrum");
  CHECK(s.k_alloc_spectrum);
  CHECK(kv_spec_describe(s, kv_spec_ranks(s, 64)) ==
        "svd:k=16,v=16/32/64,policy=seed,basis=weights,metric=score,alloc=spectrum");
  CHECK_THROWS_WITH_AS(kv_spec_parse("svd:alloc=layers"), doctest::Contains("unknown alloc 'layers'"), Error);
  CHECK(kv_config_key_known("alloc"));
  const std::string path = (std::filesystem::temp_directory_path() / "llm_test_kvq_alloc.json").string();
  std::ofstream(path) << R"({"alloc": "spectrum"})";
  CHECK(kv_spec_from_json_file(path).k_alloc_spectrum);
  std::ofstream(path) << R"({"alloc": "by-layer"})";
  CHECK_THROWS_WITH_AS(kv_spec_from_json_file(path), doctest::Contains("\"alloc\" must be"), Error);
  std::filesystem::remove(path);
}

// ---- the demo model -------------------------------------------------------------------------------------------

TEST_CASE("window on the demo model: exact when it covers the context, exact at full rank, decode = prefill, helps") {
  if (!llm_test::have_demo_model()) return;
  llm::Model full(llm_test::demo_model_path(), {.n_threads = 2});
  const std::vector<int> toks = full.tokenize(
      "The quick brown fox jumps over the lazy dog. Then it ran home, where the cat was waiting for it by the door.",
      true);
  const int n = static_cast<int>(toks.size());
  REQUIRE(n > 20);
  llm::Session sf(full, {.n_ctx = 64});
  const std::vector<float> lf = sf.feed_all_logits(toks);
  const double scale = max_abs(lf);

  // a window as long as the text: every query reads every key and value in full, whatever the ranks
  llm::Model cover(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:k=1/4,v=d/4/d/2/d,policy=seed,window=64"});
  CHECK(cover.kv_description() == "svd:k=16,v=16/32/64,policy=seed,basis=weights,metric=score,window=64");
  llm::Session sc(cover, {.n_ctx = 64});
  CHECK(max_abs_diff(lf, sc.feed_all_logits(toks)) < 2e-3 * scale);

  // full ranks with a short window: the window's full forms and the rebuilt ones agree
  llm::Model fr(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:k=d,v=d,policy=uniform,window=5"});
  llm::Session sr(fr, {.n_ctx = 64});
  CHECK(max_abs_diff(lf, sr.feed_all_logits(toks)) < 2e-3 * scale);

  // low ranks, window 6, uniform ranks (independent of how the tokens are split into calls): one prefill equals a
  // short prefill then one token at a time through the ring (which wraps several times)
  llm::Model w6(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:k=1/4,v=1/4,policy=uniform,window=6"});
  llm::Session pa(w6, {.n_ctx = 64}), pb(w6, {.n_ctx = 64});
  const std::vector<float> la = pa.feed_all_logits(toks);
  const int V = pa.vocab_size(), n0 = 4;
  pb.feed(std::vector<int>(toks.begin(), toks.begin() + n0));
  double dd = 0.0;
  for (int i = n0; i < n; ++i) {
    if (i > n0) pb.feed({toks[i - 1]});
    if (i == n0) continue;
    for (int j = 0; j < V; ++j) dd = std::max(dd, double(std::fabs(pb.logits()[j] - la[size_t(i - 1) * V + j])));
  }
  CHECK(dd < 2e-3 * scale);

  // the window lowers the error against the full cache at the same ranks, more with a longer one
  llm::Model w0(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:k=1/4,v=1/4,policy=uniform"});
  llm::Model w12(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:k=1/4,v=1/4,policy=uniform,window=12"});
  llm::Session s0(w0, {.n_ctx = 64}), s12(w12, {.n_ctx = 64});
  auto rms = [&](const std::vector<float>& l) {
    double e = 0.0;
    for (size_t i = 0; i < l.size(); ++i) e += double(l[i] - lf[i]) * (l[i] - lf[i]);
    return std::sqrt(e / l.size());
  };
  const double e0 = rms(s0.feed_all_logits(toks)), e6 = rms(la), e12 = rms(s12.feed_all_logits(toks));
  CAPTURE(e0);
  CAPTURE(e6);
  CAPTURE(e12);
  CHECK(e6 < e0);
  CHECK(e12 < e6);

  // bytes: the window's tokens held in full in the ring (2 x head_dim floats) instead of compressed (16 + 16)
  CHECK(pa.kv_cache_bytes() == s0.kv_cache_bytes() + size_t(6) * (2 * 64 - 32) * 30 * 3 * sizeof(float));
  CHECK(s12.kv_cache_bytes() == s0.kv_cache_bytes() + size_t(12) * (2 * 64 - 32) * 30 * 3 * sizeof(float));
  CHECK(pb.kv_cache_bytes() == pa.kv_cache_bytes() - size_t(1) * 32 * 30 * 3 * sizeof(float));  // one token fewer

  // vsinks=3: the first 3 tokens' values at rank head_dim (48 more floats each than v=16), counted
  llm::Model vs(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:k=1/4,v=1/4,policy=uniform,vsinks=3"});
  CHECK(vs.kv_description() == "svd:k=16,v=16,policy=uniform,basis=weights,metric=score,vsinks=3");
  llm::Session svs(vs, {.n_ctx = 64});
  svs.feed(toks);
  CHECK(svs.kv_cache_bytes() == s0.kv_cache_bytes() + size_t(3) * (64 - 16) * 30 * 3 * sizeof(float));
  // the sinks' values are exact: full keys with every token a value sink equal the full cache at v=1/4, and without
  // them they do not
  llm::Model vall(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:k=d,v=1/4,policy=uniform,vsinks=64"});
  llm::Model vnone(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:k=d,v=1/4,policy=uniform"});
  llm::Session sva(vall, {.n_ctx = 64}), svn(vnone, {.n_ctx = 64});
  CHECK(max_abs_diff(lf, sva.feed_all_logits(toks)) < 2e-3 * scale);
  CHECK(max_abs_diff(lf, svn.feed_all_logits(toks)) > 0.05 * scale);
  // ... and at full ranks nothing changes (decode included: the sinks are prompt tokens, later ones keep the policy's)
  llm::Model vsf(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:k=d,v=d,policy=seed,vsinks=2"});
  llm::Session svf(vsf, {.n_ctx = 64});
  CHECK(max_abs_diff(lf, svf.feed_all_logits(toks)) < 2e-3 * scale);

  // alloc=spectrum: the same key memory as k=16 everywhere, ranks that differ by block, and more of the profile's
  // eigenvalue mass kept (the error it removes, in its metric); full ranks stay exact
  llm::Model al(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:k=1/4,v=1/4,policy=uniform,alloc=spectrum"});
  const auto am = kv_lowrank_model_create(kv_spec_parse("svd:k=1/4,v=1/4,policy=uniform,alloc=spectrum"), "",
                                          full.config(), full.weights(), full.thread_pool());
  const KVLowRankModel& A = *am;
  REQUIRE(A.k_rank.size() == size_t(30 * 3));
  int sum = 0, mn = 64, mx = 0;
  double kept_alloc = 0, kept_uniform = 0;
  for (size_t b = 0; b < A.k_rank.size(); ++b) {
    sum += A.k_rank[b];
    mn = std::min(mn, A.k_rank[b]);
    mx = std::max(mx, A.k_rank[b]);
    for (int j = 0; j < 64; ++j) {
      if (j < A.k_rank[b]) kept_alloc += A.profile.k_eig[b * 64 + j];
      if (j < 16) kept_uniform += A.profile.k_eig[b * 64 + j];
    }
  }
  CHECK(sum == 16 * 90);
  CHECK(mn < 16);
  CHECK(mx > 16);
  CHECK(A.r_kpad == mx);
  CHECK(kept_alloc > kept_uniform);
  llm::Session sal(al, {.n_ctx = 64});
  sal.feed(toks);
  CHECK(sal.kv_cache_bytes() == s0.kv_cache_bytes());
  llm::Model alf(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:k=d,v=d,policy=uniform,alloc=spectrum"});
  llm::Session salf(alf, {.n_ctx = 64});
  CHECK(max_abs_diff(lf, salf.feed_all_logits(toks)) < 2e-3 * scale);

  // the unified cache (policy=importance, prefill parts) runs them on the CPU (tests/test_kv_unified_window.cpp)
  CHECK_NOTHROW(llm::Model(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:policy=importance,window=8"}));
}

TEST_CASE("kv spec: fold=f16|f32, its JSON key, and its errors") {
  CHECK(kv_spec_parse("svd").fold == GGMLType::F16);
  CHECK(kv_spec_parse("svd:fold=f16").fold == GGMLType::F16);
  CHECK(kv_spec_parse("svd:fold=q8").fold == GGMLType::Q8_0);
  KVSpec s = kv_spec_parse("svd:k=1/4,fold=q8");
  CHECK(kv_spec_describe(s, kv_spec_ranks(s, 64)) ==
        "svd:k=16,v=16/32/64,policy=seed,basis=weights,metric=score,fold=q8");
  s = kv_spec_parse("svd:k=1/4,fold=f32");
  CHECK(s.fold == GGMLType::F32);
  CHECK(kv_spec_describe(s, kv_spec_ranks(s, 64)) ==
        "svd:k=16,v=16/32/64,policy=seed,basis=weights,metric=score,fold=f32");
  s = kv_spec_parse("svd:k=1/4,fold=f16");  // the default is not written out
  CHECK(kv_spec_describe(s, kv_spec_ranks(s, 64)) == "svd:k=16,v=16/32/64,policy=seed,basis=weights,metric=score");
  CHECK_THROWS_WITH_AS(kv_spec_parse("svd:fold=bf16"), doctest::Contains("unknown fold 'bf16'"), Error);
  CHECK_THROWS_WITH_AS(kv_spec_parse("svd:fold=f32,fold=f16"), doctest::Contains("fold given twice"), Error);
  CHECK(kv_config_key_known("fold"));
  const std::string path = (std::filesystem::temp_directory_path() / "llm_test_kv_fold.json").string();
  std::ofstream(path) << R"({"fold": "f32"})";
  s = kv_spec_from_json_file(path);
  CHECK(s.lowrank);  // a low-rank key: svd
  CHECK(s.fold == GGMLType::F32);
  std::ofstream(path) << R"({"kv": "full", "fold": "f32"})";
  CHECK_THROWS_WITH_AS(kv_spec_from_json_file(path), doctest::Contains("fold): write"), Error);
  std::ofstream(path) << R"({"fold": "half"})";
  CHECK_THROWS_WITH_AS(kv_spec_from_json_file(path), doctest::Contains("unknown fold 'half'"), Error);
  std::filesystem::remove(path);
}

TEST_CASE("fold=f16 on the demo model: F16 rows at half the bytes, each weight rounded once, logits as fp32's") {
  if (!llm_test::have_demo_model()) return;
  llm::Model full(llm_test::demo_model_path(), {.n_threads = 2});
  const Config& c = full.config();
  const std::string base = "svd:k=1/4,v=d/4/d/2/d,policy=seed,alloc=spectrum";
  const auto h = kv_lowrank_model_create(kv_spec_parse(base), "", c, full.weights(), full.thread_pool());
  const auto f = kv_lowrank_model_create(kv_spec_parse(base + ",fold=f32"), "", c, full.weights(), full.thread_pool());
  size_t bytes_h = 0, bytes_f = 0, held_h = 0;
  double max_rel = 0.0;
  int64_t nonzero = 0;
  for (int l = 0; l < c.n_layers; ++l) {
    const auto& H = h->layers[l];
    const auto& F = f->layers[l];
    CHECK(H.wk.type == GGMLType::F16);
    CHECK(H.wo.type == GGMLType::F16);
    CHECK(H.wk_pack.type == GGMLType::F16);
    CHECK(F.wk.type == GGMLType::F32);
    CHECK(F.wo.type == GGMLType::F32);
    CHECK(H.wo.rows == F.wo.rows);
    CHECK(H.wo.cols == F.wo.cols);
    CHECK(H.wk_pack.rows == F.wk_pack.rows);
    bytes_h += H.wk_data.size() + H.wk_pack_data.size() + H.wo_data.size();
    held_h += H.wk_pack.row_bytes * H.wk_pack.rows + H.wo.row_bytes * H.wo.rows;  // what decode reads
    bytes_f += F.wk_data.size() + F.wk_pack_data.size() + F.wo_data.size();
    // every weight is the fp32 one rounded to fp16 once: relative error <= 2^-11 for normal fp16 values
    for (const auto& [a, b] : {std::pair{&H.wo, &F.wo}, std::pair{&H.wk_pack, &F.wk_pack}}) {
      std::vector<float> ra(a->cols), rb(b->cols);
      for (int64_t r = 0; r < a->rows; ++r) {
        dequantize_row(a->type, a->data + r * a->row_bytes, ra.data(), a->cols);
        dequantize_row(b->type, b->data + r * b->row_bytes, rb.data(), b->cols);
        for (int64_t i = 0; i < a->cols; ++i) {
          if (std::fabs(rb[i]) < 6.2e-5f) {  // fp16 subnormal range: an absolute bound of half a step
            REQUIRE(std::fabs(ra[i] - rb[i]) <= 0x1p-25f);
            continue;
          }
          ++nonzero;
          max_rel = std::max(max_rel, double(std::fabs(ra[i] - rb[i]) / std::fabs(rb[i])));
        }
      }
    }
  }
  CAPTURE(max_rel);
  CHECK(nonzero > 1000000);
  CHECK(max_rel <= 0x1p-11);
  CHECK(max_rel > 0.0);  // they were rounded
  CHECK(bytes_h * 2 == bytes_f);
  // the logits over a short text: the fp16 fold moves them by far less than the compression itself does
  const std::vector<int> toks = full.tokenize(
      "The quick brown fox jumps over the lazy dog. Then it ran home, where the cat was waiting for it by the door.",
      true);
  llm::Model mh(llm_test::demo_model_path(), {.n_threads = 2, .kv = base});
  llm::Model mf(llm_test::demo_model_path(), {.n_threads = 2, .kv = base + ",fold=f32"});
  // Model's byte counts: the folded weights held (fp16: half of fp32's), and what one decoded token streams
  CHECK(full.kv_weight_bytes() == 0);
  CHECK(full.decode_weight_bytes() == full.weight_bytes());
  CHECK(mh.kv_weight_bytes() == held_h);
  CHECK(mf.kv_weight_bytes() == 2 * held_h);
  size_t wk_wo = 0;
  for (const LayerWeights& L : full.weights().layers) wk_wo += L.wk.row_bytes * L.wk.rows + L.wo.row_bytes * L.wo.rows;
  CHECK(mh.decode_weight_bytes() == full.weight_bytes() - wk_wo + held_h);
  llm::Session sfull(full, {.n_ctx = 64}), sh(mh, {.n_ctx = 64}), sf(mf, {.n_ctx = 64});
  const std::vector<float> lfull = sfull.feed_all_logits(toks), lh = sh.feed_all_logits(toks),
                           lf = sf.feed_all_logits(toks);
  const double scale = max_abs(lfull), fold_diff = max_abs_diff(lh, lf), compress_diff = max_abs_diff(lf, lfull);
  MESSAGE("fold=f16 vs f32: max rel weight error ", max_rel, ", max |logit diff| ", fold_diff, " (compression vs full: ",
          compress_diff, ", max |logit| ", scale, ")");
  CHECK(fold_diff < 1e-2 * scale);
  CHECK(fold_diff * 20 < compress_diff);
}

TEST_CASE("fold=q8 on the demo model: Q8_0 blocks within half a step of fp32, a quarter of its bytes; the 32 rule") {
  if (!llm_test::have_demo_model()) return;
  llm::Model full(llm_test::demo_model_path(), {.n_threads = 2});
  const Config& c = full.config();
  const std::string base = "svd:k=1/4,v=d/4/d/2/d,policy=seed";
  const auto q = kv_lowrank_model_create(kv_spec_parse(base + ",fold=q8"), "", c, full.weights(), full.thread_pool());
  const auto f = kv_lowrank_model_create(kv_spec_parse(base + ",fold=f32"), "", c, full.weights(), full.thread_pool());
  size_t bytes_q = 0, bytes_f = 0;
  int64_t blocks = 0, exact_max = 0;
  for (int l = 0; l < c.n_layers; ++l) {
    const auto& Q = q->layers[l];
    const auto& F = f->layers[l];
    CHECK(Q.wk.type == GGMLType::Q8_0);
    CHECK(Q.wo.type == GGMLType::Q8_0);
    bytes_q += Q.wk_data.size() + Q.wo_data.size();
    bytes_f += F.wk_data.size() + F.wo_data.size();
    for (const auto& [a, b] : {std::pair{&Q.wo, &F.wo}, std::pair{&Q.wk, &F.wk}}) {
      std::vector<float> ra(a->cols), rb(b->cols);
      for (int64_t r = 0; r < a->rows; ++r) {
        dequantize_row(a->type, a->data + r * a->row_bytes, ra.data(), a->cols);
        dequantize_row(b->type, b->data + r * b->row_bytes, rb.data(), b->cols);
        for (int64_t b0 = 0; b0 < a->cols; b0 += 32, ++blocks) {
          float amax = 0.0f, err = 0.0f, qmax = 0.0f;
          for (int i = 0; i < 32; ++i) {
            amax = std::max(amax, std::fabs(rb[b0 + i]));
            qmax = std::max(qmax, std::fabs(ra[b0 + i]));
            err = std::max(err, std::fabs(ra[b0 + i] - rb[b0 + i]));
          }
          // step d = amax / 127 (fp16-rounded: within 2^-11 of it): every weight within half a step, the largest
          // one within the scale's rounding of itself
          const float d = amax / 127.0f;
          REQUIRE(err <= 0.5f * d * (1.0f + 0x1p-10f) + 127.0f * d * 0x1p-11f + 1e-12f);
          if (std::fabs(qmax - amax) <= amax * 0x1p-10f) ++exact_max;
        }
      }
    }
  }
  CHECK(blocks > 10000);
  CHECK(exact_max == blocks);
  CHECK(bytes_q * 64 == bytes_f * 17);  // 34 bytes for 32 weights against 128
  // the logits over a short text at full ranks (where svd with the fp32 fold is the full cache up to rounding): the
  // 8-bit fold's own error. (At k=d/4 without a window the logits move chaotically with any perturbation: the
  // compression alone moves them by more than their scale; its perplexity is in docs/kv-compression.md.)
  const std::vector<int> toks = full.tokenize("The quick brown fox jumps over the lazy dog. Then it ran home.", true);
  llm::Model mq(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:k=d,v=d,policy=uniform,fold=q8"});
  llm::Model mf(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:k=d,v=d,policy=uniform,fold=f32"});
  CHECK(mq.kv_weight_bytes() * 64 == mf.kv_weight_bytes() * 17);
  llm::Session sfull(full, {.n_ctx = 64}), sq(mq, {.n_ctx = 64}), sf(mf, {.n_ctx = 64});
  const std::vector<float> lfull = sfull.feed_all_logits(toks), lq = sq.feed_all_logits(toks),
                           lf = sf.feed_all_logits(toks);
  const double scale = max_abs(lfull), q8_diff = max_abs_diff(lq, lfull), f32_diff = max_abs_diff(lf, lfull);
  MESSAGE("full ranks vs the full cache: fold=q8 max |logit diff| ", q8_diff, ", fold=f32 ", f32_diff,
          " (max |logit| ", scale, ")");
  CHECK(f32_diff < 2e-3 * scale);
  CHECK(q8_diff < 2e-2 * scale);
  CHECK(q8_diff > f32_diff);  // the fold did round
  // W_fused has n_heads x r_fused = 9 x 16 columns at v=1/4: not whole blocks of 32
  CHECK_THROWS_WITH_AS(llm::Model(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:v=1/4,policy=uniform,fold=q8"}),
                       doctest::Contains("fold=q8 stores W_fused (n_heads x r_fused columns) in blocks of 32 along its "
                                         "144 columns"),
                       Error);
}
