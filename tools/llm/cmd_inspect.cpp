// llm inspect -m PATH [--json]: a model's config (one `key: value` per line), its tensor table (name, dtype,
// shape, bytes) and totals. PATH is a GGUF file, a safetensors file or a Hugging Face directory.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "args.h"
#include "commands.h"
#include "loader/error.h"
#include "loader/model_file.h"

namespace llm_cli {

namespace {

const char* rope_layout_name(llm::RopeLayout l) {
  return l == llm::RopeLayout::half_split ? "half_split" : "interleaved";
}

std::string eos_list(const std::vector<int>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(ids[i]);
  }
  return s.empty() ? "none" : s;
}

// Tensors in file order for GGUF and per shard for safetensors; ModelFile's map is sorted by name, which
// would put blk.10 before blk.2.
std::vector<const llm::TensorView*> tensor_order(const llm::ModelFile& m) {
  std::vector<const llm::TensorView*> out;
  if (m.gguf) {
    for (const auto& t : m.gguf->tensors) out.push_back(m.find(t.name));
  } else {
    for (const auto& [name, t] : m.tensors) out.push_back(&t);
    // natural order: split names on numbers so blk.2 < blk.10
    auto key = [](const std::string& s) {
      std::vector<std::pair<long long, std::string>> k;
      size_t i = 0;
      while (i < s.size()) {
        size_t j = i;
        if (std::isdigit(static_cast<unsigned char>(s[i]))) {
          while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
          k.push_back({std::stoll(s.substr(i, std::min<size_t>(j - i, 18))), ""});
        } else {
          while (j < s.size() && !std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
          k.push_back({-1, s.substr(i, j - i)});
        }
        i = j;
      }
      return k;
    };
    std::stable_sort(out.begin(), out.end(), [&](auto* a, auto* b) { return key(a->name) < key(b->name); });
  }
  return out;
}

}  // namespace

int cmd_inspect(int argc, char** argv) {
  const std::vector<FlagSpec> spec = {
      {"-m,--model", "PATH", "GGUF file, .safetensors file or Hugging Face directory (default: the demo model)"},
      {"--json", nullptr, "print one JSON object instead of text"},
  };
  Args a = parse_args("inspect", argc, argv, spec);
  if (a.has("help")) {
    print_help("inspect", "[-m PATH] [--json]", spec);
    return 0;
  }
  if (!a.positional.empty())
    llm::fail("llm inspect: unexpected argument '", a.positional[0], "' (the model is given with -m PATH)");
  const std::string path = a.get("model", default_model_path());
  const llm::ModelFile m = llm::model_file_open(path);
  const llm::Config& c = m.config;
  const auto tensors = tensor_order(m);
  long long params = 0, bytes = 0;
  for (const auto* t : tensors) {
    params += t->numel();
    bytes += static_cast<long long>(t->nbytes);
  }
  const bool llama3 = c.rope_scaling.type == llm::RopeScaling::Type::llama3;
  const char* format = m.format == llm::ModelFile::Format::gguf ? "gguf" : "safetensors";

  if (a.has("json")) {
    nlohmann::ordered_json j;
    j["path"] = path;
    j["format"] = format;
    nlohmann::ordered_json cj;
    cj["arch"] = c.arch;
    cj["layers"] = c.n_layers;
    cj["hidden"] = c.dim;
    cj["heads"] = c.n_heads;
    cj["kv_heads"] = c.n_kv_heads;
    cj["head_dim"] = c.head_dim;
    cj["ffn"] = c.ffn_dim;
    cj["vocab"] = c.vocab_size;
    cj["rope_theta"] = c.rope_theta;
    cj["ctx"] = c.max_seq_len;
    cj["tied"] = c.tie_embeddings;
    cj["rms_eps"] = c.rms_eps;
    cj["rope_layout"] = rope_layout_name(c.rope_layout);
    if (llama3)
      cj["rope_scaling"] = {{"type", "llama3"},
                            {"factor", c.rope_scaling.factor},
                            {"low_freq_factor", c.rope_scaling.low_freq_factor},
                            {"high_freq_factor", c.rope_scaling.high_freq_factor},
                            {"original_max_position", c.rope_scaling.original_max_position}};
    else
      cj["rope_scaling"] = "none";
    cj["bos"] = c.bos_id;
    cj["eos"] = c.eos_ids;
    j["config"] = cj;
    nlohmann::ordered_json tj = nlohmann::ordered_json::array();
    for (const auto* t : tensors)
      tj.push_back({{"name", t->name}, {"dtype", llm::ggml_type_name(t->type)}, {"shape", t->shape}, {"bytes", t->nbytes}});
    j["tensors"] = tj;
    j["totals"] = {{"tensors", tensors.size()}, {"parameters", params}, {"bytes", bytes}};
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }

  std::printf("path: %s\nformat: %s\n", path.c_str(), format);
  std::printf("arch: %s\nlayers: %d\nhidden: %d\nheads: %d\nkv_heads: %d\nhead_dim: %d\nffn: %d\nvocab: %d\n",
              c.arch.c_str(), c.n_layers, c.dim, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_dim, c.vocab_size);
  std::printf("rope_theta: %g\nctx: %d\ntied: %s\nrms_eps: %g\nrope_layout: %s\n", c.rope_theta, c.max_seq_len,
              c.tie_embeddings ? "true" : "false", c.rms_eps, rope_layout_name(c.rope_layout));
  if (llama3)
    std::printf("rope_scaling: llama3 factor=%g low_freq_factor=%g high_freq_factor=%g original_max_position=%d\n",
                c.rope_scaling.factor, c.rope_scaling.low_freq_factor, c.rope_scaling.high_freq_factor,
                c.rope_scaling.original_max_position);
  else
    std::printf("rope_scaling: none\n");
  std::printf("bos: %d\neos: %s\n\n", c.bos_id, eos_list(c.eos_ids).c_str());
  size_t w = 4;
  for (const auto* t : tensors) w = std::max(w, t->name.size());
  std::printf("%-*s  %-5s  %-16s  %12s\n", static_cast<int>(w), "name", "dtype", "shape", "bytes");
  for (const auto* t : tensors)
    std::printf("%-*s  %-5s  %-16s  %12zu\n", static_cast<int>(w), t->name.c_str(), llm::ggml_type_name(t->type),
                llm::shape_str(t->shape).c_str(), t->nbytes);
  std::printf("\ntensors: %zu\nparameters: %lld\nbytes: %lld\n", tensors.size(), params, bytes);
  return 0;
}

}  // namespace llm_cli
