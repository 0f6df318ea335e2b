// The CUDA backend's forward pass, as seen from host code (engine/session.cpp, tools): opaque device model and
// session, the same contract as forward_cpu. Safe to include without the CUDA toolkit; the definitions live in
// engine/forward_cuda.cu (built only when LLM_HAVE_CUDA). Device-side structs: engine/forward_cuda.cuh.
//
//   CudaModelPtr m = cuda_model_upload(config, weights);        // every matrix dequantised to bf16 on the device
//                                                                //   (or f16: cuda_model_upload(c, w, DType::f16))
//   CudaSessionPtr s = cuda_session_create(*m, n_ctx, 512);      // KV cache of the model's dtype + scratch + ...
//   forward_cuda(*s, tokens, n, LogitsMode::last, logits);        // logits: host (vocab) or (n, vocab)
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "engine/llm.h"
#include "engine/model.h"
#include "loader/error.h"

namespace llm {

struct KVLowRankModel;  // engine/kv_lowrank.h (issue 6)
struct KVSpec;          // engine/kv_lowrank.h
struct KVPrefillSpec;   // engine/kv_prefill.h (issue 7)
struct CudaModel;
struct CudaSession;
struct CudaModelDeleter {
  void operator()(CudaModel* m) const;
};
struct CudaSessionDeleter {
  void operator()(CudaSession* s) const;
};
using CudaModelPtr = std::unique_ptr<CudaModel, CudaModelDeleter>;
using CudaSessionPtr = std::unique_ptr<CudaSession, CudaSessionDeleter>;

// Number of CUDA devices (0 without a GPU or driver, or in a build without CUDA). Never throws.
int cuda_device_count();

// Copy the model to device 0: every matrix dequantised to bf16 (loader/ggml_quants.h dequantize_row_bf16) or, with
// dtype f16, to f32 and rounded to fp16 (a weight beyond fp16's range, |w| > 65504, throws saying to use bf16);
// Q|K|V and gate|up concatenated row-wise so decode runs one GEMV for each; norms fp32. A tied output head shares
// the embedding table. Memory: 2 bytes per weight (Llama-3-8B: 16.1 GB; the Q4_1 demo model: 270 MB instead of
// its 98 MB file). Throws llm::Error without a device or when it does not fit.
CudaModelPtr cuda_model_upload(const Config& c, const Weights& w, DType dtype = DType::bf16);
DType cuda_model_dtype(const CudaModel& m);

// Issue 5, --dtype f16: the compressed KV caches (svd:..., quant/keep/evict, issues 6 and 7) have bf16-only kernels
// (kernels/attention_lowrank*.cu, attention_quant.cu, importance.cu, quant.cu); with f16 they are refused here.
inline void cuda_dtype_kv_check(DType dtype, bool lowrank, bool prefill_parts, const std::string& spec_text) {
  if (dtype == DType::f16 && (lowrank || prefill_parts))
    fail("--kv ", spec_text, " with --dtype f16: the compressed KV caches (svd:..., quant/keep/evict) have bf16 "
         "kernels only on cuda; use --dtype bf16 (the default) with them, or --kv full with f16");
}
size_t cuda_model_device_bytes(const CudaModel& m);

// Issue 6: switch the model to the low-rank KV cache (engine/kv_lowrank.h). Uploads per layer W_QKV' = rows of
// W_Q, then lr's W_K' (n_kv_heads*r_k x dim), then W_V (bf16, in place of W_QKV), U_K and U_V rows (fp32, what the
// kernels read) and W_fused (bf16, dim x n_heads*r_vmax, in place of W_O); the model's W_QKV and W_O are freed.
// Net device memory per layer: 2 dim (n_kv_heads (r_k - head_dim) + n_heads (r_vmax - head_dim)) bytes
// (<= 0: smaller) + 4 n_kv_heads (r_k + r_vmax) head_dim bytes for the bases. Sessions created afterwards keep the
// compressed cache (bf16). policy=importance needs scores: the unified cache's prefill computes them
// (cuda_session_enable_prefill, as engine/session.cpp does), or cuda_session_set_token_scores gives them.
// For engine/session.cpp: call it right after kv_lowrank_model_create when the model is on cuda.
void cuda_model_add_lowrank(CudaModel& m, const KVLowRankModel& lr);
bool cuda_model_has_lowrank(const CudaModel& m);
// Every --kv spec the CPU runs also runs on cuda (full; svd, any policy; quant/keep/evict/imp on the full-precision
// cache or on svd, the unified cache) except what is refused where it arises: svd window=/vsinks=/alloc=spectrum
// (cuda_model_add_lowrank), sinks= with the unified cache (cuda_session_enable_prefill), f16 with a compressed cache
// (cuda_dtype_kv_check), every prompt position's logits with keep:<1 (forward_cuda).

// A sequence on the device: bf16 KV cache of `capacity` tokens ((n_layers, n_kv_heads, capacity, head_dim) for
// K and V: Llama-3-8B 128 KB per token; a low-rank model: the compressed cache, see CudaSession), scratch for
// blocks of up to max_block tokens, its own stream, cuBLASLt handle and decode graph. The model must outlive it.
CudaSessionPtr cuda_session_create(const CudaModel& m, int capacity, int max_block);
size_t cuda_session_device_bytes(const CudaSession& s);
// Issue 7: switch a new session to the mixed-precision cache of `spec` ; on a model
// with a low-rank cache (svd, any policy) it is the unified cache: rank-space rows quantised group-wise,
// scored on the keys rebuilt from c_k, attended by attention_lowrank_quant_cuda (docs/prefill-compression.md "The
// unified cache on the GPU"). A call on an empty cache is then the compressed prefill: it must fit one block (create
// the session with max_block >= the prompt; engine/session.cpp uses the context size), and runs as the full-cache
// prefill plus the importance accumulators; the prompt's kept entries are then quantised by class. Later calls append
// at 16 bits, attend to the packed cache (attention_quant_decode_cuda) and slide the 16-bit window, as
// engine/kv_prefill.cpp does on the CPU (a later call longer than max_block slides after each block).
void cuda_session_enable_prefill(CudaSession& s, const KVPrefillSpec& spec);
// Bytes the cached tokens occupy as stored: bf16 K and V, or the compressed c_k + c_v (bf16) of the low-rank
// cache (the figure Session::kv_cache_bytes reports on the CPU, at the device's element size); issue 7: the
// packed mixed-precision cache, counted as KVPrefill::bytes_used counts it (equal to the CPU's for the same spec).
size_t cuda_session_kv_bytes(const CudaSession& s);
// Session::set_token_scores on cuda: one score per token of the next forward call; on a low-rank model with
// policy=importance they pick the call's value ranks (every layer and KV head, as kv_prefill_forward does), other
// policies ignore them as on the CPU. Throws when the model's cache is not low-rank. A count that differs from the
// next call's tokens throws in that call.
void cuda_session_set_token_scores(CudaSession& s, std::vector<float> scores);
void cuda_session_reset(CudaSession& s);  // empty the cache (keeps the allocation)
int cuda_session_n(const CudaSession& s);  // tokens in the cache

// Run tokens[0..n) at positions n_past .. n_past+n-1 (checked against the capacity; ids checked against the
// vocabulary), appending to the cache. logits (host): (vocab) of the last token for LogitsMode::last, (n, vocab)
// for LogitsMode::all. One-token calls replay the captured decode graph; longer ones run in blocks of max_block
// through cuBLASLt and the flash prefill kernel. Synchronises the stream before returning.
void forward_cuda(CudaSession& s, const int* tokens, int n, LogitsMode mode, float* logits);

}  // namespace llm
