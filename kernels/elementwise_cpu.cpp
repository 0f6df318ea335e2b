// Element-wise ops: SwiGLU, residual add, softmax, argmax, sampling from probabilities.
#include <cmath>

#include "kernels/ops_cpu.h"
#include "kernels/threadpool_cpu.h"

namespace llm {

void swiglu_cpu(float* out, const float* gate, const float* up, int64_t n, ThreadPool* pool) {
  parallel_for(n > 8192 ? pool : nullptr, n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      float g = gate[i];
      out[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  });
}

void add_cpu(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

void softmax_cpu(float* x, int n) {
  if (n <= 0) return;
  float mx = x[0];
  for (int i = 1; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  float inv = 1.0f / sum;
  for (int i = 0; i < n; ++i) x[i] *= inv;
}

int argmax_cpu(const float* x, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

int sample_probs_cpu(const float* p, int n, float u) {
  double sum = 0.0;
  for (int i = 0; i < n; ++i) sum += p[i];
  double target = static_cast<double>(u) * sum, c = 0.0;
  int last = 0;
  for (int i = 0; i < n; ++i) {
    if (p[i] <= 0.0f) continue;
    c += p[i];
    last = i;
    if (c > target) return i;
  }
  return last;  // rounding: u*sum reached the end
}

}  // namespace llm
