// Greedy runs of a tiny model through the full, the plain low-rank or the unified KV cache, and the distances the
// unified-cache tests compare them by (tests/test_kv_unified.cpp, tests/test_kv_unified_window.cpp).
#pragma once
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "engine/kv_lowrank.h"
#include "engine/kv_prefill.h"
#include "engine/model.h"
#include "kernels/threadpool_cpu.h"
#include "test_util.h"
#include "tiny_llama2.h"

namespace llm_test {

inline float max_abs(const std::vector<float>& a) {
  float m = 0;
  for (float v : a) m = std::max(m, std::fabs(v));
  return m;
}

// How a run caches: the full cache, the plain low-rank cache (issue 6), or the unified cache (svd + prefill parts).
enum class KVMode { full, svd, unified };
struct KVRunOut {
  std::vector<std::vector<float>> logits;  // the prompt's last + one per decode step
  std::vector<int> tokens;
  std::unique_ptr<llm::KVPrefill> cache;  // unified
  size_t lowrank_bytes = 0;               // svd: the plain cache's bytes at the end
};
// The prompt in one call, then `steps` tokens one at a time: greedy, or `forced` (teacher-forced). unified: `spec`
// is the prefill parts ("" = none: svd alone, e.g. policy=importance); scores: the first call's token scores
// (svd policy=importance; svd also gets score 1 for every decoded token).
inline KVRunOut kv_run(const TinyLlama2& m, KVMode mode, const llm::KVLowRankModel* lrm, const std::string& spec,
                       const std::vector<int>& prompt, int steps, llm::ThreadPool* pool,
                       std::vector<float> scores = {}, const std::vector<int>* forced = nullptr) {
  using namespace llm;
  KVRunOut out;
  RunState s = runstate_create(m.c, 16);
  KVCache kv = kvcache_create(m.c, 128, /*allocate=*/mode == KVMode::full);
  KVLowRank lr;
  if (mode == KVMode::svd) {
    lr = kv_lowrank_create(*lrm, m.c, 128);
    lr.next_scores = scores;
    kv.lowrank = &lr;
  } else if (mode == KVMode::unified) {
    std::string base;
    const KVPrefillSpec ps = spec.empty() ? KVPrefillSpec{} : kv_prefill_spec_parse(spec, base);
    out.cache = std::make_unique<KVPrefill>(kv_prefill_create(ps, m.c, lrm));
    out.cache->next_scores = scores;
    kv.prefill = out.cache.get();
  }
  forward_cpu(m.c, m.w, kv, s, prompt.data(), int(prompt.size()), LogitsMode::last, pool);
  for (int i = 0;; ++i) {
    out.logits.emplace_back(s.logits.begin(), s.logits.begin() + m.c.vocab_size);
    if (i == steps) break;
    int t = forced ? (*forced)[i] : argmax_cpu(s.logits.data(), m.c.vocab_size);
    out.tokens.push_back(t);
    if (mode == KVMode::svd && lrm->spec.policy == KVRankPolicy::importance) lr.next_scores = {1.0f};
    forward_cpu(m.c, m.w, kv, s, &t, 1, LogitsMode::last, pool);
  }
  if (mode == KVMode::svd) out.lowrank_bytes = lr.bytes_used(kv.n);
  return out;
}

// The tests built on this check identities to 1e-4 (full ranks == the full cache, keep-all == svd alone), which
// hold for the algorithm, not for weights rounded to fp16: their folded weights are fp32 (fold=f32) unless the
// spec says otherwise. The default fp16 fold is checked in tests/test_kv_lowrank_quality.cpp (and on the demo
// model, where these paths run with it).
inline std::unique_ptr<llm::KVLowRankModel> lowrank_model(const TinyLlama2& m, const std::string& spec,
                                                          llm::ThreadPool* pool) {
  const std::string s = spec.find("fold=") == std::string::npos ? spec + (spec == "svd" ? ":" : ",") + "fold=f32" : spec;
  return llm::kv_lowrank_model_create(llm::kv_spec_parse(s), "", m.c, m.w, pool);
}

// max over steps of max |a - b| / (1 + max |b|)
inline float rel_diff(const KVRunOut& a, const KVRunOut& b) {
  float d = 0;
  for (size_t i = 0; i < b.logits.size(); ++i)
    d = std::max(d, max_abs_diff(a.logits[i], b.logits[i]) / (1.0f + max_abs(b.logits[i])));
  return d;
}

}  // namespace llm_test
