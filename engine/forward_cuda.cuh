// Device-side structs of the CUDA backend (included by engine/*.cu and tests/cuda/*.cu only): the 16-bit weights,
// the session (cache, scratch, stream, graph), per-op-family timing, and the block forward that bench_cuda and
// the tests drive directly.
#pragma once
#include <array>
#include <memory>
#include <string>
#include <vector>

#include "engine/forward_cuda.h"
#include "engine/kv_lowrank.h"
#include "engine/kv_prefill.h"
#include "kernels/attention_lowrank_cuda.h"
#include "kernels/common.cuh"
#include "kernels/matmul_cuda.h"

namespace llm {

// The full-cache weights are declared bf16* but hold the model's dtype (CudaModel::dtype): with f16 they hold __half
// values, read through elem_ptr<T> by the code templated on T (forward_block_cuda's full-cache path, the bench).
struct CudaLayer {
  bf16* wqkv = nullptr;   // (n_heads*hd + 2*n_kv_heads*hd, dim): rows of W_Q, then W_K, then W_V
  bf16* wo = nullptr;     // (dim, n_heads*hd)
  bf16* wgu = nullptr;    // (2*ffn, dim): rows of W_gate, then W_up
  bf16* wdown = nullptr;  // (dim, ffn)
  float* attn_norm = nullptr;  // (dim)
  float* ffn_norm = nullptr;   // (dim)
};

// Issue 6: the low-rank KV cache's weights (cuda_model_add_lowrank, or random ones for `llm bench --synthetic`).
// Meanings as KVLowRankModel::Layer (engine/kv_lowrank.h).
struct CudaLowRankLayer {
  bf16* wqkv = nullptr;    // (qd + n_kv_heads*r_k + kvd, dim): rows of W_Q, then W_K' (folded key DOWN
                           // projection, one r_k block per KV head), then W_V
  float* uk = nullptr;     // (n_kv_heads, r_k, head_dim)    rows of U_K^T: REBUILD keys (attention kernels)
  float* uv = nullptr;     // (n_kv_heads, r_vmax, head_dim) rows of U_V^T: PROJECT values (write kernel)
  bf16* wfused = nullptr;  // (dim, n_heads*r_vmax) W_fused, in place of W_O
  bf16* wk = nullptr;      // (n_kv_heads*hd, dim) rows of W_K, sinks=N only: the sinks' full keys (the decode graph
                           // computes them while its position is < N: kv_lowrank_sink_write_cuda); window=N: every
                           // token's full key (the ring's and the call's own window rows)
};
struct CudaLowRank {
  KVRankPolicy policy = KVRankPolicy::seed;
  KVRanks ranks;
  std::string desc;  // kv_spec_describe
  std::vector<CudaLowRankLayer> layers;
  int sinks = 0;     // spec.sinks: the first `sinks` positions keep their full keys (a session caps it at capacity)
  // KVLowRankModel's shapes (engine/kv_lowrank.h): r_k = r_kpad (the c_k row width the kernels read; alloc=spectrum
  // blocks of lower rank zero-padded, k_rank their own ranks, for the byte counts), r_vmax = r_fused (head_dim with
  // window or vsinks). ranks.k / ranks.v_max() stay the spec's (the unified cache, which refuses these options, and
  // the rank policy read them).
  int r_k = 0, r_vmax = 0;
  std::vector<int> k_rank;  // (n_layers * n_kv_heads)
  bool alloc_spectrum = false;  // spec.k_alloc_spectrum (k_rank from the profile's spectrum)
  int vsinks = 0;           // spec.vsinks: the first `vsinks` positions keep their values at rank head_dim
  int window = 0;           // spec.window: full keys / values of the last `window` tokens (a ring per layer, KV head)
  int window_den = 0;       // spec.window_den: window=A/B of each session's context (kv_window_tokens)
  LowRankKernel kernel = LowRankKernel::automatic;  // attention_lowrank_{prefill,decode}_cuda's choice
};

struct CudaModel {
  Config c;
  DType dtype = DType::bf16;       // element type of embd, output and every CudaLayer matrix, and of the sessions'
                                   // activations and full KV cache (issue 5); the low-rank weights are bf16 only
  int device = 0, sm_count = 0;
  std::vector<DeviceBuffer> bufs;  // owns every allocation below
  bf16* embd = nullptr;            // (vocab, dim)
  bf16* output = nullptr;          // (vocab, dim); == embd when tied
  float* output_norm = nullptr;    // (dim)
  float* inv_freq = nullptr;       // (head_dim/2), llama3 scaling applied (rope_inv_freq_cpu)
  std::vector<CudaLayer> layers;   // wqkv and wo are null (freed) when lowrank is set
  std::unique_ptr<CudaLowRank> lowrank;  // issue 6: set by cuda_model_add_lowrank / cuda_model_lowrank_randomize
  size_t bytes = 0;                // device bytes of all of the above
  size_t decode_weight_bytes = 0;  // bytes one decode step streams: every matrix once + one embedding row
};

// A 16-bit pointer of the model's storage seen as the dtype T it holds (bf16 or f16; see CudaLayer).
template <class T>
inline T* elem_ptr(bf16* p) {
  return reinterpret_cast<T*>(p);
}
template <class T>
inline const T* elem_ptr(const bf16* p) {
  return reinterpret_cast<const T*>(p);
}
// Bytes of one element of a model of dtype t (2 for both bf16 and f16).
inline size_t dtype_bytes(DType t) { return t == DType::f16 ? sizeof(f16) : sizeof(bf16); }

// Allocate (uninitialised) weights of config c on the current device; tied: the output head is the embedding.
CudaModel cuda_model_alloc(const Config& c, bool tied, DType dtype = DType::bf16);
// Fill every matrix with seeded uniform noise (scale 1/sqrt(in_features)), rounded to m.dtype, and the norms with 1:
// the synthetic model of `llm bench --synthetic`.
void cuda_model_randomize(CudaModel& m, uint64_t seed);
// Issue 6, the synthetic bench: switch a randomized model to the low-rank cache of `spec` with random weights of
// the right shapes: W_K' and W_fused uniform noise at the scales of W_K / W_O, W_Q and W_V rows kept, U_K and U_V
// exactly orthonormal rows (Gram-Schmidt of seeded noise on the host). Timing does not depend on the values.
void cuda_model_lowrank_randomize(CudaModel& m, const KVSpec& spec, uint64_t seed);

// Per-op-family timing with CUDA events (profiling passes only: it adds an event per op).
enum class OpFamily { embed, norm, qkv, rope_kv, attention, wo, gate_up, swiglu, down, lm_head, sample, count };
const char* op_family_name(OpFamily f);
struct OpTimer {
  std::vector<cudaEvent_t> events;
  std::vector<int> family;  // family[i]: the op between events[i] and events[i+1]
  std::array<double, static_cast<size_t>(OpFamily::count)> ms{};
  size_t used = 0;
  OpTimer() = default;
  ~OpTimer();
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;
  void mark(int fam, cudaStream_t st);  // start of an op of family fam (-1: end of the last op)
  void collect();                        // synchronise, add the elapsed times to ms, start over
};

// Issue 7 on the GPU (cuda_session_enable_prefill): the mixed-precision cache of engine/kv_prefill.h, with the CPU
// path's semantics (docs/prefill-compression.md "On the GPU"). The prefill runs as the full-cache prefill (flash
// attention over the bf16 cache) plus attention_importance_cuda per layer; cuda_kvq_prefill_finish then ranks and
// selects on the host with the CPU's code (kv_importance_compute, kv_select, the class quantiles), and quantises
// the kept entries from the bf16 cache into `data` (one launch for K rows, one for V). Later calls append their
// tokens at 16 bits (bf16 rows) into fixed slots, attend with attention_quant_decode_cuda, and slide the 16-bit
// window (entries leaving it re-quantised in place from the bf16 cache) -- all on the device, graph-safe.
// The bf16 cache (kcache/vcache) stays allocated: it is the prefill's cache and the source of the re-quantisation.
// Layout of `data`, per layer l from lbase[l]: KV head 0's packed prompt entries, head 1's, ...; then (16-byte
// aligned) one slot of 4 head_dim bytes (bf16 K row, bf16 V row) per later token and KV head; after every layer,
// the sliding kernel's scratch rows (its rows with nothing to re-quantise write there).
struct CudaKVQ {
  KVPrefillSpec spec;
  int group = 32;        // values per scale/min group (kv_prefill_create's rule)
  int requant = 16;      // kv_requant_bits(spec.quant): width of an entry leaving the window (16: no slide)
  int splits = 1;        // attention_quant_decode_splits for one query
  bool active = false;   // the packed cache holds a prompt: forward_block_cuda attends to it
  int n_prompt = 0;      // tokens of the compressed prefill
  int imp_m = 0;         // tokens the importance buffers hold
  DeviceBuffer imp;      // (n_layers, 2, n_kv_heads, imp_m) fp32: each layer's raw cum, then win accumulators
  DeviceBuffer imp_ws;   // attention_importance_workspace_floats(imp_m, n_heads)
  DeviceBuffer data;     // packed entries of every layer, see above
  DeviceBuffer off;      // (n_layers, n_kv_heads, capacity) uint64: entry e's K row, relative to lbase[l]
  DeviceBuffer bits;     // (n_layers, n_kv_heads, capacity) uint8: entry e's width
  DeviceBuffer epos;     // (n_layers, capacity) int32: entry e's position (its row in the bf16 cache)
  DeviceBuffer lbase;    // (n_layers) uint64
  DeviceBuffer n_kv;     // (n_layers) int: entries including the running call's tokens (set on the device)
  DeviceBuffer wb;       // (n_layers, n_kv_heads) int: first entry of the 16-bit window
  DeviceBuffer rq_koff, rq_voff, rq_src, rq_bits;  // (n_layers, n_kv_heads, kMaxSlide) rows of a slide pass
  DeviceBuffer ws;       // attention_quant_decode workspace
  uint64_t scratch = 0;  // offset in data of the slide scratch rows
  // host mirrors (the byte counts of cuda_kvq_bytes)
  std::vector<uint64_t> h_lbase;
  std::vector<int> h_entries, h_wb0;    // (n_layers) prompt entries kept, first window entry
  std::vector<size_t> h_fixed;          // (n_layers) bytes of the entries before the window, every KV head
  static constexpr int kMaxSlide = 64;  // entries re-quantised per (layer, KV head) per slide pass
  // The unified cache (svd + quant/evict, the model has a low-rank KV cache): an entry holds rank-space rows, its
  // c_k row (r_k values) then its c_v row (its value rank), both at the entry's width in the rank-row format of
  // kernels/quant_cpu.h, 16 bits as bf16 (row16 2). off/bits/epos/lbase/n_kv/wb as above; the sources of every
  // (re)quantisation are the session's bf16 ck/cv caches, which keep every position.
  bool lowrank = false;
  DeviceBuffer lr_vrank;            // (n_layers, n_kv_heads, capacity) uint16: entry e's value rank
  DeviceBuffer lr_kt;               // (n_kv_heads, imp_m, head_dim) bf16: the prompt's rebuilt RoPE'd keys (scores)
  int lr_splits = 1;                // attention_lowrank_quant_splits for one query
  std::vector<int32_t> h_epos;      // (n_layers, capacity) host copy of epos (byte counts)
  // Selective propagation (keep:<1, kv_prefill.cpp's semantics): before layer l, when the schedule keeps fewer
  // tokens than layer l-1 computed, forward_block_cuda synchronises, ranks layer l-1's tokens on the host
  // (kv_importance_compute + kv_select on its accumulators), uploads the kept rows and positions, gathers the
  // residual rows, and runs the later layers on them: RoPE at the original positions, the cache written at those
  // positions, the prefill attention and importance over the layer's K/V rows gathered into keep_kv (slot a =
  // kept token a, positions ascending: causal by slot is causal by position). The imp accumulators of layer l
  // then hold its m_l tokens: cum at l * 2 * n_kv_heads * n, win right after it (n_kv_heads * m_l values).
  std::vector<float> keep;                   // (n_layers) kv_keep_schedule: fraction of the prompt layer l computes
  std::vector<std::vector<int32_t>> h_lpos;  // (n_layers) positions layer l computed in the last prefill
  std::vector<int32_t> h_keep_idx;           // the last selection (rows of the previous layer kept)
  DeviceBuffer keep_pos, keep_idx;           // (imp_m) int each: the kept positions, their previous rows
  DeviceBuffer keep_x;                       // (imp_m, dim) fp32: the residual rows being gathered
  DeviceBuffer keep_kv;                      // (2, n_kv_heads, imp_m, head_dim) bf16: a layer's kept K, then V rows
  // svd + keep:<1 (the unified cache): the kept tokens' c_k/c_v are written at their positions in the session's
  // ck/cv (kv_lowrank_write_cuda, pos_each); the layer's prefill attention reads them as 16-bit entries of a scratch
  // packed cache (lr_keep_pack_kernel: bf16 c_k row then c_v row at the token's rank in a fixed slot of r_k + r_vmax
  // values per (KV head, kept token)) through attention_lowrank_quant_cuda, rotated at their positions (keep_pos):
  // kv_prefill_forward's attention_lowrank_quant_cpu over the kept rows. keep_kv is not allocated then.
  DeviceBuffer keep_pack;  // (n_kv_heads, imp_m, r_k + r_vmax) bf16
  DeviceBuffer keep_off;   // (n_kv_heads, imp_m) uint64: slot (g, a)'s byte offset in keep_pack
  DeviceBuffer keep_bits;  // (n_kv_heads, imp_m) uint8: 16 everywhere
  DeviceBuffer keep_vr;    // (n_kv_heads, imp_m) uint16: slot (g, a)'s value rank
  DeviceBuffer keep_n;     // (1) int: the kept count (the kernel's n_kv, read on the device)
  bool drops() const {                       // does the schedule drop tokens at some layer
    for (float k : keep)
      if (k < 1.0f) return true;
    return false;
  }
  // svd policy=importance without Session::set_token_scores (kv_prefill.h): the prompt's c_v are written at r_vmax,
  // and per layer the host ranks them by that layer's scores (20/40/40 per KV head), then the coefficients past
  // each token's rank are zeroed in cv before the layer's attention (lr_layer_ranks_apply)
  bool lr_layer_ranks = false;      // this prefill ranks per layer and KV head (set by cuda_lowrank_begin)
  DeviceBuffer lr_rank;             // (n_kv_heads, imp_m) int32: one layer's ranks (lr_truncate_kernel)
  std::vector<uint16_t> h_lr_rank;  // (n_layers, n_kv_heads, imp_m) every layer's ranks of the prompt's tokens
  std::vector<uint16_t> h_vr;       // (n_layers, n_kv_heads, capacity) host copy of lr_vrank's prompt entries
};

struct CudaSession {
  const CudaModel* m = nullptr;
  int capacity = 0, max_block = 0, n = 0, splits = 1;
  cudaStream_t stream = nullptr;
  CublasLt lt;
  DeviceBuffer kcache, vcache;  // (n_layers, n_kv_heads, capacity, head_dim) bf16 each (f16: m->dtype f16)
  DeviceBuffer x;               // (max_block, dim) fp32 residual stream
  DeviceBuffer y;               // (max_block, dim) fp32 output of W_O / W_down
  DeviceBuffer xb;              // (max_block, dim) bf16 normed input (xb, q, att, h: m->dtype, bf16 or f16)
  DeviceBuffer qkv;             // (max_block, qd + 2 kvd) fp32
  DeviceBuffer q;               // (max_block, qd) bf16 rotated queries
  DeviceBuffer att;             // (max_block, qd) bf16 attention output
  DeviceBuffer gu;              // (max_block, 2 ffn) fp32
  DeviceBuffer h;               // (max_block, ffn) bf16
  DeviceBuffer logits;          // (vocab) fp32; (max_block, vocab) once LogitsMode::all was used
  DeviceBuffer tokens, pos;     // (max_block) int each
  DeviceBuffer attn_ws;         // split-K decode partials (low-rank: also the prefill partials)
  // issue 6, when m->lowrank is set (kcache/vcache are then empty): the compressed cache, bf16, laid out as the
  // CPU's KVLowRank (engine/kv_lowrank.h). cv grows geometrically (re-laid, decode graph dropped) up to
  // capacity x r_vmax as the policy's ranks arrive; vrank/voff are filled on the host (cuda_lowrank_begin)
  // before each forward call, outside graph capture, and the kernels read them on the device like pos.
  DeviceBuffer ck;              // (n_layers, n_kv_heads, capacity, r_k) bf16 (alloc=spectrum: packed, lr_koff)
  DeviceBuffer cv;              // (n_layers, n_kv_heads, v_cap) bf16
  int64_t v_cap = 0;            // elements per (layer, KV head) block of cv
  DeviceBuffer vrank, voff;     // (capacity) int32, (capacity + 1) int64
  std::vector<int32_t> h_vrank; // host copies (the policy runs on the host)
  std::vector<int64_t> h_voff;
  int decode_step = 0;          // kv_policy_ranks' decode counter
  std::vector<float> next_scores;  // svd policy=importance: cuda_session_set_token_scores (consumed by the next call)
  int lr_splits = 1;            // attention_lowrank_decode_splits
  std::string lr_decode_kernel; // the decode attention kernel the last decode step ran ("tensor-core", or
                                // "generic" and why the tensor-core kernel could not), for the bench report
  DeviceBuffer z;               // (max_block, n_heads, r_vmax) fp32 attention output in rank space
  DeviceBuffer lr_qkv;          // (max_block, qd + n_kv_heads*r_k + kvd) fp32: a block's W_QKV' GEMM output
  int n_sink = 0;               // sinks=N: min(N, capacity), as KVLowRank::n_sink
  DeviceBuffer ksink;           // (n_layers, n_kv_heads, n_sink, head_dim) fp32 full pre-RoPE keys of tokens < n_sink
  // window=N (KVLowRank::window): min(N, capacity). c_k / c_v are written for every token (not when it leaves the
  // ring: the same values, and the decode graph stays one kernel sequence); the ring holds the last `window`
  // tokens' full pre-RoPE keys and full-rank value coefficients, token t in slot t % window, fp32 as on the CPU.
  // alloc=spectrum: ck packed per (layer, KV head) block at the block's own key rank (capacity x k_rank values at
  // lr_koff[block], row stride k_rank), so neither memory nor the decode's reads include the zero padding to r_k
  DeviceBuffer lr_koff;         // (n_layers * n_kv_heads) int64 element offsets into ck; empty: the uniform layout
  DeviceBuffer lr_krank;        // (n_layers * n_kv_heads) int32 k_rank
  int window = 0;
  DeviceBuffer kwin, vwin;      // (n_layers, n_kv_heads, window, head_dim) fp32
  DeviceBuffer lr_kfull;        // (max_block, n_kv_heads, head_dim) fp32: a block's W_K x (window only)
  DeviceBuffer lr_vfull;        // (max_block, n_kv_heads, head_dim) fp32: its full-rank value coefficients
  std::unique_ptr<CudaKVQ> kvq; // issue 7 (cuda_session_enable_prefill)
  int* host_io = nullptr;       // pinned (2 * max_block) ints: token ids then positions
  cudaGraphExec_t decode_graph = nullptr;
  CudaSession() = default;
  ~CudaSession();
  CudaSession(const CudaSession&) = delete;
  CudaSession& operator=(const CudaSession&) = delete;

  template <class T = bf16>  // T: the model's dtype (bf16 or f16)
  T* k_layer(int l) const {
    return kcache.as<T>() + size_t(l) * m->c.n_kv_heads * capacity * m->c.head_dim;
  }
  template <class T = bf16>
  T* v_layer(int l) const {
    return vcache.as<T>() + size_t(l) * m->c.n_kv_heads * capacity * m->c.head_dim;
  }
};

// Enqueue (no synchronisation) the forward pass of n tokens whose ids and positions are already in s.tokens /
// s.pos, positions s.n .. s.n+n-1 (s.n is NOT advanced). logits_rows: 0 = none, 1 = the last token's into
// s.logits, n = every token's (s.logits must hold n * vocab). n == 1 uses the GEMV + split-K decode path and reads
// its position on the device (graph-safe); n > 1 uses cuBLASLt + flash prefill.
void forward_block_cuda(CudaSession& s, int n, int logits_rows, OpTimer* timer = nullptr);
// The decode step captured once as a CUDA graph: forward of s.tokens[0] at position s.pos[0] -> s.logits ->
// argmax -> s.tokens[0]; then s.pos[0] += 1. Replaying it N times decodes N greedy tokens with no host work.
void cuda_decode_graph_launch(CudaSession& s);
// Issue 6: value ranks of the n tokens at positions pos0.. (kv_policy_ranks on the host), their offsets, cv grown
// to fit, and vrank/voff[pos0 .. pos0+n] copied to the device on s.stream. forward_cuda calls it; callers of
// forward_block_cuda / cuda_decode_graph_launch on a low-rank model call it first for the positions they run
// (a graph replayed N times needs all N positions' ranks in place beforehand). Never during graph capture.
void cuda_lowrank_begin(CudaSession& s, int pos0, int n);
// Issue 6: bytes the low-rank cache holds for its first n tokens (n <= the ranked positions), counted as
// KVLowRank::bytes_used counts them at the CUDA element sizes: c_k / c_v bf16 at each block's own key rank and each
// token's value rank, sinks' full keys and the window's (min(n, window) tokens, once) full keys and values fp32.
size_t cuda_lowrank_kv_bytes(const CudaSession& s, int n);

// Issue 7: the compressed prefill in two halves around forward_block_cuda(s, m, ...) run from an empty cache
// (s.n == 0, one block): _begin sizes the importance buffers for m tokens and marks the cache inactive (the block
// then also computes the accumulators); _finish (a host synchronisation) selects, classes and quantises, and
// activates the packed cache. forward_cuda calls both; the bench drives them directly.
void cuda_kvq_prefill_begin(CudaSession& s, int m);
void cuda_kvq_prefill_finish(CudaSession& s, int m);
// Bytes of the packed cache holding n_total tokens (the prompt's entries plus n_total - n_prompt later ones, the
// window slid as the CPU slides it). read = false: as stored (KVPrefill::bytes_used's count: rows, 4 bytes of
// position per entry and layer, 1 byte of width per entry and head); read = true: what one decode step's attention
// reads (rows, 8 bytes of offset and 1 of width per entry and head).
size_t cuda_kvq_bytes(const CudaSession& s, int n_total, bool read);

}  // namespace llm
