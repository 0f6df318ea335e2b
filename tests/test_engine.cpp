// The CPU forward pass on a small synthetic LLaMA (random fp32 weights built here) against a naive reference
// written in this file straight from the model's equations (HF's modeling_llama: rotate_half RoPE, repeat_kv GQA,
// causal softmax, SwiGLU), token by token in double precision. Plus: the GGUF/HF RoPE conventions agree, batched
// prefill equals token-by-token decode, and KV-cache capacity errors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "engine/model.h"
#include "kernels/threadpool_cpu.h"
#include "loader/error.h"

using namespace llm;

namespace {

struct SynthModel {
  Config c;
  std::vector<std::vector<float>> store;  // owns every matrix
  Weights w;

  QMatrix mat(int64_t rows, int64_t cols, std::mt19937_64& g, float scale) {
    std::normal_distribution<float> d(0.0f, scale);
    store.emplace_back(rows * cols);
    for (auto& x : store.back()) x = d(g);
    return QMatrix{GGMLType::F32, reinterpret_cast<const uint8_t*>(store.back().data()), rows, cols,
                   static_cast<size_t>(cols) * 4};
  }
  const float* vec(int64_t n, std::mt19937_64& g) {
    std::uniform_real_distribution<float> d(0.5f, 1.5f);
    store.emplace_back(n);
    for (auto& x : store.back()) x = d(g);
    return store.back().data();
  }
};

SynthModel make_model(bool tied, RopeLayout layout, RopeScaling scaling = {}) {
  SynthModel m;
  m.store.reserve(64);
  Config& c = m.c;
  c.n_layers = 2;
  c.dim = 48;
  c.n_heads = 6;
  c.n_kv_heads = 2;
  c.head_dim = 8;
  c.ffn_dim = 96;
  c.vocab_size = 40;
  c.max_seq_len = 64;
  c.rope_theta = 10000.0f;
  c.rms_eps = 1e-5f;
  c.rope_layout = layout;
  c.rope_scaling = scaling;
  c.tie_embeddings = tied;
  std::mt19937_64 g(7);
  const float s = 0.3f;
  m.w.token_embd = m.mat(c.vocab_size, c.dim, g, 1.0f);
  m.w.layers.resize(c.n_layers);
  for (auto& L : m.w.layers) {
    L.attn_norm = m.vec(c.dim, g);
    L.wq = m.mat(c.n_heads * c.head_dim, c.dim, g, s);
    L.wk = m.mat(c.n_kv_heads * c.head_dim, c.dim, g, s);
    L.wv = m.mat(c.n_kv_heads * c.head_dim, c.dim, g, s);
    L.wo = m.mat(c.dim, c.n_heads * c.head_dim, g, s);
    L.ffn_norm = m.vec(c.dim, g);
    L.w_gate = m.mat(c.ffn_dim, c.dim, g, s);
    L.w_up = m.mat(c.ffn_dim, c.dim, g, s);
    L.w_down = m.mat(c.dim, c.ffn_dim, g, s);
  }
  m.w.output_norm = m.vec(c.dim, g);
  m.w.output = tied ? m.w.token_embd : m.mat(c.vocab_size, c.dim, g, s);
  return m;
}

const float* F(const QMatrix& q) { return reinterpret_cast<const float*>(q.data); }

// y = W x in double
std::vector<double> mv(const QMatrix& w, const std::vector<double>& x) {
  std::vector<double> y(w.rows, 0.0);
  for (int64_t r = 0; r < w.rows; ++r)
    for (int64_t k = 0; k < w.cols; ++k) y[r] += double(F(w)[r * w.cols + k]) * x[k];
  return y;
}
std::vector<double> rms(const std::vector<double>& x, const float* w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  double s = 1.0 / std::sqrt(ss / x.size() + eps);
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * s * w[i];
  return y;
}

// HF LlamaForCausalLM, half-split (rotate_half) RoPE, all logits, in double.
std::vector<std::vector<double>> reference_logits(const SynthModel& m, const std::vector<int>& toks,
                                                  const std::vector<float>& inv_freq) {
  const Config& c = m.c;
  const int hd = c.head_dim, half = hd / 2, T = static_cast<int>(toks.size());
  std::vector<std::vector<std::vector<double>>> K(c.n_layers), V(c.n_layers);
  std::vector<std::vector<double>> out;
  for (int t = 0; t < T; ++t) {
    std::vector<double> x(c.dim);
    for (int i = 0; i < c.dim; ++i) x[i] = F(m.w.token_embd)[toks[t] * c.dim + i];
    for (int l = 0; l < c.n_layers; ++l) {
      const LayerWeights& L = m.w.layers[l];
      auto h = rms(x, L.attn_norm, c.rms_eps);
      auto q = mv(L.wq, h), k = mv(L.wk, h), v = mv(L.wv, h);
      auto rope = [&](std::vector<double>& z, int heads) {
        for (int hh = 0; hh < heads; ++hh)
          for (int j = 0; j < half; ++j) {
            double ang = double(float(t) * inv_freq[j]);
            double a = z[hh * hd + j], b = z[hh * hd + j + half];
            z[hh * hd + j] = a * std::cos(ang) - b * std::sin(ang);
            z[hh * hd + j + half] = b * std::cos(ang) + a * std::sin(ang);
          }
      };
      rope(q, c.n_heads);
      rope(k, c.n_kv_heads);
      K[l].push_back(k);
      V[l].push_back(v);
      std::vector<double> att(c.n_heads * hd, 0.0);
      for (int hh = 0; hh < c.n_heads; ++hh) {
        int g = hh / (c.n_heads / c.n_kv_heads);
        std::vector<double> s(t + 1);
        double mx = -1e300, sum = 0;
        for (int j = 0; j <= t; ++j) {
          double d = 0;
          for (int e = 0; e < hd; ++e) d += q[hh * hd + e] * K[l][j][g * hd + e];
          s[j] = d / std::sqrt(double(hd));
          mx = std::max(mx, s[j]);
        }
        for (auto& z : s) sum += (z = std::exp(z - mx));
        for (int j = 0; j <= t; ++j)
          for (int e = 0; e < hd; ++e) att[hh * hd + e] += s[j] / sum * V[l][j][g * hd + e];
      }
      auto o = mv(L.wo, att);
      for (int i = 0; i < c.dim; ++i) x[i] += o[i];
      auto h2 = rms(x, L.ffn_norm, c.rms_eps);
      auto gt = mv(L.w_gate, h2), up = mv(L.w_up, h2);
      for (int i = 0; i < c.ffn_dim; ++i) gt[i] = gt[i] / (1 + std::exp(-gt[i])) * up[i];
      auto dn = mv(L.w_down, gt);
      for (int i = 0; i < c.dim; ++i) x[i] += dn[i];
    }
    out.push_back(mv(m.w.output, rms(x, m.w.output_norm, c.rms_eps)));
  }
  return out;
}

double max_diff(const float* a, const std::vector<double>& b) {
  double d = 0;
  for (size_t i = 0; i < b.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
  return d;
}

}  // namespace

TEST_CASE("forward_cpu equals a naive double-precision LLaMA (GQA, tied and separate heads, llama3 RoPE)") {
  RopeScaling l3;
  l3.type = RopeScaling::Type::llama3;
  l3.factor = 8;
  l3.original_max_position = 16;  // small, so that this head_dim sees all three frequency bands
  for (bool tied : {false, true})
    for (RopeScaling sc : {RopeScaling{}, l3}) {
      SynthModel m = make_model(tied, RopeLayout::half_split, sc);
      const std::vector<int> toks = {3, 17, 17, 0, 39, 8, 22, 5, 11, 30, 2};
      const int T = static_cast<int>(toks.size());
      ThreadPool pool(2);
      KVCache kv = kvcache_create(m.c, 32);
      RunState s = runstate_create(m.c, 4);  // blocks of 4: exercises prefill across blocks
      forward_cpu(m.c, m.w, kv, s, toks.data(), T, LogitsMode::all, &pool);
      auto ref = reference_logits(m, toks, s.inv_freq);
      // fp32 vs double through 2 layers of width <= 96 with O(1) activations: errors ~1e-5; 1e-3 is loose
      // enough for any summation order and tight enough to catch a wrong mask, pairing or norm (those give O(1)).
      for (int t = 0; t < T; ++t) CHECK(max_diff(s.logits.data() + size_t(t) * m.c.vocab_size, ref[t]) < 1e-3);
      CHECK(kv.n == T);
    }
}

TEST_CASE("batched prefill equals token-by-token decode") {
  SynthModel m = make_model(false, RopeLayout::interleaved);
  const std::vector<int> toks = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13};
  KVCache a = kvcache_create(m.c, 20), b = kvcache_create(m.c, 20);
  RunState sa = runstate_create(m.c, 16), sb = runstate_create(m.c, 1);
  forward_cpu(m.c, m.w, a, sa, toks.data(), 13, LogitsMode::last, nullptr);
  for (int t = 0; t < 13; ++t) forward_cpu(m.c, m.w, b, sb, &toks[t], 1, LogitsMode::last, nullptr);
  for (int i = 0; i < m.c.vocab_size; ++i) CHECK(sa.logits[i] == doctest::Approx(sb.logits[i]).epsilon(1e-4));
  for (size_t i = 0; i < a.k.size(); ++i) REQUIRE(a.k[i] == doctest::Approx(b.k[i]).epsilon(1e-4));
}

TEST_CASE("RoPE layouts: interleaved RoPE on row-permuted W_Q/W_K equals half-split on the original (GGUF vs HF)") {
  SynthModel hf = make_model(false, RopeLayout::half_split);
  SynthModel gg = make_model(false, RopeLayout::interleaved);
  // llama.cpp's converter: within each head, output row 2j <- j, 2j+1 <- j + half
  const int hd = hf.c.head_dim, half = hd / 2, dim = hf.c.dim;
  for (int l = 0; l < hf.c.n_layers; ++l)
    for (auto pick : {&LayerWeights::wq, &LayerWeights::wk}) {
      const QMatrix& src = hf.w.layers[l].*pick;
      float* dst = const_cast<float*>(F(gg.w.layers[l].*pick));
      for (int64_t h = 0; h < src.rows / hd; ++h)
        for (int j = 0; j < half; ++j) {
          std::memcpy(dst + (h * hd + 2 * j) * dim, F(src) + (h * hd + j) * dim, dim * 4);
          std::memcpy(dst + (h * hd + 2 * j + 1) * dim, F(src) + (h * hd + j + half) * dim, dim * 4);
        }
    }
  const std::vector<int> toks = {5, 9, 2, 33, 7, 1, 0, 12};
  KVCache a = kvcache_create(hf.c, 8), b = kvcache_create(gg.c, 8);
  RunState sa = runstate_create(hf.c, 8), sb = runstate_create(gg.c, 8);
  forward_cpu(hf.c, hf.w, a, sa, toks.data(), 8, LogitsMode::all, nullptr);
  forward_cpu(gg.c, gg.w, b, sb, toks.data(), 8, LogitsMode::all, nullptr);
  for (size_t i = 0; i < size_t(8) * hf.c.vocab_size; ++i)
    CHECK(sa.logits[i] == doctest::Approx(sb.logits[i]).epsilon(1e-4));
}

TEST_CASE("forward_cpu refuses what does not fit the cache and bad token ids") {
  SynthModel m = make_model(true, RopeLayout::half_split);
  KVCache kv = kvcache_create(m.c, 4);
  RunState s = runstate_create(m.c, 4);
  std::vector<int> five = {1, 2, 3, 4, 5};
  CHECK_THROWS_WITH_AS(forward_cpu(m.c, m.w, kv, s, five.data(), 5, LogitsMode::last, nullptr),
                       doctest::Contains("context"), llm::Error);
  CHECK(kv.n == 0);
  int bad = 40;
  CHECK_THROWS_AS(forward_cpu(m.c, m.w, kv, s, &bad, 1, LogitsMode::last, nullptr), llm::Error);
  CHECK_THROWS_AS(kvcache_create(m.c, 0), llm::Error);
}
