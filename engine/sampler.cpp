#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "kernels/ops_cpu.h"
#include "loader/error.h"

namespace llm {

void sampler_check(const SamplerParams& p) {
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature))
    fail("temperature must be >= 0 (0 = greedy), got ", p.temperature);
  if (p.top_k < 0) fail("top-k must be >= 0 (0 = off), got ", p.top_k);
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) fail("top-p must be in (0, 1], got ", p.top_p);
  if (!(p.min_p >= 0.0f && p.min_p < 1.0f)) fail("min-p must be in [0, 1), got ", p.min_p);
  if (!(p.repeat_penalty > 0.0f)) fail("repeat penalty must be > 0 (1 = off), got ", p.repeat_penalty);
}

int sampler_sample(Sampler& s, float* logits, int n_vocab, const std::vector<int>& history) {
  const SamplerParams& p = s.params;
  if (p.repeat_penalty != 1.0f && p.repeat_last_n != 0 && !history.empty()) {
    size_t from = p.repeat_last_n < 0 ? 0
                  : history.size() > static_cast<size_t>(p.repeat_last_n) ? history.size() - p.repeat_last_n
                                                                          : 0;
    std::unordered_set<int> seen;  // each token penalised once, however often it occurred
    for (size_t i = from; i < history.size(); ++i) {
      int t = history[i];
      if (t < 0 || t >= n_vocab || !seen.insert(t).second) continue;
      logits[t] = logits[t] > 0.0f ? logits[t] / p.repeat_penalty : logits[t] * p.repeat_penalty;
    }
  }
  if (p.temperature <= 0.0f) return argmax_cpu(logits, n_vocab);

  auto& c = s.cand;
  c.resize(n_vocab);
  for (int i = 0; i < n_vocab; ++i) c[i] = {logits[i] / p.temperature, i};
  size_t n = c.size();
  auto by_value = [](const std::pair<float, int>& a, const std::pair<float, int>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < n) {
    std::partial_sort(c.begin(), c.begin() + p.top_k, c.end(), by_value);
    n = p.top_k;
  } else {
    std::sort(c.begin(), c.end(), by_value);
  }
  // softmax over the n candidates (sorted, so c[0] is the max)
  const float mx = c[0].first;
  double sum = 0.0;
  for (size_t i = 0; i < n; ++i) {
    c[i].first = std::exp(c[i].first - mx);
    sum += c[i].first;
  }
  for (size_t i = 0; i < n; ++i) c[i].first = static_cast<float>(c[i].first / sum);
  if (p.top_p < 1.0f) {
    double cum = 0.0;
    size_t keep = n;
    for (size_t i = 0; i < n; ++i) {
      cum += c[i].first;
      if (cum >= p.top_p) {
        keep = i + 1;
        break;
      }
    }
    n = keep;
  }
  if (p.min_p > 0.0f) {
    const float cut = p.min_p * c[0].first;
    size_t keep = 1;
    while (keep < n && c[keep].first >= cut) ++keep;
    n = keep;
  }
  std::vector<float> probs(n);
  for (size_t i = 0; i < n; ++i) probs[i] = c[i].first;
  const float u = std::uniform_real_distribution<float>(0.0f, 1.0f)(s.rng);
  return c[sample_probs_cpu(probs.data(), static_cast<int>(n), u)].second;
}

}  // namespace llm
