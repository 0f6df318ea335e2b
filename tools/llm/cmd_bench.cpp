// llm bench (CPU): prefill and decode speed of a model through the public API, bytes moved per decoded token and
// the bandwidth that implies. The prompt is seeded random token ids (the speed does not depend on the text).
// Backend-neutral by construction: --device picks the backend, the measurement loop is the same; the CUDA
// backend (issue 5) adds --synthetic CONFIG, device bandwidth and per-op timings.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <random>

#include "commands.h"
#include "gen_common.h"
#include "loader/error.h"
#include "engine/bench_cuda.h"

namespace llm_cli {

namespace {
// CPU seconds of the whole process (all threads). On a loaded machine wall time includes waiting for a core;
// CPU time per token does not, so with -t 1 it approximates the unloaded single-core speed.
double process_cpu_s() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}
}  // namespace

int cmd_bench(int argc, char** argv) {
  const std::vector<FlagSpec> spec = concat(model_flags(), {
                                                               {"-p,--n-prompt", "N", "prompt tokens (default 128)"},
                                                               {"-n,--n-gen", "N", "generated tokens (default 64)"},
                                                               {"-c,--ctx-size", "N", "context size (default: p + n)"},
                                                               {"-r,--repetitions", "N", "runs, best kept (default 1)"},
                                                               {"--json", nullptr, "print one JSON object"},
                                                               {"--synthetic", "CONFIG",
                                                                "cuda: random weights of this config.json"},
                                                               {"--lowrank-kernel", "KERNEL",
                                                                "cuda, --kv svd: auto (default), generic or "
                                                                "tensor: the low-rank attention kernels"},
                                                           });
  Args a = parse_args("bench", argc, argv, spec);
  if (a.has("help")) {
    print_help("bench", "[-m PATH] [-p N] [-n N] [-c CTX] [--json]", spec);
    return 0;
  }
  if (!a.positional.empty()) llm::fail("llm bench: unexpected argument '", a.positional[0], "'");
  const long long p = a.get_int("n-prompt", 128), n = a.get_int("n-gen", 64), reps = a.get_int("repetitions", 1);
  if (p < 1) llm::fail("llm bench: -p must be >= 1, got ", p);
  if (n < 0) llm::fail("llm bench: -n must be >= 0, got ", n);
  if (reps < 1) llm::fail("llm bench: -r must be >= 1, got ", reps);
  if (a.has("synthetic") || chosen_device(a, false) == llm::Device::cuda) {
    chosen_device(a);  // -v: say which device and why
    const llm::DType dtype = chosen_dtype(a, llm::Device::cuda);
    // the CUDA bench (engine/bench_cuda.h): -c is the context reached at the end of decoding
    llm::CudaBenchOptions o;
    if (a.has("synthetic"))
      o.synthetic_config = a.get("synthetic", "");
    else
      o.model_path = a.get("model", default_model_path());
    o.dtype = dtype;
    o.n_prompt = static_cast<int>(p);
    o.n_gen = static_cast<int>(n);
    o.ctx = a.has("ctx-size") ? context_size(a, 0) : 0;
    o.reps = static_cast<int>(reps);
    o.json = a.has("json");
    o.kv = a.get("kv", "full");  // issue 6: svd:... benches the low-rank cache
    o.kv_profile = a.get("kv-profile", "");
    o.lowrank_kernel = a.get("lowrank-kernel", "auto");
    if (a.has("kv-config"))
      llm::fail("llm bench --device cuda: give the KV spec with --kv (--kv-config is not read here)");
    llm::bench_cuda(o);  // a build without CUDA says how to get it
    return 0;
  }
  if (a.has("lowrank-kernel"))
    llm::fail("llm bench: --lowrank-kernel picks CUDA kernels; add --device cuda (the CPU has one low-rank path)");
  const int n_ctx = context_size(a, static_cast<int>(p + n + 1));
  if (p + n > n_ctx) llm::fail("llm bench: -p + -n = ", p + n, " does not fit the context -c ", n_ctx);

  llm::Model model(a.get("model", default_model_path()), load_options(a));
  const llm::Config& c = model.config();
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int> tok(0, c.vocab_size - 1);
  std::vector<int> prompt(p);
  for (auto& t : prompt) t = tok(rng);

  double best_prefill = 1e30, best_decode = 1e30, best_prefill_cpu = 1e30, best_decode_cpu = 1e30;
  size_t kv_bytes_end = 0;  // the cache as stored after the last run (compressed or full)
  llm::Session session(model, {.n_ctx = n_ctx});
  for (long long r = 0; r < reps; ++r) {
    session.reset();
    double c0 = process_cpu_s();
    auto t0 = std::chrono::steady_clock::now();
    session.feed(prompt);
    auto t1 = std::chrono::steady_clock::now();
    best_prefill = std::min(best_prefill, std::chrono::duration<double>(t1 - t0).count());
    best_prefill_cpu = std::min(best_prefill_cpu, process_cpu_s() - c0);
    if (n > 0) {
      llm::GenerateOptions g;
      g.max_tokens = static_cast<int>(n) + 1;  // n forward passes after the first sampled token
      g.stop_at_eos = false;
      c0 = process_cpu_s();
      t0 = std::chrono::steady_clock::now();
      session.generate(g);
      t1 = std::chrono::steady_clock::now();
      best_decode = std::min(best_decode, std::chrono::duration<double>(t1 - t0).count());
      best_decode_cpu = std::min(best_decode_cpu, process_cpu_s() - c0);
    }
    kv_bytes_end = session.kv_cache_bytes();
  }
  const double prefill_tps = p / best_prefill, decode_tps = n > 0 ? n / best_decode : 0.0;
  // bytes per decoded token: every weight matrix the decode step reads (Model::decode_weight_bytes) once + the KV
  // cache read (average context) and written. The
  // cache's bytes per cached token as stored (--kv: the compressed size, Session::kv_cache_bytes over the p + n
  // tokens cached at the end), next to the full fp32 cache's
  const double full_token_bytes = 2.0 * c.n_layers * c.n_kv_heads * c.head_dim * sizeof(float);
  const double kv_token_bytes = static_cast<double>(kv_bytes_end) / static_cast<double>(p + n);
  const double bytes_per_tok = static_cast<double>(model.decode_weight_bytes()) + kv_token_bytes * (p + n / 2.0);
  const double gbs = bytes_per_tok * decode_tps / 1e9;
  const double peak_mib = llm::peak_rss_bytes() / 1048576.0;
  if (a.has("json")) {
    std::printf(
        "{\"device\": \"%s\", \"threads\": %d, \"n_prompt\": %lld, \"n_gen\": %lld, \"ctx\": %d, "
        "\"prefill_tok_s\": %.2f, \"decode_tok_s\": %.2f, \"weight_bytes\": %zu, \"kv_weight_bytes\": %zu, "
        "\"kv_bytes_per_token\": %.0f, "
        "\"full_kv_bytes_per_token\": %.0f, \"kv\": \"%s\", \"bytes_per_decoded_token\": %.0f, \"decode_gb_s\": %.3f, "
        "\"peak_rss_mib\": %.1f, "
        "\"prefill_cpu_ms_per_token\": %.3f, \"decode_cpu_ms_per_token\": %.3f}\n",
        llm::device_name(model.device()), model.n_threads(), p, n, n_ctx, prefill_tps, decode_tps,
        model.weight_bytes(), model.kv_weight_bytes(), kv_token_bytes, full_token_bytes, model.kv_description().c_str(), bytes_per_tok, gbs,
        peak_mib, 1e3 * best_prefill_cpu / p,
        n > 0 ? 1e3 * best_decode_cpu / n : 0.0);
  } else {
    std::printf("model      %s (%s, %d threads)\n", model.path().c_str(), llm::device_name(model.device()),
                model.n_threads());
    std::printf("prefill    %lld tokens: %.1f tok/s\n", p, prefill_tps);
    if (n > 0) std::printf("decode     %lld tokens: %.1f tok/s\n", n, decode_tps);
    std::printf("per token  %.1f MB weights + %.1f KB KV per cached token -> %.2f GB/s at decode\n",
                model.decode_weight_bytes() / 1e6, kv_token_bytes / 1e3, gbs);
    if (model.kv_weight_bytes() > 0)
      std::printf("kv weights %.1f MB folded W_K' and W_fused held beside the model's %.1f MB\n",
                  model.kv_weight_bytes() / 1e6, model.weight_bytes() / 1e6);
    // Session::kv_cache_bytes: svd alone counts its fp32 rows as this backend stores them; the caches with
    // quant/keep/evict count 16-bit rows at 2 bytes a value, as the GPU stores them (docs/kv-compression.md)
    if (model.kv_description() != "full")
      std::printf("kv cache   %s: %.1f KB per cached token (Session::kv_cache_bytes; the full cache here: %.1f KB "
                  "fp32, %.1f KB at 16 bits)\n",
                  model.kv_description().c_str(), kv_token_bytes / 1e3, full_token_bytes / 1e3,
                  full_token_bytes / 2e3);
    std::printf("cpu time   prefill %.2f ms/token, decode %.2f ms/token (all threads; wall time above)\n",
                1e3 * best_prefill_cpu / p, n > 0 ? 1e3 * best_decode_cpu / n : 0.0);
    std::printf("memory     peak RSS %.0f MiB\n", peak_mib);
  }
  return 0;
}

}  // namespace llm_cli
