// kv_eval: measure low-rank KV-cache configurations against the full cache on a text (issue 6 report numbers):
// perplexity (sliding windows, the algorithm of llm::perplexity), mean cosine of the logits and top-1 agreement
// with the full cache at every scored position, KV bytes per token, and the key/value reconstruction error of
// each profile over the text's own key/value moments (first window), in two metrics: energy
// (E||x - x_hat||^2 / E||x||^2) and score (keys: the error of q.k under the text's own RoPE-averaged query
// moment; values: the error after W_O), as defined in engine/kv_profile.h.
//
//   build/kv_eval MODEL TEXT CTX STRIDE MAX_TOKENS THREADS SPEC[@PROFILE] ...
// prints one markdown row per configuration. A long measurement: not part of the test suite.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "engine/kv_lowrank.h"
#include "engine/kv_profile.h"
#include "engine/llm.h"
#include "loader/error.h"

namespace {

struct Run {
  std::string label, profile;
  std::unique_ptr<llm::Model> model;
  double nll = 0, cos = 0;
  int64_t scored = 0, agree = 0;
  double bytes_per_token = 0;
};

int argmax(const float* row, int V) {
  int b = 0;
  for (int j = 1; j < V; ++j)
    if (row[j] > row[b]) b = j;
  return b;
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 8) {
    std::fprintf(stderr, "usage: kv_eval MODEL TEXT CTX STRIDE MAX_TOKENS THREADS SPEC[@PROFILE] ...\n");
    return 2;
  }
  const std::string model_path = argv[1];
  std::ifstream in(argv[2], std::ios::binary);
  if (!in) llm::fail("cannot read ", argv[2]);
  std::stringstream ss;
  ss << in.rdbuf();
  const int n_ctx = std::atoi(argv[3]), stride = std::atoi(argv[4]), max_tokens = std::atoi(argv[5]),
            threads = std::atoi(argv[6]);
  std::vector<Run> runs;
  runs.push_back({"full", "", std::make_unique<llm::Model>(model_path, llm::LoadOptions{.n_threads = threads})});
  for (int i = 7; i < argc; ++i) {
    std::string arg = argv[i], spec = arg, prof;
    const size_t at = arg.find('@');
    if (at != std::string::npos) {
      spec = arg.substr(0, at);
      prof = arg.substr(at + 1);
    }
    llm::LoadOptions o{.n_threads = threads, .kv = spec, .kv_profile = prof};
    Run r;
    r.model = std::make_unique<llm::Model>(model_path, o);
    r.label = r.model->kv_description();
    r.profile = prof;
    runs.push_back(std::move(r));
  }
  llm::Model& full = *runs[0].model;
  std::vector<int> tokens = full.tokenize(ss.str(), true, false);
  if (max_tokens > 0 && tokens.size() > size_t(max_tokens)) tokens.resize(max_tokens);
  const int V = full.config().vocab_size;
  const int64_t N = tokens.size();
  // key/value moments of this text (first window), for the reconstruction errors
  std::vector<int> first(tokens.begin(), tokens.begin() + std::min<int64_t>(N, n_ctx));
  llm::KVCalibration cal = llm::kv_calibration_collect(full, first, n_ctx);
  const std::vector<double> key_metric = llm::kv_key_metric(full.config(), cal.qq, n_ctx);
  const std::vector<double> value_metric = llm::kv_value_metric(full.config(), full.weights(), full.thread_pool());
  int64_t prev_end = 0;
  std::vector<float> ref;
  for (int64_t begin = 0; begin < N; begin += stride) {
    const int64_t end = std::min<int64_t>(begin + n_ctx, N), trg = end - prev_end, len = end - begin;
    std::vector<int> win(tokens.begin() + begin, tokens.begin() + end);
    for (size_t k = 0; k < runs.size(); ++k) {
      llm::Session s(*runs[k].model, {.n_ctx = n_ctx});
      const std::vector<float>& lg = s.feed_all_logits(win);
      if (k == 0) ref = lg;
      runs[k].bytes_per_token = double(s.kv_cache_bytes()) / double(s.n_past());
      for (int64_t i = std::max<int64_t>(0, len - trg - 1); i + 1 < len; ++i) {
        const float* row = lg.data() + size_t(i) * V;
        const float* rr = ref.data() + size_t(i) * V;
        runs[k].nll -= llm::log_prob_at(row, V, win[i + 1]);
        double d = 0, na = 0, nb = 0;
        for (int j = 0; j < V; ++j) {
          d += double(row[j]) * rr[j];
          na += double(row[j]) * row[j];
          nb += double(rr[j]) * rr[j];
        }
        runs[k].cos += d / std::sqrt(na * nb);
        runs[k].agree += argmax(row, V) == argmax(rr, V);
        ++runs[k].scored;
      }
    }
    prev_end = end;
    std::fprintf(stderr, "window ending at %lld / %lld\n", (long long)end, (long long)N);
    if (end == N) break;
  }
  std::printf("| kv | KV bytes/token (fp32, measured) | vs full | key err @r_k energy / score | value err @r_low/r_med/r_high energy | value err output | ppl | ppl vs full | logits cosine | top-1 agreement |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
  const double ppl_full = std::exp(runs[0].nll / runs[0].scored);
  for (auto& r : runs) {
    const double ppl = std::exp(r.nll / r.scored);
    std::string kerr = "-", verr = "-", voerr = "-";
    if (r.label != "full") {
      // the profile the model uses: rebuild it the same way to evaluate (weights) or load it (calib)
      const std::string spec = r.label;
      const llm::KVSpec sp = llm::kv_spec_parse(spec);
      const llm::KVRanks rk = llm::kv_spec_ranks(sp, full.config().head_dim);
      llm::KVProfile p;
      bool have = true;
      if (!r.profile.empty())
        p = llm::kv_profile_load(r.profile);
      else if (sp.basis == llm::KVBasis::weights)
        p = llm::kv_profile_from_weights(full.config(), full.weights(), full.thread_pool(), {}, sp.metric);
      else
        have = false;
      if (have) {
        char b[128];
        std::snprintf(b, sizeof b, "%.3f / %.3f", llm::kv_projection_error(p, cal, true, rk.k),
                      llm::kv_projection_error(p, cal, true, rk.k, key_metric));
        kerr = b;
        std::snprintf(b, sizeof b, "%.3f/%.3f/%.3f", llm::kv_projection_error(p, cal, false, rk.v_low),
                      llm::kv_projection_error(p, cal, false, rk.v_med), llm::kv_projection_error(p, cal, false, rk.v_high));
        verr = b;
        std::snprintf(b, sizeof b, "%.3f/%.3f/%.3f", llm::kv_projection_error(p, cal, false, rk.v_low, value_metric),
                      llm::kv_projection_error(p, cal, false, rk.v_med, value_metric),
                      llm::kv_projection_error(p, cal, false, rk.v_high, value_metric));
        voerr = b;
      }
    }
    std::printf("| %s | %.0f | %.2fx less | %s | %s | %s | %.3f | %+.1f%% | %.4f | %.1f%% |\n", r.label.c_str(),
                r.bytes_per_token, runs[0].bytes_per_token / r.bytes_per_token, kerr.c_str(), verr.c_str(),
                voerr.c_str(), ppl,
                100.0 * (ppl / ppl_full - 1.0), r.cos / r.scored, 100.0 * double(r.agree) / r.scored);
  }
  std::printf("\n(%lld tokens scored, windows of %d, stride %d)\n", (long long)runs[0].scored, n_ctx, stride);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "kv_eval: %s\n", e.what());
  return 1;
}
