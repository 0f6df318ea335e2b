// svd policy=importance on the CUDA backend (issues 6 and 7; engine/forward_cuda.cu lr_layer_ranks_apply): the
// unified cache's prefill ranks every prompt token's value rank per layer and KV head from that layer's own scores
// (the 20/40/40 split of kv_policy_ranks), Session::set_token_scores (cuda_session_set_token_scores) overrides them
// for a call, later tokens take v_high. Against the CPU twin (kv_prefill_forward) on the same bf16 weights and bases:
//  - synthetic models (no file needed): the value rank of every (layer, KV head, entry) equal to the CPU's, the KV
//    bytes equal, the logits of the prompt, of decode steps (the graph), of a 5-token call and of the steps after it
//    within the unified cache's bound, and greedy decoding from the prompt (the CPU's greedy path teacher-forced
//    on the device: its top-1 at each step); alone (every entry at 16 bits) and with quant/evict; given scores;
//  - the demo model (skipped when absent) on the same bf16 weights: ranks equal but for near-tied swaps in the upper
//    layers, bytes equal, logits of the prompt and 3 decode steps; and through llm::Session with set_token_scores
//    (the CPU on the file's Q4_1 weights): logits, the rows the CPU decides clearly, the KV bytes;
//  - a scores count that does not match the call, and scores for a cache that is not low-rank, are refused (the
//    low-rank cache alone without scores: test_forward_cuda.cu).
// Short prompts and few steps: these also run under the CPU emulation of CUDA.
#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <string>

#include "cuda_forward_test_util.cuh"
#include "cuda_test_util.cuh"
#include "engine/forward_cuda.cuh"
#include "engine/kv_lowrank.h"
#include "engine/kv_prefill.h"
#include "engine/llm.h"
#include "engine/model.h"
#include "kernels/ops_cpu.h"
#include "kernels/threadpool_cpu.h"
#include "loader/model_file.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

using namespace llm;
using namespace llm_cuda_test;

namespace {

// The CPU twin: the calls in order; scores[i] (when non-empty) are set for call i, as Session::set_token_scores.
std::vector<float> run_cpu(const Config& c, const Weights& w, KVPrefill& p, int ctx,
                           const std::vector<std::vector<int>>& runs, const std::vector<std::vector<float>>& scores,
                           ThreadPool* pool) {
  KVCache kv = kvcache_create(c, ctx, /*allocate=*/false);
  kv.prefill = &p;
  RunState rs = runstate_create(c, ctx);
  std::vector<float> out;
  for (size_t i = 0; i < runs.size(); ++i) {
    if (i < scores.size() && !scores[i].empty()) p.next_scores = scores[i];
    forward_cpu(c, w, kv, rs, runs[i].data(), int(runs[i].size()), LogitsMode::last, pool);
    out.insert(out.end(), rs.logits.begin(), rs.logits.begin() + c.vocab_size);
  }
  return out;
}
std::vector<float> run_gpu_scored(CudaSession& s, const std::vector<std::vector<int>>& runs,
                                  const std::vector<std::vector<float>>& scores) {
  const int V = s.m->c.vocab_size;
  std::vector<float> out(runs.size() * V);
  cuda_session_reset(s);
  for (size_t i = 0; i < runs.size(); ++i) {
    if (i < scores.size() && !scores[i].empty()) cuda_session_set_token_scores(s, scores[i]);
    forward_cuda(s, runs[i].data(), int(runs[i].size()), LogitsMode::last, out.data() + i * V);
  }
  return out;
}

// The entries of the device's packed cache against the CPU's: positions and value ranks per (layer, KV head,
// entry), the prompt's and the later calls'. margin: the smallest relative gap between the device's scores on
// either side of a 20%/60% class boundary over every (layer, KV head): how close the ranking came to a tie that
// the bf16-vs-fp32 rounding of the scores could flip (reported; the seeds here leave every rank decided).
struct Ranks {
  int entries = 0, differ = 0;
  int self_checked = 0, self_differ = 0;  // prompt entries against the ranks of the device's own scores
  double margin = 1e30;
  double tie = 0;  // over the differing prompt entries: the largest relative distance of the device's score from
                   // the class boundary it fell on the other side of (how near a tie the rounding flipped)
  std::vector<int> hist;  // entries by value rank (0 .. r_vmax), the device's
};
Ranks compare_ranks(const CudaSession& s, const KVPrefill& p, int n_prompt) {
  const Config& c = s.m->c;
  const CudaKVQ& q = *s.kvq;
  const int L = c.n_layers, Hkv = c.n_kv_heads, cap = s.capacity, later = s.n - n_prompt;
  const KVRanks& R = s.m->lowrank->ranks;
  std::vector<uint16_t> vr(size_t(L) * Hkv * cap);
  CUDA_CHECK(cudaMemcpy(vr.data(), q.lr_vrank.ptr, vr.size() * 2, cudaMemcpyDeviceToHost));
  std::vector<float> acc(size_t(L) * 2 * Hkv * n_prompt);
  CUDA_CHECK(cudaMemcpy(acc.data(), q.imp.ptr, acc.size() * 4, cudaMemcpyDeviceToHost));
  std::vector<int> pos(n_prompt);
  std::iota(pos.begin(), pos.end(), 0);
  const int n_high = (n_prompt * 2 + 9) / 10, n_med = (n_prompt * 4 + 9) / 10;  // kv_policy_ranks' split
  Ranks r;
  r.hist.assign(R.v_max() + 1, 0);
  for (int l = 0; l < L; ++l) {
    const KVPrefillLayer& C = p.layers[l];
    const int E = q.h_entries[l] + later;
    REQUIRE(int(C.pos.size()) == E);
    const float* cum = acc.data() + size_t(l) * 2 * Hkv * n_prompt;
    const KVImportance I = kv_importance_compute(cum, cum + size_t(Hkv) * n_prompt, Hkv, n_prompt, c.n_heads / Hkv,
                                                 std::min(q.spec.imp.w, n_prompt), pos.data(), n_prompt, q.spec.imp);
    for (int g = 0; g < Hkv; ++g) {
      const float* sc = I.score.data() + size_t(g) * n_prompt;
      if (q.lr_layer_ranks) {  // the ranks the device's own scores give (lr_layer_ranks_apply's ranking, host side)
        std::vector<int32_t> own(n_prompt);
        int step = 0;
        kv_policy_ranks(own.data(), KVRankPolicy::importance, R, 0, n_prompt, step,
                        std::vector<float>(sc, sc + n_prompt));
        for (int e = 0; e < std::min(E, q.h_entries[l]); ++e) {
          ++r.self_checked;
          if (vr[(size_t(l) * Hkv + g) * cap + e] != own[C.pos[e]]) ++r.self_differ;
        }
      }
      std::vector<float> sorted(sc, sc + n_prompt);
      std::sort(sorted.begin(), sorted.end(), std::greater<float>());
      std::vector<float> bounds;  // the class boundaries: midpoints of the scores on either side
      for (int k : {n_high, n_high + n_med})
        if (k > 0 && k < n_prompt) {
          r.margin = std::min(r.margin, double(sorted[k - 1] - sorted[k]) / std::max(1e-30f, sorted[k - 1]));
          bounds.push_back(0.5f * (sorted[k - 1] + sorted[k]));
        }
      for (int e = 0; e < E; ++e) {
        ++r.entries;
        const int gpu = vr[(size_t(l) * Hkv + g) * cap + e];
        CHECK(q.h_epos[size_t(l) * cap + e] == C.pos[e]);
        r.hist[std::min(gpu, R.v_max())]++;
        if (gpu == C.vrank[g][e]) continue;
        ++r.differ;
        double near = 1e30;  // a later entry's rank is not score-ranked: any difference there stays at 1e30
        if (e < q.h_entries[l] && q.lr_layer_ranks)
          for (float b : bounds) near = std::min(near, std::fabs(double(sc[C.pos[e]]) - b) / b);
        r.tie = std::max(r.tie, near);
      }
    }
  }
  return r;
}

}  // namespace

TEST_CASE("cuda svd policy=importance on synthetic models: ranks, bytes and logits match the CPU twin") {
  if (!have_cuda()) return;
  ThreadPool pool(4);
  for (const Config& c : {small_config(256, 4, 2, 512, 2, 512, RopeLayout::half_split),
                          small_config(512, 4, 1, 768, 3, 1000, RopeLayout::interleaved)}) {
    CAPTURE(c.head_dim);
    std::mt19937 rng(11);
    const std::vector<int> prompt = random_tokens(rng, 40, c.vocab_size);
    const std::vector<std::vector<int>> runs = calls(prompt, rng, c.vocab_size, 6);
    const int ctx = 96, V = c.vocab_size;
    // alone (every entry at 16 bits: only the ranks compress; the greedy test below runs it with a short question
    // window); with one quant width and a position-kept eviction (the widths and kept entries do not depend on the
    // scores, so they are the same on both sides whatever the rounding: only the ranks are score-ranked)
    const char* specs[] = {"svd:k=1/4,v=d/4/d/2/d,policy=importance",
                           "svd:k=1/4,v=d/8/d/4/d,policy=importance+quant:4,recent=6",
                           "svd:k=1/4,v=d/4/d/2/d,policy=importance+evict:streaming,budget=0.5+quant:8,recent=4+"
                           "imp:w=4,sinks=2"};
    for (const char* text : specs) {
      const std::string spec_text = text;
      CAPTURE(spec_text);
      CudaModel m = cuda_model_alloc(c, false);
      cuda_model_randomize(m, 42);
      HostWeights h;
      host_weights(m, h);
      std::string base;
      const KVPrefillSpec spec = kv_prefill_spec_parse(text, base);
      const auto lrm = kv_lowrank_model_create(kv_spec_parse(base), "", c, h.w, &pool);
      KVPrefill p = kv_prefill_create(spec, c, lrm.get());
      const std::vector<float> ref = run_cpu(c, h.w, p, ctx, runs, {}, &pool);
      // the same cache at v_high for every token (policy=uniform, the same bases and W_fused): what the ranks change
      const std::string ubase = "svd:k=" + std::to_string(lrm->ranks.k) + ",v=" + std::to_string(lrm->ranks.v_high) +
                                ",policy=uniform";
      const auto ulrm = kv_lowrank_model_create(kv_spec_parse(ubase), "", c, h.w, &pool);
      KVPrefill pu = kv_prefill_create(spec, c, ulrm.get());
      const std::vector<float> uni = run_cpu(c, h.w, pu, ctx, runs, {}, &pool);
      cuda_model_add_lowrank(m, *lrm);
      CudaSessionPtr s = cuda_session_create(m, ctx, ctx);
      cuda_session_enable_prefill(*s, spec);
      const std::vector<float> got = run_gpu(*s, runs);
      const Ranks r = compare_ranks(*s, p, int(prompt.size()));
      const Diff d = diff(got, ref, V, 1e30f), du = diff(uni, ref, V, 1e30f);
      MESSAGE(spec_text << ", head_dim " << c.head_dim << ": ranks differ at " << r.differ << " of " << r.entries
                        << " entries (smallest class-boundary gap " << r.margin << "); max |logit diff| " << d.max_abs
                        << " (max |logit| " << d.max_ref << ") over " << d.rows << " calls; importance vs uniform "
                        << "(cpu) " << du.max_abs << "; KV bytes cpu " << p.bytes_used() << ", cuda "
                        << cuda_session_kv_bytes(*s));
      CHECK(r.differ == 0);
      CHECK(r.hist[lrm->ranks.v_low] > 0);  // the three ranks all occur
      CHECK(r.hist[lrm->ranks.v_med] > 0);
      CHECK(cuda_session_kv_bytes(*s) == p.bytes_used());
      // the bound of the unified cache (test_forward_kvq_cuda.cu): bf16 activations against fp32 (the full cache's
      // 0.03 max + 0.01) plus rows quantised from bf16 instead of fp32 inputs; the ranks themselves equal
      CHECK(d.max_abs <= 0.05 * d.max_ref + 0.01);
      CHECK(3 * d.max_abs < du.max_abs);  // the ranks move the logits far beyond the CPU-GPU difference
      CHECK(top1_agreements(got, ref, V, d.rows) >= d.rows - 1);  // random logits: at most one near-tie may flip
      const std::vector<float> again = run_gpu(*s, runs);  // reset: the same ranks and layout, bit for bit
      CHECK(again == got);
    }
  }
}

TEST_CASE("cuda svd policy=importance: greedy decoding after the prefill follows the CPU twin") {
  if (!have_cuda()) return;
  ThreadPool pool(4);
  const Config c = small_config(256, 4, 2, 512, 2, 512, RopeLayout::half_split);
  const char* text = "svd:k=1/4,v=d/4/d/2/d,policy=importance+imp:w=8,recent=8,sinks=2";
  CudaModel m = cuda_model_alloc(c, false);
  cuda_model_randomize(m, 43);
  HostWeights h;
  host_weights(m, h);
  std::string base;
  const KVPrefillSpec spec = kv_prefill_spec_parse(text, base);
  const auto lrm = kv_lowrank_model_create(kv_spec_parse(base), "", c, h.w, &pool);
  std::mt19937 rng(3);
  const std::vector<int> prompt = random_tokens(rng, 32, c.vocab_size);
  const int ctx = 64, V = c.vocab_size, steps = 8;
  // the CPU's greedy path: each step feeds the previous step's argmax
  std::vector<std::vector<int>> runs = {prompt};
  KVPrefill p = kv_prefill_create(spec, c, lrm.get());
  {
    KVCache kv = kvcache_create(c, ctx, /*allocate=*/false);
    kv.prefill = &p;
    RunState rs = runstate_create(c, ctx);
    forward_cpu(c, h.w, kv, rs, prompt.data(), int(prompt.size()), LogitsMode::last, &pool);
    for (int i = 0; i < steps; ++i) {
      runs.push_back({argmax_cpu(rs.logits.data(), V)});
      forward_cpu(c, h.w, kv, rs, runs.back().data(), 1, LogitsMode::last, &pool);
    }
  }
  KVPrefill p2 = kv_prefill_create(spec, c, lrm.get());
  const std::vector<float> ref = run_cpu(c, h.w, p2, ctx, runs, {}, &pool);
  cuda_model_add_lowrank(m, *lrm);
  CudaSessionPtr s = cuda_session_create(m, ctx, ctx);
  cuda_session_enable_prefill(*s, spec);
  const std::vector<float> got = run_gpu(*s, runs);  // teacher-forced on the CPU's path: the decode graph's rows
  const Ranks r = compare_ranks(*s, p2, int(prompt.size()));
  CHECK(r.differ == 0);
  CHECK(cuda_session_kv_bytes(*s) == p2.bytes_used());
  const Diff d = diff(got, ref, V, 1e30f);
  int same = 0;  // the device's greedy choice at each step is the CPU's next token (the last row has none)
  while (same < steps && argmax_cpu(got.data() + size_t(same) * V, V) == runs[same + 1][0]) ++same;
  MESSAGE("greedy: the device follows the CPU's path for " << same << " of " << steps << " steps; max |logit diff| "
          << d.max_abs << " (max |logit| " << d.max_ref << ")");
  CHECK(d.max_abs <= 0.05 * d.max_ref + 0.01);
  for (int i = 0; i < steps; ++i) {  // a flip only where the CPU's own lead is within twice the bound
    if (d.lead[i] > 2 * (0.05 * d.max_ref + 0.01)) CHECK(argmax_cpu(got.data() + size_t(i) * V, V) == runs[i + 1][0]);
  }
  // free greedy decoding on the device (its own argmax fed back through the decode graph) gives the same tokens
  // as long as the teacher-forced rows agree
  cuda_session_reset(*s);
  std::vector<float> lg(V);
  forward_cuda(*s, prompt.data(), int(prompt.size()), LogitsMode::last, lg.data());
  for (int i = 0; i < same; ++i) {
    const int t = argmax_cpu(lg.data(), V);
    CHECK(t == runs[i + 1][0]);
    forward_cuda(*s, &t, 1, LogitsMode::last, lg.data());
  }
}

TEST_CASE("cuda svd policy=importance: set_token_scores ranks the call as on the CPU") {
  if (!have_cuda()) return;
  ThreadPool pool(4);
  const Config c = small_config(256, 4, 2, 512, 2, 512, RopeLayout::half_split);
  std::mt19937 rng(9);
  const std::vector<int> prompt = random_tokens(rng, 30, c.vocab_size);
  const std::vector<std::vector<int>> runs = calls(prompt, rng, c.vocab_size, 3);  // prompt, 3 steps, 5, 3 steps
  // distinct scores (a random permutation) for the prompt and for the 5-token call; the single steps take v_high
  std::vector<std::vector<float>> scores(runs.size());
  for (size_t i = 0; i < runs.size(); ++i)
    if (runs[i].size() > 1) {
      scores[i].resize(runs[i].size());
      std::iota(scores[i].begin(), scores[i].end(), 0.0f);
      std::shuffle(scores[i].begin(), scores[i].end(), rng);
    }
  const int ctx = 64, V = c.vocab_size;
  for (const char* text : {"svd:k=1/4,v=d/4/d/2/d,policy=importance", "svd:k=1/4,v=d/4/d/2/d,policy=importance+"
                                                                       "quant:8,recent=4"}) {
    const std::string spec_text = text;
    CAPTURE(spec_text);
    CudaModel m = cuda_model_alloc(c, false);
    cuda_model_randomize(m, 44);
    HostWeights h;
    host_weights(m, h);
    std::string base;
    const KVPrefillSpec spec = kv_prefill_spec_parse(text, base);
    const auto lrm = kv_lowrank_model_create(kv_spec_parse(base), "", c, h.w, &pool);
    KVPrefill p = kv_prefill_create(spec, c, lrm.get());
    const std::vector<float> ref = run_cpu(c, h.w, p, ctx, runs, scores, &pool);
    cuda_model_add_lowrank(m, *lrm);
    CudaSessionPtr s = cuda_session_create(m, ctx, ctx);
    cuda_session_enable_prefill(*s, spec);
    const std::vector<float> got = run_gpu_scored(*s, runs, scores);
    const Ranks r = compare_ranks(*s, p, int(prompt.size()));
    CHECK(r.differ == 0);  // the given scores decide: no rounding can move a rank
    CHECK(cuda_session_kv_bytes(*s) == p.bytes_used());
    // the given scores put the prompt's tokens in other classes than its own scores would: a different cache
    const std::vector<float> own = run_gpu(*s, runs);
    const Diff d = diff(got, ref, V, 1e30f), dn = diff(own, got, V, 1e30f);
    MESSAGE(spec_text << " with given scores: max |logit diff| " << d.max_abs << " (max |logit| " << d.max_ref
                      << "); vs the prefill's own scores " << dn.max_abs);
    CHECK(d.max_abs <= 0.05 * d.max_ref + 0.01);
    CHECK(3 * d.max_abs < dn.max_abs);
    // a count that does not match the call is refused in that call, and consumed scores do not linger
    cuda_session_reset(*s);
    cuda_session_set_token_scores(*s, std::vector<float>(3, 1.0f));
    std::vector<float> lg(V);
    CHECK_THROWS_WITH_AS(forward_cuda(*s, prompt.data(), int(prompt.size()), LogitsMode::last, lg.data()),
                         doctest::Contains("3 scores given for a forward call of 30 tokens"), Error);
  }
  // no silent ignore: a session whose cache is not low-rank refuses the scores
  CudaModel full = cuda_model_alloc(c, false);
  cuda_model_randomize(full, 44);
  CudaSessionPtr fs = cuda_session_create(full, ctx, ctx);
  CHECK_THROWS_WITH_AS(cuda_session_set_token_scores(*fs, {1.0f}), doctest::Contains("not low-rank"), Error);
}

TEST_CASE("cuda svd policy=importance on the demo model through llm::Session with set_token_scores") {
  if (!have_cuda()) return;
  if (!llm_test::have_demo_model()) return;
  // the Model / Session wiring on cuda (the spec accepted, the unified cache enabled, Session::set_token_scores
  // reaching the device); the prefill's own scores are checked on the same bf16 weights in the next test case
  const char* spec = "svd:k=1/4,policy=importance";  // k=16, v=16/32/64, every entry at 16 bits
  Model cpu(llm_test::demo_model_path(), {.device = Device::cpu, .kv = spec});
  Model gpu(llm_test::demo_model_path(), {.device = Device::cuda, .kv = spec});
  CHECK(gpu.kv_description() == cpu.kv_description());
  const std::vector<int> prompt = cpu.tokenize("1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", true);
  const int V = cpu.config().vocab_size, steps = 3;
  // given scores for the prompt: descending by position (every rank decided by them, in every layer and head)
  std::vector<float> given(prompt.size());
  for (size_t i = 0; i < given.size(); ++i) given[i] = float(given.size() - i);
  // the CPU's greedy path, then both teacher-forced on it (3 decode steps: graph replays on cuda)
  std::vector<int> path;
  std::vector<float> want, got;
  size_t cpu_bytes = 0, gpu_bytes = 0;
  {
    Session s(cpu, {.n_ctx = 64});
    s.set_token_scores(given);
    s.feed(prompt);
    for (int i = 0; i <= steps; ++i) {
      want.insert(want.end(), s.logits(), s.logits() + V);
      if (i == steps) break;
      path.push_back(argmax_cpu(s.logits(), V));
      s.feed({path.back()});
    }
    cpu_bytes = s.kv_cache_bytes();
  }
  {
    Session s(gpu, {.n_ctx = 64});
    s.set_token_scores(given);
    s.feed(prompt);
    got.insert(got.end(), s.logits(), s.logits() + V);
    for (int t : path) {
      s.feed({t});
      got.insert(got.end(), s.logits(), s.logits() + V);
    }
    gpu_bytes = s.kv_cache_bytes();
  }
  const Diff d = diff(got, want, V, 1.0f);
  MESSAGE(std::string(spec) << " with set_token_scores: cuda vs cpu over " << d.rows << " rows: max |logit diff| "
                            << d.max_abs << " (max |logit| " << d.max_ref << "); top-1 where the CPU leads by > 1: "
                            << d.decided_agree << "/" << d.decided << "; KV bytes cpu " << cpu_bytes << ", cuda "
                            << gpu_bytes);
  // The CPU runs the file's Q4_1 weights, the device their bf16 rounding (the bases of both made from the Q4_1
  // weights). The given scores fix every rank, so the bound is svd alone's at this k (test_forward_kvq_cuda.cu:
  // 2.70 measured there, 4.5 for the unified cache; measured here 1.91 of 26.3). Without given scores the prefill's
  // own scores drift with the weights from layer 8 on: in a probe 56 of 2970 entries took the neighbouring rank
  // class and the logits moved by 6.13 of 24.6 (policy=seed on this path: 2.22), hence the same-weights test below.
  CHECK(d.max_abs < 4.5);
  CHECK(d.decided_agree == d.decided);
  // every entry at 16 bits and each (layer, KV head) splits its tokens 20/40/40: the counts per rank, hence the
  // bytes, are a function of the prompt length
  CHECK(gpu_bytes == cpu_bytes);
}

TEST_CASE("cuda svd policy=importance on the demo model's bf16 weights: ranks, bytes and logits match the CPU twin") {
  if (!have_cuda()) return;
  if (!llm_test::have_demo_model()) return;
  ModelFile f = model_file_open(llm_test::demo_model_path());
  const Config& c = f.config;
  HostWeights h;
  const CudaModelPtr m = upload_with_host_copy(f, h);
  const std::vector<int> prompt = gguf_tokens(f, "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,");
  ThreadPool pool(0);
  const char* text = "svd:k=1/4,policy=importance";
  std::string base;
  const KVPrefillSpec spec = kv_prefill_spec_parse(text, base);
  const auto lrm = kv_lowrank_model_create(kv_spec_parse(base), "", c, h.w, &pool);
  const int ctx = 64, V = c.vocab_size, steps = 3;
  std::vector<std::vector<int>> runs = {prompt};
  {  // the CPU's greedy path
    KVPrefill p = kv_prefill_create(spec, c, lrm.get());
    KVCache kv = kvcache_create(c, ctx, /*allocate=*/false);
    kv.prefill = &p;
    RunState rs = runstate_create(c, ctx);
    forward_cpu(c, h.w, kv, rs, prompt.data(), int(prompt.size()), LogitsMode::last, &pool);
    for (int i = 0; i < steps; ++i) {
      runs.push_back({argmax_cpu(rs.logits.data(), V)});
      forward_cpu(c, h.w, kv, rs, runs.back().data(), 1, LogitsMode::last, &pool);
    }
  }
  KVPrefill p = kv_prefill_create(spec, c, lrm.get());
  const std::vector<float> ref = run_cpu(c, h.w, p, ctx, runs, {}, &pool);
  cuda_model_add_lowrank(*m, *lrm);
  CudaSessionPtr s = cuda_session_create(*m, ctx, ctx);
  cuda_session_enable_prefill(*s, spec);
  const std::vector<float> got = run_gpu(*s, runs);
  const Ranks r = compare_ranks(*s, p, int(prompt.size()));
  const Diff d = diff(got, ref, V, 1.0f);
  MESSAGE(std::string(text) << " on the demo model's bf16 weights: ranks differ at " << r.differ << " of " << r.entries
               << " entries (smallest class-boundary gap " << r.margin << ", differing entries within " << r.tie
               << " of theirs), from the device's own scores' ranks at " << r.self_differ << " of "
               << r.self_checked << "; max |logit diff| " << d.max_abs << " (max |logit| " << d.max_ref << ") over "
               << d.rows << " rows; KV bytes cpu " << p.bytes_used() << ", cuda " << cuda_session_kv_bytes(*s));
  // The device's ranking and packing, exactly: every prompt entry at the rank its own scores give it.
  REQUIRE(r.self_checked > 0);
  CHECK(r.self_differ == 0);
  // Against the CPU, the scores drift: 30 layers of bf16 activations against fp32, and on the GPU cuBLAS's
  // tensor-core GEMMs sum in another order than the emulator. Measured: the emulator 8 of 2970 entries across a
  // class boundary (layers 20-28), within 2.1% of it; the H100 (2026-11-22) 46 of 2970, within 16.7% (the upper
  // layers' scores move by that much). A wrong score, split or truncation moves whole classes: 20-40% of the
  // entries of a (layer, KV head), so 5% still separates drift from a bug, with the exact check above.
  CHECK(r.differ <= r.entries / 20);
  // a swap keeps each class's size: the bytes are equal
  CHECK(cuda_session_kv_bytes(*s) == p.bytes_used());
  // the logits follow the ranks: k = head_dim/4 and the flipped value ranks amplify the activations' rounding
  // (measured 1.20 of 24.6 on the emulator, 4.41 on the H100 with its 46 flips); a quarter of the largest logit
  // bounds that drift, and the decided rows must agree
  CHECK(d.max_abs < 0.25 * d.max_ref);
  CHECK(d.decided_agree == d.decided);
}
