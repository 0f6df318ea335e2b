// Issue 7 on the CUDA backend (engine/forward_cuda.cu, CudaKVQ): the mixed-precision KV cache built by the
// compressed prefill (importance on the device, selection and classes as engine/kv_prefill.cpp, rows quantised from
// the bf16 cache), read by attention_quant_decode_cuda in the decode graph, the 16-bit window sliding on the device.
// Against the CPU path with the same --kv spec:
//  - synthetic models made on the device (no file needed), the CPU running the very same bf16 weights, with specs
//    whose classes and kept tokens do not depend on the scores (one width; streaming eviction), so CPU and GPU
//    build the same cache up to the bf16 rounding of its inputs: logits of the prompt, of decode steps (the graph),
//    of a 5-token later call and of the steps after it, the byte counts equal, a reset session reproducing itself
//    bit for bit, and quant:16 equal to the full-cache CUDA path;
// On the demo model (skipped when absent), through the public API:
//  - logits of the prompt and of 12 teacher-forced decode steps (the window of 8 slides 12 times), the same greedy
//    text where the CPU's margins allow, and the same KV byte count (a deterministic function of the spec);
//  - quant:16 (every token at 16 bits) equals the full-cache CUDA path: the prompt's logits bit for bit (the same
//    prefill), the decode steps within the rounding of a different attention kernel over the same bf16 values;
//  - specs the GPU path does not run (f16 with a compressed cache; svd policy=importance runs:
//    test_forward_svdimp_cuda.cu, svd with keep:<1: test_forward_svdkeep_cuda.cu;
//    keep: on the full-precision cache: test_forward_keep_cuda.cu) give an llm::Error that names the part and says
//    what to use instead.
// The unified cache (svd + quant/evict, policy seed|uniform) on synthetic models: the CPU's kv_prefill_forward on
// the same bf16 weights and bases against the device's rank-space packed cache, as for the full-precision one.
// Short prompt and few steps: these also run under the CPU emulation of CUDA.
#include <algorithm>
#include <cmath>

#include "cuda_forward_test_util.cuh"
#include "cuda_test_util.cuh"
#include "engine/forward_cuda.cuh"
#include "engine/kv_lowrank.h"
#include "engine/kv_prefill.h"
#include "engine/llm.h"
#include "engine/model.h"
#include "kernels/ops_cpu.h"
#include "kernels/threadpool_cpu.h"
#include "test_util.h"

using namespace llm;
using namespace llm_cuda_test;

namespace {

// The prompt of test_forward_cuda.cu's greedy check: its fp32 greedy path leads its runner-up by >= 3.4 logits at
// every step (full cache), ~20 tokens, so a recent window of 8 leaves ~12 prompt tokens to quantise.
const char* const kPrompt = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,";
constexpr int kCtx = 64, kSteps = 12;

struct Run {
  std::vector<float> logits;  // (1 + feed.size(), V): after the prompt, then after each fed token
  size_t kv_bytes = 0;
  std::vector<int> greedy;    // a fresh session's greedy continuation (generate)
};

// Teacher-forced: the prompt, then the `feed` tokens one at a time (on cuda each is a replay of the decode graph).
Run run(Model& m, const std::vector<int>& prompt, const std::vector<int>& feed, int n_greedy) {
  const int V = m.config().vocab_size;
  Run r;
  {
    Session s(m, {.n_ctx = kCtx});
    s.feed(prompt);
    r.logits.insert(r.logits.end(), s.logits(), s.logits() + V);
    for (int t : feed) {
      s.feed({t});
      r.logits.insert(r.logits.end(), s.logits(), s.logits() + V);
    }
    r.kv_bytes = s.kv_cache_bytes();
  }
  if (n_greedy > 0) {
    Session s(m, {.n_ctx = kCtx});
    s.feed(prompt);
    GenerateOptions g;
    g.max_tokens = n_greedy;
    g.stop_at_eos = false;
    r.greedy = s.generate(g).tokens;
  }
  return r;
}

}  // namespace

TEST_CASE("cuda KV quant on synthetic models: the packed cache, decode graph and sliding window match the CPU") {
  if (!have_cuda()) return;
  ThreadPool pool(4);
  for (const Config& c : {small_config(256, 4, 2, 512, 2, 512, RopeLayout::half_split),
                          small_config(512, 4, 1, 768, 3, 1000, RopeLayout::interleaved)}) {
    CAPTURE(c.head_dim);
    CudaModel m = cuda_model_alloc(c, false);
    cuda_model_randomize(m, 42);
    HostWeights h;
    host_weights(m, h);
    std::mt19937 rng(5);
    const std::vector<int> prompt = random_tokens(rng, 40, c.vocab_size);
    const std::vector<std::vector<int>> runs = calls(prompt, rng, c.vocab_size, 10);
    const int ctx = 96, V = c.vocab_size;
    CudaSessionPtr full = cuda_session_create(m, ctx, ctx);  // the full bf16 cache, for reference
    const std::vector<float> want = run_gpu(*full, runs);
    // one width each (no ranking), and streaming eviction (kept by position): the same entries and classes on both
    // sides; the window of 4 slides on every decode step, re-quantising to the spec's width, and by 5 in one call
    // visible: the compression moves the logits well beyond the CPU-GPU rounding difference (2 bits; eviction),
    // so the GPU must be much closer to the CPU's compressed cache than to the full one
    const std::pair<const char*, bool> specs[] = {{"quant:8,recent=4", false},
                                                  {"quant:2,recent=6,group=16", true},
                                                  {"evict:streaming,budget=0.5+quant:8,recent=4+imp:w=4,sinks=2", true},
                                                  {"evict:h2o,budget=1", false},
                                                  // rotated rows: H q, H k, H v on the device, the output back
                                                  {"quant:2,recent=6,group=16,hadamard", true},
                                                  {"evict:streaming,budget=0.5+quant:4,recent=4,hadamard+imp:w=4,"
                                                   "sinks=2", true}};
    for (const auto& [text, visible] : specs) {
      const std::string spec_text = text;
      CAPTURE(spec_text);
      std::string base;
      const KVPrefillSpec spec = kv_prefill_spec_parse(text, base);
      size_t cpu_bytes = 0;
      const std::vector<float> ref = run_cpu(c, h.w, spec, ctx, runs, &pool, &cpu_bytes);
      CudaSessionPtr s = cuda_session_create(m, ctx, ctx);
      cuda_session_enable_prefill(*s, spec);
      const std::vector<float> got = run_gpu(*s, runs);
      CHECK(cuda_session_kv_bytes(*s) == cpu_bytes);
      const Diff d = diff(got, ref, V, 1e30f), dq = diff(got, want, V, 1e30f);
      MESSAGE(spec_text << ", head_dim " << c.head_dim << ": max |logit diff| " << d.max_abs << " (max |logit| "
                        << d.max_ref << ") over " << d.rows << " calls; vs the full cache " << dq.max_abs
                        << "; KV bytes " << cpu_bytes);
      // bf16 activations against fp32 (the full cache's bound is 0.03 max + 0.01), plus rows quantised from bf16
      // instead of fp32 inputs (a code may move by one step at a rounding boundary): the low-rank cache's bound
      CHECK(d.max_abs <= 0.05 * d.max_ref + 0.01);
      if (visible) CHECK(3 * d.max_abs < dq.max_abs);
      int agree = 0;
      for (int i = 0; i < d.rows; ++i)
        agree += argmax_cpu(got.data() + size_t(i) * V, V) == argmax_cpu(ref.data() + size_t(i) * V, V);
      CHECK(agree >= d.rows - 1);  // random logits: at most one near-tie may flip
      // reset and run again: the same layout, the graph kept, every logit the same bit for bit
      const std::vector<float> again = run_gpu(*s, runs);
      CHECK(again == got);
    }
    // every token at 16 bits: the full-cache path's prompt logits bit for bit, then the quant decode kernel
    std::string base;
    CudaSessionPtr s16 = cuda_session_create(m, ctx, ctx);
    cuda_session_enable_prefill(*s16, kv_prefill_spec_parse("quant:16", base));
    const std::vector<float> got16 = run_gpu(*s16, runs);
    CHECK(std::equal(want.begin(), want.begin() + V, got16.begin()));
    const Diff d16 = diff(got16, want, V, 1e30f);
    MESSAGE("quant:16 vs full cache, head_dim " << c.head_dim << ": max |logit diff| " << d16.max_abs);
    CHECK(d16.max_abs <= 0.02 * d16.max_ref + 0.01);  // the same bf16 values; other summation order only
  }
}

TEST_CASE("cuda KV quant on the demo model: logits, greedy text and bytes match the CPU path") {
  if (!have_cuda()) return;
  if (!llm_test::have_demo_model()) return;
  // 8/4/2 bits with a window of 8: the ~12 prompt tokens before the window are quantised, and the 12 decode steps
  // slide the window over the rest of the prompt and the first decoded tokens (re-quantised to 4 bits); the second
  // spec also evicts half the prompt by H2O's score (question window 4 and 2 sinks, so there is a choice to make);
  // the third caches Walsh-Hadamard-rotated rows (hadamard_rows_cuda on q, k, v and the attention output).
  // Greedy text: teacher-forced on the CPU's greedy path, the GPU's top-1 of each row is the token its own greedy
  // decoding would pick as long as the paths agree, so the agreement of the rows is the agreement of the texts;
  // the first spec also generates freely (Session::generate: the pending-token path), at twice the device time.
  bool first = true;
  for (const char* spec : {"quant:8/4/2=0.2/0.5/0.3,recent=8",
                           "evict:h2o,budget=0.5+quant:8/4=0.5/0.5,recent=8+imp:w=4,sinks=2",
                           "quant:8/4/2=0.2/0.5/0.3,recent=8,hadamard"}) {
    // under the CPU emulator the hadamard spec (its kernels and its synthetic-model cases run there) and the free
    // generation (as long again) are left to a GPU run, keeping CI's emulated tests short
    if (cuda_emulated() && std::string(spec).find("hadamard") != std::string::npos) {
      MESSAGE("reduced under emulation: the demo-model hadamard spec is left to a GPU run");
      continue;
    }
    const bool generate = first && !cuda_emulated();
    if (first && cuda_emulated()) MESSAGE("reduced under emulation: the free generation of the first spec is skipped");
    first = false;
    const std::string spec_text = spec;
    CAPTURE(spec_text);
    const bool evicts = std::string(spec).find("evict") != std::string::npos;
    Model cpu(llm_test::demo_model_path(), {.device = Device::cpu, .kv = spec});
    Model gpu(llm_test::demo_model_path(), {.device = Device::cuda, .kv = spec});
    CHECK(gpu.kv_description() == cpu.kv_description());
    const std::vector<int> prompt = cpu.tokenize(kPrompt, true);
    const Run c = run(cpu, prompt, {}, kSteps);
    const std::vector<int> feed(c.greedy.begin(), c.greedy.end() - 1);  // the CPU's own greedy path
    const Run cr = run(cpu, prompt, feed, 0);
    const Run g = run(gpu, prompt, feed, generate ? kSteps : 0);
    const int V = cpu.config().vocab_size;
    const Diff d = diff(g.logits, cr.logits, V, 1.0f);
    size_t same = 0, near_tie = 0;
    while (same < c.greedy.size() && argmax_cpu(g.logits.data() + same * V, V) == c.greedy[same]) ++same;
    while (near_tie < d.lead.size() && d.lead[near_tie] >= 0.5f) ++near_tie;
    MESSAGE(spec_text << ": cuda vs cpu over " << d.rows << " rows: max |logit diff| " << d.max_abs << " (max |logit| "
                 << d.max_ref << "); top-1 where the CPU leads by > 1: " << d.decided_agree << "/" << d.decided
                 << "; greedy agrees on " << same << " of " << kSteps << " (first CPU lead < 0.5 at step " << near_tie
                 << "); KV bytes cpu " << cr.kv_bytes << ", cuda " << g.kv_bytes);
    // The bound: bf16 weights and activations against the CPU's fp32 move the demo model's logits by up to ~0.65
    // (tools/cuda_bf16_emulation.py; test_forward_cuda.cu bounds the full cache by 2). Here the keys and values are
    // also quantised from bf16 instead of fp32 inputs (a code may land one step away at a rounding boundary) and
    // the importance is ranked from bf16 scores (a near-tied token may take the neighbouring class): a wrong
    // kernel, layout or slide puts garbage rows in the cache and moves logits by far more than 3.
    CHECK(d.max_abs < 3.0);
    CHECK(d.decided_agree == d.decided);
    CHECK(same >= std::min(near_tie, c.greedy.size()));
    if (generate) {
      size_t gen_same = 0;
      while (gen_same < c.greedy.size() && g.greedy[gen_same] == c.greedy[gen_same]) ++gen_same;
      CHECK(gen_same == same);  // free generation follows the teacher-forced rows
    }
    // bytes: rows by class, positions and widths. Without eviction the class sizes follow from the spec, not the
    // scores, so the counts are equal; with it, how many kept tokens fall inside the window depends on which were
    // kept (bf16 scores may pick a near-tied neighbour): within three entries per layer at the largest width
    const Config& cf = cpu.config();
    const double slack = evicts ? 3.0 * cf.n_layers * (cf.n_kv_heads * (4.0 * cf.head_dim + 1) + 4) : 0.0;
    CHECK(std::fabs(double(g.kv_bytes) - double(cr.kv_bytes)) <= slack);
  }
}

TEST_CASE("cuda KV quant:16 equals the full-cache CUDA path on the demo model") {
  if (!have_cuda()) return;
  if (!llm_test::have_demo_model()) return;
  if (cuda_emulated()) {  // ~55 s emulated; the synthetic-model case above compares quant:16 with the full cache
    MESSAGE("SKIPPED under emulation: quant:16 vs full cache on the demo model (runs on a GPU)");
    return;
  }
  Model cpu(llm_test::demo_model_path(), {.device = Device::cpu});
  Model full(llm_test::demo_model_path(), {.device = Device::cuda});
  Model q16(llm_test::demo_model_path(), {.device = Device::cuda, .kv = "quant:16"});
  const std::vector<int> prompt = full.tokenize(kPrompt, true);
  const Run c = run(cpu, prompt, {}, kSteps);  // a greedy path to teacher-force both CUDA runs on (host time only)
  const std::vector<int> feed(c.greedy.begin(), c.greedy.end() - 1);
  const Run fr = run(full, prompt, feed, 0);
  const Run q = run(q16, prompt, feed, 0);
  const int V = full.config().vocab_size;
  // the prompt: the same prefill kernels on the same inputs (the importance pass only reads them)
  CHECK(std::equal(fr.logits.begin(), fr.logits.begin() + V, q.logits.begin()));
  const Diff d = diff(q.logits, fr.logits, V, 1.0f);
  MESSAGE("quant:16 vs full cache on cuda: max |logit diff| " << d.max_abs << " (max |logit| " << d.max_ref << ")");
  // decode: the same bf16 keys and values, read by attention_quant_decode_cuda instead of attention_decode_cuda
  // (other split count and summation order, the output rounded to bf16 in both): the bound of the low-rank cache at
  // full ranks against the full cache (test_forward_cuda.cu)
  CHECK(d.max_abs <= 0.05 * d.max_ref + 0.01);
  CHECK(d.decided_agree == d.decided);
  for (int i = 0; i < d.rows; ++i)  // the same greedy text: the prompt's greedy path leads by >= 3.4 at every step
    CHECK(argmax_cpu(q.logits.data() + size_t(i) * V, V) == argmax_cpu(fr.logits.data() + size_t(i) * V, V));
}

TEST_CASE("cuda KV quant: the parts cuda does not run are refused when the model loads") {
  if (!have_cuda()) return;
  if (!llm_test::have_demo_model()) return;
  CHECK_THROWS_WITH_AS(Model(llm_test::demo_model_path(),
                             {.device = Device::cuda, .dtype = DType::f16,
                              .kv = "svd:k=16,v=16/32/64+quant:8/4=0.5/0.5+keep:0.5,linear"}),
                       doctest::Contains("--dtype bf16"), Error);
  // a bad spec is refused before anything reaches the device, as on the CPU
  CHECK_THROWS_AS(Model(llm_test::demo_model_path(), {.device = Device::cuda, .kv = "quant:8/4/2=0.5/0.5/0.5"}),
                  Error);
}

TEST_CASE("cuda unified KV (svd + quant/evict) on synthetic models: the rank-space packed cache matches the CPU") {
  if (!have_cuda()) return;
  ThreadPool pool(4);
  for (const Config& c : {small_config(256, 4, 2, 512, 2, 512, RopeLayout::half_split),
                          small_config(512, 4, 1, 768, 3, 1000, RopeLayout::interleaved)}) {
    CAPTURE(c.head_dim);
    std::mt19937 rng(7);
    const std::vector<int> prompt = random_tokens(rng, 40, c.vocab_size);
    const std::vector<std::vector<int>> runs = calls(prompt, rng, c.vocab_size, 10);
    const int ctx = 96, V = c.vocab_size;
    // one width each and streaming eviction, as above: the same entries and classes on both sides whatever the
    // scores; policy=seed changes the value ranks inside the prompt and at decode step 10 (the 5-token call);
    // visible: the 2-bit rows move the logits far beyond the CPU-GPU rounding difference
    const std::pair<const char*, bool> specs[] = {
        {"svd:k=1/4,v=d/2,policy=uniform+quant:8,recent=4", false},
        {"svd:k=1/4,v=d/4/d/2/d,policy=seed+quant:2,recent=6,group=16", true},
        {"svd:k=1/4,v=d/4/d/2/d,policy=seed+evict:streaming,budget=0.5+quant:4,recent=4+imp:w=4,sinks=2", true}};
    for (const auto& [text, visible] : specs) {
      const std::string spec_text = text;
      CAPTURE(spec_text);
      CudaModel m = cuda_model_alloc(c, false);
      cuda_model_randomize(m, 42);
      HostWeights h;
      host_weights(m, h);
      std::string base;
      const KVPrefillSpec spec = kv_prefill_spec_parse(text, base);
      const auto lrm = kv_lowrank_model_create(kv_spec_parse(base), "", c, h.w, &pool);
      size_t cpu_bytes = 0;
      const std::vector<float> ref = run_cpu(c, h.w, spec, ctx, runs, &pool, &cpu_bytes, lrm.get());
      cuda_model_add_lowrank(m, *lrm);
      CudaSessionPtr lr = cuda_session_create(m, ctx, ctx);  // svd alone: the reference without the prefill parts
      const std::vector<float> svd = run_gpu(*lr, runs);
      CudaSessionPtr s = cuda_session_create(m, ctx, ctx);
      cuda_session_enable_prefill(*s, spec);
      const std::vector<float> got = run_gpu(*s, runs);
      CHECK(cuda_session_kv_bytes(*s) == cpu_bytes);
      const Diff d = diff(got, ref, V, 1e30f), dq = diff(got, svd, V, 1e30f);
      MESSAGE(spec_text << ", head_dim " << c.head_dim << ": max |logit diff| " << d.max_abs << " (max |logit| "
                        << d.max_ref << ") over " << d.rows << " calls; vs svd alone on cuda " << dq.max_abs
                        << "; KV bytes " << cpu_bytes);
      CHECK(d.max_abs <= 0.05 * d.max_ref + 0.01);  // the bound of the full-precision packed cache above
      if (visible) CHECK(3 * d.max_abs < dq.max_abs);
      int agree = 0;
      for (int i = 0; i < d.rows; ++i)
        agree += argmax_cpu(got.data() + size_t(i) * V, V) == argmax_cpu(ref.data() + size_t(i) * V, V);
      CHECK(agree >= d.rows - 1);
      const std::vector<float> again = run_gpu(*s, runs);  // reset: the same layout, every logit bit for bit
      CHECK(again == got);
    }
  }
}

TEST_CASE("cuda unified KV (svd + quant) on the demo model: logits, greedy rows and bytes match the CPU path") {
  if (!have_cuda()) return;
  if (!llm_test::have_demo_model()) return;
  // the spec of docs/prefill-compression.md's example at one value rank (uniform: every entry's bytes follow from
  // its width alone, so the counts are equal even where a near-tied token takes the neighbouring class)
  const char* spec = "svd:k=1/4,v=d/2,policy=uniform+quant:8/4=0.5/0.5,recent=8";
  Model cpu(llm_test::demo_model_path(), {.device = Device::cpu, .kv = spec});
  Model gpu(llm_test::demo_model_path(), {.device = Device::cuda, .kv = spec});
  CHECK(gpu.kv_description() == cpu.kv_description());
  const std::vector<int> prompt = cpu.tokenize(kPrompt, true);
  const Run c = run(cpu, prompt, {}, kSteps);
  const std::vector<int> feed(c.greedy.begin(), c.greedy.end() - 1);  // teacher-forced on the CPU's greedy path
  const Run cr = run(cpu, prompt, feed, 0);
  const Run g = run(gpu, prompt, feed, 0);
  const int V = cpu.config().vocab_size;
  const Diff d = diff(g.logits, cr.logits, V, 1.0f);
  MESSAGE(std::string(spec) << ": cuda vs cpu over " << d.rows << " rows: max |logit diff| " << d.max_abs
                            << " (max |logit| " << d.max_ref << "); top-1 where the CPU leads by > 1: "
                            << d.decided_agree << "/" << d.decided << "; KV bytes cpu " << cr.kv_bytes << ", cuda "
                            << g.kv_bytes);
  // k = head_dim/4 is lossy enough to amplify the bf16-vs-fp32 difference: svd alone at this spec measured 2.70
  // (cuda vs cpu, same rows, emulator), the unified cache 3.59, while its quantisation alone moves the CPU's logits
  // by 4.1 (unified vs svd alone, both cpu). The synthetic test above is the tight check; this one bounds the
  // real model's drift, and the rows the CPU decides clearly must agree.
  CHECK(d.max_abs < 4.5);
  CHECK(d.decided_agree == d.decided);
  CHECK(g.kv_bytes == cr.kv_bytes);
}
