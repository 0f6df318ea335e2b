// HF config.json -> Config: the published configs of Llama-2 7B/13B, Llama-3-8B and Llama-3.1-8B (copied into
// tests/data/models/, see the README there), the tiny test config, and every error path.
#include <doctest/doctest.h>

#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "loader/error.h"
#include "loader/model_file.h"
#include "tests/test_util.h"

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

llm::Config load(const std::string& model) {
  const std::string p = llm_test::data_path("models/" + model + "/config.json");
  return llm::config_from_hf_json(read_text(p), p);
}

// Parse the Llama-3-8B config with one edit applied; returns the error message ("" when it parsed).
std::string error_after(const std::function<void(nlohmann::json&)>& edit) {
  auto j = nlohmann::json::parse(read_text(llm_test::data_path("models/llama-3-8b-instruct/config.json")));
  edit(j);
  try {
    llm::config_from_hf_json(j.dump(), "edited/config.json");
  } catch (const llm::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("config: Llama-3-8B-Instruct") {
  llm::Config c = load("llama-3-8b-instruct");
  CHECK(c.arch == "llama");
  CHECK(c.n_layers == 32);
  CHECK(c.dim == 4096);
  CHECK(c.n_heads == 32);
  CHECK(c.n_kv_heads == 8);
  CHECK(c.head_dim == 128);
  CHECK(c.ffn_dim == 14336);
  CHECK(c.vocab_size == 128256);
  CHECK(c.max_seq_len == 8192);
  CHECK(c.rope_theta == 500000.0f);
  CHECK(c.rms_eps == 1e-5f);
  CHECK(c.rope_scaling.type == llm::RopeScaling::Type::none);
  CHECK(c.rope_layout == llm::RopeLayout::half_split);
  CHECK_FALSE(c.tie_embeddings);
  CHECK(c.bos_id == 128000);
  CHECK(c.eos_ids == std::vector<int>{128009});
}

TEST_CASE("config: Llama-3.1-8B-Instruct has llama3 rope scaling and three eos ids") {
  llm::Config c = load("llama-3.1-8b-instruct");
  CHECK(c.n_layers == 32);
  CHECK(c.n_kv_heads == 8);
  CHECK(c.max_seq_len == 131072);
  CHECK(c.rope_scaling.type == llm::RopeScaling::Type::llama3);
  CHECK(c.rope_scaling.factor == 8.0f);
  CHECK(c.rope_scaling.low_freq_factor == 1.0f);
  CHECK(c.rope_scaling.high_freq_factor == 4.0f);
  CHECK(c.rope_scaling.original_max_position == 8192);
  CHECK(c.eos_ids == std::vector<int>{128001, 128008, 128009});
}

TEST_CASE("config: Llama-2 7B and 13B (multi-head attention, 32000 vocab)") {
  llm::Config a = load("llama-2-7b");
  CHECK(a.n_layers == 32);
  CHECK(a.dim == 4096);
  CHECK(a.n_heads == 32);
  CHECK(a.n_kv_heads == 32);
  CHECK(a.head_dim == 128);
  CHECK(a.ffn_dim == 11008);
  CHECK(a.vocab_size == 32000);
  CHECK(a.rope_theta == 10000.0f);
  CHECK(a.max_seq_len == 4096);
  CHECK(a.bos_id == 1);
  CHECK(a.eos_ids == std::vector<int>{2});
  llm::Config b = load("llama-2-13b");
  CHECK(b.n_layers == 40);
  CHECK(b.dim == 5120);
  CHECK(b.n_heads == 40);
  CHECK(b.n_kv_heads == 40);
  CHECK(b.ffn_dim == 13824);
  CHECK(b.head_dim == 128);
}

TEST_CASE("config: the tiny test config") {
  llm::Config c = load("tiny");
  CHECK(c.dim == 64);
  CHECK(c.n_layers == 2);
  CHECK(c.n_heads == 4);
  CHECK(c.n_kv_heads == 2);
  CHECK(c.head_dim == 16);
  CHECK(c.ffn_dim == 128);
  CHECK(c.vocab_size == 256);
  CHECK(c.eos_ids == std::vector<int>{2, 3});
}

TEST_CASE("config: defaults for num_key_value_heads and head_dim, explicit head_dim wins") {
  CHECK(error_after([](auto& j) { j.erase("num_key_value_heads"); }) == "");
  auto j = nlohmann::json::parse(read_text(llm_test::data_path("models/llama-3-8b-instruct/config.json")));
  j.erase("num_key_value_heads");
  CHECK(llm::config_from_hf_json(j.dump(), "x").n_kv_heads == 32);
  j["head_dim"] = 64;
  j["num_key_value_heads"] = 8;
  llm::Config c = llm::config_from_hf_json(j.dump(), "x");
  CHECK(c.head_dim == 64);
  j.erase("architectures");
  CHECK(llm::config_from_hf_json(j.dump(), "x").n_layers == 32);  // model_type llama is enough
}

TEST_CASE("config: errors name the file and the key") {
  std::string e = error_after([](auto& j) { j.erase("hidden_size"); });
  CHECK(e.find("edited/config.json") != std::string::npos);
  CHECK(e.find("hidden_size") != std::string::npos);
  CHECK(error_after([](auto& j) { j.erase("vocab_size"); }).find("missing required key 'vocab_size'") != std::string::npos);
  CHECK(error_after([](auto& j) { j["num_hidden_layers"] = "32"; }).find("num_hidden_layers' must be an integer") != std::string::npos);
  e = error_after([](auto& j) { j["architectures"] = {"MistralForCausalLM"}; });
  CHECK(e.find("unsupported architecture 'MistralForCausalLM'") != std::string::npos);
  CHECK(e.find("LlamaForCausalLM") != std::string::npos);
  e = error_after([](auto& j) { j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}}; });
  CHECK(e.find("rope_scaling type 'yarn' is not supported") != std::string::npos);
  e = error_after([](auto& j) { j["rope_scaling"] = {{"type", "llama3"}, {"factor", 8.0}}; });
  CHECK(e.find("low_freq_factor") != std::string::npos);
  e = error_after([](auto& j) { j["rope_scaling"] = {{"type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                                                      {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}}; });
  CHECK(e == "");  // the older "type" key is accepted too
  CHECK(error_after([](auto& j) { j["num_key_value_heads"] = 5; }).find("not a multiple") != std::string::npos);
  CHECK(error_after([](auto& j) { j["eos_token_id"] = {1, "x"}; }).find("eos_token_id") != std::string::npos);
  CHECK(error_after([](auto& j) { j["eos_token_id"] = 999999; }).find("outside the vocabulary") != std::string::npos);
  CHECK(error_after([](auto& j) { j["hidden_size"] = -1; }).find("out of range") != std::string::npos);
  CHECK_THROWS_WITH_AS(llm::config_from_hf_json("{oops", "bad.json"), doctest::Contains("bad.json: not valid JSON"), llm::Error);
}
