// End-to-end CUDA forward pass against forward_cpu:
//  - synthetic models made on the device (no file needed), weights copied back to the host as bf16 (or f16, issue 5's
//    --dtype f16: every full-cache case runs for both element types) QMatrix views
//    so both backends run the very same weights: logits of every position and greedy tokens, over several prompt
//    blocks (flash prefill with cached tokens before the block) and the CUDA-graph decode step;
//  - the demo model (SmolLM2-135M Q4_1, skipped when absent): top-1 agreement of the logits on >= 99% of
//    positions, bounded max |diff|, and identical greedy text for 32 tokens (session path and the device-resident
//    graph loop).
#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

#include "cuda_forward_test_util.cuh"
#include "cuda_test_util.cuh"
#include "engine/forward_cuda.cuh"
#include "engine/llm.h"
#include "engine/model.h"
#include "kernels/threadpool_cpu.h"
#include "loader/model_file.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

using namespace llm;
using namespace llm_cuda_test;

namespace {

struct Compare {
  double max_abs = 0, max_ref = 0;
  int agree = 0, rows = 0, decided = 0, decided_agree = 0;
};
// Row-wise comparison of (rows, V) logits: top-1 agreement overall and where the CPU's top-1 leads its runner-up
// by more than `margin`.
Compare compare_logits(const std::vector<float>& got, const std::vector<float>& ref, int rows, int V, float margin) {
  Compare r;
  r.rows = rows;
  for (int i = 0; i < rows; ++i) {
    const float* g = got.data() + size_t(i) * V;
    const float* f = ref.data() + size_t(i) * V;
    for (int j = 0; j < V; ++j) {
      r.max_abs = std::max(r.max_abs, double(std::fabs(g[j] - f[j])));
      r.max_ref = std::max(r.max_ref, double(std::fabs(f[j])));
    }
    const int ag = int(std::max_element(g, g + V) - g), af = int(std::max_element(f, f + V) - f);
    float second = -1e30f;
    for (int j = 0; j < V; ++j)
      if (j != af) second = std::max(second, f[j]);
    r.agree += ag == af;
    if (f[af] - second > margin) {
      ++r.decided;
      r.decided_agree += ag == af;
    }
  }
  return r;
}

// margins (optional): per step, how far the chosen token's logit leads the runner-up's.
std::vector<int> greedy_cpu(const Config& c, const Weights& w, const std::vector<int>& prompt, int n, int ctx,
                            ThreadPool* pool, std::vector<float>* margins = nullptr) {
  KVCache kv = kvcache_create(c, ctx);
  RunState s = runstate_create(c, 64);
  forward_cpu(c, w, kv, s, prompt.data(), int(prompt.size()), LogitsMode::last, pool);
  std::vector<int> out;
  for (int i = 0; i < n; ++i) {
    const int t = argmax_cpu(s.logits.data(), c.vocab_size);
    if (margins) {
      float second = -1e30f;
      for (int j = 0; j < c.vocab_size; ++j)
        if (j != t) second = std::max(second, s.logits[j]);
      margins->push_back(s.logits[t] - second);
    }
    out.push_back(t);
    if (i + 1 < n) forward_cpu(c, w, kv, s, &t, 1, LogitsMode::last, pool);
  }
  return out;
}

std::vector<int> greedy_cuda(CudaSession& s, const std::vector<int>& prompt, int n) {
  const int V = s.m->c.vocab_size;
  std::vector<float> logits(V);
  cuda_session_reset(s);
  forward_cuda(s, prompt.data(), int(prompt.size()), LogitsMode::last, logits.data());
  std::vector<int> out;
  for (int i = 0; i < n; ++i) {
    const int t = argmax_cpu(logits.data(), V);
    out.push_back(t);
    if (i + 1 < n) forward_cuda(s, &t, 1, LogitsMode::last, logits.data());
  }
  return out;
}

// The device-resident loop of `llm bench`: after the prompt, replay the graph (argmax + advance on the device)
// and read the token it produced after each step.
std::vector<int> greedy_graph(CudaSession& s, const std::vector<int>& prompt, int n) {
  const int V = s.m->c.vocab_size;
  std::vector<float> logits(V);
  cuda_session_reset(s);
  forward_cuda(s, prompt.data(), int(prompt.size()), LogitsMode::last, logits.data());
  std::vector<int> out = {argmax_cpu(logits.data(), V)};
  const int io[2] = {out[0], int(prompt.size())};
  CUDA_CHECK(cudaMemcpy(s.tokens.ptr, &io[0], 4, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(s.pos.ptr, &io[1], 4, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaDeviceSynchronize());  // the session's stream is non-blocking: make the copies land first
  for (int i = 1; i < n; ++i) {
    cuda_decode_graph_launch(s);
    CUDA_CHECK(cudaStreamSynchronize(s.stream));
    int t = -1;
    CUDA_CHECK(cudaMemcpy(&t, s.tokens.ptr, 4, cudaMemcpyDeviceToHost));
    out.push_back(t);
  }
  return out;
}

}  // namespace

namespace {
template <class T>
DType dtype_of() {
  return std::is_same_v<T, f16> ? DType::f16 : DType::bf16;
}
}  // namespace

TEST_CASE_TEMPLATE("cuda forward on synthetic models matches forward_cpu on the same 16-bit weights", T, bf16, f16) {
  if (!have_cuda()) return;
  ThreadPool pool(4);
  const DType dt = dtype_of<T>();
  for (const Config& c : {small_config(256, 4, 2, 512, 2, 512, RopeLayout::half_split, false),
                          small_config(512, 4, 1, 768, 3, 1000, RopeLayout::interleaved, true)}) {
    CAPTURE(c.dim);
    CAPTURE(c.head_dim);
    CudaModel m = cuda_model_alloc(c, false, dt);
    cuda_model_randomize(m, 42);
    HostWeights h;
    host_weights(m, h);
    std::mt19937 rng(9);
    std::vector<int> prompt(100);
    for (auto& t : prompt) t = int(rng() % c.vocab_size);
    const int V = c.vocab_size, n = int(prompt.size());
    // CPU: every position's logits
    KVCache kv = kvcache_create(c, 256);
    RunState rs = runstate_create(c, 256);
    forward_cpu(c, h.w, kv, rs, prompt.data(), n, LogitsMode::all, &pool);
    // CUDA: the same prompt in blocks of 40 (the 2nd and 3rd blocks attend to cached tokens)
    CudaSessionPtr s = cuda_session_create(m, 256, 40);
    std::vector<float> got(size_t(n) * V);
    forward_cuda(*s, prompt.data(), n, LogitsMode::all, got.data());
    CHECK(cuda_session_n(*s) == n);
    float max_ref = 0.0f;
    for (float x : rs.logits) max_ref = std::max(max_ref, std::fabs(x));
    const Compare r = compare_logits(got, rs.logits, n, V, 0.1f * max_ref);
    const std::string name = dtype_name(dt);
    MESSAGE(name << " synthetic dim " << c.dim << ": max |logit diff| " << r.max_abs << " (max |logit| " << r.max_ref
                 << "), top-1 agreement " << r.agree << "/" << r.rows << ", where decided " << r.decided_agree << "/"
                 << r.decided);
    // bf16 activations: ~0.5% expected; f16 rounds 8x finer (3 more mantissa bits), so its bound is 8x tighter
    CHECK(r.max_abs <= 0.03 * elem_tol<T>() * r.max_ref + 0.01);
    CHECK(r.decided_agree == r.decided);
    // greedy decoding: session path (graph per step) and the device-resident loop agree with each other exactly,
    // and with the CPU where the CPU's choices are clear-cut (checked through the logits above)
    const std::vector<int> a = greedy_cuda(*s, prompt, 12), b = greedy_graph(*s, prompt, 12);
    CHECK(a == b);
  }
}

// Why these inputs (measured 2026-11-22 with tools/cuda_bf16_emulation.py: PyTorch on the CPU, transformers' GGUF
// loader, the CUDA path's bf16 rounding of weights and matrix-product inputs emulated): the rounding moves the demo
// model's logits by up to ~0.65 against fp32, and natural text has near-ties (8 of 98 positions of a short English
// prompt lead their runner-up by < 0.1). On that 98-token prompt the emulation already misses one position
// (98.98 %), so the >= 99 % criterion is checked where it has room: 400 tokens of the GFDL text (2 prefill blocks;
// emulation: 1 miss, 99.75 %, max |diff| 0.65). Of 7 natural prompts tried, 6 have a greedy step leading by < 0.06
// (the best 0.16), so "identical greedy text for 32 tokens" is asserted on a prompt whose fp32 greedy path leads by
// >= 3.4 at every step, and a natural prompt must agree up to its first near-tie.
const char* const kGreedyStrict = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,";
// --dtype f16, measured the same way (tools/cuda_bf16_emulation.py --dtype f16, 2026-11-22): 100 % top-1 agreement on
// both logit inputs (98 and 400 positions), max |diff| 0.086 and 0.102 (bf16: 0.48 and 0.65), the greedy text of
// all 7 prompts identical to fp32's. The CUDA path under the emulator: 300/300, max |diff| 0.083. The bound 0.5 leaves ~5x
// room and still fails a model that silently ran in bf16 (0.65).
const double kF16DemoMaxDiff = 0.5;
const char* const kGreedyNatural =
    "The history of the bicycle begins in the early nineteenth century, when inventors in Germany and France "
    "built wooden machines that riders pushed along with their feet. Pedals arrived decades later, and with "
    "them the tall front wheels of the penny-farthing, which were fast but dangerous. The safety bicycle, with "
    "two wheels of equal size and a chain driving the rear one, made cycling popular with millions of people. "
    "Today bicycles are used for commuting, sport and travel all over the world, and";
// --dtype f16 (issue 5): the same checks, the logit bound from tools/cuda_bf16_emulation.py --dtype f16 (see
// kF16DemoMaxDiff); fp16's 3 extra mantissa bits move the logits ~8x less than bf16, and the demo model's 16-bit
// tensors stay far below fp16's 65504 (docs/performance.md "fp16").
TEST_CASE_TEMPLATE("cuda forward on the demo model: logits and greedy text match the CPU", T, bf16, f16) {
  if (!have_cuda()) return;
  if (!llm_test::have_demo_model()) return;
  const DType dt = dtype_of<T>();
  // Under the CPU emulator the f16 instance repeats the bf16 one's ~100 s with another element type that the
  // synthetic f16 case above already covers; it ran on the H100 (399/400, docs/performance.md "First GPU session")
  if (cuda_emulated() && dt == DType::f16) {
    MESSAGE("SKIPPED under emulation: the f16 demo-model instance (the synthetic f16 case runs; a GPU runs this)");
    return;
  }
  ModelFile f = model_file_open(llm_test::demo_model_path());
  const Config& c = f.config;
  Weights w = weights_from_file(f);
  Tokenizer tok = tokenizer_from_gguf(*f.gguf);
  std::ifstream in(llm_test::data_path("text/GFDL-1.3.txt"), std::ios::binary);
  REQUIRE(in);
  const std::string doc((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<int32_t> ids32 = tok.encode(doc, true, false);
  REQUIRE(ids32.size() >= 400);
  // Under the CPU emulator: 300 positions (still two prefill blocks, 256 + 44), ~1 minute instead of ~2.
  const int n_prompt = cuda_emulated() ? 300 : 400;
  if (cuda_emulated()) MESSAGE("reduced under emulation: " << n_prompt << " prompt positions, not 400");
  std::vector<int> prompt(ids32.begin(), ids32.begin() + n_prompt);
  const int n = int(prompt.size()), V = c.vocab_size;
  ThreadPool pool(0);
  CudaModelPtr m = cuda_model_upload(c, w, dt);
  CHECK(cuda_model_dtype(*m) == dt);
  MESSAGE("demo model on the device: " << cuda_model_device_bytes(*m) / 1048576.0 << " MiB of " << dtype_name(dt)
                                       << " weights");

  KVCache kv = kvcache_create(c, 512);
  RunState rs = runstate_create(c, 256);
  forward_cpu(c, w, kv, rs, prompt.data(), n, LogitsMode::all, &pool);
  CudaSessionPtr s = cuda_session_create(*m, 512, 256);  // 400 tokens: blocks of 256 and 144
  std::vector<float> got(size_t(n) * V);
  forward_cuda(*s, prompt.data(), n, LogitsMode::all, got.data());
  const Compare r = compare_logits(got, rs.logits, n, V, 1.0f);
  const std::string name = dtype_name(dt);
  MESSAGE(name << " demo model, " << n << " positions: top-1 agreement " << r.agree << "/" << r.rows << " ("
                         << 100.0 * r.agree / r.rows << "%), where the CPU leads by > 1: " << r.decided_agree << "/"
                         << r.decided << "; max |logit diff| " << r.max_abs << " (max |logit| " << r.max_ref << ")");
  CHECK(r.agree >= 0.99 * r.rows);
  CHECK(r.decided_agree == r.decided);  // a clear lead never flips (emulated rounding moves a logit by 0.65 at most)
  // bf16 weights and activations vs fp32: a wrong kernel gives differences >> 2; f16: kF16DemoMaxDiff
  CHECK(r.max_abs < (dt == DType::f16 ? kF16DemoMaxDiff : 2.0));

  // greedy text, 32 tokens: CPU vs the session path (graph per step) vs the device-resident graph loop.
  // kGreedyStrict: its fp32 greedy path leads by >= 3.4 logits at every step, so the text must be identical.
  // kGreedyNatural: natural text has near-ties on its greedy path (fp32 lead 0.018 at one step of these 32), where
  // bf16 rounding may legitimately pick the runner-up: identical up to the first step where the CPU leads by < 0.1,
  // reported beyond it.
  auto str = [&](const std::vector<int>& v) {  // ids as numbers too; an id outside the vocabulary is named, not decoded
    std::ostringstream o;
    for (int t : v) o << t << ' ';
    for (int t : v)
      if (t < 0 || t >= V) return o.str() + "(holds an id outside the vocabulary)";
    return o.str() + "'" + tok.decode(std::vector<int32_t>(v.begin(), v.end())) + "'";
  };
  // Under the CPU emulator each decode step takes ~3 s: 5 steps (the natural prompt's first near-tie is at step 4).
  const int steps = cuda_emulated() ? 5 : 32;
  if (cuda_emulated()) MESSAGE("reduced under emulation: greedy text compared over " << steps << " tokens, not 32");
  for (const char* text : {kGreedyStrict, kGreedyNatural}) {
    const bool strict = text == kGreedyStrict;
    CAPTURE(text);
    const std::vector<int32_t> g32 = tok.encode(text, true, false);
    const std::vector<int> gp(g32.begin(), g32.end());
    std::vector<float> lead;
    const std::vector<int> want = greedy_cpu(c, w, gp, steps, 512, &pool, &lead);
    const std::vector<int> a = greedy_cuda(*s, gp, steps);
    const std::vector<int> b = greedy_graph(*s, gp, steps);
    size_t same = 0, near_tie = 0;
    while (same < want.size() && want[same] == a[same]) ++same;
    while (near_tie < lead.size() && lead[near_tie] >= 0.1f) ++near_tie;
    MESSAGE("greedy '" << text << "': cuda agrees on " << same << " of " << steps << " tokens; CPU min lead "
                       << *std::min_element(lead.begin(), lead.end()) << ", first lead < 0.1 at step " << near_tie);
    INFO("cpu:   " << str(want));
    INFO("cuda:  " << str(a));
    INFO("graph: " << str(b));
    INFO("first difference at step " << same << ", where the CPU's choice leads by "
                                     << (same < lead.size() ? lead[same] : 0.0f));
    CHECK(a == b);  // the two CUDA paths run the same graph
    if (strict)
      CHECK(a == want);
    else
      CHECK(same >= near_tie);
  }
}

TEST_CASE("public API with --device cuda: greedy generation matches the CPU session") {
  if (!have_cuda()) return;
  if (!llm_test::have_demo_model()) return;
  llm::Model cpu(llm_test::demo_model_path(), {.device = llm::Device::cpu});
  llm::Model gpu(llm_test::demo_model_path(), {.device = llm::Device::cuda});
  llm::Model gpu16(llm_test::demo_model_path(), {.device = llm::Device::cuda, .dtype = llm::DType::f16});
  CHECK(gpu.device() == llm::Device::cuda);
  llm::GenerateOptions g;
  g.max_tokens = cuda_emulated() ? 6 : 24;  // ~1 s per emulated decode step
  if (cuda_emulated()) MESSAGE("reduced under emulation: " << g.max_tokens << " generated tokens, not 24");
  g.stop_at_eos = false;
  std::string text[3];
  int i = 0;
  for (llm::Model* m : {&cpu, &gpu, &gpu16}) {
    llm::Session s(*m, {.n_ctx = 256, .max_block = 16});  // several prefill blocks
    s.feed(m->tokenize(kGreedyStrict, true));  // no near-ties on its greedy path (see above)
    text[i++] = s.generate(g).text;
    CHECK(s.n_past() > 24);
  }
  INFO("cpu:  " << text[0]);
  INFO("cuda: " << text[1]);
  INFO("cuda f16: " << text[2]);
  CHECK(text[0] == text[1]);
  CHECK(text[0] == text[2]);
}

TEST_CASE("--dtype f16: the compressed KV caches are refused with the reason and what to do") {
  // host-side checks, no device needed
  CHECK_NOTHROW(cuda_dtype_kv_check(DType::bf16, true, true, "svd:k=16,v=16"));
  CHECK_NOTHROW(cuda_dtype_kv_check(DType::f16, false, false, "full"));
  CHECK_THROWS_WITH_AS(cuda_dtype_kv_check(DType::f16, true, false, "svd:k=16,v=16"),
                       doctest::Contains("--dtype bf16"), Error);
  CHECK_THROWS_WITH_AS(cuda_dtype_kv_check(DType::f16, false, true, "full+quant:8/4=0.5/0.5"),
                       doctest::Contains("bf16 kernels only"), Error);
  if (!have_cuda()) return;
  ThreadPool pool(2);
  const Config c = small_config(256, 4, 2, 512, 1, 256, RopeLayout::half_split, false);
  CudaModel m = cuda_model_alloc(c, false, DType::f16);
  cuda_model_randomize(m, 42);
  HostWeights h;
  host_weights(m, h);  // f16 views: the CPU builds the low-rank weights from them as from any model
  const auto lrm = kv_lowrank_model_create(kv_spec_parse("svd:k=16,v=16,policy=uniform"), "", c, h.w, &pool);
  CHECK_THROWS_WITH_AS(cuda_model_add_lowrank(m, *lrm), doctest::Contains("--dtype bf16"), Error);
  CHECK_THROWS_WITH_AS(cuda_model_lowrank_randomize(m, kv_spec_parse("svd:k=16,v=16,policy=uniform"), 1),
                       doctest::Contains("--dtype bf16"), Error);
  CHECK_FALSE(cuda_model_has_lowrank(m));
  CudaSessionPtr s = cuda_session_create(m, 64, 16);
  std::string base;
  const KVPrefillSpec pre = kv_prefill_spec_parse("quant:8/4=0.5/0.5", base);
  CHECK_THROWS_WITH_AS(cuda_session_enable_prefill(*s, pre), doctest::Contains("--dtype bf16"), Error);
  if (llm_test::have_demo_model())  // the public API refuses before uploading anything
    CHECK_THROWS_WITH_AS(llm::Model(llm_test::demo_model_path(),
                                    {.device = llm::Device::cuda, .dtype = llm::DType::f16, .kv = "svd:k=16,v=16"}),
                         doctest::Contains("--dtype bf16"), Error);
}

// ---- issue 6: the low-rank KV cache on the device ----------------------------------------------------------

namespace {

struct LogitsDiff {
  double max_abs = 0, max_ref = 0;
};
LogitsDiff diff_logits(const std::vector<float>& got, const std::vector<float>& ref) {
  LogitsDiff d;
  for (size_t j = 0; j < ref.size(); ++j) {
    d.max_abs = std::max(d.max_abs, double(std::fabs(got[j] - ref[j])));
    d.max_ref = std::max(d.max_ref, double(std::fabs(ref[j])));
  }
  return d;
}

}  // namespace

TEST_CASE("cuda low-rank KV forward matches the CPU low-rank forward, and the full-cache forward at full ranks") {
  if (!have_cuda()) return;
  ThreadPool pool(4);
  for (const Config& c : {small_config(256, 4, 2, 512, 2, 512, RopeLayout::half_split, false),
                          small_config(512, 4, 1, 768, 3, 1000, RopeLayout::interleaved, true)}) {
    CAPTURE(c.head_dim);
    const int V = c.vocab_size, ctx = 256;
    std::mt19937 rng(11);
    // 20 decode steps cross the seed policy's step-10 rank change and a cv growth with re-layout (prompt: 39 low,
    // 40 medium, 21 high ranks = 50.75 x head_dim values; v_cap 64 x head_dim; +10 high +10 medium passes it)
    std::vector<int> prompt(100), feed(20);
    for (auto& t : prompt) t = int(rng() % V);
    for (auto& t : feed) t = int(rng() % V);
    const int n = int(prompt.size());
    {  // (1) against the CPU engine's low-rank path on the same (bf16) weights and bases
      CudaModel m = synthetic_model(c);
      HostWeights h;
      host_weights(m, h);
      const KVSpec spec = kv_spec_parse("svd:k=1/4,v=d/4/d/2/d,policy=seed");
      const auto lrm = kv_lowrank_model_create(spec, "", c, h.w, &pool);
      KVCache kv = kvcache_create(c, ctx, /*allocate=*/false);
      KVLowRank lr = kv_lowrank_create(*lrm, c, ctx);
      kv.lowrank = &lr;
      RunState rs = runstate_create(c, ctx);
      std::vector<float> ref(size_t(n + feed.size()) * V);
      forward_cpu(c, h.w, kv, rs, prompt.data(), n, LogitsMode::all, &pool);
      std::copy(rs.logits.begin(), rs.logits.begin() + size_t(n) * V, ref.begin());
      for (size_t i = 0; i < feed.size(); ++i) {
        forward_cpu(c, h.w, kv, rs, &feed[i], 1, LogitsMode::last, &pool);
        std::copy(rs.logits.begin(), rs.logits.begin() + V, ref.begin() + (n + i) * V);
      }
      const size_t full_bytes = cuda_model_device_bytes(m);
      cuda_model_add_lowrank(m, *lrm);
      CHECK(cuda_model_has_lowrank(m));
      CHECK(cuda_model_device_bytes(m) < full_bytes);  // r_k, r_vmax <= head_dim: W_QKV', W_fused no larger
      CudaSessionPtr s = cuda_session_create(m, ctx, 40);  // blocks of 40: the later ones attend to cached tokens
      const std::vector<float> got = run_prompt_feed(*s, prompt, feed);
      CHECK(cuda_session_n(*s) == n + int(feed.size()));
      CHECK(s->lr_decode_kernel == "tensor-core");  // the decode steps ran kernels/attention_lowrank_tc.cu
      // the same ranks and layout as the CPU cache, at 2 bytes per element instead of 4
      CHECK(2 * cuda_session_kv_bytes(*s) == lr.bytes_used(n + int(feed.size())));
      const LogitsDiff pre = diff_logits({got.begin(), got.begin() + size_t(n) * V},
                                         {ref.begin(), ref.begin() + size_t(n) * V});
      const LogitsDiff dec =
          diff_logits({got.begin() + size_t(n) * V, got.end()}, {ref.begin() + size_t(n) * V, ref.end()});
      const Compare r = compare_logits(got, ref, n + int(feed.size()), V, float(0.1 * pre.max_ref));
      MESSAGE("low-rank head_dim " << c.head_dim << " vs CPU: prefill max |diff| " << pre.max_abs << " (max |logit| "
                                   << pre.max_ref << "), decode " << dec.max_abs << "; top-1 " << r.agree << "/"
                                   << r.rows << ", decided " << r.decided_agree << "/" << r.decided);
      // bf16 weights, activations and cache against fp32 everywhere: ~0.5-1% expected; a wrong index or rank is
      // of the order of the logits themselves
      CHECK(pre.max_abs <= 0.05 * pre.max_ref + 0.01);
      CHECK(dec.max_abs <= 0.05 * dec.max_ref + 0.01);
      CHECK(r.decided_agree == r.decided);
    }
    {  // (2) at full ranks the low-rank cache is exact: against the CUDA full-cache forward of the same weights
      const FullVsLowRank fl = full_vs_lowrank(c, "svd:k=d,v=d,policy=uniform", ctx, 40, prompt, feed, &pool);
      const std::vector<float>& ref = fl.full;
      const std::vector<float>& got = fl.lowrank;
      CHECK(fl.lowrank_bytes == fl.full_bytes);  // k = v = head_dim: as many values
      const LogitsDiff d = diff_logits(got, ref);
      const Compare r = compare_logits(got, ref, n + int(feed.size()), V, float(0.1 * d.max_ref));
      MESSAGE("low-rank at full ranks, head_dim " << c.head_dim << " vs CUDA full cache: max |diff| " << d.max_abs
                                                  << " (max |logit| " << d.max_ref << "), decided "
                                                  << r.decided_agree << "/" << r.decided);
      CHECK(d.max_abs <= 0.05 * d.max_ref + 0.01);
      CHECK(r.decided_agree == r.decided);
    }
  }
}

TEST_CASE("cuda low-rank KV: a GEMV-unfriendly W_fused is refused, importance without scores has a reason") {
  if (!have_cuda()) return;
  ThreadPool pool(2);
  const Config c = small_config(256, 4, 2, 512, 1, 256, RopeLayout::half_split, false);
  CudaModel m = synthetic_model(c);
  HostWeights h;
  host_weights(m, h);
  // 4 heads x r_vmax 3 = 12 columns: not a multiple of 8
  const auto odd = kv_lowrank_model_create(kv_spec_parse("svd:k=16,v=3,policy=uniform"), "", c, h.w, &pool);
  CHECK_THROWS_WITH_AS(cuda_model_add_lowrank(m, *odd), doctest::Contains("multiple of 8"), Error);
  CHECK_FALSE(cuda_model_has_lowrank(m));  // a refused spec leaves the model as it was
  // policy=importance loads (test_forward_svdimp_cuda.cu runs it); the low-rank cache alone has no scores
  const auto imp = kv_lowrank_model_create(kv_spec_parse("svd:k=16,v=16/32/64,policy=importance"), "", c, h.w, &pool);
  cuda_model_add_lowrank(m, *imp);
  CudaSessionPtr s = cuda_session_create(m, 16, 16);
  const int tok[2] = {1, 2};
  std::vector<float> logits(c.vocab_size);
  CHECK_THROWS_WITH_AS(forward_cuda(*s, tok, 2, LogitsMode::last, logits.data()),
                       doctest::Contains("cuda_session_enable_prefill"), Error);
}
