// The public API (engine/llm.h) on the demo model: sessions, streaming, stop conditions, logits consistency,
// two engines in one process, and the errors a user meets.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include "engine/forward_cuda.h"
#include "engine/llm.h"
#include "tests/test_util.h"

namespace {
std::vector<int> greedy(llm::Model& m, const std::string& prompt, int n) {
  llm::Session s(m, {.n_ctx = 256});
  s.feed(m.tokenize(prompt, true));
  llm::GenerateOptions g;
  g.max_tokens = n;
  g.stop_at_eos = false;
  return s.generate(g).tokens;
}
}  // namespace

TEST_CASE("api: streaming pieces concatenate to the result; stop strings cut; callbacks stop") {
  if (!llm_test::have_demo_model()) return;
  llm::Model m(llm_test::demo_model_path(), {.n_threads = 2});
  llm::Session s(m, {.n_ctx = 128});
  s.feed_text("The capital of France is", true);
  CHECK(s.n_past() > 0);
  llm::GenerateOptions g;
  g.max_tokens = 12;
  g.stop_at_eos = false;
  std::string streamed;
  auto r = s.generate(g, [&](const std::string& piece, int) {
    streamed += piece;
    return true;
  });
  CHECK(r.tokens.size() == 12);
  CHECK(streamed == r.text);
  CHECK(r.text == m.detokenize(r.tokens));
  CHECK(r.text.find("Paris") != std::string::npos);  // SmolLM2-135M-Instruct knows this one

  // the same prompt with a stop string that appears in the greedy text: cut before it, never streamed
  llm::Session s2(m, {.n_ctx = 128});
  s2.feed_text("The capital of France is", true);
  g.stop = {"Paris"};
  std::string streamed2;
  auto r2 = s2.generate(g, [&](const std::string& piece, int) {
    streamed2 += piece;
    return true;
  });
  CHECK(r2.stop == llm::StopReason::stop_string);
  CHECK(r2.text == r.text.substr(0, r.text.find("Paris")));
  CHECK(streamed2 == r2.text);

  llm::Session s3(m, {.n_ctx = 128});
  s3.feed_text("The capital of France is", true);
  g.stop.clear();
  int calls = 0;
  auto r3 = s3.generate(g, [&](const std::string&, int) { return ++calls < 3; });
  CHECK(r3.stop == llm::StopReason::callback);
  CHECK(calls == 3);
}

TEST_CASE("api: all-position logits equal incremental logits; generation continues across calls") {
  if (!llm_test::have_demo_model()) return;
  llm::Model m(llm_test::demo_model_path(), {.n_threads = 2});
  auto toks = m.tokenize("One, two, three, four,", true);
  llm::Session a(m, {.n_ctx = 64}), b(m, {.n_ctx = 64});
  const auto& all = a.feed_all_logits(toks);
  const int V = a.vocab_size();
  std::vector<float> last(all.end() - V, all.end());
  CHECK(std::equal(last.begin(), last.end(), a.logits()));
  double maxd = 0;
  for (size_t i = 0; i < toks.size(); ++i) {
    b.feed({toks[i]});
    for (int j = 0; j < V; ++j) maxd = std::max(maxd, double(std::fabs(b.logits()[j] - all[i * V + j])));
  }
  CHECK(maxd < 1e-3);  // same maths, different summation blocking (prefill tile vs fused GEMV)

  // 8 tokens in one call == 4 + 4 in two calls
  llm::GenerateOptions g;
  g.max_tokens = 8;
  g.stop_at_eos = false;
  auto one = a.generate(g).tokens;
  g.max_tokens = 4;
  auto p1 = b.generate(g).tokens, p2 = b.generate(g).tokens;
  p1.insert(p1.end(), p2.begin(), p2.end());
  CHECK(one == p1);
}

TEST_CASE("api: two engines in one process, used from two threads at once, agree") {
  if (!llm_test::have_demo_model()) return;
  llm::Model m1(llm_test::demo_model_path(), {.n_threads = 2});
  llm::Model m2(llm_test::demo_model_path(), {.n_threads = 1});
  const auto ref = greedy(m1, "Once upon a time", 10);
  std::vector<int> r1, r2;
  std::thread t1([&] { r1 = greedy(m1, "Once upon a time", 10); });
  std::thread t2([&] { r2 = greedy(m2, "Once upon a time", 10); });
  t1.join();
  t2.join();
  CHECK(r1 == ref);
  CHECK(r2 == ref);
}

TEST_CASE("api: --device defaults to cuda only with a CUDA build and a GPU (issue 5)") {
  std::string why;
  const llm::Device d = llm::device_default(&why);
  CHECK(!why.empty());
  if (llm::cuda_device_count() == 0) {  // this machine (and every build without CUDA): cpu
    CHECK(d == llm::Device::cpu);
    CHECK(why.find("no CUDA") != std::string::npos);
  } else {
    CHECK(d == llm::Device::cuda);
  }
}

TEST_CASE("api: errors say what is wrong") {
  CHECK_THROWS_WITH_AS(llm::Model("/nonexistent/model.gguf"), doctest::Contains("model.gguf"), llm::Error);
  if (llm::cuda_device_count() == 0)  // with a GPU, cuda is available and the missing file is the error
    CHECK_THROWS_WITH_AS(llm::Model("x.gguf", {.device = llm::Device::cuda}), doctest::Contains("cuda"), llm::Error);
  CHECK_THROWS_AS(llm::device_from_name("tpu"), llm::Error);
  // a file that is not a model
  const std::string junk = std::string(LLM_BINARY_DIR) + "/not_a_model.gguf";
  std::ofstream(junk) << "this is not a GGUF file at all, just text";
  CHECK_THROWS_AS(llm::Model{junk}, llm::Error);
  if (!llm_test::have_demo_model()) return;
  llm::Model m(llm_test::demo_model_path(), {.n_threads = 1});
  llm::Session s(m, {.n_ctx = 8});
  CHECK_THROWS_WITH_AS(s.feed(std::vector<int>(9, 1)), doctest::Contains("context"), llm::Error);
  CHECK(s.n_past() == 0);
  CHECK_THROWS_AS(s.feed({}), llm::Error);
  llm::GenerateOptions g;
  CHECK_THROWS_WITH_AS(s.generate(g), doctest::Contains("feed a prompt"), llm::Error);
  s.feed({1, 2});
  g.max_tokens = 0;
  CHECK_THROWS_AS(s.generate(g), llm::Error);
  g.max_tokens = 20;
  g.stop_at_eos = false;
  auto r = s.generate(g);  // 6 free slots: stops when the context is full
  CHECK(r.stop == llm::StopReason::context_full);
  CHECK(s.n_past() == 8);
  CHECK_THROWS_AS(llm::Session(m, {.n_ctx = 1 << 20}), llm::Error);  // beyond the model's maximum
}

namespace {
// -log softmax(row)[target] in double, written out here (not llm::log_prob_at) as the reference; log_prob_at
// shifts by the max in float, so the two agree to ~1e-8 relative (one token scored or not moves the mean by ~3%).
double nll_at(const float* row, int V, int target) {
  double mx = row[0];
  for (int j = 1; j < V; ++j) mx = std::max(mx, double(row[j]));
  double s = 0;
  for (int j = 0; j < V; ++j) s += std::exp(double(row[j]) - mx);
  return -(double(row[target]) - mx - std::log(s));
}
// The summed NLL of the tokens at positions [first, e) of t, each predicted by a fresh session fed t[b, e) alone.
double window_nll(llm::Model& m, const std::vector<int>& t, size_t b, size_t e, size_t first = 0) {
  llm::Session s(m, {.n_ctx = 64});
  const std::vector<int> w(t.begin() + long(b), t.begin() + long(e));
  const auto& lg = s.feed_all_logits(w);
  const int V = s.vocab_size();
  double sum = 0;
  for (size_t p = std::max(first, b + 1); p < e; ++p) sum += nll_at(lg.data() + (p - b - 1) * size_t(V), V, t[p]);
  return sum;
}
}  // namespace

TEST_CASE("api: perplexity(): windows, scored tokens and NLL on a short text; bad arguments") {
  // The small twin of the golden perplexity case (test_engine_golden, against transformers): also what runs under
  // ASan. 40 tokens; one window, disjoint windows and overlapping ones.
  if (!llm_test::have_demo_model()) return;
  llm::Model m(llm_test::demo_model_path(), {.n_threads = 2});
  auto t = m.tokenize("The quick brown fox jumps over the lazy dog. A stitch in time saves nine; many hands make "
                      "light work, and the early bird catches the worm while the cat is away. All that glitters "
                      "is not gold, and a rolling stone gathers no moss.",
                      true);
  REQUIRE(t.size() >= 40);
  t.resize(40);
  const double whole = window_nll(m, t, 0, 40);

  auto one = llm::perplexity(m, t, 64, 64);  // the context holds the text: every token but the first, once
  CHECK(one.windows == 1);
  CHECK(one.tokens == 39);
  CHECK(one.nll == doctest::Approx(whole / 39).epsilon(1e-6));
  CHECK(one.ppl == doctest::Approx(std::exp(one.nll)).epsilon(1e-12));

  // stride == context: disjoint windows [0,16) [16,32) [32,40), each scored without the text before it
  auto disjoint = llm::perplexity(m, t, 16, 16);
  CHECK(disjoint.windows == 3);
  CHECK(disjoint.tokens == 15 + 15 + 7);
  const double want = (window_nll(m, t, 0, 16) + window_nll(m, t, 16, 32) + window_nll(m, t, 32, 40)) / 37;
  CHECK(disjoint.nll == doctest::Approx(want).epsilon(1e-6));

  // stride 8 < context 16: windows begin at 0, 8, 16, 24 and each scores only the tokens past the previous end
  auto overlap = llm::perplexity(m, t, 16, 8);
  CHECK(overlap.windows == 4);
  CHECK(overlap.tokens == 39);
  const double scored = window_nll(m, t, 0, 16) + window_nll(m, t, 8, 24, 16) + window_nll(m, t, 16, 32, 24) +
                        window_nll(m, t, 24, 40, 32);
  CHECK(overlap.nll == doctest::Approx(scored / 39).epsilon(1e-6));

  CHECK_THROWS_WITH_AS(llm::perplexity(m, t, 1, 1), doctest::Contains("at least 2"), llm::Error);
  CHECK_THROWS_WITH_AS(llm::perplexity(m, t, 16, 17), doctest::Contains("stride"), llm::Error);
  CHECK_THROWS_WITH_AS(llm::perplexity(m, {5}, 16, 8), doctest::Contains("too short"), llm::Error);
}
