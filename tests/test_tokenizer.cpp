// Tokenizer tests: every reference vector set (llama.cpp's, the Llama-3 text set, the demo GGUF golden made
// with HF transformers), round trips, streaming decode, invalid UTF-8, bad tokenizer.json, chat templates.
// Data: tests/data/tokenizers/README.md names the source of each file.
#include <doctest/doctest.h>

#include <fstream>
#include <memory>
#include <sstream>

#include "loader/error.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace {

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE_MESSAGE(f.good(), "missing test file ", path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct Cases {
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> ids;
};

// llama.cpp's vector format: .inp cases separated by "\n__ggml_vocab_test__\n", .out one line of ids per case.
Cases read_cases(const std::string& inp, const std::string& out) {
  Cases c;
  std::string all = slurp(inp);
  const std::string sep = "\n__ggml_vocab_test__\n";
  for (size_t start = 0, e; (e = all.find(sep, start)) != std::string::npos; start = e + sep.size())
    c.texts.push_back(all.substr(start, e - start));
  std::istringstream os(slurp(out));
  std::string line;
  while (std::getline(os, line)) {
    std::istringstream ls(line);
    std::vector<int32_t> ids;
    int32_t id;
    while (ls >> id) ids.push_back(id);
    c.ids.push_back(ids);
  }
  REQUIRE(c.texts.size() == c.ids.size());
  return c;
}

// Loaded once per test binary: the Llama-3 tokenizer.json takes a second to parse.
const llm::Tokenizer& llama3() {
  static const llm::Tokenizer t = llm::tokenizer_load(llm_test::data_path("tokenizers/llama3/tokenizer.json"));
  return t;
}

void check_vectors(const llm::Tokenizer& tok, const std::string& inp, const std::string& out, size_t expect_cases) {
  Cases c = read_cases(llm_test::data_path(inp), llm_test::data_path(out));
  CHECK(c.texts.size() == expect_cases);
  int mismatches = 0;
  for (size_t i = 0; i < c.texts.size(); ++i) {
    std::vector<int32_t> got = tok.encode(c.texts[i], false, true);
    if (got != c.ids[i] && ++mismatches <= 5) FAIL_CHECK("case ", i, " of ", inp, ": \"", c.texts[i], "\" ids differ");
    CHECK_MESSAGE(tok.decode(got) == c.texts[i], "round trip of case ", i, " of ", inp);
  }
  CHECK(mismatches == 0);
}

bool valid_utf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (size_t i = 0; i < s.size();) {
    int len;
    if (llm::utf8_decode(p + i, s.size() - i, &len) == 0xFFFFFFFFu) return false;
    i += len;
  }
  return true;
}

}  // namespace

TEST_CASE("unicode table: categories of known code points") {
  CHECK(llm::unicode_flags('a') == llm::kUniLetter);
  CHECK(llm::unicode_flags('7') == llm::kUniNumber);
  CHECK(llm::unicode_flags(' ') == llm::kUniSpace);
  CHECK(llm::unicode_flags(0x0663) == llm::kUniNumber);  // ARABIC-INDIC DIGIT THREE (Nd)
  CHECK(llm::unicode_flags(0x2163) == llm::kUniNumber);  // ROMAN NUMERAL FOUR (Nl)
  CHECK(llm::unicode_flags(0x00BD) == llm::kUniNumber);  // VULGAR FRACTION ONE HALF (No)
  CHECK(llm::unicode_flags(0x4E2D) == llm::kUniLetter);  // CJK ideograph (inside a First/Last range)
  CHECK(llm::unicode_flags(0xAC00) == llm::kUniLetter);  // Hangul syllable (range)
  CHECK(llm::unicode_flags(0x3000) == llm::kUniSpace);   // IDEOGRAPHIC SPACE
  CHECK(llm::unicode_flags(0x00A0) == llm::kUniSpace);   // NO-BREAK SPACE is White_Space
  CHECK(llm::unicode_flags(0x200B) == 0);                // ZERO WIDTH SPACE is not
  CHECK(llm::unicode_flags(0x1F600) == 0);               // emoji: none
  CHECK(llm::unicode_flags(0x10FFFF) == 0);
}

TEST_CASE("llama3 tokenizer.json: llama.cpp vectors and the 197 text cases") {
  const auto& t = llama3();
  CHECK(t.kind == llm::TokenizerKind::byte_level_bpe);
  CHECK(t.pre == llm::PreTokenizer::llama3);
  CHECK(t.vocab_size() == 128256);
  CHECK(t.bos_id == 128000);
  CHECK(t.eos_id == 128001);
  CHECK(t.eot_id == 128009);
  check_vectors(t, "tokenizers/llama3/vectors-llamacpp.inp", "tokenizers/llama3/vectors-llamacpp.out", 46);
  check_vectors(t, "tokenizers/llama3/vectors-text.inp", "tokenizers/llama3/vectors-text.out", 197);
}

TEST_CASE("llama.cpp vocab GGUFs: gpt-2, starcoder, llama-spm") {
  for (const char* name : {"gpt2/ggml-vocab-gpt-2.gguf", "starcoder/ggml-vocab-starcoder.gguf",
                           "llama2-spm/ggml-vocab-llama-spm.gguf"}) {
    CAPTURE(name);
    std::string p = std::string("tokenizers/") + name;
    llm::Tokenizer t = llm::tokenizer_load(llm_test::data_path(p));
    check_vectors(t, p + ".inp", p + ".out", 46);
  }
}

TEST_CASE("llama-spm GGUF: SentencePiece details") {
  llm::Tokenizer t = llm::tokenizer_load(llm_test::data_path("tokenizers/llama2-spm/ggml-vocab-llama-spm.gguf"));
  CHECK(t.kind == llm::TokenizerKind::sentencepiece_bpe);
  CHECK(t.bos_id == 1);
  CHECK(t.eos_id == 2);
  CHECK(t.add_bos);
  std::vector<int32_t> ids = t.encode("Hello", true, true);
  REQUIRE(ids.size() >= 2);
  CHECK(ids[0] == 1);
  CHECK(t.encode("\xF0\x9F\x98\x80", false, true).size() >= 1);
  // a character without a token goes out as its UTF-8 bytes <0xNN> and decodes back
  std::string rare = "\xF0\x9F\xA6\x8B \xE1\x9A\xA0";  // 🦋 ᚠ
  CHECK(t.decode(t.encode(rare, false, true)) == rare);
  CHECK(t.token_piece(t.byte_token[0x41]) == "A");
}

TEST_CASE("demo GGUF (SmolLM2, pre-tokenizer smollm) against HF transformers golden") {
  if (!llm_test::have_demo_model()) return;
  llm::Tokenizer t = llm::tokenizer_load(llm_test::demo_model_path());
  CHECK(t.pre == llm::PreTokenizer::digits_then_gpt2);
  CHECK(t.vocab_size() == 49152);
  CHECK_FALSE(t.add_bos);
  CHECK(t.eot_id == 2);  // <|im_end|>
  check_vectors(t, "tokenizers/smollm2/golden.inp", "tokenizers/smollm2/golden.out", 31);
  CHECK(t.chat_template == llm::ChatTemplate::chatml);
  CHECK(t.chat_default_system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
}

TEST_CASE("BOS and special-token parsing") {
  const auto& t = llama3();
  CHECK(t.add_bos);
  CHECK(t.encode("hi", true, true) == std::vector<int32_t>{128000, 6151});
  CHECK(t.encode("hi", false, true) == std::vector<int32_t>{6151});
  CHECK(t.encode("<|eot_id|>", false, true) == std::vector<int32_t>{128009});
  std::vector<int32_t> plain = t.encode("<|eot_id|>", false, false);
  CHECK(plain.size() > 1);
  CHECK(t.decode(plain) == "<|eot_id|>");
  CHECK(t.is_eog(128009));
  CHECK(t.is_eog(128001));
  CHECK_THROWS_AS(t.token_piece(128256), llm::Error);
  CHECK_THROWS_AS(t.token_piece(-1), llm::Error);
}

TEST_CASE("invalid UTF-8: stray bytes become byte tokens and decode back unchanged") {
  const auto& t = llama3();
  for (std::string s : {std::string("\xFF\xFE abc"), std::string("caf\xC3"), std::string("\x80\x80x\xE2\x82"),
                        std::string("a\xED\xA0\x80z") /* surrogate */, std::string("\xC0\xAF") /* overlong */,
                        std::string("x\0y", 3)}) {
    std::vector<int32_t> ids = t.encode(s, false, true);
    CHECK(t.decode(ids) == s);
  }
  llm::Tokenizer spm = llm::tokenizer_load(llm_test::data_path("tokenizers/llama2-spm/ggml-vocab-llama-spm.gguf"));
  std::string bad = "ok \xFF\xC3 end";
  CHECK(spm.decode(spm.encode(bad, false, true)) == bad);
}

TEST_CASE("streaming decode never emits half a character") {
  const auto& t = llama3();
  std::string text = "emoji \xF0\x9F\x98\x80\xF0\x9F\x9A\x80 \xE4\xBD\xA0\xE5\xA5\xBD caf\xC3\xA9 \xF0\x9F\x87\xAB\xF0\x9F\x87\xB7";
  std::vector<int32_t> ids = t.encode(text, false, true);
  llm::StreamDecoder sd(t);
  std::string joined;
  bool held_some = false;
  for (int32_t id : ids) {
    std::string part = sd.push(id);
    CHECK(valid_utf8(part));
    if (!sd.pending.empty()) held_some = true;
    joined += part;
  }
  joined += sd.flush();
  CHECK(joined == text);
  CHECK(held_some);  // the emoji are split over several byte tokens, so something was held back
}

TEST_CASE("malformed tokenizer.json gives a clear error") {
  std::string good = slurp(llm_test::data_path("tokenizers/llama3/tokenizer.json"));
  auto message_of = [](std::string_view json) -> std::string {
    try {
      llm::tokenizer_from_json(json, "", "test.json");
    } catch (const llm::Error& e) {
      return e.what();
    }
    return "";
  };
  std::string m = message_of(std::string_view(good).substr(0, good.size() / 2));
  CHECK(m.find("test.json") != std::string::npos);
  CHECK(m.find("not valid JSON") != std::string::npos);
  CHECK(message_of("").find("not valid JSON") != std::string::npos);
  CHECK(message_of("[]").find("no \"model\"") != std::string::npos);
  CHECK(message_of(R"({"model": {"type": "Unigram", "vocab": []}})").find("Unigram") != std::string::npos);
  CHECK(message_of(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]},
                       "pre_tokenizer": {"type": "ByteLevel"}})").find("missing from the vocab") != std::string::npos);
  CHECK(message_of(R"({"model": {"type": "BPE", "vocab": {"a": "x"}, "merges": []}})").find("id") != std::string::npos);
  CHECK(message_of(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                       "pre_tokenizer": {"type": "Whitespace"}})").find("not supported") != std::string::npos);
  CHECK_THROWS_AS(llm::tokenizer_load(llm_test::data_path("tokenizers/no-such-file.json")), llm::Error);
}

TEST_CASE("chat templates: a fixed conversation in each family") {
  std::vector<llm::ChatMessage> conv = {
      {"system", "You are terse."}, {"user", "Hi!"}, {"assistant", "Hello."}, {"user", "2+2?"}};
  // Written from Meta-Llama-3-8B-Instruct's chat_template (contents trimmed, BOS first).
  CHECK(llm::chat_render(llm::ChatTemplate::llama3, conv, true) ==
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n");
  // Written from SmolLM2-135M-Instruct's template (in the demo GGUF's tokenizer.chat_template).
  CHECK(llm::chat_render(llm::ChatTemplate::chatml, conv, true) ==
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n");
  std::vector<llm::ChatMessage> no_sys(conv.begin() + 1, conv.end());
  CHECK(llm::chat_render(llm::ChatTemplate::chatml, no_sys, false, "Default prompt") ==
        "<|im_start|>system\nDefault prompt<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n");
  // Written from Llama-2-7b-chat-hf's template.
  CHECK(llm::chat_render(llm::ChatTemplate::llama2, conv, true) ==
        "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi! [/INST] Hello. </s><s>[INST] 2+2? [/INST]");
  CHECK_THROWS_AS(llm::chat_render(llm::ChatTemplate::llama2, {{"assistant", "x"}}, true), llm::Error);
  CHECK_THROWS_AS(llm::chat_render(llm::ChatTemplate::none, conv, true), llm::Error);
}

TEST_CASE("chat templates: detection from the model's metadata") {
  CHECK(llama3().chat_template == llm::ChatTemplate::llama3);
  CHECK(llm::chat_template_detect("{{ '[INST] ' + content + ' [/INST]' }}") == llm::ChatTemplate::llama2);
  CHECK(llm::chat_template_from_name("chatml") == llm::ChatTemplate::chatml);
  CHECK_THROWS_AS(llm::chat_template_detect("{{ '### Human: ' + content }}"), llm::Error);
  CHECK_THROWS_AS(llm::chat_template_from_name("vicuna"), llm::Error);
  // an unknown template keeps tokenizing but rendering says what to do
  llm::Tokenizer t;
  t.chat_template_text = "{{ '### Human: ' }}";
  CHECK_THROWS_AS(llm::chat_render(t, {{"user", "x"}}, true), llm::Error);
  // the rendered Llama-3 prompt encodes to the header tokens
  std::vector<int32_t> ids = llama3().encode(llm::chat_render(llama3(), {{"user", "Hi"}}, true), false, true);
  CHECK(ids.front() == 128000);
  CHECK(ids[1] == 128006);  // <|start_header_id|>
  CHECK(ids.back() == 271);  // "\n\n" after the assistant header
}
