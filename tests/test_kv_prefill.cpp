// Issue 7: real-time prefill compression. Quantisation error bounds per width; attention over the
// mixed-precision cache against attention_cpu; the importance terms on a hand-computable attention pattern;
// the spec grammar and its errors; on a tiny Llama-2-shaped model (multi-head attention, random weights built
// here): 16-bit cache == full cache, keep-all propagation == full forward, dropping/eviction/quantisation run
// and shrink what they should; and Llama-2 end to end (SentencePiece vocabulary, [INST] template) when the
// Llama-2 vocab GGUF is available.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

#include "engine/kv_prefill.h"
#include "engine/model.h"
#include "kernels/quant_cpu.h"
#include "kernels/threadpool_cpu.h"
#include "loader/error.h"
#include "loader/gguf.h"
#include "kv_window_check.h"
#include "test_util.h"
#include "tiny_llama2.h"
#include "tokenizer/tokenizer.h"

using namespace llm;

namespace {

using llm_test::max_abs_diff;
using llm_test::randn;
using llm_test::TinyLlama2;
using llm_test::tokens_of;

// Prefill `prompt` then greedily decode `steps` tokens; returns every logits vector seen (prefill's last + one per
// step). spec empty: the full cache.
struct RunOut {
  std::vector<std::vector<float>> logits;
  std::vector<int> tokens;
  KVPrefill cache;
};
RunOut run(const TinyLlama2& m, const std::vector<int>& prompt, int steps, const std::string& spec,
           ThreadPool* pool) {
  RunOut out;
  RunState s = runstate_create(m.c, 16);
  KVCache kv;
  if (spec.empty()) {
    kv = kvcache_create(m.c, 128);
  } else {
    std::string base;
    out.cache = kv_prefill_create(kv_prefill_spec_parse(spec, base), m.c);
    kv = kvcache_create(m.c, 128, /*allocate=*/false);
    kv.prefill = &out.cache;
  }
  forward_cpu(m.c, m.w, kv, s, prompt.data(), int(prompt.size()), LogitsMode::last, pool);
  for (int i = 0;; ++i) {
    out.logits.emplace_back(s.logits.begin(), s.logits.begin() + m.c.vocab_size);
    if (i == steps) break;
    int t = argmax_cpu(s.logits.data(), m.c.vocab_size);
    out.tokens.push_back(t);
    forward_cpu(m.c, m.w, kv, s, &t, 1, LogitsMode::last, pool);
  }
  return out;
}

}  // namespace

TEST_CASE("KV quantisation: error bound per width, 16 bits exact, more bits = less error") {
  const int n = 64;
  for (int group : {32, 64, 16}) {
    double prev_err = 1e30;
    for (int bits : {2, 4, 8}) {
      std::vector<float> x = randn(n * 20, 3 + bits, 2.0f);
      for (int i = 0; i < 7; ++i) x[i * 13] += 9.0f;  // outliers
      std::vector<uint8_t> q(quant_row_bytes(n, bits, group));
      std::vector<float> y(n);
      double err = 0;
      for (int r = 0; r < 20; ++r) {
        const float* xr = x.data() + r * n;
        quantize_row_cpu(q.data(), xr, n, bits, group);
        dequantize_row_cpu(y.data(), q.data(), n, bits, group);
        for (int g0 = 0; g0 < n; g0 += group) llm_test::check_quant_group(xr + g0, y.data() + g0, group, bits, err);
      }
      CHECK(err < prev_err);
      prev_err = err;
    }
  }
  std::vector<float> x = randn(64, 5);
  std::vector<uint8_t> q(quant_row_bytes(64, 16, 32));
  std::vector<float> y(64);
  quantize_row_cpu(q.data(), x.data(), 64, 16, 32);
  dequantize_row_cpu(y.data(), q.data(), 64, 16, 32);
  CHECK(std::memcmp(x.data(), y.data(), 64 * 4) == 0);
  // a constant group (scale 0) is exact
  std::vector<float> cst(32, 1.25f), cy(32);
  std::vector<uint8_t> cq(quant_row_bytes(32, 2, 32));
  quantize_row_cpu(cq.data(), cst.data(), 32, 2, 32);
  dequantize_row_cpu(cy.data(), cq.data(), 32, 2, 32);
  CHECK(cy[17] == 1.25f);
  // sizes: 64 values at 4 bits in groups of 32 = 2 x (4 + 16) bytes; the 16-bit class counts 2 bytes a value
  CHECK(quant_row_bytes(64, 4, 32) == 40);
  CHECK(quant_row_bytes(64, 2, 64) == 20);
  CHECK(quant_row_bytes_16(64, 16, 32) == 128);
  CHECK_THROWS_AS(quant_row_bytes(64, 3, 32), Error);
  CHECK_THROWS_AS(quant_row_bytes(64, 4, 24), Error);
}

TEST_CASE("attention over the mixed-precision cache == attention_cpu over the dequantised rows") {
  ThreadPool pool(2);
  struct Shape {
    int H, Hkv, hd, n_kv, n_q, group;
  };
  // the small case; then shapes that cross attention_quant_cpu's work split: 2+ query blocks of 8, several
  // 128-entry key chunks, value columns of 32 (group 16, head_dim 128: 4 column tasks a KV head), one group a
  // row (group = head_dim: one column task), and a single decode query over 300 entries
  for (const Shape& sh : {Shape{6, 2, 32, 23, 3, 16}, Shape{8, 2, 128, 300, 11, 16}, Shape{4, 1, 64, 140, 9, 64},
                          Shape{9, 3, 64, 300, 1, 32}}) {
    const int H = sh.H, Hkv = sh.Hkv, hd = sh.hd, n_kv = sh.n_kv, n_q = sh.n_q, group = sh.group;
    CAPTURE(hd);
    CAPTURE(n_kv);
    CAPTURE(n_q);
    std::vector<float> q = randn(size_t(n_q) * H * hd, 1), k = randn(size_t(Hkv) * n_kv * hd, 2),
                       v = randn(size_t(Hkv) * n_kv * hd, 3);
    const int widths[4] = {2, 4, 8, 16};
    std::vector<std::vector<uint8_t>> data(Hkv), bits(Hkv);
    std::vector<std::vector<uint64_t>> off(Hkv, std::vector<uint64_t>{0});
    std::vector<float> kd(k.size()), vd(v.size());  // the reference's dequantised copy (the test may materialise it)
    for (int g = 0; g < Hkv; ++g)
      for (int t = 0; t < n_kv; ++t) {
        const int b = widths[(t + g) % 4];
        const size_t rb = quant_row_bytes(hd, b, group), at = data[g].size();
        data[g].resize(at + 2 * rb);
        const size_t r = (size_t(g) * n_kv + t) * hd;
        quantize_row_cpu(data[g].data() + at, k.data() + r, hd, b, group);
        quantize_row_cpu(data[g].data() + at + rb, v.data() + r, hd, b, group);
        dequantize_row_cpu(kd.data() + r, data[g].data() + at, hd, b, group);
        dequantize_row_cpu(vd.data() + r, data[g].data() + at + rb, hd, b, group);
        off[g].push_back(at + 2 * rb);
        bits[g].push_back(uint8_t(b));
      }
    std::vector<const uint8_t*> dp(Hkv), bp(Hkv);
    std::vector<const uint64_t*> op(Hkv);
    for (int g = 0; g < Hkv; ++g) dp[g] = data[g].data(), bp[g] = bits[g].data(), op[g] = off[g].data();
    QuantAttentionArgs a;
    a.q = q.data();
    a.data = dp.data();
    a.off = op.data();
    a.bits = bp.data();
    a.n_q = n_q, a.n_kv = n_kv, a.n_heads = H, a.n_kv_heads = Hkv, a.head_dim = hd, a.group = group;
    std::vector<float> out(q.size()), ref(q.size()), exact(q.size()), one(q.size());
    attention_quant_cpu(out.data(), a, &pool);
    attention_cpu(ref.data(), q.data(), kd.data(), vd.data(), n_q, n_kv, H, Hkv, hd, n_kv, nullptr);
    CHECK(max_abs_diff(out, ref) == 0.0f);
    attention_quant_cpu(one.data(), a, nullptr);  // no pool: the same bits (the split is work, not arithmetic)
    CHECK(max_abs_diff(one, out) == 0.0f);
    attention_cpu(exact.data(), q.data(), k.data(), v.data(), n_q, n_kv, H, Hkv, hd, n_kv, nullptr);
    const float d = max_abs_diff(out, exact);
    CHECK(d > 0.0f);  // the 2-bit rows do change the result ...
    CHECK(d < 0.5f);  // ... by a bounded amount
  }
}

TEST_CASE("importance: attention accumulators and the three terms on a hand-computable pattern") {
  // q = 0: every query attends uniformly to the keys it sees, p_i(j) = 1/(i+1).
  const int m = 6, H = 4, Hkv = 2, hd = 8, w = 2;
  std::vector<float> q(size_t(m) * H * hd, 0.0f), k = randn(size_t(Hkv) * m * hd, 4), v = randn(size_t(Hkv) * m * hd, 5);
  std::vector<float> out(q.size()), ref(q.size()), cum(Hkv * m), win(Hkv * m), scr(2 * H * m);
  ThreadPool pool(2);
  attention_importance_cpu(out.data(), cum.data(), win.data(), scr.data(), q.data(), k.data(), v.data(), m, H, Hkv,
                           hd, w, &pool);
  attention_cpu(ref.data(), q.data(), k.data(), v.data(), m, m, H, Hkv, hd, m, nullptr);
  CHECK(max_abs_diff(out, ref) == 0.0f);
  for (int g = 0; g < Hkv; ++g)
    for (int j = 0; j < m; ++j) {
      double c = 0, wn = 0;
      for (int i = j; i < m; ++i) c += 1.0 / (i + 1);
      for (int i = std::max(j, m - w); i < m; ++i) wn += 1.0 / (i + 1);
      CHECK(cum[g * m + j] == doctest::Approx(2 * c).epsilon(1e-5));  // 2 query heads per KV head
      CHECK(win[g * m + j] == doctest::Approx(2 * wn).epsilon(1e-5));
    }
  // the terms: pool = 3 averages win over in-range neighbours; prior = {pos < 1} U {pos >= 6 - 2}
  KVImportanceParams p;
  p.a = 1, p.b = 2, p.c = 3, p.pool = 3, p.sinks = 1, p.recent = 2;
  std::vector<int> pos = {0, 1, 2, 3, 4, 5};
  const KVImportance I = kv_importance_compute(cum.data(), win.data(), Hkv, m, 2, w, pos.data(), m, p);
  // A_cum = cum / sum(cum), sum(cum) = 2 * m (each of the m rows sums to 1, two heads)
  double c0 = 0;
  for (int i = 0; i < m; ++i) c0 += 1.0 / (i + 1);
  CHECK(I.cum[0] == doctest::Approx(c0 / m).epsilon(1e-5));
  // A_win: raw/2 = [1/5+1/6, 1/5+1/6, ..., 1/5+1/6 (j<=4), 1/6 (j=5)]; pooled(0) = mean(raw0, raw1); then / sum
  std::vector<double> rw(m);
  for (int j = 0; j < m; ++j) rw[j] = (j <= 4 ? 1.0 / 5 : 0.0) + 1.0 / 6;
  std::vector<double> pl(m);
  double ps = 0;
  for (int t = 0; t < m; ++t) {
    int lo = std::max(0, t - 1), hi = std::min(m - 1, t + 1);
    double s = 0;
    for (int u = lo; u <= hi; ++u) s += rw[u];
    pl[t] = s / (hi - lo + 1);
    ps += pl[t];
  }
  for (int t = 0; t < m; ++t) CHECK(I.win[m + t] == doctest::Approx(pl[t] / ps).epsilon(1e-5));
  CHECK(I.prior[0] == doctest::Approx(1.0 / 3));
  CHECK(I.prior[2] == 0.0f);
  CHECK(I.prior[5] == doctest::Approx(1.0 / 3));
  for (int t = 0; t < m; ++t)
    CHECK(I.score[t] == doctest::Approx(1 * I.win[t] + 2 * I.cum[t] + 3 * I.prior[t]));
  // selection: sinks (pos < 1) and the window (pos >= 4) always, then the best score; ties to the earlier token
  std::vector<float> sc = {0.0f, 0.1f, 0.9f, 0.1f, 0.0f, 0.0f};
  CHECK(kv_select(sc.data(), pos.data(), m, 4, 1, 4) == std::vector<int>{0, 2, 4, 5});
  CHECK(kv_select(sc.data(), pos.data(), m, 5, 1, 4) == std::vector<int>{0, 1, 2, 4, 5});
  CHECK(kv_select(sc.data(), pos.data(), m, 1, 1, 4) == std::vector<int>{0, 4, 5});  // always-kept beat the count
}

TEST_CASE("prefill spec: grammar, composition with svd, schedules, and clear errors") {
  std::string base;
  KVPrefillSpec s = kv_prefill_spec_parse("svd:k=1/4,v=seed+quant:8/4/2=0.2/0.5/0.3,recent=16+keep:0.5,pyramid", base);
  CHECK(base == "svd:k=1/4,v=seed");
  CHECK(s.quant.on);
  CHECK(s.quant.bits == std::vector<int>{8, 4, 2});
  CHECK(s.quant.recent == 16);
  CHECK(s.keep.schedule == KVKeepSchedule::pyramid);
  CHECK(s.keep.ratio == doctest::Approx(0.5));
  s = kv_prefill_spec_parse("evict:snapkv,budget=0.25+imp:a=1,b=0,c=0.5,w=8,pool=5", base);
  CHECK(base == "full");
  CHECK(s.evict.method == KVEvict::snapkv);
  CHECK(s.imp.w == 8);
  s = kv_prefill_spec_parse("full", base);
  CHECK(!s.any());
  CHECK(base == "full");

  auto msg = [](const std::string& spec) {
    std::string b;
    try {
      kv_prefill_spec_parse(spec, b);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK(msg("quant:8/4/2=0.2/0.5/0.4").find("sum to 1") != std::string::npos);
  CHECK(msg("keep:0").find("outside (0, 1]") != std::string::npos);
  CHECK(msg("keep:1.5").find("outside (0, 1]") != std::string::npos);
  CHECK(msg("evict:lru").find("unknown method 'lru'") != std::string::npos);
  CHECK(msg("evict:h2o,budget=2").find("outside (0, 1]") != std::string::npos);
  CHECK(msg("quant:3").find("width 3") != std::string::npos);
  CHECK(msg("quant:8/4").find("fractions") != std::string::npos);
  CHECK(msg("zip:1").find("unknown part 'zip'") != std::string::npos);
  CHECK(msg("keep:0.5+keep:0.6").find("given twice") != std::string::npos);
  CHECK(msg("imp:pool=4").find("odd") != std::string::npos);

  // schedules
  KVKeepSpec k;
  k.on = true, k.ratio = 0.25f, k.from = 2;
  auto r = kv_keep_schedule(k, 6);
  CHECK(r == std::vector<float>{1, 1, 0.25f, 0.25f, 0.25f, 0.25f});
  k.schedule = KVKeepSchedule::linear;
  r = kv_keep_schedule(k, 6);
  CHECK(r[1] == 1.0f);
  CHECK(r[2] == doctest::Approx(1 - 0.75 / 4));
  CHECK(r[5] == doctest::Approx(0.25));
  k.schedule = KVKeepSchedule::pyramid;
  r = kv_keep_schedule(k, 6);
  CHECK(r[3] == doctest::Approx(std::pow(0.25, 0.5)));
  KVEvictSpec e;
  e.method = KVEvict::pyramidkv, e.budget = 0.4f;
  auto b = kv_evict_budgets(e, 5);
  CHECK(b[0] == doctest::Approx(0.6));
  CHECK(b[4] == doctest::Approx(0.2));

  TinyLlama2 m;
  s = kv_prefill_spec_parse("quant:4,group=32", base);
  CHECK_THROWS_WITH_AS(kv_prefill_create(s, m.c), doctest::Contains("group=head"), Error);
  s = kv_prefill_spec_parse("keep:0.5,from=9", base);
  CHECK_THROWS_WITH_AS(kv_prefill_create(s, m.c), doctest::Contains("from=9"), Error);

  // JSON config: same grammar per field
  const std::string path = (std::filesystem::temp_directory_path() / "llm_test_kv_prefill.json").string();
  {
    std::ofstream f(path);
    f << R"({"kv": "full", "quant": "8/2=0.5/0.5,group=head", "evict": "h2o,budget=0.5"})";
  }
  s = kv_prefill_spec_from_json_file(path);
  CHECK(s.quant.group == 0);
  CHECK(s.evict.method == KVEvict::h2o);
  {
    std::ofstream f(path);
    f << R"({"quant": 8})";
  }
  CHECK_THROWS_WITH_AS(kv_prefill_spec_from_json_file(path), doctest::Contains("must be a string"), Error);
  std::filesystem::remove(path);
}

TEST_CASE("tiny Llama-2 (MHA): 16-bit cache == full cache; keep-all == full forward; compression runs") {
  TinyLlama2 m;
  ThreadPool pool(2);
  const std::vector<int> prompt = tokens_of(40, m.c.vocab_size, 9);
  const RunOut full = run(m, prompt, 4, "", &pool);

  // (hadamard: rows rotated, queries alike, outputs rotated back: at 16 bits the full cache too)
  for (const char* spec : {"quant:16", "quant:8/4/2=0.2/0.5/0.3,recent=1000,group=16", "keep:1", "keep:1/1/1/1",
                           "evict:h2o,budget=1", "quant:16,hadamard", "quant:4,recent=1000,hadamard"}) {
    CAPTURE(spec);
    const RunOut r = run(m, prompt, 4, spec, &pool);
    CHECK(r.tokens == full.tokens);
    for (size_t i = 0; i < full.logits.size(); ++i) CHECK(max_abs_diff(r.logits[i], full.logits[i]) < 1e-4f);
  }

  // quantisation: first logits exact (prefill attention is exact), later ones close; 2 bits further than 8
  const RunOut q8 = run(m, prompt, 4, "quant:8,recent=4,group=16", &pool);
  const RunOut q2 = run(m, prompt, 4, "quant:2,recent=4,group=16", &pool);
  CHECK(max_abs_diff(q8.logits[0], full.logits[0]) < 1e-4f);
  float d8 = 0, d2 = 0;
  for (size_t i = 1; i < full.logits.size(); ++i)
    d8 += max_abs_diff(q8.logits[i], full.logits[i]), d2 += max_abs_diff(q2.logits[i], full.logits[i]);
  CHECK(d8 > 0.0f);
  CHECK(d8 < d2);
  const auto h = q8.cache.width_histogram();
  CHECK(h[2] == 4 * 4 * 40);  // layers x heads x (36 + the 4 prompt tokens that left the window) at 8 bits
  CHECK(h[3] == 4 * 4 * 4);   // the window: the 4 decoded tokens at 16 bits
  const RunOut mix = run(m, prompt, 0, "quant:8/4/2=0.25/0.25/0.5,recent=4,group=16", &pool);
  const auto hm = mix.cache.width_histogram();
  CHECK(hm[0] == 4 * 4 * 18);
  CHECK(hm[1] == 4 * 4 * 9);
  CHECK(hm[2] == 4 * 4 * 9);
  CHECK(mix.cache.bytes_used() < size_t(4) * 4 * 40 * (2 * 16 * 2 + 1) + 4 * 4 * 40);  // below the 16-bit cache

  // selective propagation: upper layers compute on fewer tokens, sinks/window kept, outputs finite
  const RunOut keep = run(m, prompt, 2, "keep:0.5,from=2+imp:w=4,sinks=2", &pool);
  CHECK(keep.cache.layer_tokens == std::vector<int>{40, 40, 20, 20});
  CHECK(keep.cache.layers[3].pos.size() == 20 + 2);
  CHECK(keep.cache.layers[3].pos[0] == 0);
  CHECK(keep.cache.layers[3].pos[1] == 1);
  CHECK(keep.cache.layers[3].pos[19] == 39);
  for (float v : keep.logits.back()) CHECK(std::isfinite(v));

  // eviction baselines: the cache keeps the budget, sinks and window included
  for (const char* spec : {"evict:streaming,budget=0.25", "evict:h2o,budget=0.25", "evict:snapkv,budget=0.25",
                           "evict:pyramidkv,budget=0.25", "evict:importance,budget=0.25"}) {
    CAPTURE(spec);
    const RunOut r = run(m, prompt, 1, std::string(spec) + "+imp:w=4,sinks=2", &pool);
    for (int l = 0; l < 4; ++l) {
      const auto& pos = r.cache.layers[l].pos;
      CHECK(pos.size() == r.cache.layers[l].bits[0].size());
      CHECK(pos[0] == 0);
      CHECK(pos[pos.size() - 2] == 39);  // the last prompt token, then the decoded one
    }
    if (std::string(spec).find("pyramid") == std::string::npos) CHECK(r.cache.layers[1].pos.size() == 10 + 1);
    else CHECK(r.cache.layers[0].pos.size() > r.cache.layers[3].pos.size());
    if (std::string(spec).find("streaming") != std::string::npos)  // sinks + the most recent
      CHECK(r.cache.layers[2].pos == std::vector<int32_t>{0, 1, 32, 33, 34, 35, 36, 37, 38, 39, 40});
  }
  // all logits over a prompt whose tokens are dropped cannot exist
  {
    std::string b;
    KVPrefill p = kv_prefill_create(kv_prefill_spec_parse("keep:0.5", b), m.c);
    KVCache kv = kvcache_create(m.c, 64, /*allocate=*/false);
    kv.prefill = &p;
    RunState s = runstate_create(m.c, 16);
    CHECK_THROWS_WITH_AS(forward_cpu(m.c, m.w, kv, s, prompt.data(), 40, LogitsMode::all, &pool),
                         doctest::Contains("selective propagation"), Error);
  }
}

TEST_CASE("Llama-2 end to end: SentencePiece vocabulary, [INST] template, tiny MHA model, compressed cache") {
  std::string vocab = llm_test::data_path("tokenizers/llama2-spm/ggml-vocab-llama-spm.gguf");
  if (!std::filesystem::exists(vocab)) vocab = "/work/shared/data/tokenizers/llama2-spm/ggml-vocab-llama-spm.gguf";
  if (!std::filesystem::exists(vocab)) {
    std::fprintf(stderr, "SKIPPED: the Llama-2 SentencePiece vocab GGUF (ggml-vocab-llama-spm.gguf) is missing\n");
    return;
  }
  const GGUFFile g = gguf_open(vocab);
  const Tokenizer tok = tokenizer_from_gguf(g);
  CHECK(tok.kind == TokenizerKind::sentencepiece_bpe);
  const std::string prompt = chat_render(ChatTemplate::llama2, {{"user", "What is the pass key? It is 4217."}}, true);
  CHECK(prompt.find("[INST]") != std::string::npos);
  const std::vector<int32_t> ids32 = tok.encode(prompt, false, true);
  const std::vector<int> ids(ids32.begin(), ids32.end());
  REQUIRE(ids.size() > 8);
  CHECK(ids[0] == tok.bos_id);
  TinyLlama2 m(tok.vocab_size(), 2);
  ThreadPool pool(2);
  const RunOut full = run(m, ids, 3, "", &pool);
  const RunOut same = run(m, ids, 3, "quant:16+keep:1", &pool);
  CHECK(same.tokens == full.tokens);
  const RunOut comp = run(m, ids, 3, "quant:8/4=0.5/0.5,recent=4,group=16+evict:snapkv,budget=0.5+imp:w=4", &pool);
  CHECK(comp.tokens.size() == 3);
  std::vector<int32_t> out(comp.tokens.begin(), comp.tokens.end());
  CHECK_NOTHROW(tok.decode(out));
}

TEST_CASE("sliding recent window: decoded tokens re-quantised as they leave it (head_dim rows)") {
  TinyLlama2 m;
  ThreadPool pool(2);
  const std::vector<int> prompt = tokens_of(40, m.c.vocab_size, 9);
  std::string b;
  CHECK(kv_requant_bits(kv_prefill_spec_parse("quant:8/4/2=0.2/0.5/0.3", b).quant) == 4);  // the median's class
  CHECK(kv_requant_bits(kv_prefill_spec_parse("quant:8/4=0.5/0.5", b).quant) == 8);
  CHECK(kv_requant_bits(kv_prefill_spec_parse("quant:2", b).quant) == 2);
  CHECK(kv_requant_bits(kv_prefill_spec_parse("keep:1", b).quant) == 16);  // quant off: nothing re-quantised
  KVPrefill p = kv_prefill_create(kv_prefill_spec_parse("quant:8/4/2=0.2/0.5/0.3,recent=4,group=16", b), m.c);
  llm_test::kv_window_check(m, p, prompt, 6, &pool);
  const auto h = p.width_histogram();
  CHECK(h[3] == 4 * 4 * 4);                // the window
  CHECK(h[0] + h[1] + h[2] == 4 * 4 * 43);  // everything else (36 prompt + 4 old window + 3 decoded)
  // a window covering everything: nothing re-quantised (and the 16-bit cache equals the full one, test above)
  const RunOut r = run(m, prompt, 6, "quant:8/4/2=0.2/0.5/0.3,recent=1000,group=16", &pool);
  CHECK(r.cache.width_histogram() == std::vector<int64_t>{0, 0, 0, 4 * 4 * 46});
}

TEST_CASE("quant hadamard: the rotation; rotated rows give the full cache at 16 bits; an outlier channel; errors") {
  // the rotation against the Sylvester matrix written out (H[i][j] = (-1)^popcount(i & j)) / sqrt(n); its own
  // inverse; norm kept
  const int n = 16;
  const std::vector<float> x = randn(n, 21);
  std::vector<float> y = x, want(n, 0.0f);
  hadamard_rotate_cpu(y.data(), n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) want[i] += (__builtin_popcount(i & j) % 2 ? -x[j] : x[j]) / 4.0f;
  CHECK(max_abs_diff(y, want) < 1e-6f);
  double nx = 0, ny = 0;
  for (int i = 0; i < n; ++i) nx += double(x[i]) * x[i], ny += double(y[i]) * y[i];
  CHECK(std::fabs(nx - ny) < 1e-5 * nx);
  hadamard_rotate_cpu(y.data(), n);
  CHECK(max_abs_diff(y, x) < 1e-6f);
  std::vector<float> z(12, 1.0f);
  CHECK_THROWS_WITH_AS(hadamard_rotate_cpu(z.data(), 12), doctest::Contains("not a power of two"), Error);

  // why: a row with one outlier channel (as LLaMA keys have) quantised per token at 2 bits in one group loses
  // the other channels (they share the outlier's range); rotated first, the error is several times smaller
  {
    const int d = 64;
    double e_plain = 0, e_rot = 0;
    for (int r = 0; r < 50; ++r) {
      std::vector<float> k = randn(d, 100 + r), h, back(d);
      k[5] += 20.0f;
      std::vector<uint8_t> q(quant_row_bytes(d, 2, d));
      quantize_row_cpu(q.data(), k.data(), d, 2, d);
      dequantize_row_cpu(back.data(), q.data(), d, 2, d);
      for (int i = 0; i < d; ++i) e_plain += double(back[i] - k[i]) * (back[i] - k[i]);
      h = k;
      hadamard_rotate_cpu(h.data(), d);
      quantize_row_cpu(q.data(), h.data(), d, 2, d);
      dequantize_row_cpu(back.data(), q.data(), d, 2, d);
      hadamard_rotate_cpu(back.data(), d);
      for (int i = 0; i < d; ++i) e_rot += double(back[i] - k[i]) * (back[i] - k[i]);
    }
    CAPTURE(e_plain);
    CAPTURE(e_rot);
    CHECK(e_rot < e_plain / 3);
  }

  // on the tiny model (at 16 bits: the full cache, the tiny Llama-2 test above): quantised, the prefill is exact
  // and the decode steps differ a little, and differ from the unrotated cache's
  TinyLlama2 m;
  ThreadPool pool(2);
  const std::vector<int> prompt = tokens_of(40, m.c.vocab_size, 9);
  const RunOut full = run(m, prompt, 4, "", &pool);
  const RunOut h8 = run(m, prompt, 4, "quant:8,recent=4,group=16,hadamard", &pool);
  const RunOut p8 = run(m, prompt, 4, "quant:8,recent=4,group=16", &pool);
  CHECK(max_abs_diff(h8.logits[0], full.logits[0]) < 1e-4f);
  float dh = 0, dp = 0;
  for (size_t i = 1; i < full.logits.size(); ++i)
    dh = std::max(dh, max_abs_diff(h8.logits[i], full.logits[i])),
    dp = std::max(dp, max_abs_diff(h8.logits[i], p8.logits[i]));
  CAPTURE(dh);
  CHECK(dh > 0.0f);
  float scale = 0;
  for (float v : full.logits[1]) scale = std::max(scale, std::fabs(v));
  CHECK(dh < 0.05f * (1 + scale));
  CHECK(dp > 0.0f);  // the rotated rows are what is cached
  CHECK(h8.cache.bytes_used() == p8.cache.bytes_used());

  // errors: a value, with svd, a head_dim that is not a power of two
  std::string b;
  CHECK_THROWS_WITH_AS(kv_prefill_spec_parse("quant:4,hadamard=1", b), doctest::Contains("takes no value"), Error);
  CHECK_THROWS_WITH_AS(kv_prefill_spec_check(kv_prefill_spec_parse("quant:4,hadamard", b), m.c, true),
                       doctest::Contains("already in the profile's basis"), Error);
  Config c48 = m.c;
  c48.head_dim = 48;
  CHECK_THROWS_WITH_AS(kv_prefill_spec_check(kv_prefill_spec_parse("quant:4,group=head,hadamard", b), c48),
                       doctest::Contains("power of two"), Error);
}
