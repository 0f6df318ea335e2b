// gen_model: writes a Hugging Face style Llama directory (config.json + safetensors) with random weights,
// deterministic by seed, for any config.json (e.g. Llama-3-8B's, to measure speed at the real shapes) or the
// tiny test config in tests/data/models/tiny/.
//
//   gen_model --config CONFIG.json -o DIR [--seed S] [--shards N] [--dtype bf16|f32|f16] [--tiny-layers L]
//
// Weights: each tensor has its own PRNG stream seeded from (seed, HF name), so values do not depend on the
// order or sharding of the files. Matrices are ~N(0, 1/in) (activations keep their scale through a layer);
// norm weights are 1 + N(0, 0.02^2). Tensors are generated and written in 1M-element chunks, so an 8B model
// (16 GB in bf16) never sits in memory.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "loader/error.h"
#include "loader/ggml_quants.h"
#include "loader/model_file.h"
#include "loader/safetensors.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// splitmix64: tiny, fast, and good enough for random weights; one state per tensor.
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return (static_cast<double>(next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }  // (0,1)
  // Box-Muller; the second value is dropped to keep the stream simple.
  float normal() { return static_cast<float>(std::sqrt(-2.0 * std::log(uniform())) * std::cos(6.283185307179586 * uniform())); }
};

uint64_t hash_name(uint64_t seed, const std::string& name) {
  uint64_t h = 1469598103934665603ull ^ seed;  // FNV-1a over the name, mixed with the seed
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  Rng r{h};
  return r.next();
}

struct Spec {
  std::string name;  // HF name
  std::vector<int64_t> shape;
  bool norm;
};

std::vector<Spec> hf_tensors(const llm::Config& c) {
  const int64_t q = int64_t{c.n_heads} * c.head_dim, kv = int64_t{c.n_kv_heads} * c.head_dim;
  std::vector<Spec> out = {{"model.embed_tokens.weight", {c.vocab_size, c.dim}, false}};
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string b = "model.layers." + std::to_string(l) + ".";
    out.push_back({b + "input_layernorm.weight", {c.dim}, true});
    out.push_back({b + "self_attn.q_proj.weight", {q, c.dim}, false});
    out.push_back({b + "self_attn.k_proj.weight", {kv, c.dim}, false});
    out.push_back({b + "self_attn.v_proj.weight", {kv, c.dim}, false});
    out.push_back({b + "self_attn.o_proj.weight", {c.dim, q}, false});
    out.push_back({b + "post_attention_layernorm.weight", {c.dim}, true});
    out.push_back({b + "mlp.gate_proj.weight", {c.ffn_dim, c.dim}, false});
    out.push_back({b + "mlp.up_proj.weight", {c.ffn_dim, c.dim}, false});
    out.push_back({b + "mlp.down_proj.weight", {c.dim, c.ffn_dim}, false});
  }
  out.push_back({"model.norm.weight", {c.dim}, true});
  if (!c.tie_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, c.dim}, false});
  return out;
}

int64_t numel(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

void generate(llm::SafetensorsWriter& w, const Spec& t, llm::GGMLType type, uint64_t seed) {
  Rng rng{hash_name(seed, t.name)};
  const float scale = t.norm ? 0.02f : static_cast<float>(1.0 / std::sqrt(static_cast<double>(t.shape.back())));
  const float offset = t.norm ? 1.0f : 0.0f;
  const int64_t n = numel(t.shape), chunk = int64_t{1} << 20;
  std::vector<float> f(static_cast<size_t>(std::min(n, chunk)));
  std::vector<uint16_t> h(f.size());
  for (int64_t i = 0; i < n; i += chunk) {
    const size_t m = static_cast<size_t>(std::min(chunk, n - i));
    for (size_t k = 0; k < m; ++k) f[k] = offset + scale * rng.normal();
    if (type == llm::GGMLType::F32) {
      w.append(f.data(), m * 4);
      continue;
    }
    for (size_t k = 0; k < m; ++k)
      h[k] = type == llm::GGMLType::BF16 ? llm::f32_to_bf16(f[k]) : llm::f32_to_fp16(f[k]);
    w.append(h.data(), m * 2);
  }
}

void usage() {
  std::printf(
      "usage: gen_model --config CONFIG.json -o DIR [--seed S] [--shards N] [--dtype bf16|f32|f16] [--tiny-layers L]\n"
      "  writes DIR/config.json and DIR/model.safetensors (or N shards + model.safetensors.index.json)\n"
      "  with random weights, deterministic by seed (default 1); --tiny-layers keeps only the first L layers\n");
}

int run(int argc, char** argv) {
  std::string config_path, out_dir, dtype = "bf16";
  uint64_t seed = 1;
  int shards = 1, tiny_layers = 0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) llm::fail("gen_model: ", a, " needs a value (see --help)");
      return argv[++i];
    };
    auto int_value = [&](long long lo) -> long long {
      std::string v = value();
      char* end = nullptr;
      long long x = std::strtoll(v.c_str(), &end, 10);
      if (v.empty() || *end || x < lo) llm::fail("gen_model: ", a, " expects an integer >= ", lo, ", got '", v, "'");
      return x;
    };
    if (a == "-h" || a == "--help") { usage(); return 0; }
    else if (a == "--config") config_path = value();
    else if (a == "-o" || a == "--out") out_dir = value();
    else if (a == "--seed") seed = static_cast<uint64_t>(int_value(0));
    else if (a == "--shards") shards = static_cast<int>(int_value(1));
    else if (a == "--dtype") dtype = value();
    else if (a == "--tiny-layers") tiny_layers = static_cast<int>(int_value(1));
    else llm::fail("gen_model: unknown flag '", a, "' (see --help)");
  }
  if (config_path.empty() || out_dir.empty()) {
    usage();
    return 2;
  }
  llm::GGMLType type;
  if (dtype == "bf16") type = llm::GGMLType::BF16;
  else if (dtype == "f16") type = llm::GGMLType::F16;
  else if (dtype == "f32") type = llm::GGMLType::F32;
  else llm::fail("gen_model: --dtype must be bf16, f16 or f32, got '", dtype, "'");

  std::ifstream in(config_path, std::ios::binary);
  if (!in) llm::fail(config_path, ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  json j = json::parse(ss.str(), nullptr, false);
  if (j.is_discarded()) llm::fail(config_path, ": not valid JSON");
  if (tiny_layers) j["num_hidden_layers"] = tiny_layers;
  j["torch_dtype"] = dtype == "bf16" ? "bfloat16" : dtype == "f16" ? "float16" : "float32";
  const llm::Config c = llm::config_from_hf_json(j.dump(), config_path);  // validates before writing anything

  fs::create_directories(out_dir);
  {
    std::ofstream o(fs::path(out_dir) / "config.json");
    o << j.dump(2) << "\n";
    if (!o) llm::fail(out_dir, "/config.json: write failed");
  }
  const std::vector<Spec> specs = hf_tensors(c);
  const int64_t elem = ggml_type_traits(type).block_bytes;
  int64_t total = 0;
  for (const auto& s : specs) total += numel(s.shape) * elem;
  if (shards > static_cast<int>(specs.size())) shards = static_cast<int>(specs.size());

  // Contiguous split by bytes: shard k takes tensors until it holds about total*(k+1)/shards bytes.
  std::vector<std::vector<Spec>> groups(static_cast<size_t>(shards));
  int64_t acc = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    size_t k = static_cast<size_t>(std::min<int64_t>(shards - 1, acc * shards / std::max<int64_t>(total, 1)));
    // never leave a later shard empty
    size_t remaining_tensors = specs.size() - i, remaining_shards = static_cast<size_t>(shards) - k - 1;
    if (remaining_tensors <= remaining_shards && !groups[k].empty()) ++k;
    while (k > 0 && groups[k - 1].empty()) --k;
    groups[k].push_back(specs[i]);
    acc += numel(specs[i].shape) * elem;
  }

  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"generator", "llm gen_model seed " + std::to_string(seed)}};
  json weight_map = json::object();
  for (int k = 0; k < shards; ++k) {
    char name[64];
    if (shards == 1) std::snprintf(name, sizeof name, "model.safetensors");
    else std::snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", k + 1, shards);
    std::vector<llm::SafetensorsWriteTensor> wt;
    for (const auto& s : groups[static_cast<size_t>(k)]) {
      wt.push_back({s.name, type, s.shape, nullptr});
      weight_map[s.name] = name;
    }
    llm::SafetensorsWriter w((fs::path(out_dir) / name).string(), wt, meta);
    for (const auto& s : groups[static_cast<size_t>(k)]) generate(w, s, type, seed);
    w.close();
  }
  if (shards > 1) {
    json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    std::ofstream o(fs::path(out_dir) / "model.safetensors.index.json");
    o << index.dump(2) << "\n";
    if (!o) llm::fail(out_dir, "/model.safetensors.index.json: write failed");
  }
  std::printf("gen_model: wrote %s: %d layers, %zu tensors, %lld bytes in %d file(s), %s, seed %llu\n",
              out_dir.c_str(), c.n_layers, specs.size(), static_cast<long long>(total), shards, dtype.c_str(),
              static_cast<unsigned long long>(seed));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gen_model: error: %s\n", e.what());
    return 1;
  }
}
