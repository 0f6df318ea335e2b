// Issue 7 on the CUDA backend: selective propagation (keep:<1, engine/forward_cuda.cu kvq_keep_select). From the
// first layer whose schedule keeps fewer tokens, the compressed prefill ranks the previous layer's tokens on the host
// with the CPU's code, gathers the kept residual rows and positions (kernels/gather.cu), and runs the later layers on
// them: RoPE at the original positions, the attention and importance over the layer's K/V rows gathered at those
// positions. Against the CPU's kv_prefill_forward on the very same bf16 weights (synthetic models made on the device):
//  - gather_rows_cuda equals its CPU twin;
//  - keep:1 (nothing dropped) gives exactly the forward without keep:, bit for bit;
//  - keep:0.5 / pyramid / a list, alone and with quant and eviction: every layer computes the CPU's positions (the
//    same counts, and the same positions where the cache keeps all of them), the same KV bytes, the logits of the
//    prompt, of decode steps (the decode graph) and of a later 5-token call within the CPU-GPU rounding bound, and
//    greedy decoding after the prefill picks the CPU's tokens;
//  - a prompt shorter than sinks + window drops nothing (every token is always kept);
//  - what cuda does not run (every prompt position's logits) is refused with the reason (svd with keep:<1 runs:
//    test_forward_svdkeep_cuda.cu);
//  - `llm bench --kv ...+keep:...` runs to its report on a tiny synthetic model.
// Short prompts and tiny models: this runs under the CPU emulation of CUDA.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>

#include "cuda_forward_test_util.cuh"
#include "cuda_test_util.cuh"
#include "engine/bench_cuda.h"
#include "engine/forward_cuda.cuh"
#include "engine/kv_lowrank.h"
#include "engine/kv_prefill.h"
#include "engine/model.h"
#include "kernels/gather_cpu.h"
#include "kernels/gather_cuda.h"
#include "kernels/ops_cpu.h"
#include "loader/ggml_quants.h"
#include "kernels/threadpool_cpu.h"
#include "test_util.h"

using namespace llm;
using namespace llm_cuda_test;

namespace {

KVPrefillSpec parse(const std::string& text) {
  std::string base;
  return kv_prefill_spec_parse(text, base);
}

}  // namespace

TEST_CASE("cuda keep: gather_rows_cuda equals its CPU twin") {
  if (!have_cuda()) return;
  std::mt19937 rng(3);
  // 3 blocks of 20 source rows of width 72 (not a multiple of the block's 128 threads), 7 rows gathered in a
  // non-monotonic order with a repeat, into blocks of 9 row slots (the two spare slots must stay untouched)
  const int blocks = 3, rows = 20, width = 72, m = 7, slots = 9;
  const std::vector<int> idx = {0, 19, 4, 4, 11, 2, 18};
  std::vector<float> src(size_t(blocks) * rows * width);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (float& x : src) x = u(rng);
  std::vector<uint16_t> src16(src.size());
  for (size_t i = 0; i < src.size(); ++i) src16[i] = f32_to_bf16(src[i]);
  std::vector<float> want(size_t(blocks) * slots * width, -7.0f), got(want.size());
  std::vector<uint16_t> want16(want.size(), 0x1234), got16(want.size());
  gather_rows_cpu(want.data(), src.data(), idx.data(), m, width, blocks, int64_t(rows) * width, int64_t(slots) * width);
  gather_rows_cpu(want16.data(), src16.data(), idx.data(), m, width, blocks, int64_t(rows) * width,
                  int64_t(slots) * width);
  DeviceBuffer d_src(src.size() * 4), d_src16(src16.size() * 2), d_idx(idx.size() * 4);
  DeviceBuffer d_out(want.size() * 4), d_out16(want16.size() * 2);
  CUDA_CHECK(cudaMemcpy(d_src.ptr, src.data(), d_src.bytes, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(d_src16.ptr, src16.data(), d_src16.bytes, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(d_idx.ptr, idx.data(), d_idx.bytes, cudaMemcpyHostToDevice));
  const std::vector<float> fill(want.size(), -7.0f);
  const std::vector<uint16_t> fill16(want.size(), 0x1234);
  CUDA_CHECK(cudaMemcpy(d_out.ptr, fill.data(), d_out.bytes, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(d_out16.ptr, fill16.data(), d_out16.bytes, cudaMemcpyHostToDevice));
  gather_rows_cuda(d_out.as<float>(), d_src.as<float>(), d_idx.as<int>(), m, width, blocks, int64_t(rows) * width,
                   int64_t(slots) * width, nullptr);
  gather_rows_cuda(d_out16.as<bf16>(), d_src16.as<bf16>(), d_idx.as<int>(), m, width, blocks, int64_t(rows) * width,
                   int64_t(slots) * width, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  CUDA_CHECK(cudaMemcpy(got.data(), d_out.ptr, d_out.bytes, cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(got16.data(), d_out16.ptr, d_out16.bytes, cudaMemcpyDeviceToHost));
  CHECK(got == want);
  CHECK(got16 == want16);
  // the fp16 overload: the same 16-bit patterns moved (a copy does not interpret them)
  CUDA_CHECK(cudaMemcpy(d_out16.ptr, fill16.data(), d_out16.bytes, cudaMemcpyHostToDevice));
  gather_rows_cuda(d_out16.as<__half>(), d_src16.as<__half>(), d_idx.as<int>(), m, width, blocks,
                   int64_t(rows) * width, int64_t(slots) * width, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  CUDA_CHECK(cudaMemcpy(got16.data(), d_out16.ptr, d_out16.bytes, cudaMemcpyDeviceToHost));
  CHECK(got16 == want16);
  CHECK(want[size_t(slots) * width + 1 * width + 5] == src[size_t(rows) * width + 19 * width + 5]);  // the twin moves
  CHECK(want[size_t(m) * width] == -7.0f);  // a spare slot
}

TEST_CASE("cuda keep:1 equals the forward without keep:") {
  if (!have_cuda()) return;
  const Config c = small_config(256, 4, 2, 512, 4, 512, RopeLayout::half_split);
  CudaModel m = cuda_model_alloc(c, false);
  cuda_model_randomize(m, 42);
  std::mt19937 rng(5);
  const std::vector<int> prompt = random_tokens(rng, 40, c.vocab_size);
  const std::vector<std::vector<int>> runs = calls(prompt, rng, c.vocab_size, 4);
  const int ctx = 80;
  // the same compressed cache with and without a keep: part that keeps everything: the same kernels on the same
  // values, so every logit and the byte count are equal bit for bit
  for (const char* text : {"quant:8,recent=4", "evict:h2o,budget=0.5+imp:w=4,sinks=2"})
    check_keep1_changes_nothing(m, text, ctx, runs);
  // keep:1 alone (every token at 16 bits): the prompt's logits are the full-cache path's, bit for bit
  CudaSessionPtr full = cuda_session_create(m, ctx, ctx), k1 = cuda_session_create(m, ctx, ctx);
  cuda_session_enable_prefill(*k1, parse("keep:1"));
  const std::vector<float> lf = run_gpu(*full, runs), lk = run_gpu(*k1, runs);
  const int V = c.vocab_size;
  CHECK(std::equal(lf.begin(), lf.begin() + V, lk.begin()));
  const Diff d = diff(lk, lf, V, 1e30f);
  CHECK(d.max_abs <= 0.02 * d.max_ref + 0.01);  // decode: the quant kernel over the same bf16 rows (test_forward_kvq)
}

TEST_CASE("cuda keep: the kept positions, KV bytes, logits and greedy tokens match the CPU") {
  if (!have_cuda()) return;
  ThreadPool pool(4);
  for (const Config& c : {small_config(256, 4, 2, 512, 4, 512, RopeLayout::half_split),
                          small_config(512, 4, 1, 768, 3, 1000, RopeLayout::interleaved)}) {
    CAPTURE(c.head_dim);
    CudaModel m = cuda_model_alloc(c, false);
    cuda_model_randomize(m, 42);
    HostWeights h;
    host_weights(m, h);
    std::mt19937 rng(11);
    const std::vector<int> prompt = random_tokens(rng, 40, c.vocab_size);
    const std::vector<std::vector<int>> runs = calls(prompt, rng, c.vocab_size, 6);
    const int ctx = 80, V = c.vocab_size;
    // question window 4 and 2 sinks: up to 34 of the 40 prompt tokens are the scores' to drop. The last spec also
    // evicts (streaming: by position) and quantises (one width: the classes do not depend on the scores)
    const char* specs[] = {"keep:0.5,from=1+imp:w=4,sinks=2", "keep:0.25,pyramid,from=1+imp:w=4,sinks=2",
                           "keep:1/0.6/0.4+imp:w=4,sinks=2", "quant:8,recent=4+keep:0.5,linear,from=1+imp:w=4,sinks=2",
                           "evict:streaming,budget=0.6+quant:4,recent=4+keep:0.5,from=1+imp:w=4,sinks=2"};
    for (const char* text : specs) {
      // head_dim 128 (one KV head, interleaved RoPE): the pyramid and the spec with eviction (emulator time)
      if (c.head_dim == 128 && text != specs[1] && text != specs[4]) continue;
      const std::string spec_text = text;
      CAPTURE(spec_text);
      const KVPrefillSpec spec = parse(text);
      const bool evicts = spec.evict.method != KVEvict::none;
      size_t cpu_bytes = 0;
      std::vector<std::vector<int32_t>> cpu_entries;
      std::vector<int> cpu_tokens;
      const std::vector<float> ref = run_cpu(c, h.w, spec, ctx, runs, &pool, &cpu_bytes, nullptr, &cpu_entries,
                                             &cpu_tokens);
      CudaSessionPtr s = cuda_session_create(m, ctx, ctx);
      cuda_session_enable_prefill(*s, spec);
      const std::vector<float> got = run_gpu(*s, runs);
      // the tokens each layer computed: the CPU's counts, and its positions where the cache keeps them all
      const CudaKVQ& q = *s->kvq;
      REQUIRE(q.h_lpos.size() == size_t(c.n_layers));
      std::string counts;
      for (int l = 0; l < c.n_layers; ++l) {
        CAPTURE(l);
        if (l) counts += ' ';
        counts += std::to_string(q.h_lpos[l].size());
        CHECK(int(q.h_lpos[l].size()) == cpu_tokens[l]);
        if (!evicts) CHECK(q.h_lpos[l] == cpu_entries[l]);
        CHECK(std::is_sorted(q.h_lpos[l].begin(), q.h_lpos[l].end()));
        CHECK(q.h_lpos[l].back() == int(prompt.size()) - 1);  // the last token: always kept (its row gives logits)
      }
      CHECK(int(q.h_lpos.back().size()) < int(prompt.size()));  // it did drop
      CHECK(cuda_session_kv_bytes(*s) == cpu_bytes);
      // the same spec without keep: on the device: selective propagation must move the logits far more than the
      // CPU-GPU rounding does, or the comparison below could not tell a wrong selection from a right one
      KVPrefillSpec no_keep = spec;
      no_keep.keep = KVKeepSpec{};
      CudaSessionPtr s0 = cuda_session_create(m, ctx, ctx);
      if (no_keep.any()) cuda_session_enable_prefill(*s0, no_keep);
      const std::vector<float> without = run_gpu(*s0, runs);
      const Diff d = diff(got, ref, V, 1e30f), dk = diff(got, without, V, 1e30f);
      MESSAGE(spec_text << ", head_dim " << c.head_dim << ": tokens per layer " << counts << "; max |logit diff| "
                        << d.max_abs << " (max |logit| " << d.max_ref << ") over " << d.rows
                        << " calls; vs no keep on cuda " << dk.max_abs << "; KV bytes " << cpu_bytes);
      // the bound of the packed cache against the CPU (test_forward_kvq_cuda.cu: bf16 activations and rows against
      // fp32, codes quantised from bf16): the gathered rows are those same values moved, nothing is recomputed
      CHECK(d.max_abs <= 0.05 * d.max_ref + 0.01);
      CHECK(3 * d.max_abs < dk.max_abs);
      CHECK(top1_agreements(got, ref, V, d.rows) >= d.rows - 1);  // random logits: at most one near-tie may flip
      const std::vector<float> again = run_gpu(*s, runs);  // reset: the same selection, every logit bit for bit
      CHECK(again == got);
      // greedy decoding after the prefill: the CPU's tokens while its choice is clear (lead > 5% of the logits'
      // scale, ten times the bound above)
      const Greedy gc = greedy_cpu(c, h.w, spec, ctx, prompt, 4, &pool), gg = greedy_gpu(*s, prompt, 4);
      for (size_t i = 0; i < gc.tokens.size() && gc.lead[i] > 0.05 * d.max_ref; ++i)
        CHECK(gg.tokens[i] == gc.tokens[i]);
    }
  }
}

TEST_CASE("cuda keep: a prompt shorter than sinks + window drops nothing") {
  if (!have_cuda()) return;
  ThreadPool pool(2);
  const Config c = small_config(256, 4, 2, 512, 4, 512, RopeLayout::half_split);
  CudaModel m = cuda_model_alloc(c, false);
  cuda_model_randomize(m, 7);
  HostWeights h;
  host_weights(m, h);
  std::mt19937 rng(2);
  const std::vector<int> prompt = random_tokens(rng, 5, c.vocab_size);  // sinks 2 + window 4 > 5: every token is always kept
  const std::vector<std::vector<int>> runs = calls(prompt, rng, c.vocab_size, 3);
  const int ctx = 32, V = c.vocab_size;
  const KVPrefillSpec spec = parse("keep:0.2,from=1+imp:w=4,sinks=2");
  size_t cpu_bytes = 0;
  std::vector<int> cpu_tokens;
  const std::vector<float> ref = run_cpu(c, h.w, spec, ctx, runs, &pool, &cpu_bytes, nullptr, nullptr, &cpu_tokens);
  CudaSessionPtr s = cuda_session_create(m, ctx, ctx), full = cuda_session_create(m, ctx, ctx);
  cuda_session_enable_prefill(*s, spec);
  const std::vector<float> got = run_gpu(*s, runs), lf = run_gpu(*full, runs);
  std::vector<int32_t> all(prompt.size());
  std::iota(all.begin(), all.end(), 0);
  for (int l = 0; l < c.n_layers; ++l) {
    CHECK(s->kvq->h_lpos[l] == all);
    CHECK(cpu_tokens[l] == int(prompt.size()));
  }
  CHECK(cuda_session_kv_bytes(*s) == cpu_bytes);
  CHECK(std::equal(lf.begin(), lf.begin() + V, got.begin()));  // the full-cache prefill, bit for bit
  const Diff d = diff(got, ref, V, 1e30f);
  CHECK(d.max_abs <= 0.05 * d.max_ref + 0.01);
}

TEST_CASE("cuda keep: every prompt position's logits are refused, as on the CPU") {
  if (!have_cuda()) return;
  const Config c = small_config(256, 4, 2, 512, 4, 512, RopeLayout::half_split);
  CudaModel m = cuda_model_alloc(c, false);
  cuda_model_randomize(m, 1);
  CudaSessionPtr s = cuda_session_create(m, 32, 32);
  cuda_session_enable_prefill(*s, parse("keep:0.5,from=1+imp:w=2,sinks=1"));
  std::vector<int> prompt(12, 3);
  std::vector<float> logits(size_t(12) * c.vocab_size);
  CHECK_THROWS_WITH_AS(forward_cuda(*s, prompt.data(), 12, LogitsMode::all, logits.data()),
                       doctest::Contains("keep:"), Error);
}

TEST_CASE("cuda keep: llm bench --kv keep:... runs to its report (tiny synthetic model)") {
  if (!have_cuda()) return;
  // the timings mean nothing here (and under the emulator); this checks the bench's keep path end to end: the
  // repeated prefills from one set of positions, the per-layer token count, the decode over the packed cache
  // tests/data/models/tiny has head_dim 16; the CUDA kernels need 64 or 128: 2 heads of 64, 3 layers
  // (svd with keep:<1: test_forward_svdkeep_cuda.cu)
  bench_tiny_synthetic("quant:8/4=0.5/0.5,recent=4+keep:0.5,from=1+imp:w=4,sinks=2", "keep");
}
