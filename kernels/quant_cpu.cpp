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

void quantize_row_cpu(uint8_t* dst, const float* x, int n, int bits, int group) {
  check_row(n, bits, group);
  if (bits == 16) {
    std::memcpy(dst, x, size_t(n) * sizeof(float));
    return;
  }
  const int qmax = (1 << bits) - 1, per_byte = 8 / bits;
  for (int g0 = 0; g0 < n; g0 += group) {
    float lo = x[g0], hi = x[g0];
    for (int i = 1; i < group; ++i) lo = std::min(lo, x[g0 + i]), hi = std::max(hi, x[g0 + i]);
    // Round scale and min to fp16 FIRST and quantise against the rounded values, so the stored codes are the
    // best ones for what dequantisation will actually use.
    const uint16_t h_min = f32_to_fp16(lo), h_scale = f32_to_fp16((hi - lo) / qmax);
    const float mn = fp16_to_f32(h_min), sc = fp16_to_f32(h_scale);
    const float inv = sc > 0 ? 1.0f / sc : 0.0f;
    std::memcpy(dst, &h_scale, 2);
    std::memcpy(dst + 2, &h_min, 2);
    uint8_t* codes = dst + 4;
    std::memset(codes, 0, size_t(group) * bits / 8);
    for (int i = 0; i < group; ++i) {
      int c = static_cast<int>(std::lrint((x[g0 + i] - mn) * inv));
      c = std::clamp(c, 0, qmax);
      codes[i / per_byte] |= static_cast<uint8_t>(c << ((i % per_byte) * bits));
    }
    dst += 4 + size_t(group) * bits / 8;
  }
}

void dequantize_row_cpu(float* dst, const uint8_t* src, int n, int bits, int group) {
  if (bits == 16) {
    std::memcpy(dst, src, size_t(n) * sizeof(float));
    return;
  }
  const int per_byte = 8 / bits, mask = (1 << bits) - 1;
  for (int g0 = 0; g0 < n; g0 += group) {
    uint16_t h_scale, h_min;
    std::memcpy(&h_scale, src, 2);
    std::memcpy(&h_min, src + 2, 2);
    const float sc = fp16_to_f32(h_scale), mn = fp16_to_f32(h_min);
    const uint8_t* codes = src + 4;
    for (int i = 0; i < group; ++i)
      dst[g0 + i] = mn + sc * static_cast<float>((codes[i / per_byte] >> ((i % per_byte) * bits)) & mask);
    src += 4 + size_t(group) * bits / 8;
  }
}

}  // namespace llm
