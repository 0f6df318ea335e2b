// Helpers shared by the CUDA forward tests (test_forward_cuda.cu, test_forward_kvq_cuda.cu,
// test_forward_keep_cuda.cu, test_forward_svdimp_cuda.cu, test_forward_svdkeep_cuda.cu,
// test_forward_sinks_cuda.cu): the device model's 16-bit weights (bf16, or f16 for a
// model of DType::f16) copied back and viewed as a CPU Weights struct, so forward_cpu runs on exactly the device's
// weights, the small synthetic configs those tests build, and the compressed-cache comparisons (a sequence of calls
// run on the CPU's and the device's compressed cache, logits compared), and the bench run on a tiny synthetic model.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "cuda_test_util.cuh"
#include "engine/bench_cuda.h"
#include "engine/forward_cuda.cuh"
#include "engine/kv_lowrank.h"
#include "engine/kv_prefill.h"
#include "engine/llm.h"
#include "engine/model.h"
#include "kernels/ops_cpu.h"
#include "kernels/threadpool_cpu.h"
#include "loader/model_file.h"
#include "tokenizer/tokenizer.h"

namespace llm_cuda_test {

// Host copies of a CudaModel's weights, viewed as a CPU Weights struct (BF16 or F16 QMatrix, as m.dtype).
struct HostWeights {
  std::vector<std::vector<uint16_t>> mats;
  std::vector<float> norms;
  llm::Weights w;
};

inline llm::QMatrix view(const std::vector<uint16_t>& bits, size_t row0, int64_t rows, int64_t cols,
                         llm::GGMLType type = llm::GGMLType::BF16) {
  llm::QMatrix m;
  m.type = type;
  m.data = reinterpret_cast<const uint8_t*>(bits.data() + row0 * cols);
  m.rows = rows;
  m.cols = cols;
  m.row_bytes = size_t(cols) * 2;
  return m;
}

inline void host_weights(const llm::CudaModel& m, HostWeights& h) {
  const llm::Config& c = m.c;
  const size_t dim = c.dim, qd = size_t(c.n_heads) * c.head_dim, kvd = size_t(c.n_kv_heads) * c.head_dim;
  const size_t ffn = c.ffn_dim, V = c.vocab_size;
  h.mats.reserve(2 + 4 * c.n_layers);
  const llm::GGMLType t = m.dtype == llm::DType::f16 ? llm::GGMLType::F16 : llm::GGMLType::BF16;
  auto view = [t](const std::vector<uint16_t>& bits, size_t row0, int64_t rows, int64_t cols) {
    return llm_cuda_test::view(bits, row0, rows, cols, t);
  };
  auto get = [&](const bf16* p, size_t n) -> const std::vector<uint16_t>& {
    h.mats.emplace_back(n);
    CUDA_CHECK(cudaMemcpy(h.mats.back().data(), p, n * 2, cudaMemcpyDeviceToHost));
    return h.mats.back();
  };
  h.norms.resize((2 * c.n_layers + 1) * dim);
  auto norm = [&](const float* p, size_t slot) {
    CUDA_CHECK(cudaMemcpy(h.norms.data() + slot * dim, p, dim * 4, cudaMemcpyDeviceToHost));
    return h.norms.data() + slot * dim;
  };
  h.w.token_embd = view(get(m.embd, V * dim), 0, V, dim);
  h.w.output = m.output == m.embd ? h.w.token_embd : view(get(m.output, V * dim), 0, V, dim);
  h.w.output_norm = norm(m.output_norm, 2 * c.n_layers);
  h.w.layers.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    const llm::CudaLayer& D = m.layers[l];
    llm::LayerWeights& L = h.w.layers[l];
    const auto& qkv = get(D.wqkv, (qd + 2 * kvd) * dim);
    L.wq = view(qkv, 0, qd, dim);
    L.wk = view(qkv, qd, kvd, dim);
    L.wv = view(qkv, qd + kvd, kvd, dim);
    L.wo = view(get(D.wo, dim * qd), 0, dim, qd);
    const auto& gu = get(D.wgu, 2 * ffn * dim);
    L.w_gate = view(gu, 0, ffn, dim);
    L.w_up = view(gu, ffn, ffn, dim);
    L.w_down = view(get(D.wdown, dim * ffn), 0, dim, ffn);
    L.attn_norm = norm(D.attn_norm, 2 * l);
    L.ffn_norm = norm(D.ffn_norm, 2 * l + 1);
  }
}

// A small model config; llama3 = true adds Llama-3.1 rope scaling (factor 8).
inline llm::Config small_config(int dim, int heads, int kv_heads, int ffn, int layers, int vocab,
                                llm::RopeLayout layout, bool llama3 = false) {
  llm::Config c;
  c.n_layers = layers;
  c.dim = dim;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.head_dim = dim / heads;
  c.ffn_dim = ffn;
  c.vocab_size = vocab;
  c.max_seq_len = 4096;
  c.rope_theta = 500000.0f;
  c.rope_layout = layout;
  if (llama3) {
    c.rope_scaling.type = llm::RopeScaling::Type::llama3;
    c.rope_scaling.factor = 8.0f;
  }
  return c;
}


// n token ids drawn from rng, uniform over the vocabulary
inline std::vector<int> random_tokens(std::mt19937& rng, int n, int vocab) {
  std::vector<int> t(n);
  for (int& x : t) x = int(rng() % vocab);
  return t;
}

// ---- the compressed-cache comparisons (test_forward_kvq_cuda.cu, test_forward_keep_cuda.cu,
// test_forward_svdimp_cuda.cu) ----

// The calls of the synthetic comparison: the prompt, `steps` single tokens, one call of 5 tokens, 3 single tokens.
// Each call's last logits appended; calls() lists the token runs.
inline std::vector<std::vector<int>> calls(const std::vector<int>& prompt, std::mt19937& rng, int vocab, int steps) {
  std::vector<std::vector<int>> r = {prompt};
  for (int i = 0; i < steps; ++i) r.push_back({int(rng() % vocab)});
  std::vector<int> five(5);
  for (int& t : five) t = int(rng() % vocab);
  r.push_back(five);
  for (int i = 0; i < 3; ++i) r.push_back({int(rng() % vocab)});
  return r;
}
// prefill_entries: each layer's cached positions right after the prefill (the first run); layer_tokens: the tokens
// each layer computed in it (KVPrefill::layer_tokens).
inline std::vector<float> run_cpu(const llm::Config& c, const llm::Weights& w, const llm::KVPrefillSpec& spec,
                                  int ctx, const std::vector<std::vector<int>>& runs, llm::ThreadPool* pool,
                                  size_t* bytes, const llm::KVLowRankModel* lowrank = nullptr,
                                  std::vector<std::vector<int32_t>>* prefill_entries = nullptr,
                                  std::vector<int>* layer_tokens = nullptr) {
  llm::KVPrefill p = llm::kv_prefill_create(spec, c, lowrank);
  llm::KVCache kv = llm::kvcache_create(c, ctx, /*allocate=*/false);
  kv.prefill = &p;
  llm::RunState rs = llm::runstate_create(c, ctx);
  std::vector<float> out;
  for (const auto& r : runs) {
    llm::forward_cpu(c, w, kv, rs, r.data(), int(r.size()), llm::LogitsMode::last, pool);
    out.insert(out.end(), rs.logits.begin(), rs.logits.begin() + c.vocab_size);
    if (&r == &runs[0] && prefill_entries) {  // after the prefill: each layer's cached positions
      prefill_entries->clear();
      for (const llm::KVPrefillLayer& L : p.layers) prefill_entries->push_back(L.pos);
    }
  }
  if (layer_tokens) *layer_tokens = p.layer_tokens;
  *bytes = p.bytes_used();
  return out;
}
inline std::vector<float> run_gpu(llm::CudaSession& s, const std::vector<std::vector<int>>& runs) {
  const int V = s.m->c.vocab_size;
  std::vector<float> out(runs.size() * V);
  llm::cuda_session_reset(s);
  for (size_t i = 0; i < runs.size(); ++i)  // single tokens: a replay of the decode graph
    llm::forward_cuda(s, runs[i].data(), int(runs[i].size()), llm::LogitsMode::last, out.data() + i * V);
  return out;
}

// Greedy decoding of `steps` tokens after the prompt (test_forward_keep_cuda.cu, test_forward_svdkeep_cuda.cu): the
// tokens and, per step, the top-1 lead over the runner-up. greedy_cpu runs the CPU's compressed cache of spec (on
// the low-rank model lowrank when given: the unified cache), greedy_gpu the session's (its decode graph).
struct Greedy {
  std::vector<int> tokens;
  std::vector<float> lead;
};
inline void pick(Greedy& g, const float* logits, int V) {
  const int a = int(std::max_element(logits, logits + V) - logits);
  float second = -1e30f;
  for (int j = 0; j < V; ++j)
    if (j != a) second = std::max(second, logits[j]);
  g.tokens.push_back(a);
  g.lead.push_back(logits[a] - second);
}
inline Greedy greedy_cpu(const llm::Config& c, const llm::Weights& w, const llm::KVPrefillSpec& spec, int ctx,
                         const std::vector<int>& prompt, int steps, llm::ThreadPool* pool,
                         const llm::KVLowRankModel* lowrank = nullptr) {
  llm::KVPrefill p = llm::kv_prefill_create(spec, c, lowrank);
  llm::KVCache kv = llm::kvcache_create(c, ctx, /*allocate=*/false);
  kv.prefill = &p;
  llm::RunState rs = llm::runstate_create(c, ctx);
  Greedy g;
  llm::forward_cpu(c, w, kv, rs, prompt.data(), int(prompt.size()), llm::LogitsMode::last, pool);
  pick(g, rs.logits.data(), c.vocab_size);
  for (int i = 1; i < steps; ++i) {
    llm::forward_cpu(c, w, kv, rs, &g.tokens.back(), 1, llm::LogitsMode::last, pool);
    pick(g, rs.logits.data(), c.vocab_size);
  }
  return g;
}
inline Greedy greedy_gpu(llm::CudaSession& s, const std::vector<int>& prompt, int steps) {
  const int V = s.m->c.vocab_size;
  std::vector<float> logits(V);
  Greedy g;
  llm::cuda_session_reset(s);
  llm::forward_cuda(s, prompt.data(), int(prompt.size()), llm::LogitsMode::last, logits.data());
  pick(g, logits.data(), V);
  for (int i = 1; i < steps; ++i) {  // a replay of the decode graph each
    llm::forward_cuda(s, &g.tokens.back(), 1, llm::LogitsMode::last, logits.data());
    pick(g, logits.data(), V);
  }
  return g;
}

struct Diff {
  double max_abs = 0, max_ref = 0;
  int rows = 0, decided = 0, decided_agree = 0;
  std::vector<float> lead;  // per row: the reference's top-1 lead over its runner-up
};
inline Diff diff(const std::vector<float>& got, const std::vector<float>& ref, int V, float margin) {
  Diff d;
  d.rows = int(ref.size() / V);
  for (int i = 0; i < d.rows; ++i) {
    const float* g = got.data() + size_t(i) * V;
    const float* f = ref.data() + size_t(i) * V;
    for (int j = 0; j < V; ++j) {
      d.max_abs = std::max(d.max_abs, double(std::fabs(g[j] - f[j])));
      d.max_ref = std::max(d.max_ref, double(std::fabs(f[j])));
    }
    const int af = int(std::max_element(f, f + V) - f), ag = int(std::max_element(g, g + V) - g);
    float second = -1e30f;
    for (int j = 0; j < V; ++j)
      if (j != af) second = std::max(second, f[j]);
    d.lead.push_back(f[af] - second);
    if (f[af] - second > margin) {
      ++d.decided;
      d.decided_agree += ag == af;
    }
  }
  return d;
}

// A randomized synthetic model (the same weights for the same config and seed).
inline llm::CudaModel synthetic_model(const llm::Config& c) {
  llm::CudaModel m = llm::cuda_model_alloc(c, false);
  llm::cuda_model_randomize(m, 42);
  return m;
}

// Prompt logits (every position), then one decode step per token of feed (the session path: one graph replay per
// step), each step's logits appended; the session is reset first.
inline std::vector<float> run_prompt_feed(llm::CudaSession& s, const std::vector<int>& prompt,
                                          const std::vector<int>& feed) {
  const size_t V = s.m->c.vocab_size, n = prompt.size();
  std::vector<float> out((n + feed.size()) * V);
  llm::cuda_session_reset(s);
  llm::forward_cuda(s, prompt.data(), int(n), llm::LogitsMode::all, out.data());
  for (size_t i = 0; i < feed.size(); ++i)
    llm::forward_cuda(s, &feed[i], 1, llm::LogitsMode::last, out.data() + (n + i) * V);
  return out;
}

// Rows of V logits (the first `rows`) whose top-1 is the same in got and ref.
inline int top1_agreements(const std::vector<float>& got, const std::vector<float>& ref, int V, int rows) {
  int agree = 0;
  for (int i = 0; i < rows; ++i)
    agree += llm::argmax_cpu(got.data() + size_t(i) * V, V) == llm::argmax_cpu(ref.data() + size_t(i) * V, V);
  return agree;
}

// The seeded synthetic model's full-cache forward and, on a second copy of it, the low-rank cache of spec (bases
// from the host copy of the device's weights), sessions of ctx positions in blocks of max_block: run_prompt_feed's
// logits and the sessions' KV bytes of each.
struct FullVsLowRank {
  std::vector<float> full, lowrank;
  size_t full_bytes = 0, lowrank_bytes = 0;
};
inline FullVsLowRank full_vs_lowrank(const llm::Config& c, const std::string& spec, int ctx, int max_block,
                                     const std::vector<int>& prompt, const std::vector<int>& feed,
                                     llm::ThreadPool* pool) {
  FullVsLowRank r;
  llm::CudaModel full = synthetic_model(c);
  llm::CudaSessionPtr sf = llm::cuda_session_create(full, ctx, max_block);
  r.full = run_prompt_feed(*sf, prompt, feed);
  r.full_bytes = llm::cuda_session_kv_bytes(*sf);
  llm::CudaModel m = synthetic_model(c);
  HostWeights h;
  host_weights(m, h);
  const auto lrm = llm::kv_lowrank_model_create(llm::kv_spec_parse(spec), "", c, h.w, pool);
  llm::cuda_model_add_lowrank(m, *lrm);
  llm::CudaSessionPtr s = llm::cuda_session_create(m, ctx, max_block);
  r.lowrank = run_prompt_feed(*s, prompt, feed);
  r.lowrank_bytes = llm::cuda_session_kv_bytes(*s);
  return r;
}

// The prefill spec text and text + "+keep:1" on two sessions of m over the same calls: keep:1 keeps every token at
// every layer, so the same kernels run on the same values and every logit and the byte count are equal bit for bit.
inline void check_keep1_changes_nothing(llm::CudaModel& m, const std::string& text, int ctx,
                                        const std::vector<std::vector<int>>& runs) {
  CAPTURE(text);
  llm::CudaSessionPtr a = llm::cuda_session_create(m, ctx, ctx), b = llm::cuda_session_create(m, ctx, ctx);
  std::string ignored;
  llm::cuda_session_enable_prefill(*a, llm::kv_prefill_spec_parse(text, ignored));
  llm::cuda_session_enable_prefill(*b, llm::kv_prefill_spec_parse(text + "+keep:1", ignored));
  const std::vector<float> la = run_gpu(*a, runs), lb = run_gpu(*b, runs);
  CHECK(la == lb);
  CHECK(llm::cuda_session_kv_bytes(*a) == llm::cuda_session_kv_bytes(*b));
}

// The CPU engine's plain low-rank forward (kv_lowrank_attention) of lrm: the prompt in one call (every position's
// logits), then `feed` one token at a time (each step's logits appended); bytes: KVLowRank::bytes_used at the end.
inline std::vector<float> cpu_lowrank_run(const llm::Config& c, const llm::Weights& w, const llm::KVLowRankModel& lrm,
                                          int ctx, const std::vector<int>& prompt, const std::vector<int>& feed,
                                          llm::ThreadPool* pool, size_t* bytes = nullptr) {
  llm::KVCache kv = llm::kvcache_create(c, ctx, /*allocate=*/false);
  llm::KVLowRank lr = llm::kv_lowrank_create(lrm, c, ctx);
  kv.lowrank = &lr;
  llm::RunState rs = llm::runstate_create(c, ctx);
  const size_t V = c.vocab_size, n = prompt.size();
  std::vector<float> out((n + feed.size()) * V);
  llm::forward_cpu(c, w, kv, rs, prompt.data(), int(n), llm::LogitsMode::all, pool);
  std::copy(rs.logits.begin(), rs.logits.begin() + n * V, out.begin());
  for (size_t i = 0; i < feed.size(); ++i) {
    llm::forward_cpu(c, w, kv, rs, &feed[i], 1, llm::LogitsMode::last, pool);
    std::copy(rs.logits.begin(), rs.logits.begin() + V, out.begin() + (n + i) * V);
  }
  if (bytes) *bytes = lr.bytes_used(int(n + feed.size()));
  return out;
}

// A model file's weights on the device (bf16, or f16 as the file) and in h the host copy of exactly those weights.
inline llm::CudaModelPtr upload_with_host_copy(const llm::ModelFile& f, HostWeights& h) {
  llm::CudaModelPtr m;
  {
    const llm::Weights w = llm::weights_from_file(f);
    m = llm::cuda_model_upload(f.config, w);
  }
  host_weights(*m, h);
  return m;
}

// text through a GGUF file's own tokenizer, BOS first.
inline std::vector<int> gguf_tokens(const llm::ModelFile& f, const std::string& text) {
  const llm::Tokenizer tok = llm::tokenizer_from_gguf(*f.gguf);
  const std::vector<int32_t> ids = tok.encode(text, true, false);
  return std::vector<int>(ids.begin(), ids.end());
}

// llm bench's path end to end on a tiny synthetic model (2 heads of 64: the CUDA kernels need head_dim 64 or 128;
// 3 layers) with the cache spec kv: the timings mean nothing here (and under the emulator), the run must reach its
// report. tag names the temporary folder the config is written to.
inline void bench_tiny_synthetic(const std::string& kv, const std::string& tag) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("llm_" + tag + "_bench_" + std::to_string(std::random_device{}()));
  std::filesystem::create_directories(dir);
  {
    std::ofstream f(dir / "config.json");
    f << R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 128, "intermediate_size": 256,
            "num_attention_heads": 2, "num_hidden_layers": 3, "num_key_value_heads": 1, "rms_norm_eps": 1e-05,
            "rope_theta": 10000.0, "tie_word_embeddings": false, "vocab_size": 256, "max_position_embeddings": 256})";
  }
  llm::CudaBenchOptions o;
  o.synthetic_config = (dir / "config.json").string();
  o.n_prompt = 24;
  o.n_gen = 4;
  o.ctx = 32;
  o.reps = 1;
  o.json = true;
  o.kv = kv;
  CHECK_NOTHROW(llm::bench_cuda(o));
  std::filesystem::remove_all(dir);
}


// The public API on cpu and on cuda with the same --kv: `prompt`, then `steps` tokens teacher-forced on the CPU's
// greedy path; logits[0] (cpu) and logits[1] (cuda) hold every call's last row, bytes[] each session's KV bytes
// at the end. Prints the distance (diff with a top-1 margin of 1) and returns it in d.
struct ApiCpuCudaRun {
  std::vector<int> feed;
  std::vector<float> logits[2];
  size_t bytes[2] = {0, 0};
  Diff d;
};
inline ApiCpuCudaRun api_cpu_vs_cuda(llm::Model& cpu, llm::Model& gpu, const std::vector<int>& prompt,
                                     int ctx, int steps) {
  ApiCpuCudaRun r;
  const int V = cpu.config().vocab_size;
  {  // the CPU's greedy path
    llm::Session s(cpu, {.n_ctx = ctx});
    s.feed(prompt);
    for (int i = 0; i < steps; ++i) {
      r.feed.push_back(llm::argmax_cpu(s.logits(), V));
      s.feed({r.feed.back()});
    }
  }
  for (int dev = 0; dev < 2; ++dev) {
    llm::Session s(dev == 0 ? cpu : gpu, {.n_ctx = ctx});
    s.feed(prompt);
    r.logits[dev].assign(s.logits(), s.logits() + V);
    for (int t : r.feed) {
      s.feed({t});
      r.logits[dev].insert(r.logits[dev].end(), s.logits(), s.logits() + V);
    }
    r.bytes[dev] = s.kv_cache_bytes();
  }
  r.d = diff(r.logits[1], r.logits[0], V, 1.0f);
  MESSAGE(cpu.kv_description() << ": cuda vs cpu over " << r.d.rows << " rows: max |logit diff| " << r.d.max_abs
                               << " (max |logit| " << r.d.max_ref << "); top-1 where the CPU leads by > 1: "
                               << r.d.decided_agree << "/" << r.d.decided << "; KV bytes cpu " << r.bytes[0]
                               << ", cuda " << r.bytes[1]);
  return r;
}
}  // namespace llm_cuda_test
