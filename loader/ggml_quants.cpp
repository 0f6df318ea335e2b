// Dequantisation of GGML block types. The block layouts are GGML's (ggml-common.h / gguf-py quants.py, read as
// facts; this code is our own). All multi-byte fields are little-endian; scales are IEEE fp16.
//
//   type  elems bytes layout
//   Q4_0   32   18   d:f16 | qs[16] (low nibbles = elems 0..15, high = 16..31);       x = (q - 8) * d
//   Q4_1   32   20   d:f16 m:f16 | qs[16];                                            x = q * d + m
//   Q5_0   32   22   d:f16 | qh:u32 (5th bit of elem j = bit j) | qs[16];             x = (q - 16) * d
//   Q5_1   32   24   d:f16 m:f16 | qh:u32 | qs[16];                                   x = q * d + m
//   Q8_0   32   34   d:f16 | qs:i8[32];                                               x = q * d
//   Q2_K  256   84   scales[16] (lo nibble scale, hi nibble min) | qs[64] | d:f16 dmin:f16
//   Q3_K  256  110   hmask[32] | qs[64] | scales[12] (16 x 6-bit, biased by 32) | d:f16
//   Q4_K  256  144   d:f16 dmin:f16 | scales[12] (8 x 6-bit scale + 8 x 6-bit min) | qs[128]
//   Q5_K  256  176   d:f16 dmin:f16 | scales[12] | qh[32] | qs[128]
//   Q6_K  256  210   ql[128] | qh[64] | scales:i8[16] | d:f16
//
// Speed: each block is decoded with straight-line loops over fixed 16/32-element runs that the compiler
// unrolls and vectorises; there is no per-element branching on the type. The products are evaluated in the
// same order as GGML / gguf-py ((d * scale) * q - (dmin * min)), so results match them bit for bit as long as
// the compiler does not contract a*b-c into an FMA (we build with the default -ffp-contract=off for ISO C++).
#include "loader/ggml_quants.h"

#include <cstring>

#include "loader/error.h"

namespace llm {

float fp16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      bits = sign | uint32_t(127 - 15 - e) << 23 | (mant & 0x3ffu) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | mant << 13;
  } else {
    bits = sign | (exp + 112) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_fp16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return uint16_t(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0));  // inf / NaN
  if (ax >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65536: overflow to inf
  if (ax < 0x38800000u) {  // below the smallest normal fp16 (2^-14): subnormal or zero
    if (ax < 0x33000000u) return uint16_t(sign);  // < 2^-25 rounds to zero
    uint32_t e = ax >> 23;
    uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e;  // so that the result is in units of 2^-24
    uint32_t q = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) ++q;
    return uint16_t(sign | q);
  }
  uint32_t q = ((ax >> 13) - (112u << 10));  // rebias exponent, keep 10 mantissa bits
  uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (q & 1))) ++q;  // carries into the exponent correctly
  return uint16_t(sign | q);
}

float bf16_to_f32(uint16_t h) {
  uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  return bf16_from_bits(x);
}

namespace {

inline float h2f(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return fp16_to_f32(h);
}

void deq_q4_0(const uint8_t* b, float* y) {
  const float d = h2f(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = float(int(qs[j] & 0xf) - 8) * d;
    y[j + 16] = float(int(qs[j] >> 4) - 8) * d;
  }
}

void deq_q4_1(const uint8_t* b, float* y) {
  const float d = h2f(b), m = h2f(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = float(qs[j] & 0xf) * d + m;
    y[j + 16] = float(qs[j] >> 4) * d + m;
  }
}

void deq_q5_0(const uint8_t* b, float* y) {
  const float d = h2f(b);
  uint32_t qh;
  std::memcpy(&qh, b + 2, 4);
  const uint8_t* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    int lo = int((qs[j] & 0xf) | (((qh >> j) & 1u) << 4));
    int hi = int((qs[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4));
    y[j] = float(lo - 16) * d;
    y[j + 16] = float(hi - 16) * d;
  }
}

void deq_q5_1(const uint8_t* b, float* y) {
  const float d = h2f(b), m = h2f(b + 2);
  uint32_t qh;
  std::memcpy(&qh, b + 4, 4);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    uint32_t lo = (qs[j] & 0xf) | (((qh >> j) & 1u) << 4);
    uint32_t hi = (qs[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4);
    y[j] = float(lo) * d + m;
    y[j + 16] = float(hi) * d + m;
  }
}

void deq_q8_0(const uint8_t* b, float* y) {
  const float d = h2f(b);
  const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2);
  for (int j = 0; j < 32; ++j) y[j] = float(qs[j]) * d;
}

void deq_q2_k(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* q = b + 16;
  const float d = h2f(b + 80), dmin = h2f(b + 82);
  int is = 0;
  for (int n = 0; n < 256; n += 128) {  // two halves of 128, each from 32 bytes of qs
    for (int shift = 0; shift < 8; shift += 2) {  // four 2-bit planes
      for (int half = 0; half < 2; ++half) {       // 16 elements from q[0..15], then q[16..31]
        const uint8_t sc = scales[is++];
        const float dl = d * float(sc & 0xf), ml = dmin * float(sc >> 4);
        const uint8_t* qq = q + 16 * half;
        for (int l = 0; l < 16; ++l) y[l] = dl * float((qq[l] >> shift) & 3) - ml;
        y += 16;
      }
    }
    q += 32;
  }
}

void deq_q3_k(const uint8_t* b, float* y) {
  const uint8_t* hm = b;
  const uint8_t* q = b + 32;
  const uint8_t* sc = b + 96;
  const float d_all = h2f(b + 108);
  // 16 six-bit scales: low 4 bits from bytes 0..7 (lo nibble = scales 0..7, hi nibble = 8..15),
  // high 2 bits from bytes 8..11 (byte 8+k holds the top bits of scales k, k+4, k+8, k+12 in bit pairs).
  int scales[16];
  for (int k = 0; k < 16; ++k) {
    int lo = (k < 8) ? (sc[k] & 0xf) : (sc[k - 8] >> 4);
    int hi = (sc[8 + (k & 3)] >> (2 * (k >> 2))) & 3;
    scales[k] = (lo | (hi << 4)) - 32;
  }
  int is = 0;
  uint8_t m = 1;
  for (int n = 0; n < 256; n += 128) {
    for (int shift = 0; shift < 8; shift += 2) {
      for (int half = 0; half < 2; ++half) {
        const float dl = d_all * float(scales[is++]);
        const uint8_t* qq = q + 16 * half;
        const uint8_t* hh = hm + 16 * half;
        for (int l = 0; l < 16; ++l) y[l] = dl * float(int((qq[l] >> shift) & 3) - ((hh[l] & m) ? 0 : 4));
        y += 16;
      }
      m = uint8_t(m << 1);
    }
    q += 32;
  }
}

// Q4_K / Q5_K: 8 pairs of (6-bit scale, 6-bit min) packed in 12 bytes.
inline void scale_min_k4(int j, const uint8_t* q, uint8_t& sc, uint8_t& mn) {
  if (j < 4) {
    sc = q[j] & 63;
    mn = q[j + 4] & 63;
  } else {
    sc = uint8_t((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4));
    mn = uint8_t((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

void deq_q4_k(const uint8_t* b, float* y) {
  const float d = h2f(b), dmin = h2f(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* q = b + 16;
  for (int j = 0; j < 8; j += 2) {  // 64 elements per step: 32 low nibbles, 32 high nibbles
    uint8_t sc, mn;
    scale_min_k4(j, scales, sc, mn);
    const float d1 = d * float(sc), m1 = dmin * float(mn);
    scale_min_k4(j + 1, scales, sc, mn);
    const float d2 = d * float(sc), m2 = dmin * float(mn);
    for (int l = 0; l < 32; ++l) y[l] = d1 * float(q[l] & 0xf) - m1;
    for (int l = 0; l < 32; ++l) y[l + 32] = d2 * float(q[l] >> 4) - m2;
    y += 64;
    q += 32;
  }
}

void deq_q5_k(const uint8_t* b, float* y) {
  const float d = h2f(b), dmin = h2f(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* ql = b + 48;
  for (int j = 0; j < 8; j += 2) {
    uint8_t sc, mn;
    scale_min_k4(j, scales, sc, mn);
    const float d1 = d * float(sc), m1 = dmin * float(mn);
    scale_min_k4(j + 1, scales, sc, mn);
    const float d2 = d * float(sc), m2 = dmin * float(mn);
    const int b1 = j, b2 = j + 1;  // bit of qh[l] holding the 5th bit of this 32-element run
    for (int l = 0; l < 32; ++l) y[l] = d1 * float((ql[l] & 0xf) | (((qh[l] >> b1) & 1) << 4)) - m1;
    for (int l = 0; l < 32; ++l) y[l + 32] = d2 * float((ql[l] >> 4) | (((qh[l] >> b2) & 1) << 4)) - m2;
    y += 64;
    ql += 32;
  }
}

void deq_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = h2f(b + 208);
  for (int n = 0; n < 256; n += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = int((ql[l] & 0xf) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = int((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = int((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = int((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * float(sc[is + 0]) * float(q1);
      y[l + 32] = d * float(sc[is + 2]) * float(q2);
      y[l + 64] = d * float(sc[is + 4]) * float(q3);
      y[l + 96] = d * float(sc[is + 6]) * float(q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

using BlockFn = void (*)(const uint8_t*, float*);

BlockFn block_fn(GGMLType t) {
  switch (t) {
    case GGMLType::Q4_0: return deq_q4_0;
    case GGMLType::Q4_1: return deq_q4_1;
    case GGMLType::Q5_0: return deq_q5_0;
    case GGMLType::Q5_1: return deq_q5_1;
    case GGMLType::Q8_0: return deq_q8_0;
    case GGMLType::Q2_K: return deq_q2_k;
    case GGMLType::Q3_K: return deq_q3_k;
    case GGMLType::Q4_K: return deq_q4_k;
    case GGMLType::Q5_K: return deq_q5_k;
    case GGMLType::Q6_K: return deq_q6_k;
    default: return nullptr;
  }
}

void check_supported(GGMLType type, int64_t n) {
  if (!ggml_type_supported(type))
    fail("cannot dequantise GGML type ", ggml_type_name(type), " (id ", static_cast<uint32_t>(type),
         "): not supported; supported types: ", ggml_supported_type_list(),
         ". Use a GGUF quantised to one of these (e.g. Q4_K_M or Q8_0)");
  int64_t be = ggml_type_traits(type).block_elems;
  if (n < 0 || n % be != 0)
    fail("dequantise ", ggml_type_name(type), ": ", n, " elements is not a whole number of blocks of ", be);
}

}  // namespace

void dequantize_row(GGMLType type, const void* src, float* dst, int64_t n) {
  check_supported(type, n);
  const uint8_t* s = static_cast<const uint8_t*>(src);
  switch (type) {
    case GGMLType::F32:
      if (n) std::memcpy(dst, s, size_t(n) * 4);  // n == 0: dst may be null (UB for memcpy)
      return;
    case GGMLType::F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = h2f(s + 2 * i);
      return;
    case GGMLType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, s + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return;
    default: break;
  }
  const auto tr = ggml_type_traits(type);
  const BlockFn fn = block_fn(type);
  const int64_t nb = n / tr.block_elems;
  for (int64_t i = 0; i < nb; ++i) fn(s + i * tr.block_bytes, dst + i * tr.block_elems);
}

void dequantize_row_bf16(GGMLType type, const void* src, uint16_t* dst, int64_t n) {
  check_supported(type, n);
  if (type == GGMLType::BF16) {
    if (n) std::memcpy(dst, src, size_t(n) * 2);
    return;
  }
  // Through an f32 buffer of whole blocks (256 = one K-quant block = 8 small blocks), kept on the stack.
  const auto tr = ggml_type_traits(type);
  const BlockFn fn = block_fn(type);
  constexpr int64_t chunk = 256;
  alignas(64) uint32_t buf[chunk];
  const uint8_t* s = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < n; i += chunk) {
    const int64_t m = (n - i < chunk) ? n - i : chunk;  // a multiple of the block size, since n and 256 are
    const uint8_t* blocks = s + (i / tr.block_elems) * tr.block_bytes;
    if (fn) {
      float fbuf[chunk];
      for (int64_t b = 0; b < m / tr.block_elems; ++b) fn(blocks + b * tr.block_bytes, fbuf + b * tr.block_elems);
      std::memcpy(buf, fbuf, size_t(m) * 4);
    } else if (type == GGMLType::F32) {
      std::memcpy(buf, blocks, size_t(m) * 4);
    } else {  // F16
      for (int64_t k = 0; k < m; ++k) {
        float v = h2f(blocks + 2 * k);
        std::memcpy(&buf[k], &v, 4);
      }
    }
    for (int64_t k = 0; k < m; ++k) dst[i + k] = bf16_from_bits(buf[k]);
  }
}

void tensor_to_f32(const TensorView& t, float* dst) {
  const int64_t n = t.numel();
  if (ggml_row_bytes(t.type, t.cols()) * size_t(t.rows()) != t.nbytes)
    fail("tensor ", t.name, ": ", t.nbytes, " bytes do not hold ", ggml_type_name(t.type), " ", shape_str(t.shape));
  // Rows are whole blocks and lie back to back, so the tensor is one long row.
  dequantize_row(t.type, t.data, dst, n);
}

}  // namespace llm
