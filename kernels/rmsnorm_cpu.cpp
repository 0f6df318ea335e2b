// RMSNorm: one row per token; double accumulation of the sum of squares would be overkill for dim <= 8192,
// fp32 with a running sum matches transformers' fp32 reference to ~1e-6 relative.
#include <cmath>

#include "kernels/ops_cpu.h"
#include "kernels/threadpool_cpu.h"

namespace llm {

void rmsnorm_cpu(float* out, const float* x, const float* w, int n, int dim, float eps, ThreadPool* pool) {
  parallel_for(n > 4 ? pool : nullptr, n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float* xi = x + i * dim;
      float* oi = out + i * dim;
      float ss = 0.0f;
      for (int j = 0; j < dim; ++j) ss += xi[j] * xi[j];
      float scale = 1.0f / std::sqrt(ss / static_cast<float>(dim) + eps);
      for (int j = 0; j < dim; ++j) oi[j] = xi[j] * scale * w[j];
    }
  });
}

}  // namespace llm
