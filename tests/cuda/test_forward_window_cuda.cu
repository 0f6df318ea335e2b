// window=N, vsinks=N and alloc=spectrum of the low-rank cache (`--kv svd:...`) on the CUDA backend, end to end
// against the CPU engine (engine/kv_lowrank.cpp kv_lowrank_attention) on small synthetic models whose bf16 weights
// both backends run (host_weights), with the same low-rank weights and bases (kv_lowrank_model_create on them):
//  - `window=8,vsinks=1,alloc=spectrum` together and each option alone: the prompt's logits (40 tokens in blocks of
//    16: later blocks read the older window rows from the ring) and 12 teacher-forced decode steps (decode graph
//    replays; every step moves a token out of the ring), both RoPE layouts, GQA groups 2 and 4; the device's KV bytes
//    against the CPU's count;
//  - alloc=spectrum: the device holds the CPU's per-block key ranks, and the W_K' rows and U_K rows past a block's
//    rank (the padding to r_kpad) are zero on the device, so the rebuilt keys are the CPU's; the session's c_k is
//    packed at the blocks' own ranks (no padding stored);
//  - greedy decoding through the device-resident graph loop (window 8 from a 3-token prompt: the ring fills and
//    slides inside the graph) against the CPU's greedy tokens;
//  - at full ranks (k = v = head_dim) with a window the outputs equal the CUDA full-cache forward;
//  - the unified cache (svd + quant/keep/evict, policy=importance) refuses these options on cuda; the bench runs
//    them;
//  - the demo model (skipped when absent) through the public API against the CPU session.
// Tolerance as test_forward_sinks_cuda.cu (the same models and precisions: the device rounds activations and the
// compressed cache to bf16 where the CPU keeps fp32; the window's rows are fp32 on both sides, from bf16 inputs on
// the device): 1% of max |logit| + 0.01 (~0.033). Measured under the emulator: see the MESSAGE lines (0.004-0.006
// at max |logit| 2.3-2.6). The window's own effect on these models is checked to exceed twice the device's distance
// to the CPU, so a kernel that ignored the window would fail; the top-1 must agree wherever the CPU's leads its
// runner-up by 10% of max |logit|.
#include <algorithm>
#include <cmath>
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
#include "test_util.h"

using namespace llm;
using namespace llm_cuda_test;

namespace {

constexpr double kTol = 0.01;  // relative part of the logits' bound (see the header)

Diff check_logits(const char* what, const std::vector<float>& got, const std::vector<float>& ref, int V) {
  Diff d = diff(got, ref, V, 0.0f);
  d = diff(got, ref, V, float(0.1 * d.max_ref));
  MESSAGE(std::string(what) << ": max |diff| " << d.max_abs << " (max |logit| " << d.max_ref << ") over " << d.rows
               << " rows, top-1 where decided " << d.decided_agree << "/" << d.decided);
  CHECK(d.max_abs <= kTol * d.max_ref + 0.01);
  CHECK(d.decided_agree == d.decided);
  return d;
}

// The window's bytes of a session holding n tokens: min(n, N) full keys and value rows per layer and KV head, fp32.
size_t window_bytes(const Config& c, int n, int window) {
  return size_t(c.n_layers) * c.n_kv_heads * std::min(n, window) * 2 * c.head_dim * 4;
}

// Device U_K rows and W_K' rows (of W_QKV') of each block past its key rank must be zero.
void check_padding_zero(const CudaModel& m) {
  const Config& c = m.c;
  const CudaLowRank& M = *m.lowrank;
  const int hd = c.head_dim, nkv = c.n_kv_heads, rk = M.r_k, qd = c.n_heads * hd;
  int padded = 0;
  for (int l = 0; l < c.n_layers; ++l) {
    std::vector<float> uk(size_t(nkv) * rk * hd);
    std::vector<uint16_t> wk(size_t(nkv) * rk * c.dim);
    CUDA_CHECK(cudaMemcpy(uk.data(), M.layers[l].uk, uk.size() * 4, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(wk.data(), M.layers[l].wqkv + size_t(qd) * c.dim, wk.size() * 2, cudaMemcpyDeviceToHost));
    for (int g = 0; g < nkv; ++g) {
      const int kr = M.k_rank[size_t(l) * nkv + g];
      padded += rk - kr;
      bool zero = true, nonzero = false;
      for (int j = 0; j < rk; ++j)
        for (int d = 0; d < hd; ++d) {
          const float u = uk[(size_t(g) * rk + j) * hd + d];
          if (j < kr)
            nonzero = nonzero || u != 0.0f;
          else
            zero = zero && u == 0.0f;
        }
      for (int j = kr; j < rk; ++j)
        for (int e = 0; e < c.dim; ++e) zero = zero && (wk[(size_t(g) * rk + j) * c.dim + e] & 0x7fff) == 0;
      CAPTURE(l);
      CAPTURE(g);
      CHECK(zero);
      CHECK(nonzero);
    }
  }
  MESSAGE("alloc=spectrum: " << padded << " zero-padded key rows over " << c.n_layers * nkv << " blocks, r_kpad "
                             << rk);
  CHECK(padded > 0);  // the allocation is not uniform on these models
}

// W_K rows 0 .. head_dim/4 - 1 of layer 0's KV head 0 times 4 (exact in bf16): that block's leading key
// eigenvalues grow 16x, so alloc=spectrum gives it more than r_k and the others less (on the plain seeded model the
// blocks' spectra are alike and the allocation comes out uniform).
void skew_key_spectrum(CudaModel& m) {
  const Config& c = m.c;
  const size_t rows = c.head_dim / 4, off = size_t(c.n_heads) * c.head_dim * c.dim;
  std::vector<uint16_t> w(rows * c.dim);
  CUDA_CHECK(cudaMemcpy(w.data(), m.layers[0].wqkv + off, w.size() * 2, cudaMemcpyDeviceToHost));
  for (uint16_t& x : w) x = f32_to_bf16(4.0f * bf16_to_f32(x));
  CUDA_CHECK(cudaMemcpy(m.layers[0].wqkv + off, w.data(), w.size() * 2, cudaMemcpyHostToDevice));
}

}  // namespace

TEST_CASE("cuda svd window/vsinks/alloc=spectrum: prompt blocks and decode steps match the CPU engine") {
  if (!have_cuda()) return;
  ThreadPool pool(2);
  struct Case {
    Config c;
    const char* opts;
  };
  const Config c2 = small_config(256, 4, 2, 512, 2, 512, RopeLayout::half_split, false);
  const Config c4 = small_config(256, 4, 1, 512, 2, 512, RopeLayout::interleaved, true);
  for (const Case& k : {Case{c2, ",window=8,vsinks=1,alloc=spectrum"}, Case{c4, ",window=8,vsinks=1,alloc=spectrum"},
                        Case{c2, ",window=8"}, Case{c2, ",vsinks=2"}, Case{c2, ",alloc=spectrum"},
                        Case{c2, ",window=1/8"}}) {  // an eighth of the context of 64: 8 tokens
    const Config& c = k.c;
    CAPTURE(k.opts);
    CAPTURE(c.n_kv_heads);
    const int V = c.vocab_size, ctx = 64;
    std::mt19937 rng(101);
    const std::vector<int> prompt = random_tokens(rng, 40, V), feed = random_tokens(rng, 12, V);
    CudaModel m = synthetic_model(c);
    skew_key_spectrum(m);
    HostWeights h;
    host_weights(m, h);
    const std::string base = "svd:k=1/4,v=d/4/d/2/d,policy=seed";
    const KVSpec spec = kv_spec_parse(base + k.opts);
    const auto lrm = kv_lowrank_model_create(spec, "", c, h.w, &pool);
    const auto plain = kv_lowrank_model_create(kv_spec_parse(base), "", c, h.w, &pool);
    size_t cpu_bytes = 0;
    const std::vector<float> ref = cpu_lowrank_run(c, h.w, *lrm, ctx, prompt, feed, &pool, &cpu_bytes);
    const std::vector<float> ref_plain = cpu_lowrank_run(c, h.w, *plain, ctx, prompt, feed, &pool);
    cuda_model_add_lowrank(m, *lrm);
    CHECK(m.lowrank->r_k == lrm->r_kpad);
    CHECK(m.lowrank->r_vmax == lrm->r_fused);
    CHECK(m.lowrank->k_rank == lrm->k_rank);
    if (spec.k_alloc_spectrum) check_padding_zero(m);
    CudaSessionPtr s = cuda_session_create(m, ctx, 16);  // blocks of 16: later blocks read the ring
    CHECK(s->window == kv_window_tokens(spec, ctx));
    if (spec.window_den > 0) CHECK(s->window == 8);
    if (spec.k_alloc_spectrum) {  // c_k packed at the blocks' own ranks: no padding stored (or read)
      size_t key_ranks = 0;
      for (int r : lrm->k_rank) key_ranks += size_t(r);
      CHECK(s->ck.bytes == key_ranks * ctx * 2);
      CHECK(key_ranks < lrm->k_rank.size() * size_t(lrm->r_kpad));
    }
    const std::vector<float> got = run_prompt_feed(*s, prompt, feed);
    const int n = int(prompt.size());
    check_logits("prompt", {got.begin(), got.begin() + size_t(n) * V}, {ref.begin(), ref.begin() + size_t(n) * V}, V);
    check_logits("decode", {got.begin() + size_t(n) * V, got.end()}, {ref.begin() + size_t(n) * V, ref.end()}, V);
    const Diff eff = diff(ref_plain, ref, V, 1e30f), dev = diff(got, ref, V, 1e30f);
    MESSAGE(std::string(k.opts) << " move the CPU's logits by " << eff.max_abs << "; the device is " << dev.max_abs
                   << " from the CPU");
    // the options' effect exceeds the device's distance to the CPU: the device applies them
    CHECK(eff.max_abs > 2 * dev.max_abs);
    // bytes: c_k / c_v at 2 bytes a value (the CPU's 4), the window's rows fp32 on both
    const int total = n + int(feed.size());
    CHECK(2 * cuda_session_kv_bytes(*s) == cpu_bytes + window_bytes(c, total, kv_window_tokens(spec, ctx)));
  }
}

TEST_CASE("cuda svd window=8: the ring slides inside the decode graph, greedy tokens match the CPU") {
  if (!have_cuda()) return;
  ThreadPool pool(2);
  const Config c = small_config(256, 4, 2, 512, 2, 512, RopeLayout::half_split, false);
  const int V = c.vocab_size, ctx = 32, steps = 14;
  std::mt19937 rng(108);  // a prompt whose CPU greedy path leads by > the bound for 13 steps (seeds 100-139 scanned)
  const std::vector<int> prompt = random_tokens(rng, 3, V);
  CudaModel m = synthetic_model(c);
  skew_key_spectrum(m);
  HostWeights h;
  host_weights(m, h);
  const auto lrm = kv_lowrank_model_create(
      kv_spec_parse("svd:k=1/4,v=d/4/d/2/d,policy=seed,window=8,vsinks=1,alloc=spectrum"), "", c, h.w, &pool);
  cuda_model_add_lowrank(m, *lrm);
  CudaSessionPtr s = cuda_session_create(m, ctx, 16);
  Greedy cpu;
  {
    KVCache kv = kvcache_create(c, ctx, /*allocate=*/false);
    KVLowRank lr = kv_lowrank_create(*lrm, c, ctx);
    kv.lowrank = &lr;
    RunState rs = runstate_create(c, ctx);
    forward_cpu(c, h.w, kv, rs, prompt.data(), int(prompt.size()), LogitsMode::last, &pool);
    for (int i = 0; i < steps; ++i) {
      pick(cpu, rs.logits.data(), V);
      forward_cpu(c, h.w, kv, rs, &cpu.tokens.back(), 1, LogitsMode::last, &pool);
    }
  }
  // the device-resident loop: prompt, then steps - 1 graph replays (argmax and position on the device)
  std::vector<float> logits(V);
  cuda_session_reset(*s);
  forward_cuda(*s, prompt.data(), int(prompt.size()), LogitsMode::last, logits.data());
  std::vector<int> gpu_tok = {argmax_cpu(logits.data(), V)};
  for (int i = 1; i < steps; ++i) cuda_lowrank_begin(*s, int(prompt.size()) + i - 1, 1);  // ranks first
  const int io[2] = {gpu_tok[0], int(prompt.size())};
  CUDA_CHECK(cudaMemcpy(s->tokens.ptr, &io[0], 4, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(s->pos.ptr, &io[1], 4, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaDeviceSynchronize());
  for (int i = 1; i < steps; ++i) {
    cuda_decode_graph_launch(*s);
    CUDA_CHECK(cudaStreamSynchronize(s->stream));
    int t = -1;
    CUDA_CHECK(cudaMemcpy(&t, s->tokens.ptr, 4, cudaMemcpyDeviceToHost));
    gpu_tok.push_back(t);
  }
  // the same tokens while the CPU's lead exceeds the logits' bound (~0.035 at these models' max |logit| ~2.5)
  int compared = 0;
  for (int i = 0; i < steps && cpu.lead[i] > 0.035f; ++i, ++compared) {
    CAPTURE(i);
    CHECK(gpu_tok[i] == cpu.tokens[i]);
  }
  MESSAGE("greedy: " << compared << " of " << steps << " tokens compared (cpu leads " << cpu.lead[0] << ", "
                     << cpu.lead[1] << ", " << cpu.lead[2] << ", ...)");
  CHECK(compared >= 9);  // past position 8: tokens have left the ring inside the graph
}

TEST_CASE("cuda svd window=N at full ranks equals the CUDA full-cache forward") {
  if (!have_cuda()) return;
  ThreadPool pool(2);
  const Config c = small_config(256, 4, 2, 512, 2, 512, RopeLayout::interleaved, true);
  const int V = c.vocab_size, ctx = 48;
  std::mt19937 rng(103);
  const std::vector<int> prompt = random_tokens(rng, 24, V), feed = random_tokens(rng, 6, V);
  const FullVsLowRank fl = full_vs_lowrank(c, "svd:k=d,v=d,policy=uniform,window=8,vsinks=2", ctx, 16, prompt, feed,
                                           &pool);
  check_logits("full ranks + window vs full cache", fl.lowrank, fl.full, V);
}

TEST_CASE("cuda svd window/vsinks/alloc=spectrum: the unified cache refuses them; the bench runs them") {
  if (!have_cuda()) return;
  ThreadPool pool(2);
  const Config c = small_config(256, 4, 2, 512, 1, 256, RopeLayout::half_split, false);
  for (const char* opt : {",window=4", ",vsinks=1", ",alloc=spectrum"}) {
    CAPTURE(opt);
    CudaModel m = synthetic_model(c);
    HostWeights h;
    host_weights(m, h);
    const std::string base = std::string("svd:k=16,v=16/32/64") + opt;
    const auto lrm = kv_lowrank_model_create(kv_spec_parse(base), "", c, h.w, &pool);
    cuda_model_add_lowrank(m, *lrm);
    CudaSessionPtr s = cuda_session_create(m, 16, 16);
    std::string rest;
    const KVPrefillSpec pre = kv_prefill_spec_parse(base + "+quant:8", rest);
    CHECK_THROWS_WITH_AS(cuda_session_enable_prefill(*s, pre),
                         doctest::Contains("are not supported by the unified cache"), Error);
    CHECK(s->kvq == nullptr);
  }
  bench_tiny_synthetic("svd:k=1/4,v=d/4/d/2/d,policy=seed,window=16,sinks=1,vsinks=1,alloc=spectrum", "window");
}

// The demo model through the public API (skipped when absent): `llm::Model` on cuda with the issue's best setting
// and with a window at full ranks, a 30-token prompt and 4 teacher-forced steps (the CPU's greedy path): logits
// against the CPU session's, clear top-1 choices equal, and the bytes (c_k/c_v at 2 bytes against the CPU's 4; the
// window's rows and the sink's key fp32 on both). Measured under the emulator (max |logit| 33-35): 0.31 at full
// ranks with window=8, 0.16 for the best setting (the window of 16 covers half of these 30-34 positions, so less
// of the rank-16 keys' amplification of bf16 rounding shows than with svd alone: 2.19 in
// test_forward_sinks_cuda.cu's demo case). bf16 weights and activations against fp32 move the demo model's logits
// by up to ~0.65 (tools/cuda_bf16_emulation.py): bounds 1 at full ranks, 2 for the best setting.
TEST_CASE("cuda svd window/vsinks/alloc=spectrum on the demo model: logits and bytes against the CPU session") {
  if (!have_cuda()) return;
  if (!llm_test::have_demo_model()) return;
  const int ctx = 48, steps = 4;
  struct Spec {
    const char* kv;
    int window, sinks;
    double bound;
  };
  for (const Spec& sp : {Spec{"svd:k=d,v=d,policy=uniform,window=8", 8, 0, 1.0},
                         Spec{"svd:k=1/4,v=d/4/d/2/d,policy=seed,window=16,sinks=1,vsinks=1,alloc=spectrum", 16, 1,
                              2.0}}) {
    CAPTURE(sp.kv);
    Model cpu(llm_test::demo_model_path(), {.device = Device::cpu, .kv = sp.kv});
    Model gpu(llm_test::demo_model_path(), {.device = Device::cuda, .kv = sp.kv});
    CHECK(gpu.kv_description() == cpu.kv_description());
    const std::vector<int> prompt = cpu.tokenize("1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", true);
    const ApiCpuCudaRun r = api_cpu_vs_cuda(cpu, gpu, prompt, ctx, steps);
    const Diff& d = r.d;
    const size_t* bytes = r.bytes;
    CHECK(d.max_abs < sp.bound);
    CHECK(d.decided_agree == d.decided);
    const Config& c = cpu.config();
    const int n = int(prompt.size() + r.feed.size());
    CHECK(n > sp.window);
    const size_t full = size_t(c.n_layers) * c.n_kv_heads * (2 * sp.window + sp.sinks) * c.head_dim * 4;
    CHECK(2 * bytes[1] == bytes[0] + full);
  }
}
