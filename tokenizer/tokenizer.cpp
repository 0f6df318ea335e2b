// Encoding and decoding. One BPE engine serves both kinds: symbols are token ids (-1 for a character that has
// no token), adjacent pairs are looked up in `merges` (pair -> rank, merged id) and the lowest rank is merged
// first, leftmost on ties; a min-heap over pair positions with a linked list of live symbols makes a word of n
// symbols cost O(n log n). Byte-level BPE starts from the byte tokens of each pre-tokenized word; SentencePiece
// starts from the characters of the whole '▁'-normalized text, with ranks from scores, and writes each symbol
// left without a token as its bytes <0xNN> (byte fallback).
#include <algorithm>
#include <cstring>
#include <queue>

#include "loader/error.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_internal.h"
#include "tokenizer/unicode.h"

namespace llm {

static inline uint64_t hash_bytes(const char* p, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    h = (h ^ v) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
    p += 8;
    n -= 8;
  }
  uint64_t v = 0;
  std::memcpy(&v, p, n);
  h ^= v;  // splitmix64's finalizer: every input bit reaches the low bits used for the slot
  h ^= h >> 30;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 27;
  h *= 0x94D049BB133111EBull;
  return h ^ (h >> 31);
}

static inline uint64_t head_of(std::string_view k) {
  uint64_t v = 0;
  std::memcpy(&v, k.data(), std::min<size_t>(8, k.size()));
  return v;
}

static inline uint32_t tag_len_of(uint64_t h, size_t len) { return (uint32_t)((h >> 48) << 16) | (uint32_t)len; }

void StringTable::insert(std::string_view k, int32_t v) {
  if (k.size() >= 65535) return;
  if (key_begin.empty()) key_begin.push_back(0);
  if ((values.size() + 1) * 2 > slots.size()) {  // grow: re-place every entry
    size_t cap = std::max<size_t>(16, slots.size() * 2);
    slots.assign(cap, Slot{0, 0, 0});
    for (size_t e = 0; e < values.size(); ++e) {
      std::string_view ke(keys.data() + key_begin[e], key_begin[e + 1] - key_begin[e]);
      uint64_t h = hash_bytes(ke.data(), ke.size());
      size_t i = h & (cap - 1);
      while (slots[i].entry) i = (i + 1) & (cap - 1);
      slots[i] = Slot{head_of(ke), tag_len_of(h, ke.size()), (int32_t)e + 1};
    }
  }
  keys.append(k);
  values.push_back(v);
  key_begin.push_back((uint32_t)keys.size());
  uint64_t h = hash_bytes(k.data(), k.size());
  size_t i = h & (slots.size() - 1);
  while (slots[i].entry) i = (i + 1) & (slots.size() - 1);
  slots[i] = Slot{head_of(k), tag_len_of(h, k.size()), (int32_t)values.size()};
}

void StringTable::build(const std::vector<std::pair<std::string, int32_t>>& entries) {
  clear();
  for (const auto& [k, v] : entries)
    if (find(k) < 0) insert(k, v);  // first one wins
}

int32_t StringTable::find(std::string_view k) const {
  if (slots.empty() || k.size() >= 65535) return -1;
  uint64_t h = hash_bytes(k.data(), k.size()), head = head_of(k);
  uint32_t tl = tag_len_of(h, k.size());
  size_t mask = slots.size() - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    const Slot& s = slots[i];
    if (!s.entry) return -1;
    if (s.tag_len != tl || s.head != head) continue;
    if (k.size() <= 8) return values[s.entry - 1];
    size_t b = key_begin[s.entry - 1];
    if (std::memcmp(keys.data() + b + 8, k.data() + 8, k.size() - 8) == 0) return values[s.entry - 1];
  }
}

namespace {

struct Sym {
  int32_t id;
  int32_t prev, next;
  uint32_t begin, end;  // bytes of the word this symbol covers
};

struct PairEntry {
  uint32_t rank;
  int32_t pos;
  int32_t left_id, right_id, merged;
  bool operator>(const PairEntry& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

struct BpeScratch {
  std::vector<Sym> syms;
  std::vector<PairEntry> heap;
};

inline bool lookup_merge(const Tokenizer& t, int32_t a, int32_t b, uint32_t* rank, int32_t* merged) {
  if (a < 0 || b < 0) return false;
  auto it = t.merges.find(((uint64_t)(uint32_t)a << 32) | (uint32_t)b);
  if (it == t.merges.end()) return false;
  *rank = (uint32_t)(it->second >> 32);
  *merged = (int32_t)(uint32_t)it->second;
  return true;
}

// Merge sc.syms (already filled with the initial symbols) in place. Live symbols stay linked by prev/next.
void bpe_merge(const Tokenizer& t, BpeScratch& sc) {
  auto& syms = sc.syms;
  auto& heap = sc.heap;
  heap.clear();
  auto greater = std::greater<PairEntry>();
  auto push_pair = [&](int32_t pos) {
    int32_t nx = syms[pos].next;
    if (nx < 0) return;
    uint32_t rank;
    int32_t merged;
    if (lookup_merge(t, syms[pos].id, syms[nx].id, &rank, &merged)) {
      heap.push_back({rank, pos, syms[pos].id, syms[nx].id, merged});
      std::push_heap(heap.begin(), heap.end(), greater);
    }
  };
  for (int32_t i = 0; i + 1 < (int32_t)syms.size(); ++i) push_pair(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), greater);
    PairEntry e = heap.back();
    heap.pop_back();
    Sym& l = syms[e.pos];
    // stale entry: one side was merged away or changed since this pair was queued
    if (l.id != e.left_id || l.next < 0 || syms[l.next].id != e.right_id) continue;
    Sym& r = syms[l.next];
    l.id = e.merged;
    l.end = r.end;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = e.pos;
    r.id = -2;  // dead
    if (l.prev >= 0) push_pair(l.prev);
    push_pair(e.pos);
  }
}

// Byte-level BPE of one word, ids appended to out.
void bpe_word_bytes(const Tokenizer& t, std::string_view word, BpeScratch& sc, std::vector<int32_t>& out) {
  auto& syms = sc.syms;
  syms.clear();
  for (size_t i = 0; i < word.size(); ++i)
    syms.push_back({t.byte_token[(unsigned char)word[i]], (int32_t)i - 1,
                    i + 1 < word.size() ? (int32_t)i + 1 : -1, (uint32_t)i, (uint32_t)i + 1});
  bpe_merge(t, sc);
  for (int32_t i = 0; i >= 0; i = syms[i].next) {
    int32_t id = syms[i].id >= 0 ? syms[i].id : t.unk_id;
    if (id < 0)
      fail("tokenizer ", t.source, ": byte 0x", std::hex, (int)(unsigned char)word[syms[i].begin],
           " has no token in this vocabulary and there is no unknown token; the text is not valid UTF-8?");
    out.push_back(id);
  }
}

// SentencePiece BPE of a normalized ('▁' for spaces) text segment.
void bpe_spm(const Tokenizer& t, std::string_view text, BpeScratch& sc, std::vector<int32_t>& out) {
  auto& syms = sc.syms;
  syms.clear();
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  for (size_t i = 0; i < text.size();) {
    int len = 1;
    utf8_decode(p + i, text.size() - i, &len);
    auto it = t.vocab.find(text.substr(i, len));
    int32_t n = (int32_t)syms.size();
    syms.push_back({it == t.vocab.end() ? -1 : it->second, n - 1, -1, (uint32_t)i, (uint32_t)(i + len)});
    if (n > 0) syms[n - 1].next = n;
    i += len;
  }
  if (syms.empty()) return;
  bpe_merge(t, sc);
  for (int32_t i = 0; i >= 0; i = syms[i].next) {
    if (syms[i].id >= 0) {
      out.push_back(syms[i].id);
      continue;
    }
    for (uint32_t b = syms[i].begin; b < syms[i].end; ++b) {
      int32_t id = t.byte_token[p[b]];
      if (id < 0) id = t.unk_id;
      if (id < 0)
        fail("tokenizer ", t.source, ": the text has a character with no token and the vocabulary has no byte "
             "fallback <0x", (int)p[b], "> and no unknown token; this tokenizer cannot encode it");
      out.push_back(id);
    }
  }
}

}  // namespace

// Word -> ids for words that needed BPE, shared by all encode calls on one Tokenizer (flat arrays, one lock).
struct TokenizerCache {
  std::mutex mu;
  StringTable words;               // word -> index into id_begin
  std::vector<uint32_t> id_begin;  // ids of entry i: ids[id_begin[i], id_begin[i+1])
  std::vector<int32_t> ids;

  bool get(std::string_view word, std::vector<int32_t>& out) {
    std::lock_guard<std::mutex> lock(mu);
    int32_t e = words.find(word);
    if (e < 0) return false;
    out.insert(out.end(), ids.begin() + id_begin[e], ids.begin() + id_begin[e + 1]);
    return true;
  }
  void put(std::string_view word, const std::vector<int32_t>& word_ids) {
    std::lock_guard<std::mutex> lock(mu);
    if (words.values.size() >= (1u << 18)) {  // bound the memory on endless input
      words.clear();
      id_begin.clear();
      ids.clear();
    }
    if (words.find(word) >= 0) return;
    if (id_begin.empty()) id_begin.push_back(0);
    words.insert(word, (int32_t)id_begin.size() - 1);
    ids.insert(ids.end(), word_ids.begin(), word_ids.end());
    id_begin.push_back((uint32_t)ids.size());
  }
};

std::shared_ptr<TokenizerCache> tokenizer_cache_new() { return std::make_shared<TokenizerCache>(); }

// Cut text at the special tokens written in it (longest match first at each position).
template <class OnText, class OnSpecial>
static void split_specials(const Tokenizer& t, std::string_view text, bool parse_special, OnText on_text,
                           OnSpecial on_special) {
  if (!parse_special) {
    on_text(text);
    return;
  }
  size_t start = 0;
  for (size_t i = 0; i < text.size();) {
    const auto& cands = t.specials_by_first[(unsigned char)text[i]];
    int32_t found = -1;
    for (int32_t id : cands) {
      const std::string& s = t.pieces[id];
      if (text.size() - i >= s.size() && std::memcmp(text.data() + i, s.data(), s.size()) == 0) {
        found = id;
        break;
      }
    }
    if (found < 0) {
      ++i;
      continue;
    }
    if (i > start) on_text(text.substr(start, i - start));
    on_special(found);
    i += t.pieces[found].size();
    start = i;
  }
  if (start < text.size()) on_text(text.substr(start));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool want_bos, bool parse_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (want_bos && add_bos && bos_id >= 0) out.push_back(bos_id);
  BpeScratch sc;
  if (kind == TokenizerKind::sentencepiece_bpe) {
    bool prev_special = true;  // the space prefix goes before the text and after every special token
    std::string norm;
    split_specials(
        *this, text, parse_special,
        [&](std::string_view seg) {
          norm.clear();
          if (add_space_prefix && prev_special) norm += "\xE2\x96\x81";
          for (char c : seg) {
            if (c == ' ') norm += "\xE2\x96\x81";
            else norm += c;
          }
          bpe_spm(*this, norm, sc, out);
          prev_special = false;
        },
        [&](int32_t id) {
          out.push_back(id);
          prev_special = true;
        });
    return out;
  }
  PretokScratch ps;
  std::vector<Span> words;
  std::vector<int32_t> ids;
  split_specials(
      *this, text, parse_special,
      [&](std::string_view whole) {
       // Pre-tokenize in chunks of ~64 KB so the scratch arrays stay in cache. A chunk ends after a '\n' that
       // is followed by an ASCII letter: no pattern's match spans that point (a newline only ends a
       // whitespace or punctuation match, and a letter run cannot start with '\n'), so the words are the same.
       for (size_t cs = 0; cs < whole.size();) {
        size_t ce = whole.size();
        if (ce - cs > (1u << 16)) {
          size_t p = cs + (1u << 16);
          while (p + 1 < whole.size() && !(whole[p] == '\n' && ((whole[p + 1] | 0x20) >= 'a' && (whole[p + 1] | 0x20) <= 'z')))
            ++p;
          ce = p + 1 < whole.size() ? p + 1 : whole.size();
        }
        std::string_view seg = whole.substr(cs, ce - cs);
        cs = ce;
        words.clear();
        pretokenize(pre, seg, ps, words);
        for (const Span& w : words) {
          std::string_view word = seg.substr(w.begin, w.end - w.begin);
          if (ignore_merges || word.size() == 1) {
            int32_t id = word_ids.find(word);
            if (id >= 0) {
              out.push_back(id);
              continue;
            }
          }
          if (cache && cache->get(word, out)) continue;
          ids.clear();
          bpe_word_bytes(*this, word, sc, ids);
          out.insert(out.end(), ids.begin(), ids.end());
          if (cache) cache->put(word, ids);
        }
       }
      },
      [&](int32_t id) { out.push_back(id); });
  return out;
}

const std::string& Tokenizer::token_piece(int32_t id) const {
  if (id < 0 || id >= (int32_t)pieces.size())
    fail("tokenizer ", source, ": token id ", id, " is out of range (vocabulary size ", pieces.size(), ")");
  return pieces[id];
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string& p = token_piece(ids[i]);
    // SentencePiece adds '▁' in front of the text; drop it again at the start (HF's Strip decoder does the same)
    if (i == 0 && kind == TokenizerKind::sentencepiece_bpe && add_space_prefix && !is_special[ids[i]] &&
        !p.empty() && p[0] == ' ')
      out.append(p, 1, std::string::npos);
    else
      out += p;
  }
  return out;
}

std::string StreamDecoder::push(int32_t id) {
  pending += tok->token_piece(id);
  // hold back the last character if its bytes are not all there yet
  size_t n = pending.size(), keep = 0;
  for (size_t k = 1; k <= 4 && k <= n; ++k) {
    unsigned char c = (unsigned char)pending[n - k];
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: look further back for the lead byte
    if (c >= 0xC0 && utf8_len(c) > (int)k) keep = k;
    break;
  }
  std::string ready = pending.substr(0, n - keep);
  pending.erase(0, n - keep);
  return ready;
}

std::string StreamDecoder::flush() {
  std::string r;
  r.swap(pending);
  return r;
}

}  // namespace llm
