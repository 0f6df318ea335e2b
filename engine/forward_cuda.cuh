// Device-side structs of the CUDA backend (included by engine/*.cu and tests/cuda/*.cu only): the bf16 weights,
// the session (cache, scratch, stream, graph), per-op-family timing, and the block forward that bench_cuda and
// the tests drive directly.
#pragma once
#include <array>
#include <vector>

#include "engine/forward_cuda.h"
#include "kernels/common.cuh"
#include "kernels/matmul_cuda.h"

namespace llm {

struct CudaLayer {
  bf16* wqkv = nullptr;   // (n_heads*hd + 2*n_kv_heads*hd, dim): rows of W_Q, then W_K, then W_V
  bf16* wo = nullptr;     // (dim, n_heads*hd)
  bf16* wgu = nullptr;    // (2*ffn, dim): rows of W_gate, then W_up
  bf16* wdown = nullptr;  // (dim, ffn)
  float* attn_norm = nullptr;  // (dim)
  float* ffn_norm = nullptr;   // (dim)
};

struct CudaModel {
  Config c;
  int device = 0, sm_count = 0;
  std::vector<DeviceBuffer> bufs;  // owns every allocation below
  bf16* embd = nullptr;            // (vocab, dim)
  bf16* output = nullptr;          // (vocab, dim); == embd when tied
  float* output_norm = nullptr;    // (dim)
  float* inv_freq = nullptr;       // (head_dim/2), llama3 scaling applied (rope_inv_freq_cpu)
  std::vector<CudaLayer> layers;
  size_t bytes = 0;                // device bytes of all of the above
  size_t decode_weight_bytes = 0;  // bytes one decode step streams: every matrix once + one embedding row
};

// Allocate (uninitialised) weights of config c on the current device; tied: the output head is the embedding.
CudaModel cuda_model_alloc(const Config& c, bool tied);
// Fill every matrix with seeded uniform noise (scale 1/sqrt(in_features)) and the norms with 1, on the device:
// the synthetic model of `llm bench --synthetic`.
void cuda_model_randomize(CudaModel& m, uint64_t seed);

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

struct CudaSession {
  const CudaModel* m = nullptr;
  int capacity = 0, max_block = 0, n = 0, splits = 1;
  cudaStream_t stream = nullptr;
  CublasLt lt;
  DeviceBuffer kcache, vcache;  // (n_layers, n_kv_heads, capacity, head_dim) bf16 each
  DeviceBuffer x;               // (max_block, dim) fp32 residual stream
  DeviceBuffer y;               // (max_block, dim) fp32 output of W_O / W_down
  DeviceBuffer xb;              // (max_block, dim) bf16 normed input
  DeviceBuffer qkv;             // (max_block, qd + 2 kvd) fp32
  DeviceBuffer q;               // (max_block, qd) bf16 rotated queries
  DeviceBuffer att;             // (max_block, qd) bf16 attention output
  DeviceBuffer gu;              // (max_block, 2 ffn) fp32
  DeviceBuffer h;               // (max_block, ffn) bf16
  DeviceBuffer logits;          // (vocab) fp32; (max_block, vocab) once LogitsMode::all was used
  DeviceBuffer tokens, pos;     // (max_block) int each
  DeviceBuffer attn_ws;         // split-K decode partials
  int* host_io = nullptr;       // pinned (2 * max_block) ints: token ids then positions
  cudaGraphExec_t decode_graph = nullptr;
  CudaSession() = default;
  ~CudaSession();
  CudaSession(const CudaSession&) = delete;
  CudaSession& operator=(const CudaSession&) = delete;

  bf16* k_layer(int l) const;
  bf16* v_layer(int l) const;
};

// Enqueue (no synchronisation) the forward pass of n tokens whose ids and positions are already in s.tokens /
// s.pos, positions s.n .. s.n+n-1 (s.n is NOT advanced). logits_rows: 0 = none, 1 = the last token's into
// s.logits, n = every token's (s.logits must hold n * vocab). n == 1 uses the GEMV + split-K decode path and reads
// its position on the device (graph-safe); n > 1 uses cuBLASLt + flash prefill.
void forward_block_cuda(CudaSession& s, int n, int logits_rows, OpTimer* timer = nullptr);
// The decode step captured once as a CUDA graph: forward of s.tokens[0] at position s.pos[0] -> s.logits ->
// argmax -> s.tokens[0]; then s.pos[0] += 1. Replaying it N times decodes N greedy tokens with no host work.
void cuda_decode_graph_launch(CudaSession& s);

}  // namespace llm
