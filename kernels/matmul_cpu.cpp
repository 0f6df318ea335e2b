// out = x W^T with W kept in its GGML type (see ops_cpu.h).
//
// Why weights stay quantised (measured numbers in docs/performance.md, "CPU engine"): decode is memory-bound.
// The demo model's Q4_1 weights are ~5 bits per weight; as fp32 they would be 32 bits, i.e. ~6x the bytes
// streamed per token and ~6x the resident memory. So decode (n = 1) dequantises inside the dot product
// (Q4_0/Q4_1/Q8_0/F32/F16 natively, AVX2 when built with it, a portable scalar path otherwise), and prefill
// (n > 1) dequantises a tile of kTileRows weight rows once into a small fp32 buffer and reuses it for every
// token of the prompt, so the dequantisation cost is amortised over n.
// Other GGML types (K-quants, Q5_x, BF16) go through dequantize_row (loader/ggml_quants.cpp) one row at a time.
//
// Block formats (GGML): Q4_0 {f16 d; u8 qs[16]} x = (q-8)*d; Q4_1 {f16 d, m; u8 qs[16]} x = q*d + m;
// Q8_0 {f16 d; i8 qs[32]} x = q*d. In the 4-bit types, element j is the low nibble of qs[j], j+16 the high one.
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/simd_cpu.h"  // first: it sets up <immintrin.h> (and a GCC 12 AVX-512 warning workaround)
#if defined(__AVX2__) && defined(__FMA__)
#define LLM_MATMUL_AVX2 1
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__)
#define LLM_MATMUL_AVX512 1
#endif

#include "kernels/ops_cpu.h"
#include "kernels/simd_cpu.h"
#include "kernels/threadpool_cpu.h"
#include "loader/error.h"
#include "loader/ggml_quants.h"

namespace llm {

namespace {

constexpr int kTileRows = 16;  // prefill: weight rows dequantised at once (16 x 8192 x 4 B = 512 KiB max)

inline float half_to_float(uint16_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ffu, bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while (!(mant & 0x400u)) {
        mant <<= 1;
        --exp;
      }
      bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
#endif
}

inline uint16_t rd16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

bool native_type(GGMLType t) {
  return t == GGMLType::F32 || t == GGMLType::F16 || t == GGMLType::Q4_0 || t == GGMLType::Q4_1 ||
         t == GGMLType::Q8_0;
}

#if LLM_MATMUL_AVX2
inline float hsum8(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}
// 8 unsigned bytes -> 8 floats
[[maybe_unused]] inline __m256 u8x8_to_ps(__m128i b) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)); }
[[maybe_unused]] inline __m256 i8x8_to_ps(__m128i b) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)); }
#endif

// Dot of one row with x for the native types.
float row_dot_native(GGMLType type, const uint8_t* row, const float* x, int64_t cols) {
  switch (type) {
    case GGMLType::F32:
      return simd::dot(reinterpret_cast<const float*>(row), x, cols);
    case GGMLType::F16: {
      float s = 0.0f;
      int64_t i = 0;
#if LLM_MATMUL_AVX2
      __m256 a0 = _mm256_setzero_ps();
      for (; i + 8 <= cols; i += 8) {
        __m256 w = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * i)));
        a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + i), a0);
      }
      s = hsum8(a0);
#endif
      for (; i < cols; ++i) s += half_to_float(rd16(row + 2 * i)) * x[i];
      return s;
    }
    case GGMLType::Q4_0:
    case GGMLType::Q4_1: {
      const bool has_min = type == GGMLType::Q4_1;
      const int bb = has_min ? 20 : 18;
      const int64_t nb = cols / 32;
      float total = 0.0f;
#if LLM_MATMUL_AVX512
      // 16 lanes. Per block, a 16-entry table of the block's 16 possible weights, lut[q] = q*d + m (one FMA),
      // then each nibble becomes its weight by a permute: cheaper than int->float conversion and scaling.
      // (q*d + m in one FMA rounds once where dequantize_row rounds twice: weights differ by <= 1 ulp.)
      __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
      const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
      const __m128i mask = _mm_set1_epi8(0x0f);
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = row + b * bb;
        const float d = half_to_float(rd16(blk));
        const float m = has_min ? half_to_float(rd16(blk + 2)) : -8.0f * d;
        const __m512 lut = _mm512_fmadd_ps(iota, _mm512_set1_ps(d), _mm512_set1_ps(m));
        const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + (has_min ? 4 : 2)));
        const __m512i lo = _mm512_cvtepu8_epi32(_mm_and_si128(q, mask));
        const __m512i hi = _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q, 4), mask));
        acc0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(lo, lut), _mm512_loadu_ps(x + b * 32), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(hi, lut), _mm512_loadu_ps(x + b * 32 + 16), acc1);
      }
      total = simd::hsum16(_mm512_add_ps(acc0, acc1));
#elif LLM_MATMUL_AVX2
      __m256 acc = _mm256_setzero_ps();
      const __m128i mask = _mm_set1_epi8(0x0f);
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = row + b * bb;
        const float d = half_to_float(rd16(blk));
        const uint8_t* qs = blk + (has_min ? 4 : 2);
        const float* xb = x + b * 32;
        __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
        __m128i lo = _mm_and_si128(q, mask), hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
        __m256 p = _mm256_mul_ps(u8x8_to_ps(lo), _mm256_loadu_ps(xb));
        p = _mm256_fmadd_ps(u8x8_to_ps(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(xb + 8), p);
        p = _mm256_fmadd_ps(u8x8_to_ps(hi), _mm256_loadu_ps(xb + 16), p);
        p = _mm256_fmadd_ps(u8x8_to_ps(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(xb + 24), p);
        __m256 xs = _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(xb), _mm256_loadu_ps(xb + 8)),
                                  _mm256_add_ps(_mm256_loadu_ps(xb + 16), _mm256_loadu_ps(xb + 24)));
        // Q4_1: x = q*d + m; Q4_0: x = (q-8)*d = q*d + (-8d)
        const float m = has_min ? half_to_float(rd16(blk + 2)) : -8.0f * d;
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), p, acc);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(m), xs, acc);
      }
      total = hsum8(acc);
#else
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = row + b * bb;
        const float d = half_to_float(rd16(blk));
        const float m = has_min ? half_to_float(rd16(blk + 2)) : -8.0f * d;
        const uint8_t* qs = blk + (has_min ? 4 : 2);
        const float* xb = x + b * 32;
        float sq = 0.0f, sx = 0.0f;
        for (int j = 0; j < 16; ++j) {
          sq += static_cast<float>(qs[j] & 0x0f) * xb[j] + static_cast<float>(qs[j] >> 4) * xb[j + 16];
          sx += xb[j] + xb[j + 16];
        }
        total += d * sq + m * sx;
      }
#endif
      return total;
    }
    case GGMLType::Q8_0: {
      const int64_t nb = cols / 32;
      float total = 0.0f;
#if LLM_MATMUL_AVX512
      __m512 acc = _mm512_setzero_ps();
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = row + b * 34;
        const float d = half_to_float(rd16(blk));
        const __m512 q0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2))));
        const __m512 q1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 18))));
        const __m512 p = _mm512_fmadd_ps(q1, _mm512_loadu_ps(x + b * 32 + 16), _mm512_mul_ps(q0, _mm512_loadu_ps(x + b * 32)));
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), p, acc);
      }
      total = simd::hsum16(acc);
#elif LLM_MATMUL_AVX2
      __m256 acc = _mm256_setzero_ps();
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = row + b * 34;
        const float d = half_to_float(rd16(blk));
        const float* xb = x + b * 32;
        __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
        __m128i q1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 18));
        __m256 p = _mm256_mul_ps(i8x8_to_ps(q0), _mm256_loadu_ps(xb));
        p = _mm256_fmadd_ps(i8x8_to_ps(_mm_srli_si128(q0, 8)), _mm256_loadu_ps(xb + 8), p);
        p = _mm256_fmadd_ps(i8x8_to_ps(q1), _mm256_loadu_ps(xb + 16), p);
        p = _mm256_fmadd_ps(i8x8_to_ps(_mm_srli_si128(q1, 8)), _mm256_loadu_ps(xb + 24), p);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), p, acc);
      }
      total = hsum8(acc);
#else
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = row + b * 34;
        const float d = half_to_float(rd16(blk));
        const int8_t* qs = reinterpret_cast<const int8_t*>(blk + 2);
        const float* xb = x + b * 32;
        float s = 0.0f;
        for (int j = 0; j < 32; ++j) s += static_cast<float>(qs[j]) * xb[j];
        total += d * s;
      }
#endif
      return total;
    }
    default:
      fail("matmul_cpu: internal: type ", ggml_type_name(type), " has no native dot");
  }
}

// Native decoders for the fast types (the prefill tile), dequantize_row for the others.
void dequant_row(GGMLType type, const uint8_t* row, float* dst, int64_t cols) {
  switch (type) {
    case GGMLType::F32: std::memcpy(dst, row, cols * sizeof(float)); return;
    case GGMLType::F16:
      for (int64_t i = 0; i < cols; ++i) dst[i] = half_to_float(rd16(row + 2 * i));
      return;
    case GGMLType::Q4_0:
    case GGMLType::Q4_1: {
      const bool has_min = type == GGMLType::Q4_1;
      const int bb = has_min ? 20 : 18;
      for (int64_t b = 0; b < cols / 32; ++b) {
        const uint8_t* blk = row + b * bb;
        const float d = half_to_float(rd16(blk));
        const float m = has_min ? half_to_float(rd16(blk + 2)) : -8.0f * d;
        const uint8_t* qs = blk + (has_min ? 4 : 2);
        for (int j = 0; j < 16; ++j) {
          dst[b * 32 + j] = static_cast<float>(qs[j] & 0x0f) * d + m;
          dst[b * 32 + j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
        }
      }
      return;
    }
    case GGMLType::Q8_0:
      for (int64_t b = 0; b < cols / 32; ++b) {
        const uint8_t* blk = row + b * 34;
        const float d = half_to_float(rd16(blk));
        const int8_t* qs = reinterpret_cast<const int8_t*>(blk + 2);
        for (int j = 0; j < 32; ++j) dst[b * 32 + j] = static_cast<float>(qs[j]) * d;
      }
      return;
    default:
      dequantize_row(type, row, dst, cols);
  }
}

}  // namespace

QMatrix qmatrix_from_view(const TensorView& t) {
  if (!ggml_type_supported(t.type))
    fail("tensor ", t.name, ": GGML type ", ggml_type_name(t.type), " is not supported; supported: ",
         ggml_supported_type_list());
  QMatrix m;
  m.type = t.type;
  m.data = t.data;
  m.rows = t.rows();
  m.cols = t.cols();
  m.row_bytes = ggml_row_bytes(t.type, m.cols);
  if (m.row_bytes * static_cast<size_t>(m.rows) > t.nbytes)
    fail("tensor ", t.name, ": ", t.nbytes, " bytes is too small for ", shape_str(t.shape), " of ",
         ggml_type_name(t.type), "; the file is truncated or corrupt (re-download it)");
  return m;
}

float matrow_dot_cpu(const QMatrix& w, int64_t r, const float* x) {
  const uint8_t* row = w.data + static_cast<size_t>(r) * w.row_bytes;
  if (native_type(w.type)) return row_dot_native(w.type, row, x, w.cols);
  std::vector<float> tmp(w.cols);
  dequantize_row(w.type, row, tmp.data(), w.cols);
  return simd::dot(tmp.data(), x, w.cols);
}

void matmul_cpu(float* out, const float* x, const QMatrix& w, int n, ThreadPool* pool) {
  const int64_t rows = w.rows, cols = w.cols;
  if (n == 1 && native_type(w.type)) {
    // decode GEMV: fused dequantise + dot, split over output rows (chunks of 8 keep cache lines apart)
    parallel_for(pool, (rows + 7) / 8, [&](int64_t b, int64_t e) {
      for (int64_t r = b * 8; r < e * 8 && r < rows; ++r)
        out[r] = row_dot_native(w.type, w.data + static_cast<size_t>(r) * w.row_bytes, x, cols);
    });
    return;
  }
  // prefill (or a non-native type): tiles of weight rows, dequantised once, reused for all n tokens
  const int64_t n_tiles = (rows + kTileRows - 1) / kTileRows;
  parallel_for(pool, n_tiles, [&](int64_t tb, int64_t te) {
    std::vector<float> tile(static_cast<size_t>(kTileRows) * cols);
    for (int64_t t = tb; t < te; ++t) {
      const int64_t r0 = t * kTileRows, r1 = std::min<int64_t>(rows, r0 + kTileRows);
      for (int64_t r = r0; r < r1; ++r)
        dequant_row(w.type, w.data + static_cast<size_t>(r) * w.row_bytes, tile.data() + (r - r0) * cols, cols);
      // 4 rows x 4 tokens at a time (simd::dot4x4), the ragged edges one dot at a time
      const int64_t r4 = r0 + (r1 - r0) / 4 * 4;
      int i = 0;
      for (; i + 4 <= n; i += 4) {
        const float* xi = x + static_cast<int64_t>(i) * cols;
        for (int64_t r = r0; r < r4; r += 4)
          simd::dot4x4(tile.data() + (r - r0) * cols, xi, cols, out + static_cast<int64_t>(i) * rows + r, rows);
        for (int64_t r = r4; r < r1; ++r)
          for (int t = 0; t < 4; ++t)
            out[static_cast<int64_t>(i + t) * rows + r] = simd::dot(tile.data() + (r - r0) * cols, xi + t * cols, cols);
      }
      for (; i < n; ++i) {
        const float* xi = x + static_cast<int64_t>(i) * cols;
        float* oi = out + static_cast<int64_t>(i) * rows;
        for (int64_t r = r0; r < r1; ++r) oi[r] = simd::dot(tile.data() + (r - r0) * cols, xi, cols);
      }
    }
  });
}

void matmul_group_cpu(float* const* outs, const QMatrix* const* ws, int count, const float* x, int n,
                      ThreadPool* pool) {
  bool fused = n == 1;
  for (int i = 0; i < count; ++i) fused = fused && native_type(ws[i]->type) && ws[i]->cols == ws[0]->cols;
  if (!fused) {
    for (int i = 0; i < count; ++i) matmul_cpu(outs[i], x, *ws[i], n, pool);
    return;
  }
  // groups of 8 rows numbered across the matrices one after another
  std::vector<int64_t> first(count + 1, 0);
  for (int i = 0; i < count; ++i) first[i + 1] = first[i] + (ws[i]->rows + 7) / 8;
  parallel_for(pool, first[count], [&](int64_t b, int64_t e) {
    int i = 0;
    for (int64_t gidx = b; gidx < e; ++gidx) {
      while (gidx >= first[i + 1]) ++i;
      const QMatrix& w = *ws[i];
      const int64_t r0 = (gidx - first[i]) * 8, r1 = std::min<int64_t>(w.rows, r0 + 8);
      for (int64_t r = r0; r < r1; ++r)
        outs[i][r] = row_dot_native(w.type, w.data + static_cast<size_t>(r) * w.row_bytes, x, w.cols);
    }
  });
}

// Embedding lives here because it shares the row decoders.
void embedding_cpu(float* out, const int* tokens, int n, const QMatrix& table) {
  for (int i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= table.rows)
      fail("token id ", tokens[i], " is out of range: the vocabulary has ", table.rows, " entries");
    dequant_row(table.type, table.data + static_cast<size_t>(tokens[i]) * table.row_bytes, out + i * table.cols,
                table.cols);
  }
}

}  // namespace llm
