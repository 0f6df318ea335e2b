// A tiny synthetic LLaMA-family model (random fp32 weights built in memory) for the KV-cache tests
// (tests/test_kv_prefill.cpp, tests/test_kv_unified.cpp).
#pragma once
#include <cstdint>
#include <random>
#include <vector>

#include "engine/model.h"

namespace llm_test {

using namespace llm;

// A Llama-2-shaped synthetic model: multi-head attention (kv_heads == heads), half-split RoPE, untied head.
struct TinyLlama2 {
  Config c;
  std::vector<std::vector<float>> store;
  Weights w;
  QMatrix mat(int64_t rows, int64_t cols, std::mt19937_64& g, float scale) {
    std::normal_distribution<float> d(0.0f, scale);
    store.emplace_back(rows * cols);
    for (auto& x : store.back()) x = d(g);
    return QMatrix{GGMLType::F32, reinterpret_cast<const uint8_t*>(store.back().data()), rows, cols, size_t(cols) * 4};
  }
  const float* ones(int64_t n, std::mt19937_64& g) {
    std::uniform_real_distribution<float> d(0.8f, 1.2f);
    store.emplace_back(n);
    for (auto& x : store.back()) x = d(g);
    return store.back().data();
  }
  explicit TinyLlama2(int vocab = 64, int layers = 4, int kv_heads = 4) {
    store.reserve(16 * layers + 8);
    c.arch = "llama";
    c.n_layers = layers;
    c.dim = 64;
    c.n_heads = 4;
    c.n_kv_heads = kv_heads;  // 4: Llama-2 7B/13B multi-head attention; fewer: GQA
    c.head_dim = 16;
    c.ffn_dim = 128;
    c.vocab_size = vocab;
    c.max_seq_len = 256;
    c.rope_theta = 10000.0f;
    c.rms_eps = 1e-5f;
    c.rope_layout = RopeLayout::half_split;
    std::mt19937_64 g(11);
    w.token_embd = mat(vocab, c.dim, g, 1.0f);
    w.layers.resize(layers);
    for (auto& L : w.layers) {
      L.attn_norm = ones(c.dim, g);
      L.wq = mat(c.dim, c.dim, g, 0.25f);
      L.wk = mat(int64_t(kv_heads) * c.head_dim, c.dim, g, 0.25f);
      L.wv = mat(int64_t(kv_heads) * c.head_dim, c.dim, g, 0.25f);
      L.wo = mat(c.dim, c.dim, g, 0.15f);
      L.ffn_norm = ones(c.dim, g);
      L.w_gate = mat(c.ffn_dim, c.dim, g, 0.15f);
      L.w_up = mat(c.ffn_dim, c.dim, g, 0.15f);
      L.w_down = mat(c.dim, c.ffn_dim, g, 0.15f);
    }
    w.output_norm = ones(c.dim, g);
    w.output = mat(vocab, c.dim, g, 0.2f);
  }
};

}  // namespace llm_test
