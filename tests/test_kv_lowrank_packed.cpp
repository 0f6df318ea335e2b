// The CPU low-rank cache's packed c_k layout for alloc=spectrum (engine/kv_lowrank.h "Cache layout"): each
// (layer, KV head) block holds capacity x k_rank values at ck_off, not r_kpad-wide zero-padded rows.
//  - the kernel: attention_lowrank_cpu over a packed cache (ck_off / k_ranks, U_K rows past a head's rank filled
//    with junk that must not be read) equals the same cache padded with zeros to r_k, bit for bit, with and without
//    sinks and a recent window; bad packed arguments are refused;
//  - the demo model (skipped when absent): the cache allocates sum over blocks of k_rank x capacity floats (the
//    padded layout: r_kpad x blocks x capacity), W_K' is packed only where a layer's ranks differ, and the logits
//    (prefill in blocks, then decode) equal those of the same model run with every block at r_kpad (the padded
//    layout as before: zero rows of W_K' and U_K past each block's rank), plain and with sinks/vsinks/window.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "engine/kv_lowrank.h"
#include "engine/llm.h"
#include "engine/model.h"
#include "kernels/lowrank_cpu.h"
#include "kernels/ops_cpu.h"
#include "kernels/threadpool_cpu.h"
#include "loader/error.h"
#include "tests/test_util.h"

using namespace llm;

TEST_CASE("attention_lowrank: c_k packed per KV head at its own rank equals the zero-padded layout bit for bit") {
  std::mt19937 rng(5);
  std::normal_distribution<float> N(0.0f, 1.0f);
  const int n_heads = 6, n_kv_heads = 3, hd = 16, rk = 10, n_kv = 70;  // > 2 key tiles and query chunks
  const std::vector<int> k_rank = {3, 10, 1};
  ThreadPool pool(2);
  std::vector<float> inv_freq(hd / 2);
  rope_inv_freq_cpu(inv_freq.data(), hd, 10000.0f, RopeScaling{});
  std::vector<float> uk_pad(size_t(n_kv_heads) * rk * hd), uk_junk(uk_pad.size());
  std::vector<float> ck_pad(size_t(n_kv_heads) * n_kv * rk, 0.0f), ck_pack;
  std::vector<int64_t> ck_off;
  for (int g = 0; g < n_kv_heads; ++g) {
    for (int j = 0; j < rk; ++j)
      for (int d = 0; d < hd; ++d) {
        const float u = N(rng);
        uk_pad[(size_t(g) * rk + j) * hd + d] = j < k_rank[g] ? u : 0.0f;
        uk_junk[(size_t(g) * rk + j) * hd + d] = j < k_rank[g] ? u : 1e3f;  // must not be read
      }
    ck_off.push_back(int64_t(ck_pack.size()));
    for (int t = 0; t < n_kv; ++t)
      for (int j = 0; j < k_rank[g]; ++j) {
        const float c = N(rng);
        ck_pad[(size_t(g) * n_kv + t) * rk + j] = c;
        ck_pack.push_back(c);
      }
  }
  std::vector<int32_t> vrank(n_kv);
  std::vector<int64_t> voff(n_kv + 1, 0);
  for (int t = 0; t < n_kv; ++t) {
    vrank[t] = t % 2 ? hd : 4;
    voff[t + 1] = voff[t] + vrank[t];
  }
  std::vector<float> cv(size_t(n_kv_heads) * voff[n_kv]), ksink(size_t(n_kv_heads) * 4 * hd),
      kwin(size_t(n_kv_heads) * n_kv * hd), vwin(kwin.size());
  for (auto* v : {&cv, &ksink, &kwin, &vwin})
    for (float& x : *v) x = N(rng);
  for (int n_q : {n_kv, 1, 37})
    for (int window : {0, 9}) {
      std::vector<float> q(size_t(n_q) * n_heads * hd);
      for (float& x : q) x = N(rng);
      LowRankAttentionArgs a;
      a.q = q.data(), a.ck = ck_pad.data(), a.uk = uk_pad.data(), a.cv = cv.data(), a.voff = voff.data();
      a.vrank = vrank.data(), a.ck_stride = n_kv, a.cv_stride = voff[n_kv], a.r_k = rk, a.r_vmax = hd;
      a.n_q = n_q, a.n_kv = n_kv, a.n_heads = n_heads, a.n_kv_heads = n_kv_heads, a.head_dim = hd;
      a.inv_freq = inv_freq.data();
      a.k_sink = ksink.data(), a.k_sink_stride = 4, a.n_sink = n_q == 37 ? 4 : 0;
      a.k_win = kwin.data(), a.v_win = vwin.data(), a.win_stride = n_kv, a.win_lo = 0, a.window = window;
      std::vector<float> z_pad(size_t(n_q) * n_heads * hd), z_pack(z_pad.size());
      attention_lowrank_cpu(z_pad.data(), a, &pool);
      LowRankAttentionArgs p = a;
      p.ck = ck_pack.data(), p.uk = uk_junk.data(), p.ck_off = ck_off.data(), p.k_ranks = k_rank.data();
      p.ck_stride = 0;  // unused when packed
      attention_lowrank_cpu(z_pack.data(), p, &pool);
      CAPTURE(n_q);
      CAPTURE(window);
      CHECK(z_pack == z_pad);
      // the junk rows matter where the padded layout is read with them: a check that could fail
      LowRankAttentionArgs j = a;
      j.uk = uk_junk.data();
      std::fill(ck_pad.begin(), ck_pad.end(), ck_pad[0]);  // padding no longer zero
      std::vector<float> z_junk(z_pad.size());
      attention_lowrank_cpu(z_junk.data(), j, &pool);
      CHECK(z_junk != z_pad);
      for (int g = 0; g < n_kv_heads; ++g)  // restore the padded cache
        for (int t = 0; t < n_kv; ++t)
          for (int r = 0; r < rk; ++r)
            ck_pad[(size_t(g) * n_kv + t) * rk + r] = r < k_rank[g] ? ck_pack[ck_off[g] + size_t(t) * k_rank[g] + r] : 0.0f;
    }
  LowRankAttentionArgs b;
  std::vector<float> q(size_t(n_heads) * hd, 1.0f), z(q.size());
  b.q = q.data(), b.ck = ck_pack.data(), b.uk = uk_pad.data(), b.cv = cv.data(), b.voff = voff.data();
  b.vrank = vrank.data(), b.cv_stride = voff[n_kv], b.r_k = rk, b.r_vmax = hd, b.n_q = 1, b.n_kv = n_kv;
  b.n_heads = n_heads, b.n_kv_heads = n_kv_heads, b.head_dim = hd, b.inv_freq = inv_freq.data();
  b.ck_off = ck_off.data();
  CHECK_THROWS_WITH_AS(attention_lowrank_cpu(z.data(), b), doctest::Contains("both ck_off and k_ranks"), Error);
  const std::vector<int> bad = {3, 11, 1};
  b.k_ranks = bad.data();
  CHECK_THROWS_WITH_AS(attention_lowrank_cpu(z.data(), b), doctest::Contains("KV head 1's key rank 11"), Error);
}

namespace {

// (prefill logits of toks[0..n-3) in blocks of 8, then 3 decode steps' logits) through forward_cpu with a
// low-rank cache of model m; the cache is left in lr.
std::vector<float> lowrank_logits(const Model& full, const KVLowRankModel& m, const std::vector<int>& toks,
                                  KVLowRank& lr) {
  const Config& c = full.config();
  const int ctx = 48, n = static_cast<int>(toks.size());
  lr = kv_lowrank_create(m, c, ctx);
  KVCache kv = kvcache_create(c, ctx, false);
  kv.lowrank = &lr;
  RunState s = runstate_create(c, 8);
  forward_cpu(c, full.weights(), kv, s, toks.data(), n - 3, LogitsMode::all, full.thread_pool());
  std::vector<float> out(s.logits.begin(), s.logits.begin() + size_t(n - 3) * c.vocab_size);
  for (int i = n - 3; i < n; ++i) {
    forward_cpu(c, full.weights(), kv, s, &toks[i], 1, LogitsMode::last, full.thread_pool());
    out.insert(out.end(), s.logits.begin(), s.logits.begin() + c.vocab_size);
  }
  return out;
}

}  // namespace

TEST_CASE("alloc=spectrum on the demo model: c_k packed at the blocks' ranks, logits equal to the padded layout's") {
  if (!llm_test::have_demo_model()) return;
  Model full(llm_test::demo_model_path(), {.n_threads = 2});
  const Config& c = full.config();
  const int nb = c.n_layers * c.n_kv_heads, nkv = c.n_kv_heads, ctx = 48;
  const std::vector<int> toks = full.tokenize(
      "The quick brown fox jumps over the lazy dog. Then it ran home, where the cat was waiting by the door.", true);
  REQUIRE(toks.size() > 20);
  REQUIRE(toks.size() <= size_t(ctx));
  // without alloc=spectrum: every block at r_k, W_K' not copied
  {
    const auto u = kv_lowrank_model_create(kv_spec_parse("svd:k=1/4,v=1/4,policy=uniform"), "", c, full.weights(),
                                           full.thread_pool());
    KVLowRank lr = kv_lowrank_create(*u, c, ctx);
    CHECK(lr.ck.size() == size_t(nb) * ctx * 16);
    CHECK(lr.ck_off[5] == int64_t(5) * ctx * 16);
    CHECK(u->layers[3].wk_pack_data.empty());
    CHECK(u->layers[3].wk_pack.data == u->layers[3].wk.data);
  }
  for (const std::string spec : {"svd:k=1/4,v=d/4/d/2/d,policy=seed,alloc=spectrum",
                                 "svd:k=1/4,v=d/4/d/2/d,policy=seed,alloc=spectrum,sinks=1,vsinks=1,window=8"}) {
    CAPTURE(spec);
    const auto am = kv_lowrank_model_create(kv_spec_parse(spec), "", c, full.weights(), full.thread_pool());
    // the padded layout: the same folded weights (zero rows past each block's rank) with every block at r_kpad
    auto pm = kv_lowrank_model_create(kv_spec_parse(spec), "", c, full.weights(), full.thread_pool());
    const int rp = am->r_kpad;
    std::fill(pm->k_rank.begin(), pm->k_rank.end(), rp);
    for (auto& L : pm->layers) L.wk_pack = L.wk;
    size_t sum = 0;
    for (int r : am->k_rank) sum += size_t(r);
    REQUIRE(sum == size_t(16) * nb);
    REQUIRE(rp > 16);
    for (int l = 0; l < c.n_layers; ++l) {
      int64_t rows = 0;
      for (int g = 0; g < nkv; ++g) rows += am->k_rank[size_t(l) * nkv + g];
      CHECK(am->layers[l].wk_pack.rows == rows);
      CHECK(am->layers[l].wk.rows == int64_t(nkv) * rp);
    }
    KVLowRank la, lp;
    const std::vector<float> za = lowrank_logits(full, *am, toks, la);
    const std::vector<float> zp = lowrank_logits(full, *pm, toks, lp);
    // the allocation: sum over blocks of rank_b x capacity floats (the padded one: r_kpad x blocks x capacity)
    CHECK(la.ck.size() == sum * ctx);
    CHECK(lp.ck.size() == size_t(rp) * nb * ctx);
    int64_t off = 0;
    for (int b = 0; b < nb; ++b) {
      CHECK(la.ck_off[b] == off);
      off += int64_t(am->k_rank[b]) * ctx;
    }
    // the stored values: the padded rows' first k_rank values, the rest of those zero (float rounding: the packed
    // W_K' x may group rows differently in the matmul's 4-row micro-kernel)
    const int n = static_cast<int>(toks.size());
    const int n_stored = spec.find("window=8") != std::string::npos ? n - 8 : n;
    double dmax = 0.0, cmax = 0.0, pad_max = 0.0;
    for (int b = 0; b < nb; ++b)
      for (int t = 0; t < n_stored; ++t)
        for (int j = 0; j < rp; ++j) {
          const float p = lp.ck[size_t(b) * ctx * rp + size_t(t) * rp + j];
          if (j >= am->k_rank[b]) {
            pad_max = std::max(pad_max, double(std::fabs(p)));
            continue;
          }
          const float v = la.ck[la.ck_off[b] + size_t(t) * am->k_rank[b] + j];
          dmax = std::max(dmax, double(std::fabs(v - p)));
          cmax = std::max(cmax, double(std::fabs(p)));
        }
    CHECK(cmax > 0.1);
    CHECK(pad_max == 0.0);
    CHECK(dmax <= 1e-5 * cmax);
    REQUIRE(za.size() == zp.size());
    double d = 0.0, scale = 0.0;
    for (size_t i = 0; i < za.size(); ++i) {
      d = std::max(d, double(std::fabs(za[i] - zp[i])));
      scale = std::max(scale, double(std::fabs(zp[i])));
    }
    MESSAGE(spec << ": r_kpad " << rp << ", c_k floats " << la.ck.size() << " packed vs " << lp.ck.size()
                 << " padded; max |c_k diff| " << dmax << ", max |logit diff| " << d << " (max |logit| " << scale << ")");
    CHECK(d <= 1e-4 * scale);
  }
}
