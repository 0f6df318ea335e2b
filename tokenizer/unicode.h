// Unicode helpers for the pre-tokenizers: UTF-8 decoding and the three categories the published regexes use
// (\p{L}, \p{N}, \s). The table is generated (tools/gen_unicode_tables.py -> tokenizer/unicode_tables.cpp).
#pragma once
#include <cstddef>
#include <cstdint>

namespace llm {

enum : uint8_t { kUniLetter = 1, kUniNumber = 2, kUniSpace = 4 };

struct UnicodeRange {
  uint32_t first, last;
  uint8_t flags;
};
extern const UnicodeRange kUnicodeRanges[];
extern const int kUnicodeRangeCount;

// Flags of one code point (0 for none; the invalid-byte marker 0xFFFFFFFF has none).
uint8_t unicode_flags(uint32_t cp);

// Decode one UTF-8 character at s[0..n). Returns the code point and sets *len (1..4). An invalid or
// truncated sequence yields 0xFFFFFFFF with *len = 1 (the stray byte stands alone).
inline uint32_t utf8_decode(const unsigned char* s, size_t n, int* len) {
  unsigned char c = s[0];
  if (c < 0x80) { *len = 1; return c; }
  int need; uint32_t cp;
  if ((c & 0xE0) == 0xC0) { need = 1; cp = c & 0x1F; }
  else if ((c & 0xF0) == 0xE0) { need = 2; cp = c & 0x0F; }
  else if ((c & 0xF8) == 0xF0) { need = 3; cp = c & 0x07; }
  else { *len = 1; return 0xFFFFFFFFu; }
  if ((size_t)need >= n) { *len = 1; return 0xFFFFFFFFu; }
  for (int i = 1; i <= need; ++i) {
    if ((s[i] & 0xC0) != 0x80) { *len = 1; return 0xFFFFFFFFu; }
    cp = (cp << 6) | (s[i] & 0x3F);
  }
  // overlong forms, surrogates and values above U+10FFFF are invalid too
  static const uint32_t min_cp[4] = {0, 0x80, 0x800, 0x10000};
  if (cp < min_cp[need] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) { *len = 1; return 0xFFFFFFFFu; }
  *len = need + 1;
  return cp;
}

// Length in bytes of a UTF-8 sequence by its first byte (1 for a stray byte).
inline int utf8_len(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) return 2;
  if ((c & 0xF0) == 0xE0) return 3;
  if ((c & 0xF8) == 0xF0) return 4;
  return 1;
}

}  // namespace llm
