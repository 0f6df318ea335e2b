// The LLaMA forward pass on the CPU: one flat layer loop over a block of tokens (the prompt as a matrix).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/model.h"
#include "engine/kv_lowrank.h"
#include "engine/kv_prefill.h"
#include "kernels/threadpool_cpu.h"
#include "loader/error.h"
#include "loader/ggml_quants.h"

namespace llm {

namespace {

QMatrix get_matrix(const ModelFile& f, const std::string& name, int64_t rows, int64_t cols) {
  return qmatrix_from_view(f.get(name, {rows, cols}));
}

const float* get_norm(const ModelFile& f, const std::string& name, int64_t dim, std::vector<float>& store,
                      size_t slot) {
  const TensorView& t = f.get(name, {dim});
  float* dst = store.data() + slot * dim;
  tensor_to_f32(t, dst);
  return dst;
}

}  // namespace

Weights weights_from_file(const ModelFile& f) {
  const Config& c = f.config;
  if (c.n_layers <= 0 || c.dim <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 || c.head_dim <= 0 || c.ffn_dim <= 0 ||
      c.vocab_size <= 0)
    fail(f.path, ": incomplete model config (layers ", c.n_layers, ", dim ", c.dim, ", heads ", c.n_heads, "/",
         c.n_kv_heads, ", head_dim ", c.head_dim, ", ffn ", c.ffn_dim, ", vocab ", c.vocab_size, ")");
  if (c.n_heads % c.n_kv_heads != 0)
    fail(f.path, ": n_heads ", c.n_heads, " is not a multiple of n_kv_heads ", c.n_kv_heads);
  if (c.head_dim % 2 != 0 || c.head_dim > 1024) fail(f.path, ": head_dim ", c.head_dim, " unsupported (even, <= 1024)");
  const int64_t dim = c.dim, qd = int64_t(c.n_heads) * c.head_dim, kvd = int64_t(c.n_kv_heads) * c.head_dim;
  Weights w;
  w.norms.resize(static_cast<size_t>(2 * c.n_layers + 1) * dim);
  w.token_embd = get_matrix(f, "token_embd.weight", c.vocab_size, dim);
  w.output_norm = get_norm(f, "output_norm.weight", dim, w.norms, 2 * c.n_layers);
  if (f.find("output.weight")) {
    w.output = get_matrix(f, "output.weight", c.vocab_size, dim);
  } else {
    if (!c.tie_embeddings && f.format == ModelFile::Format::safetensors)
      fail(f.path, ": no output head (lm_head.weight / output.weight) and tie_word_embeddings is false");
    w.output = w.token_embd;  // tied embeddings (GGUF files simply omit output.weight)
  }
  w.layers.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    LayerWeights& L = w.layers[l];
    L.attn_norm = get_norm(f, p + "attn_norm.weight", dim, w.norms, 2 * l);
    L.ffn_norm = get_norm(f, p + "ffn_norm.weight", dim, w.norms, 2 * l + 1);
    L.wq = get_matrix(f, p + "attn_q.weight", qd, dim);
    L.wk = get_matrix(f, p + "attn_k.weight", kvd, dim);
    L.wv = get_matrix(f, p + "attn_v.weight", kvd, dim);
    L.wo = get_matrix(f, p + "attn_output.weight", dim, qd);
    L.w_gate = get_matrix(f, p + "ffn_gate.weight", c.ffn_dim, dim);
    L.w_up = get_matrix(f, p + "ffn_up.weight", c.ffn_dim, dim);
    L.w_down = get_matrix(f, p + "ffn_down.weight", dim, c.ffn_dim);
    for (const QMatrix* m : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down})
      w.weight_bytes += m->row_bytes * m->rows;
  }
  w.weight_bytes += w.output.row_bytes * w.output.rows;
  return w;
}

KVCache kvcache_create(const Config& c, int capacity, bool allocate) {
  if (capacity <= 0) fail("context size must be positive, got ", capacity);
  KVCache kv;
  kv.n_layers = c.n_layers;
  kv.n_kv_heads = c.n_kv_heads;
  kv.head_dim = c.head_dim;
  kv.capacity = capacity;
  if (!allocate) return kv;
  const size_t n = static_cast<size_t>(c.n_layers) * c.n_kv_heads * capacity * c.head_dim;
  kv.k.assign(n, 0.0f);
  kv.v.assign(n, 0.0f);
  return kv;
}

RunState runstate_create(const Config& c, int max_block) {
  RunState s;
  s.max_block = max_block;
  const size_t B = max_block, qd = size_t(c.n_heads) * c.head_dim, kvd = size_t(c.n_kv_heads) * c.head_dim;
  s.x.resize(B * c.dim);
  s.xb.resize(B * c.dim);
  s.q.resize(B * qd);
  s.k.resize(B * kvd);
  s.v.resize(B * kvd);
  s.att.resize(B * qd);
  s.hb.resize(B * c.ffn_dim);
  s.hb2.resize(B * c.ffn_dim);
  s.logits.resize(c.vocab_size);
  s.inv_freq.resize(c.head_dim / 2);
  rope_inv_freq_cpu(s.inv_freq.data(), c.head_dim, c.rope_theta, c.rope_scaling);
  s.pos.resize(B);
  return s;
}

const float* runstate_rope_table(RunState& s, int n_pos, int head_dim) {
  const size_t have = s.rope_cs.size() / size_t(head_dim);
  if (size_t(n_pos) > have) {
    const int want = (n_pos + 255) / 256 * 256;
    s.rope_cs.resize(size_t(want) * head_dim);
    rope_table_cpu(s.rope_cs.data(), static_cast<int>(have), want, head_dim, s.inv_freq.data());
  }
  return s.rope_cs.data();
}

// One block of n <= s.max_block tokens. out_logits: (n, vocab) when all, (vocab) of the last token otherwise.
static void forward_block(const Config& c, const Weights& w, KVCache& kv, RunState& s, const int* tokens, int n,
                          LogitsMode mode, float* out_logits, ThreadPool* pool) {
  // out_logits == nullptr: an inner prompt block whose logits nobody reads
  const int dim = c.dim, hd = c.head_dim, qd = c.n_heads * hd, kvd = c.n_kv_heads * hd;
  const int pos0 = kv.n;
  for (int i = 0; i < n; ++i) s.pos[i] = pos0 + i;
  float* x = s.x.data();
  embedding_cpu(x, tokens, n, w.token_embd);

  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = w.layers[l];
    // ---- attention ----
    rmsnorm_cpu(s.xb.data(), x, L.attn_norm, n, dim, c.rms_eps, pool);
    if (kv.lowrank) {  // issue 6 hook: low-rank KV cache / calibration (engine/kv_lowrank.cpp)
      kv_lowrank_attention(c, L, l, *kv.lowrank, kv, s, n, pos0, pool);
    } else {  // (the full-cache body below keeps its original indentation so merges stay clean)
    {
      float* outs[3] = {s.q.data(), s.k.data(), s.v.data()};
      const QMatrix* ws[3] = {&L.wq, &L.wk, &L.wv};
      matmul_group_cpu(outs, ws, 3, s.xb.data(), n, pool);
    }
    rope_cpu(s.q.data(), s.pos.data(), n, c.n_heads, hd, qd, s.inv_freq.data(), c.rope_layout, pool);
    rope_cpu(s.k.data(), s.pos.data(), n, c.n_kv_heads, hd, kvd, s.inv_freq.data(), c.rope_layout, pool);
    // append to the cache: token i, KV head g -> slot (g, pos0+i)
    float* kc = kv.k_layer(l);
    float* vc = kv.v_layer(l);
    for (int i = 0; i < n; ++i)
      for (int g = 0; g < c.n_kv_heads; ++g) {
        const size_t dst = (static_cast<size_t>(g) * kv.capacity + pos0 + i) * hd;
        std::memcpy(kc + dst, s.k.data() + static_cast<size_t>(i) * kvd + g * hd, hd * sizeof(float));
        std::memcpy(vc + dst, s.v.data() + static_cast<size_t>(i) * kvd + g * hd, hd * sizeof(float));
      }
    attention_cpu(s.att.data(), s.q.data(), kc, vc, n, pos0 + n, c.n_heads, c.n_kv_heads, hd, kv.capacity, pool);
    matmul_cpu(s.xb.data(), s.att.data(), L.wo, n, pool);
    }  // end issue 6 hook
    add_cpu(x, s.xb.data(), static_cast<int64_t>(n) * dim);
    // ---- feed-forward (SwiGLU) ----
    rmsnorm_cpu(s.xb.data(), x, L.ffn_norm, n, dim, c.rms_eps, pool);
    {
      float* outs[2] = {s.hb.data(), s.hb2.data()};
      const QMatrix* ws[2] = {&L.w_gate, &L.w_up};
      matmul_group_cpu(outs, ws, 2, s.xb.data(), n, pool);
    }
    swiglu_cpu(s.hb.data(), s.hb.data(), s.hb2.data(), static_cast<int64_t>(n) * c.ffn_dim, pool);
    matmul_cpu(s.xb.data(), s.hb.data(), L.w_down, n, pool);
    add_cpu(x, s.xb.data(), static_cast<int64_t>(n) * dim);
  }
  kv.n = pos0 + n;

  if (!out_logits) return;
  if (mode == LogitsMode::all) {
    rmsnorm_cpu(s.xb.data(), x, w.output_norm, n, dim, c.rms_eps, pool);
    matmul_cpu(out_logits, s.xb.data(), w.output, n, pool);
  } else {
    rmsnorm_cpu(s.xb.data(), x + static_cast<size_t>(n - 1) * dim, w.output_norm, 1, dim, c.rms_eps, pool);
    matmul_cpu(out_logits, s.xb.data(), w.output, 1, pool);
  }
}

void forward_cpu(const Config& c, const Weights& w, KVCache& kv, RunState& s, const int* tokens, int n,
                 LogitsMode mode, ThreadPool* pool) {
  if (n <= 0) fail("forward: no tokens to run");
  if (n > kv.capacity - kv.n)
    fail("the context is full: ", kv.n, " tokens cached + ", n, " new > context size ", kv.capacity,
         " (use a larger context, -c, or a shorter input)");
  const size_t V = c.vocab_size;
  if (mode == LogitsMode::all && s.logits.size() < static_cast<size_t>(n) * V) s.logits.resize(size_t(n) * V);
  if (kv.prefill) {  // issue 7 hook: compressed prefill / mixed-precision cache (engine/kv_prefill.cpp)
    kv_prefill_forward(c, w, *kv.prefill, kv, s, tokens, n, mode, pool);
    return;
  }
  if (kv.lowrank) kv_lowrank_begin(*kv.lowrank, kv.n, n);  // issue 6 hook: value ranks of these tokens
  for (int b = 0; b < n; b += s.max_block) {
    const int m = std::min(s.max_block, n - b);
    float* out = mode == LogitsMode::all ? s.logits.data() + static_cast<size_t>(b) * V
                 : b + m == n             ? s.logits.data()
                                          : nullptr;
    forward_block(c, w, kv, s, tokens + b, m, mode, out, pool);
  }
}

}  // namespace llm
