// Pre-tokenizer matchers. Each one walks the code points left to right and, at every position, takes the
// first alternative of the regex that matches (regex alternation is ordered, each part greedy), exactly as
// Oniguruma / fancy-regex would. Categories: L = \p{L}, N = \p{N}, S = \s (White_Space), from
// unicode_tables.cpp. A stray byte of invalid UTF-8 counts as a one-byte "other" character (not L, N, S).
//
// llama3 (Llama-3 tokenizer.json Split, llama.cpp "llama-bpe"):
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+
//   |\s+(?!\S)|\s+
// gpt2 (GPT-2 ByteLevel use_regex, llama.cpp "gpt2"):
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// digits_then_gpt2 (llama.cpp "smollm", "starcoder"; HF Digits(individual_digits) + ByteLevel): every \p{N}
//   character is its own word, and the text between them is cut by the gpt2 matcher on its own (so a
//   lookahead never sees past a digit).
#include "tokenizer/pretokenize.h"

#include "tokenizer/unicode.h"

namespace llm {

namespace {

constexpr uint8_t kUniCRLF = 8;

inline uint8_t flags_of(uint32_t cp) {
  if (cp < 0x80) {  // ASCII without the table search: most text is ASCII
    if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return kUniLetter;
    if (cp >= '0' && cp <= '9') return kUniNumber;
    if (cp == '\r' || cp == '\n') return kUniSpace | kUniCRLF;
    if (cp == ' ' || (cp >= 9 && cp <= 13)) return kUniSpace;
    return 0;
  }
  return unicode_flags(cp);
}

// Decode text into code points + flags.
void decode_text(std::string_view text, PretokScratch& s) {
  s.cps.clear();
  s.offs.clear();
  s.fl.clear();
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  size_t n = text.size();
  for (size_t i = 0; i < n;) {
    int len;
    uint32_t cp = p[i] < 0x80 ? (len = 1, p[i]) : utf8_decode(p + i, n - i, &len);
    s.cps.push_back(cp);
    s.offs.push_back((uint32_t)i);
    s.fl.push_back(flags_of(cp));
    i += len;
  }
  s.offs.push_back((uint32_t)n);
}

inline uint32_t ascii_lower(uint32_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

// Length (in code points) of a contraction 's 't 're 've 'm 'll 'd at i, 0 if none.
size_t contraction(const uint32_t* cp, size_t i, size_t n, bool ignore_case) {
  if (cp[i] != '\'' || i + 1 >= n) return 0;
  uint32_t a = ignore_case ? ascii_lower(cp[i + 1]) : cp[i + 1];
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (i + 2 >= n) return 0;
  uint32_t b = ignore_case ? ascii_lower(cp[i + 2]) : cp[i + 2];
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

// \s+(?!\S)|\s+ at i (fl[i] is S): the whitespace run, less its last character when a non-space follows.
size_t space_run(const uint8_t* fl, size_t i, size_t n) {
  size_t e = i;
  while (e < n && (fl[e] & kUniSpace)) ++e;
  if (e == n) return e - i;
  return e - i > 1 ? e - i - 1 : 1;
}

// Llama-3: length of the match at i (always >= 1).
size_t match_llama3(const uint32_t* cp, const uint8_t* fl, size_t i, size_t n) {
  constexpr uint8_t LN = kUniLetter | kUniNumber, SLN = kUniSpace | kUniLetter | kUniNumber;
  if (size_t k = contraction(cp, i, n, true)) return k;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  {
    size_t j = i;
    if (!(fl[i] & (LN | kUniCRLF)) && i + 1 < n && (fl[i + 1] & kUniLetter)) j = i + 1;
    if (fl[j] & kUniLetter) {
      while (j < n && (fl[j] & kUniLetter)) ++j;
      return j - i;
    }
  }
  // \p{N}{1,3}
  if (fl[i] & kUniNumber) {
    size_t j = i + 1;
    while (j < n && j < i + 3 && (fl[j] & kUniNumber)) ++j;
    return j - i;
  }
  //  ?[^\s\p{L}\p{N}]+[\r\n]*
  {
    size_t j = i;
    if (cp[i] == ' ' && i + 1 < n && !(fl[i + 1] & SLN)) j = i + 1;
    if (!(fl[j] & SLN)) {
      while (j < n && !(fl[j] & SLN)) ++j;
      while (j < n && (fl[j] & kUniCRLF)) ++j;
      return j - i;
    }
  }
  // here fl[i] is S. \s*[\r\n]+ : up to the last CR/LF of the whitespace run, if it has one
  size_t e = i, last_nl = n;
  while (e < n && (fl[e] & kUniSpace)) {
    if (fl[e] & kUniCRLF) last_nl = e;
    ++e;
  }
  if (last_nl != n) return last_nl + 1 - i;
  return space_run(fl, i, n);  // \s+(?!\S)|\s+
}

// GPT-2: length of the match at i (always >= 1).
size_t match_gpt2(const uint32_t* cp, const uint8_t* fl, size_t i, size_t n) {
  constexpr uint8_t SLN = kUniSpace | kUniLetter | kUniNumber;
  if (size_t k = contraction(cp, i, n, false)) return k;
  size_t j = (cp[i] == ' ' && i + 1 < n) ? i + 1 : i;  // the optional leading space
  if (fl[j] & kUniLetter) {  //  ?\p{L}+
    while (j < n && (fl[j] & kUniLetter)) ++j;
    return j - i;
  }
  if (fl[j] & kUniNumber) {  //  ?\p{N}+
    while (j < n && (fl[j] & kUniNumber)) ++j;
    return j - i;
  }
  if (!(fl[j] & SLN)) {  //  ?[^\s\p{L}\p{N}]+
    while (j < n && !(fl[j] & SLN)) ++j;
    return j - i;
  }
  return space_run(fl, i, n);  // \s+(?!\S)|\s+
}

template <class Match>
void run_matcher(Match match, const PretokScratch& s, size_t from, size_t to, std::vector<Span>& out) {
  const uint32_t* cp = s.cps.data() + from;
  const uint8_t* fl = s.fl.data() + from;
  size_t n = to - from;
  for (size_t i = 0; i < n;) {
    size_t k = match(cp, fl, i, n);
    out.push_back({s.offs[from + i], s.offs[from + i + k]});
    i += k;
  }
}

}  // namespace

void pretokenize(PreTokenizer p, std::string_view text, PretokScratch& s, std::vector<Span>& out) {
  if (text.empty()) return;
  if (p == PreTokenizer::none) {
    out.push_back({0, (uint32_t)text.size()});
    return;
  }
  decode_text(text, s);
  size_t n = s.cps.size();
  switch (p) {
    case PreTokenizer::llama3: run_matcher(match_llama3, s, 0, n, out); break;
    case PreTokenizer::gpt2: run_matcher(match_gpt2, s, 0, n, out); break;
    case PreTokenizer::digits_then_gpt2: {
      size_t start = 0;
      for (size_t i = 0; i < n; ++i) {
        if (!(s.fl[i] & kUniNumber)) continue;
        run_matcher(match_gpt2, s, start, i, out);
        out.push_back({s.offs[i], s.offs[i + 1]});
        start = i + 1;
      }
      run_matcher(match_gpt2, s, start, n, out);
      break;
    }
    case PreTokenizer::none: break;
  }
}

uint8_t unicode_flags(uint32_t cp) {
  // binary search over the sorted, disjoint ranges
  int lo = 0, hi = kUnicodeRangeCount - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    const UnicodeRange& r = kUnicodeRanges[mid];
    if (cp < r.first) hi = mid - 1;
    else if (cp > r.last) lo = mid + 1;
    else return r.flags;
  }
  return 0;
}

}  // namespace llm
