// Config: the model's hyper-parameters, the same plain struct whether they came from an HF config.json or
// from GGUF `llama.*` keys.
#pragma once
#include <string>
#include <vector>

namespace llm {

// How RoPE pairs the dimensions of a head. This is the ONE documented place where the two checkpoint
// conventions meet:
//  - half_split  (HF checkpoints, GPT-NeoX style): dimension i rotates with i + head_dim/2.
//  - interleaved (GGUF files, llama.cpp style): dimension 2i rotates with 2i+1. llama.cpp's converter permutes
//    the rows of W_Q and W_K of each head so that adjacent-pair RoPE on its weights gives exactly the scores of
//    half-split RoPE on the HF weights. We keep the file's weights as they are and pick the matching RoPE.
// Frequencies are the same in both: pair j (0 <= j < head_dim/2) rotates by pos * theta^(-2j/head_dim).
enum class RopeLayout { half_split, interleaved };

struct RopeScaling {
  enum class Type { none, llama3 } type = Type::none;
  float factor = 1.0f;             // llama3: 8 for Llama-3.1
  float low_freq_factor = 1.0f;    // llama3: 1
  float high_freq_factor = 4.0f;   // llama3: 4
  int original_max_position = 8192;
};

struct Config {
  std::string arch = "llama";  // only the LLaMA architecture family is supported
  int n_layers = 0;
  int dim = 0;         // hidden size
  int n_heads = 0;
  int n_kv_heads = 0;  // == n_heads for multi-head attention (Llama-2 7B), fewer for GQA
  int head_dim = 0;    // usually dim / n_heads
  int ffn_dim = 0;     // SwiGLU intermediate size
  int vocab_size = 0;
  int max_seq_len = 0;  // max_position_embeddings / llama.context_length
  float rope_theta = 10000.0f;
  float rms_eps = 1e-5f;
  RopeScaling rope_scaling;
  RopeLayout rope_layout = RopeLayout::half_split;
  bool tie_embeddings = false;
  int bos_id = -1;           // -1: none
  std::vector<int> eos_ids;  // every id that ends generation (eos, eot)
};

}  // namespace llm
