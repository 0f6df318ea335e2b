// Tokenizer loaders: Hugging Face tokenizer.json (+ tokenizer_config.json) and GGUF metadata.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "loader/error.h"
#include "loader/gguf.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_internal.h"
#include "tokenizer/unicode.h"

namespace llm {

namespace {

using json = nlohmann::json;

// GPT-2's byte <-> printable character table: bytes that are printable Latin-1 map to themselves, the other
// 68 bytes to U+0100.. in order. Vocab strings of byte-level BPE are written in these characters.
struct ByteLevelMap {
  uint32_t byte_to_cp[256];
  int16_t cp_to_byte[512];
  ByteLevelMap() {
    std::fill(std::begin(cp_to_byte), std::end(cp_to_byte), (int16_t)-1);
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      byte_to_cp[b] = printable ? (uint32_t)b : next++;
      cp_to_byte[byte_to_cp[b]] = (int16_t)b;
    }
  }
};

// Byte-level vocab string -> raw bytes. Characters outside the table are kept as their UTF-8 (added tokens).
std::string byte_level_decode(const std::string& s, const ByteLevelMap& m) {
  std::string out;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (size_t i = 0; i < s.size();) {
    int len;
    uint32_t cp = utf8_decode(p + i, s.size() - i, &len);
    if (cp < 512 && m.cp_to_byte[cp] >= 0) out += (char)m.cp_to_byte[cp];
    else out.append(s, i, len);
    i += len;
  }
  return out;
}

const std::string kSpmSpace = "\xE2\x96\x81";  // '▁'

std::string spm_piece(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size();) {
    if (text.compare(i, 3, kSpmSpace) == 0) {
      out += ' ';
      i += 3;
    } else {
      out += text[i++];
    }
  }
  return out;
}

// "<0xAB>" -> 0xAB, or -1.
int parse_byte_token(const std::string& s) {
  if (s.size() != 6 || s.compare(0, 3, "<0x") != 0 || s[5] != '>') return -1;
  int v = 0;
  for (int i = 3; i < 5; ++i) {
    char c = s[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

int32_t find_special(const Tokenizer& t, const std::string& text) {
  for (int32_t i = 0; i < t.vocab_size(); ++i)
    if (t.is_special[i] && t.pieces[i] == text) return i;
  return -1;
}

// SentencePiece merges from scores: every way to write a token as two tokens is a pair, ranked by the score of
// the token it makes (higher score = earlier); equal scores share a rank so the leftmost pair goes first.
void build_spm_merges(Tokenizer& t, const std::vector<std::string>& texts) {
  std::vector<float> distinct(t.scores);
  std::sort(distinct.begin(), distinct.end(), std::greater<float>());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  for (const auto& [text, id] : t.vocab) {
    uint32_t rank = (uint32_t)(std::lower_bound(distinct.begin(), distinct.end(), t.scores[id], std::greater<float>()) -
                               distinct.begin());
    for (size_t k = (size_t)utf8_len((unsigned char)text[0]); k < text.size(); k += (size_t)utf8_len((unsigned char)text[k])) {
      auto l = t.vocab.find(std::string_view(text).substr(0, k));
      auto r = t.vocab.find(std::string_view(text).substr(k));
      if (l == t.vocab.end() || r == t.vocab.end()) continue;
      t.merges[((uint64_t)(uint32_t)l->second << 32) | (uint32_t)r->second] = ((uint64_t)rank << 32) | (uint32_t)id;
    }
  }
  (void)texts;
}

// Shared last steps: special-token index, byte tokens, the cache, eot and the chat template family.
void finish(Tokenizer& t) {
  for (auto& v : t.specials_by_first) v.clear();
  for (int32_t id = 0; id < t.vocab_size(); ++id)
    if (t.is_special[id] && !t.pieces[id].empty())
      t.specials_by_first[(unsigned char)t.pieces[id][0]].push_back(id);
  for (auto& v : t.specials_by_first)
    std::stable_sort(v.begin(), v.end(), [&](int32_t a, int32_t b) { return t.pieces[a].size() > t.pieces[b].size(); });
  if (t.kind == TokenizerKind::byte_level_bpe) {
    // Some vocabularies (StarCoder) lack bytes that never occur in valid UTF-8 (0xC0, 0xC1, 0xF5..): those
    // stay -1 and encode as the unknown token, or fail when there is none.
    int have = 0;
    for (int b = 0; b < 256; ++b) {
      auto it = t.vocab.find(std::string(1, (char)b));
      t.byte_token[b] = it == t.vocab.end() ? -1 : it->second;
      have += it != t.vocab.end();
    }
    if (have < 128)
      fail("tokenizer ", t.source, ": byte-level vocabulary has tokens for only ", have, " of the 256 bytes; "
           "the file is not a byte-level BPE vocabulary (re-download or convert it again)");
  }
  for (int32_t id : {t.bos_id, t.eos_id, t.eot_id, t.unk_id, t.pad_id})
    if (id >= t.vocab_size())
      fail("tokenizer ", t.source, ": special token id ", id, " is out of range (vocabulary size ", t.vocab_size(), ")");
  if (t.eot_id < 0)
    for (const char* s : {"<|eot_id|>", "<|im_end|>", "<|end|>"})
      if (int32_t id = find_special(t, s); id >= 0) {
        t.eot_id = id;
        break;
      }
  if (!t.chat_template_text.empty()) {
    try {
      t.chat_template = chat_template_detect(t.chat_template_text);
    } catch (const Error&) {
      t.chat_template = ChatTemplate::none;  // tokenizing still works; chat_render says what to do
    }
    // ChatML templates may add a fixed system prompt when the conversation has none (SmolLM2)
    const std::string open = "<|im_start|>system\\n", open2 = "<|im_start|>system\n";
    for (const std::string& o : {open, open2}) {
      size_t p = t.chat_template_text.find(o);
      if (p == std::string::npos) continue;
      size_t e = t.chat_template_text.find("<|im_end|>", p);
      if (e == std::string::npos) continue;
      std::string sys = t.chat_template_text.substr(p + o.size(), e - p - o.size());
      if (sys.find_first_of("{}'\"+") == std::string::npos) t.chat_default_system = sys;
    }
  }
  if (t.kind == TokenizerKind::byte_level_bpe)
    t.word_ids.build(std::vector<std::pair<std::string, int32_t>>(t.vocab.begin(), t.vocab.end()));
  t.cache = tokenizer_cache_new();
}

std::string json_token_text(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return "";
}

const std::string kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const std::string kGpt2Regex = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

PreTokenizer json_pretokenizer(const json& pt, const std::string& name) {
  auto unsupported = [&]() -> PreTokenizer {
    fail("tokenizer ", name, ": pre_tokenizer ", pt.dump().substr(0, 300),
         " is not supported; supported: the Llama-3 Split regex + ByteLevel, ByteLevel(use_regex), "
         "Digits(individual_digits) + ByteLevel(use_regex)");
  };
  auto is_bytelevel = [](const json& p, bool regex) {
    return p.is_object() && p.value("type", "") == "ByteLevel" && p.value("use_regex", true) == regex;
  };
  if (is_bytelevel(pt, true)) return PreTokenizer::gpt2;
  if (!pt.is_object() || pt.value("type", "") != "Sequence" || !pt.contains("pretokenizers")) return unsupported();
  const json& seq = pt["pretokenizers"];
  if (seq.size() == 2 && seq[0].value("type", "") == "Split" && is_bytelevel(seq[1], false)) {
    std::string re = seq[0].contains("pattern") ? seq[0]["pattern"].value("Regex", "") : "";
    if (re == kLlama3Regex) return PreTokenizer::llama3;
    if (re == kGpt2Regex) return PreTokenizer::gpt2;
  }
  if (seq.size() == 2 && seq[0].value("type", "") == "Digits" && seq[0].value("individual_digits", false) &&
      is_bytelevel(seq[1], true))
    return PreTokenizer::digits_then_gpt2;
  if (seq.size() == 1 && is_bytelevel(seq[0], true)) return PreTokenizer::gpt2;
  return unsupported();
}

json parse_json(std::string_view text, const std::string& name) {
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    fail("tokenizer ", name, ": not valid JSON (", e.what(), "); the file is damaged or truncated: re-download it");
  }
}

}  // namespace

Tokenizer tokenizer_from_json(std::string_view tokenizer_json, std::string_view config_json, const std::string& name) {
  json j = parse_json(tokenizer_json, name);
  json cfg = config_json.empty() ? json::object() : parse_json(config_json, name + " (tokenizer_config.json)");
  Tokenizer t;
  t.source = name;
  try {
    if (!j.is_object() || !j.contains("model") || !j["model"].is_object())
      fail("tokenizer ", name, ": no \"model\" object; is this a Hugging Face tokenizer.json?");
    const json& m = j["model"];
    if (m.value("type", "BPE") != "BPE")
      fail("tokenizer ", name, ": model type \"", m.value("type", ""), "\" is not supported; supported: BPE");
    if (!m.contains("vocab") || !m["vocab"].is_object() || !m.contains("merges") || !m["merges"].is_array())
      fail("tokenizer ", name, ": model needs a \"vocab\" object and a \"merges\" array");
    bool spm = m.contains("byte_fallback") && m["byte_fallback"].is_boolean() && m["byte_fallback"].get<bool>();
    t.kind = spm ? TokenizerKind::sentencepiece_bpe : TokenizerKind::byte_level_bpe;
    t.ignore_merges = m.contains("ignore_merges") && m["ignore_merges"].is_boolean() && m["ignore_merges"].get<bool>();
    // sizes: the highest id of the vocab and the added tokens
    int64_t max_id = -1;
    for (const auto& [k, v] : m["vocab"].items()) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > (1 << 24))
        fail("tokenizer ", name, ": vocab entry \"", k, "\" has id ", v.dump(), "; expected 0..16777216");
      max_id = std::max(max_id, v.get<int64_t>());
    }
    const json empty = json::array();
    const json& added = j.contains("added_tokens") && j["added_tokens"].is_array() ? j["added_tokens"] : empty;
    for (const auto& a : added) {
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") ||
          !a["content"].is_string() || a["id"].get<int64_t>() < 0 || a["id"].get<int64_t>() > (1 << 24))
        fail("tokenizer ", name, ": added_tokens entry ", a.dump().substr(0, 200), " needs an integer id and a content");
      max_id = std::max(max_id, a["id"].get<int64_t>());
    }
    if (max_id < 0) fail("tokenizer ", name, ": empty vocabulary");
    t.pieces.assign(max_id + 1, std::string());
    t.is_special.assign(max_id + 1, 0);
    t.scores.clear();
    ByteLevelMap blm;
    std::vector<std::string> raw(max_id + 1);  // vocab strings as written, for the merges
    std::fill(std::begin(t.byte_token), std::end(t.byte_token), -1);
    for (const auto& [k, v] : m["vocab"].items()) {
      int32_t id = (int32_t)v.get<int64_t>();
      raw[id] = k;
      if (spm) {
        t.pieces[id] = spm_piece(k);
        if (int b = parse_byte_token(k); b >= 0) {
          t.byte_token[b] = id;
          t.pieces[id] = std::string(1, (char)b);
          continue;
        }
        t.vocab[k] = id;
      } else {
        t.pieces[id] = byte_level_decode(k, blm);
        t.vocab[t.pieces[id]] = id;
      }
    }
    for (const auto& a : added) {
      int32_t id = (int32_t)a["id"].get<int64_t>();
      t.pieces[id] = a["content"].get<std::string>();
      t.is_special[id] = 1;  // every added token is matched in text (as HF does) when parse_special is on
      if (raw[id].empty()) raw[id] = t.pieces[id];
      else t.vocab.erase(spm ? raw[id] : byte_level_decode(raw[id], blm));
    }
    // merges: "a b" strings or ["a", "b"] pairs
    uint32_t rank = 0;
    std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> raw_ids;  // vocab strings as written
    raw_ids.reserve(m["vocab"].size());
    for (const auto& [k, v] : m["vocab"].items()) raw_ids.emplace(k, (int32_t)v.get<int64_t>());
    auto vocab_id = [&](const std::string& s) -> int32_t {
      auto it = raw_ids.find(s);
      return it == raw_ids.end() ? -1 : it->second;
    };
    for (const auto& mg : m["merges"]) {
      std::string a, b;
      if (mg.is_string()) {
        const std::string& s = mg.get_ref<const std::string&>();
        size_t sp = s.find(' ', 1);
        if (sp == std::string::npos) fail("tokenizer ", name, ": merge \"", s, "\" is not two tokens separated by a space");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (mg.is_array() && mg.size() == 2 && mg[0].is_string() && mg[1].is_string()) {
        a = mg[0].get<std::string>();
        b = mg[1].get<std::string>();
      } else {
        fail("tokenizer ", name, ": merge ", mg.dump().substr(0, 100), " is neither \"a b\" nor [\"a\", \"b\"]");
      }
      int32_t ia = vocab_id(a), ib = vocab_id(b), im = vocab_id(a + b);
      if (ia < 0 || ib < 0 || im < 0)
        fail("tokenizer ", name, ": merge \"", a, " ", b, "\" uses a token missing from the vocab; the file is damaged");
      uint64_t key = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib;
      t.merges.emplace(key, ((uint64_t)rank++ << 32) | (uint32_t)im);
    }
    if (spm) {
      t.pre = PreTokenizer::none;
      t.add_space_prefix = false;
      const json& norm = j.contains("normalizer") ? j["normalizer"] : json();
      std::string nd = norm.dump();
      if (nd.find("\"Prepend\"") != std::string::npos) t.add_space_prefix = true;
      if (j.contains("pre_tokenizer") && j["pre_tokenizer"].is_object() &&
          j["pre_tokenizer"].value("type", "") == "Metaspace")
        t.add_space_prefix = j["pre_tokenizer"].value("prepend_scheme", "always") != "never";
      t.unk_id = m.contains("unk_token") && m["unk_token"].is_string() ? vocab_id(m["unk_token"].get<std::string>()) : -1;
    } else {
      if (!j.contains("pre_tokenizer")) fail("tokenizer ", name, ": byte-level BPE without a pre_tokenizer");
      t.pre = json_pretokenizer(j["pre_tokenizer"], name);
    }
    // BOS / EOS / chat template from tokenizer_config.json
    auto special_id = [&](const char* key) -> int32_t {
      if (!cfg.contains(key)) return -1;
      std::string s = json_token_text(cfg[key]);
      return s.empty() ? -1 : find_special(t, s);
    };
    t.bos_id = special_id("bos_token");
    t.eos_id = special_id("eos_token");
    t.pad_id = special_id("pad_token");
    if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean()) {
      t.add_bos = cfg["add_bos_token"].get<bool>();
    } else {
      // no explicit flag: the post-processor template says whether BOS is added; Llama models add it
      std::string pp = j.contains("post_processor") ? j["post_processor"].dump() : "";
      t.add_bos = t.bos_id >= 0 && (pp.find("TemplateProcessing") != std::string::npos ||
                                    t.pre == PreTokenizer::llama3 || spm);
    }
    if (cfg.contains("chat_template")) {
      const json& ct = cfg["chat_template"];
      if (ct.is_string()) t.chat_template_text = ct.get<std::string>();
      else if (ct.is_array())
        for (const auto& e : ct)
          if (e.is_object() && e.value("name", "") == "default") t.chat_template_text = e.value("template", "");
    }
  } catch (const json::exception& e) {
    fail("tokenizer ", name, ": unexpected structure (", e.what(), "); the file is damaged: re-download it");
  }
  finish(t);
  return t;
}

Tokenizer tokenizer_from_gguf(const GGUFFile& g) {
  Tokenizer t;
  t.source = g.path;
  std::string model = g.get_string("tokenizer.ggml.model");
  std::vector<std::string> tokens = g.get_string_array("tokenizer.ggml.tokens");
  if (tokens.empty()) fail("GGUF ", g.path, ": tokenizer.ggml.tokens is empty");
  std::vector<int64_t> types;
  if (g.find("tokenizer.ggml.token_type")) types = g.get_int_array("tokenizer.ggml.token_type");
  if (!types.empty() && types.size() != tokens.size())
    fail("GGUF ", g.path, ": tokenizer.ggml.token_type has ", types.size(), " entries for ", tokens.size(), " tokens");
  auto type_of = [&](size_t i) -> int64_t { return types.empty() ? 1 : types[i]; };
  // token types (llama.cpp): 1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte
  size_t n = tokens.size();
  t.pieces.assign(n, std::string());
  t.is_special.assign(n, 0);
  std::fill(std::begin(t.byte_token), std::end(t.byte_token), -1);
  if (model == "llama") {
    t.kind = TokenizerKind::sentencepiece_bpe;
    t.pre = PreTokenizer::none;
    t.scores = g.get_float_array("tokenizer.ggml.scores");
    if (t.scores.size() != n)
      fail("GGUF ", g.path, ": tokenizer.ggml.scores has ", t.scores.size(), " entries for ", n, " tokens");
    for (size_t i = 0; i < n; ++i) {
      int64_t ty = type_of(i);
      int b = ty == 6 ? parse_byte_token(tokens[i]) : -1;
      if (ty == 6 && b < 0) fail("GGUF ", g.path, ": byte token ", i, " is \"", tokens[i], "\", expected <0xNN>");
      if (b >= 0) {
        t.byte_token[b] = (int32_t)i;
        t.pieces[i] = std::string(1, (char)b);
      } else if (ty == 2 || ty == 3 || ty == 4) {
        t.pieces[i] = tokens[i];
        t.is_special[i] = 1;
      } else {
        t.pieces[i] = spm_piece(tokens[i]);
        if (ty != 5) t.vocab.emplace(tokens[i], (int32_t)i);
      }
    }
    build_spm_merges(t, tokens);
    t.add_space_prefix = g.find("tokenizer.ggml.add_space_prefix") ? g.get_bool("tokenizer.ggml.add_space_prefix") : true;
    t.add_bos = true;
  } else if (model == "gpt2") {
    t.kind = TokenizerKind::byte_level_bpe;
    std::string pre = g.find("tokenizer.ggml.pre") ? g.get_string("tokenizer.ggml.pre") : "default";
    if (pre == "llama-bpe" || pre == "llama3") {
      t.pre = PreTokenizer::llama3;
      t.ignore_merges = true;
    } else if (pre == "gpt2" || pre == "gpt-2" || pre == "default") {
      t.pre = PreTokenizer::gpt2;
    } else if (pre == "smollm" || pre == "starcoder") {
      t.pre = PreTokenizer::digits_then_gpt2;
    } else {
      fail("GGUF ", g.path, ": tokenizer.ggml.pre = \"", pre, "\" is not supported; supported: llama-bpe, gpt2, smollm, "
           "starcoder");
    }
    ByteLevelMap blm;
    for (size_t i = 0; i < n; ++i) {
      int64_t ty = type_of(i);
      if (ty == 3 || ty == 4) {
        t.pieces[i] = tokens[i];
        t.is_special[i] = 1;
      } else {
        t.pieces[i] = byte_level_decode(tokens[i], blm);
        t.vocab.emplace(t.pieces[i], (int32_t)i);
      }
    }
    std::unordered_map<std::string, int32_t> by_text;
    by_text.reserve(n);
    for (size_t i = 0; i < n; ++i) by_text.emplace(tokens[i], (int32_t)i);
    std::vector<std::string> merges = g.get_string_array("tokenizer.ggml.merges");
    uint32_t rank = 0;
    for (const std::string& s : merges) {
      size_t sp = s.find(' ', 1);
      auto ia = sp == std::string::npos ? by_text.end() : by_text.find(s.substr(0, sp));
      auto ib = sp == std::string::npos ? by_text.end() : by_text.find(s.substr(sp + 1));
      auto im = sp == std::string::npos ? by_text.end() : by_text.find(s.substr(0, sp) + s.substr(sp + 1));
      if (ia == by_text.end() || ib == by_text.end() || im == by_text.end())
        fail("GGUF ", g.path, ": tokenizer.ggml.merges entry \"", s, "\" is not two known tokens; the file is damaged");
      t.merges.emplace(((uint64_t)(uint32_t)ia->second << 32) | (uint32_t)ib->second,
                       ((uint64_t)rank++ << 32) | (uint32_t)im->second);
    }
    t.add_bos = false;
  } else {
    fail("GGUF ", g.path, ": tokenizer.ggml.model = \"", model, "\" is not supported; supported: gpt2 (byte-level BPE), "
         "llama (SentencePiece)");
  }
  auto id_of = [&](const char* key) -> int32_t { return g.find(key) ? (int32_t)g.get_int(key) : -1; };
  t.bos_id = id_of("tokenizer.ggml.bos_token_id");
  t.eos_id = id_of("tokenizer.ggml.eos_token_id");
  t.eot_id = id_of("tokenizer.ggml.eot_token_id");
  t.unk_id = id_of("tokenizer.ggml.unknown_token_id");
  t.pad_id = id_of("tokenizer.ggml.padding_token_id");
  if (g.find("tokenizer.ggml.add_bos_token")) t.add_bos = g.get_bool("tokenizer.ggml.add_bos_token");
  if (g.find("tokenizer.chat_template")) t.chat_template_text = g.get_string("tokenizer.chat_template");
  finish(t);
  return t;
}

static std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("tokenizer: cannot open ", path, " (check the path)");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

Tokenizer tokenizer_load(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(path, ec)) fail("tokenizer: ", path, " does not exist (give a tokenizer.json, its folder, or a .gguf)");
  std::string file = path;
  if (fs::is_directory(path, ec)) {
    file = (fs::path(path) / "tokenizer.json").string();
    if (!fs::exists(file, ec)) fail("tokenizer: folder ", path, " has no tokenizer.json");
  } else {
    std::ifstream f(path, std::ios::binary);
    char magic[4] = {};
    f.read(magic, 4);
    if (f.gcount() == 4 && std::string(magic, 4) == "GGUF") return tokenizer_from_gguf(gguf_open(path));
  }
  std::string cfg_path = (fs::path(file).parent_path() / "tokenizer_config.json").string();
  std::string cfg = fs::exists(cfg_path, ec) ? read_file(cfg_path) : std::string();
  return tokenizer_from_json(read_file(file), cfg, file);
}

}  // namespace llm
