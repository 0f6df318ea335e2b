// The LLaMA forward pass on the GPU: the same flat layer loop as forward_cpu, over bf16 weights and cache.
//
// Per layer (n tokens):  [add+]rmsnorm -> QKV (GEMV | cuBLASLt) -> RoPE + KV write -> attention (split-K decode |
// flash prefill) -> W_O -> add+rmsnorm -> gate|up -> SwiGLU -> W_down; the residual add of W_down is fused into
// the next layer's first norm (or the final norm). Decode: 8 kernels per layer + 4, 260 launches on Llama-3-8B,
// replayed as one CUDA graph (launch overhead ~1-2 us per kernel without it would cost ~10% of a 5 ms step).
// Low-rank KV cache (issue 6, docs/kv-compression.md): QKV' -> kv_lowrank_write -> low-rank attention -> z to
// bf16 -> W_fused replaces the attention part of the layer; the value ranks come from the host (cuda_lowrank_begin).
// Mixed-precision KV cache (issue 7, docs/prefill-compression.md "On the GPU"): the prefill adds the importance
// accumulators per layer (attention_importance_cuda); after it the host selects and classes the entries and
// quantize_rows_cuda packs them (cuda_kvq_prefill_finish); later calls append 16-bit entries, attend with
// attention_quant_decode_cuda and slide the 16-bit window on the device (kvq_slide), inside the decode graph.
// Selective propagation (keep:<1) gathers the kept rows before a dropping layer (kvq_keep_select); on the unified
// (svd) cache the later layers attend over the kept rank rows as 16-bit entries (CudaKVQ keep_pack).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "engine/forward_cuda.cuh"
#include "kernels/attention_cuda.h"
#include "kernels/attention_lowrank_cuda.h"
#include "kernels/attention_lowrank_quant_cuda.h"
#include "kernels/attention_quant_cuda.h"
#include "kernels/elementwise_cuda.h"
#include "kernels/embedding_cuda.h"
#include "kernels/gather_cuda.h"
#include "kernels/importance_cuda.h"
#include "kernels/quant_cpu.h"
#include "kernels/quant_cuda.h"
#include "kernels/rmsnorm_cuda.h"
#include "kernels/rope_cuda.h"
#include "kernels/sampling_cuda.h"
#include "loader/ggml_quants.h"

namespace llm {

int cuda_device_count() { return cuda_devices(); }

void CudaModelDeleter::operator()(CudaModel* m) const { delete m; }
void CudaSessionDeleter::operator()(CudaSession* s) const { delete s; }

// ---- weights ---------------------------------------------------------------------------------------------

CudaModel cuda_model_alloc(const Config& c, bool tied, DType dtype) {
  if (cuda_devices() == 0) fail("device cuda: no CUDA device found (nvidia-smi shows none); use --device cpu");
  if (c.dim % 8 != 0 || c.ffn_dim % 8 != 0 || (c.n_heads * c.head_dim) % 8 != 0)
    fail("CUDA backend: dim ", c.dim, ", ffn ", c.ffn_dim, " and n_heads*head_dim must be multiples of 8");
  if (c.head_dim != 64 && c.head_dim != 128)
    fail("CUDA backend: head_dim ", c.head_dim, " unsupported (64 or 128); use --device cpu");
  if (c.n_heads % c.n_kv_heads != 0 || c.n_heads / c.n_kv_heads > 8)
    fail("CUDA backend: ", c.n_heads, " heads over ", c.n_kv_heads, " KV heads unsupported (group of at most 8)");
  CudaModel m;
  m.c = c;
  m.dtype = dtype;
  CUDA_CHECK(cudaGetDevice(&m.device));
  CUDA_CHECK(cudaDeviceGetAttribute(&m.sm_count, cudaDevAttrMultiProcessorCount, m.device));
  const size_t dim = c.dim, qd = size_t(c.n_heads) * c.head_dim, kvd = size_t(c.n_kv_heads) * c.head_dim;
  const size_t ffn = c.ffn_dim, V = c.vocab_size, es = dtype_bytes(dtype);
  auto alloc = [&](size_t bytes) {
    m.bufs.emplace_back(bytes);
    m.bytes += bytes;
    return m.bufs.back().ptr;
  };
  m.embd = static_cast<bf16*>(alloc(V * dim * es));
  m.output = tied ? m.embd : static_cast<bf16*>(alloc(V * dim * es));
  m.output_norm = static_cast<float*>(alloc(dim * 4));
  m.inv_freq = static_cast<float*>(alloc(c.head_dim / 2 * 4));
  m.layers.resize(c.n_layers);
  for (auto& L : m.layers) {
    L.wqkv = static_cast<bf16*>(alloc((qd + 2 * kvd) * dim * es));
    L.wo = static_cast<bf16*>(alloc(dim * qd * es));
    L.wgu = static_cast<bf16*>(alloc(2 * ffn * dim * es));
    L.wdown = static_cast<bf16*>(alloc(dim * ffn * es));
    L.attn_norm = static_cast<float*>(alloc(dim * 4));
    L.ffn_norm = static_cast<float*>(alloc(dim * 4));
  }
  m.decode_weight_bytes = (c.n_layers * ((qd + 2 * kvd) * dim + dim * qd + 3 * ffn * dim) + V * dim + dim) * es;
  std::vector<float> inv(c.head_dim / 2);
  rope_inv_freq_cpu(inv.data(), c.head_dim, c.rope_theta, c.rope_scaling);
  CUDA_CHECK(cudaMemcpy(m.inv_freq, inv.data(), inv.size() * 4, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaDeviceSynchronize());
  return m;
}

void cuda_model_randomize(CudaModel& m, uint64_t seed) {
  const Config& c = m.c;
  const int64_t dim = c.dim, qd = int64_t(c.n_heads) * c.head_dim, kvd = int64_t(c.n_kv_heads) * c.head_dim;
  const int64_t ffn = c.ffn_dim, V = c.vocab_size;
  const float sd = 1.0f / std::sqrt(float(dim)), sf = 1.0f / std::sqrt(float(ffn)), sq = 1.0f / std::sqrt(float(qd));
  auto fill_random = [&](bf16* p, int64_t count, uint64_t sd_, float scale, cudaStream_t st) {  // in m.dtype
    if (m.dtype == DType::f16)
      fill_random_cuda(elem_ptr<f16>(p), count, sd_, scale, st);
    else
      fill_random_cuda(p, count, sd_, scale, st);
  };
  fill_random(m.embd, V * dim, seed++, 1.0f, nullptr);
  if (m.output != m.embd) fill_random(m.output, V * dim, seed++, sd, nullptr);
  fill_const_f32_cuda(m.output_norm, dim, 1.0f, nullptr);
  for (auto& L : m.layers) {
    fill_random(L.wqkv, (qd + 2 * kvd) * dim, seed++, sd, nullptr);
    fill_random(L.wo, dim * qd, seed++, sq, nullptr);
    fill_random(L.wgu, 2 * ffn * dim, seed++, sd, nullptr);
    fill_random(L.wdown, dim * ffn, seed++, sf, nullptr);
    fill_const_f32_cuda(L.attn_norm, dim, 1.0f, nullptr);
    fill_const_f32_cuda(L.ffn_norm, dim, 1.0f, nullptr);
  }
  CUDA_CHECK(cudaDeviceSynchronize());
}

namespace {
// Dequantise rows of a QMatrix to bf16 (or f16: through f32, round to nearest even) on the host and copy them to
// dst (row-major, cols per row).
void upload_matrix(bf16* dst, const QMatrix& w, std::vector<uint16_t>& staging, DType dtype = DType::bf16) {
  staging.resize(size_t(w.rows) * w.cols);
  std::vector<float> row(dtype == DType::f16 ? w.cols : 0);
  for (int64_t r = 0; r < w.rows; ++r) {
    uint16_t* out = staging.data() + size_t(r) * w.cols;
    if (dtype == DType::bf16) {
      dequantize_row_bf16(w.type, w.data + size_t(r) * w.row_bytes, out, w.cols);
      continue;
    }
    dequantize_row(w.type, w.data + size_t(r) * w.row_bytes, row.data(), w.cols);
    for (int64_t j = 0; j < w.cols; ++j) {
      out[j] = f32_to_fp16(row[j]);
      if ((out[j] & 0x7c00u) == 0x7c00u && std::isfinite(row[j]))
        fail("--dtype f16: a weight of ", row[j], " (row ", r, " of a ", w.rows, " x ", w.cols, " matrix) is beyond "
             "fp16's range (65504); use --dtype bf16");
    }
  }
  CUDA_CHECK(cudaMemcpy(dst, staging.data(), staging.size() * 2, cudaMemcpyHostToDevice));
}
void upload_f32(float* dst, const float* src, size_t n) {
  CUDA_CHECK(cudaMemcpy(dst, src, n * 4, cudaMemcpyHostToDevice));
}
}  // namespace

CudaModelPtr cuda_model_upload(const Config& c, const Weights& w, DType dtype) {
  const bool tied = w.output.data == w.token_embd.data;
  CudaModelPtr m(new CudaModel(cuda_model_alloc(c, tied, dtype)));
  const size_t dim = c.dim, qd = size_t(c.n_heads) * c.head_dim, kvd = size_t(c.n_kv_heads) * c.head_dim;
  std::vector<uint16_t> staging;
  upload_matrix(m->embd, w.token_embd, staging, dtype);
  if (!tied) upload_matrix(m->output, w.output, staging, dtype);
  upload_f32(m->output_norm, w.output_norm, dim);
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = w.layers[l];
    CudaLayer& D = m->layers[l];
    upload_matrix(D.wqkv, L.wq, staging, dtype);
    upload_matrix(D.wqkv + qd * dim, L.wk, staging, dtype);
    upload_matrix(D.wqkv + (qd + kvd) * dim, L.wv, staging, dtype);
    upload_matrix(D.wo, L.wo, staging, dtype);
    upload_matrix(D.wgu, L.w_gate, staging, dtype);
    upload_matrix(D.wgu + size_t(c.ffn_dim) * dim, L.w_up, staging, dtype);
    upload_matrix(D.wdown, L.w_down, staging, dtype);
    upload_f32(D.attn_norm, L.attn_norm, dim);
    upload_f32(D.ffn_norm, L.ffn_norm, dim);
  }
  // cudaMemcpy from pageable memory may return before the DMA lands, and sessions use non-blocking streams
  CUDA_CHECK(cudaDeviceSynchronize());
  return m;
}
DType cuda_model_dtype(const CudaModel& m) { return m.dtype; }

// ---- issue 6: low-rank weights ------------------------------------------------------------------------------

namespace {

void release(CudaModel& m, const void* p) {
  for (DeviceBuffer& b : m.bufs)
    if (b.ptr == p) {
      m.bytes -= b.bytes;
      b = DeviceBuffer();
      return;
    }
}

// Allocate the low-rank weights of ranks r (c_k rows r_kpad wide, W_fused blocks r_fused wide: KVLowRankModel's
// r_kpad / r_fused; k_rank each block's own key rank) and copy the W_Q and W_V rows of every layer's W_QKV into
// W_QKV' (device to device). The caller fills W_K', U_K, U_V and W_fused, then calls lowrank_finish.
CudaLowRank& lowrank_alloc(CudaModel& m, const KVSpec& spec, const KVRanks& r, int r_kpad, int r_fused,
                           std::vector<int> k_rank) {
  const Config& c = m.c;
  if (m.lowrank) fail("cuda_model_add_lowrank: the model already has a low-rank KV cache");
  const int64_t dim = c.dim, hd = c.head_dim, nkv = c.n_kv_heads, qd = int64_t(c.n_heads) * hd, kvd = nkv * hd;
  const int64_t kcd = nkv * r_kpad, fused_cols = int64_t(c.n_heads) * r_fused;
  if (fused_cols % 8 != 0)
    fail("--kv '", spec.text, "' on cuda: n_heads x r_vmax = ", c.n_heads, " x ", r_fused, " = ", fused_cols,
         " must be a multiple of 8 (the W_fused GEMV reads 8 bf16 at a time); pick another value rank or --device cpu");
  auto alloc = [&](size_t bytes) {
    m.bufs.emplace_back(bytes);
    m.bytes += bytes;
    return m.bufs.back().ptr;
  };
  auto lr = std::make_unique<CudaLowRank>();
  lr->policy = spec.policy;
  lr->ranks = r;
  lr->desc = kv_spec_describe(spec, r);
  lr->layers.resize(c.n_layers);
  lr->sinks = spec.sinks;
  lr->r_k = r_kpad;
  lr->r_vmax = r_fused;
  lr->k_rank = std::move(k_rank);
  lr->vsinks = spec.vsinks;
  lr->window = spec.window;
  lr->window_den = spec.window_den;
  lr->alloc_spectrum = spec.k_alloc_spectrum;
  for (int l = 0; l < c.n_layers; ++l) {
    CudaLowRankLayer& R = lr->layers[l];
    const CudaLayer& L = m.layers[l];
    R.wqkv = static_cast<bf16*>(alloc(size_t(qd + kcd + kvd) * dim * 2));
    R.uk = static_cast<float*>(alloc(size_t(kcd) * hd * 4));
    R.uv = static_cast<float*>(alloc(size_t(nkv) * r_fused * hd * 4));
    R.wfused = static_cast<bf16*>(alloc(size_t(dim) * fused_cols * 2));
    CUDA_CHECK(cudaMemcpy(R.wqkv, L.wqkv, size_t(qd) * dim * 2, cudaMemcpyDeviceToDevice));
    CUDA_CHECK(cudaMemcpy(R.wqkv + size_t(qd + kcd) * dim, L.wqkv + size_t(qd + kvd) * dim, size_t(kvd) * dim * 2,
                          cudaMemcpyDeviceToDevice));
    // sinks=N / window=N: W_K stays for the full keys (W_QKV is freed by lowrank_finish)
    if (spec.sinks > 0 || spec.window > 0) {
      R.wk = static_cast<bf16*>(alloc(size_t(kvd) * dim * 2));
      CUDA_CHECK(cudaMemcpy(R.wk, L.wqkv + size_t(qd) * dim, size_t(kvd) * dim * 2, cudaMemcpyDeviceToDevice));
    }
  }
  m.lowrank = std::move(lr);
  return *m.lowrank;
}

// Free the full-cache W_QKV and W_O (no longer read) and recount the bytes a decode step streams.
void lowrank_finish(CudaModel& m) {
  const Config& c = m.c;
  for (CudaLayer& L : m.layers) {
    release(m, L.wqkv);
    release(m, L.wo);
    L.wqkv = nullptr;
    L.wo = nullptr;
  }
  const size_t rk = m.lowrank->r_k, rv = m.lowrank->r_vmax;
  const size_t dim = c.dim, hd = c.head_dim, nkv = c.n_kv_heads, qd = size_t(c.n_heads) * hd, kvd = nkv * hd;
  const size_t ffn = c.ffn_dim, V = c.vocab_size;
  const size_t wk_rows = m.lowrank->window > 0 ? kvd : 0;  // window=N: every step's full key (W_K x)
  const size_t per_layer = ((qd + nkv * rk + kvd + wk_rows) * dim + dim * c.n_heads * rv + 3 * ffn * dim) * 2 +
                           nkv * (rk + rv) * hd * 4;  // + the bases, read by the write/attention kernels
  m.decode_weight_bytes = c.n_layers * per_layer + V * dim * 2 + dim * 2;
  CUDA_CHECK(cudaDeviceSynchronize());
}
}  // namespace

void cuda_model_add_lowrank(CudaModel& m, const KVLowRankModel& lrm) {
  cuda_dtype_kv_check(m.dtype, true, false, lrm.spec.text);
  const Config& c = m.c;
  const KVRanks& r = lrm.ranks;
  const int64_t dim = c.dim, hd = c.head_dim, nkv = c.n_kv_heads, qd = int64_t(c.n_heads) * hd;
  const int rk = lrm.r_kpad, rv = lrm.r_fused;  // alloc=spectrum: zero-padded blocks; window/vsinks: head_dim
  const int64_t kcd = nkv * rk, fused_cols = int64_t(c.n_heads) * rv;
  if (int(lrm.layers.size()) != c.n_layers)
    fail("cuda_model_add_lowrank: the low-rank model has ", lrm.layers.size(), " layers, the model ", c.n_layers);
  if (lrm.k_rank.size() != size_t(c.n_layers) * nkv)
    fail("cuda_model_add_lowrank: the low-rank model has ", lrm.k_rank.size(), " key ranks, the model ",
         c.n_layers * nkv, " blocks (recreate it with kv_lowrank_model_create for this model)");
  for (int l = 0; l < c.n_layers; ++l) {
    const KVLowRankModel::Layer& S = lrm.layers[l];
    if (S.wk.rows != kcd || S.wk.cols != dim || S.uk.size() != size_t(kcd * hd) ||
        S.uv.size() != size_t(nkv * rv * hd) || S.wo.rows != dim || S.wo.cols != fused_cols)
      fail("cuda_model_add_lowrank: layer ", l, "'s low-rank weights do not have the shapes of ranks k=", rk,
           ", v_max=", rv, " for this model (recreate them with kv_lowrank_model_create for this model)");
  }
  CudaLowRank& lr = lowrank_alloc(m, lrm.spec, r, rk, rv, lrm.k_rank);
  std::vector<uint16_t> staging;
  for (int l = 0; l < c.n_layers; ++l) {
    const KVLowRankModel::Layer& S = lrm.layers[l];
    CudaLowRankLayer& R = lr.layers[l];
    upload_matrix(R.wqkv + size_t(qd) * dim, S.wk, staging);  // the folded weights, whatever their fold type
    upload_f32(R.uk, S.uk.data(), S.uk.size());
    upload_f32(R.uv, S.uv.data(), S.uv.size());
    upload_matrix(R.wfused, S.wo, staging);
  }
  lowrank_finish(m);
}

bool cuda_model_has_lowrank(const CudaModel& m) { return m.lowrank != nullptr; }

void cuda_model_lowrank_randomize(CudaModel& m, const KVSpec& spec, uint64_t seed) {
  if (!spec.lowrank) fail("cuda_model_lowrank_randomize: the spec '", spec.text, "' is not low-rank");
  cuda_dtype_kv_check(m.dtype, true, false, spec.text);
  const Config& c = m.c;
  const KVRanks r = kv_spec_ranks(spec, c.head_dim);
  std::mt19937 rng(static_cast<uint32_t>(seed));
  // alloc=spectrum: random bases have no spectrum, so the allocation runs on a synthetic one (block b's key
  // eigenvalues decay as exp(-j / tau_b), tau_b drawn in [r_k / 2, 2 r_k]): the padded width r_kpad and the
  // per-block ranks (bytes) then vary as a real profile's do; timing depends on r_kpad only
  std::vector<int> k_rank(size_t(c.n_layers) * c.n_kv_heads, r.k);
  if (spec.k_alloc_spectrum) {
    KVProfile p;
    p.n_layers = c.n_layers;
    p.n_kv_heads = c.n_kv_heads;
    p.head_dim = c.head_dim;
    p.k_eig.resize(k_rank.size() * c.head_dim);
    std::uniform_real_distribution<double> tau(0.5 * r.k, 2.0 * r.k);
    for (size_t b = 0; b < k_rank.size(); ++b) {
      const double t = tau(rng);
      for (int j = 0; j < c.head_dim; ++j) p.k_eig[b * c.head_dim + j] = static_cast<float>(std::exp(-j / t));
    }
    k_rank = kv_key_rank_allocation(p, r.k);
  }
  const int r_kpad = *std::max_element(k_rank.begin(), k_rank.end());
  const int r_fused = spec.window > 0 || spec.vsinks > 0 ? c.head_dim : r.v_max();  // as kv_lowrank_model_create
  CudaLowRank& lr = lowrank_alloc(m, spec, r, r_kpad, r_fused, k_rank);
  lr.desc += " (random bases)";
  const int hd = c.head_dim, nkv = c.n_kv_heads, rv = r_fused;
  const int64_t dim = c.dim, qd = int64_t(c.n_heads) * hd, kcd = int64_t(nkv) * r_kpad;
  const float sd = 1.0f / std::sqrt(float(dim)), sf = 1.0f / std::sqrt(float(c.n_heads * rv));
  std::normal_distribution<double> normal(0.0, 1.0);
  // one orthonormal (hd x hd) basis per (layer, KV head) and kind: Gram-Schmidt of Gaussian rows (twice, for
  // fp32-level orthogonality); its first r rows are U^T[:r]
  std::vector<double> b(size_t(hd) * hd);
  auto basis = [&](float* out, int rows) {
    for (double& x : b) x = normal(rng);
    for (int i = 0; i < hd; ++i) {
      double* bi = b.data() + size_t(i) * hd;
      for (int pass = 0; pass < 2; ++pass)
        for (int j = 0; j < i; ++j) {
          const double* bj = b.data() + size_t(j) * hd;
          double d = 0.0;
          for (int e = 0; e < hd; ++e) d += bi[e] * bj[e];
          for (int e = 0; e < hd; ++e) bi[e] -= d * bj[e];
        }
      double nn = 0.0;
      for (int e = 0; e < hd; ++e) nn += bi[e] * bi[e];
      const double inv = 1.0 / std::sqrt(nn);
      for (int e = 0; e < hd; ++e) bi[e] *= inv;
    }
    for (size_t i = 0; i < size_t(rows) * hd; ++i) out[i] = static_cast<float>(b[i]);
  };
  std::vector<float> uk(size_t(kcd) * hd), uv(size_t(nkv) * rv * hd);
  for (int l = 0; l < c.n_layers; ++l) {
    CudaLowRankLayer& R = lr.layers[l];
    for (int g = 0; g < nkv; ++g) {
      basis(uk.data() + size_t(g) * r_kpad * hd, r_kpad);
      basis(uv.data() + size_t(g) * rv * hd, rv);
    }
    upload_f32(R.uk, uk.data(), uk.size());
    upload_f32(R.uv, uv.data(), uv.size());
    fill_random_bf16_cuda(R.wqkv + size_t(qd) * dim, kcd * dim, seed + 7919 * (l + 1), sd, nullptr);
    fill_random_bf16_cuda(R.wfused, dim * c.n_heads * rv, seed + 104729 * (l + 1), sf, nullptr);
  }
  lowrank_finish(m);
}

size_t cuda_model_device_bytes(const CudaModel& m) { return m.bytes; }

// ---- timing ----------------------------------------------------------------------------------------------

const char* op_family_name(OpFamily f) {
  static const char* names[] = {"embed",  "norm",   "qkv",  "rope_kv", "attention", "wo",
                                "gate_up", "swiglu", "down", "lm_head", "sample"};
  const int i = static_cast<int>(f);
  return i >= 0 && i < static_cast<int>(OpFamily::count) ? names[i] : "?";
}

OpTimer::~OpTimer() {
  for (cudaEvent_t e : events) cudaEventDestroy(e);
}

void OpTimer::mark(int fam, cudaStream_t st) {
  if (used == events.size()) {
    cudaEvent_t e;
    CUDA_CHECK(cudaEventCreate(&e));
    events.push_back(e);
    family.push_back(-1);
  }
  CUDA_CHECK(cudaEventRecord(events[used], st));
  family[used] = fam;
  ++used;
}

void OpTimer::collect() {
  if (used == 0) return;
  CUDA_CHECK(cudaEventSynchronize(events[used - 1]));
  for (size_t i = 0; i + 1 < used; ++i) {
    if (family[i] < 0) continue;
    float t = 0.0f;
    CUDA_CHECK(cudaEventElapsedTime(&t, events[i], events[i + 1]));
    ms[family[i]] += t;
  }
  used = 0;
}

// ---- session ---------------------------------------------------------------------------------------------

CudaSession::~CudaSession() {
  if (decode_graph) cudaGraphExecDestroy(decode_graph);
  if (host_io) cudaFreeHost(host_io);
  if (stream) cudaStreamDestroy(stream);
}

CudaSessionPtr cuda_session_create(const CudaModel& m, int capacity, int max_block) {
  if (capacity <= 0) fail("context size must be positive, got ", capacity);
  if (max_block <= 0) fail("prefill block size must be positive, got ", max_block);
  const Config& c = m.c;
  CudaSessionPtr s(new CudaSession);
  s->m = &m;
  s->capacity = capacity;
  s->max_block = std::min(max_block, capacity);
  CUDA_CHECK(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking));
  const size_t B = s->max_block, dim = c.dim, qd = size_t(c.n_heads) * c.head_dim;
  const size_t kvd = size_t(c.n_kv_heads) * c.head_dim, ffn = c.ffn_dim;
  if (!m.lowrank) {
    const size_t cache = size_t(c.n_layers) * c.n_kv_heads * capacity * c.head_dim * 2;
    s->kcache = DeviceBuffer(cache);
    s->vcache = DeviceBuffer(cache);
    CUDA_CHECK(cudaMemset(s->kcache.ptr, 0, cache));
    CUDA_CHECK(cudaMemset(s->vcache.ptr, 0, cache));
  } else {  // issue 6: c_k up front; cv grows in cuda_lowrank_begin
    const CudaLowRank& M = *m.lowrank;
    size_t key_ranks = 0;  // c_k values per token over all blocks (alloc=spectrum: the blocks' own ranks, packed)
    for (int r : M.k_rank) key_ranks += size_t(M.alloc_spectrum ? r : M.r_k);
    const size_t ck = key_ranks * capacity * 2;
    if (M.alloc_spectrum) {
      std::vector<int64_t> off(M.k_rank.size());
      int64_t at = 0;
      for (size_t b = 0; b < off.size(); ++b) {
        off[b] = at;
        at += int64_t(capacity) * M.k_rank[b];
      }
      s->lr_koff = DeviceBuffer(off.size() * sizeof(int64_t));
      s->lr_krank = DeviceBuffer(M.k_rank.size() * sizeof(int));
      CUDA_CHECK(cudaMemcpy(s->lr_koff.ptr, off.data(), s->lr_koff.bytes, cudaMemcpyHostToDevice));
      CUDA_CHECK(cudaMemcpy(s->lr_krank.ptr, M.k_rank.data(), s->lr_krank.bytes, cudaMemcpyHostToDevice));
    }
    s->ck = DeviceBuffer(ck);
    CUDA_CHECK(cudaMemset(s->ck.ptr, 0, ck));
    s->vrank = DeviceBuffer(size_t(capacity) * sizeof(int32_t));
    s->voff = DeviceBuffer((size_t(capacity) + 1) * sizeof(int64_t));
    CUDA_CHECK(cudaMemset(s->vrank.ptr, 0, s->vrank.bytes));
    CUDA_CHECK(cudaMemset(s->voff.ptr, 0, s->voff.bytes));
    s->h_vrank.assign(capacity, 0);
    s->h_voff.assign(size_t(capacity) + 1, 0);
    s->z = DeviceBuffer(B * c.n_heads * M.r_vmax * 4);
    s->lr_qkv = DeviceBuffer(B * (qd + size_t(c.n_kv_heads) * M.r_k + kvd) * 4);
    s->lr_splits = attention_lowrank_decode_splits(c.n_kv_heads, capacity, m.sm_count);
    s->n_sink = std::min(m.lowrank->sinks, capacity);  // sinks=N (KVLowRank::n_sink)
    if (s->n_sink > 0) {
      s->ksink = DeviceBuffer(size_t(c.n_layers) * c.n_kv_heads * s->n_sink * c.head_dim * 4);
      CUDA_CHECK(cudaMemset(s->ksink.ptr, 0, s->ksink.bytes));
    }
    KVSpec ws;  // window=N or A/B of the context (KVLowRank::window, kv_window_tokens)
    ws.window = M.window, ws.window_den = M.window_den;
    s->window = kv_window_tokens(ws, capacity);
    if (s->window > 0) {
      const size_t ring = size_t(c.n_layers) * c.n_kv_heads * s->window * c.head_dim * 4;
      s->kwin = DeviceBuffer(ring);
      s->vwin = DeviceBuffer(ring);
      CUDA_CHECK(cudaMemset(s->kwin.ptr, 0, ring));
      CUDA_CHECK(cudaMemset(s->vwin.ptr, 0, ring));
      s->lr_kfull = DeviceBuffer(B * kvd * 4);
      s->lr_vfull = DeviceBuffer(B * kvd * 4);
    }
  }
  s->x = DeviceBuffer(B * dim * 4);
  s->y = DeviceBuffer(B * dim * 4);
  s->xb = DeviceBuffer(B * dim * 2);
  s->qkv = DeviceBuffer(B * (qd + 2 * kvd) * 4);
  s->q = DeviceBuffer(B * qd * 2);
  s->att = DeviceBuffer(B * qd * 2);
  s->gu = DeviceBuffer(B * 2 * ffn * 4);
  s->h = DeviceBuffer(B * ffn * 2);
  s->logits = DeviceBuffer(size_t(c.vocab_size) * 4);
  s->tokens = DeviceBuffer(B * 4);
  s->pos = DeviceBuffer(B * 4);
  s->splits = attention_decode_splits(c.n_kv_heads, capacity, m.sm_count);
  size_t ws = attention_decode_workspace_floats(c.n_heads, c.head_dim, s->splits);
  if (m.lowrank) {
    const int rv = m.lowrank->r_vmax;
    ws = std::max(attention_lowrank_decode_workspace_floats(c.n_heads, rv, s->lr_splits),
                  attention_lowrank_prefill_workspace_floats(int(B), c.n_heads, rv));
  }
  s->attn_ws = DeviceBuffer(ws * 4);
  CUDA_CHECK(cudaMallocHost(&s->host_io, 2 * B * sizeof(int)));
  CUDA_CHECK(cudaDeviceSynchronize());  // the memsets above ran on the legacy stream; ours does not wait for it
  return s;
}

size_t cuda_session_device_bytes(const CudaSession& s) {
  size_t b = s.lt.workspace.bytes;
  for (const DeviceBuffer* d : {&s.kcache, &s.vcache, &s.x, &s.y, &s.xb, &s.qkv, &s.q, &s.att, &s.gu, &s.h, &s.logits,
                                &s.tokens, &s.pos, &s.attn_ws, &s.ck, &s.cv, &s.vrank, &s.voff, &s.z, &s.lr_qkv,
                                &s.ksink, &s.kwin, &s.vwin, &s.lr_kfull, &s.lr_vfull, &s.lr_koff, &s.lr_krank})
    b += d->bytes;
  if (s.kvq) {
    const CudaKVQ& q = *s.kvq;
    for (const DeviceBuffer* d : {&q.imp, &q.imp_ws, &q.data, &q.off, &q.bits, &q.epos, &q.lbase, &q.n_kv, &q.wb,
                                  &q.rq_koff, &q.rq_voff, &q.rq_src, &q.rq_bits, &q.ws, &q.lr_vrank, &q.lr_kt,
                                  &q.keep_pos, &q.keep_idx, &q.keep_x, &q.keep_kv, &q.keep_pack, &q.keep_off,
                                  &q.keep_bits, &q.keep_vr, &q.keep_n})
      b += d->bytes;
  }
  return b;
}

size_t cuda_session_kv_bytes(const CudaSession& s) {
  const Config& c = s.m->c;
  const size_t blocks = size_t(c.n_layers) * c.n_kv_heads;
  if (s.kvq) return s.kvq->active ? cuda_kvq_bytes(s, s.n, false) : 0;
  if (!s.m->lowrank) return 2 * blocks * s.n * c.head_dim * dtype_bytes(s.m->dtype);
  return cuda_lowrank_kv_bytes(s, s.n);
}

size_t cuda_lowrank_kv_bytes(const CudaSession& s, int n) {
  const Config& c = s.m->c;
  const CudaLowRank& M = *s.m->lowrank;
  const size_t blocks = size_t(c.n_layers) * c.n_kv_heads;
  // KVLowRank::bytes_used's count at the CUDA cache's element sizes: c_k / c_v bf16 at each block's own key rank
  // (alloc=spectrum: the padding to r_kpad is not counted) and each token's value rank; the sinks' full keys and
  // the window's full keys and values fp32; the last w tokens counted once, in full (cuda writes their c_k / c_v
  // rows too, unread until the tokens leave the ring: not counted, as the CPU holds each token once)
  const int w = std::min(n, s.window);
  size_t key_ranks = 0;
  for (int r : M.k_rank) key_ranks += size_t(r);
  return (size_t(n - w) * key_ranks + blocks * size_t(s.h_voff[n - w])) * 2 +
         blocks * (size_t(std::min(n, s.n_sink)) + 2 * size_t(w)) * c.head_dim * 4;
}

void cuda_lowrank_begin(CudaSession& s, int pos0, int n) {
  if (!s.m->lowrank) return;
  const CudaLowRank& M = *s.m->lowrank;
  const Config& c = s.m->c;
  if (pos0 < 0 || n < 1 || pos0 + n > s.capacity)
    fail("low-rank cache: positions ", pos0, " .. ", pos0 + n - 1, " outside the capacity ", s.capacity);
  // svd policy=importance (kv_prefill_forward's rule): scores set for this call rank it (every layer and KV head);
  // else the unified cache's prefill ranks per layer and KV head from the layer's own scores (c_v written at r_vmax
  // here, truncated by lr_layer_ranks_apply), and later tokens take v_high
  std::vector<float> given;
  given.swap(s.next_scores);
  if (!given.empty() && given.size() != size_t(n))
    fail("set_token_scores: ", given.size(), " scores given for a forward call of ", n, " tokens");
  if (s.kvq && pos0 == 0) s.kvq->lr_layer_ranks = false;
  if (M.policy == KVRankPolicy::importance && given.empty()) {
    if (!s.kvq)
      fail("--kv svd:...,policy=importance on cuda: the low-rank cache alone has no importance scores for positions ",
           pos0, " .. ", pos0 + n - 1, "; enable the unified cache (cuda_session_enable_prefill, as llm::Session "
           "does) or give scores (cuda_session_set_token_scores)");
    const bool by_layer = pos0 == 0;  // the prefill (the flag stays set for its packing, cuda_kvq_prefill_finish)
    std::fill_n(s.h_vrank.data() + pos0, n, by_layer ? M.ranks.v_max() : M.ranks.v_high);
    if (by_layer) s.kvq->lr_layer_ranks = true;
  } else {
    kv_policy_ranks(s.h_vrank.data() + pos0, M.policy, M.ranks, pos0, n, s.decode_step, given);
  }
  for (int t = pos0; t < std::min(pos0 + n, M.vsinks); ++t) s.h_vrank[t] = c.head_dim;  // value sinks (vsinks=N)
  for (int t = pos0; t < pos0 + n; ++t) s.h_voff[t + 1] = s.h_voff[t] + s.h_vrank[t];
  const int64_t need = s.h_voff[pos0 + n];
  if (need > s.v_cap) {
    // grow geometrically up to the worst case (as kv_lowrank_begin), re-laying every (layer, KV head) block
    const int64_t rv = M.r_vmax, worst = int64_t(s.capacity) * rv;
    const int64_t cap = std::max(need, std::min(worst, std::max<int64_t>(2 * s.v_cap, 64 * rv)));
    const size_t blocks = size_t(c.n_layers) * c.n_kv_heads;
    DeviceBuffer cv(blocks * cap * 2);
    CUDA_CHECK(cudaMemsetAsync(cv.ptr, 0, cv.bytes, s.stream));
    const int64_t keep = s.h_voff[pos0];
    if (keep > 0)
      CUDA_CHECK(cudaMemcpy2DAsync(cv.ptr, size_t(cap) * 2, s.cv.ptr, size_t(s.v_cap) * 2, size_t(keep) * 2, blocks,
                                   cudaMemcpyDeviceToDevice, s.stream));
    CUDA_CHECK(cudaStreamSynchronize(s.stream));  // before the old buffer is freed
    s.cv = std::move(cv);
    s.v_cap = cap;
    if (s.decode_graph) {  // it holds the old cv pointer and stride
      CUDA_CHECK(cudaGraphExecDestroy(s.decode_graph));
      s.decode_graph = nullptr;
    }
  }
  // pageable sources: staged before the calls return, so the host arrays may change afterwards
  CUDA_CHECK(cudaMemcpyAsync(s.vrank.as<int32_t>() + pos0, s.h_vrank.data() + pos0, size_t(n) * sizeof(int32_t),
                             cudaMemcpyHostToDevice, s.stream));
  CUDA_CHECK(cudaMemcpyAsync(s.voff.as<int64_t>() + pos0, s.h_voff.data() + pos0, (size_t(n) + 1) * sizeof(int64_t),
                             cudaMemcpyHostToDevice, s.stream));
}

// ---- issue 7: the mixed-precision cache (layout and semantics: CudaKVQ in forward_cuda.cuh) -----------------

void cuda_session_enable_prefill(CudaSession& s, const KVPrefillSpec& spec) {
  const CudaModel& m = *s.m;
  const Config& c = m.c;
  cuda_dtype_kv_check(m.dtype, false, true, spec.text);
  kv_prefill_spec_check(spec, c, m.lowrank != nullptr);
  if (m.lowrank && m.lowrank->sinks > 0)  // engine/session.cpp refuses the same for the CPU
    fail("--kv ", m.lowrank->desc, "+", spec.text, ": sinks=", m.lowrank->sinks, " is not supported by the unified "
         "cache (svd with quant/keep/evict or policy=importance) yet; drop sinks= or use svd alone with "
         "policy=seed|uniform");
  if (m.lowrank && (m.lowrank->window > 0 || m.lowrank->vsinks > 0 || m.lowrank->alloc_spectrum))
    fail("--kv ", m.lowrank->desc, "+", spec.text, ": window=, vsinks= and alloc=spectrum are not supported by the "
         "unified cache (svd with quant/keep/evict or policy=importance) on cuda yet; drop them, or use svd alone "
         "with policy=seed|uniform, or --device cpu");
  if (s.n != 0) fail("cuda_session_enable_prefill: the session already holds ", s.n, " tokens; enable it first");
  auto q = std::make_unique<CudaKVQ>();
  q->spec = spec;
  const int g = spec.quant.group;  // kv_prefill_create's rule
  q->lowrank = m.lowrank != nullptr;
  if (q->lowrank) {
    q->group = g < 0 ? 32 : g;  // rank rows: groups from the first coefficient (0: one group a row)
  } else {
    q->group = g == 0 || (g < 0 && c.head_dim % 32 != 0) ? c.head_dim : g < 0 ? 32 : g;
    if (c.head_dim % q->group != 0) q->group = c.head_dim;
    quant_check_cuda("--kv quant", c.head_dim, q->group, 2);
  }
  q->requant = kv_requant_bits(spec.quant);
  q->keep = kv_keep_schedule(spec.keep, c.n_layers);
  const size_t L = c.n_layers, Hkv = c.n_kv_heads, cap = s.capacity, R = L * Hkv * CudaKVQ::kMaxSlide;
  q->off = DeviceBuffer(L * Hkv * cap * 8);
  q->bits = DeviceBuffer(L * Hkv * cap);
  q->epos = DeviceBuffer(L * cap * 4);
  q->lbase = DeviceBuffer(L * 8);
  q->n_kv = DeviceBuffer(L * 4);
  q->wb = DeviceBuffer(L * Hkv * 4);
  q->rq_koff = DeviceBuffer(R * 8);
  q->rq_voff = DeviceBuffer(R * 8);
  q->rq_src = DeviceBuffer(R * 4);
  q->rq_bits = DeviceBuffer(R);
  q->splits = attention_quant_decode_splits(c.n_kv_heads, s.capacity, m.sm_count);
  // a call of n queries runs max(1, splits / n) splits: n * that <= max(splits, max_block) partials per head
  q->ws = DeviceBuffer(attention_quant_workspace_floats(1, c.n_heads, c.head_dim, std::max(q->splits, s.max_block)) *
                       4);
  if (q->lowrank) {  // the same rule for the rank-space kernel
    q->lr_splits = attention_lowrank_quant_splits(c.n_kv_heads, s.capacity, m.sm_count);
    q->ws = DeviceBuffer(attention_lowrank_quant_workspace_floats(1, c.n_heads, m.lowrank->ranks.v_max(),
                                                                  std::max(q->lr_splits, s.max_block)) * 4);
    q->lr_vrank = DeviceBuffer(L * Hkv * cap * 2);
    CUDA_CHECK(cudaMemset(q->lr_vrank.ptr, 0, q->lr_vrank.bytes));
  }
  CUDA_CHECK(cudaMemset(q->n_kv.ptr, 0, q->n_kv.bytes));
  CUDA_CHECK(cudaDeviceSynchronize());
  s.kvq = std::move(q);
  if (s.decode_graph) {
    CUDA_CHECK(cudaGraphExecDestroy(s.decode_graph));
    s.decode_graph = nullptr;
  }
}

void cuda_kvq_prefill_begin(CudaSession& s, int m) {
  CudaKVQ& q = *s.kvq;
  const Config& c = s.m->c;
  if (m < 1 || m > s.capacity) fail("compressed prefill: ", m, " tokens outside the capacity ", s.capacity);
  if (m > q.imp_m) {
    q.imp = DeviceBuffer(size_t(c.n_layers) * 2 * c.n_kv_heads * m * 4);
    q.imp_ws = DeviceBuffer(attention_importance_workspace_floats(m, c.n_heads) * 4);
    if (q.lowrank) q.lr_kt = DeviceBuffer(size_t(c.n_kv_heads) * m * c.head_dim * 2);
    if (q.drops()) {  // selective propagation's scratch (CudaKVQ)
      q.keep_pos = DeviceBuffer(size_t(m) * 4);
      q.keep_idx = DeviceBuffer(size_t(m) * 4);
      q.keep_x = DeviceBuffer(size_t(m) * c.dim * 4);
      if (!q.lowrank) q.keep_kv = DeviceBuffer(size_t(2) * c.n_kv_heads * m * c.head_dim * 2);
    }
    if (q.drops() && q.lowrank) {  // svd + keep: the kept rows' 16-bit slots; offsets and widths fixed up front
      const KVRanks& r = s.m->lowrank->ranks;
      const size_t slots = size_t(c.n_kv_heads) * m, slot_bytes = size_t(r.k + r.v_max()) * 2;
      q.keep_pack = DeviceBuffer(slots * slot_bytes);
      q.keep_off = DeviceBuffer(slots * 8);
      q.keep_bits = DeviceBuffer(slots);
      q.keep_vr = DeviceBuffer(slots * 2);
      q.keep_n = DeviceBuffer(4);
      std::vector<uint64_t> off(slots);
      for (size_t i = 0; i < slots; ++i) off[i] = i * slot_bytes;
      CUDA_CHECK(cudaMemcpy(q.keep_off.ptr, off.data(), slots * 8, cudaMemcpyHostToDevice));
      CUDA_CHECK(cudaMemset(q.keep_bits.ptr, 16, slots));
      CUDA_CHECK(cudaDeviceSynchronize());  // legacy-stream copies; the session's stream does not wait for them
    }
    if (q.lowrank) q.lr_rank = DeviceBuffer(size_t(c.n_kv_heads) * m * 4);
    q.imp_m = m;
  }
  std::vector<int32_t> all(m);  // every layer computes every token until forward_block_cuda drops some
  std::iota(all.begin(), all.end(), 0);
  q.h_lpos.assign(c.n_layers, all);
  if (q.lr_layer_ranks) q.h_lr_rank.assign(size_t(c.n_layers) * c.n_kv_heads * m, 0);
  q.active = false;
}

void cuda_kvq_prefill_finish(CudaSession& s, int n) {
  CudaKVQ& q = *s.kvq;
  const Config& c = s.m->c;
  const int L = c.n_layers, Hkv = c.n_kv_heads, hd = c.head_dim, cap = s.capacity;
  if (n < 1 || n > q.imp_m) fail("internal: cuda_kvq_prefill_finish(", n, ") without cuda_kvq_prefill_begin");
  std::vector<float> acc(size_t(L) * 2 * Hkv * n);
  CUDA_CHECK(cudaMemcpyAsync(acc.data(), q.imp.ptr, acc.size() * 4, cudaMemcpyDeviceToHost, s.stream));
  CUDA_CHECK(cudaStreamSynchronize(s.stream));
  // From here on kv_prefill_forward's selection and classes, line for line, on the accumulators the device
  // computed: layer l's m_l tokens at positions h_lpos[l] (all n, 0..n-1, without selective propagation).
  const KVImportanceParams& imp = q.spec.imp;
  const KVQuantSpec& qs = q.spec.quant;
  const int w_rows = std::min(imp.w, n), win_start = n - w_rows;
  const std::vector<float> budget = kv_evict_budgets(q.spec.evict, L);
  if (q.h_lpos.size() != size_t(L)) fail("internal: cuda_kvq_prefill_finish without the layers' positions");
  std::vector<uint64_t> off(size_t(L) * Hkv * cap, 0), lbase(L, 0);
  std::vector<uint8_t> bits(size_t(L) * Hkv * cap, 16);
  std::vector<int32_t> epos(size_t(L) * cap, 0);
  std::vector<int> wb(size_t(L) * Hkv, 0), entries_before = q.h_entries;
  std::vector<uint64_t> row_koff, row_voff;  // the prompt rows to quantise: offsets in data of K and V
  std::vector<uint8_t> row_bits;
  std::vector<int> row_src;                  // their rows in the bf16 caches: (layer, KV head, position)
  q.h_entries.assign(L, 0);
  q.h_wb0.assign(L, 0);
  q.h_fixed.assign(L, 0);
  size_t slot = size_t(4) * hd;  // a later token's entry: bf16 K row, bf16 V row
  // the unified cache: rank-space rows, packed on the host from the bf16 ck/cv caches (quantize_rank_row_cpu)
  const int rk = q.lowrank ? s.m->lowrank->ranks.k : 0, rvm = q.lowrank ? s.m->lowrank->ranks.v_max() : 0;
  auto rank_bytes = [&](int len, int w) { return quant_rank_row_bytes_16(len, w, q.group); };
  struct LrRow {
    uint64_t at;
    int l, g, p, w, r;
  };
  std::vector<LrRow> lr_rows;
  std::vector<uint16_t> vr16;
  if (q.lowrank) {  // a later entry's slot: bf16 rows at r_vmax, or their re-quantised rows if larger
    slot = std::max(rank_bytes(rk, 16) + rank_bytes(rvm, 16), rank_bytes(rk, q.requant) + rank_bytes(rvm, q.requant));
    vr16.assign(size_t(L) * Hkv * cap, 0);
  }
  uint64_t total = 0;
  for (int l = 0; l < L; ++l) {
    const std::vector<int32_t>& pos = q.h_lpos[l];  // the layer's computed tokens (selective propagation)
    const int ml = static_cast<int>(pos.size());
    const float* cum = acc.data() + size_t(l) * 2 * Hkv * n;
    const KVImportance I = kv_importance_compute(cum, cum + size_t(Hkv) * ml, Hkv, ml, c.n_heads / Hkv, w_rows,
                                                 pos.data(), n, imp);
    std::vector<float> ms(ml, 0.0f);  // eviction: the method's own score
    for (int t = 0; t < ml; ++t) {
      float v = 0.0f;
      for (int g = 0; g < Hkv; ++g) v += I.score[size_t(g) * ml + t];
      switch (q.spec.evict.method) {
        case KVEvict::streaming: v = static_cast<float>(pos[t]); break;
        case KVEvict::h2o:
          v = 0;
          for (int g = 0; g < Hkv; ++g) v += I.cum[size_t(g) * ml + t];
          break;
        case KVEvict::snapkv:
        case KVEvict::pyramidkv:
          v = 0;
          for (int g = 0; g < Hkv; ++g) v += I.win[size_t(g) * ml + t];
          break;
        default: break;
      }
      ms[t] = v;
    }
    const int count = std::min(ml, std::max(1, static_cast<int>(std::ceil(budget[l] * n))));
    std::vector<int> sel(ml);  // indices into the layer's tokens
    std::iota(sel.begin(), sel.end(), 0);
    if (count < ml) sel = kv_select(ms.data(), pos.data(), ml, count, imp.sinks, win_start);
    std::vector<int> entries(sel.size());  // their positions
    for (size_t a = 0; a < sel.size(); ++a) entries[a] = pos[sel[a]];
    const int E = static_cast<int>(entries.size());
    int w0 = E;  // the first entry of the prompt's 16-bit window
    for (int a = 0; a < E; ++a)
      if (entries[a] >= n - qs.recent) {
        w0 = a;
        break;
      }
    q.h_entries[l] = E;
    q.h_wb0[l] = w0;
    lbase[l] = total;
    uint64_t at = 0;
    for (int g = 0; g < Hkv; ++g) {
      std::vector<int> width(E, 16);
      if (qs.on) {  // the recent window at 16 bits, the rest by importance quantiles of this KV head
        std::vector<int> order;
        for (int a = 0; a < E; ++a)
          if (entries[a] < n - qs.recent) order.push_back(a);
        const float* sc = I.score.data() + size_t(g) * ml;
        std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return sc[sel[a]] > sc[sel[b]]; });
        const size_t R = order.size();
        size_t r = 0;
        float fa = 0;
        for (size_t b = 0; b < qs.bits.size(); ++b) {
          fa += qs.frac[b];
          const size_t end = b + 1 == qs.bits.size() ? R : std::min(R, size_t(std::lround(fa * R)));
          for (; r < end; ++r) width[order[r]] = qs.bits[b];
        }
      }
      for (int a = 0; a < E && q.lowrank; ++a) {
        const int p = entries[a];
        const int r = q.lr_layer_ranks ? q.h_lr_rank[(size_t(l) * Hkv + g) * n + p] : s.h_vrank[p];
        const size_t idx = (size_t(l) * Hkv + g) * cap + a, rb = rank_bytes(rk, width[a]) + rank_bytes(r, width[a]);
        off[idx] = at;
        bits[idx] = static_cast<uint8_t>(width[a]);
        vr16[idx] = static_cast<uint16_t>(r);
        lr_rows.push_back({total + at, l, g, p, width[a], r});
        if (a < w0) q.h_fixed[l] += rb;
        at += rb;
      }
      for (int a = 0; a < E && !q.lowrank; ++a) {
        const size_t rb = quant_row_bytes_cuda(hd, width[a], q.group, 2);
        const size_t idx = (size_t(l) * Hkv + g) * cap + a;
        off[idx] = at;
        bits[idx] = static_cast<uint8_t>(width[a]);
        row_koff.push_back(total + at);
        row_voff.push_back(total + at + rb);
        row_bits.push_back(static_cast<uint8_t>(width[a]));
        row_src.push_back(static_cast<int>((size_t(l) * Hkv + g) * cap + entries[a]));
        if (a < w0) q.h_fixed[l] += 2 * rb;
        at += 2 * rb;
      }
      wb[size_t(l) * Hkv + g] = w0;
    }
    at = (at + 15) / 16 * 16;
    for (int a = 0; a < E; ++a) epos[size_t(l) * cap + a] = entries[a];
    for (int t = 0; n + t < cap; ++t) {  // later tokens: entry E + t holds position n + t, 16 bits until it slides
      epos[size_t(l) * cap + E + t] = n + t;
      for (int g = 0; g < Hkv; ++g) off[(size_t(l) * Hkv + g) * cap + E + t] = at + (size_t(t) * Hkv + g) * slot;
    }
    total += at + size_t(cap - n) * Hkv * slot;
    total = (total + 15) / 16 * 16;
  }
  q.scratch = total;
  total += size_t(L) * Hkv * CudaKVQ::kMaxSlide * hd * 2;
  bool relaid = false;
  if (q.data.bytes < total) {
    q.data = DeviceBuffer(total);
    relaid = true;
  }
  // the decode graph holds data's pointer, the layers' bases, entry counts and n_prompt: recapture on a change
  if (s.decode_graph && (relaid || lbase != q.h_lbase || q.h_entries != entries_before || n != q.n_prompt)) {
    CUDA_CHECK(cudaGraphExecDestroy(s.decode_graph));
    s.decode_graph = nullptr;
  }
  q.h_lbase = lbase;
  q.n_prompt = n;
  const cudaStream_t st = s.stream;
  CUDA_CHECK(cudaMemcpyAsync(q.off.ptr, off.data(), off.size() * 8, cudaMemcpyHostToDevice, st));
  CUDA_CHECK(cudaMemcpyAsync(q.bits.ptr, bits.data(), bits.size(), cudaMemcpyHostToDevice, st));
  CUDA_CHECK(cudaMemcpyAsync(q.epos.ptr, epos.data(), epos.size() * 4, cudaMemcpyHostToDevice, st));
  CUDA_CHECK(cudaMemcpyAsync(q.lbase.ptr, lbase.data(), lbase.size() * 8, cudaMemcpyHostToDevice, st));
  CUDA_CHECK(cudaMemcpyAsync(q.wb.ptr, wb.data(), wb.size() * 4, cudaMemcpyHostToDevice, st));
  if (q.lowrank) {
    // kv_prefill_forward's rows from what the cache holds: c_k and c_v as bf16 (exact in fp32), packed with the
    // CPU's quantize_rank_row_cpu; 16-bit rows stay bf16 (row16 2)
    q.h_epos = epos;
    q.h_vr = vr16;
    CUDA_CHECK(cudaMemcpyAsync(q.lr_vrank.ptr, vr16.data(), vr16.size() * 2, cudaMemcpyHostToDevice, st));
    std::vector<uint16_t> ck(s.ck.bytes / 2), cv(s.cv.bytes / 2);
    CUDA_CHECK(cudaMemcpyAsync(ck.data(), s.ck.ptr, ck.size() * 2, cudaMemcpyDeviceToHost, st));
    if (!cv.empty()) CUDA_CHECK(cudaMemcpyAsync(cv.data(), s.cv.ptr, cv.size() * 2, cudaMemcpyDeviceToHost, st));
    CUDA_CHECK(cudaStreamSynchronize(st));
    std::vector<uint8_t> packed(total, 0);
    std::vector<float> f(std::max(rk, rvm));
    for (const LrRow& R : lr_rows) {
      const size_t blk = size_t(R.l) * Hkv + R.g;
      const int r = R.r;
      const uint16_t* src[2] = {ck.data() + (blk * cap + R.p) * rk, cv.data() + blk * s.v_cap + s.h_voff[R.p]};
      const int len[2] = {rk, r};
      uint8_t* dst = packed.data() + R.at;
      for (int h = 0; h < 2; ++h) {
        if (R.w == 16) {
          for (int j = 0; j < len[h]; ++j) dst[2 * j] = uint8_t(src[h][j]), dst[2 * j + 1] = uint8_t(src[h][j] >> 8);
        } else {
          for (int j = 0; j < len[h]; ++j) f[j] = bf16_to_f32(src[h][j]);
          quantize_rank_row_cpu(dst, f.data(), len[h], R.w, q.group);
        }
        dst += rank_bytes(len[h], R.w);
      }
    }
    CUDA_CHECK(cudaMemcpyAsync(q.data.ptr, packed.data(), packed.size(), cudaMemcpyHostToDevice, st));
    CUDA_CHECK(cudaStreamSynchronize(st));  // the host arrays are freed on return
    q.active = true;
    return;
  }
  const size_t rows = row_src.size();
  DeviceBuffer dk(rows * 8), dv(rows * 8), db(rows), ds(rows * 4);
  CUDA_CHECK(cudaMemcpyAsync(dk.ptr, row_koff.data(), rows * 8, cudaMemcpyHostToDevice, st));
  CUDA_CHECK(cudaMemcpyAsync(dv.ptr, row_voff.data(), rows * 8, cudaMemcpyHostToDevice, st));
  CUDA_CHECK(cudaMemcpyAsync(db.ptr, row_bits.data(), rows, cudaMemcpyHostToDevice, st));
  CUDA_CHECK(cudaMemcpyAsync(ds.ptr, row_src.data(), rows * 4, cudaMemcpyHostToDevice, st));
  QuantRowsArgs a;
  a.dst = q.data.as<uint8_t>();
  a.dst_off = dk.as<uint64_t>();
  a.bits = db.as<uint8_t>();
  a.src_row = ds.as<int>();
  a.x_stride = hd;
  a.n_rows = static_cast<int>(rows);
  a.n = hd;
  a.group = q.group;
  a.row16 = 2;
  if (qs.hadamard)  // the cache holds H k and H v (the prefill attended to the plain rows): every layer's prompt rows
    for (bf16* x : {s.kcache.as<bf16>(), s.vcache.as<bf16>()})
      hadamard_rows_cuda(x, nullptr, n, L * Hkv, int64_t(cap) * hd, hd, hd, st);
  quantize_rows_cuda(a, s.kcache.as<bf16>(), st);
  a.dst_off = dv.as<uint64_t>();
  quantize_rows_cuda(a, s.vcache.as<bf16>(), st);
  CUDA_CHECK(cudaStreamSynchronize(st));  // the host arrays and the row lists are freed on return
  q.active = true;
}

size_t cuda_kvq_bytes(const CudaSession& s, int n_total, bool read) {
  const CudaKVQ& q = *s.kvq;
  const Config& c = s.m->c;
  const int Hkv = c.n_kv_heads, hd = c.head_dim;
  const bool slides = q.spec.quant.on;
  const int later = std::max(0, n_total - q.n_prompt);
  size_t b = 0;
  if (q.lowrank) {  // KVPrefill::bytes_used: rank rows at their widths (16 bits at 2 bytes), position, width, rank
    const int rk = s.m->lowrank->ranks.k;
    for (int l = 0; l < c.n_layers; ++l) {
      const int E = q.h_entries[l] + later, w0 = q.h_wb0[l];
      const int wbe = slides ? std::max(w0, E - q.spec.quant.recent) : w0;
      b += q.h_fixed[l];
      for (int e = w0; e < E; ++e)
        for (int g = 0; g < Hkv; ++g) {  // a prompt entry's rank per KV head (policy=importance), a later one's per call
          const int w = e < wbe ? q.requant : 16;
          const int r = e < q.h_entries[l] ? q.h_vr[(size_t(l) * Hkv + g) * s.capacity + e]
                                           : s.h_vrank[q.h_epos[size_t(l) * s.capacity + e]];
          b += quant_rank_row_bytes_16(rk, w, q.group) + quant_rank_row_bytes_16(r, w, q.group);
        }
      b += read ? size_t(Hkv) * E * (8 + 1 + 2) : size_t(E) * 4 + size_t(Hkv) * E * 3;
    }
    return b;
  }
  const size_t row16 = quant_row_bytes_cuda(hd, 16, q.group, 2), rowq = quant_row_bytes_cuda(hd, q.requant, q.group, 2);
  for (int l = 0; l < c.n_layers; ++l) {
    const int E = q.h_entries[l] + later, w0 = q.h_wb0[l];
    const int wbe = slides ? std::max(w0, E - q.spec.quant.recent) : w0;
    b += q.h_fixed[l] + size_t(Hkv) * (size_t(wbe - w0) * 2 * rowq + size_t(E - wbe) * 2 * row16);
    b += read ? size_t(Hkv) * E * (8 + 1) : size_t(E) * 4 + size_t(Hkv) * E;
  }
  return b;
}

void cuda_session_set_token_scores(CudaSession& s, std::vector<float> scores) {
  if (!s.m->lowrank) fail("set_token_scores: the session's KV cache is not low-rank (--kv svd:...)");
  s.next_scores = std::move(scores);
}

void cuda_session_reset(CudaSession& s) {
  s.n = 0;
  if (s.kvq) s.kvq->active = false;
}
int cuda_session_n(const CudaSession& s) { return s.n; }

namespace {
__global__ void advance_kernel(int* pos) { pos[0] += 1; }

// y (n, rows) = x (n, cols) W^T: the GEMV for one token, cuBLASLt otherwise.
template <class T>
void matmul(CudaSession& s, float* y, const T* x, const T* w, int n, int rows, int cols) {
  if (n == 1)
    gemv_cuda(y, w, x, rows, cols, s.stream);
  else
    gemm_cuda(s.lt, y, x, w, n, rows, cols, s.stream);
}
// Block = token i: row i of src (n, qd + kcd + kvd) into q (n, qd), kc (n, kcd), v (n, kvd).
__global__ void split_qkv_kernel(float* q, float* kc, float* v, const float* src, int qd, int kcd, int kvd) {
  const int i = blockIdx.x, w = qd + kcd + kvd;
  const float* row = src + size_t(i) * w;
  for (int j = threadIdx.x; j < w; j += blockDim.x) {
    const float x = row[j];
    if (j < qd)
      q[size_t(i) * qd + j] = x;
    else if (j < qd + kcd)
      kc[size_t(i) * kcd + (j - qd)] = x;
    else
      v[size_t(i) * kvd + (j - qd - kcd)] = x;
  }
}

// Issue 7: the n tokens of a later call join layer l as 16-bit entries (their bf16 K row then V row, copied from
// the bf16 cache rope_kv_write_cuda has just written) in their fixed slots: entry entries0 + pos - n_prompt.
// Block (token i, KV head g). n_kv: the entries this call's attention sees (the last token's entry + 1).
__global__ void kvq_append_kernel(uint8_t* data, const uint64_t* off, const bf16* kc, const bf16* vc, const int* pos,
                                  int* n_kv, int entries0, int n_prompt, int capacity, int hd, int n) {
  const int i = blockIdx.x, g = blockIdx.y, p = pos[i];
  const int e = entries0 + p - n_prompt;
  uint8_t* dst = data + off[size_t(g) * capacity + e];  // slots may start at any byte: stored byte by byte
  const uint16_t* ks = reinterpret_cast<const uint16_t*>(kc + (size_t(g) * capacity + p) * hd);
  const uint16_t* vs = reinterpret_cast<const uint16_t*>(vc + (size_t(g) * capacity + p) * hd);
  for (int j = threadIdx.x; j < hd; j += blockDim.x) {
    const uint32_t k = ks[j], v = vs[j];
    dst[2 * j] = static_cast<uint8_t>(k);
    dst[2 * j + 1] = static_cast<uint8_t>(k >> 8);
    dst[2 * hd + 2 * j] = static_cast<uint8_t>(v);
    dst[2 * hd + 2 * j + 1] = static_cast<uint8_t>(v >> 8);
  }
  if (i == n - 1 && g == 0 && threadIdx.x == 0) *n_kv = e + 1;
}

// Issue 7, the unified cache's prefill scores (kv_prefill_forward): the prompt's keys rebuilt from c_k,
// key[d] = sum_j c_k[j] U_K[j, d] in fp32, RoPE'd at the token's position as rope_cpu, into kt (n_kv_heads, m,
// head_dim) bf16 for attention_importance_cuda. Block (token i, KV head g).
__global__ void lr_rebuild_keys_kernel(bf16* kt, const bf16* ck, const float* uk, const int* pos,
                                       const float* inv_freq, int capacity, int rk, int hd, int m, bool interleaved) {
  __shared__ float key[256];
  const int i = blockIdx.x, g = blockIdx.y, half = hd / 2, p = pos[i];
  const bf16* c = ck + (size_t(g) * capacity + p) * rk;
  const float* u = uk + size_t(g) * rk * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float acc = 0.0f;
    for (int j = 0; j < rk; ++j) acc += __bfloat162float(c[j]) * u[size_t(j) * hd + d];
    key[d] = acc;
  }
  __syncthreads();
  bf16* out = kt + (size_t(g) * m + i) * hd;
  for (int j = threadIdx.x; j < half; j += blockDim.x) {
    const float ang = static_cast<float>(p) * inv_freq[j];
    const float cs = cosf(ang), sn = sinf(ang);
    const int d0 = interleaved ? 2 * j : j, d1 = interleaved ? 2 * j + 1 : j + half;
    const float a = key[d0], b = key[d1];
    out[d0] = __float2bfloat16_rn(a * cs - b * sn);
    out[d1] = __float2bfloat16_rn(a * sn + b * cs);
  }
}

// The unified cache: the n tokens of a later call join layer l as 16-bit entries, their bf16 c_k row then c_v row
// (value rank vrank[pos]) copied from the ck/cv caches kv_lowrank_write_cuda has just written, in their fixed
// slots: entry entries0 + pos - n_prompt. Block (token i, KV head g).
__global__ void kvq_lr_append_kernel(uint8_t* data, const uint64_t* off, uint16_t* evrank, const bf16* ck,
                                     const bf16* cv, const int64_t* voff, const int32_t* vrank, const int* pos,
                                     int* n_kv, int entries0, int n_prompt, int capacity, int64_t v_cap, int rk,
                                     int n) {
  const int i = blockIdx.x, g = blockIdx.y, p = pos[i], r = vrank[p];
  const int e = entries0 + p - n_prompt;
  uint8_t* dst = data + off[size_t(g) * capacity + e];
  const uint16_t* ks = reinterpret_cast<const uint16_t*>(ck + (size_t(g) * capacity + p) * rk);
  const uint16_t* vs = reinterpret_cast<const uint16_t*>(cv + size_t(g) * v_cap + voff[p]);
  for (int j = threadIdx.x; j < rk + r; j += blockDim.x) {
    const uint32_t x = j < rk ? ks[j] : vs[j - rk];
    dst[2 * j] = static_cast<uint8_t>(x);
    dst[2 * j + 1] = static_cast<uint8_t>(x >> 8);
  }
  if (threadIdx.x == 0) evrank[size_t(g) * capacity + e] = static_cast<uint16_t>(r);
  if (i == n - 1 && g == 0 && threadIdx.x == 0) *n_kv = e + 1;
}

// quantize_rank_row_cpu on the device, one thread, from bf16 values (quant.cu's arithmetic: fp16 scale and min
// first, codes by round-to-nearest-even against them). Returns the bytes written.
__device__ size_t lr_quant_rank_row(uint8_t* dst, const bf16* x, int n, int bits, int group) {
  const int gs = group <= 0 || group >= n ? n : group, qmax = (1 << bits) - 1, per_byte = 8 / bits;
  uint8_t* d = dst;
  for (int g0 = 0; g0 < n; g0 += gs) {
    const int len = min(gs, n - g0);
    float lo = __bfloat162float(x[g0]), hi = lo;
    for (int i = 1; i < len; ++i) {
      const float v = __bfloat162float(x[g0 + i]);
      lo = v < lo ? v : lo;
      hi = hi < v ? v : hi;
    }
    const __half h_min = __float2half_rn(lo), h_scale = __float2half_rn(__fdiv_rn(hi - lo, float(qmax)));
    const float mn = __half2float(h_min), sc = __half2float(h_scale);
    const float inv = sc > 0.0f ? __fdiv_rn(1.0f, sc) : 0.0f;
    const uint32_t hs = __half_as_ushort(h_scale), hm = __half_as_ushort(h_min);
    d[0] = uint8_t(hs), d[1] = uint8_t(hs >> 8), d[2] = uint8_t(hm), d[3] = uint8_t(hm >> 8);
    const int code_bytes = (len * bits + 7) / 8;
    for (int b = 0; b < code_bytes; ++b) {
      uint32_t byte = 0;
      for (int k = 0; k < per_byte && b * per_byte + k < len; ++k) {
        int c = __float2int_rn(__fmul_rn(__fsub_rn(__bfloat162float(x[g0 + b * per_byte + k]), mn), inv));
        c = min(max(c, 0), qmax);
        byte |= uint32_t(c) << (k * bits);
      }
      d[4 + b] = static_cast<uint8_t>(byte);
    }
    d += 4 + code_bytes;
  }
  return size_t(d - dst);
}

// The unified cache's sliding window (kv_prefill.cpp slide_window, svd): per (layer, KV head) thread, the entries
// leaving the last `recent` are re-quantised to `width` in place in their slots, from the ck/cv caches at the
// entry's position (the packed rows only ever shrink: the slot holds them). wb advances.
struct KVQLrSlideArgs {
  uint8_t* data;
  uint8_t* bits;
  int* wb;
  const uint64_t* off;
  const uint16_t* evrank;
  const int32_t* epos;
  const uint64_t* lbase;
  const int* n_kv;
  const bf16* ck;
  const bf16* cv;
  const int64_t* voff;
  int64_t v_cap;
  int n_layers, n_kv_heads, capacity, recent, width, rk, group;
};
__global__ void kvq_lr_slide_kernel(KVQLrSlideArgs a) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= a.n_layers * a.n_kv_heads) return;
  const int l = t / a.n_kv_heads;
  const int E = a.n_kv[l], w0 = a.wb[t], nb = max(w0, E - a.recent);
  const size_t lg = size_t(t);  // == l * n_kv_heads + g
  for (int e = w0; e < nb; ++e) {
    const int p = a.epos[size_t(l) * a.capacity + e], r = a.evrank[lg * a.capacity + e];
    uint8_t* dst = a.data + a.lbase[l] + a.off[lg * a.capacity + e];
    dst += lr_quant_rank_row(dst, a.ck + (lg * a.capacity + p) * a.rk, a.rk, a.width, a.group);
    lr_quant_rank_row(dst, a.cv + lg * a.v_cap + a.voff[p], r, a.width, a.group);
    a.bits[lg * a.capacity + e] = static_cast<uint8_t>(a.width);
  }
  a.wb[t] = nb;
}

// Issue 7, the sliding window (kv_prefill.cpp slide_window): per (layer, KV head) thread, the entries that leave
// the last `recent` (up to `rows` of them per pass) get width `width`; their K and V rows are listed for
// quantize_rows_cuda (in place in their slots, from the bf16 cache at the entry's position), the other list rows
// point at scratch rows at 16 bits (no effect). wb advances.
struct KVQSlideArgs {
  uint64_t* koff;
  uint64_t* voff;
  uint8_t* rbits;
  int* rsrc;
  uint8_t* bits;
  int* wb;
  const uint64_t* off;
  const int32_t* epos;
  const uint64_t* lbase;
  const int* n_kv;
  uint64_t scratch, row_bytes;
  int n_layers, n_kv_heads, capacity, recent, width, rows, hd;
};
__global__ void kvq_slide_prep_kernel(KVQSlideArgs a) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= a.n_layers * a.n_kv_heads) return;
  const int l = t / a.n_kv_heads, g = t - l * a.n_kv_heads;
  const int E = a.n_kv[l], w0 = a.wb[t];
  const int nb = max(w0, E - a.recent), end = min(nb, w0 + a.rows);
  const size_t lg = size_t(l) * a.n_kv_heads + g;
  for (int j = 0; j < a.rows; ++j) {
    const size_t r = size_t(t) * a.rows + j;
    const int e = w0 + j;
    if (e < end) {
      const uint64_t o = a.lbase[l] + a.off[lg * a.capacity + e];
      a.koff[r] = o;
      a.voff[r] = o + a.row_bytes;
      a.rbits[r] = static_cast<uint8_t>(a.width);
      a.rsrc[r] = static_cast<int>(lg * a.capacity + a.epos[size_t(l) * a.capacity + e]);
      a.bits[lg * a.capacity + e] = static_cast<uint8_t>(a.width);
    } else {
      a.koff[r] = a.voff[r] = a.scratch + r * a.hd * 2;
      a.rbits[r] = 16;
      a.rsrc[r] = 0;
    }
  }
  a.wb[t] = end;
}

void kvq_slide(CudaSession& s, int n) {
  CudaKVQ& q = *s.kvq;
  if (!q.spec.quant.on || q.requant == 16) return;  // nothing stored changes (the CPU only moves win_begin)
  const Config& c = s.m->c;
  if (q.lowrank) {
    KVQLrSlideArgs a;
    a.data = q.data.as<uint8_t>();
    a.bits = q.bits.as<uint8_t>();
    a.wb = q.wb.as<int>();
    a.off = q.off.as<uint64_t>();
    a.evrank = q.lr_vrank.as<uint16_t>();
    a.epos = q.epos.as<int32_t>();
    a.lbase = q.lbase.as<uint64_t>();
    a.n_kv = q.n_kv.as<int>();
    a.ck = s.ck.as<bf16>();
    a.cv = s.cv.as<bf16>();
    a.voff = s.voff.as<int64_t>();
    a.v_cap = s.v_cap;
    a.n_layers = c.n_layers;
    a.n_kv_heads = c.n_kv_heads;
    a.capacity = s.capacity;
    a.recent = q.spec.quant.recent;
    a.width = q.requant;
    a.rk = s.m->lowrank->ranks.k;
    a.group = q.group;
    kvq_lr_slide_kernel<<<ceil_div(c.n_layers * c.n_kv_heads, 64), 64, 0, s.stream>>>(a);
    CUDA_CHECK_LAUNCH();
    return;
  }
  const int rows = std::min(n, CudaKVQ::kMaxSlide), LH = c.n_layers * c.n_kv_heads;
  KVQSlideArgs a;
  a.koff = q.rq_koff.as<uint64_t>();
  a.voff = q.rq_voff.as<uint64_t>();
  a.rbits = q.rq_bits.as<uint8_t>();
  a.rsrc = q.rq_src.as<int>();
  a.bits = q.bits.as<uint8_t>();
  a.wb = q.wb.as<int>();
  a.off = q.off.as<uint64_t>();
  a.epos = q.epos.as<int32_t>();
  a.lbase = q.lbase.as<uint64_t>();
  a.n_kv = q.n_kv.as<int>();
  a.scratch = q.scratch;
  a.row_bytes = quant_row_bytes_cuda(c.head_dim, q.requant, q.group, 2);
  a.n_layers = c.n_layers;
  a.n_kv_heads = c.n_kv_heads;
  a.capacity = s.capacity;
  a.recent = q.spec.quant.recent;
  a.width = q.requant;
  a.rows = rows;
  a.hd = c.head_dim;
  QuantRowsArgs qa;
  qa.dst = q.data.as<uint8_t>();
  qa.bits = a.rbits;
  qa.src_row = a.rsrc;
  qa.x_stride = c.head_dim;
  qa.n_rows = LH * rows;
  qa.n = c.head_dim;
  qa.group = q.group;
  qa.row16 = 2;
  for (int pass = 0; pass * rows < n; ++pass) {  // at most n entries leave per (layer, KV head) in one call
    kvq_slide_prep_kernel<<<ceil_div(LH, 128), 128, 0, s.stream>>>(a);
    CUDA_CHECK_LAUNCH();
    qa.dst_off = a.koff;
    quantize_rows_cuda(qa, s.kcache.as<bf16>(), s.stream);
    qa.dst_off = a.voff;
    quantize_rows_cuda(qa, s.vcache.as<bf16>(), s.stream);
  }
}

// Layer l's importance (kv_importance_compute, kv_prefill_forward's terms) from the accumulators
// attention_importance_cuda wrote in the compressed prefill of n_call tokens, for the layer's pos.size() tokens at
// those positions: one device-to-host copy and a stream synchronisation.
KVImportance kvq_layer_importance(CudaSession& s, int l, int n_call, const std::vector<int32_t>& pos) {
  const CudaKVQ& q = *s.kvq;
  const Config& c = s.m->c;
  const int Hkv = c.n_kv_heads, m = static_cast<int>(pos.size());
  std::vector<float> acc(size_t(2) * Hkv * m);  // cum (Hkv, m), then win (Hkv, m)
  CUDA_CHECK(cudaMemcpyAsync(acc.data(), q.imp.as<float>() + size_t(l) * 2 * Hkv * n_call, acc.size() * 4,
                             cudaMemcpyDeviceToHost, s.stream));
  CUDA_CHECK(cudaStreamSynchronize(s.stream));
  return kv_importance_compute(acc.data(), acc.data() + size_t(Hkv) * m, Hkv, m, c.n_heads / Hkv,
                               std::min(q.spec.imp.w, n_call), pos.data(), n_call, q.spec.imp);
}

// svd policy=importance, the unified prefill (CudaKVQ::lr_layer_ranks): layer l's value ranks from the layer's own
// scores as kv_prefill_forward ranks them (kv_importance_compute on the accumulators attention_importance_cuda has
// just written, then kv_policy_ranks' 20/40/40 split per KV head over the prompt), kept in h_lr_rank for the
// packing; the c_v coefficients past each token's rank (written at r_vmax) are zeroed, so the layer's prefill
// attention, which then reads r_vmax per token, sums exactly the truncated rows. Block (token i, KV head g).
__global__ void lr_truncate_kernel(bf16* cv, const int32_t* rank, const int64_t* voff, int64_t v_cap, int rv, int n) {
  const int i = blockIdx.x, g = blockIdx.y, r = rank[size_t(g) * n + i];
  bf16* row = cv + size_t(g) * v_cap + voff[i];
  for (int j = r + threadIdx.x; j < rv; j += blockDim.x) row[j] = __float2bfloat16_rn(0.0f);
}
// One host round trip per layer (the ranking is a sort per KV head): the prefill's cost, not the decode's.
// svd + keep:<1: the layer computes the m = pos.size() tokens at positions pos (h_lpos[l]) of the n_call-token
// prefill and ranks those (kv_prefill_forward ranks the layer's computed tokens); lr_rank then holds (n_kv_heads, m)
// for lr_keep_pack_kernel, and cv is not truncated (the packed slots copy each row at its rank only).
void lr_layer_ranks_apply(CudaSession& s, int l, int n_call, const std::vector<int32_t>& pos, bf16* cv) {
  CudaKVQ& q = *s.kvq;
  const Config& c = s.m->c;
  const KVRanks& ranks = s.m->lowrank->ranks;
  const int Hkv = c.n_kv_heads, n = static_cast<int>(pos.size());
  const KVImportance I = kvq_layer_importance(s, l, n_call, pos);
  std::vector<int32_t> rank(size_t(Hkv) * n);
  int step = 0;
  for (int g = 0; g < Hkv; ++g) {
    const std::vector<float> sc(I.score.begin() + size_t(g) * n, I.score.begin() + size_t(g + 1) * n);
    kv_policy_ranks(rank.data() + size_t(g) * n, KVRankPolicy::importance, ranks, 0, n, step, sc);
    for (int t = 0; t < n; ++t)
      q.h_lr_rank[(size_t(l) * Hkv + g) * n_call + pos[t]] = static_cast<uint16_t>(rank[size_t(g) * n + t]);
  }
  // pageable source: staged before the call returns (the next layer's copy waits on this kernel in stream order)
  CUDA_CHECK(cudaMemcpyAsync(q.lr_rank.ptr, rank.data(), rank.size() * 4, cudaMemcpyHostToDevice, s.stream));
  if (n < n_call) return;  // (all n_call tokens: pos is 0 .. n_call-1, row i of the truncation is position i)
  lr_truncate_kernel<<<dim3(n, Hkv), 64, 0, s.stream>>>(cv, q.lr_rank.as<int32_t>(), s.voff.as<int64_t>(), s.v_cap,
                                                        ranks.v_max(), n);
  CUDA_CHECK_LAUNCH();
}

// svd + keep:<1 (CudaKVQ keep_pack): the m kept tokens' rank-space rows as 16-bit entries, slot (g, a) = the bf16
// c_k row at position pos[a] then its c_v row at the token's rank: rank (n_kv_heads, m) from the host (policy=
// importance, lr_layer_ranks_apply) or, when null, the call's rank by position (vrank). Rows copied, not rounded
// again. Block (kept token a, KV head g).
__global__ void lr_keep_pack_kernel(bf16* pack, uint16_t* vr, int* n_kv, const bf16* ck, const bf16* cv,
                                    const int64_t* voff, const int32_t* vrank, const int32_t* rank, const int* pos,
                                    int capacity, int64_t v_cap, int rk, int rv, int stride, int m) {
  const int a = blockIdx.x, g = blockIdx.y, p = pos[a];
  const int r = rank ? rank[size_t(g) * m + a] : vrank[p];
  bf16* dst = pack + (size_t(g) * stride + a) * (rk + rv);
  const bf16* ks = ck + (size_t(g) * capacity + p) * rk;
  const bf16* vs = cv + size_t(g) * v_cap + voff[p];
  for (int j = threadIdx.x; j < rk + r; j += blockDim.x) dst[j] = j < rk ? ks[j] : vs[j - rk];
  if (threadIdx.x == 0) vr[size_t(g) * stride + a] = static_cast<uint16_t>(r);
  if (a == 0 && g == 0 && threadIdx.x == 0) *n_kv = m;
}

// Issue 6: the attention sub-layer of layer l over the compressed cache (xb in, W_fused output in s.y), the
// order docs/kv-compression.md "The CUDA kernels" gives: W_QKV' -> kv_lowrank_write_cuda (q RoPE'd, c_k and c_v
// stored at the tokens' positions) -> attention_lowrank_{decode,prefill}_cuda (z in rank space) -> W_fused.
// Selective propagation (svd + keep:<1): the layer computes n of the prefill's n_call tokens, at positions pos
// (device; kvq->h_lpos[l] on the host); else pos is s.pos and n == n_call.
template <class Mark>
void lowrank_attention(CudaSession& s, int l, int n, int n_call, const int* pos, const Mark& mark) {
  const CudaModel& m = *s.m;
  const Config& c = m.c;
  const CudaLowRank& M = *m.lowrank;
  const CudaLowRankLayer& R = M.layers[l];
  const int dim = c.dim, hd = c.head_dim, nkv = c.n_kv_heads, qd = c.n_heads * hd, kvd = nkv * hd;
  const int rk = M.r_k, rv = M.r_vmax, kcd = nkv * rk;  // r_kpad, r_fused (KVLowRankModel)
  const cudaStream_t st = s.stream;
  const bf16* xb = s.xb.as<bf16>();
  // q (n, qd) | c_k (n, kcd) | v (n, kvd), each contiguous (what the write kernel indexes); for one token this is
  // exactly the row the single GEMV over W_QKV' produces. A block's GEMM gives rows [q | c_k | v] (one GEMM with
  // the whole, aligned W_QKV', as the full-cache path: slices of it need not meet cuBLASLt's default 256-byte
  // alignment) which split_qkv_kernel regroups.
  float* q = s.qkv.as<float>();
  float* kc = q + size_t(n) * qd;
  float* v = kc + size_t(n) * kcd;
  mark(OpFamily::qkv);
  if (n == 1) {
    gemv_bf16_cuda(q, R.wqkv, xb, qd + kcd + kvd, dim, st);
  } else {
    gemm_bf16_cuda(s.lt, s.lr_qkv.as<float>(), xb, R.wqkv, n, qd + kcd + kvd, dim, st);
    split_qkv_kernel<<<n, 256, 0, st>>>(q, kc, v, s.lr_qkv.as<float>(), qd, kcd, kvd);
    CUDA_CHECK_LAUNCH();
  }
  // window=N: the block's full keys W_K x (n, n_kv_heads, head_dim) fp32 for the attention and the ring
  float* kfull = s.window > 0 ? s.lr_kfull.as<float>() : nullptr;
  float* vfull = s.window > 0 ? s.lr_vfull.as<float>() : nullptr;
  if (kfull) {
    if (n == 1)
      gemv_bf16_cuda(kfull, R.wk, xb, kvd, dim, st);
    else
      gemm_bf16_cuda(s.lt, kfull, xb, R.wk, n, kvd, dim, st);
  }
  mark(OpFamily::rope_kv);
  // alloc=spectrum: packed blocks at their own ranks (absolute offsets); else layer l's uniform block
  const bool packed = s.lr_koff.bytes > 0;
  bf16* ck = packed ? s.ck.as<bf16>() : s.ck.as<bf16>() + size_t(l) * nkv * s.capacity * rk;
  const int64_t* ck_off = packed ? s.lr_koff.as<int64_t>() + size_t(l) * nkv : nullptr;
  const int* k_ranks = packed ? s.lr_krank.as<int>() + size_t(l) * nkv : nullptr;
  bf16* cv = s.cv.as<bf16>() + size_t(l) * nkv * s.v_cap;
  kv_lowrank_write_cuda<bf16>(q, kc, v, R.uv, ck, cv, s.voff.as<int64_t>(), s.vrank.as<int32_t>(), s.capacity,
                              s.v_cap, n, c.n_heads, nkv, hd, rk, rv, m.inv_freq, c.rope_layout, pos, st, n < n_call,
                              vfull, ck_off, k_ranks);
  float* ksink = s.n_sink > 0 ? s.ksink.as<float>() + size_t(l) * nkv * s.n_sink * hd : nullptr;
  if (ksink)  // sinks=N: the full keys of the tokens at positions < N (a no-op kernel past them; refused with keep:)
    kv_lowrank_sink_write_cuda(ksink, R.wk, xb, n, dim, nkv, hd, s.n_sink, pos, st);
  mark(OpFamily::attention);
  float* z = s.z.as<float>();
  CudaKVQ* kvq = s.kvq.get();
  auto scores = [&] {  // issue 7, the unified prefill: scores on the keys rebuilt from c_k, as the CPU
    bf16* kt = kvq->lr_kt.as<bf16>();
    lr_rebuild_keys_kernel<<<dim3(n, nkv), 64, 0, st>>>(kt, ck, R.uk, pos, m.inv_freq, s.capacity, rk, hd, n,
                                                        c.rope_layout == RopeLayout::interleaved);
    CUDA_CHECK_LAUNCH();
    f32_to_bf16_cuda(s.q.as<bf16>(), q, int64_t(n) * qd, st);  // q as RoPE'd by kv_lowrank_write_cuda
    float* cum = kvq->imp.as<float>() + size_t(l) * 2 * nkv * n_call;  // (the layer's n tokens: CudaKVQ keep)
    attention_importance_cuda(cum, cum + size_t(nkv) * n, s.q.as<bf16>(), kt, n, c.n_heads, nkv, hd, n,
                              kvq->spec.imp.w, kvq->imp_ws.as<float>(), st);
  };
  const bool layer_ranks = kvq && !kvq->active && kvq->lr_layer_ranks;  // svd policy=importance: scores first
  if (layer_ranks) {
    scores();
    lr_layer_ranks_apply(s, l, n_call, kvq->h_lpos[l], cv);
  }
  auto quant_args = [&] {  // the unified-cache kernel's arguments but for the entries it reads (kvq set)
    LowRankQuantDecodeArgs a;
    a.q = q;
    a.uk = R.uk;
    a.inv_freq = m.inv_freq;
    a.n_q = n;
    a.n_heads = c.n_heads;
    a.n_kv_heads = nkv;
    a.head_dim = hd;
    a.r_k = rk;
    a.r_vmax = rv;
    a.group = kvq->group;
    a.row16 = 2;
    a.rope_layout = c.rope_layout;
    return a;
  };
  if (kvq && !kvq->active && n < n_call) {  // svd + keep:<1: the kept rows as 16-bit entries (CudaKVQ keep_pack)
    lr_keep_pack_kernel<<<dim3(n, nkv), 64, 0, st>>>(kvq->keep_pack.as<bf16>(), kvq->keep_vr.as<uint16_t>(),
                                                     kvq->keep_n.as<int>(), ck, cv, s.voff.as<int64_t>(),
                                                     s.vrank.as<int32_t>(),
                                                     layer_ranks ? kvq->lr_rank.as<int32_t>() : nullptr, pos,
                                                     s.capacity, s.v_cap, rk, rv, kvq->imp_m, n);
    CUDA_CHECK_LAUNCH();
    LowRankQuantDecodeArgs a = quant_args();
    a.data = kvq->keep_pack.as<uint8_t>();
    a.off = kvq->keep_off.as<uint64_t>();
    a.bits = kvq->keep_bits.as<uint8_t>();
    a.vrank = kvq->keep_vr.as<uint16_t>();
    a.pos = pos;
    a.n_kv = kvq->keep_n.as<int>();
    a.stride = kvq->imp_m;
    attention_lowrank_quant_cuda(z, a, std::max(1, kvq->lr_splits / n), kvq->ws.as<float>(), st);
  } else if (kvq && kvq->active) {  // issue 7, the unified cache: the call's tokens join it at 16 bits, then attend
    const size_t lhc = size_t(l) * nkv * s.capacity;
    uint8_t* data = kvq->data.as<uint8_t>() + kvq->h_lbase[l];
    kvq_lr_append_kernel<<<dim3(n, nkv), 64, 0, st>>>(data, kvq->off.as<uint64_t>() + lhc,
                                                      kvq->lr_vrank.as<uint16_t>() + lhc, ck, cv,
                                                      s.voff.as<int64_t>(), s.vrank.as<int32_t>(), s.pos.as<int>(),
                                                      kvq->n_kv.as<int>() + l, kvq->h_entries[l], kvq->n_prompt,
                                                      s.capacity, s.v_cap, rk, n);
    CUDA_CHECK_LAUNCH();
    LowRankQuantDecodeArgs a = quant_args();
    a.data = data;
    a.off = kvq->off.as<uint64_t>() + lhc;
    a.bits = kvq->bits.as<uint8_t>() + lhc;
    a.vrank = kvq->lr_vrank.as<uint16_t>() + lhc;
    a.pos = kvq->epos.as<int32_t>() + size_t(l) * s.capacity;
    a.n_kv = kvq->n_kv.as<int>() + l;
    a.stride = s.capacity;
    attention_lowrank_quant_cuda(z, a, n == 1 ? kvq->lr_splits : std::max(1, kvq->lr_splits / n),
                                 kvq->ws.as<float>(), st);
  } else {
    LowRankAttentionCudaArgs<bf16> a;
    a.q = q;
    a.ck = ck;
    a.uk = R.uk;
    a.cv = cv;
    a.voff = s.voff.as<int64_t>();
    a.vrank = s.vrank.as<int32_t>();
    a.ck_stride = s.capacity;
    a.cv_stride = s.v_cap;
    a.r_k = rk;
    a.r_vmax = rv;
    a.n_heads = c.n_heads;
    a.n_kv_heads = nkv;
    a.head_dim = hd;
    a.inv_freq = m.inv_freq;
    a.rope_layout = c.rope_layout;
    a.k_sink = ksink;
    a.k_sink_stride = s.n_sink;
    a.n_sink = s.n_sink;
    float* kwin = s.window > 0 ? s.kwin.as<float>() + size_t(l) * nkv * s.window * hd : nullptr;
    float* vwin = s.window > 0 ? s.vwin.as<float>() + size_t(l) * nkv * s.window * hd : nullptr;
    a.k_win = kwin;
    a.v_win = vwin;
    a.k_new = kfull;
    a.v_new = vfull;
    a.window = s.window;
    a.ck_off = ck_off;
    a.k_ranks = k_ranks;
    a.v_align = std::gcd(std::gcd(M.ranks.v_low, M.ranks.v_med), M.ranks.v_high);  // the ranks the policy gives
    if (M.vsinks > 0) a.v_align = std::gcd(a.v_align, hd);                           // value sinks: head_dim
    a.kernel = M.kernel;
    if (n == 1 && s.lr_decode_kernel.empty()) {  // the same choice at every step of a session: said once
      std::string why;
      s.lr_decode_kernel = attention_lowrank_tc_chosen(a, &why) ? "tensor-core" : "generic (" + why + ")";
    }
    if (n == 1)
      attention_lowrank_decode_cuda(z, a, s.pos.as<int>(), s.lr_splits, s.attn_ws.as<float>(), st);
    else
      attention_lowrank_prefill_cuda(z, a, n, s.n + n, s.attn_ws.as<float>(), st);
    // window=N: the ring takes the block's last tokens after the attention read the older ones from it
    if (s.window > 0) kv_lowrank_window_write_cuda(kwin, vwin, kfull, vfull, n, nkv, hd, s.window, pos, st);
  }
  if (kvq && !kvq->active && !layer_ranks) scores();
  f32_to_bf16_cuda(s.att.as<bf16>(), z, int64_t(n) * c.n_heads * rv, st);  // (n, n_heads*rv) <= (n, qd)
  mark(OpFamily::wo);
  matmul(s, s.y.as<float>(), s.att.as<bf16>(), R.wfused, n, dim, c.n_heads * rv);
}

// Issue 7, selective propagation (CudaKVQ): before layer l of the compressed prefill of n_call tokens, whose layer
// l-1 computed m tokens (residual x + y in rows 0..m-1), keep the tokens kv_prefill_forward keeps: layer l-1's
// scores summed over the KV heads, kv_select to the schedule's count (sinks and the question window always kept,
// ties to the earlier token). Returns the new count (m when nothing drops); when it drops, x holds the kept rows'
// residual (y added in) and keep_pos their positions. A host synchronisation (the selection runs the CPU's code).
int kvq_keep_select(CudaSession& s, int l, int n_call, int m) {
  CudaKVQ& q = *s.kvq;
  const Config& c = s.m->c;
  const int Hkv = c.n_kv_heads, dim = c.dim;
  q.h_lpos[l] = q.h_lpos[l - 1];
  const int target = std::max(1, static_cast<int>(std::ceil(q.keep[l] * n_call)));
  if (target >= m) return m;
  const KVImportanceParams& imp = q.spec.imp;
  const int win_start = n_call - std::min(imp.w, n_call);
  const std::vector<int32_t>& pos = q.h_lpos[l - 1];
  if (static_cast<int>(pos.size()) != m) fail("internal: layer ", l - 1, " computed ", m, " tokens, not ", pos.size());
  const KVImportance I = kvq_layer_importance(s, l - 1, n_call, pos);
  std::vector<float> score(m);
  for (int t = 0; t < m; ++t) {  // kv_prefill_forward's layer_score, in its order
    score[t] = 0.0f;
    for (int g = 0; g < Hkv; ++g) score[t] += I.score[size_t(g) * m + t];
  }
  const std::vector<int> sel = kv_select(score.data(), pos.data(), m, target, imp.sinks, win_start);
  const int k = static_cast<int>(sel.size());
  if (k >= m) return m;  // the always-kept tokens are all of them
  std::vector<int32_t> kept(k);
  for (int a = 0; a < k; ++a) kept[a] = pos[sel[a]];
  q.h_keep_idx.assign(sel.begin(), sel.end());
  q.h_lpos[l] = kept;
  // pageable sources: staged before the calls return (the stream is idle here)
  CUDA_CHECK(cudaMemcpyAsync(q.keep_idx.ptr, q.h_keep_idx.data(), size_t(k) * 4, cudaMemcpyHostToDevice, s.stream));
  CUDA_CHECK(cudaMemcpyAsync(q.keep_pos.ptr, q.h_lpos[l].data(), size_t(k) * 4, cudaMemcpyHostToDevice, s.stream));
  float* x = s.x.as<float>();
  add_cuda(x, s.y.as<float>(), int64_t(m) * dim, s.stream);  // the residual of layer l-1's W_down
  gather_rows_cuda(q.keep_x.as<float>(), x, q.keep_idx.as<int>(), k, dim, 1, 0, 0, s.stream);
  CUDA_CHECK(cudaMemcpyAsync(x, q.keep_x.ptr, size_t(k) * dim * 4, cudaMemcpyDeviceToDevice, s.stream));
  return k;
}
}  // namespace

template <class T>  // the model's dtype (forward_block_cuda below dispatches)
void forward_block_t(CudaSession& s, int n, int logits_rows, OpTimer* timer) {
  const CudaModel& m = *s.m;
  const Config& c = m.c;
  const int dim = c.dim, hd = c.head_dim, qd = c.n_heads * hd, kvd = c.n_kv_heads * hd, ffn = c.ffn_dim;
  const cudaStream_t st = s.stream;
  auto mark = [&](OpFamily f) {
    if (timer) timer->mark(static_cast<int>(f), st);
  };
  CudaKVQ* kvq = s.kvq.get();  // issue 7
  if (kvq && !kvq->active && (s.n != 0 || n > kvq->imp_m))
    fail("internal: the compressed prefill runs from an empty cache after cuda_kvq_prefill_begin(", n, ")");
  // issue 7, selective propagation: from the first layer that drops tokens, n counts the rows still computed and
  // pos points at their positions (kvq_keep_select); n_call stays the call's token count
  const int n_call = n;
  const int* pos = s.pos.as<int>();
  const bool keep_prefill = kvq && !kvq->active && kvq->drops();
  if (keep_prefill && logits_rows > 1)  // forward_cuda refuses LogitsMode::all with keep: before this
    fail("internal: logits of every prompt row requested from a selective-propagation prefill");
  float* x = s.x.as<float>();
  float* y = s.y.as<float>();
  T* xb = s.xb.as<T>();
  mark(OpFamily::embed);
  embedding_cuda(x, s.tokens.as<int>(), n, elem_ptr<T>(m.embd), c.vocab_size, dim, st);
  for (int l = 0; l < c.n_layers; ++l) {
    const CudaLayer& L = m.layers[l];
    mark(OpFamily::norm);
    const int m_prev = n;
    if (keep_prefill && l > 0 && (n = kvq_keep_select(s, l, n_call, n)) < m_prev) pos = kvq->keep_pos.as<int>();
    if (l == 0 || n < m_prev)  // (kvq_keep_select added the residual in as it gathered the rows)
      rmsnorm_cuda(xb, x, L.attn_norm, n, dim, c.rms_eps, st);
    else
      add_rmsnorm_cuda(xb, x, y, L.attn_norm, n, dim, c.rms_eps, st);  // residual of the previous W_down
    if (m.lowrank) {
      lowrank_attention(s, l, n, n_call, pos, mark);
    } else {
      mark(OpFamily::qkv);
      matmul(s, s.qkv.as<float>(), xb, elem_ptr<T>(L.wqkv), n, qd + 2 * kvd, dim);
      mark(OpFamily::rope_kv);
      rope_kv_write_cuda(s.q.as<T>(), s.k_layer<T>(l), s.v_layer<T>(l), s.qkv.as<float>(), pos, n, c.n_heads,
                         c.n_kv_heads, hd, s.capacity, m.inv_freq, c.rope_layout, st);
      mark(OpFamily::attention);
      const T* ka = s.k_layer<T>(l);  // the keys and values the prefill attends to, slot = row
      const T* va = s.v_layer<T>(l);
      int kstride = s.capacity;
      if (n < n_call) {  // issue 7, selective propagation: the kept tokens' rows, gathered in position order
        T* kc = kvq->keep_kv.as<T>();
        kstride = kvq->imp_m;
        gather_rows_cuda(kc, s.k_layer<T>(l), pos, n, hd, c.n_kv_heads, int64_t(s.capacity) * hd, int64_t(kstride) * hd,
                         st);
        gather_rows_cuda(kc + size_t(c.n_kv_heads) * kstride * hd, s.v_layer<T>(l), pos, n, hd, c.n_kv_heads,
                         int64_t(s.capacity) * hd, int64_t(kstride) * hd, st);
        ka = kc;
        va = kc + size_t(c.n_kv_heads) * kstride * hd;
      }
      if (kvq && kvq->active) {  // issue 7: the call's tokens join the packed cache at 16 bits, then attend to it
        const size_t lhc = size_t(l) * c.n_kv_heads * s.capacity;
        uint8_t* data = kvq->data.as<uint8_t>() + kvq->h_lbase[l];
        const bool rot = kvq->spec.quant.hadamard;  // H q, H k and H v: q.k unchanged; the output comes back below
        if (rot) {
          hadamard_rows_cuda(s.q.as<bf16>(), nullptr, n, c.n_heads, hd, int64_t(c.n_heads) * hd, hd, st);
          for (bf16* kv : {s.k_layer(l), s.v_layer(l)})
            hadamard_rows_cuda(kv, s.pos.as<int>(), n, c.n_kv_heads, int64_t(s.capacity) * hd, hd, hd, st);
        }
        kvq_append_kernel<<<dim3(n, c.n_kv_heads), 64, 0, st>>>(data, kvq->off.as<uint64_t>() + lhc, s.k_layer(l),
                                                                s.v_layer(l), s.pos.as<int>(),
                                                                kvq->n_kv.as<int>() + l, kvq->h_entries[l],
                                                                kvq->n_prompt, s.capacity, hd, n);
        CUDA_CHECK_LAUNCH();
        QuantDecodeArgs a;
        a.q = s.q.as<bf16>();
        a.data = data;
        a.off = kvq->off.as<uint64_t>() + lhc;
        a.bits = kvq->bits.as<uint8_t>() + lhc;
        a.n_kv = kvq->n_kv.as<int>() + l;
        a.stride = s.capacity;
        a.n_q = n;
        a.n_heads = c.n_heads;
        a.n_kv_heads = c.n_kv_heads;
        a.head_dim = hd;
        a.group = kvq->group;
        a.row16 = 2;
        attention_quant_decode_cuda(s.att.as<bf16>(), a, n == 1 ? kvq->splits : std::max(1, kvq->splits / n),
                                    kvq->ws.as<float>(), st);
        if (rot) hadamard_rows_cuda(s.att.as<bf16>(), nullptr, n, c.n_heads, hd, int64_t(c.n_heads) * hd, hd, st);
      } else if (n_call == 1)
        attention_decode_cuda(s.att.as<T>(), s.q.as<T>(), s.k_layer<T>(l), s.v_layer<T>(l), s.pos.as<int>(), c.n_heads,
                              c.n_kv_heads, hd, s.capacity, s.splits, s.attn_ws.as<float>(), st);
      else
        attention_prefill_cuda(s.att.as<T>(), s.q.as<T>(), ka, va, n, s.n + n, c.n_heads, c.n_kv_heads, hd, kstride,
                               st);
      if (kvq && !kvq->active) {  // issue 7, the compressed prefill: the importance accumulators of this layer
        float* cum = kvq->imp.as<float>() + size_t(l) * 2 * c.n_kv_heads * n_call;
        // (the compressed caches run on bf16 models only: cuda_dtype_kv_check refuses them for f16 at load)
        attention_importance_cuda(cum, cum + size_t(c.n_kv_heads) * n, s.q.as<bf16>(),
                                  reinterpret_cast<const bf16*>(ka), n, c.n_heads,
                                  c.n_kv_heads, hd, kstride, kvq->spec.imp.w, kvq->imp_ws.as<float>(), st);
      }
      mark(OpFamily::wo);
      matmul(s, y, s.att.as<T>(), elem_ptr<T>(L.wo), n, dim, qd);
    }
    mark(OpFamily::norm);
    add_rmsnorm_cuda(xb, x, y, L.ffn_norm, n, dim, c.rms_eps, st);
    mark(OpFamily::gate_up);
    matmul(s, s.gu.as<float>(), xb, elem_ptr<T>(L.wgu), n, 2 * ffn, dim);
    mark(OpFamily::swiglu);
    swiglu_cuda(s.h.as<T>(), s.gu.as<float>(), n, ffn, st);
    mark(OpFamily::down);
    matmul(s, y, s.h.as<T>(), elem_ptr<T>(L.wdown), n, dim, ffn);
  }
  if (kvq && kvq->active && kvq->spec.quant.on) {  // issue 7: after the call's attention, as on the CPU
    mark(OpFamily::attention);
    kvq_slide(s, n);
  }
  mark(OpFamily::norm);
  add_rmsnorm_cuda(xb, x, y, m.output_norm, n, dim, c.rms_eps, st);
  if (logits_rows > 0) {
    mark(OpFamily::lm_head);
    if (logits_rows == 1)
      gemv_cuda(s.logits.as<float>(), elem_ptr<T>(m.output), xb + size_t(n - 1) * dim, c.vocab_size, dim, st);
    else
      gemm_cuda(s.lt, s.logits.as<float>(), xb, elem_ptr<T>(m.output), n, c.vocab_size, dim, st);
  }
  if (timer) timer->mark(-1, st);
}

void forward_block_cuda(CudaSession& s, int n, int logits_rows, OpTimer* timer) {
  if (s.m->dtype == DType::f16)
    forward_block_t<f16>(s, n, logits_rows, timer);
  else
    forward_block_t<bf16>(s, n, logits_rows, timer);
}

void cuda_decode_graph_launch(CudaSession& s) {
  if (!s.decode_graph) {
    cudaGraph_t g = nullptr;
    CUDA_CHECK(cudaStreamBeginCapture(s.stream, cudaStreamCaptureModeThreadLocal));
    try {
      forward_block_cuda(s, 1, 1, nullptr);
      argmax_cuda(s.tokens.as<int>(), s.logits.as<float>(), s.m->c.vocab_size, s.stream);
      advance_kernel<<<1, 1, 0, s.stream>>>(s.pos.as<int>());
      CUDA_CHECK_LAUNCH();
    } catch (...) {
      cudaStreamEndCapture(s.stream, &g);
      if (g) cudaGraphDestroy(g);
      throw;
    }
    CUDA_CHECK(cudaStreamEndCapture(s.stream, &g));
    const cudaError_t e = cudaGraphInstantiate(&s.decode_graph, g, 0);
    cudaGraphDestroy(g);
    CUDA_CHECK(e);
  }
  CUDA_CHECK(cudaGraphLaunch(s.decode_graph, s.stream));
}

void forward_cuda(CudaSession& s, const int* tokens, int n, LogitsMode mode, float* logits) {
  const Config& c = s.m->c;
  if (n <= 0) fail("forward: no tokens to run");
  if (n > s.capacity - s.n)
    fail("the context is full: ", s.n, " tokens cached + ", n, " new > context size ", s.capacity,
         " (use a larger context, -c, or a shorter input)");
  for (int i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
      fail("token id ", tokens[i], " at position ", i, " is outside the vocabulary [0, ", c.vocab_size, ")");
  const size_t V = c.vocab_size;
  if (mode == LogitsMode::all && s.logits.bytes < size_t(std::min(s.max_block, n)) * V * 4)
    s.logits = DeviceBuffer(size_t(std::min(s.max_block, n)) * V * 4);  // the decode graph keeps its pointer: drop it
  if (mode == LogitsMode::all && s.decode_graph) {
    cudaGraphExecDestroy(s.decode_graph);
    s.decode_graph = nullptr;
  }
  cuda_lowrank_begin(s, s.n, n);  // issue 6: the tokens' value ranks (host policy) on the device; no-op otherwise
  const bool kvq_prefill = s.kvq && s.n == 0;  // issue 7: the compressed prefill (one block, then quantised)
  if (kvq_prefill) {
    if (n > s.max_block)
      fail("--kv ", s.kvq->spec.text, " on cuda: the compressed prefill runs the prompt as one block, but the prompt "
           "has ", n, " tokens and the session's block is ", s.max_block, " (create it with max_block >= the prompt; "
           "llm::Session uses the context size)");
    if (mode == LogitsMode::all && s.kvq->drops())
      fail("--kv keep: selective propagation drops prompt tokens from the upper layers, so it has no logits for "
           "every prompt position (perplexity over the prompt itself); drop keep:... or score a continuation");
    cuda_kvq_prefill_begin(s, n);
  }
  for (int b = 0; b < n; b += s.max_block) {
    const int k = std::min(s.max_block, n - b);
    for (int i = 0; i < k; ++i) {
      s.host_io[i] = tokens[b + i];
      s.host_io[s.max_block + i] = s.n + i;
    }
    CUDA_CHECK(cudaMemcpyAsync(s.tokens.ptr, s.host_io, k * sizeof(int), cudaMemcpyHostToDevice, s.stream));
    CUDA_CHECK(cudaMemcpyAsync(s.pos.ptr, s.host_io + s.max_block, k * sizeof(int), cudaMemcpyHostToDevice, s.stream));
    const bool last_block = b + k == n;
    const int rows = mode == LogitsMode::all ? k : last_block ? 1 : 0;
    if (k == 1 && rows <= 1 && mode == LogitsMode::last && !kvq_prefill)
      cuda_decode_graph_launch(s);  // computes the logits (and an argmax nobody reads here)
    else
      forward_block_cuda(s, k, rows, nullptr);
    if (rows > 0)
      CUDA_CHECK(cudaMemcpyAsync(mode == LogitsMode::all ? logits + size_t(b) * V : logits, s.logits.ptr,
                                 size_t(rows) * V * 4, cudaMemcpyDeviceToHost, s.stream));
    // host_io is reused by the next block: wait for its copies (and the logits) before refilling it
    CUDA_CHECK(cudaStreamSynchronize(s.stream));
    s.n += k;
  }
  if (kvq_prefill) cuda_kvq_prefill_finish(s, n);
}

}  // namespace llm
