// ModelFile: any supported model on disk (GGUF file, safetensors file, HF directory) opened into one Config and
// one table of tensors under canonical names. This is where HF and GGUF naming meet:
//
//   canonical (GGUF) name         HF name
//   token_embd.weight             model.embed_tokens.weight
//   output_norm.weight            model.norm.weight
//   output.weight                 lm_head.weight            (absent when embeddings are tied)
//   blk.N.attn_norm.weight        model.layers.N.input_layernorm.weight
//   blk.N.attn_q.weight           model.layers.N.self_attn.q_proj.weight
//   blk.N.attn_k.weight           model.layers.N.self_attn.k_proj.weight
//   blk.N.attn_v.weight           model.layers.N.self_attn.v_proj.weight
//   blk.N.attn_output.weight      model.layers.N.self_attn.o_proj.weight
//   blk.N.ffn_norm.weight         model.layers.N.post_attention_layernorm.weight
//   blk.N.ffn_gate.weight         model.layers.N.mlp.gate_proj.weight
//   blk.N.ffn_up.weight           model.layers.N.mlp.up_proj.weight
//   blk.N.ffn_down.weight         model.layers.N.mlp.down_proj.weight
//
// Q/K layout: see RopeLayout in loader/config.h (GGUF -> interleaved, HF -> half_split).
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "loader/config.h"
#include "loader/gguf.h"
#include "loader/safetensors.h"
#include "loader/tensor.h"

namespace llm {

struct ModelFile {
  enum class Format { gguf, safetensors } format = Format::gguf;
  std::string path;       // what the user gave
  std::string directory;  // HF directory (tokenizer.json etc. live here); empty for a lone file
  Config config;
  std::map<std::string, TensorView> tensors;  // canonical names
  std::unique_ptr<GGUFFile> gguf;              // set for GGUF
  std::vector<SafetensorsFile> shards;         // set for safetensors

  // Look a tensor up and check it: throws llm::Error printing expected vs actual shape ("missing tensor NAME in
  // FILE" when absent) and naming a type the engine cannot dequantise.
  const TensorView& get(const std::string& name, const std::vector<int64_t>& shape) const;
  const TensorView* find(const std::string& name) const;
};

// path: a .gguf file, a .safetensors file (config.json beside it) or an HF directory. Anything else throws
// "not a model: ...". Every tensor of model_expected_tensors(config) is checked (present, shape, type) before
// returning, so a wrong config.json or an incomplete download fails here, naming the tensor.
ModelFile model_file_open(const std::string& path);

// The Llama tensors a config implies, canonical names with shapes (outermost first): token_embd [vocab, dim],
// output_norm [dim], output [vocab, dim] unless tied, and per layer attn_norm, attn_q [heads*head_dim, dim],
// attn_k/attn_v [kv_heads*head_dim, dim], attn_output [dim, heads*head_dim], ffn_norm, ffn_gate/ffn_up
// [ffn, dim], ffn_down [dim, ffn].
std::vector<std::pair<std::string, std::vector<int64_t>>> model_expected_tensors(const Config& c);
// get() on every one of them.
void model_file_check(const ModelFile& m);

// Config from an HF config.json text (file name used in errors) and from GGUF metadata.
Config config_from_hf_json(const std::string& json_text, const std::string& name);
Config config_from_gguf(const GGUFFile& f);

}  // namespace llm
