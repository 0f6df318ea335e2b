// model_file_open: GGUF file, safetensors file or HF directory -> one Config + canonical tensor table.
// The HF -> canonical name table (see loader/model_file.h) lives here and nowhere else.
#include "loader/model_file.h"

#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "loader/error.h"

namespace llm {

namespace fs = std::filesystem;

namespace {

constexpr const char* kNotAModel =
    "not a model: expected a .gguf file, a .safetensors file or a Hugging Face directory with config.json";

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open: ", std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// HF name -> canonical name; names outside the table (e.g. rotary_emb.inv_freq) are kept as they are.
std::string canonical_name(const std::string& hf) {
  static const struct { const char* hf; const char* canon; } kTop[] = {
      {"model.embed_tokens.weight", "token_embd.weight"},
      {"model.norm.weight", "output_norm.weight"},
      {"lm_head.weight", "output.weight"},
  };
  for (const auto& e : kTop)
    if (hf == e.hf) return e.canon;
  static const struct { const char* hf; const char* canon; } kLayer[] = {
      {"input_layernorm.weight", "attn_norm.weight"},
      {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"},
  };
  const std::string prefix = "model.layers.";
  if (hf.rfind(prefix, 0) != 0) return hf;
  size_t i = prefix.size(), j = i;
  while (j < hf.size() && std::isdigit(static_cast<unsigned char>(hf[j]))) ++j;
  if (j == i || j >= hf.size() || hf[j] != '.') return hf;
  const std::string layer = hf.substr(i, j - i), rest = hf.substr(j + 1);
  for (const auto& e : kLayer)
    if (rest == e.hf) return "blk." + layer + "." + e.canon;
  return hf;
}

void add_safetensors(ModelFile& m, SafetensorsFile&& f) {
  m.shards.push_back(std::move(f));
  for (const auto& t : m.shards.back().tensors) {
    TensorView v = t;
    v.name = canonical_name(t.name);
    auto [it, fresh] = m.tensors.emplace(v.name, v);
    if (!fresh) fail(m.shards.back().path, ": tensor '", t.name, "' (", v.name, ") appears twice in the model");
  }
}

Config read_config_json(const fs::path& p) {
  if (!fs::is_regular_file(p))
    fail(p.string(), ": missing; a safetensors model needs its Hugging Face config.json beside the weights");
  return config_from_hf_json(read_text(p.string()), p.string());
}

}  // namespace

std::vector<std::pair<std::string, std::vector<int64_t>>> model_expected_tensors(const Config& c) {
  const int64_t q = int64_t{c.n_heads} * c.head_dim, kv = int64_t{c.n_kv_heads} * c.head_dim;
  std::vector<std::pair<std::string, std::vector<int64_t>>> out = {
      {"token_embd.weight", {c.vocab_size, c.dim}},
      {"output_norm.weight", {c.dim}},
  };
  if (!c.tie_embeddings) out.push_back({"output.weight", {c.vocab_size, c.dim}});
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    out.push_back({b + "attn_norm.weight", {c.dim}});
    out.push_back({b + "attn_q.weight", {q, c.dim}});
    out.push_back({b + "attn_k.weight", {kv, c.dim}});
    out.push_back({b + "attn_v.weight", {kv, c.dim}});
    out.push_back({b + "attn_output.weight", {c.dim, q}});
    out.push_back({b + "ffn_norm.weight", {c.dim}});
    out.push_back({b + "ffn_gate.weight", {c.ffn_dim, c.dim}});
    out.push_back({b + "ffn_up.weight", {c.ffn_dim, c.dim}});
    out.push_back({b + "ffn_down.weight", {c.dim, c.ffn_dim}});
  }
  return out;
}

const TensorView* ModelFile::find(const std::string& name) const {
  auto it = tensors.find(name);
  return it == tensors.end() ? nullptr : &it->second;
}

const TensorView& ModelFile::get(const std::string& name, const std::vector<int64_t>& shape) const {
  const TensorView* t = find(name);
  if (!t)
    fail("missing tensor ", name, " in ", path, " (the file is incomplete or not a Llama model)");
  if (t->shape != shape)
    fail(path, ": tensor ", name, " has shape ", shape_str(t->shape), ", expected ", shape_str(shape),
         " from the config (the weights do not belong to this config.json?)");
  if (!ggml_type_supported(t->type))
    fail(path, ": tensor ", name, " has type ", ggml_type_name(t->type), ", which is not supported (supported: ",
         ggml_supported_type_list(), ")");
  return *t;
}

void model_file_check(const ModelFile& m) {
  for (const auto& [name, shape] : model_expected_tensors(m.config)) m.get(name, shape);
}

ModelFile model_file_open(const std::string& path) {
  ModelFile m;
  m.path = path;
  std::error_code ec;
  const fs::path p(path);
  if (!fs::exists(p, ec)) fail(path, ": no such file or directory");
  if (fs::is_directory(p, ec)) {
    m.format = ModelFile::Format::safetensors;
    m.directory = path;
    if (!fs::is_regular_file(p / "config.json")) fail(path, ": ", kNotAModel, " (no config.json in this directory)");
    m.config = read_config_json(p / "config.json");
    if (fs::is_regular_file(p / "model.safetensors")) {
      add_safetensors(m, safetensors_open((p / "model.safetensors").string()));
    } else if (fs::is_regular_file(p / "model.safetensors.index.json")) {
      for (auto& shard : safetensors_open_index((p / "model.safetensors.index.json").string()))
        add_safetensors(m, std::move(shard));
    } else {
      fail(path, ": has config.json but no model.safetensors or model.safetensors.index.json "
           "(only safetensors weights are supported in a Hugging Face directory)");
    }
  } else if (ends_with(path, ".gguf")) {
    m.format = ModelFile::Format::gguf;
    m.gguf = std::make_unique<GGUFFile>(gguf_open(path));
    m.config = config_from_gguf(*m.gguf);
    // GGUF has no "tied" key: like llama.cpp, a file without output.weight uses token_embd for the logits.
    m.config.tie_embeddings = m.gguf->find_tensor("output.weight") == nullptr;
    for (const auto& t : m.gguf->tensors) {
      auto [it, fresh] = m.tensors.emplace(t.name, t);
      if (!fresh) fail(path, ": tensor '", t.name, "' appears twice");
    }
  } else if (ends_with(path, ".safetensors")) {
    m.format = ModelFile::Format::safetensors;
    fs::path dir = p.parent_path();
    m.directory = dir.empty() ? "." : dir.string();
    SafetensorsFile f = safetensors_open(path);  // a corrupt file is the more useful error: check it first
    m.config = read_config_json((dir.empty() ? fs::path(".") : dir) / "config.json");
    add_safetensors(m, std::move(f));
  } else {
    fail(path, ": ", kNotAModel);
  }
  model_file_check(m);
  return m;
}

}  // namespace llm
