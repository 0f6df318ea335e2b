// Issue 7's unified policy: svd (low-rank ranks) combined with quant (bits), keep (selective propagation) and
// evict in one cache of rank-space rows. Rank-row quantisation error bounds and ragged groups; the attention
// kernel over quantised rank rows against the same kernel over the dequantised rows, the plain low-rank kernel,
// and an error bound propagated from the row bound; on a tiny GQA model: full ranks + all-16-bit == plain svd ==
// full cache, svd + keep-all / evict-all == svd alone, quantisation close and ordered by bits; importance
// ranks from the scores on a hand-computable case (the positional prior alone) and from
// set_token_scores; byte accounting; the one-file JSON config; bad combinations.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <vector>

#include "engine/kv_lowrank.h"
#include "engine/kv_prefill.h"
#include "engine/llm.h"
#include "engine/model.h"
#include "kernels/lowrank_cpu.h"
#include "kernels/quant_cpu.h"
#include "kernels/threadpool_cpu.h"
#include "loader/error.h"
#include "kv_unified_run.h"
#include "kv_window_check.h"
#include "test_util.h"
#include "tiny_llama2.h"

using namespace llm;
using llm_test::max_abs_diff;
using llm_test::randn;
using llm_test::TinyLlama2;
using llm_test::tokens_of;

namespace {

using llm_test::lowrank_model;
using llm_test::max_abs;
using llm_test::rel_diff;
using Mode = llm_test::KVMode;
using RunOut = llm_test::KVRunOut;
RunOut run(const TinyLlama2& m, Mode mode, const KVLowRankModel* lrm, const std::string& spec,
           const std::vector<int>& prompt, int steps, ThreadPool* pool, std::vector<float> scores = {}) {
  return llm_test::kv_run(m, mode, lrm, spec, prompt, steps, pool, std::move(scores));
}

}  // namespace

TEST_CASE("rank-space rows: error bound per width, ragged last group, same bytes as head_dim rows when divisible") {
  for (int n : {6, 13, 16, 33}) {
    for (int group : {4, 0, 32}) {
      double prev = 1e30;
      for (int bits : {2, 4, 8}) {
        CAPTURE(n);
        CAPTURE(group);
        CAPTURE(bits);
        std::vector<float> x = randn(size_t(n), 7 + n + bits, 3.0f);
        x[0] += 10.0f;  // the first coefficient dominates, as in a rank-space row
        std::vector<uint8_t> q(quant_rank_row_bytes(n, bits, group));
        std::vector<float> y(n);
        quantize_rank_row_cpu(q.data(), x.data(), n, bits, group);
        dequantize_rank_row_cpu(y.data(), q.data(), n, bits, group);
        const int gs = group <= 0 || group >= n ? n : group;
        double err = 0;
        for (int g0 = 0; g0 < n; g0 += gs)
          llm_test::check_quant_group(x.data() + g0, y.data() + g0, std::min(gs, n - g0), bits, err);
        CHECK(err <= prev);
        prev = err;
      }
    }
  }
  // sizes: 6 values at 4 bits in groups of 4 = (4 + 2) + (4 + 1); 13 at 2 bits = 3 x (4 + 1) + (4 + 1)
  CHECK(quant_rank_row_bytes(6, 4, 4) == 11);
  CHECK(quant_rank_row_bytes(13, 2, 4) == 20);
  CHECK(quant_rank_row_bytes(6, 8, 0) == 10);
  CHECK(quant_rank_row_bytes(5, 16, 4) == 20);
  CHECK(quant_rank_row_bytes_16(5, 16, 4) == 10);
  CHECK_THROWS_AS(quant_rank_row_bytes(0, 4, 4), Error);
  CHECK_THROWS_AS(quant_rank_row_bytes(8, 3, 4), Error);
  // a row whose length the group divides is byte-identical to the head_dim row format
  std::vector<float> x = randn(64, 3);
  for (int bits : {2, 4, 8, 16}) {
    CHECK(quant_rank_row_bytes(64, bits, 32) == quant_row_bytes(64, bits, 32));
    std::vector<uint8_t> a(quant_row_bytes(64, bits, 32)), b(a.size());
    quantize_row_cpu(a.data(), x.data(), 64, bits, 32);
    quantize_rank_row_cpu(b.data(), x.data(), 64, bits, 32);
    CHECK(a == b);
  }
}

TEST_CASE("attention_lowrank_quant: quantised rows == dequantised rows; all-16-bit == attention_lowrank; bounded error") {
  ThreadPool pool(2);
  const int H = 6, Hkv = 2, hd = 16, rk = 6, rv = 8, n_kv = 41, n_q = 3, group = 4;
  // an orthonormal rebuild basis per KV head (rows of a random orthogonal matrix: Gram-Schmidt)
  std::vector<float> uk(size_t(Hkv) * rk * hd);
  for (int g = 0; g < Hkv; ++g) {
    std::vector<float> r = randn(size_t(rk) * hd, 40 + g);
    for (int j = 0; j < rk; ++j) {
      float* v = r.data() + size_t(j) * hd;
      for (int p = 0; p < j; ++p) {
        const float* u = r.data() + size_t(p) * hd;
        float d = 0;
        for (int i = 0; i < hd; ++i) d += u[i] * v[i];
        for (int i = 0; i < hd; ++i) v[i] -= d * u[i];
      }
      float nrm = 0;
      for (int i = 0; i < hd; ++i) nrm += v[i] * v[i];
      for (int i = 0; i < hd; ++i) v[i] /= std::sqrt(nrm);
    }
    std::copy(r.begin(), r.end(), uk.begin() + size_t(g) * rk * hd);
  }
  const std::vector<float> q = randn(size_t(n_q) * H * hd, 1, 0.5f);
  const std::vector<float> ck = randn(size_t(Hkv) * n_kv * rk, 2), cv = randn(size_t(Hkv) * n_kv * rv, 3);
  std::vector<int32_t> pos(n_kv);
  for (int t = 0; t < n_kv; ++t) pos[t] = t;
  std::vector<int32_t> vrank_tok(n_kv);
  for (int t = 0; t < n_kv; ++t) vrank_tok[t] = t % 3 == 0 ? rv : t % 3 == 1 ? rv / 2 : 3;
  std::vector<float> inv_freq(hd / 2);
  rope_inv_freq_cpu(inv_freq.data(), hd, 10000.0f, RopeScaling{});
  // three caches of the same entries: quantised (mixed widths), the dequantised copy at 16 bits, exact at 16 bits
  const int widths[4] = {2, 4, 8, 16};
  struct Cache {
    std::vector<std::vector<uint8_t>> data, bits;
    std::vector<std::vector<uint64_t>> off;
    std::vector<std::vector<uint16_t>> vr;
  };
  Cache cq, cd, ce;
  for (Cache* c : {&cq, &cd, &ce}) {
    c->data.resize(Hkv), c->bits.resize(Hkv), c->off.assign(Hkv, {0}), c->vr.resize(Hkv);
  }
  std::vector<float> kd(rk), vd(rv);
  double max_dk = 0, max_dv = 0, max_cv = 0;  // largest row errors (L2 for keys, max for values) and |c_v|
  auto push = [&](Cache& c, int g, const float* k, const float* v, int r, int b) {
    const size_t kb = quant_rank_row_bytes(rk, b, group), vb = quant_rank_row_bytes(r, b, group), at = c.data[g].size();
    c.data[g].resize(at + kb + vb);
    quantize_rank_row_cpu(c.data[g].data() + at, k, rk, b, group);
    quantize_rank_row_cpu(c.data[g].data() + at + kb, v, r, b, group);
    c.off[g].push_back(at + kb + vb);
    c.bits[g].push_back(uint8_t(b));
    c.vr[g].push_back(uint16_t(r));
  };
  for (int g = 0; g < Hkv; ++g)
    for (int t = 0; t < n_kv; ++t) {
      const int b = widths[(t + g) % 4], r = vrank_tok[t];
      const float* k = ck.data() + (size_t(g) * n_kv + t) * rk;
      const float* v = cv.data() + (size_t(g) * n_kv + t) * rv;
      push(cq, g, k, v, r, b);
      const uint8_t* row = cq.data[g].data() + cq.off[g][t];
      dequantize_rank_row_cpu(kd.data(), row, rk, b, group);
      dequantize_rank_row_cpu(vd.data(), row + quant_rank_row_bytes(rk, b, group), r, b, group);
      push(cd, g, kd.data(), vd.data(), r, 16);
      push(ce, g, k, v, r, 16);
      double dk = 0;
      for (int j = 0; j < rk; ++j) dk += double(kd[j] - k[j]) * (kd[j] - k[j]);
      max_dk = std::max(max_dk, std::sqrt(dk));
      for (int j = 0; j < r; ++j) max_dv = std::max(max_dv, double(std::fabs(vd[j] - v[j])));
      for (int j = 0; j < r; ++j) max_cv = std::max(max_cv, double(std::fabs(v[j])));
    }
  auto attend = [&](const Cache& c) {
    std::vector<const uint8_t*> dp(Hkv), bp(Hkv);
    std::vector<const uint64_t*> op(Hkv);
    std::vector<const uint16_t*> rp(Hkv);
    for (int g = 0; g < Hkv; ++g)
      dp[g] = c.data[g].data(), bp[g] = c.bits[g].data(), op[g] = c.off[g].data(), rp[g] = c.vr[g].data();
    LowRankQuantAttentionArgs a;
    a.q = q.data(), a.data = dp.data(), a.off = op.data(), a.bits = bp.data(), a.vrank = rp.data();
    a.pos = pos.data(), a.uk = uk.data(), a.r_k = rk, a.r_vmax = rv, a.group = group;
    a.n_q = n_q, a.n_kv = n_kv, a.n_heads = H, a.n_kv_heads = Hkv, a.head_dim = hd, a.inv_freq = inv_freq.data();
    std::vector<float> z(size_t(n_q) * H * rv);
    attention_lowrank_quant_cpu(z.data(), a, &pool);
    return z;
  };
  const std::vector<float> zq = attend(cq), zd = attend(cd), ze = attend(ce);
  CHECK(max_abs_diff(zq, zd) == 0.0f);  // the kernel reads the packed rows exactly as dequantisation defines them

  // all-16-bit == the plain low-rank kernel (packed values, per-token ranks shared by the heads)
  std::vector<float> ck_l(size_t(Hkv) * n_kv * rk), cv_l;
  std::vector<int64_t> voff(n_kv + 1, 0);
  for (int t = 0; t < n_kv; ++t) voff[t + 1] = voff[t] + vrank_tok[t];
  cv_l.assign(size_t(Hkv) * voff[n_kv], 0.0f);
  for (int g = 0; g < Hkv; ++g)
    for (int t = 0; t < n_kv; ++t) {
      std::memcpy(ck_l.data() + (size_t(g) * n_kv + t) * rk, ck.data() + (size_t(g) * n_kv + t) * rk, rk * 4);
      std::memcpy(cv_l.data() + size_t(g) * voff[n_kv] + voff[t], cv.data() + (size_t(g) * n_kv + t) * rv,
                  size_t(vrank_tok[t]) * 4);
    }
  LowRankAttentionArgs la;
  la.q = q.data(), la.ck = ck_l.data(), la.uk = uk.data(), la.cv = cv_l.data(), la.voff = voff.data();
  la.vrank = vrank_tok.data(), la.ck_stride = n_kv, la.cv_stride = voff[n_kv], la.r_k = rk, la.r_vmax = rv;
  la.n_q = n_q, la.n_kv = n_kv, la.n_heads = H, la.n_kv_heads = Hkv, la.head_dim = hd, la.inv_freq = inv_freq.data();
  std::vector<float> zl(ze.size());
  attention_lowrank_cpu(zl.data(), la, &pool);
  CHECK(max_abs_diff(ze, zl) < 1e-5f * (1.0f + max_abs(zl)));

  // the quantisation error of z is bounded by the rows' error: |dk| <= |dc_k| (orthonormal U_K, RoPE is a
  // rotation) moves every score by at most delta = |q| |dc_k| / sqrt(hd), so each probability by a factor within
  // e^(+-2 delta): |dz| <= (e^(2 delta) - 1) max|c_v| + max|dc_v|
  for (int i = 0; i < n_q; ++i)
    for (int h = 0; h < H; ++h) {
      double qn = 0;
      for (int d = 0; d < hd; ++d) qn += double(q[(size_t(i) * H + h) * hd + d]) * q[(size_t(i) * H + h) * hd + d];
      const double delta = std::sqrt(qn) * max_dk / std::sqrt(double(hd));
      const double bound = (std::exp(2 * delta) - 1) * max_cv + max_dv + 1e-5;
      for (int r = 0; r < rv; ++r) {
        const size_t at = (size_t(i) * H + h) * rv + r;
        CHECK(std::fabs(zq[at] - ze[at]) <= bound);
      }
    }
  CHECK(max_abs_diff(zq, ze) > 0.0f);  // the 2-bit rows do change the result
}

TEST_CASE("unified on a tiny GQA model: full ranks + 16 bits == svd == full cache; svd + keep-all == svd alone") {
  TinyLlama2 m(64, 4, 2);  // 4 heads on 2 KV heads, head_dim 16
  ThreadPool pool(2);
  const std::vector<int> prompt = tokens_of(40, m.c.vocab_size, 9);
  const RunOut full = run(m, Mode::full, nullptr, "", prompt, 4, &pool);
  {
    const auto lrm = lowrank_model(m, "svd:k=d,v=d,policy=uniform", &pool);
    const RunOut svd = run(m, Mode::svd, lrm.get(), "", prompt, 4, &pool);
    CHECK(rel_diff(svd, full) < 1e-4f);
    for (const char* spec : {"quant:16", "quant:8/4/2=0.2/0.5/0.3,recent=1000", "keep:1", "evict:h2o,budget=1",
                             "quant:16+keep:1/1/1/1+evict:snapkv,budget=1"}) {
      CAPTURE(spec);
      const RunOut r = run(m, Mode::unified, lrm.get(), spec, prompt, 4, &pool);
      CHECK(r.tokens == full.tokens);
      CHECK(rel_diff(r, svd) < 1e-4f);
      CHECK(rel_diff(r, full) < 1e-4f);
    }
  }
  // reduced ranks with the seed policy (prefill by position, decode by step): keep-all / evict-all / 16 bits are
  // the low-rank cache itself
  const auto lrm = lowrank_model(m, "svd:k=1/2,v=d/4/d/2/d,policy=seed", &pool);
  const RunOut svd = run(m, Mode::svd, lrm.get(), "", prompt, 4, &pool);
  CHECK(rel_diff(svd, full) > 1e-3f);  // the ranks do compress
  for (const char* spec : {"keep:1", "evict:importance,budget=1", "quant:16"}) {
    CAPTURE(spec);
    const RunOut r = run(m, Mode::unified, lrm.get(), spec, prompt, 4, &pool);
    CHECK(r.tokens == svd.tokens);
    CHECK(rel_diff(r, svd) < 1e-4f);
    // value ranks: the seed's by position (4 low, 8 medium, 16 high), the same in every layer and head; the
    // decode tokens at the high rank (decode steps < 10)
    const auto& vr = r.cache->layers[3].vrank[1];
    REQUIRE(vr.size() == 44);
    CHECK(vr[0] == 4);
    CHECK(vr[10] == 8);
    CHECK(vr[20] == 16);
    CHECK(vr[39] == 4);
    CHECK(vr[40] == 16);
  }
  // quantisation: close to svd alone, 8 bits closer than 2; propagation and eviction on top still run
  const RunOut q8 = run(m, Mode::unified, lrm.get(), "quant:8,recent=4,group=4", prompt, 4, &pool);
  const RunOut q2 = run(m, Mode::unified, lrm.get(), "quant:2,recent=4,group=4", prompt, 4, &pool);
  CHECK(max_abs_diff(q8.logits[0], svd.logits[0]) < 1e-4f * (1 + max_abs(svd.logits[0])));  // prefill exact
  const float d8 = rel_diff(q8, svd), d2 = rel_diff(q2, svd);
  CHECK(d8 > 0.0f);
  CHECK(d8 < d2);
  CHECK(d8 < 0.05f);
  const RunOut all = run(m, Mode::unified, lrm.get(), "quant:8/4=0.5/0.5,recent=4+keep:0.5,from=2+evict:snapkv,budget=0.5+imp:w=4,sinks=2",
                         prompt, 2, &pool);
  CHECK(all.cache->layer_tokens == std::vector<int>{40, 40, 20, 20});
  CHECK(all.cache->layers[0].pos.size() == 20 + 2);  // evicted to half, then two decoded tokens
  CHECK(all.cache->layers[3].pos.size() == 20 + 2);  // (layer 3 computed 20, budget 20)
  for (float v : all.logits.back()) CHECK(std::isfinite(v));
}

TEST_CASE("unified: importance ranks from the prefill's scores (hand-computable), set_token_scores overrides") {
  TinyLlama2 m(64, 3, 2);
  ThreadPool pool(2);
  const std::vector<int> prompt = tokens_of(40, m.c.vocab_size, 5);
  const auto lrm = lowrank_model(m, "svd:k=1/2,v=d/4/d/2/d,policy=importance", &pool);
  // score = the positional prior alone (a = b = 0): 1/8 on the sinks {0, 1} and the recent {34..39}, 0 elsewhere.
  // The 20/40/40 split of 40 tokens: the top 8 (exactly the prior's) high = 16, the next 16 (ties: the earlier
  // token first: 2..17) medium = 8, the last 16 (18..33) low = 4; in every layer and KV head. Decode: high.
  const RunOut r = run(m, Mode::unified, lrm.get(), "imp:a=0,b=0,c=1,sinks=2,recent=6", prompt, 1, &pool);
  for (int l = 0; l < 3; ++l)
    for (int g = 0; g < 2; ++g) {
      const auto& vr = r.cache->layers[l].vrank[g];
      REQUIRE(vr.size() == 41);
      for (int t = 0; t < 41; ++t) {
        CAPTURE(l);
        CAPTURE(g);
        CAPTURE(t);
        const int want = t < 2 || t >= 34 ? 16 : t < 18 ? 8 : 4;
        CHECK(vr[t] == want);
      }
    }
  // with the attention terms the ranks differ between heads and layers but keep the 8/16/16 counts
  const RunOut d = run(m, Mode::unified, lrm.get(), "imp:w=8", prompt, 0, &pool);
  bool differ = false;
  for (int l = 0; l < 3; ++l)
    for (int g = 0; g < 2; ++g) {
      const auto& vr = d.cache->layers[l].vrank[g];
      CHECK(std::count(vr.begin(), vr.end(), 16) == 8);
      CHECK(std::count(vr.begin(), vr.end(), 8) == 16);
      differ |= vr != d.cache->layers[0].vrank[0];
    }
  CHECK(differ);
  // set_token_scores (library users): one score per token, every layer and head; here descending by position,
  // so 0..7 high, 8..23 medium, 24..39 low; equals the plain low-rank cache given the same scores
  std::vector<float> sc(40);
  for (int t = 0; t < 40; ++t) sc[t] = float(40 - t);
  const RunOut s = run(m, Mode::unified, lrm.get(), "", prompt, 2, &pool, sc);
  const RunOut plain = run(m, Mode::svd, lrm.get(), "", prompt, 2, &pool, sc);
  for (int t = 0; t < 40; ++t) CHECK(s.cache->layers[2].vrank[1][t] == (t < 8 ? 16 : t < 24 ? 8 : 4));
  CHECK(s.tokens == plain.tokens);
  CHECK(rel_diff(s, plain) < 1e-4f);
  CHECK_THROWS_WITH_AS(run(m, Mode::unified, lrm.get(), "", prompt, 0, &pool, std::vector<float>(3, 1.0f)),
                       doctest::Contains("3 scores given for a forward call of 40 tokens"), Error);
}

TEST_CASE("unified: bytes, one JSON config for both parts, and bad combinations") {
  TinyLlama2 m(64, 4, 2);
  ThreadPool pool(2);
  const std::vector<int> prompt = tokens_of(40, m.c.vocab_size, 3);
  // k = 8, v = 8 (uniform); 4 bits in one group per row: 4 + 4 bytes a row; per entry and KV head + 1 byte of
  // width + 2 of rank; per entry and layer 4 bytes of position
  const auto lrm = lowrank_model(m, "svd:k=1/2,v=1/2,policy=uniform", &pool);
  const RunOut q = run(m, Mode::unified, lrm.get(), "quant:4,recent=0,group=head", prompt, 0, &pool);
  CHECK(q.cache->bytes_used() == size_t(4) * (40 * 4 + 2 * 40 * (8 + 8 + 1 + 2)));
  const RunOut h = run(m, Mode::unified, lrm.get(), "quant:16", prompt, 0, &pool);  // 16-bit class: 2 bytes a value
  CHECK(h.cache->bytes_used() == size_t(4) * (40 * 4 + 2 * 40 * (16 + 16 + 1 + 2)));
  const RunOut e = run(m, Mode::unified, lrm.get(), "quant:16+evict:streaming,budget=0.5+imp:w=4,sinks=2", prompt, 0, &pool);
  CHECK(e.cache->bytes_used() == size_t(4) * (20 * 4 + 2 * 20 * (16 + 16 + 1 + 2)));

  // one file: svd fields and prefill fields together; unknown keys stay errors in both readers
  const std::string path = (std::filesystem::temp_directory_path() / "llm_test_kv_unified.json").string();
  auto write = [&](const char* text) { std::ofstream(path) << text; };
  write(R"({"kv": "svd", "k": "1/2", "v": [4, 8, 16], "policy": "importance", "quant": "8/4=0.5/0.5,recent=4",
            "keep": "0.5,from=2", "evict": "snapkv,budget=0.5", "imp": "w=4,sinks=2"})");
  const KVSpec ls = kv_spec_from_json_file(path);
  const KVPrefillSpec ps = kv_prefill_spec_from_json_file(path);
  CHECK(ls.lowrank);
  CHECK(ls.policy == KVRankPolicy::importance);
  CHECK(ps.quant.on);
  CHECK(ps.keep.on);
  CHECK(ps.evict.method == KVEvict::snapkv);
  CHECK(ps.imp.w == 4);
  {
    const auto lm = kv_lowrank_model_create(ls, "", m.c, m.w, &pool);
    KVPrefill p = kv_prefill_create(ps, m.c, lm.get());
    KVCache kv = kvcache_create(m.c, 64, false);
    kv.prefill = &p;
    RunState s = runstate_create(m.c, 16);
    forward_cpu(m.c, m.w, kv, s, prompt.data(), 40, LogitsMode::last, &pool);
    CHECK(p.layer_tokens == std::vector<int>{40, 40, 20, 20});
    CHECK(p.width_histogram()[0] == 0);  // no 2-bit rows
    // all logits over a prompt whose upper layers dropped tokens: refused, as without svd
    kv.n = 0;
    CHECK_THROWS_WITH_AS(forward_cpu(m.c, m.w, kv, s, prompt.data(), 40, LogitsMode::all, &pool),
                         doctest::Contains("selective propagation"), Error);
  }
  // the low-rank reader's metric and sinks are known to the prefill reader too (one file, both readers)
  write(R"({"kv": "svd", "k": "1/2", "metric": "energy", "sinks": 2, "quant": "4"})");
  CHECK(kv_spec_from_json_file(path).sinks == 2);
  CHECK(kv_prefill_spec_from_json_file(path).quant.on);
  write(R"({"quant": "4"})");  // prefill keys alone: full + quant, not svd + quant
  CHECK_FALSE(kv_spec_from_json_file(path).lowrank);
  write(R"({"kv": "full", "k": 16, "quant": "4"})");
  CHECK_THROWS_WITH_AS(kv_spec_from_json_file(path), doctest::Contains("low-rank keys"), Error);
  write(R"({"kv": "svd", "quant": "4", "bits": 4})");
  CHECK_THROWS_WITH_AS(kv_spec_from_json_file(path), doctest::Contains("unknown key \"bits\""), Error);
  CHECK_THROWS_WITH_AS(kv_prefill_spec_from_json_file(path), doctest::Contains("unknown key \"bits\""), Error);
  std::filesystem::remove(path);
  // rank rows take any group >= 4 (the last one short); head_dim rows need a divisor of head_dim
  std::string base;
  const KVPrefillSpec g12 = kv_prefill_spec_parse("quant:4,group=12", base);
  CHECK_THROWS_WITH_AS(kv_prefill_create(g12, m.c), doctest::Contains("group=head"), Error);
  CHECK_NOTHROW(kv_prefill_create(g12, m.c, lrm.get()));
  CHECK_THROWS_WITH_AS(kv_prefill_spec_parse("svd:k=1/2+quant:4,group=2", base), doctest::Contains(">= 4"), Error);
}

TEST_CASE("unified on the demo model: svd + quant + keep + evict runs end to end, importance without scores") {
  if (!llm_test::have_demo_model()) return;
  llm::Model mdl(llm_test::demo_model_path(),
                 {.n_threads = 2, .kv = "svd:k=1/2,v=1/2,policy=uniform+quant:8/4=0.5/0.5,recent=8+keep:0.5,from=8+evict:snapkv,budget=0.5"});
  CHECK(mdl.kv_description() ==
        "svd:k=32,v=32,policy=uniform,basis=weights,metric=score+quant:8/4=0.5/0.5,recent=8+keep:0.5,from=8+evict:snapkv,budget=0.5");
  llm::Session s(mdl, {.n_ctx = 128});
  s.feed_text("The capital of France is", true);
  llm::GenerateOptions g;
  g.max_tokens = 4;
  const auto r = s.generate(g);
  CHECK(r.tokens.size() == 4);
  llm::Model imp(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:k=1/4,policy=importance+imp:w=8"});
  CHECK(imp.kv_description() == "svd:k=16,v=16/32/64,policy=importance,basis=weights,metric=score+imp:w=8");
  llm::Session si(imp, {.n_ctx = 64});
  si.feed_text("The capital of France is", true);  // no set_token_scores needed
  CHECK(si.n_past() > 0);
  CHECK(si.kv_cache_bytes() > 0);
}

TEST_CASE("unified: sliding recent window re-quantises rank-space rows as they leave it") {
  TinyLlama2 m(64, 4, 2);
  ThreadPool pool(2);
  const std::vector<int> prompt = tokens_of(40, m.c.vocab_size, 9);
  const auto lrm = lowrank_model(m, "svd:k=1/2,v=d/4/d/2/d,policy=seed", &pool);
  std::string b;
  KVPrefill p = kv_prefill_create(kv_prefill_spec_parse("quant:8/4=0.3/0.7,recent=4,group=4", b), m.c, lrm.get());
  llm_test::kv_window_check(m, p, prompt, 6, &pool);
  CHECK(p.layers[3].vrank[1][40] == 16);  // a decoded entry keeps its value rank when re-quantised
  CHECK(p.layers[3].bits[1][40] == 4);
}
