// The long-context suite generator (see suite.h). Randomness is a local splitmix64 stream, not <random>'s
// distributions, whose outputs differ between standard libraries: a seed gives the same file everywhere.
#include "eval/suite.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "loader/error.h"

namespace llm {
namespace {

struct Rng {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  size_t below(size_t n) { return static_cast<size_t>(next() % n); }  // bias < n / 2^64: irrelevant here
};

uint64_t hash_str(std::string_view s) {  // FNV-1a
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ull;
  return h;
}

Rng record_rng(uint64_t seed, const std::string& id) {
  Rng r{seed ^ hash_str(id)};
  r.next();
  return r;
}

std::string number(Rng& rng, int digits) {  // a number with exactly `digits` digits, no leading zero
  std::string s(1, static_cast<char>('1' + rng.below(9)));
  for (int i = 1; i < digits; ++i) s.push_back(static_cast<char>('0' + rng.below(10)));
  return s;
}

// Needle keys: adjective-noun pairs, unlikely to occur in license text, distinct within a record.
constexpr const char* k_adjectives[] = {"amber", "brisk", "calm", "dusty", "eager", "faint", "gentle", "hollow",
                                        "icy", "jolly", "keen", "lucky", "misty", "noble", "olive", "proud",
                                        "quiet", "rusty", "silent", "tidy", "urban", "vivid", "windy", "young"};
constexpr const char* k_nouns[] = {"falcon", "harbor", "lantern", "meadow", "orchard", "pebble", "quarry", "river",
                                   "saddle", "thistle", "valley", "walrus", "beacon", "canyon", "dolphin", "ember",
                                   "glacier", "hazel", "island", "juniper", "kettle", "lagoon", "maple", "nutmeg"};

std::string needle_key(Rng& rng) {
  constexpr size_t na = sizeof(k_adjectives) / sizeof(k_adjectives[0]);
  constexpr size_t nn = sizeof(k_nouns) / sizeof(k_nouns[0]);
  return std::string(k_adjectives[rng.below(na)]) + "-" + k_nouns[rng.below(nn)];
}

// The passkey task's classic filler: five short sentences, repeated.
constexpr const char* k_filler[] = {"The grass is green. ", "The sky is blue. ", "The sun is yellow. ",
                                    "Here we go. ", "There and back again. "};

// The filler's short words and many periods take more tokens per character than prose: measured with Llama-3's
// tokenizer, 3.7 characters per token against 5.0 for the license texts. Passkey contexts are cut 10% shorter so
// that at 4 characters per token neither kind overshoots the requested length.
constexpr double k_filler_density = 0.9;

size_t target_chars(const SuiteOptions& o, int length, double density) {
  return static_cast<size_t>(static_cast<double>(length) * o.chars_per_token * density);
}

size_t total_chars(const std::vector<std::string>& s) {
  size_t n = 0;
  for (const auto& x : s) n += x.size();
  return n;
}

// Consecutive sentences of the concatenated documents, starting at sentence `start` and wrapping around, until
// `chars` characters are reached.
std::vector<std::string> take_sentences(const std::vector<std::string>& all, size_t start, size_t chars) {
  std::vector<std::string> out;
  size_t n = 0;
  for (size_t i = start; n < chars; ++i) {
    out.push_back(all[i % all.size()]);
    n += out.back().size();
  }
  return out;
}

// Insert `needle` at the sentence boundary closest to depth_pct percent of the haystack's characters.
void insert_at_depth(std::vector<std::string>& hay, const std::string& needle, double depth_pct) {
  double target = depth_pct / 100.0 * static_cast<double>(total_chars(hay));
  size_t best = 0, pos = 0;
  double best_err = target;
  for (size_t b = 0; b <= hay.size(); ++b) {
    double err = std::abs(static_cast<double>(pos) - target);
    if (err < best_err) {
      best_err = err;
      best = b;
    }
    if (b < hay.size()) pos += hay[b].size();
  }
  hay.insert(hay.begin() + static_cast<std::ptrdiff_t>(best), needle);
}

std::string join_context(const std::vector<std::string>& parts) {
  std::string s;
  for (const auto& p : parts) s += p;
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

int64_t word_count(const std::string& s) {  // LongBench's "length" for English records: words of the context
  std::istringstream in(s);
  std::string w;
  int64_t n = 0;
  while (in >> w) ++n;
  return n;
}

std::string id_of(const std::string& task, int length, int depth, int index) {
  return task + "-L" + std::to_string(length) + (depth >= 0 ? "-D" + std::to_string(depth) : "") + "-" +
         std::to_string(index);
}

LongBenchRecord make_record(const std::string& task, const std::string& id, std::string context, std::string input,
                            std::vector<std::string> answers) {
  LongBenchRecord r;
  r.dataset = task;
  r.id = id;
  r.length = word_count(context);
  r.context = std::move(context);
  r.input = std::move(input);
  r.answers = std::move(answers);
  return r;
}

LongBenchRecord passkey(const SuiteOptions& o, int length, int depth, int index) {
  std::string id = id_of("passkey", length, depth, index);
  Rng rng = record_rng(o.seed, id);
  std::string key = number(rng, 5);
  std::string needle = "The pass key is " + key + ". Remember it. " + key + " is the pass key. ";
  size_t want = target_chars(o, length, k_filler_density);
  std::vector<std::string> hay;
  for (size_t i = 0, n = 0; n + needle.size() < want; ++i) {
    hay.emplace_back(k_filler[i % 5]);
    n += hay.back().size();
  }
  insert_at_depth(hay, needle, depth);
  return make_record("passkey", id, join_context(hay), "What is the pass key? Answer with the number only.", {key});
}

std::string magic_needle(const std::string& key, const std::string& value) {
  return "One of the special magic numbers for " + key + " is: " + value + ". ";
}

LongBenchRecord niah(const SuiteOptions& o, const std::vector<std::string>& sentences, int length, int depth,
                     int index) {
  std::string id = id_of("niah", length, depth, index);
  Rng rng = record_rng(o.seed, id);
  std::string key = needle_key(rng), value = number(rng, 7);
  std::string needle = magic_needle(key, value);
  size_t want = target_chars(o, length, 1.0);
  std::vector<std::string> hay =
      take_sentences(sentences, rng.below(sentences.size()), want > needle.size() ? want - needle.size() : 1);
  insert_at_depth(hay, needle, depth);
  return make_record("niah", id, join_context(hay),
                     "What is the special magic number for " + key + " mentioned in the text? Answer with the number "
                     "only.",
                     {value});
}

LongBenchRecord multi_needle(const SuiteOptions& o, const std::vector<std::string>& sentences, int length, int index) {
  std::string id = id_of("multi_needle", length, -1, index);
  Rng rng = record_rng(o.seed, id);
  std::vector<std::string> keys, values, needles;
  size_t needle_chars = 0;
  while (static_cast<int>(keys.size()) < o.needles) {
    std::string k = needle_key(rng);
    if (std::find(keys.begin(), keys.end(), k) != keys.end()) continue;
    keys.push_back(k);
    values.push_back(number(rng, 7));
    needles.push_back(magic_needle(keys.back(), values.back()));
    needle_chars += needles.back().size();
  }
  size_t want = target_chars(o, length, 1.0);
  std::vector<std::string> hay =
      take_sentences(sentences, rng.below(sentences.size()), want > needle_chars ? want - needle_chars : 1);
  // Needle i goes into the i-th of `needles` equal slices of the text, at a random depth inside it, so the order
  // of the answer is the order in the text.
  std::vector<double> depths;
  for (int i = 0; i < o.needles; ++i)
    depths.push_back((i + static_cast<double>(rng.below(1000)) / 1000.0) * 100.0 / o.needles);
  for (int i = o.needles - 1; i >= 0; --i) {  // back to front: each lands before the needles already placed
    insert_at_depth(hay, needles[static_cast<size_t>(i)], depths[static_cast<size_t>(i)]);
  }
  std::string list;
  for (size_t i = 0; i < keys.size(); ++i)
    list += (i == 0 ? "" : i + 1 == keys.size() ? " and " : ", ") + keys[i];
  std::string answer;
  for (const auto& v : values) answer += (answer.empty() ? "" : " ") + v;
  return make_record("multi_needle", id, join_context(hay),
                     "What are the special magic numbers for " + list + " mentioned in the text? Answer with the " +
                         std::to_string(keys.size()) + " numbers only, in this order, separated by spaces.",
                     {answer});
}

size_t count_occurrences(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) ++n;
  return n;
}

std::string trimmed(const std::string& s) {
  size_t e = s.find_last_not_of(' ');
  return e == std::string::npos ? std::string() : s.substr(0, e + 1);
}

LongBenchRecord doc_qa(const SuiteOptions& o, const std::vector<SuiteDocument>& docs,
                       const std::vector<std::vector<std::string>>& doc_sentences, int length, int index) {
  std::string id = id_of("doc_qa", length, -1, index);
  Rng rng = record_rng(o.seed, id);
  size_t want = target_chars(o, length, 1.0);
  // A window of consecutive sentences, starting inside one document (and running on into the next ones when the
  // length asks for more text than the document has).
  std::vector<std::string> all;
  size_t d0 = rng.below(docs.size());
  for (size_t k = 0; k < docs.size(); ++k) {
    const auto& s = doc_sentences[(d0 + k) % docs.size()];
    all.insert(all.end(), s.begin(), s.end());
  }
  const auto& first = doc_sentences[d0];
  // A short window may hold no usable pair: then another window of the same document is drawn.
  for (int attempt = 0; attempt < 64; ++attempt) {
    std::vector<std::string> hay = take_sentences(all, rng.below(first.size()), want);
    std::string context = join_context(hay);
    // Candidate questions: a sentence of ordinary length, found exactly once in the context, followed by a sentence
    // that is itself a plain sentence (the answer). Tried from a random start so the depth varies.
    size_t start = rng.below(hay.size());
    for (size_t t = 0; t < hay.size(); ++t) {
      size_t i = (start + t) % hay.size();
      if (i + 1 >= hay.size()) continue;
      std::string q = trimmed(hay[i]), a = trimmed(hay[i + 1]);
      if (q.size() < 40 || q.size() > 250 || a.size() < 20 || a.size() > suite_max_sentence_chars) continue;
      if (q.find('"') != std::string::npos) continue;
      // Whole sentences only (not the pieces of an over-long sentence, not list items such as "d) ..."): a capital
      // first letter and closing punctuation, for the question and the answer alike.
      auto whole = [](const std::string& s) {
        char e = s.back();
        return s.front() >= 'A' && s.front() <= 'Z' && (e == '.' || e == '?' || e == '!');
      };
      if (!whole(q) || !whole(a)) continue;
      if (count_occurrences(context, q) != 1 || count_occurrences(context, a) != 1) continue;
      return make_record("doc_qa", id, context,
                         "In the document, which sentence comes right after the sentence \"" + q +
                             "\"? Quote that sentence exactly.",
                         {a});
    }
  }
  fail("make_longctx_suite: no usable question for ", id, " in ", docs[d0].name,
       "; the haystack text is too short or too repetitive for this length: give more --haystack text");
}

}  // namespace

std::vector<SuiteDocument> suite_load_haystack(const std::vector<std::string>& paths) {
  if (paths.empty()) fail("haystack: no files given; pass --haystack FILE (e.g. tests/data/eval/haystack/GPL-3)");
  std::vector<SuiteDocument> out;
  for (const auto& p : paths) {
    std::ifstream in(p, std::ios::binary);
    if (!in) fail("haystack ", p, ": cannot open; check the path");
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text, raw = ss.str();
    for (char c : raw) {
      bool space = c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
      if (space) {
        if (!text.empty() && text.back() != ' ') text.push_back(' ');
      } else {
        text.push_back(c);
      }
    }
    while (!text.empty() && text.back() == ' ') text.pop_back();
    if (text.size() < 200) fail("haystack ", p, ": only ", text.size(), " characters of text; give a real document");
    std::string name = p.substr(p.find_last_of('/') == std::string::npos ? 0 : p.find_last_of('/') + 1);
    out.push_back({name, std::move(text)});
  }
  return out;
}

std::vector<std::string> suite_sentences(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  bool last = false;
  auto flush = [&] {
    while (cur.size() > suite_max_sentence_chars) {
      size_t cut = cur.rfind(' ', suite_max_sentence_chars - 1);
      if (cut == std::string::npos || cut == 0) cut = suite_max_sentence_chars - 1;
      out.push_back(cur.substr(0, cut + 1));
      cur.erase(0, cut + 1);
    }
    if (cur.empty()) return;
    if (cur.back() != ' ') cur.push_back(' ');
    // Very short pieces (section numbers "1.", "4.") stay with the text they head: they start the next piece.
    if (cur.size() < 12 && !last) return;
    if (cur.size() < 12 && !out.empty() && out.back().size() + cur.size() <= suite_max_sentence_chars)
      out.back() += cur;
    else
      out.push_back(cur);
    cur.clear();
  };
  for (size_t i = 0; i < text.size(); ++i) {
    cur.push_back(text[i]);
    char c = text[i];
    if ((c == '.' || c == '?' || c == '!') && (i + 1 == text.size() || text[i + 1] == ' ')) {
      if (i + 1 < text.size()) cur.push_back(' ');
      ++i;
      flush();
    }
  }
  last = true;
  flush();
  return out;
}

std::vector<LongBenchRecord> suite_generate(const std::vector<SuiteDocument>& docs, const SuiteOptions& o) {
  if (docs.empty()) fail("make_longctx_suite: no haystack documents");
  if (!(o.chars_per_token >= 1.0)) fail("make_longctx_suite: chars_per_token must be >= 1, got ", o.chars_per_token);
  if (o.needles < 1 || o.needles > 64) fail("make_longctx_suite: --needles must be in 1..64, got ", o.needles);
  if (o.per_cell < 1) fail("make_longctx_suite: --per-cell must be >= 1, got ", o.per_cell);
  for (int l : o.lengths)
    if (l < 64) fail("make_longctx_suite: length ", l, " is too short; use >= 64 (approximate tokens)");
  for (int d : o.depths)
    if (d < 0 || d > 100) fail("make_longctx_suite: depth ", d, " is not a percentage in 0..100");
  std::vector<std::vector<std::string>> doc_sentences;
  std::vector<std::string> all;
  for (const auto& d : docs) {
    doc_sentences.push_back(suite_sentences(d.text));
    all.insert(all.end(), doc_sentences.back().begin(), doc_sentences.back().end());
  }
  std::vector<LongBenchRecord> out;
  for (const std::string& task : o.tasks) {
    if (task != "passkey" && task != "niah" && task != "multi_needle" && task != "doc_qa")
      fail("make_longctx_suite: unknown task \"", task, "\"; tasks: passkey, niah, multi_needle, doc_qa");
    for (int length : o.lengths) {
      if (task == "passkey" || task == "niah") {
        for (int depth : o.depths)
          for (int k = 0; k < o.per_cell; ++k)
            out.push_back(task == "passkey" ? passkey(o, length, depth, k) : niah(o, all, length, depth, k));
      } else {
        for (int k = 0; k < o.per_cell; ++k)
          out.push_back(task == "multi_needle" ? multi_needle(o, all, length, k)
                                               : doc_qa(o, docs, doc_sentences, length, k));
      }
    }
  }
  return out;
}

}  // namespace llm
