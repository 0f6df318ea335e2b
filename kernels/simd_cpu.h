// Vector helpers of the CPU ops: AVX-512 when the build targets it (-march=native on Zen 4 / Sapphire Rapids),
// AVX2+FMA otherwise, and a portable scalar path. Internal to kernels/*_cpu.cpp.
#pragma once
#include <cstdint>

#if defined(__AVX512F__)
// GCC 12 bug 105593: AVX-512 intrinsics (their "undefined" pass-through operands) raise -Wmaybe-uninitialized
// at every use at -O3. The warning is about GCC's own headers; it is off for the kernel files that include this.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>
#define LLM_SIMD_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define LLM_SIMD_AVX2 1
#endif

namespace llm::simd {

#if defined(LLM_SIMD_AVX512)
// Horizontal sum of 16 floats. (GCC 12's hsum16 trips -Wmaybe-uninitialized inside its own
// header, so we shuffle by hand.)
inline float hsum16(__m512 v) {
  __m512 t = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(1, 0, 3, 2)));
  t = _mm512_add_ps(t, _mm512_shuffle_f32x4(t, t, _MM_SHUFFLE(2, 3, 0, 1)));
  __m128 x = _mm512_castps512_ps128(t);
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}
#endif

#if defined(LLM_SIMD_AVX2)
inline float hsum8(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}
#endif

// sum a[i] * b[i]
inline float dot(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  float s = 0.0f;
#if defined(LLM_SIMD_AVX512)
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  for (; i + 32 <= n; i += 32) {
    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), a0);
    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), a1);
  }
  for (; i + 16 <= n; i += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), a0);
  s = hsum16(_mm512_add_ps(a0, a1));
#elif defined(LLM_SIMD_AVX2)
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), a1);
  }
  s = hsum8(_mm256_add_ps(a0, a1));
#endif
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// y[i] += a * x[i]
inline void axpy(float* y, float a, const float* x, int64_t n) {
  int64_t i = 0;
#if defined(LLM_SIMD_AVX512)
  const __m512 va = _mm512_set1_ps(a);
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
#elif defined(LLM_SIMD_AVX2)
  const __m256 va = _mm256_set1_ps(a);
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
#endif
  for (; i < n; ++i) y[i] += a * x[i];
}

// for r in 0 .. rows-1: axpy(y, a[r], x + r * ldx, n), element for element the same arithmetic (the same fused
// multiply-adds in the same r order, the same scalar tail), but each vector of y stays in a register across the
// rows instead of going through memory on every row (a store-to-load chain that bounded the quantised-cache
// decode's value pass).
inline void axpy_rows(float* y, const float* a, const float* x, int64_t ldx, int rows, int64_t n) {
  int64_t i = 0;
#if defined(LLM_SIMD_AVX512)
  for (; i + 32 <= n; i += 32) {
    __m512 y0 = _mm512_loadu_ps(y + i), y1 = _mm512_loadu_ps(y + i + 16);
    for (int r = 0; r < rows; ++r) {
      const __m512 va = _mm512_set1_ps(a[r]);
      y0 = _mm512_fmadd_ps(va, _mm512_loadu_ps(x + r * ldx + i), y0);
      y1 = _mm512_fmadd_ps(va, _mm512_loadu_ps(x + r * ldx + i + 16), y1);
    }
    _mm512_storeu_ps(y + i, y0);
    _mm512_storeu_ps(y + i + 16, y1);
  }
  for (; i + 16 <= n; i += 16) {
    __m512 y0 = _mm512_loadu_ps(y + i);
    for (int r = 0; r < rows; ++r) y0 = _mm512_fmadd_ps(_mm512_set1_ps(a[r]), _mm512_loadu_ps(x + r * ldx + i), y0);
    _mm512_storeu_ps(y + i, y0);
  }
#elif defined(LLM_SIMD_AVX2)
  for (; i + 32 <= n; i += 32) {
    __m256 y0 = _mm256_loadu_ps(y + i), y1 = _mm256_loadu_ps(y + i + 8), y2 = _mm256_loadu_ps(y + i + 16),
           y3 = _mm256_loadu_ps(y + i + 24);
    for (int r = 0; r < rows; ++r) {
      const __m256 va = _mm256_set1_ps(a[r]);
      const float* xr = x + r * ldx + i;
      y0 = _mm256_fmadd_ps(va, _mm256_loadu_ps(xr), y0);
      y1 = _mm256_fmadd_ps(va, _mm256_loadu_ps(xr + 8), y1);
      y2 = _mm256_fmadd_ps(va, _mm256_loadu_ps(xr + 16), y2);
      y3 = _mm256_fmadd_ps(va, _mm256_loadu_ps(xr + 24), y3);
    }
    _mm256_storeu_ps(y + i, y0);
    _mm256_storeu_ps(y + i + 8, y1);
    _mm256_storeu_ps(y + i + 16, y2);
    _mm256_storeu_ps(y + i + 24, y3);
  }
  for (; i + 8 <= n; i += 8) {
    __m256 y0 = _mm256_loadu_ps(y + i);
    for (int r = 0; r < rows; ++r) y0 = _mm256_fmadd_ps(_mm256_set1_ps(a[r]), _mm256_loadu_ps(x + r * ldx + i), y0);
    _mm256_storeu_ps(y + i, y0);
  }
#endif
  for (; i < n; ++i) {
    float yi = y[i];
    for (int r = 0; r < rows; ++r) yi += a[r] * x[r * ldx + i];
    y[i] = yi;
  }
}

// for t in 0 .. n-1: y[r] += a[t] * x[t][r] for r < len[t] (rows of their own lengths, none longer than n_y):
// each y[r] sums its rows in t order, held in a register across the rows.
inline void axpy_ragged(float* y, const float* a, const float* const* x, const int* len, int n, int64_t n_y) {
  int64_t i = 0;
#if defined(LLM_SIMD_AVX512) || defined(LLM_SIMD_AVX2)
#if defined(LLM_SIMD_AVX512)
  using V = __m512;
  constexpr int kW = 16;
  auto load = [](const float* p) { return _mm512_loadu_ps(p); };
  auto store = [](float* p, V v) { _mm512_storeu_ps(p, v); };
  auto fma = [](float s, const float* p, V acc) { return _mm512_fmadd_ps(_mm512_set1_ps(s), _mm512_loadu_ps(p), acc); };
#else
  using V = __m256;
  constexpr int kW = 8;
  auto load = [](const float* p) { return _mm256_loadu_ps(p); };
  auto store = [](float* p, V v) { _mm256_storeu_ps(p, v); };
  auto fma = [](float s, const float* p, V acc) { return _mm256_fmadd_ps(_mm256_set1_ps(s), _mm256_loadu_ps(p), acc); };
#endif
  // a row that ends inside vector c: its part of c is added lane by lane through memory
  auto partial = [&](V acc, int64_t c, int t) {
    alignas(64) float tmp[kW];
    store(tmp, acc);
    for (int64_t e = c; e < len[t]; ++e) tmp[e - c] += a[t] * x[t][e];
    return load(tmp);
  };
  for (; i + 2 * kW <= n_y; i += 2 * kW) {
    V y0 = load(y + i), y1 = load(y + i + kW);
    for (int t = 0; t < n; ++t) {
      if (len[t] >= i + 2 * kW) {
        y0 = fma(a[t], x[t] + i, y0);
        y1 = fma(a[t], x[t] + i + kW, y1);
      } else if (len[t] > i) {
        y0 = len[t] >= i + kW ? fma(a[t], x[t] + i, y0) : partial(y0, i, t);
        if (len[t] > i + kW) y1 = partial(y1, i + kW, t);
      }
    }
    store(y + i, y0);
    store(y + i + kW, y1);
  }
  for (; i + kW <= n_y; i += kW) {
    V y0 = load(y + i);
    for (int t = 0; t < n; ++t) {
      if (len[t] >= i + kW)
        y0 = fma(a[t], x[t] + i, y0);
      else if (len[t] > i)
        y0 = partial(y0, i, t);
    }
    store(y + i, y0);
  }
#endif
  for (; i < n_y; ++i) {
    float yi = y[i];
    for (int t = 0; t < n; ++t)
      if (len[t] > i) yi += a[t] * x[t][i];
    y[i] = yi;
  }
}

// out[t * ldo + r] = dot(w + r*n, x + t*n) for a block of 4 weight rows x 4 tokens (the prefill micro-kernel:
// 16 accumulators, each loaded value used 4 times).
inline void dot4x4(const float* w, const float* x, int64_t n, float* out, int64_t ldo) {
  int64_t i = 0;
  float acc[4][4] = {};
#if defined(LLM_SIMD_AVX512)
  __m512 c[4][4];
  for (auto& r : c)
    for (auto& v : r) v = _mm512_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    __m512 xv[4];
    for (int t = 0; t < 4; ++t) xv[t] = _mm512_loadu_ps(x + t * n + i);
    for (int r = 0; r < 4; ++r) {
      __m512 wv = _mm512_loadu_ps(w + r * n + i);
      for (int t = 0; t < 4; ++t) c[r][t] = _mm512_fmadd_ps(wv, xv[t], c[r][t]);
    }
  }
  for (int r = 0; r < 4; ++r)
    for (int t = 0; t < 4; ++t) acc[r][t] = hsum16(c[r][t]);
#elif defined(LLM_SIMD_AVX2)
  __m256 c[4][4];
  for (auto& r : c)
    for (auto& v : r) v = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) {
    __m256 xv[4];
    for (int t = 0; t < 4; ++t) xv[t] = _mm256_loadu_ps(x + t * n + i);
    for (int r = 0; r < 4; ++r) {
      __m256 wv = _mm256_loadu_ps(w + r * n + i);
      for (int t = 0; t < 4; ++t) c[r][t] = _mm256_fmadd_ps(wv, xv[t], c[r][t]);
    }
  }
  for (int r = 0; r < 4; ++r)
    for (int t = 0; t < 4; ++t) acc[r][t] = hsum8(c[r][t]);
#endif
  for (; i < n; ++i)
    for (int r = 0; r < 4; ++r)
      for (int t = 0; t < 4; ++t) acc[r][t] += w[r * n + i] * x[t * n + i];
  for (int r = 0; r < 4; ++r)
    for (int t = 0; t < 4; ++t) out[t * ldo + r] = acc[r][t];
}

}  // namespace llm::simd
