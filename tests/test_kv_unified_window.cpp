// The low-rank cache's quality options in the unified cache (svd + quant/keep/evict or policy=importance, CPU;
// engine/kv_prefill.h): window=N (a query reads its last N positions in full, the older ones compressed; the cache
// holds the last N in full at 16 bits and truncates/quantises a token as it leaves), sinks=N, vsinks=N and
// alloc=spectrum. On a tiny GQA model: full ranks + window == full cache; a window covering the context == full
// cache at k=d/4; quant:16 == the plain low-rank cache with the same options at every step; quant:8 close to it
// (8-bit bound) and ordered by bits; token-by-token decode == one prefill (the window slides across calls); the
// entries' forms and widths after the slides; vsinks and alloc=spectrum; bytes; keep/evict/importance combined;
// the kernel's window against the same kernel without it; bad arguments.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "engine/kv_lowrank.h"
#include "engine/kv_prefill.h"
#include "engine/llm.h"
#include "engine/model.h"
#include "kernels/quant_cpu.h"
#include "kernels/threadpool_cpu.h"
#include "loader/error.h"
#include "kv_unified_run.h"
#include "test_util.h"
#include "tiny_llama2.h"

using namespace llm;
using llm_test::max_abs_diff;
using llm_test::TinyLlama2;
using llm_test::tokens_of;

namespace {

using llm_test::KVMode;
using llm_test::lowrank_model;
using llm_test::max_abs;
using llm_test::rel_diff;
using RunOut = llm_test::KVRunOut;
// Greedy run (or teacher-forced by `forced`): the prompt in one call, then `steps` tokens one at a time. lrm null:
// the full cache; prefill "": the plain low-rank cache; otherwise the unified cache with the prefill spec ("-": none).
RunOut run(const TinyLlama2& m, const KVLowRankModel* lrm, const char* prefill, const std::vector<int>& prompt,
           int steps, ThreadPool* pool, const std::vector<int>* forced = nullptr) {
  const std::string p = prefill;
  const KVMode mode = !lrm ? KVMode::full : p.empty() ? KVMode::svd : KVMode::unified;
  return llm_test::kv_run(m, mode, lrm, p == "-" ? "" : p, prompt, steps, pool, {}, forced);
}

// Every logit row of `tokens` fed in calls of the given sizes (the first one the prefill), through the unified cache.
std::vector<float> feed_calls(const TinyLlama2& m, KVPrefill& p, const std::vector<int>& tokens,
                              const std::vector<int>& calls, ThreadPool* pool) {
  RunState s = runstate_create(m.c, 64);
  KVCache kv = kvcache_create(m.c, 128, false);
  kv.prefill = &p;
  std::vector<float> out;
  int at = 0;
  for (int n : calls) {
    forward_cpu(m.c, m.w, kv, s, tokens.data() + at, n, LogitsMode::all, pool);
    out.insert(out.end(), s.logits.begin(), s.logits.begin() + size_t(n) * m.c.vocab_size);
    at += n;
  }
  return out;
}

}  // namespace

TEST_CASE("unified window: full ranks + window == full cache; a window covering the context == full cache at k=d/4") {
  TinyLlama2 m(64, 4, 2);  // 4 heads on 2 KV heads, head_dim 16
  ThreadPool pool(2);
  const std::vector<int> prompt = tokens_of(40, m.c.vocab_size, 11);
  const RunOut full = run(m, nullptr, "", prompt, 6, &pool);
  for (const char* spec : {"svd:k=d,v=d,policy=uniform,window=4", "svd:k=d,v=d,policy=seed,window=5,sinks=1,vsinks=1",
                           "svd:k=1/4,v=d/4/d/2/d,policy=seed,window=64",
                           "svd:k=1/4,v=d/4/d/2/d,policy=seed,window=64,sinks=1,vsinks=1,alloc=spectrum",
                           "svd:k=1/4,v=d/4/d/2/d,policy=importance,window=64,alloc=spectrum"}) {
    const auto lrm = lowrank_model(m, spec, &pool);
    for (const char* pre : {"-", "quant:16", "quant:8,recent=1000", "keep:1+evict:h2o,budget=1"}) {
      CAPTURE(spec);
      CAPTURE(pre);
      const RunOut r = run(m, lrm.get(), pre, prompt, 6, &pool);
      CHECK(r.tokens == full.tokens);
      CHECK(rel_diff(r, full) < 1e-4f);
    }
  }
  // ... and without the window the same k=d/4 ranks do compress (the check above can fail)
  const auto lrm = lowrank_model(m, "svd:k=1/4,v=d/4/d/2/d,policy=seed", &pool);
  CHECK(rel_diff(run(m, lrm.get(), "quant:16", prompt, 6, &pool), full) > 1e-3f);
}

TEST_CASE("window=A/B: a fraction of the session's context, the same cache as the token count it resolves to") {
  TinyLlama2 m(64, 4, 2);
  ThreadPool pool(2);
  const std::vector<int> prompt = tokens_of(40, m.c.vocab_size, 7);
  // kv_run's sessions hold 128 tokens: 1/16 of them is a window of 8
  const auto frac = lowrank_model(m, "svd:k=1/2,v=1/2,policy=uniform,window=1/16", &pool);
  const auto count = lowrank_model(m, "svd:k=1/2,v=1/2,policy=uniform,window=8", &pool);
  const auto wide = lowrank_model(m, "svd:k=1/2,v=1/2,policy=uniform,window=16", &pool);
  CHECK(kv_window_tokens(frac->spec, 128) == 8);
  CHECK(kv_window_tokens(frac->spec, 4096) == 256);
  CHECK(kv_window_tokens(frac->spec, 10) == 1);     // at least one token
  CHECK(kv_window_tokens(count->spec, 4) == 4);     // a count never exceeds the context
  CHECK(kv_window_tokens(lowrank_model(m, "svd:k=1/2", &pool)->spec, 128) == 0);
  for (KVMode mode : {KVMode::svd, KVMode::unified}) {
    CAPTURE(int(mode));
    const std::string pre = mode == KVMode::unified ? "quant:8/4=0.5/0.5,recent=4,group=4,wbits=8" : "";
    const RunOut a = llm_test::kv_run(m, mode, frac.get(), pre, prompt, 6, &pool);
    const RunOut b = llm_test::kv_run(m, mode, count.get(), pre, prompt, 6, &pool, {}, &a.tokens);
    const RunOut c = llm_test::kv_run(m, mode, wide.get(), pre, prompt, 6, &pool, {}, &a.tokens);
    CHECK(rel_diff(a, b) == 0.0f);  // bit for bit
    CHECK(rel_diff(c, b) > 0.0f);   // (another window does change them)
    if (mode == KVMode::svd) CHECK(a.lowrank_bytes == b.lowrank_bytes);
    if (mode == KVMode::unified) CHECK(a.cache->bytes_used() == b.cache->bytes_used());
  }
}

TEST_CASE("unified window == the plain low-rank cache's window at 16 bits; quant:8 within its bound, 4 bits further") {
  TinyLlama2 m(64, 4, 2);
  ThreadPool pool(2);
  const std::vector<int> prompt = tokens_of(40, m.c.vocab_size, 5);
  for (const char* spec : {"svd:k=1/4,v=d/4/d/2/d,policy=seed,window=8,sinks=1,vsinks=1,alloc=spectrum",
                           "svd:k=1/2,v=1/4,policy=uniform,window=3,sinks=2",
                           "svd:k=1/4,v=d/4/d/2/d,policy=seed,window=16,vsinks=3"}) {
    CAPTURE(spec);
    const auto lrm = lowrank_model(m, spec, &pool);
    const RunOut svd = run(m, lrm.get(), "", prompt, 12, &pool);  // 12 steps: decoded tokens leave the window too
    const RunOut h = run(m, lrm.get(), "quant:16", prompt, 12, &pool);
    CHECK(h.tokens == svd.tokens);
    CHECK(rel_diff(h, svd) < 1e-4f);
    const RunOut off = run(m, lrm.get(), "-", prompt, 12, &pool);
    CHECK(rel_diff(off, svd) < 1e-4f);
    // 8 bits (rows leave the 16-bit recent window of 4 entries and the low-rank window), teacher-forced on svd's
    // tokens: the prefill is exact, the decode steps read 8-bit rows. A value of an 8-bit row is within half a step,
    // (max - min) / 510 of its group of 4 (0.2% of the group's range); the 4-bit step is 17 times coarser. The
    // logits' error scales with the rows' (first order), so: more than 0 (the rows are read quantised), under 2%
    // of the logit scale (10x the per-value bound, for the 4 layers' amplification), and under 1/4 of the 4-bit
    // error (17x expected at first order).
    const RunOut q8 = run(m, lrm.get(), "quant:8,recent=4,group=4", prompt, 12, &pool, &svd.tokens);
    const RunOut q4 = run(m, lrm.get(), "quant:4,recent=4,group=4", prompt, 12, &pool, &svd.tokens);
    CHECK(max_abs_diff(q8.logits[0], svd.logits[0]) < 1e-4f * (1 + max_abs(svd.logits[0])));
    const float d8 = rel_diff(q8, svd), d4 = rel_diff(q4, svd);
    CAPTURE(d8);
    CAPTURE(d4);
    CHECK(d8 > 0.0f);
    CHECK(d8 < 0.02f);
    CHECK(d8 < d4 / 4);
  }
}

TEST_CASE("unified window: token-by-token decode == one prefill (quant off); the entries' forms after the slides") {
  TinyLlama2 m(64, 4, 2);
  ThreadPool pool(2);
  const std::vector<int> toks = tokens_of(30, m.c.vocab_size, 8);
  const int V = m.c.vocab_size, W = 6, n = 30;
  const auto lrm = lowrank_model(m, "svd:k=1/4,v=1/4,policy=uniform,window=6,sinks=1,vsinks=2,alloc=spectrum", &pool);
  KVPrefill one = kv_prefill_create(KVPrefillSpec{}, m.c, lrm.get());
  const std::vector<float> a = feed_calls(m, one, toks, {n}, &pool);
  std::vector<int> calls{4, 1, 1, 1, 9, 1, 1};  // single tokens and a block longer than the window
  while (calls.size() < 100 && std::accumulate(calls.begin(), calls.end(), 0) < n) calls.push_back(1);
  KVPrefill dec = kv_prefill_create(KVPrefillSpec{}, m.c, lrm.get());
  const std::vector<float> b = feed_calls(m, dec, toks, calls, &pool);
  REQUIRE(a.size() == size_t(n) * V);
  REQUIRE(b.size() == a.size());
  CHECK(max_abs_diff(a, b) < 1e-4f * (1 + max_abs(a)));
  // the plain low-rank cache with the same options gives the same logits
  {
    RunState s = runstate_create(m.c, 64);
    KVCache kv = kvcache_create(m.c, 128, false);
    KVLowRank lr = kv_lowrank_create(*lrm, m.c, 128);
    kv.lowrank = &lr;
    forward_cpu(m.c, m.w, kv, s, toks.data(), n, LogitsMode::all, &pool);
    CHECK(max_abs_diff(a, std::vector<float>(s.logits.begin(), s.logits.begin() + size_t(n) * V)) <
          1e-4f * (1 + max_abs(a)));
  }
  // the forms: the last W positions in full at 16 bits, the older ones at their block's key rank (the sink's key in
  // full) and the policy's value rank (the value sinks' at head_dim); both caches the same
  for (const KVPrefill* p : {&one, &dec})
    for (int l = 0; l < m.c.n_layers; ++l) {
      const KVPrefillLayer& L = p->layers[l];
      CHECK(L.full_begin == n - W);
      for (int g = 0; g < m.c.n_kv_heads; ++g) {
        const int kr = lrm->k_rank[size_t(l) * m.c.n_kv_heads + g];
        for (int e = 0; e < n; ++e) {
          CAPTURE(l);
          CAPTURE(g);
          CAPTURE(e);
          CHECK(L.bits[g][e] == 16);
          CHECK(L.krank[g][e] == (e >= n - W || e < 1 ? 16 : kr));
          CHECK(L.vrank[g][e] == (e >= n - W || e < 2 ? 16 : 4));
        }
      }
    }
  CHECK(one.bytes_used() == dec.bytes_used());
}

TEST_CASE("unified window + quant: widths as the windows slide; vsinks; alloc=spectrum; bytes") {
  TinyLlama2 m(64, 4, 2);
  ThreadPool pool(2);
  const std::vector<int> prompt = tokens_of(40, m.c.vocab_size, 4);
  const int n = 40, W = 8, R = 4, steps = 10;
  // window 8 longer than the quant recent window 4: prompt entries in the low-rank window but older than the recent
  // window are held in full at 16 bits and take their importance width when they leave; decoded tokens take
  // kv_requant_bits (8 here)
  const auto lrm = lowrank_model(m, "svd:k=1/2,v=1/2,policy=uniform,window=8", &pool);
  const RunOut q = run(m, lrm.get(), "quant:8/4=0.5/0.5,recent=4,group=4", prompt, steps, &pool);
  const RunOut p0 = run(m, lrm.get(), "quant:8/4=0.5/0.5,recent=4,group=4", prompt, 0, &pool);
  const int E = n + steps;
  for (int l = 0; l < m.c.n_layers; ++l)
    for (int g = 0; g < m.c.n_kv_heads; ++g) {
      const KVPrefillLayer &L = q.cache->layers[l], &P = p0.cache->layers[l];
      CHECK(L.full_begin == E - W);
      CHECK(L.win_begin == E - R);
      CHECK(P.full_begin == n - W);
      for (int e = 0; e < E; ++e) {
        CAPTURE(l);
        CAPTURE(g);
        CAPTURE(e);
        const int want = e >= E - W ? 16 : e < n - W ? int(P.bits[g][e]) : e < n - R ? int(P.cbits[g][e]) : 8;
        CHECK(int(L.bits[g][e]) == want);
        CHECK(L.krank[g][e] == (e >= E - W ? 16 : 8));
        CHECK(L.vrank[g][e] == (e >= E - W ? 16 : 8));
        if (e < n - R) CHECK((P.cbits[g][e] == 8 || P.cbits[g][e] == 4));
      }
    }
  // bytes: 40 entries, k = v = 8, quant:16 (2 bytes a value), window 8: the last 8 entries at 16 + 16 values.
  // Per entry and KV head 1 byte of width, 2 of value rank, 2 of key rank (it varies with a window); per entry and
  // layer 4 bytes of position. The CPU's fp32 rows are counted as the 16-bit cache would hold them.
  const RunOut h = run(m, lrm.get(), "quant:16", prompt, 0, &pool);
  CHECK(h.cache->bytes_used() == size_t(4) * (40 * 4 + 2 * (32 * (2 * 8 + 2 * 8 + 5) + 8 * (2 * 16 + 2 * 16 + 5))));
  // vsinks=2 and sinks=1 without a window: 2 values and 1 key at 16 instead of 8
  const auto lvs = lowrank_model(m, "svd:k=1/2,v=1/2,policy=uniform,sinks=1,vsinks=2", &pool);
  const RunOut vs = run(m, lvs.get(), "quant:16", prompt, 0, &pool);
  CHECK(vs.cache->bytes_used() == size_t(4) * (40 * 4 + 2 * (40 * (2 * 8 + 2 * 8 + 5) + 2 * 2 * 8 + 1 * 2 * 8)));
  // every token a value sink at k=d: the full cache at v=1/4 (and not without them)
  const RunOut full = run(m, nullptr, "", prompt, 4, &pool);
  const auto vall = lowrank_model(m, "svd:k=d,v=1/4,policy=uniform,vsinks=64", &pool);
  const auto vnone = lowrank_model(m, "svd:k=d,v=1/4,policy=uniform", &pool);
  CHECK(rel_diff(run(m, vall.get(), "quant:16", prompt, 4, &pool), full) < 1e-4f);
  CHECK(rel_diff(run(m, vnone.get(), "quant:16", prompt, 4, &pool), full) > 1e-3f);
  // alloc=spectrum: each block's entries at its own key rank, the same total (so the same bytes as k = 8 everywhere),
  // ranks that differ by block; the plain low-rank cache's logits
  const auto la = lowrank_model(m, "svd:k=1/2,v=1/2,policy=uniform,alloc=spectrum", &pool);
  const auto lu = lowrank_model(m, "svd:k=1/2,v=1/2,policy=uniform", &pool);
  const RunOut ra = run(m, la.get(), "quant:16", prompt, 4, &pool), ru = run(m, lu.get(), "quant:16", prompt, 4, &pool);
  CHECK(ra.cache->bytes_used() == ru.cache->bytes_used());
  CHECK(*std::max_element(la->k_rank.begin(), la->k_rank.end()) > 8);
  for (int l = 0; l < m.c.n_layers; ++l)
    for (int g = 0; g < m.c.n_kv_heads; ++g)
      for (uint16_t r : ra.cache->layers[l].krank[g]) CHECK(r == la->k_rank[size_t(l) * m.c.n_kv_heads + g]);
  CHECK(rel_diff(ra, run(m, la.get(), "", prompt, 4, &pool)) < 1e-4f);
  CHECK(rel_diff(ra, ru) > 1e-4f);
}

TEST_CASE("unified window + quant wbits=B: the window's full entries older than the recent window at B bits") {
  TinyLlama2 m(64, 4, 2);
  ThreadPool pool(2);
  const std::vector<int> prompt = tokens_of(40, m.c.vocab_size, 4);
  const int n = 40, W = 8, R = 4, steps = 10, E = n + steps, hd = 16;
  const auto lrm = lowrank_model(m, "svd:k=1/2,v=1/2,policy=uniform,window=8", &pool);
  const RunOut q = run(m, lrm.get(), "quant:8/4=0.5/0.5,recent=4,group=4", prompt, steps, &pool);
  // wbits=16 is the default
  const RunOut q16 = run(m, lrm.get(), "quant:8/4=0.5/0.5,recent=4,group=4,wbits=16", prompt, steps, &pool, &q.tokens);
  CHECK(rel_diff(q16, q) == 0.0f);
  // wbits=8, teacher-forced on q's tokens: the prefill reads no cache (its logits are q's exactly), the decode steps
  // read the window's 8-bit rows: a small error (within the 8-bit bound of the test above), 4 bits larger
  const RunOut w8 = run(m, lrm.get(), "quant:8/4=0.5/0.5,recent=4,group=4,wbits=8", prompt, steps, &pool, &q.tokens);
  const RunOut w4 = run(m, lrm.get(), "quant:8/4=0.5/0.5,recent=4,group=4,wbits=4", prompt, steps, &pool, &q.tokens);
  // (the tiny random model amplifies some steps' errors: step 3 here gives 1.8% at 8 bits and 4.1% at 4 bits, the
  // others 0.1-0.6% and 1.4-4.3%, so the 4-bit comparison is on the mean over the steps)
  CHECK(max_abs_diff(w8.logits[0], q.logits[0]) == 0.0f);
  float m8 = 0, m4 = 0;
  for (size_t i = 1; i < q.logits.size(); ++i) {
    const float s = 1.0f + max_abs(q.logits[i]);
    m8 += max_abs_diff(w8.logits[i], q.logits[i]) / s / steps;
    m4 += max_abs_diff(w4.logits[i], q.logits[i]) / s / steps;
  }
  CAPTURE(m8);
  CAPTURE(m4);
  CHECK(m8 > 0.0f);
  CHECK(rel_diff(w8, q) < 0.02f);
  CHECK(m8 < m4 / 4);
  // the forms: the last R entries in full at 16 bits, the W - R before them in full at 8 bits, the older ones
  // compressed at the widths they take without wbits (a window entry leaves through its dequantised rows)
  const RunOut p8 = run(m, lrm.get(), "quant:8/4=0.5/0.5,recent=4,group=4,wbits=8", prompt, 0, &pool);
  for (int l = 0; l < m.c.n_layers; ++l)
    for (int g = 0; g < m.c.n_kv_heads; ++g) {
      const KVPrefillLayer &L = w8.cache->layers[l], &Q = q.cache->layers[l], &P = p8.cache->layers[l];
      CHECK(L.full_begin == E - W);
      CHECK(L.win_begin == E - R);
      for (int e = 0; e < E; ++e) {
        CAPTURE(l);
        CAPTURE(g);
        CAPTURE(e);
        CHECK(int(L.bits[g][e]) == (e >= E - R ? 16 : e >= E - W ? 8 : int(Q.bits[g][e])));
        CHECK(L.krank[g][e] == Q.krank[g][e]);
        CHECK(L.vrank[g][e] == Q.vrank[g][e]);
      }
      for (int e = 0; e < n; ++e) {
        CAPTURE(e);
        CHECK(int(P.bits[g][e]) == (e >= n - R ? 16 : e >= n - W ? 8 : int(Q.bits[g][e])));
        CHECK(P.krank[g][e] == (e >= n - W ? hd : 8));
      }
    }
  // bytes, prefill only, compressed rows at 16 bits (quant:16), group 8: the W - R older window entries' rows of
  // head_dim values at 8 bits (2 groups of 4 bytes of scale/min + 8 values) instead of 2 bytes a value
  const RunOut b8 = run(m, lrm.get(), "quant:16,recent=4,group=8,wbits=8", prompt, 0, &pool);
  CHECK(b8.cache->bytes_used() ==
        size_t(4) * (40 * 4 + 2 * (32 * (2 * 8 + 2 * 8 + 5) + 4 * (2 * 2 * (4 + 8) + 5) + 4 * (2 * 16 + 2 * 16 + 5))));
  // token-by-token decode writes the same forms as one prefill of the same tokens
  {
    KVPrefillSpec spec;
    std::string base;
    spec = kv_prefill_spec_parse("quant:8,recent=4,group=4,wbits=8", base);
    KVPrefill one = kv_prefill_create(spec, m.c, lrm.get()), dec = kv_prefill_create(spec, m.c, lrm.get());
    feed_calls(m, one, prompt, {n}, &pool);
    std::vector<int> calls{10, 1, 1, 7, 1};
    while (std::accumulate(calls.begin(), calls.end(), 0) < n) calls.push_back(1);
    feed_calls(m, dec, prompt, calls, &pool);
    for (int l = 0; l < m.c.n_layers; ++l)
      for (int g = 0; g < m.c.n_kv_heads; ++g) {
        CAPTURE(l);
        CAPTURE(g);
        const KVPrefillLayer &A = one.layers[l], &B = dec.layers[l];
        CHECK(A.full_begin == B.full_begin);
        CHECK(A.win_begin == B.win_begin);
        CHECK(std::vector<int>(A.bits[g].begin(), A.bits[g].end()) == std::vector<int>(B.bits[g].begin(), B.bits[g].end()));
        CHECK(A.krank[g] == B.krank[g]);
      }
  }
  // bad arguments: wbits without a window, an unsupported width
  const auto nowin = lowrank_model(m, "svd:k=1/2,v=1/2,policy=uniform", &pool);
  CHECK_THROWS_WITH_AS(run(m, nowin.get(), "quant:8,wbits=8", prompt, 0, &pool), doctest::Contains("has no window"),
                       Error);
  std::string base;
  CHECK_THROWS_WITH_AS(kv_prefill_create(kv_prefill_spec_parse("quant:8,wbits=8", base), m.c),
                       doctest::Contains("has no window"), Error);
  CHECK_THROWS_WITH_AS(kv_prefill_spec_parse("svd:window=8+quant:8,wbits=3", base),
                       doctest::Contains("wbits=3 unsupported"), Error);
}

TEST_CASE("unified window with keep/evict and policy=importance; the kernel's window; bad arguments") {
  TinyLlama2 m(64, 4, 2);
  ThreadPool pool(2);
  const std::vector<int> prompt = tokens_of(40, m.c.vocab_size, 6);
  const int W = 8;
  // eviction keeps half the prompt (the question window w=4 and the sinks among them): a dropped token is absent,
  // the window holds the kept entries among the last W positions; propagation drops from layer 2 on
  for (const char* spec : {"svd:k=1/4,v=d/4/d/2/d,policy=seed,window=8,sinks=1,vsinks=1,alloc=spectrum",
                           "svd:k=1/4,v=d/4/d/2/d,policy=importance,window=8,sinks=1,vsinks=1,alloc=spectrum"}) {
    CAPTURE(spec);
    const auto lrm = lowrank_model(m, spec, &pool);
    const RunOut r = run(m, lrm.get(),
                         "quant:8/4=0.5/0.5,recent=4+keep:0.5,from=2+evict:snapkv,budget=0.5+imp:w=4,sinks=2", prompt,
                         10, &pool);
    for (const auto& lg : r.logits)
      for (float v : lg) CHECK(std::isfinite(v));
    const KVPrefill& p = *r.cache;
    CHECK(p.layer_tokens == std::vector<int>{40, 40, 20, 20});
    const int last = 40 + 10 - 1;
    for (int l = 0; l < m.c.n_layers; ++l) {
      const KVPrefillLayer& L = p.layers[l];
      CHECK(L.pos.size() == 20 + 10);
      for (int g = 0; g < m.c.n_kv_heads; ++g)
        for (size_t e = 0; e < L.pos.size(); ++e) {
          const bool in = L.pos[e] > last - W;
          CHECK((int(e) >= L.full_begin) == in);
          CHECK((L.krank[g][e] == 16) == (in || L.pos[e] < 1));
          if (in) CHECK(L.bits[g][e] == 16);
        }
    }
    // ... and the same spec with everything kept equals the plain low-rank cache at 16 bits
    const RunOut all = run(m, lrm.get(), "quant:16+keep:1+evict:snapkv,budget=1", prompt, 10, &pool);
    const RunOut svd = run(m, lrm.get(), lrm->spec.policy == KVRankPolicy::importance ? "-" : "", prompt, 10, &pool);
    CHECK(rel_diff(all, svd) < 1e-4f);
  }

  // the kernel: a window of 0 entries' worth (every key older than every query's window) == no window; a query's
  // window rows are what it reads (side rows set to the cache's own rows give the no-window result)
  const int H = 4, Hkv = 2, hd = 16, rk = 4, n_kv = 37, n_q = 5;
  std::vector<float> uk = llm_test::randn(size_t(Hkv) * rk * hd, 1, 0.3f), q = llm_test::randn(size_t(n_q) * H * hd, 2);
  std::vector<std::vector<uint8_t>> data(Hkv), bits(Hkv);
  std::vector<std::vector<uint64_t>> off(Hkv, {0});
  std::vector<std::vector<uint16_t>> vr(Hkv), kr(Hkv);
  std::vector<float> kwin(size_t(Hkv) * n_kv * hd), vwin(size_t(Hkv) * n_kv * hd, 0.0f);
  std::vector<int32_t> pos(n_kv);
  for (int e = 0; e < n_kv; ++e) pos[e] = 2 * e;  // gaps: tokens were dropped
  for (int g = 0; g < Hkv; ++g)
    for (int e = 0; e < n_kv; ++e) {
      const int kl = e % 5 == 0 ? hd : rk;  // some full keys (sinks/window forms) among the rebuilt ones
      std::vector<float> row = llm_test::randn(size_t(kl) + hd, 100 + g * n_kv + e);
      const size_t at = data[g].size();
      data[g].resize(at + row.size() * sizeof(float));
      std::memcpy(data[g].data() + at, row.data(), row.size() * sizeof(float));
      off[g].push_back(data[g].size());
      bits[g].push_back(16), vr[g].push_back(hd), kr[g].push_back(uint16_t(kl));
      // the side rows: the same key (rebuilt when compressed) and value as the cache's row
      float* k = kwin.data() + (size_t(g) * n_kv + e) * hd;
      if (kl == hd) std::copy_n(row.data(), hd, k);
      else
        for (int j = 0; j < rk; ++j)
          for (int d = 0; d < hd; ++d) k[d] += row[j] * uk[(size_t(g) * rk + j) * hd + d];
      std::copy_n(row.data() + kl, hd, vwin.data() + (size_t(g) * n_kv + e) * hd);
    }
  std::vector<const uint8_t*> dp(Hkv), bp(Hkv);
  std::vector<const uint64_t*> op(Hkv);
  std::vector<const uint16_t*> vp(Hkv), kp(Hkv);
  for (int g = 0; g < Hkv; ++g)
    dp[g] = data[g].data(), bp[g] = bits[g].data(), op[g] = off[g].data(), vp[g] = vr[g].data(), kp[g] = kr[g].data();
  std::vector<float> inv_freq(hd / 2);
  rope_inv_freq_cpu(inv_freq.data(), hd, 10000.0f, RopeScaling{});
  LowRankQuantAttentionArgs a;
  a.q = q.data(), a.data = dp.data(), a.off = op.data(), a.bits = bp.data(), a.vrank = vp.data(), a.krank = kp.data();
  a.pos = pos.data(), a.uk = uk.data(), a.r_k = rk, a.r_vmax = hd, a.group = 0;
  a.n_q = n_q, a.n_kv = n_kv, a.n_heads = H, a.n_kv_heads = Hkv, a.head_dim = hd, a.inv_freq = inv_freq.data();
  std::vector<float> z0(size_t(n_q) * H * hd), z1(z0.size()), z2(z0.size());
  attention_lowrank_quant_cpu(z0.data(), a, &pool);
  a.k_win = kwin.data(), a.v_win = vwin.data(), a.win_stride = n_kv, a.win_lo = 0, a.window = 20;
  attention_lowrank_quant_cpu(z1.data(), a, &pool);
  CHECK(max_abs_diff(z0, z1) < 1e-5f);
  // different side rows change exactly the queries whose window reaches them: zero the value rows of the entries at
  // positions 44..49 (entries 22..24): queries at positions 64..72 (entries 32..36) reach back to 45..53 with
  // window 20, so the first query (64: 45..64) sees entries 23, 24 change and the last (72: 53..72) none
  for (int g = 0; g < Hkv; ++g)
    for (int e = 22; e <= 24; ++e) std::fill_n(vwin.begin() + (size_t(g) * n_kv + e) * hd, hd, 0.0f);
  attention_lowrank_quant_cpu(z2.data(), a, &pool);
  auto row_diff = [&](int i) {
    float d = 0;
    for (size_t j = size_t(i) * H * hd; j < size_t(i + 1) * H * hd; ++j) d = std::max(d, std::fabs(z2[j] - z0[j]));
    return d;
  };
  CHECK(row_diff(0) > 1e-4f);
  CHECK(row_diff(n_q - 1) < 1e-5f);
  // bad arguments: a window needs side rows, r_vmax == head_dim, and win_lo no later than the first query
  a.v_win = nullptr;
  CHECK_THROWS_WITH_AS(attention_lowrank_quant_cpu(z1.data(), a, &pool), doctest::Contains("bad recent window"), Error);
  a.v_win = vwin.data(), a.win_lo = n_kv - n_q + 1;
  CHECK_THROWS_WITH_AS(attention_lowrank_quant_cpu(z1.data(), a, &pool), doctest::Contains("bad recent window"), Error);
  a.win_lo = 0, a.r_vmax = 8;
  CHECK_THROWS_WITH_AS(attention_lowrank_quant_cpu(z1.data(), a, &pool), doctest::Contains("must equal head_dim"),
                       Error);
}

TEST_CASE("unified window on the demo model: loads on the CPU, matches the low-rank cache's prefill, its bytes") {
  if (!llm_test::have_demo_model()) return;
  const std::string lr = "svd:k=1/4,v=d/4/d/2/d,policy=seed,window=8,sinks=1,vsinks=1,alloc=spectrum";
  llm::Model u(llm_test::demo_model_path(), {.n_threads = 2, .kv = lr + "+quant:8"});
  CHECK(u.kv_description() ==
        "svd:k=16,v=16/32/64,policy=seed,basis=weights,metric=score,sinks=1,alloc=spectrum,vsinks=1,window=8+quant:8");
  llm::Model p(llm_test::demo_model_path(), {.n_threads = 2, .kv = lr});
  const std::vector<int> toks =
      u.tokenize("The quick brown fox jumps over the lazy dog. Then it ran home again.", true);
  llm::Session su(u, {.n_ctx = 64}), sp(p, {.n_ctx = 64});
  const std::vector<float> lu = su.feed_all_logits(toks), lp = sp.feed_all_logits(toks);
  CHECK(max_abs_diff(lu, lp) < 1e-3f * (1 + max_abs(lp)));
  // bytes: 16-bit class, window entries in full; less than the plain cache's fp32 count
  CHECK(su.kv_cache_bytes() > 0);
  CHECK(su.kv_cache_bytes() < sp.kv_cache_bytes());
  // policy=importance with the options loads and runs
  llm::Model i(llm_test::demo_model_path(), {.n_threads = 2, .kv = "svd:policy=importance,window=8,vsinks=1"});
  llm::Session si(i, {.n_ctx = 64});
  si.feed(toks);
  for (int k = 0; k < si.vocab_size(); ++k) REQUIRE(std::isfinite(si.logits()[k]));
}
