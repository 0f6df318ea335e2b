// The causal softmax of the full-cache CPU attentions (attention_cpu, attention_quant_cpu, attention_importance_cpu):
// one copy of the arithmetic order they must share for bit-identical results. Internal to kernels/*_cpu.cpp.
#pragma once
#include <cmath>

namespace llm {

// att[j] = score(j) for j in [0, n), tracking the max; then att[j] = exp(att[j] - max) in key order. Returns 1 / the
// sum of those (the normalisation the caller applies to each p_j = att[j] * inv).
template <class Score>
inline float attention_softmax_cpu(float* att, int n, Score score) {
  float mx = -INFINITY;
  for (int j = 0; j < n; ++j) {
    const float s = score(j);
    att[j] = s;
    mx = s > mx ? s : mx;
  }
  float sum = 0.0f;
  for (int j = 0; j < n; ++j) {
    att[j] = std::exp(att[j] - mx);
    sum += att[j];
  }
  return 1.0f / sum;
}

}  // namespace llm
