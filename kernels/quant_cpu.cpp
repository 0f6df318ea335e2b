// Group-wise asymmetric quantisation of KV rows (layout in kernels/quant_cpu.h).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/quant_cpu.h"
#include "loader/error.h"
#include "loader/ggml_quants.h"

namespace llm {

static void check_row(int n, int bits, int group) {
  if (bits != 2 && bits != 4 && bits != 8 && bits != 16) fail("KV quantisation: ", bits, " bits unsupported (2, 4, 8, 16)");
  if (group <= 0 || group % 4 != 0 || n % group != 0)
    fail("KV quantisation: group ", group, " must be a positive multiple of 4 dividing head_dim ", n);
}

size_t quant_row_bytes(int n, int bits, int group) {
  check_row(n, bits, group);
  if (bits == 16) return size_t(n) * sizeof(float);
  return size_t(n / group) * (4 + size_t(group) * bits / 8);
}

size_t quant_row_bytes_16(int n, int bits, int group) {
  return bits == 16 ? size_t(n) * 2 : quant_row_bytes(n, bits, group);
}

// One group of len values at bits (2, 4, 8): [fp16 scale][fp16 min][ceil(len*bits/8) bytes of codes]. Returns
// the bytes written / read. Shared by the head_dim rows and the rank-space rows (whose last group may be short).
static size_t quantize_group(uint8_t* dst, const float* x, int len, int bits) {
  const int qmax = (1 << bits) - 1, per_byte = 8 / bits;
  float lo = x[0], hi = x[0];
  for (int i = 1; i < len; ++i) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
  // Round scale and min to fp16 FIRST and quantise against the rounded values, so the stored codes are the
  // best ones for what dequantisation will actually use.
  const uint16_t h_min = f32_to_fp16(lo), h_scale = f32_to_fp16((hi - lo) / qmax);
  const float mn = fp16_to_f32(h_min), sc = fp16_to_f32(h_scale);
  const float inv = sc > 0 ? 1.0f / sc : 0.0f;
  std::memcpy(dst, &h_scale, 2);
  std::memcpy(dst + 2, &h_min, 2);
  uint8_t* codes = dst + 4;
  const size_t code_bytes = (size_t(len) * bits + 7) / 8;
  std::memset(codes, 0, code_bytes);
  for (int i = 0; i < len; ++i) {
    int c = static_cast<int>(std::lrint((x[i] - mn) * inv));
    c = std::clamp(c, 0, qmax);
    codes[i / per_byte] |= static_cast<uint8_t>(c << ((i % per_byte) * bits));
  }
  return 4 + code_bytes;
}

static size_t dequantize_group(float* dst, const uint8_t* src, int len, int bits) {
  const int per_byte = 8 / bits, mask = (1 << bits) - 1;
  uint16_t h_scale, h_min;
  std::memcpy(&h_scale, src, 2);
  std::memcpy(&h_min, src + 2, 2);
  const float sc = fp16_to_f32(h_scale), mn = fp16_to_f32(h_min);
  const uint8_t* codes = src + 4;
  // whole code bytes first, one loop per width (straight-line bodies the compiler vectorises: the decode
  // attention dequantises every cached row once per step), then any remainder of a short rank-row group; every
  // value is the same mn + sc * code either way
  const int whole = len / per_byte;
  if (bits == 8) {
    for (int b = 0; b < whole; ++b) dst[b] = mn + sc * static_cast<float>(codes[b]);
  } else if (bits == 4) {
    for (int b = 0; b < whole; ++b) {
      const int c = codes[b];
      dst[2 * b] = mn + sc * static_cast<float>(c & 15);
      dst[2 * b + 1] = mn + sc * static_cast<float>(c >> 4);
    }
  } else {
    for (int b = 0; b < whole; ++b) {
      const int c = codes[b];
      dst[4 * b] = mn + sc * static_cast<float>(c & 3);
      dst[4 * b + 1] = mn + sc * static_cast<float>((c >> 2) & 3);
      dst[4 * b + 2] = mn + sc * static_cast<float>((c >> 4) & 3);
      dst[4 * b + 3] = mn + sc * static_cast<float>(c >> 6);
    }
  }
  for (int i = whole * per_byte; i < len; ++i)
    dst[i] = mn + sc * static_cast<float>((codes[i / per_byte] >> ((i % per_byte) * bits)) & mask);
  return 4 + (size_t(len) * bits + 7) / 8;
}

void quantize_row_cpu(uint8_t* dst, const float* x, int n, int bits, int group) {
  check_row(n, bits, group);
  if (bits == 16) {
    std::memcpy(dst, x, size_t(n) * sizeof(float));
    return;
  }
  for (int g0 = 0; g0 < n; g0 += group) dst += quantize_group(dst, x + g0, group, bits);
}

void hadamard_rotate_cpu(float* x, int n) {
  if (n < 1 || (n & (n - 1)) != 0) fail("hadamard_rotate_cpu: n = ", n, " is not a power of two");
  for (int h = 1; h < n; h *= 2)
    for (int i = 0; i < n; i += 2 * h)
      for (int j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b, x[j + h] = a - b;
      }
  const float s = 1.0f / std::sqrt(static_cast<float>(n));
  for (int i = 0; i < n; ++i) x[i] *= s;
}

void dequantize_row_cpu(float* dst, const uint8_t* src, int n, int bits, int group) {
  dequantize_row_part_cpu(dst, src, bits, group, 0, n);
}

void dequantize_row_part_cpu(float* dst, const uint8_t* src, int bits, int group, int d0, int len) {
  if (bits == 16) {
    std::memcpy(dst, src + size_t(d0) * sizeof(float), size_t(len) * sizeof(float));
    return;
  }
  src += size_t(d0 / group) * (4 + size_t(group) * bits / 8);
  for (int g0 = 0; g0 < len; g0 += group) src += dequantize_group(dst + g0, src, group, bits);
}

// ---- rank-space rows (svd + quant) ----

static void check_rank_row(int n, int bits) {
  if (bits != 2 && bits != 4 && bits != 8 && bits != 16) fail("KV quantisation: ", bits, " bits unsupported (2, 4, 8, 16)");
  if (n < 1) fail("KV quantisation: a rank-space row needs at least 1 value, got ", n);
}

size_t quant_rank_row_bytes(int n, int bits, int group) {
  check_rank_row(n, bits);
  if (bits == 16) return size_t(n) * sizeof(float);
  const int gs = group <= 0 || group >= n ? n : group;
  const int full = n / gs, tail = n % gs;
  return size_t(full) * (4 + (size_t(gs) * bits + 7) / 8) + (tail ? 4 + (size_t(tail) * bits + 7) / 8 : 0);
}

size_t quant_rank_row_bytes_16(int n, int bits, int group) {
  return bits == 16 ? size_t(n) * 2 : quant_rank_row_bytes(n, bits, group);
}

void quantize_rank_row_cpu(uint8_t* dst, const float* x, int n, int bits, int group) {
  check_rank_row(n, bits);
  if (bits == 16) {
    std::memcpy(dst, x, size_t(n) * sizeof(float));
    return;
  }
  const int gs = group <= 0 || group >= n ? n : group;
  for (int g0 = 0; g0 < n; g0 += gs) dst += quantize_group(dst, x + g0, std::min(gs, n - g0), bits);
}

void dequantize_rank_row_cpu(float* dst, const uint8_t* src, int n, int bits, int group) {
  if (bits == 16) {
    std::memcpy(dst, src, size_t(n) * sizeof(float));
    return;
  }
  const int gs = group <= 0 || group >= n ? n : group;
  for (int g0 = 0; g0 < n; g0 += gs) src += dequantize_group(dst + g0, src, std::min(gs, n - g0), bits);
}

}  // namespace llm
