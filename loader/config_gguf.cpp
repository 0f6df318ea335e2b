// Config from GGUF `llama.*` metadata (the keys llama.cpp's converter writes).
//
// RoPE layout: GGUF files store W_Q/W_K permuted for adjacent-pair RoPE (see RopeLayout in loader/config.h),
// so every GGUF config says interleaved.
//
// RoPE scaling: a GGUF may say `llama.rope.scaling.type = "llama3"` with factor / low_freq_factor /
// high_freq_factor / original_context_length keys. Real Llama-3.1 GGUFs written by llama.cpp's converter do NOT:
// they carry a `rope_freqs.weight` tensor (F32, head_dim/2 values) holding the per-frequency divisor that the
// llama3 rule produces. Config has no room for a table, so we recover the llama3 parameters from it: factor =
// the largest divisor, low/high factors 1 and 4, original context 8192 (the values every Llama-3.x release uses),
// then recompute the table and require it to match the tensor (rel. 1e-3). A table that does not match is an
// error, never a silent fallback to unscaled RoPE. Other scaling types (linear, yarn) are rejected by name.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "loader/error.h"
#include "loader/model_file.h"

namespace llm {

namespace {

int positive_int(const GGUFFile& f, const std::string& key, int64_t v) {
  if (v <= 0 || v > std::numeric_limits<int>::max())
    fail(f.path, ": GGUF metadata key '", key, "' = ", v, " is out of range (expected a positive integer)");
  return static_cast<int>(v);
}

int get_positive(const GGUFFile& f, const std::string& key) { return positive_int(f, key, f.get_int(key)); }

// The llama3 divisor of pair j (frequency theta^(-2j/head_dim)).
double llama3_divisor(const RopeScaling& s, double theta, int head_dim, int j) {
  const double kPi = 3.14159265358979323846;
  double freq = std::pow(theta, -2.0 * j / head_dim);
  double wavelen = 2.0 * kPi / freq;
  double low_wavelen = s.original_max_position / s.low_freq_factor;
  double high_wavelen = s.original_max_position / s.high_freq_factor;
  if (wavelen < high_wavelen) return 1.0;
  if (wavelen > low_wavelen) return s.factor;
  double smooth = (s.original_max_position / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
  return 1.0 / ((1.0 - smooth) / s.factor + smooth);
}

void rope_scaling_from_gguf(const GGUFFile& f, Config& c) {
  std::string type = "none";
  if (f.find("llama.rope.scaling.type")) type = f.get_string("llama.rope.scaling.type");
  if (type == "llama3") {
    c.rope_scaling.type = RopeScaling::Type::llama3;
    c.rope_scaling.factor = static_cast<float>(f.get_float("llama.rope.scaling.factor"));
    if (f.find("llama.rope.scaling.low_freq_factor"))
      c.rope_scaling.low_freq_factor = static_cast<float>(f.get_float("llama.rope.scaling.low_freq_factor"));
    if (f.find("llama.rope.scaling.high_freq_factor"))
      c.rope_scaling.high_freq_factor = static_cast<float>(f.get_float("llama.rope.scaling.high_freq_factor"));
    if (f.find("llama.rope.scaling.original_context_length"))
      c.rope_scaling.original_max_position = get_positive(f, "llama.rope.scaling.original_context_length");
  } else if (type != "none") {
    fail(f.path, ": RoPE scaling type '", type, "' (llama.rope.scaling.type) is not supported; supported: none, llama3");
  }

  const TensorView* rf = f.find_tensor("rope_freqs.weight");
  if (!rf) return;
  if (rf->type != GGMLType::F32 || rf->numel() != c.head_dim / 2)
    fail(f.path, ": tensor rope_freqs.weight is ", ggml_type_name(rf->type), " ", shape_str(rf->shape),
         ", expected F32 [", c.head_dim / 2, "] (one RoPE divisor per frequency pair)");
  std::vector<float> table(static_cast<size_t>(rf->numel()));
  std::memcpy(table.data(), rf->data, table.size() * sizeof(float));
  if (c.rope_scaling.type == RopeScaling::Type::none) {
    c.rope_scaling.type = RopeScaling::Type::llama3;
    c.rope_scaling.factor = *std::max_element(table.begin(), table.end());
    c.rope_scaling.low_freq_factor = 1.0f;
    c.rope_scaling.high_freq_factor = 4.0f;
    c.rope_scaling.original_max_position = 8192;
  }
  for (int j = 0; j < c.head_dim / 2; ++j) {
    double want = llama3_divisor(c.rope_scaling, c.rope_theta, c.head_dim, j);
    if (!(std::fabs(table[j] - want) <= 1e-3 * std::fabs(want)))
      fail(f.path, ": tensor rope_freqs.weight[", j, "] = ", table[j], " does not match llama3 RoPE scaling (factor ",
           c.rope_scaling.factor, ", low 1, high 4, original context 8192 would give ", want,
           "); this RoPE frequency table is not supported");
  }
}

}  // namespace

Config config_from_gguf(const GGUFFile& f) {
  Config c;
  const std::string arch = f.get_string("general.architecture");
  if (arch != "llama")
    fail(f.path, ": architecture '", arch, "' (general.architecture) is not supported; supported: llama "
         "(LLaMA-family models: Llama-2, Llama-3, SmolLM2)");
  c.arch = arch;
  c.n_layers = get_positive(f, "llama.block_count");
  c.dim = get_positive(f, "llama.embedding_length");
  c.n_heads = get_positive(f, "llama.attention.head_count");
  c.n_kv_heads = f.find("llama.attention.head_count_kv") ? get_positive(f, "llama.attention.head_count_kv") : c.n_heads;
  if (c.n_heads % c.n_kv_heads != 0)
    fail(f.path, ": llama.attention.head_count = ", c.n_heads, " is not a multiple of llama.attention.head_count_kv = ",
         c.n_kv_heads);
  c.ffn_dim = get_positive(f, "llama.feed_forward_length");
  c.max_seq_len = get_positive(f, "llama.context_length");
  c.rms_eps = static_cast<float>(f.get_float("llama.attention.layer_norm_rms_epsilon"));
  if (f.find("llama.rope.freq_base")) c.rope_theta = static_cast<float>(f.get_float("llama.rope.freq_base"));

  if (f.find("llama.attention.key_length")) {
    c.head_dim = get_positive(f, "llama.attention.key_length");
  } else if (f.find("llama.rope.dimension_count")) {
    c.head_dim = get_positive(f, "llama.rope.dimension_count");
  } else {
    if (c.dim % c.n_heads != 0)
      fail(f.path, ": llama.embedding_length = ", c.dim, " is not a multiple of llama.attention.head_count = ",
           c.n_heads, " and llama.attention.key_length is missing");
    c.head_dim = c.dim / c.n_heads;
  }
  if (f.find("llama.rope.dimension_count") && f.get_int("llama.rope.dimension_count") != c.head_dim)
    fail(f.path, ": llama.rope.dimension_count = ", f.get_int("llama.rope.dimension_count"), " differs from head_dim ",
         c.head_dim, ": partial rotary embeddings are not supported");
  if (c.head_dim % 2 != 0) fail(f.path, ": head_dim ", c.head_dim, " is odd; RoPE needs an even head dimension");

  if (f.find("llama.vocab_size")) {
    c.vocab_size = get_positive(f, "llama.vocab_size");
  } else if (const GGUFValue* tok = f.find("tokenizer.ggml.tokens"); tok && tok->type == GGUFValueType::ARRAY) {
    c.vocab_size = positive_int(f, "tokenizer.ggml.tokens (length)", static_cast<int64_t>(tok->arr.size()));
  } else {
    fail(f.path, ": missing GGUF metadata key 'llama.vocab_size' and no 'tokenizer.ggml.tokens' array to count; "
         "cannot tell the vocabulary size");
  }

  if (f.find("tokenizer.ggml.bos_token_id")) c.bos_id = static_cast<int>(f.get_int("tokenizer.ggml.bos_token_id"));
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    if (!f.find(key)) continue;
    int64_t id = f.get_int(key);
    if (id < 0 || id >= c.vocab_size) fail(f.path, ": ", key, " = ", id, " is outside the vocabulary [0, ", c.vocab_size, ")");
    if (std::find(c.eos_ids.begin(), c.eos_ids.end(), int(id)) == c.eos_ids.end()) c.eos_ids.push_back(int(id));
  }
  if (c.bos_id >= c.vocab_size || c.bos_id < -1)
    fail(f.path, ": tokenizer.ggml.bos_token_id = ", c.bos_id, " is outside the vocabulary [0, ", c.vocab_size, ")");

  c.tie_embeddings = f.find_tensor("output.weight") == nullptr;
  c.rope_layout = RopeLayout::interleaved;
  rope_scaling_from_gguf(f, c);
  return c;
}

}  // namespace llm
