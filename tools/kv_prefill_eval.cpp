// kv_prefill_eval: measure prefill-compression configurations (issue 7) against the full cache: the numbers of
// docs/prefill-compression.md.
//
//   build/kv_prefill_eval MODEL TEXT [--ctx C] [--cont M] [--chunks K] [--passkey-len L] [--passkey-n N]
//                         [--speed-len S] [--threads T] [--kv-profile PROFILE.safetensors] SPEC ...
//
// For each SPEC (a --kv spec; "full" is the reference):
//   - KV bytes/token after prefilling C tokens (the 16-bit class counted at 2 bytes a value, as the CUDA cache
//     stores it; the plain low-rank cache's fp32 rows likewise, through kv_bytes_16bit; "full" = the 16-bit full cache, 2 * layers * kv_heads * head_dim * 2 bytes)
//   - continuation perplexity: K chunks of the text, each C context tokens prefilled through the compressed
//     path, then the next M tokens fed as one block and scored (each predicted from the compressed context plus
//     the continuation before it); top-1 agreement of those M predictions with the full cache
//   - passkey retrieval: N prompts of about L tokens of filler with "The pass key is NNNNN." at depths spread
//     over 5%..95%, ending "What is the pass key? The pass key is"; greedy 8 tokens must contain the digits
//   - prefill speed: seconds to prefill S tokens of the text (best of 2)
// --kv-profile: the low-rank profile (llm compress) for the specs with an svd part (the others ignore it).
// Prints one markdown row per spec. A long measurement: not part of the test suite.
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "engine/llm.h"
#include "eval/search.h"
#include "loader/error.h"

namespace {

int argmax(const float* row, int V) { return int(std::max_element(row, row + V) - row); }

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
// CPU seconds of the whole process (all threads): the work done, insensitive to other jobs on a shared machine.
double cpu_now() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

std::string passkey_prompt(int key, double depth, int target_tokens, const llm::Model& m) {
  const std::string filler = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";
  const int per = static_cast<int>(m.tokenize(filler, false).size());
  const int reps = std::max(2, (target_tokens - 40) / per);
  const int at = std::clamp(static_cast<int>(depth * reps), 0, reps);
  std::string p = "There is important info hidden inside a lot of irrelevant text. Find it and memorize it.\n";
  for (int r = 0; r < reps; ++r) {
    if (r == at) p += "The pass key is " + std::to_string(key) + ". Remember it. " + std::to_string(key) + " is the pass key. ";
    p += filler;
  }
  if (at >= reps) p += "The pass key is " + std::to_string(key) + ". Remember it. ";
  p += "\nWhat is the pass key? The pass key is";
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc < 4) {
      std::fprintf(stderr, "usage: kv_prefill_eval MODEL TEXT [--ctx C] [--cont M] [--chunks K] [--passkey-len L] "
                           "[--passkey-n N] [--speed-len S] [--threads T] [--kv-profile FILE] SPEC ...\n");
      return 2;
    }
    const std::string model_path = argv[1], text_path = argv[2];
    int ctx = 384, cont = 128, chunks = 4, pk_len = 400, pk_n = 8, speed_len = 1024, threads = 0;
    std::vector<std::string> specs;
    std::string profile;
    for (int i = 3; i < argc; ++i) {
      const std::string a = argv[i];
      auto val = [&]() {
        if (i + 1 >= argc) llm::fail(a, " needs a value");
        return std::atoi(argv[++i]);
      };
      if (a == "--ctx") ctx = val();
      else if (a == "--cont") cont = val();
      else if (a == "--chunks") chunks = val();
      else if (a == "--passkey-len") pk_len = val();
      else if (a == "--passkey-n") pk_n = val();
      else if (a == "--speed-len") speed_len = val();
      else if (a == "--threads") threads = val();
      else if (a == "--kv-profile") {
        if (i + 1 >= argc) llm::fail(a, " needs a value");
        profile = argv[++i];
      }
      else specs.push_back(a);
    }
    std::ifstream in(text_path);
    if (!in) llm::fail(text_path, ": cannot open");
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();

    std::vector<std::vector<float>> full_top;  // (chunk) the full cache's continuation predictions
    std::printf("| spec | KV bytes/token | vs full | cont. PPL | top-1 vs full | passkey | prefill %d tok: wall / CPU s | speed-up wall / CPU |\n",
                speed_len);
    std::printf("|---|---|---|---|---|---|---|---|\n");
    double full_prefill_s = 0, full_prefill_cpu = 0;
    std::vector<std::vector<int>> ref_top1;
    for (const std::string& spec : specs) {
      llm::LoadOptions lo;
      lo.kv = spec;
      if (spec.rfind("svd", 0) == 0) lo.kv_profile = profile;
      lo.n_threads = threads;
      llm::Model model(model_path, lo);
      const llm::Config& c = model.config();
      const int V = c.vocab_size;
      const std::vector<int> toks = model.tokenize(text, true);
      const int need = std::max(ctx + cont, speed_len) + 8;
      llm::Session sess(model, {.n_ctx = need, .max_block = 256});
      // continuation perplexity
      double nll = 0;
      int64_t scored = 0, agree = 0, compared = 0;
      double bytes_tok = 0;
      const bool is_full = spec == "full";
      if (is_full) ref_top1.assign(chunks, {});
      const int stride = std::max(1, (static_cast<int>(toks.size()) - ctx - cont) / std::max(1, chunks - 1));
      for (int k = 0; k < chunks; ++k) {
        const int b = std::min(k * stride, static_cast<int>(toks.size()) - ctx - cont);
        if (b < 0) llm::fail(text_path, ": too short for --ctx + --cont");
        sess.reset();
        std::vector<int> context(toks.begin() + b, toks.begin() + b + ctx);
        std::vector<int> next(toks.begin() + b + ctx, toks.begin() + b + ctx + cont);
        sess.feed(context);
        if (k == 0) bytes_tok = llm::kv_bytes_16bit(model.kv_description(), double(sess.kv_cache_bytes())) / ctx;
        std::vector<int> top;
        nll -= llm::log_prob_at(sess.logits(), V, next[0]);
        top.push_back(argmax(sess.logits(), V));
        const std::vector<float>& lg = sess.feed_all_logits(next);
        for (int i = 0; i + 1 < cont; ++i) {
          nll -= llm::log_prob_at(lg.data() + size_t(i) * V, V, next[i + 1]);
          top.push_back(argmax(lg.data() + size_t(i) * V, V));
        }
        scored += cont;
        if (is_full) ref_top1[k] = top;
        else if (!ref_top1.empty())
          for (int i = 0; i < cont; ++i) agree += top[i] == ref_top1[k][i], ++compared;
      }
      if (is_full) bytes_tok = 2.0 * c.n_layers * c.n_kv_heads * c.head_dim * 2;  // the 16-bit full cache
      const double full_bytes = 2.0 * c.n_layers * c.n_kv_heads * c.head_dim * 2;
      // passkey
      int hits = 0;
      for (int t = 0; t < pk_n; ++t) {
        const int key = 10000 + (t * 7919 + 1237) % 90000;
        const double depth = pk_n == 1 ? 0.5 : 0.05 + 0.9 * t / (pk_n - 1);
        sess.reset();
        sess.feed(model.tokenize(passkey_prompt(key, depth, pk_len, model), true));
        llm::GenerateOptions g;
        g.max_tokens = 8;
        const auto r = sess.generate(g);
        hits += r.text.find(std::to_string(key)) != std::string::npos;
      }
      // prefill speed
      double best = 1e30, best_cpu = 1e30;
      std::vector<int> sp(toks.begin(), toks.begin() + std::min<size_t>(speed_len, toks.size()));
      for (int rep = 0; rep < 2; ++rep) {
        sess.reset();
        const double t0 = now(), c0 = cpu_now();
        sess.feed(sp);
        best = std::min(best, now() - t0);
        best_cpu = std::min(best_cpu, cpu_now() - c0);
      }
      if (is_full) full_prefill_s = best, full_prefill_cpu = best_cpu;
      char agree_s[32] = "-", speed_s[32] = "-";
      if (compared) std::snprintf(agree_s, sizeof agree_s, "%.1f%%", 100.0 * agree / compared);
      if (full_prefill_s > 0)
        std::snprintf(speed_s, sizeof speed_s, "%.2fx / %.2fx", full_prefill_s / best, full_prefill_cpu / best_cpu);
      std::printf("| `%s` | %.0f | %.2fx | %.3f | %s | %d/%d | %.2f / %.2f | %s |\n", spec.c_str(), bytes_tok,
                  full_bytes / bytes_tok, std::exp(nll / scored), agree_s, hits, pk_n, best, best_cpu, speed_s);
      std::fflush(stdout);
    }
  } catch (const llm::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
