// llm bench --device cuda. See bench_cuda.h for what is measured; every figure comes from CUDA events.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "engine/bench_cuda.h"
#include "engine/forward_cuda.cuh"
#include "engine/kv_lowrank.h"
#include "engine/kv_prefill.h"
#include "kernels/cuda_events.cuh"
#include "kernels/elementwise_cuda.h"
#include "kernels/threadpool_cpu.h"
#include "loader/model_file.h"

namespace llm {

namespace {
std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open the synthetic model config (an HF config.json)");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Device-to-device copy bandwidth (read + write bytes per second) of a 1 GiB buffer, best of 10.
double copy_bandwidth(cudaStream_t st) {
  size_t free_b = 0, total_b = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  const size_t bytes = std::min<size_t>(size_t(1) << 30, free_b / 4);
  DeviceBuffer a(bytes), b(bytes);
  CUDA_CHECK(cudaMemsetAsync(a.ptr, 1, bytes, st));
  CudaEvents ev;
  double best = 1e30;
  for (int r = 0; r < 10; ++r) {
    CUDA_CHECK(cudaEventRecord(ev.a, st));
    CUDA_CHECK(cudaMemcpyAsync(b.ptr, a.ptr, bytes, cudaMemcpyDeviceToDevice, st));
    CUDA_CHECK(cudaEventRecord(ev.b, st));
    best = std::min(best, double(ev.ms()));
  }
  return 2.0 * double(bytes) / (best * 1e-3);
}

void set_ints(CudaSession& s, DeviceBuffer& dst, const std::vector<int>& v) {
  CUDA_CHECK(cudaMemcpyAsync(dst.ptr, v.data(), v.size() * sizeof(int), cudaMemcpyHostToDevice, s.stream));
  CUDA_CHECK(cudaStreamSynchronize(s.stream));
}

// A string as a JSON string literal (paths and device names may hold quotes or backslashes).
std::string json_str(const std::string& v) {
  std::string r = "\"";
  for (char ch : v) {
    if (ch == '"' || ch == '\\') r += '\\';
    if (static_cast<unsigned char>(ch) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", ch);
      r += buf;
    } else {
      r += ch;
    }
  }
  return r + "\"";
}

struct MatmulCompare {
  const char* name;
  int rows, cols;
  double gemv_us, lt_us;
};

// One token through W: the hand-written GEMV (variant 0) or cuBLASLt (variant 1), in the model's dtype T.
template <class T>
void matmul_1token(CudaSession& s, int variant, float* y, const T* w, const T* x, int rows, int cols) {
  if (variant == 0)
    gemv_cuda(y, w, x, rows, cols, s.stream);
  else
    gemm_cuda(s.lt, y, x, w, 1, rows, cols, s.stream);
}
}  // namespace

void bench_cuda(const CudaBenchOptions& o) {
  if (o.model_path.empty() == o.synthetic_config.empty())
    fail("llm bench --device cuda: give exactly one of -m PATH or --synthetic CONFIG.json");
  if (o.n_prompt < 1) fail("llm bench: -p must be >= 1, got ", o.n_prompt);
  if (o.n_gen < 1) fail("llm bench --device cuda: -n must be >= 1, got ", o.n_gen);
  if (o.reps < 1) fail("llm bench: -r must be >= 1, got ", o.reps);
  const int ctx = o.ctx > 0 ? o.ctx : o.n_prompt + o.n_gen;
  if (ctx <= o.n_gen) fail("llm bench: the context -c ", ctx, " must exceed -n ", o.n_gen);
  std::string kv_base;  // the --kv spec without issue 7's +parts (quant/evict: cuda_session_enable_prefill)
  const KVPrefillSpec pre = kv_prefill_spec_parse(o.kv, kv_base);
  const KVSpec kv_spec = kv_spec_parse(kv_base);
  if (!kv_spec.lowrank && !o.kv_profile.empty())
    fail("--kv-profile is given but the KV cache is full: add --kv svd:...");
  if (!o.kv_profile.empty() && o.model_path.empty())
    fail("--kv-profile needs -m MODEL (a --synthetic model gets random orthonormal bases)");
  if (kv_spec.lowrank && kv_spec.policy == KVRankPolicy::importance)
    fail("llm bench --device cuda --kv ", o.kv, ": svd policy=importance is not benchmarked (its value ranks come from "
         "a real prompt's scores, layer by layer, which the bench's random cache has not); bench policy=seed|uniform, "
         "or time it with llm run/perplexity --device cuda");
  cuda_dtype_kv_check(o.dtype, kv_spec.lowrank, pre.any(), o.kv);
  if (cuda_devices() == 0) fail("llm bench --device cuda: no CUDA device found; use --device cpu");

  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  size_t free0 = 0, total = 0;
  CUDA_CHECK(cudaMemGetInfo(&free0, &total));

  // ---- the model ----
  CudaModelPtr model;
  std::string source;
  if (!o.synthetic_config.empty()) {
    Config c = config_from_hf_json(read_file(o.synthetic_config), o.synthetic_config);
    model.reset(new CudaModel(cuda_model_alloc(c, c.tie_embeddings, o.dtype)));
    cuda_model_randomize(*model, o.seed);
    if (kv_spec.lowrank) cuda_model_lowrank_randomize(*model, kv_spec, o.seed + 303);
    source = "synthetic " + o.synthetic_config;
  } else {
    ModelFile f = model_file_open(o.model_path);
    Weights w = weights_from_file(f);
    model = cuda_model_upload(f.config, w, o.dtype);
    if (kv_spec.lowrank) {
      ThreadPool pool;
      const auto lrm = kv_lowrank_model_create(kv_spec, o.kv_profile, f.config, w, &pool);
      cuda_model_add_lowrank(*model, *lrm);
    }
    source = o.model_path;
  }
  if (o.lowrank_kernel != "auto" && o.lowrank_kernel != "generic" && o.lowrank_kernel != "tensor")
    fail("llm bench: --lowrank-kernel '", o.lowrank_kernel, "' is not auto, generic or tensor");
  if (o.lowrank_kernel != "auto" && !model->lowrank)
    fail("llm bench: --lowrank-kernel chooses the low-rank cache's attention kernels; give --kv svd:...");
  if (model->lowrank)
    model->lowrank->kernel = o.lowrank_kernel == "generic"  ? LowRankKernel::generic
                                    : o.lowrank_kernel == "tensor" ? LowRankKernel::tensor
                                                                   : LowRankKernel::automatic;
  const std::string kv_desc =
      pre.any() ? (model->lowrank ? model->lowrank->desc : std::string("full")) + "+" + kv_prefill_spec_describe(pre)
      : model->lowrank ? model->lowrank->desc : "full";
  const Config& c = model->c;
  const size_t es = dtype_bytes(model->dtype);  // bytes per weight / activation / cache element (2: bf16, f16)
  const int capacity = std::max(ctx, o.n_prompt);
  CudaSessionPtr sp = cuda_session_create(*model, capacity, o.n_prompt);
  CudaSession& s = *sp;
  if (pre.any()) cuda_session_enable_prefill(s, pre);  // issue 7: the mixed-precision cache
  const double copy_bw = copy_bandwidth(s.stream);
  // peak device memory: the lowest free memory seen after each phase (weights + session + cuBLASLt / graph
  // internals), relative to before the model; the copy-bandwidth buffers above are freed and not counted
  size_t free_min = free0;
  auto sample_free = [&] {
    size_t f = 0, t = 0;
    CUDA_CHECK(cudaMemGetInfo(&f, &t));
    free_min = std::min(free_min, f);
  };
  sample_free();

  std::mt19937 rng(static_cast<uint32_t>(o.seed));
  std::uniform_int_distribution<int> tok(0, c.vocab_size - 1);
  CudaEvents ev;

  // ---- prefill: n_prompt tokens in one block from an empty cache ----
  std::vector<int> prompt(o.n_prompt), pos(o.n_prompt);
  for (int i = 0; i < o.n_prompt; ++i) {
    prompt[i] = tok(rng);
    pos[i] = i;
  }
  set_ints(s, s.tokens, prompt);
  set_ints(s, s.pos, pos);
  cuda_lowrank_begin(s, 0, o.n_prompt);  // low-rank: the prompt's value ranks (no-op for the full cache)
  double prefill_ms = 1e30;
  for (int r = 0; r <= o.reps; ++r) {  // r == 0: warm-up (cuBLASLt heuristics, module loading)
    s.n = 0;
    if (s.kvq) cuda_kvq_prefill_begin(s, o.n_prompt);  // issue 7: the block also computes the importance
    CUDA_CHECK(cudaEventRecord(ev.a, s.stream));
    forward_block_cuda(s, o.n_prompt, 1);
    CUDA_CHECK(cudaEventRecord(ev.b, s.stream));
    const double t = ev.ms();
    if (r > 0) prefill_ms = std::min(prefill_ms, t);
  }
  sample_free();
  OpTimer prefill_prof;
  s.n = 0;
  if (s.kvq) cuda_kvq_prefill_begin(s, o.n_prompt);
  forward_block_cuda(s, o.n_prompt, 1, &prefill_prof);
  prefill_prof.collect();
  double compress_ms = 0.0;  // issue 7: selection, classes and quantisation after the prefill (host + device)
  if (s.kvq) {
    const auto t0 = std::chrono::steady_clock::now();
    cuda_kvq_prefill_finish(s, o.n_prompt);
    compress_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  }
  double keep_tokens = o.n_prompt;  // issue 7 keep:<1: tokens a layer computed in the prefill, mean over the layers
  if (s.kvq && s.kvq->drops()) {
    keep_tokens = 0.0;
    for (const auto& p : s.kvq->h_lpos) keep_tokens += double(p.size()) / c.n_layers;
  }

  // ---- decode at context: cache filled with random keys/values up to start, then n_gen graph replays ----
  const int start = ctx - o.n_gen;
  if (model->lowrank) {
    // the first `start` tokens ranked as one prompt, then every decode step's rank (the graph replays read them
    // at their device-side position); cv reaches its final size here, before the fill and the graph capture
    cuda_lowrank_begin(s, 0, start);
    for (int i = 0; i < o.n_gen; ++i) cuda_lowrank_begin(s, start + i, 1);
    fill_random_bf16_cuda(s.ck.as<bf16>(), int64_t(s.ck.bytes / 2), o.seed + 101, 1.0f, s.stream);
    fill_random_bf16_cuda(s.cv.as<bf16>(), int64_t(s.cv.bytes / 2), o.seed + 202, 1.0f, s.stream);
    if (s.n_sink > 0) {  // sinks=N: the first N tokens' full keys (fp32), random as the rest of the cache
      std::vector<float> ks(s.ksink.bytes / 4);
      std::normal_distribution<float> nd(0.0f, 1.0f);
      for (float& x : ks) x = nd(rng);
      CUDA_CHECK(cudaMemcpyAsync(s.ksink.ptr, ks.data(), s.ksink.bytes, cudaMemcpyHostToDevice, s.stream));
      CUDA_CHECK(cudaStreamSynchronize(s.stream));  // ks is pageable and leaves scope
    }
    if (s.window > 0) {  // window=N: the ring's full keys and value coefficients (fp32), random as the rest
      std::vector<float> ring(s.kwin.bytes / 4);
      std::normal_distribution<float> nd(0.0f, 1.0f);
      for (DeviceBuffer* b : {&s.kwin, &s.vwin}) {
        for (float& x : ring) x = nd(rng);
        CUDA_CHECK(cudaMemcpyAsync(b->ptr, ring.data(), b->bytes, cudaMemcpyHostToDevice, s.stream));
        CUDA_CHECK(cudaStreamSynchronize(s.stream));  // ring is pageable and refilled
      }
    }
  } else {
    const size_t cache_elems = s.kcache.bytes / es;
    if (model->dtype == DType::f16) {
      fill_random_cuda(s.kcache.as<f16>(), int64_t(cache_elems), o.seed + 101, 1.0f, s.stream);
      fill_random_cuda(s.vcache.as<f16>(), int64_t(cache_elems), o.seed + 202, 1.0f, s.stream);
    } else {
      fill_random_cuda(s.kcache.as<bf16>(), int64_t(cache_elems), o.seed + 101, 1.0f, s.stream);
      fill_random_cuda(s.vcache.as<bf16>(), int64_t(cache_elems), o.seed + 202, 1.0f, s.stream);
    }
  }
  CUDA_CHECK(cudaStreamSynchronize(s.stream));
  std::vector<float> scores;  // issue 7: random importance accumulators for the `start` random tokens
  if (s.kvq) {
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    scores.resize(size_t(c.n_layers) * 2 * c.n_kv_heads * start);
    for (float& x : scores) x = u(rng);
    cuda_kvq_prefill_begin(s, start);
    CUDA_CHECK(cudaMemcpy(s.kvq->imp.ptr, scores.data(), scores.size() * 4, cudaMemcpyHostToDevice));
  }
  double decode_ms = 1e30;
  for (int r = 0; r <= o.reps; ++r) {  // r == 0: warm-up and graph capture
    // issue 7: the packed cache of the `start` tokens rebuilt (the previous repetition slid its window); same
    // layout every time, so the captured graph stays valid
    if (s.kvq) cuda_kvq_prefill_finish(s, start);
    s.n = start;
    set_ints(s, s.tokens, {prompt[0]});
    set_ints(s, s.pos, {start});
    CUDA_CHECK(cudaEventRecord(ev.a, s.stream));
    for (int i = 0; i < o.n_gen; ++i) cuda_decode_graph_launch(s);
    CUDA_CHECK(cudaEventRecord(ev.b, s.stream));
    const double t = ev.ms();
    if (r > 0) decode_ms = std::min(decode_ms, t);
  }
  sample_free();
  int last_token = -1;
  CUDA_CHECK(cudaMemcpy(&last_token, s.tokens.ptr, sizeof(int), cudaMemcpyDeviceToHost));
  // profiling pass: the same step run eagerly with an event around every op, averaged over 8 steps
  OpTimer decode_prof;
  const int prof_steps = 8;
  for (int i = 0; i < prof_steps; ++i) {
    set_ints(s, s.pos, {start + o.n_gen / 2});
    forward_block_cuda(s, 1, 1, &decode_prof);
    decode_prof.collect();
  }
  for (double& t : decode_prof.ms) t /= prof_steps;

  // ---- GEMV vs cuBLASLt at one token, on this model's matrices ----
  std::vector<MatmulCompare> cmp = {{"gate_up", 2 * c.ffn_dim, c.dim, 0, 0},
                                    {"down", c.dim, c.ffn_dim, 0, 0},
                                    {"lm_head", c.vocab_size, c.dim, 0, 0}};
  for (auto& mc : cmp) {
    const bf16* w = mc.name[0] == 'g' ? model->layers[0].wgu : mc.name[0] == 'd' ? model->layers[0].wdown : model->output;
    float* y = mc.name[0] == 'l' ? s.logits.as<float>() : s.gu.as<float>();  // (vocab) / (2 ffn) floats
    const int reps = 20;
    for (int variant = 0; variant < 2; ++variant) {
      double best = 1e30;
      for (int r = 0; r < 3; ++r) {
        CUDA_CHECK(cudaEventRecord(ev.a, s.stream));
        for (int i = 0; i < reps; ++i) {
          if (model->dtype == DType::f16)
            matmul_1token(s, variant, y, elem_ptr<f16>(w), s.h.as<f16>(), mc.rows, mc.cols);
          else
            matmul_1token(s, variant, y, w, s.h.as<bf16>(), mc.rows, mc.cols);
        }
        CUDA_CHECK(cudaEventRecord(ev.b, s.stream));
        best = std::min(best, double(ev.ms()) * 1e3 / reps);
      }
      (variant == 0 ? mc.gemv_us : mc.lt_us) = best;
    }
  }
  sample_free();

  // ---- report ----
  const double prefill_tps = o.n_prompt / (prefill_ms * 1e-3);
  const double decode_tps = o.n_gen / (decode_ms * 1e-3);
  const double full_token_bytes = 2.0 * c.n_layers * c.n_kv_heads * c.head_dim * es;  // K and V of the dtype
  // step i (0-based) runs at position start + i and reads start + i + 1 cached tokens: on average start + (n+1)/2
  const double avg_kv = start + (o.n_gen + 1) / 2.0;
  double kv_read = full_token_bytes * avg_kv;  // KV bytes one decode step reads, averaged over the steps
  double kv_token_bytes = full_token_bytes;    // per cached token, as stored
  if (model->lowrank) {
    // read: what the decode kernel streams, a bf16 c_k row (alloc=spectrum: the block's own rank, packed; the mean
    // over blocks here) and vrank[t] c_v values per token, layer and KV head, as the policy ranked them (window=N:
    // every token's, the window's included, whose tiles also load their full rows); sinks=N: + min(n, N) full keys
    // fp32; window=N: + min(n, N) full keys and values fp32. Stored (kv_token_bytes): cuda_lowrank_kv_bytes, the
    // CPU's count (each block's own key rank, the window's tokens once, in full).
    const double per_elem = 2.0 * c.n_layers * c.n_kv_heads;
    double rk = 0.0;
    for (int r : model->lowrank->k_rank) rk += double(r) / double(model->lowrank->k_rank.size());
    double sum = 0.0;
    const double full_row = 4.0 * c.n_layers * c.n_kv_heads * c.head_dim;
    for (int i = 0; i < o.n_gen; ++i)
      sum += per_elem * (double(start + i + 1) * rk + double(s.h_voff[start + i + 1])) +
             full_row * (std::min(start + i + 1, s.n_sink) + 2.0 * std::min(start + i + 1, s.window));
    kv_read = sum / o.n_gen;
    kv_token_bytes = double(cuda_lowrank_kv_bytes(s, ctx)) / ctx;
  }
  if (s.kvq) {  // issue 7: the packed cache as the attention reads it (rows, offsets, widths), step by step
    double sum = 0.0;
    for (int i = 0; i < o.n_gen; ++i) sum += double(cuda_kvq_bytes(s, start + i + 1, true));
    kv_read = sum / o.n_gen;
    kv_token_bytes = double(cuda_kvq_bytes(s, ctx, false)) / ctx;
  }
  const double bytes_per_tok = double(model->decode_weight_bytes) + kv_read;
  const double gbs = bytes_per_tok * decode_tps / 1e9;
  const double pct = 100.0 * bytes_per_tok * decode_tps / copy_bw;
  const double peak_mib = double(free0 - free_min) / 1048576.0;
  double prof_total = 0.0;
  for (double t : decode_prof.ms) prof_total += t;
  const int F = static_cast<int>(OpFamily::count);
  if (o.json) {
    std::printf("{\"device\": %s, \"sm_count\": %d, \"source\": %s, \"n_prompt\": %d, \"n_gen\": %d, "
                "\"ctx\": %d, \"decode_start\": %d, \"prefill_tok_s\": %.1f, \"decode_tok_s\": %.2f, "
                "\"weight_device_bytes\": %zu, \"decode_weight_bytes\": %zu, \"kv_bytes_per_token\": %.0f, "
                "\"bytes_per_decoded_token\": %.0f, \"decode_gb_s\": %.1f, \"copy_gb_s\": %.1f, "
                "\"pct_of_copy_bw\": %.1f, \"peak_device_mib\": %.1f, \"session_device_mib\": %.1f, "
                "\"last_token\": %d, \"kv\": %s, \"kv_full_bytes_per_token\": %.0f, \"kv_compress_ms\": %.3f, "
                "\"dtype\": \"%s\", \"decode_ms_per_op\": {",
                json_str(prop.name).c_str(), prop.multiProcessorCount, json_str(source).c_str(), o.n_prompt, o.n_gen,
                ctx, start, prefill_tps, decode_tps, model->bytes, model->decode_weight_bytes, kv_token_bytes,
                bytes_per_tok, gbs, copy_bw / 1e9, pct, peak_mib, cuda_session_device_bytes(s) / 1048576.0,
                last_token, json_str(kv_desc).c_str(), full_token_bytes, compress_ms, dtype_name(model->dtype));
    for (int f = 0; f < F; ++f)
      std::printf("%s\"%s\": %.4f", f ? ", " : "", op_family_name(OpFamily(f)), decode_prof.ms[f]);
    std::printf("}, \"prefill_ms_per_op\": {");
    for (int f = 0; f < F; ++f)
      std::printf("%s\"%s\": %.4f", f ? ", " : "", op_family_name(OpFamily(f)), prefill_prof.ms[f]);
    std::printf("}, \"matmul_1token_us\": {");
    for (size_t i = 0; i < cmp.size(); ++i)
      std::printf("%s\"%s\": {\"gemv\": %.2f, \"cublaslt\": %.2f}", i ? ", " : "", cmp[i].name, cmp[i].gemv_us,
                  cmp[i].lt_us);
    std::printf("}, \"prefill_layer_tokens_mean\": %.1f, \"lowrank_decode_kernel\": %s}\n", keep_tokens,
                json_str(s.lr_decode_kernel).c_str());
    return;
  }
  std::printf("device     %s (%d SMs), copy bandwidth %.0f GB/s (device-to-device, read + write)\n", prop.name,
              prop.multiProcessorCount, copy_bw / 1e9);
  std::printf("model      %s: %d layers, dim %d, %d/%d heads, ffn %d, vocab %d; %.2f GB %s on the device\n",
              source.c_str(), c.n_layers, c.dim, c.n_heads, c.n_kv_heads, c.ffn_dim, c.vocab_size, model->bytes / 1e9,
              dtype_name(model->dtype));
  std::printf("prefill    %d tokens: %.1f ms, %.0f tok/s\n", o.n_prompt, prefill_ms, prefill_tps);
  std::printf("decode     %d tokens from context %d to %d (cache pre-filled with random values): %.3f ms/token, "
              "%.1f tok/s\n", o.n_gen, start, ctx, decode_ms / o.n_gen, decode_tps);
  std::printf("kv cache   %s: %.1f KB per cached token (as stored; full %s cache %.1f KB, %.2fx)\n",
              kv_desc.c_str(), kv_token_bytes / 1e3, dtype_name(model->dtype), full_token_bytes / 1e3,
              full_token_bytes / kv_token_bytes);
  if (!s.lr_decode_kernel.empty())
    std::printf("attention  low-rank decode kernel: %s\n", s.lr_decode_kernel.c_str());
  if (s.kvq)
    std::printf("compress   %.2f ms after the %d-token prefill (importance ranked on the host, rows quantised on the "
                "device); decode reads the packed cache (rows + 9 B of offset and width per entry and KV head)\n",
                compress_ms, o.n_prompt);
  if (s.kvq && s.kvq->drops())
    std::printf("keep       the prefill's layers computed %.1f of the %d prompt tokens on average (selective "
                "propagation; the prefill time above includes its host-side selection)\n", keep_tokens, o.n_prompt);
  std::printf("per token  %.3f GB weights + %.3f GB KV (%.1f KB x %.0f tokens) = %.3f GB -> %.0f GB/s = %.1f%% of "
              "copy bandwidth\n", model->decode_weight_bytes / 1e9, kv_read / 1e9, kv_read / avg_kv / 1e3, avg_kv,
              bytes_per_tok / 1e9, gbs, pct);
  std::printf("memory     peak %.0f MiB on the device (weights %.0f MiB, session %.0f MiB)\n", peak_mib,
              model->bytes / 1048576.0, cuda_session_device_bytes(s) / 1048576.0);
  std::printf("decode step by op family (eager, events around each op; sum %.3f ms vs %.3f ms in the graph):\n",
              prof_total, decode_ms / o.n_gen);
  for (int f = 0; f < F; ++f)
    if (decode_prof.ms[f] > 0)
      std::printf("  %-10s %8.3f ms  %5.1f%%\n", op_family_name(OpFamily(f)), decode_prof.ms[f],
                  100.0 * decode_prof.ms[f] / prof_total);
  std::printf("prefill by op family (%d tokens):\n", o.n_prompt);
  for (int f = 0; f < F; ++f)
    if (prefill_prof.ms[f] > 0) std::printf("  %-10s %8.3f ms\n", op_family_name(OpFamily(f)), prefill_prof.ms[f]);
  std::printf("one-token matmul, layer 0 (hand-written GEMV vs cuBLASLt):\n");
  for (const auto& mc : cmp)
    std::printf("  %-8s (%d x %d): gemv %.1f us (%.0f GB/s), cublaslt %.1f us (%.0f GB/s)\n", mc.name, mc.rows,
                mc.cols, mc.gemv_us, 2.0 * mc.rows * mc.cols / (mc.gemv_us * 1e3), mc.lt_us,
                2.0 * mc.rows * mc.cols / (mc.lt_us * 1e3));
}

}  // namespace llm
