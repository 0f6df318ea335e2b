// Pre-tokenizers: cut text into words before BPE. Hand-written matchers equivalent to the published regexes
// (see pretokenize.cpp for each pattern); internal to the tokenizer module.
#pragma once
#include <cstdint>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace llm {

struct Span {
  uint32_t begin, end;  // byte offsets into the text
};

// Per-call scratch space, reused between calls to avoid allocations.
struct PretokScratch {
  std::vector<uint32_t> cps;   // code points (0xFFFFFFFF for a stray byte)
  std::vector<uint32_t> offs;  // byte offset of each code point (+ one past the end)
  std::vector<uint8_t> fl;     // unicode flags (+ kUniCRLF)
};

// Appends the words of `text` (as byte spans, in order, covering all of it) to `out`.
void pretokenize(PreTokenizer p, std::string_view text, PretokScratch& scratch, std::vector<Span>& out);

}  // namespace llm
