// Config from a Hugging Face config.json (LlamaForCausalLM). Keys and defaults follow transformers'
// LlamaConfig: num_key_value_heads defaults to num_attention_heads, head_dim to hidden_size / heads.
// Everything else the engine needs is required; a missing or mistyped key is an error naming the file and key.
#include <cmath>
#include <nlohmann/json.hpp>

#include "loader/error.h"
#include "loader/model_file.h"

namespace llm {

using nlohmann::json;

namespace {

const json& require(const json& j, const char* key, const std::string& name) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null())
    fail(name, ": missing required key '", key, "' (is this a Llama config.json?)");
  return *it;
}

int get_int(const json& j, const char* key, const std::string& name, int min_value) {
  const json& v = require(j, key, name);
  if (!v.is_number_integer()) fail(name, ": '", key, "' must be an integer, got ", v.dump());
  int64_t x = v.get<int64_t>();
  if (x < min_value || x > INT32_MAX) fail(name, ": '", key, "' = ", x, " is out of range (at least ", min_value, ")");
  return static_cast<int>(x);
}

float get_float(const json& j, const char* key, const std::string& name) {
  const json& v = require(j, key, name);
  if (!v.is_number()) fail(name, ": '", key, "' must be a number, got ", v.dump());
  double x = v.get<double>();
  if (!std::isfinite(x) || x <= 0) fail(name, ": '", key, "' = ", x, " must be a positive number");
  return static_cast<float>(x);
}

bool has(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && !it->is_null();
}

}  // namespace

Config config_from_hf_json(const std::string& json_text, const std::string& name) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    fail(name, ": not valid JSON: ", e.what());
  }
  if (!j.is_object()) fail(name, ": expected a JSON object (a Hugging Face config.json)");

  // Architecture: LlamaForCausalLM (or model_type llama when `architectures` is absent). Anything else would
  // load with the wrong maths, so it is refused by name.
  bool llama = false;
  std::string seen;
  if (has(j, "architectures")) {
    const json& a = j["architectures"];
    if (!a.is_array()) fail(name, ": 'architectures' must be a list of strings");
    for (const auto& x : a) {
      if (!x.is_string()) continue;
      seen += (seen.empty() ? "" : ", ") + x.get<std::string>();
      if (x.get<std::string>() == "LlamaForCausalLM") llama = true;
    }
  } else if (has(j, "model_type") && j["model_type"].is_string()) {
    seen = "model_type " + j["model_type"].get<std::string>();
    llama = j["model_type"].get<std::string>() == "llama";
  }
  if (!llama)
    fail(name, ": unsupported architecture '", seen.empty() ? "(none given)" : seen,
         "': only LlamaForCausalLM (model_type llama) is supported");

  Config c;
  c.arch = "llama";
  c.dim = get_int(j, "hidden_size", name, 1);
  c.n_layers = get_int(j, "num_hidden_layers", name, 1);
  c.n_heads = get_int(j, "num_attention_heads", name, 1);
  c.n_kv_heads = has(j, "num_key_value_heads") ? get_int(j, "num_key_value_heads", name, 1) : c.n_heads;
  if (has(j, "head_dim")) {
    c.head_dim = get_int(j, "head_dim", name, 1);
  } else {
    if (c.dim % c.n_heads != 0)
      fail(name, ": hidden_size ", c.dim, " is not a multiple of num_attention_heads ", c.n_heads,
           " and no head_dim is given");
    c.head_dim = c.dim / c.n_heads;
  }
  if (c.n_heads % c.n_kv_heads != 0)
    fail(name, ": num_attention_heads ", c.n_heads, " is not a multiple of num_key_value_heads ", c.n_kv_heads);
  if (c.head_dim % 2 != 0) fail(name, ": head_dim ", c.head_dim, " must be even for RoPE");
  c.ffn_dim = get_int(j, "intermediate_size", name, 1);
  c.vocab_size = get_int(j, "vocab_size", name, 1);
  c.max_seq_len = get_int(j, "max_position_embeddings", name, 1);
  c.rope_theta = has(j, "rope_theta") ? get_float(j, "rope_theta", name) : 10000.0f;  // LlamaConfig default
  c.rms_eps = get_float(j, "rms_norm_eps", name);
  if (has(j, "tie_word_embeddings")) {
    if (!j["tie_word_embeddings"].is_boolean()) fail(name, ": 'tie_word_embeddings' must be true or false");
    c.tie_embeddings = j["tie_word_embeddings"].get<bool>();
  }
  c.rope_layout = RopeLayout::half_split;  // HF checkpoints: see RopeLayout in loader/config.h

  if (has(j, "rope_scaling")) {
    const json& rs = j["rope_scaling"];
    if (!rs.is_object()) fail(name, ": 'rope_scaling' must be an object or null");
    std::string type;
    for (const char* k : {"rope_type", "type"})
      if (has(rs, k) && rs[k].is_string()) {
        type = rs[k].get<std::string>();
        break;
      }
    if (type == "default") {
      // transformers' name for plain RoPE
    } else if (type == "llama3") {
      const std::string where = name + " rope_scaling";
      c.rope_scaling.type = RopeScaling::Type::llama3;
      c.rope_scaling.factor = get_float(rs, "factor", where);
      c.rope_scaling.low_freq_factor = get_float(rs, "low_freq_factor", where);
      c.rope_scaling.high_freq_factor = get_float(rs, "high_freq_factor", where);
      c.rope_scaling.original_max_position = get_int(rs, "original_max_position_embeddings", where, 1);
      if (c.rope_scaling.high_freq_factor <= c.rope_scaling.low_freq_factor)
        fail(where, ": high_freq_factor must be greater than low_freq_factor");
    } else {
      fail(name, ": rope_scaling type '", type.empty() ? "(none given)" : type,
           "' is not supported (supported: llama3)");
    }
  }

  if (has(j, "bos_token_id")) {
    if (!j["bos_token_id"].is_number_integer()) fail(name, ": 'bos_token_id' must be an integer");
    c.bos_id = j["bos_token_id"].get<int>();
  }
  if (has(j, "eos_token_id")) {
    const json& e = j["eos_token_id"];
    auto add = [&](const json& v) {
      if (!v.is_number_integer()) fail(name, ": 'eos_token_id' must be an integer or a list of integers");
      c.eos_ids.push_back(v.get<int>());
    };
    if (e.is_array())
      for (const auto& v : e) add(v);
    else
      add(e);
  }
  for (int id : c.eos_ids)
    if (id < 0 || id >= c.vocab_size) fail(name, ": eos_token_id ", id, " is outside the vocabulary of ", c.vocab_size);
  if (c.bos_id >= c.vocab_size) fail(name, ": bos_token_id ", c.bos_id, " is outside the vocabulary of ", c.vocab_size);
  return c;
}

}  // namespace llm
