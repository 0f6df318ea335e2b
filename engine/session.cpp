// The public API (engine/llm.h) over the CPU engine: Model = mapped file + Weights + tokenizer + thread pool;
// Session = KV cache + RunState + sampler loop.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "engine/forward_cuda.h"
#include "engine/llm.h"
#include "engine/model.h"
#include "engine/kv_lowrank.h"
#include "engine/kv_prefill.h"
#include "kernels/threadpool_cpu.h"
#include "loader/model_file.h"
#include "tokenizer/tokenizer.h"

namespace llm {

namespace {
#if LLM_HAVE_CUDA
constexpr bool kBuiltWithCuda = true;
#else
constexpr bool kBuiltWithCuda = false;
#endif
double now_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}
}  // namespace

Device device_from_name(const std::string& name) {
  if (name == "cpu") return Device::cpu;
  if (name == "cuda") return Device::cuda;
  fail("unknown device '", name, "': use cpu or cuda");
}
const char* device_name(Device d) { return d == Device::cpu ? "cpu" : "cuda"; }
DType dtype_from_name(const std::string& name) {
  if (name == "bf16") return DType::bf16;
  if (name == "f16") return DType::f16;
  fail("unknown dtype '", name, "': use bf16 or f16");
}
const char* dtype_name(DType t) { return t == DType::bf16 ? "bf16" : "f16"; }
Device device_default(std::string* why) {
  const bool built = kBuiltWithCuda, gpu = built && cuda_device_count() > 0;
  if (why)
    *why = gpu ? "a CUDA device is present" : built ? "no CUDA device found" : "this build has no CUDA backend";
  return gpu ? Device::cuda : Device::cpu;
}

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::eos: return "eos";
    case StopReason::stop_string: return "stop_string";
    case StopReason::max_tokens: return "max_tokens";
    case StopReason::context_full: return "context_full";
    case StopReason::callback: return "callback";
  }
  return "?";
}

size_t peak_rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return static_cast<size_t>(std::atoll(line.c_str() + 6)) * 1024;
  return 0;
}

// ---- Model -----------------------------------------------------------------------------------------------

struct ModelImpl {
  std::string path;
  Device device = Device::cpu;
  ModelFile file;
  Weights weights;
  Tokenizer tokenizer;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<KVLowRankModel> lowrank;  // issue 6: set when the KV spec is not "full"
  CudaModelPtr cuda;  // device weights when device == cuda (engine/forward_cuda.h)
  std::unique_ptr<KVPrefillSpec> prefill;   // issue 7: set when the KV spec has quant/keep/evict parts
};

Model::Model(const std::string& path, const LoadOptions& opt) : impl_(std::make_unique<ModelImpl>()) {
  if (opt.device == Device::cuda && cuda_device_count() == 0)
    fail(kBuiltWithCuda ? "device cuda: no CUDA device found (check the GPU and its driver with nvidia-smi); use "
                         "--device cpu"
                       : "device cuda: this build has no CUDA backend (configure with -DLLM_CUDA=ON on a machine "
                         "with the CUDA Toolkit); use --device cpu");
  if (opt.dtype == DType::f16 && opt.device != Device::cuda)
    fail("--dtype f16 is a CUDA-backend option: --device cpu computes in fp32 (its weights stay as the file stores "
         "them); drop --dtype, or use --device cuda");
  auto& m = *impl_;
  m.path = path;
  m.device = opt.device;
  if (opt.on_progress) opt.on_progress(0.0f);
  m.file = model_file_open(path);
  if (m.file.config.arch != "llama")
    fail(path, ": architecture '", m.file.config.arch, "' is not supported (only the LLaMA family is)");
  if (opt.on_progress) opt.on_progress(0.3f);
  m.weights = weights_from_file(m.file);
  if (opt.device == Device::cuda) {
    // issue 7 on cuda: quant/keep/evict/imp on the full-precision cache and with svd (the unified cache); the dtype
    // check refuses f16 with them here, before the weights go to the device
    std::string base = opt.kv;
    const KVPrefillSpec pre = opt.kv_config.empty() ? kv_prefill_spec_parse(opt.kv, base)
                                                    : kv_prefill_spec_from_json_file(opt.kv_config);
    const KVSpec spec = opt.kv_config.empty() ? kv_spec_parse(base) : kv_spec_from_json_file(opt.kv_config);
    cuda_dtype_kv_check(opt.dtype, spec.lowrank, pre.any(), opt.kv_config.empty() ? opt.kv : opt.kv_config);
    m.cuda = cuda_model_upload(m.file.config, m.weights, opt.dtype);
  }
  if (opt.on_progress) opt.on_progress(0.7f);
  if (m.file.format == ModelFile::Format::gguf) {
    m.tokenizer = tokenizer_from_gguf(*m.file.gguf);
  } else {
    std::string dir = m.file.directory.empty() ? std::filesystem::path(path).parent_path().string()
                                               : m.file.directory;
    m.tokenizer = tokenizer_load(dir.empty() ? "." : dir);
  }
  if (m.tokenizer.vocab_size() > m.file.config.vocab_size)
    fail(path, ": the tokenizer has ", m.tokenizer.vocab_size(), " tokens but the model's vocabulary is ",
         m.file.config.vocab_size);
  m.pool = std::make_unique<ThreadPool>(opt.n_threads);
  {  // issue 6: low-rank KV cache (engine/kv_lowrank.cpp)
    if (!opt.kv_config.empty() && opt.kv != "full") fail("give the KV spec with --kv or --kv-config, not both");
    std::string kv_base = opt.kv;  // issue 7: the unified spec's prefill parts (+quant/+keep/+evict/+imp) split off
    KVPrefillSpec pre = opt.kv_config.empty() ? kv_prefill_spec_parse(opt.kv, kv_base)
                                              : kv_prefill_spec_from_json_file(opt.kv_config);
    const KVSpec spec = opt.kv_config.empty() ? kv_spec_parse(kv_base) : kv_spec_from_json_file(opt.kv_config);
    // issue 7's unified policy: svd with quant/keep/evict, or svd with policy=importance (the prefill computes the
    // scores that pick the value ranks), runs through the prefill-compressed cache holding rank-space rows
    const bool unified = spec.lowrank && (pre.any() || spec.policy == KVRankPolicy::importance);
    // the CPU unified cache runs sinks=/window=/vsinks=/alloc=spectrum (engine/kv_prefill.h); the cuda one not yet
    if (unified && opt.device == Device::cuda && spec.sinks > 0)
      fail("--kv ", opt.kv.empty() ? opt.kv_config : opt.kv, ": sinks=", spec.sinks, " is not supported by the "
           "unified cache (svd with quant/keep/evict or policy=importance) on cuda yet; drop sinks=, run on the CPU "
           "(--device cpu), or use svd alone with policy=seed|uniform");
    if (unified && opt.device == Device::cuda && (spec.window > 0 || spec.vsinks > 0 || spec.k_alloc_spectrum))
      fail("--kv ", opt.kv.empty() ? opt.kv_config : opt.kv, ": window=", spec.window,
           spec.window_den > 0 ? "/" + std::to_string(spec.window_den) : std::string(), ", vsinks=", spec.vsinks,
           ", alloc=", spec.k_alloc_spectrum ? "spectrum" : "uniform", ": not supported by the unified cache (svd "
           "with quant/keep/evict or policy=importance) on cuda yet; drop them, run on the CPU (--device cpu), or use "
           "svd alone with policy=seed|uniform");
    if (pre.any() || unified) {  // issue 7
      kv_prefill_spec_check(pre, m.file.config, spec.lowrank);
      m.prefill = std::make_unique<KVPrefillSpec>(std::move(pre));
    }
    if (spec.lowrank)
      m.lowrank = kv_lowrank_model_create(spec, opt.kv_profile, m.file.config, m.weights, m.pool.get(),
                                          m.cuda ? Device::cuda : Device::cpu);
    else if (!opt.kv_profile.empty()) fail("--kv-profile is given but the KV cache is full: add --kv svd:...");
    if (m.lowrank && m.cuda) {  // issue 6 on the GPU (forward_cuda.cu): the device holds its bf16 copies, and
      cuda_model_add_lowrank(*m.cuda, *m.lowrank);  // cuda sessions never read the host's (1 GiB for Llama-3-8B)
      kv_lowrank_release_folded(*m.lowrank);
    }
  }
  if (opt.on_progress) opt.on_progress(1.0f);
}

Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

const Config& Model::config() const { return impl_->file.config; }
Device Model::device() const { return impl_->device; }
const std::string& Model::path() const { return impl_->path; }
size_t Model::weight_bytes() const { return impl_->weights.weight_bytes; }
int Model::n_threads() const { return impl_->pool->size(); }
const Weights& Model::weights() const { return impl_->weights; }
ThreadPool* Model::thread_pool() const { return impl_->pool.get(); }
std::string Model::kv_description() const {
  if (impl_->prefill && impl_->lowrank) {  // issue 7's unified policy: svd + prefill parts (or the scores alone)
    const std::string parts = kv_prefill_spec_describe(*impl_->prefill);
    return kv_spec_describe(impl_->lowrank->spec, impl_->lowrank->ranks) + "+" +
           (parts.empty() ? kv_importance_describe(impl_->prefill->imp) : parts);
  }
  if (impl_->prefill) return "full+" + kv_prefill_spec_describe(*impl_->prefill);  // issue 7
  return impl_->lowrank ? kv_spec_describe(impl_->lowrank->spec, impl_->lowrank->ranks) : "full";
}
size_t Model::kv_weight_bytes() const {
  size_t b = 0;
  if (impl_->lowrank)
    for (const KVLowRankModel::Layer& L : impl_->lowrank->layers)
      if (L.wo.data) b += L.wk_pack.row_bytes * L.wk_pack.rows + L.wo.row_bytes * L.wo.rows;
  return b;
}
size_t Model::decode_weight_bytes() const {
  size_t b = impl_->weights.weight_bytes;
  if (!impl_->lowrank || impl_->cuda) return b;  // cuda: the host weights' count, as weight_bytes()
  for (const LayerWeights& L : impl_->weights.layers) {
    b -= L.wo.row_bytes * L.wo.rows;
    if (impl_->lowrank->spec.window == 0) b -= L.wk.row_bytes * L.wk.rows;
  }
  return b + kv_weight_bytes();
}
const Tokenizer& Model::tokenizer() const { return impl_->tokenizer; }

std::vector<int> Model::tokenize(const std::string& text, bool add_bos, bool parse_special) const {
  auto ids = impl_->tokenizer.encode(text, add_bos, parse_special);
  return std::vector<int>(ids.begin(), ids.end());
}

std::string Model::detokenize(const std::vector<int>& tokens) const {
  return impl_->tokenizer.decode(std::vector<int32_t>(tokens.begin(), tokens.end()));
}

std::string Model::chat_prompt(const std::vector<ChatTurn>& turns, bool add_generation_prompt) const {
  std::vector<ChatMessage> msgs;
  for (const auto& t : turns) msgs.push_back({t.role, t.content});
  if (impl_->tokenizer.chat_template == ChatTemplate::none)
    fail(impl_->path, ": the model has no chat template");
  return chat_render(impl_->tokenizer, msgs, add_generation_prompt);
}

bool Model::is_end_of_generation(int token) const {
  const auto& eos = impl_->file.config.eos_ids;
  return impl_->tokenizer.is_eog(token) || std::find(eos.begin(), eos.end(), token) != eos.end();
}

// ---- Session ---------------------------------------------------------------------------------------------

struct SessionImpl {
  Model* model = nullptr;
  const ModelImpl* mi = nullptr;  // model->impl_ (Session is the friend that can read it)
  KVCache cache;
  RunState state;
  std::vector<int> history;  // every token fed or sampled
  int pending = -1;          // the last sampled token, not yet run through the model (fed with the next input)
  size_t logits_row = 0;     // offset of the current next-token logits in state.logits
  SessionStats stats;
  std::unique_ptr<KVLowRank> lowrank;  // issue 6: the low-rank cache (cache.lowrank points here)
  CudaSessionPtr cuda;  // device cache and scratch when the model is on cuda (then `cache` holds no data)
  std::unique_ptr<KVPrefill> prefill;  // issue 7: the mixed-precision cache (cache.prefill points here)
};

Session::Session(Model& model, const SessionOptions& opt) : impl_(std::make_unique<SessionImpl>()) {
  const Config& c = model.config();
  int n_ctx = opt.n_ctx;
  if (n_ctx < 0) fail("context size must be positive, got ", n_ctx);
  if (n_ctx == 0) n_ctx = c.max_seq_len > 0 ? std::min(c.max_seq_len, 4096) : 4096;
  if (c.max_seq_len > 0 && n_ctx > c.max_seq_len)
    fail("context size ", n_ctx, " exceeds the model's maximum of ", c.max_seq_len, " tokens");
  if (opt.max_block < 1) fail("prefill block size must be >= 1, got ", opt.max_block);
  impl_->model = &model;
  impl_->mi = model.impl_.get();
  if (impl_->mi->cuda) {
    // issue 7: the compressed prefill runs the whole prompt as one block (its importance needs every query), so
    // a session with prefill parts gets blocks of the context size
    const bool kvq = impl_->mi->prefill != nullptr;
    impl_->cuda = cuda_session_create(*impl_->mi->cuda, n_ctx, kvq ? n_ctx : std::min(opt.max_block, n_ctx));
    if (kvq) cuda_session_enable_prefill(*impl_->cuda, *impl_->mi->prefill);
    impl_->cache = kvcache_create(c, n_ctx, /*allocate=*/false);  // the cache lives on the device
  } else if (impl_->mi->prefill) {  // issue 7 (with the svd part when the model has one: the unified policy)
    impl_->prefill = std::make_unique<KVPrefill>(kv_prefill_create(*impl_->mi->prefill, c, impl_->mi->lowrank.get()));
    impl_->cache = kvcache_create(c, n_ctx, /*allocate=*/false);
    impl_->cache.prefill = impl_->prefill.get();
  } else if (impl_->mi->lowrank) {  // issue 6
    impl_->lowrank = std::make_unique<KVLowRank>(kv_lowrank_create(*impl_->mi->lowrank, c, n_ctx));
    impl_->cache = kvcache_create(c, n_ctx, /*allocate=*/false);
    impl_->cache.lowrank = impl_->lowrank.get();
  } else {
    impl_->cache = kvcache_create(c, n_ctx);
  }
  impl_->state = runstate_create(c, std::min(opt.max_block, n_ctx));
}

Session::~Session() = default;
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;

int Session::n_ctx() const { return impl_->cache.capacity; }
int Session::n_past() const { return impl_->cache.n; }
const std::vector<int>& Session::history() const { return impl_->history; }
int Session::vocab_size() const { return impl_->model->config().vocab_size; }
const float* Session::logits() const { return impl_->state.logits.data() + impl_->logits_row; }
SessionStats Session::stats() const { return impl_->stats; }
size_t Session::kv_cache_bytes() const {
  const auto& s = *impl_;
  if (s.cuda) return cuda_session_kv_bytes(*s.cuda);  // the device cache (bf16; low-rank when the model has it)
  if (s.prefill) return s.prefill->bytes_used();  // issue 7 (and the unified svd + prefill cache)
  if (s.lowrank) return s.lowrank->bytes_used(s.cache.n);
  return size_t(2) * s.cache.n * s.cache.n_layers * s.cache.n_kv_heads * s.cache.head_dim * sizeof(float);
}
void Session::set_token_scores(std::vector<float> scores) {
  if (impl_->cuda) {  // the device session ranks the next call by them (policy=importance), as below on the CPU
    cuda_session_set_token_scores(*impl_->cuda, std::move(scores));
    return;
  }
  if (impl_->prefill && impl_->prefill->lowrank) {  // the unified cache: the scores replace the prefill's own
    impl_->prefill->next_scores = std::move(scores);
    return;
  }
  if (!impl_->lowrank) fail("set_token_scores: the session's KV cache is not low-rank (--kv svd:...)");
  impl_->lowrank->next_scores = std::move(scores);
}

void Session::reset() {
  impl_->cache.n = 0;
  if (impl_->cuda) cuda_session_reset(*impl_->cuda);
  impl_->history.clear();
  impl_->pending = -1;
  impl_->logits_row = 0;
}

// The forward pass on the session's device.
static void run_forward(SessionImpl& s, const int* tokens, int n, LogitsMode mode) {
  const auto& m = *s.mi;
  if (!s.cuda) {
    forward_cpu(m.file.config, m.weights, s.cache, s.state, tokens, n, mode, m.pool.get());
    return;
  }
  const size_t V = m.file.config.vocab_size;
  if (mode == LogitsMode::all && s.state.logits.size() < size_t(n) * V) s.state.logits.resize(size_t(n) * V);
  forward_cuda(*s.cuda, tokens, n, mode, s.state.logits.data());
  s.cache.n = cuda_session_n(*s.cuda);
}

static void check_fits(const SessionImpl& s, size_t n) {
  if (n == 0) fail("nothing to feed: the token list is empty");
  if (n > static_cast<size_t>(s.cache.capacity - s.cache.n))
    fail("the input is ", n, " tokens but only ", s.cache.capacity - s.cache.n, " of the context's ",
         s.cache.capacity, " are free; use a larger context (-c) or a shorter input");
}

// Runs the pending token (if any) followed by tokens; returns the logits buffer.
static void run_tokens(SessionImpl& s, const std::vector<int>& tokens, LogitsMode mode) {
  if (tokens.empty()) fail("nothing to feed: the token list is empty");
  std::vector<int> all;
  if (s.pending >= 0) all.push_back(s.pending);
  all.insert(all.end(), tokens.begin(), tokens.end());
  check_fits(s, all.size());
  const auto& m = *s.mi;
  const double t0 = now_s();
  run_forward(s, all.data(), static_cast<int>(all.size()), mode);
  s.stats.prompt_seconds += now_s() - t0;
  s.stats.prompt_tokens += static_cast<int>(all.size());
  s.history.insert(s.history.end(), tokens.begin(), tokens.end());  // the pending token is in history already
  const size_t V = m.file.config.vocab_size;
  s.logits_row = mode == LogitsMode::all ? (all.size() - 1) * V : 0;
  s.pending = -1;
}

void Session::feed(const std::vector<int>& tokens) { run_tokens(*impl_, tokens, LogitsMode::last); }

void Session::feed_text(const std::string& text, bool add_bos, bool parse_special) {
  feed(impl_->model->tokenize(text, add_bos, parse_special));
}

const std::vector<float>& Session::feed_all_logits(const std::vector<int>& tokens) {
  if (impl_->pending >= 0)
    fail("feed_all_logits: a generated token is pending; reset() the session or use feed()");
  run_tokens(*impl_, tokens, LogitsMode::all);
  return impl_->state.logits;
}

GenerateResult Session::generate(const GenerateOptions& opt, const TokenCallback& on_piece) {
  auto& s = *impl_;
  if (opt.max_tokens < 1) fail("the number of tokens to generate must be >= 1, got ", opt.max_tokens);
  if (s.cache.n == 0) fail("generate: feed a prompt first (the session is empty)");
  sampler_check(opt.sampling);
  for (const auto& st : opt.stop)
    if (st.empty()) fail("a stop string must not be empty");
  const auto& m = *s.mi;
  const int V = m.file.config.vocab_size;
  Sampler sampler(opt.sampling);
  StreamDecoder dec(m.tokenizer);
  GenerateResult r;
  size_t emitted = 0;  // bytes of r.text handed to the callback
  bool stop_cb = false;
  auto emit = [&](size_t upto, int tok) {
    if (upto > emitted && on_piece && !stop_cb) {
      if (!on_piece(r.text.substr(emitted, upto - emitted), tok)) stop_cb = true;
    }
    emitted = std::max(emitted, upto);
  };
  if (s.pending >= 0) {  // generating again right after a generation: run its last token first
    run_forward(s, &s.pending, 1, LogitsMode::last);
    s.pending = -1;
    s.logits_row = 0;
  }
  float* logits = s.state.logits.data() + s.logits_row;
  r.stop = StopReason::max_tokens;
  double t0 = now_s();
  for (int step = 0; step < opt.max_tokens; ++step) {
    const int tok = sampler_sample(sampler, logits, V, s.history);
    s.history.push_back(tok);
    s.pending = tok;  // run through the model with the next step or the next input
    if (opt.stop_at_eos && s.model->is_end_of_generation(tok)) {
      r.stop = StopReason::eos;
      break;
    }
    r.tokens.push_back(tok);
    r.text += dec.push(tok);
    // stop strings: cut and end; otherwise hold back a tail that could still become one
    size_t cut = std::string::npos;
    for (const auto& st : opt.stop) {
      size_t from = emitted >= st.size() ? emitted - st.size() + 1 : 0;
      size_t p = r.text.find(st, from);
      if (p != std::string::npos) cut = std::min(cut, p);
    }
    if (cut != std::string::npos) {
      r.text.resize(cut);
      emit(cut, tok);
      r.stop = StopReason::stop_string;
      break;
    }
    size_t hold = 0;
    for (const auto& st : opt.stop)
      for (size_t k = std::min(st.size() - 1, r.text.size()); k > hold; --k)
        if (r.text.compare(r.text.size() - k, k, st, 0, k) == 0) {
          hold = k;
          break;
        }
    emit(r.text.size() - hold, tok);
    if (stop_cb) {
      r.stop = StopReason::callback;
      break;
    }
    if (step + 1 == opt.max_tokens) break;  // the last token needs no forward pass
    if (s.cache.n >= s.cache.capacity) {  // no room to run the token: stop, it stays pending
      r.stop = StopReason::context_full;
      break;
    }
    run_forward(s, &tok, 1, LogitsMode::last);
    s.pending = -1;
    s.logits_row = 0;
    logits = s.state.logits.data();
  }
  if (r.stop != StopReason::stop_string) {
    r.text += dec.flush();
    emit(r.text.size(), -1);
  }
  s.stats.generate_seconds += now_s() - t0;
  s.stats.generated_tokens += static_cast<int>(r.tokens.size());
  return r;
}

// ---- perplexity ----------------------------------------------------------------------------------------------

double log_prob_at(const float* logits, int vocab, int target) {
  float mx = logits[0];
  for (int j = 1; j < vocab; ++j) mx = std::max(mx, logits[j]);
  double sum = 0.0;
  for (int j = 0; j < vocab; ++j) sum += std::exp(static_cast<double>(logits[j] - mx));
  return static_cast<double>(logits[target] - mx) - std::log(sum);
}

PerplexityResult perplexity(Model& model, const std::vector<int>& tokens, int n_ctx, int stride,
                            const std::function<void(float)>& on_progress) {
  if (n_ctx < 2) fail("perplexity: the context must be at least 2 tokens, got ", n_ctx);
  if (stride < 1 || stride > n_ctx) fail("perplexity: the stride must be in [1, context ", n_ctx, "], got ", stride);
  if (tokens.size() < 2) fail("perplexity: the text is too short (", tokens.size(), " tokens; need at least 2)");
  Session session(model, {.n_ctx = n_ctx, .max_block = 256});
  const int V = model.config().vocab_size;
  const int64_t N = static_cast<int64_t>(tokens.size());
  PerplexityResult r;
  double t0 = now_s(), nll_sum = 0.0;
  int64_t prev_end = 0, first_len = 1;
  size_t first_bytes = 0;
  for (int64_t begin = 0; begin < N; begin += stride) {
    const int64_t end = std::min<int64_t>(begin + n_ctx, N);
    const int64_t trg_len = end - prev_end;  // tokens this window scores: (end - trg_len, end]
    session.reset();
    std::vector<int> win(tokens.begin() + begin, tokens.begin() + end);
    const auto& lg = session.feed_all_logits(win);
    const int64_t len = end - begin;
    // transformers: labels = ids with the first len - trg_len set to -100, shifted by one: position i (in the
    // window) predicts token i+1; scored when i+1 >= len - trg_len.
    for (int64_t i = std::max<int64_t>(0, len - trg_len - 1); i + 1 < len; ++i) {
      nll_sum -= log_prob_at(lg.data() + static_cast<size_t>(i) * V, V, win[i + 1]);
      ++r.tokens;
    }
    if (r.windows == 0) first_bytes = session.kv_cache_bytes(), first_len = len;
    ++r.windows;
    prev_end = end;
    if (on_progress) on_progress(static_cast<float>(end) / static_cast<float>(N));
    if (end == N) break;
  }
  r.nll = nll_sum / static_cast<double>(r.tokens);
  if (r.windows > 0) r.kv_bytes_per_token = double(first_bytes) / double(first_len);
  r.ppl = std::exp(r.nll);
  r.seconds = now_s() - t0;
  return r;
}

}  // namespace llm
