// llm compress: build a KV profile (issue 6): per layer and KV head the bases U_K, U_V that the low-rank KV cache
// projects onto, from the weights (SVD of W_K / W_V) or from calibration text (eigenvectors of the pre-RoPE key
// and the value second moments). Saved as safetensors; run/perplexity/bench/chat load it with --kv-profile.
// --device picks where the eigen-decompositions run (cuda: batched cuSOLVER, kernels/linalg_cuda.h); the model
// itself always runs on the CPU here (calibration uses forward_cpu's capture hooks).
#include <chrono>
#include <cstdio>

#include "commands.h"
#include "engine/kv_profile.h"
#include "gen_common.h"
#include "kernels/linalg_cuda.h"
#include "loader/error.h"

namespace llm_cli {

int cmd_compress(int argc, char** argv) {
  const std::vector<FlagSpec> spec = {
      {"-m,--model", "PATH", "GGUF file, .safetensors file or Hugging Face directory (default: the demo model)"},
      {"-t,--threads", "N", "CPU threads (default: every core)"},
      {"--device", "D", "cpu or cuda: where the eigen-decompositions run (default: cuda when this build has CUDA and "
                        "a GPU is present, else cpu)"},
      {"-v,--verbose", nullptr, "print the device choice and the time the profile took"},
      {"--basis", "B", "weights (SVD of W_K / W_V, no data) or calib (key/value statistics over --calib-file)"},
      {"--metric", "M", "score (default: minimise the attention-score and output error) or energy (||x - x_hat||)"},
      {"--calib-file", "TEXT", "calibration text (basis calib)"},
      {"--calib-tokens", "N", "use the first N tokens of the text (default 16384; 0 = all)"},
      {"--calib-ctx", "N", "calibration window: the text runs in windows of N tokens (default 512)"},
      {"-o,--output", "FILE", "the profile to write (.safetensors)"},
  };
  Args a = parse_args("compress", argc, argv, spec);
  if (a.has("help")) {
    print_help("compress",
               "[-m PATH] [--device cpu|cuda] --basis weights|calib [--metric score|energy] [--calib-file TEXT] [--calib-tokens N] "
               "-o PROFILE.safetensors",
               spec);
    return 0;
  }
  if (!a.positional.empty()) llm::fail("llm compress: unexpected argument '", a.positional[0], "'");
  if (!a.has("output")) llm::fail("llm compress: no output file: give one with -o PROFILE.safetensors");
  const std::string basis = a.get("basis", "weights");
  if (basis != "weights" && basis != "calib") llm::fail("llm compress: --basis must be weights or calib, got '", basis, "'");
  const std::string metric_name = a.get("metric", "score");
  if (metric_name != "score" && metric_name != "energy")
    llm::fail("llm compress: --metric must be score or energy, got '", metric_name, "'");
  const llm::KVMetric metric = metric_name == "score" ? llm::KVMetric::score : llm::KVMetric::energy;
  if (basis == "calib" && !a.has("calib-file"))
    llm::fail("llm compress: --basis calib needs a text to calibrate on: give it with --calib-file TEXT");
  if (basis == "weights" && (a.has("calib-file") || a.has("calib-tokens") || a.has("calib-ctx")))
    llm::fail("llm compress: --calib-file/--calib-tokens/--calib-ctx only apply to --basis calib");
  const long long calib_tokens = a.get_int("calib-tokens", 16384), calib_ctx = a.get_int("calib-ctx", 512);
  if (calib_tokens < 0) llm::fail("llm compress: --calib-tokens must be >= 0, got ", calib_tokens);
  if (calib_ctx < 2 || calib_ctx > (1 << 20)) llm::fail("llm compress: --calib-ctx must be in [2, 1048576], got ", calib_ctx);
  std::string text;
  if (basis == "calib") {
    text = read_text_file(a.get("calib-file"));
    if (text.empty()) llm::fail("llm compress: '", a.get("calib-file"), "' is empty");
  }

  // checked before the model loads, so a missing GPU costs nothing; the default and its reason are the other
  // commands' (llm::device_default: cuda when a CUDA build sees a device, which is when the GPU eigensolver runs)
  std::string why = "--device";
  const llm::Device device = a.has("device") ? llm::device_from_name(a.get("device")) : llm::device_default(&why);
  if (a.has("verbose"))
    std::fprintf(stderr, "llm compress: eigen-decompositions on %s (%s)\n", llm::device_name(device), why.c_str());
  if (device == llm::Device::cuda && !llm::eigh_cuda_available()) {
    std::string reason;
    llm::device_default(&reason);
    llm::fail("llm compress --device cuda: ", reason, " (check the GPU with nvidia-smi, or configure with -DLLM_CUDA=ON "
              "on a machine with the CUDA Toolkit); use --device cpu");
  }

  llm::LoadOptions lo;  // the model runs on the CPU whatever --device says (see the top of the file)
  long long t = a.get_int("threads", 0);
  if (t < 0 || t > 1024) llm::fail("llm compress: --threads must be in [1, 1024], got ", t);
  lo.n_threads = static_cast<int>(t);
  lo.on_progress = progress_bar("loading");
  llm::Model model(a.get("model", default_model_path()), lo);
  const llm::Config& c = model.config();
  llm::KVProfile p;
  const auto t0 = std::chrono::steady_clock::now();
  if (basis == "weights") {
    p = llm::kv_profile_from_weights(c, model.weights(), model.thread_pool(), progress_bar("svd"), metric, device);
  } else {
    std::vector<int> tokens = model.tokenize(text, true, false);
    if (calib_tokens > 0 && tokens.size() > static_cast<size_t>(calib_tokens)) tokens.resize(calib_tokens);
    llm::KVCalibration cal =
        llm::kv_calibration_collect(model, tokens, static_cast<int>(calib_ctx), progress_bar("calibrating"));
    const auto t1 = std::chrono::steady_clock::now();
    p = llm::kv_profile_from_calibration(c, model.weights(), cal, metric, device, model.thread_pool());
    p.calib_source = a.get("calib-file");
    if (a.has("verbose"))
      std::fprintf(stderr, "calibration pass: %.2f s\n", std::chrono::duration<double>(t1 - t0).count());
  }
  if (a.has("verbose"))
    std::fprintf(stderr, "profile (%s, eigen-decompositions on %s): %.2f s\n", basis.c_str(),
                 llm::device_name(device),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  llm::kv_profile_save(p, a.get("output"));
  std::fprintf(stderr, "wrote %s: basis %s, metric %s, %d layers x %d KV heads x head_dim %d, model hash %s%s\n",
               a.get("output").c_str(), p.basis.c_str(), llm::kv_metric_name(p.metric), p.n_layers, p.n_kv_heads, p.head_dim, p.model_hash.c_str(),
               p.basis == "calib" ? (", " + std::to_string(p.calib_tokens) + " calibration tokens").c_str() : "");
  return 0;
}

}  // namespace llm_cli
