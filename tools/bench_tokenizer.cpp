// bench_tokenizer: single-thread encoding throughput (MB/s) of a tokenizer on a large text file.
//   bench_tokenizer --file TEXT [--model PATH] [--iters N] [--json]
// PATH defaults to the Llama-3 tokenizer.json in tests/data. The first pass runs with an empty word cache
// (cold); the best of the following passes is reported as warm. Compare with tools/bench_tokenizer_hf.py
// (HF tokenizers, tiktoken) on the same file. A corpus of real text any Debian machine has:
//   cat /usr/lib/python3.11/*.py /usr/share/common-licenses/* > /tmp/corpus.txt
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "loader/error.h"
#include "tokenizer/tokenizer.h"

// CPU time of this thread: on a shared, oversubscribed machine wall time mostly measures the neighbours.
static double thread_cpu_s() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char** argv) {
  std::string model = std::string(LLM_SOURCE_DIR) + "/tests/data/tokenizers/llama3/tokenizer.json", file;
  int iters = 3;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--model" && i + 1 < argc) model = argv[++i];
    else if (a == "--file" && i + 1 < argc) file = argv[++i];
    else if (a == "--iters" && i + 1 < argc) iters = std::atoi(argv[++i]);
    else if (a == "--json") json = true;
    else {
      std::fprintf(stderr, "usage: bench_tokenizer --file TEXT [--model PATH] [--iters N] [--json]\n");
      return 2;
    }
  }
  if (file.empty()) {
    std::fprintf(stderr, "bench_tokenizer: --file TEXT is required (e.g. cat /usr/lib/python3.11/*.py > /tmp/corpus.txt)\n");
    return 2;
  }
  try {
    std::ifstream f(file, std::ios::binary);
    if (!f) llm::fail("bench_tokenizer: cannot open ", file);
    std::stringstream ss;
    ss << f.rdbuf();
    std::string text = ss.str();
    using clock = std::chrono::steady_clock;
    auto t0 = clock::now();
    llm::Tokenizer tok = llm::tokenizer_load(model);
    double load_s = std::chrono::duration<double>(clock::now() - t0).count();
    double mb = text.size() / 1e6, cold_s = 0, best_s = 1e30, best_cpu_s = 1e30;
    size_t n_tokens = 0;
    for (int it = 0; it < iters + 1; ++it) {
      auto a = clock::now();
      double c0 = thread_cpu_s();
      std::vector<int32_t> ids = tok.encode(text, false, true);
      double s = std::chrono::duration<double>(clock::now() - a).count();
      if (it > 0 || iters == 0) best_cpu_s = std::min(best_cpu_s, thread_cpu_s() - c0);
      n_tokens = ids.size();
      if (it == 0) cold_s = s;
      else best_s = std::min(best_s, s);
    }
    if (iters == 0) best_s = cold_s;
    if (json) {
      std::printf("{\"model\": \"%s\", \"file\": \"%s\", \"bytes\": %zu, \"tokens\": %zu, \"load_s\": %.3f, "
                  "\"cold_mb_s\": %.2f, \"warm_mb_s\": %.2f, \"warm_cpu_mb_s\": %.2f}\n",
                  model.c_str(), file.c_str(), text.size(), n_tokens, load_s, mb / cold_s, mb / best_s,
                  mb / best_cpu_s);
    } else {
      std::printf("model %s\nfile %s: %.2f MB, %zu tokens\nload %.3f s\nencode cold %.2f MB/s, warm %.2f MB/s "
                  "(single thread), warm by thread CPU time %.2f MB/s\n",
                  model.c_str(), file.c_str(), mb, n_tokens, load_s, mb / cold_s, mb / best_s, mb / best_cpu_s);
    }
  } catch (const llm::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
