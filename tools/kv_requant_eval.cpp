// kv_requant_eval: the sliding 16-bit recent window of the mixed-precision cache (issue 7) over a generation:
// docs/prefill-compression.md "Re-quantising decoded tokens".
//
//   build/kv_requant_eval MODEL TEXT [--ctx C] [--gen G] [--threads T] SPEC ...
//
// For each SPEC (a --kv spec; "full" is the reference): prefill the first C tokens of TEXT, then feed the next G
// tokens of the text ONE AT A TIME (as decoding does, so each step's cache is what the next step reads), scoring
// each prediction. Prints KV bytes/token (16-bit class at 2 bytes a value) after the prefill and after the G
// steps, and the perplexity of the G tokens. A measurement, not part of the test suite.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "engine/llm.h"
#include "eval/search.h"
#include "loader/error.h"

namespace {

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc < 4) llm::fail("usage: kv_requant_eval MODEL TEXT [--ctx C] [--gen G] [--threads T] SPEC ...");
    const std::string model_path = argv[1], text_path = argv[2];
    int ctx = 512, gen = 256, threads = 0;
    std::vector<std::string> specs;
    for (int i = 3; i < argc; ++i) {
      const std::string a = argv[i];
      if ((a == "--ctx" || a == "--gen" || a == "--threads") && i + 1 < argc) {
        const int v = std::atoi(argv[++i]);
        (a == "--ctx" ? ctx : a == "--gen" ? gen : threads) = v;
      } else {
        specs.push_back(a);
      }
    }
    std::ifstream f(text_path);
    if (!f) llm::fail(text_path, ": cannot open the text file; pass a readable text");
    std::stringstream ss;
    ss << f.rdbuf();
    std::printf("| spec | KV bytes/token after %d prompt tokens | after %d generated | PPL of the %d |\n", ctx, gen,
                gen);
    std::printf("|---|---|---|---|\n");
    for (const std::string& spec : specs) {
      llm::LoadOptions lo;
      lo.kv = spec;
      lo.n_threads = threads;
      llm::Model model(model_path, lo);
      const int V = model.config().vocab_size;
      const std::vector<int> toks = model.tokenize(ss.str(), true);
      if (int(toks.size()) < ctx + gen) llm::fail(text_path, ": too short for --ctx + --gen");
      llm::Session sess(model, {.n_ctx = ctx + gen + 8, .max_block = 256});
      sess.feed(std::vector<int>(toks.begin(), toks.begin() + ctx));
      const double b0 = llm::kv_bytes_16bit(model.kv_description(), double(sess.kv_cache_bytes())) / ctx;
      double nll = 0;
      for (int i = 0; i < gen; ++i) {
        nll -= llm::log_prob_at(sess.logits(), V, toks[ctx + i]);
        sess.feed({toks[ctx + i]});
      }
      const double b1 = llm::kv_bytes_16bit(model.kv_description(), double(sess.kv_cache_bytes())) / (ctx + gen);
      std::printf("| `%s` | %.0f | %.0f | %.3f |\n", spec.c_str(), b0, b1, std::exp(nll / gen));
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kv_requant_eval: %s\n", e.what());
    return 1;
  }
  return 0;
}
