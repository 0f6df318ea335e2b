// RoPE in both pairings (see RopeLayout in loader/config.h) with Llama-3.1 "llama3" frequency scaling.
// Angles are computed in double from the fp32 inverse frequency: at position 100k an fp32 product pos*freq
// loses ~1e-2 rad, double keeps the rotation exact to fp32 rounding, which is what transformers does in
// effect (it computes the angle table in fp32 from an fp32 inv_freq, and we match its inv_freq exactly).
#include <cmath>

#include "kernels/ops_cpu.h"
#include "kernels/threadpool_cpu.h"

namespace llm {

void rope_inv_freq_cpu(float* inv_freq, int head_dim, float theta, const RopeScaling& s) {
  const int half = head_dim / 2;
  for (int j = 0; j < half; ++j) {
    // transformers: 1 / theta^(arange(0, d, 2) / d), in fp32.
    float f = 1.0f / std::pow(theta, static_cast<float>(2 * j) / static_cast<float>(head_dim));
    if (s.type == RopeScaling::Type::llama3) {
      const float low_wavelen = static_cast<float>(s.original_max_position) / s.low_freq_factor;
      const float high_wavelen = static_cast<float>(s.original_max_position) / s.high_freq_factor;
      const float wavelen = 2.0f * static_cast<float>(M_PI) / f;
      if (wavelen > low_wavelen) {
        f = f / s.factor;
      } else if (wavelen >= high_wavelen) {
        // medium band: smooth interpolation between scaled and unscaled
        float smooth = (static_cast<float>(s.original_max_position) / wavelen - s.low_freq_factor) /
                       (s.high_freq_factor - s.low_freq_factor);
        f = (1.0f - smooth) * f / s.factor + smooth * f;
      }
    }
    inv_freq[j] = f;
  }
}

namespace {
// (a, b) -> (a cos - b sin, a sin + b cos) for every pair of one head_dim row
inline void rotate_row(float* v, int half, const float* cs, const float* sn, RopeLayout layout) {
  if (layout == RopeLayout::interleaved) {
    for (int j = 0; j < half; ++j) {
      float a = v[2 * j], bb = v[2 * j + 1];
      v[2 * j] = a * cs[j] - bb * sn[j];
      v[2 * j + 1] = a * sn[j] + bb * cs[j];
    }
  } else {
    for (int j = 0; j < half; ++j) {
      float a = v[j], bb = v[j + half];
      v[j] = a * cs[j] - bb * sn[j];
      v[j + half] = a * sn[j] + bb * cs[j];
    }
  }
}
// transformers computes (pos * inv_freq) in fp32, then cos/sin: do exactly that
inline void angles(float* cs, float* sn, int p, int half, const float* inv_freq) {
  for (int j = 0; j < half; ++j) {
    float ang = static_cast<float>(p) * inv_freq[j];
    cs[j] = std::cos(ang);
    sn[j] = std::sin(ang);
  }
}
}  // namespace

void rope_cpu(float* x, const int* pos, int n, int n_heads, int head_dim, int64_t row_stride, const float* inv_freq,
              RopeLayout layout, ThreadPool* pool) {
  const int half = head_dim / 2;
  parallel_for(n > 4 ? pool : nullptr, n, [&](int64_t b, int64_t e) {
    float cs[512], sn[512];  // head_dim <= 1024
    for (int64_t i = b; i < e; ++i) {
      angles(cs, sn, pos[i], half, inv_freq);
      float* xi = x + i * row_stride;
      for (int h = 0; h < n_heads; ++h) rotate_row(xi + static_cast<int64_t>(h) * head_dim, half, cs, sn, layout);
    }
  });
}

void rope_table_cpu(float* cs, int p0, int p1, int head_dim, const float* inv_freq) {
  const int half = head_dim / 2;
  for (int p = p0; p < p1; ++p) angles(cs + size_t(p) * head_dim, cs + size_t(p) * head_dim + half, p, half, inv_freq);
}

void rope_table_apply_cpu(float* x, const int* pos, int n, int head_dim, int64_t row_stride, const float* cs,
                          RopeLayout layout) {
  const int half = head_dim / 2;
  for (int i = 0; i < n; ++i) {
    const float* row = cs + size_t(pos[i]) * head_dim;
    rotate_row(x + i * row_stride, half, row, row + half, layout);
  }
}

}  // namespace llm
