// Sampler: picks the next token from a row of logits. Greedy when temperature <= 0; otherwise, in this order
// (the order transformers applies its logits warpers in): repetition penalty -> temperature -> top-k -> top-p
// -> min-p -> draw with the seeded generator. Stop conditions (EOS/EOT ids, stop strings) live in the session.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace llm {

struct SamplerParams {
  float temperature = 0.0f;     // <= 0: greedy (argmax)
  int top_k = 0;                // 0: off
  float top_p = 1.0f;           // 1: off; keep the smallest set whose probability reaches top_p
  float min_p = 0.0f;           // 0: off; drop tokens with p < min_p * p_max
  float repeat_penalty = 1.0f;  // 1: off; logit > 0 -> logit / penalty, else logit * penalty (CTRL, as HF)
  int repeat_last_n = 64;       // how many recent tokens the penalty looks at (0: none, -1: all)
  uint64_t seed = 0;
};

struct Sampler {
  SamplerParams params;
  std::mt19937_64 rng;
  std::vector<std::pair<float, int>> cand;  // scratch: (logit or probability, id)
  explicit Sampler(const SamplerParams& p = {}) : params(p), rng(p.seed) {}
};

// Validates the parameters; throws llm::Error naming the bad one.
void sampler_check(const SamplerParams& p);
// logits (n_vocab) are modified (penalty, temperature). history: the tokens so far (prompt + generated).
int sampler_sample(Sampler& s, float* logits, int n_vocab, const std::vector<int>& history);

}  // namespace llm
