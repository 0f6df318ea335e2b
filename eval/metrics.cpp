// LongBench's metrics (see metrics.h for the source and what is reproduced). Text is handled as Unicode code points,
// as Python strings are; invalid UTF-8 decodes to U+FFFD (Python's errors="replace") so a half-decoded token in a
// model's output scores instead of throwing.
#include "eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <set>
#include <unordered_map>

#include "loader/error.h"

namespace llm {
namespace {

using U32 = std::u32string;

struct LowerRun {
  char32_t first, last;
  int stride, delta;
};
struct CodeRange {
  char32_t first, last;
};
#include "eval/unicode_tables.inc"

template <size_t N>
bool in_ranges(const CodeRange (&table)[N], char32_t c) {
  // Ranges are sorted and disjoint: binary search for the last range starting at or before c.
  auto it = std::upper_bound(std::begin(table), std::end(table), c,
                             [](char32_t v, const CodeRange& r) { return v < r.first; });
  if (it == std::begin(table)) return false;
  --it;
  return c <= it->last;
}

bool is_space(char32_t c) { return in_ranges(k_space_ranges, c); }
bool is_decimal(char32_t c) { return in_ranges(k_decimal_ranges, c); }
bool is_word(char32_t c) { return c == U'_' || in_ranges(k_alnum_ranges, c); }  // Python re's \w for str patterns

void append_lower(U32& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(c >= U'A' && c <= U'Z' ? c + 32 : c);
    return;
  }
  if (c == 0x130) {  // the one code point whose lowercase is two: LATIN CAPITAL LETTER I WITH DOT ABOVE
    out.push_back(U'i');
    out.push_back(0x307);
    return;
  }
  auto it = std::upper_bound(std::begin(k_lower_runs), std::end(k_lower_runs), c,
                             [](char32_t v, const LowerRun& r) { return v < r.first; });
  if (it != std::begin(k_lower_runs)) {
    --it;
    if (c <= it->last && (c - it->first) % static_cast<char32_t>(it->stride) == 0) {
      out.push_back(static_cast<char32_t>(static_cast<int64_t>(c) + it->delta));
      return;
    }
  }
  out.push_back(c);
}

U32 utf8_decode(std::string_view s) {
  U32 out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      out.push_back(b);
      ++i;
      continue;
    }
    size_t n = (b >> 5) == 6 ? 1 : (b >> 4) == 14 ? 2 : (b >> 3) == 30 ? 3 : 0;
    char32_t c = n == 1 ? (b & 0x1Fu) : n == 2 ? (b & 0x0Fu) : (b & 0x07u);
    bool ok = n > 0 && i + n < s.size();  // the n continuation bytes exist
    for (size_t k = 1; ok && k <= n; ++k) {
      auto cb = static_cast<unsigned char>(s[i + k]);
      ok = (cb & 0xC0) == 0x80;
      c = (c << 6) | (cb & 0x3Fu);
    }
    if (!ok) {
      out.push_back(0xFFFD);  // one replacement per bad lead byte, then resync on the next byte
      ++i;
      continue;
    }
    out.push_back(c);
    i += n + 1;
  }
  return out;
}

std::string utf8_encode(const U32& s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) {
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else if (c < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else if (c < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (c >> 12)));
      out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (c >> 18)));
      out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
  return out;
}

// Python's str.split() with no argument: runs of Unicode whitespace separate, no empty pieces.
std::vector<U32> split_ws(const U32& s) {
  std::vector<U32> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && is_space(s[i])) ++i;
    size_t j = i;
    while (j < s.size() && !is_space(s[j])) ++j;
    if (j > i) out.emplace_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

bool is_ascii_punct(char32_t c) {  // Python's string.punctuation
  static constexpr std::u32string_view p = U"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
  return p.find(c) != std::u32string_view::npos;
}

// Python's str.lower() of a whole string: per code point, except that a capital sigma becomes the final form
// when it ends a word (a cased letter before it and none after it, case-ignorable characters skipped both ways).
U32 python_lower(const U32& s) {
  auto cased = [](char32_t c) { return in_ranges(k_sigma_cased_ranges, c); };
  auto ignorable = [](char32_t c) { return in_ranges(k_case_ignorable_ranges, c); };
  U32 out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != 0x3A3) {
      append_lower(out, s[i]);
      continue;
    }
    size_t j = i;
    while (j > 0 && ignorable(s[j - 1])) --j;
    bool final_sigma = j > 0 && cased(s[j - 1]);
    if (final_sigma) {
      size_t k = i + 1;
      while (k < s.size() && ignorable(s[k])) ++k;
      final_sigma = k == s.size() || !cased(s[k]);
    }
    out.push_back(final_sigma ? 0x3C2 : 0x3C3);
  }
  return out;
}

U32 normalize(std::string_view s) {
  U32 low = python_lower(utf8_decode(s));
  U32 nopunct;
  for (char32_t c : low)
    if (!is_ascii_punct(c)) nopunct.push_back(c);
  // re.sub(r"\b(a|an|the)\b", " ", text): a whole word a/an/the (word = Unicode \w run) becomes a space.
  U32 noart;
  size_t i = 0;
  while (i < nopunct.size()) {
    bool boundary_before = i == 0 || !is_word(nopunct[i - 1]);
    size_t matched = 0;
    if (boundary_before) {
      for (std::u32string_view art : {U"a", U"an", U"the"}) {
        if (nopunct.compare(i, art.size(), art) == 0 &&
            (i + art.size() == nopunct.size() || !is_word(nopunct[i + art.size()]))) {
          matched = art.size();
          break;
        }
      }
    }
    if (matched) {
      noart.push_back(U' ');
      i += matched;
    } else {
      noart.push_back(nopunct[i++]);
    }
  }
  U32 out;
  for (const U32& w : split_ws(noart)) {
    if (!out.empty()) out.push_back(U' ');
    out += w;
  }
  return out;
}

// LongBench's f1_score over token lists: multiset intersection.
double token_f1(const std::vector<U32>& pred, const std::vector<U32>& gold) {
  std::map<U32, int> counts;
  for (const U32& t : gold) ++counts[t];
  int same = 0;
  for (const U32& t : pred) {
    auto it = counts.find(t);
    if (it != counts.end() && it->second > 0) {
      --it->second;
      ++same;
    }
  }
  if (same == 0) return 0.0;
  double precision = 1.0 * same / static_cast<double>(pred.size());
  double recall = 1.0 * same / static_cast<double>(gold.size());
  return (2 * precision * recall) / (precision + recall);
}

// ---- ROUGE-L as the `rouge` package computes it (rouge_l_summary_level, exclusive=True) --------------------------
// Sentences are the non-empty pieces of text.split("."), each whitespace-normalised and split on " " (so an
// all-space piece is the one word ""). Word counts and the LCS union are SETS of words, not multisets.
std::vector<std::vector<U32>> rouge_sentences(const U32& text) {
  std::vector<std::vector<U32>> out;
  size_t start = 0;
  for (size_t i = 0; i <= text.size(); ++i) {
    if (i < text.size() && text[i] != U'.') continue;
    if (i > start) {
      std::vector<U32> words = split_ws(text.substr(start, i - start));
      if (words.empty()) words.emplace_back();
      out.push_back(std::move(words));
    }
    start = i + 1;
  }
  return out;
}

// The words of one LCS of x and y, reconstructed with the package's tie-break (diagonal on equal words, else up when
// the upper cell is strictly larger, else left); which LCS is picked matters because words are then pooled as a set.
void lcs_words(const std::vector<U32>& x, const std::vector<U32>& y, std::set<U32>& into) {
  size_t n = x.size(), m = y.size();
  std::vector<int> t((n + 1) * (m + 1), 0);
  auto at = [&](size_t i, size_t j) -> int& { return t[i * (m + 1) + j]; };
  for (size_t i = 1; i <= n; ++i)
    for (size_t j = 1; j <= m; ++j)
      at(i, j) = x[i - 1] == y[j - 1] ? at(i - 1, j - 1) + 1 : std::max(at(i - 1, j), at(i, j - 1));
  size_t i = n, j = m;
  while (i > 0 && j > 0) {
    if (x[i - 1] == y[j - 1]) {
      into.insert(x[i - 1]);
      --i;
      --j;
    } else if (at(i - 1, j) > at(i, j - 1)) {
      --i;
    } else {
      --j;
    }
  }
}

// ---- fuzzywuzzy's ratio ------------------------------------------------------------------------------------------
// difflib.SequenceMatcher(None, a, b).ratio() with autojunk: total size of the matching blocks found by recursive
// longest-match, where b's "popular" elements (more than 1% + 1 occurrences once len(b) >= 200) never start a match.
size_t difflib_matches(const U32& a, const U32& b) {
  std::unordered_map<char32_t, std::vector<int>> b2j;
  for (size_t j = 0; j < b.size(); ++j) b2j[b[j]].push_back(static_cast<int>(j));
  if (b.size() >= 200) {
    size_t ntest = b.size() / 100 + 1;
    for (auto it = b2j.begin(); it != b2j.end();) it = it->second.size() > ntest ? b2j.erase(it) : std::next(it);
  }
  struct Box {
    int alo, ahi, blo, bhi;
  };
  std::vector<Box> queue{{0, static_cast<int>(a.size()), 0, static_cast<int>(b.size())}};
  size_t total = 0;
  std::unordered_map<int, int> j2len, next;
  while (!queue.empty()) {
    Box q = queue.back();
    queue.pop_back();
    int besti = q.alo, bestj = q.blo, bestsize = 0;
    j2len.clear();
    for (int i = q.alo; i < q.ahi; ++i) {
      next.clear();
      auto found = b2j.find(a[static_cast<size_t>(i)]);
      if (found != b2j.end()) {
        for (int j : found->second) {
          if (j < q.blo) continue;
          if (j >= q.bhi) break;
          auto prev = j2len.find(j - 1);
          int k = next[j] = (prev == j2len.end() ? 0 : prev->second) + 1;
          if (k > bestsize) {
            besti = i - k + 1;
            bestj = j - k + 1;
            bestsize = k;
          }
        }
      }
      std::swap(j2len, next);
    }
    // Extend by equal elements on both ends (popular elements are not in b2j but may extend a match).
    while (besti > q.alo && bestj > q.blo && a[static_cast<size_t>(besti - 1)] == b[static_cast<size_t>(bestj - 1)]) {
      --besti;
      --bestj;
      ++bestsize;
    }
    while (besti + bestsize < q.ahi && bestj + bestsize < q.bhi &&
           a[static_cast<size_t>(besti + bestsize)] == b[static_cast<size_t>(bestj + bestsize)])
      ++bestsize;
    if (bestsize == 0) continue;
    total += static_cast<size_t>(bestsize);
    if (q.alo < besti && q.blo < bestj) queue.push_back({q.alo, besti, q.blo, bestj});
    if (besti + bestsize < q.ahi && bestj + bestsize < q.bhi)
      queue.push_back({besti + bestsize, q.ahi, bestj + bestsize, q.bhi});
  }
  return total;
}

size_t lcs_length(const U32& a, const U32& b) {
  std::vector<size_t> prev(b.size() + 1, 0), cur(b.size() + 1, 0);
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// The numbers (runs of Unicode decimal digits, Python's \d+) in a string.
std::vector<U32> digit_runs(const U32& s) {
  std::vector<U32> out;
  size_t i = 0;
  while (i < s.size()) {
    if (!is_decimal(s[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < s.size() && is_decimal(s[j])) ++j;
    out.emplace_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

// Fraction of the numbers in pred that equal target (0 when pred has none): count_score / retrieval_score.
double number_hit_rate(std::string_view pred, const U32& target) {
  std::vector<U32> numbers = digit_runs(utf8_decode(pred));
  if (numbers.empty()) return 0.0;
  size_t right = static_cast<size_t>(std::count(numbers.begin(), numbers.end(), target));
  return static_cast<double>(right) / static_cast<double>(numbers.size());
}

// re.findall(prefix + r"(\d+)", answer)[0]
U32 paragraph_id(std::string_view answer, std::u32string_view prefix, const char* metric) {
  U32 a = utf8_decode(answer);
  for (size_t i = 0; i + prefix.size() < a.size(); ++i) {
    if (a.compare(i, prefix.size(), prefix) != 0 || !is_decimal(a[i + prefix.size()])) continue;
    size_t j = i + prefix.size();
    while (j < a.size() && is_decimal(a[j])) ++j;
    return a.substr(i + prefix.size(), j - i - prefix.size());
  }
  fail(metric, ": the reference answer \"", answer, "\" names no paragraph (expected \"", utf8_encode(U32(prefix)),
       "N\"); LongBench's ", metric, " needs one in every answer");
}

}  // namespace

const char* metric_name(Metric m) {
  switch (m) {
    case Metric::qa_f1: return "qa_f1";
    case Metric::rouge_l: return "rouge_l";
    case Metric::classification: return "classification";
    case Metric::retrieval: return "retrieval";
    case Metric::retrieval_zh: return "retrieval_zh";
    case Metric::count: return "count";
    case Metric::code_sim: return "code_sim";
    case Metric::qa_f1_zh: return "qa_f1_zh";
    case Metric::rouge_zh: return "rouge_zh";
  }
  return "?";
}

std::string metric_normalize_answer(std::string_view s) { return utf8_encode(normalize(s)); }

double metric_qa_f1(std::string_view pred, std::string_view answer) {
  return token_f1(split_ws(normalize(pred)), split_ws(normalize(answer)));
}

double metric_rouge_l(std::string_view pred, std::string_view answer) {
  auto hyp = rouge_sentences(utf8_decode(pred));
  auto ref = rouge_sentences(utf8_decode(answer));
  if (hyp.empty() || ref.empty()) return 0.0;  // the package raises ValueError; LongBench's rouge_score returns 0
  std::set<U32> ref_words, hyp_words, lcs_union;
  for (const auto& s : ref) ref_words.insert(s.begin(), s.end());
  for (const auto& s : hyp) hyp_words.insert(s.begin(), s.end());
  for (const auto& r : ref)
    for (const auto& h : hyp) lcs_words(r, h, lcs_union);
  double llcs = static_cast<double>(lcs_union.size());
  double r_lcs = llcs / static_cast<double>(ref_words.size());
  double p_lcs = llcs / static_cast<double>(hyp_words.size());
  return 2.0 * ((p_lcs * r_lcs) / (p_lcs + r_lcs + 1e-8));
}

double metric_classification(std::string_view pred, std::string_view answer,
                             const std::vector<std::string>& all_classes) {
  std::vector<std::string_view> matches;
  for (const std::string& c : all_classes)
    if (pred.find(c) != std::string_view::npos) matches.push_back(c);
  // LongBench removes from the list while iterating over it, which skips the element after each removal; the
  // scores depend on that, so the same walk is done here: an index that advances past the removed slot.
  for (size_t idx = 0; idx < matches.size();) {
    std::string_view term = matches[idx++];
    if (answer.find(term) != std::string_view::npos && term != answer) {
      matches.erase(std::find(matches.begin(), matches.end(), term));  // list.remove: first equal element
    }
  }
  if (std::find(matches.begin(), matches.end(), answer) == matches.end()) return 0.0;
  return 1.0 / static_cast<double>(matches.size());
}

double metric_retrieval(std::string_view pred, std::string_view answer) {
  return number_hit_rate(pred, paragraph_id(answer, U"Paragraph ", "retrieval"));
}

double metric_retrieval_zh(std::string_view pred, std::string_view answer) {
  return number_hit_rate(pred, paragraph_id(answer, U"\u6BB5\u843D", "retrieval_zh"));
}

double metric_count(std::string_view pred, std::string_view answer) {
  return number_hit_rate(pred, utf8_decode(answer));
}

int metric_fuzz_ratio(std::string_view a, std::string_view b, FuzzMatcher m) {
  if (a == b) return 100;
  if (a.empty() || b.empty()) return 0;
  U32 ua = utf8_decode(a), ub = utf8_decode(b);
  double lensum = static_cast<double>(ua.size() + ub.size());
  double r;
  if (m == FuzzMatcher::difflib) {
    r = 2.0 * static_cast<double>(difflib_matches(ua, ub)) / lensum;
  } else {
    // python-Levenshtein (rapidfuzz) ratio: 1 - indel_distance / (len(a) + len(b)).
    double indel = lensum - 2.0 * static_cast<double>(lcs_length(ua, ub));
    r = 1.0 - indel / lensum;
  }
  return static_cast<int>(std::nearbyint(100 * r));  // Python's round(): half to even (default rounding mode)
}

double metric_code_sim(std::string_view pred, std::string_view answer, FuzzMatcher m) {
  size_t start = pred.find_first_not_of('\n');
  std::string_view rest = start == std::string_view::npos ? std::string_view() : pred.substr(start);
  std::string_view line;
  size_t pos = 0;
  while (true) {
    size_t nl = rest.find('\n', pos);
    std::string_view cand = rest.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    if (cand.find('`') == std::string_view::npos && cand.find('#') == std::string_view::npos &&
        cand.find("//") == std::string_view::npos) {
      line = cand;
      break;
    }
    if (nl == std::string_view::npos) break;
    pos = nl + 1;
  }
  return metric_fuzz_ratio(line, answer, m) / 100.0;
}

double metric_score(Metric m, std::string_view pred, std::string_view answer,
                    const std::vector<std::string>& all_classes, FuzzMatcher fm) {
  switch (m) {
    case Metric::qa_f1: return metric_qa_f1(pred, answer);
    case Metric::rouge_l: return metric_rouge_l(pred, answer);
    case Metric::classification: return metric_classification(pred, answer, all_classes);
    case Metric::retrieval: return metric_retrieval(pred, answer);
    case Metric::retrieval_zh: return metric_retrieval_zh(pred, answer);
    case Metric::count: return metric_count(pred, answer);
    case Metric::code_sim: return metric_code_sim(pred, answer, fm);
    case Metric::qa_f1_zh:
    case Metric::rouge_zh:
      fail("metric ", metric_name(m), " is not implemented: LongBench segments Chinese text with jieba, which this "
           "project does not carry; supported: qa_f1, rouge_l, classification, retrieval, retrieval_zh, count, "
           "code_sim");
  }
  fail("metric: unknown metric id ", static_cast<int>(m));
}

}  // namespace llm
