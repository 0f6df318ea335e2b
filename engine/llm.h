// libllm's public API: the one header an application includes.
//
//   llm::Model model("SmolLM2-135M-Instruct.Q4_1.gguf");          // load (device, threads in LoadOptions)
//   llm::Session session(model, {.n_ctx = 2048});                 // a conversation: its own KV cache
//   session.feed(model.tokenize("The capital of France is", true));
//   llm::GenerateOptions g; g.max_tokens = 32;
//   session.generate(g, [](const std::string& piece, int) { std::fputs(piece.c_str(), stdout); return true; });
//
// No global state: every Model owns its weights (a mapped file) and its thread pool; every Session its cache
// and scratch. Two models, or two sessions of one model, can live in one process. A Model's sessions share
// its thread pool, so use one model's sessions from one thread at a time. Errors are llm::Error with a
// message that says what to do.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/sampler.h"
#include "loader/config.h"
#include "loader/error.h"

namespace llm {

struct Tokenizer;
struct ModelImpl;
struct SessionImpl;
struct Weights;      // engine/model.h
class ThreadPool;    // kernels/threadpool_cpu.h

enum class Device { cpu, cuda };
// "cpu" or "cuda"; throws llm::Error for anything else.
Device device_from_name(const std::string& name);
const char* device_name(Device d);
// What `--device` defaults to (issue 5): cuda when this build has the CUDA backend and a GPU is present, else
// cpu. `why` (optional) receives the reason in a few words, for verbose output.
Device device_default(std::string* why = nullptr);
// Element type of the CUDA backend's weights, activations between kernels and KV cache (issue 5; accumulation and
// the residual stream stay fp32 either way). --device cpu computes in fp32 and takes only bf16 (the default, which
// there means "not chosen"); f16 is refused there. Both are 2 bytes an element.
enum class DType { bf16, f16 };
// "bf16" or "f16"; throws llm::Error for anything else.
DType dtype_from_name(const std::string& name);
const char* dtype_name(DType t);

struct LoadOptions {
  Device device = Device::cpu;  // the CLI passes device_default() when --device is not given
  int n_threads = 0;            // 0: every core
  DType dtype = DType::bf16;    // --dtype: the CUDA backend's element type (f16 with --device cpu: llm::Error)
  // Called with the fraction loaded (0..1) while the weights are resolved and checked; may be empty.
  std::function<void(float)> on_progress = {};
  // ---- KV-cache compression (issue 6, docs/kv-compression.md) ----
  std::string kv = "full";       // "full" or "svd:k=...,v=...,policy=...,basis=..."
  std::string kv_config = {};    // a JSON file with the same fields (instead of kv)
  std::string kv_profile = {};   // a profile from `llm compress`; empty: a `weights` profile built at load
};

struct ChatTurn {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

class Model {
 public:
  explicit Model(const std::string& path, const LoadOptions& options = {});
  ~Model();
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;

  const Config& config() const;
  Device device() const;
  const std::string& path() const;
  size_t weight_bytes() const;  // bytes of the weight matrices as stored (streamed once per decoded token)
  int n_threads() const;

  const Tokenizer& tokenizer() const;
  // add_bos: prepend BOS when the model wants one; parse_special: "<|im_start|>" etc. in text become their ids.
  std::vector<int> tokenize(const std::string& text, bool add_bos, bool parse_special = false) const;
  std::string detokenize(const std::vector<int>& tokens) const;
  // The model's chat template applied to the turns (special tokens written out; tokenize with
  // add_bos=false, parse_special=true). Throws when the model has no chat template.
  std::string chat_prompt(const std::vector<ChatTurn>& turns, bool add_generation_prompt) const;
  bool is_end_of_generation(int token) const;  // EOS / EOT of the config or the tokenizer
  // ---- issue 6 ----
  std::string kv_description() const;  // the resolved KV-cache spec: "full" or "svd:k=16,v=16/32/64,..."
  // svd on the CPU: bytes of the folded weights held beside the model's (W_K' packed and W_fused, in the spec's
  // fold type); 0 for the full cache, and on cuda, where only the device's bf16 copies are kept.
  size_t kv_weight_bytes() const;
  // Bytes of the weight matrices one decoded token streams on the CPU: weight_bytes(), or with svd W_K' and
  // W_fused in place of W_K and W_O (W_K as well with window=, which computes the new token's full key); on cuda
  // weight_bytes() (llm bench --device cuda counts the device's bf16 bytes itself).
  size_t decode_weight_bytes() const;
  // Engine internals for tools that work on the weights (llm compress): the resolved weights and the pool.
  const Weights& weights() const;
  ThreadPool* thread_pool() const;

 private:
  friend class Session;
  std::unique_ptr<ModelImpl> impl_;
};

struct SessionOptions {
  int n_ctx = 0;        // context size in tokens; 0: min(model's max_seq_len, 4096)
  int max_block = 256;  // prefill block: the prompt runs as matrices of up to this many tokens
};

struct GenerateOptions {
  int max_tokens = 128;               // must be >= 1
  SamplerParams sampling = {};        // greedy by default
  std::vector<std::string> stop = {}; // stop strings: generation ends when the text contains one (not emitted)
  bool stop_at_eos = true;            // end on the model's EOS / EOT ids
};

enum class StopReason { eos, stop_string, max_tokens, context_full, callback };
const char* stop_reason_name(StopReason r);

struct GenerateResult {
  std::vector<int> tokens;  // generated ids (an EOS that ended generation is not included)
  std::string text;         // their text, cut before a stop string
  StopReason stop = StopReason::max_tokens;
};

struct SessionStats {
  int prompt_tokens = 0;  // tokens fed (prefill)
  double prompt_seconds = 0.0;
  int generated_tokens = 0;  // tokens decoded one at a time
  double generate_seconds = 0.0;
};

// Streaming callback: a piece of text (complete UTF-8 characters only) and the token that ended it (-1 when
// the piece is text held back earlier). Return false to stop generating.
using TokenCallback = std::function<bool(const std::string& piece, int token)>;

class Session {
 public:
  explicit Session(Model& model, const SessionOptions& options = {});
  ~Session();
  Session(Session&&) noexcept;
  Session& operator=(Session&&) noexcept;

  int n_ctx() const;
  int n_past() const;  // tokens in the cache
  const std::vector<int>& history() const;  // every token fed or generated, in order
  void reset();        // empty the cache (keeps the allocation)

  // Run tokens through the model (batched prefill), appending them to the cache. Throws when they do not fit in
  // the context (nothing is fed then). Afterwards logits() holds the next-token logits after the last one.
  void feed(const std::vector<int>& tokens);
  void feed_text(const std::string& text, bool add_bos, bool parse_special = false);
  // Like feed, returning the logits at EVERY fed position: (tokens.size(), vocab), row i predicts token i+1.
  const std::vector<float>& feed_all_logits(const std::vector<int>& tokens);
  const float* logits() const;  // (vocab), after the last token fed or generated
  int vocab_size() const;

  // Sample from the current logits, feed the token, repeat. Needs at least one token fed before.
  GenerateResult generate(const GenerateOptions& options, const TokenCallback& on_piece = {});

  SessionStats stats() const;

  // ---- issue 6 ----
  size_t kv_cache_bytes() const;  // bytes of the KV cache in use for the tokens cached (compressed or full)
  // Importance policy hook: one score per token of the NEXT forward call (feed / the next generated token),
  // higher = keep at a higher value rank. Consumed by that call. Optional since issue 7's unified policy: with
  // svd:...,policy=importance the prefill computes the scores itself (per layer and KV head); scores given here
  // replace them for that call (one per token, every layer and head).
  void set_token_scores(std::vector<float> scores);

 private:
  std::unique_ptr<SessionImpl> impl_;
};

// Perplexity with the sliding-window algorithm of tests/data/golden/README.md (transformers' guide): windows of
// n_ctx tokens starting every `stride` tokens; each window scores only the tokens not scored by the previous one
// (all of them in the first window), each token predicted from the window's tokens before it.
struct PerplexityResult {
  double ppl = 0.0;
  double nll = 0.0;      // mean negative log-likelihood (nats per scored token)
  int64_t tokens = 0;    // tokens scored
  int windows = 0;
  double seconds = 0.0;
  double kv_bytes_per_token = 0.0;  // Session::kv_cache_bytes() / tokens after the first window (its full length)
};
PerplexityResult perplexity(Model& model, const std::vector<int>& tokens, int n_ctx, int stride,
                            const std::function<void(float)>& on_progress = {});
// log softmax(logits)[target] over one row of `vocab` logits, in double (max-shifted): the per-token score of
// perplexity(), for tools that score tokens themselves (tools/kv_eval, kv_prefill_eval, kv_requant_eval).
double log_prob_at(const float* logits, int vocab, int target);

// Peak resident memory of this process so far (VmHWM), in bytes; 0 when unknown.
size_t peak_rss_bytes();

}  // namespace llm
