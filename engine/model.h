// The CPU engine's model: plain Weights (typed views into the mapped file, resolved and checked once at load),
// the KV cache and the RunState scratch, and the forward pass over a block of tokens.
//
// A CUDA backend (issue 5) adds its own forward_cuda with the same shape of signature over device copies of
// these structs; compressed caches (issues 6, 7) add their own cache structs next to KVCache and a matching
// attention op. Nothing here is virtual.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/ops_cpu.h"
#include "loader/config.h"
#include "loader/model_file.h"

namespace llm {

class ThreadPool;
struct KVLowRank;  // engine/kv_lowrank.h (issue 6)
struct KVPrefill;  // engine/kv_prefill.h (issue 7)

struct LayerWeights {
  const float* attn_norm = nullptr;  // (dim)
  QMatrix wq;                        // (n_heads*head_dim, dim)
  QMatrix wk;                        // (n_kv_heads*head_dim, dim)
  QMatrix wv;                        // (n_kv_heads*head_dim, dim)
  QMatrix wo;                        // (dim, n_heads*head_dim)
  const float* ffn_norm = nullptr;   // (dim)
  QMatrix w_gate;                    // (ffn_dim, dim)
  QMatrix w_up;                      // (ffn_dim, dim)
  QMatrix w_down;                    // (dim, ffn_dim)
};

struct Weights {
  QMatrix token_embd;                  // (vocab_size, dim)
  std::vector<LayerWeights> layers;    // (n_layers)
  const float* output_norm = nullptr;  // (dim)
  QMatrix output;                      // (vocab_size, dim); the same matrix as token_embd when tied
  std::vector<float> norms;            // owns the fp32 copies of every norm vector (tiny): (2*n_layers+1, dim)
  size_t weight_bytes = 0;             // bytes of the matrices as stored (what decode streams per token)
};

// Resolve every tensor of a LLaMA model by name with shape checks (ModelFile::get throws expected vs actual).
Weights weights_from_file(const ModelFile& f);

// The full-precision KV cache. Layout (one contiguous block per layer and KV head, so attention streams it):
//   k, v: (n_layers, n_kv_heads, capacity, head_dim) fp32, keys stored after RoPE.
// Token t of the sequence lives at slot t; `n` tokens are valid. Compressed caches (low-rank per issue 6,
// quantised / token-dropping per issue 7) get their own plain struct beside this one and their own attention
// op; they keep this per-(layer, KV head) streaming order and, where tokens are dropped, an explicit position
// array.
struct KVCache {
  int n_layers = 0, n_kv_heads = 0, head_dim = 0;
  int capacity = 0;  // max tokens (the context size)
  int n = 0;         // tokens stored
  std::vector<float> k, v;
  // issue 6 hook: when set, forward_cpu runs the attention sub-layer through engine/kv_lowrank.cpp (a low-rank
  // cache, k/v above left empty, or a calibration capture over k/v). Not owned.
  KVLowRank* lowrank = nullptr;
  // issue 7 hook: when set, forward_cpu hands the whole call to kv_prefill_forward (engine/kv_prefill.cpp): the
  // compressed prefill and the mixed-precision cache; k/v above left empty. Not owned.
  KVPrefill* prefill = nullptr;

  float* k_layer(int l) { return k.data() + static_cast<size_t>(l) * n_kv_heads * capacity * head_dim; }
  float* v_layer(int l) { return v.data() + static_cast<size_t>(l) * n_kv_heads * capacity * head_dim; }
  size_t bytes() const { return (k.size() + v.size()) * sizeof(float); }
};
// allocate = false: the shape and capacity only, for compressed caches (low-rank, prefill-compressed, CUDA) that
// hold the tokens in their own storage.
KVCache kvcache_create(const Config& c, int capacity, bool allocate = true);

// Scratch for a block of up to max_block tokens (prefill runs the prompt in blocks of this size).
struct RunState {
  int max_block = 0;
  std::vector<float> x;        // (max_block, dim)              residual stream
  std::vector<float> xb;       // (max_block, dim)              normed input / attention output projected
  std::vector<float> q;        // (max_block, n_heads*head_dim)
  std::vector<float> k;        // (max_block, n_kv_heads*head_dim)
  std::vector<float> v;        // (max_block, n_kv_heads*head_dim)
  std::vector<float> att;      // (max_block, n_heads*head_dim)  attention output before W_O
  std::vector<float> hb;       // (max_block, ffn_dim)          gate, then silu(gate)*up
  std::vector<float> hb2;      // (max_block, ffn_dim)          up
  std::vector<float> logits;   // (max_block, vocab) when every position is asked for, else (vocab)
  std::vector<float> inv_freq; // (head_dim/2) RoPE inverse frequencies (llama3 scaling applied)
  std::vector<int> pos;        // (max_block)
  std::vector<float> rope_cs;  // (positions, head_dim) rope_table_cpu rows, grown by runstate_rope_table
};
RunState runstate_create(const Config& c, int max_block);
// The RoPE table of positions 0 .. n_pos-1 (grown in steps of 256 positions as the cache fills): the low-rank
// attentions rotate every rebuilt key at every step from it instead of recomputing the angles' cos and sin.
const float* runstate_rope_table(RunState& s, int n_pos, int head_dim);

// Which logits forward_cpu computes: the last token's (generation) or every token's (perplexity, evaluation).
enum class LogitsMode { last, all };

// Run tokens[0..n) at positions cache.n .. cache.n+n-1 (n <= cache.capacity - cache.n, checked), appending
// their keys/values to the cache. Blocks of s.max_block tokens are processed as matrices. Logits land in
// s.logits: (vocab) for LogitsMode::last, (n, vocab) for LogitsMode::all (s.logits grows as needed).
void forward_cpu(const Config& c, const Weights& w, KVCache& cache, RunState& s, const int* tokens, int n,
                 LogitsMode mode, ThreadPool* pool);

}  // namespace llm
