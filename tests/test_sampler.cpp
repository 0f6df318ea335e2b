// Sampler: greedy, temperature, top-k, top-p, min-p, repetition penalty, seeds; statistics on a known
// distribution (bounds of 5 standard deviations, so a correct sampler fails with probability < 1e-6).
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "engine/sampler.h"
#include "loader/error.h"

using namespace llm;

namespace {
std::vector<int> counts(SamplerParams p, const std::vector<float>& logits, int draws,
                        const std::vector<int>& hist = {}) {
  Sampler s(p);
  std::vector<int> c(logits.size(), 0);
  for (int i = 0; i < draws; ++i) {
    std::vector<float> l = logits;
    ++c[sampler_sample(s, l.data(), static_cast<int>(l.size()), hist)];
  }
  return c;
}
// logits whose softmax is (0.5, 0.25, 0.15, 0.1)
const std::vector<float> kLogits = {std::log(0.5f), std::log(0.25f), std::log(0.15f), std::log(0.1f)};
}  // namespace

TEST_CASE("greedy picks the argmax, whatever the seed") {
  SamplerParams p;
  for (uint64_t seed : {0u, 1u, 99u}) {
    p.seed = seed;
    auto c = counts(p, {0.1f, 3.0f, 2.9f}, 10);
    CHECK(c[1] == 10);
  }
}

TEST_CASE("temperature 1 samples the softmax; the same seed repeats, another differs") {
  SamplerParams p;
  p.temperature = 1.0f;
  p.seed = 42;
  const int N = 20000;
  auto c = counts(p, kLogits, N);
  const double probs[4] = {0.5, 0.25, 0.15, 0.1};
  for (int i = 0; i < 4; ++i) {
    double sd = std::sqrt(N * probs[i] * (1 - probs[i]));
    CHECK(std::fabs(c[i] - N * probs[i]) < 5 * sd);
  }
  CHECK(counts(p, kLogits, 200) == counts(p, kLogits, 200));
  SamplerParams q = p;
  q.seed = 43;
  CHECK(counts(p, kLogits, 200) != counts(q, kLogits, 200));
}

TEST_CASE("top-k, top-p and min-p cut the tail") {
  SamplerParams p;
  p.temperature = 1.0f;
  p.top_k = 2;
  auto c = counts(p, kLogits, 3000);
  CHECK(c[2] == 0);
  CHECK(c[3] == 0);
  CHECK(c[0] > c[1]);
  p.top_k = 0;
  p.top_p = 0.7f;  // 0.5 + 0.25 reaches 0.7: keep two
  c = counts(p, kLogits, 3000);
  CHECK(c[2] == 0);
  CHECK(c[3] == 0);
  CHECK(c[1] > 0);
  p.top_p = 1.0f;
  p.min_p = 0.35f;  // cut = 0.175: keeps 0.5 and 0.25
  c = counts(p, kLogits, 3000);
  CHECK(c[2] == 0);
  CHECK(c[3] == 0);
  CHECK(c[1] > 0);
  p.min_p = 0.0f;
  p.temperature = 0.05f;  // sharpened: the top token almost always
  c = counts(p, kLogits, 1000);
  CHECK(c[0] > 990);
}

TEST_CASE("repetition penalty divides positive logits and multiplies negative ones, once per token") {
  SamplerParams p;
  p.repeat_penalty = 2.0f;
  Sampler s(p);
  std::vector<float> l = {4.0f, 3.0f, -1.0f};
  // token 0 seen twice, token 2 once: 4 -> 2, -1 -> -2; greedy then picks token 1 (3.0)
  CHECK(sampler_sample(s, l.data(), 3, {0, 2, 0}) == 1);
  CHECK(l[0] == 2.0f);
  CHECK(l[2] == -2.0f);
  // only the last n tokens count
  s.params.repeat_last_n = 1;
  std::vector<float> l2 = {4.0f, 3.0f, -1.0f};
  CHECK(sampler_sample(s, l2.data(), 3, {0, 2}) == 0);
}

TEST_CASE("bad sampler parameters are refused with the parameter's name") {
  SamplerParams p;
  p.temperature = -1;
  CHECK_THROWS_WITH_AS(sampler_check(p), doctest::Contains("temperature"), llm::Error);
  p = {};
  p.top_p = 0;
  CHECK_THROWS_WITH_AS(sampler_check(p), doctest::Contains("top-p"), llm::Error);
  p = {};
  p.top_k = -3;
  CHECK_THROWS_WITH_AS(sampler_check(p), doctest::Contains("top-k"), llm::Error);
  p = {};
  p.min_p = 1.5f;
  CHECK_THROWS_WITH_AS(sampler_check(p), doctest::Contains("min-p"), llm::Error);
  p = {};
  p.repeat_penalty = 0;
  CHECK_THROWS_WITH_AS(sampler_check(p), doctest::Contains("penalty"), llm::Error);
}
