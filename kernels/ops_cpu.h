// CPU ops of the LLaMA forward pass: the fp32 reference of every kernel (the CUDA twins in kernels/*.cu are
// tested against these) and, at the same time, the CPU backend's fast path.
//
// Conventions (one place for every op):
//  - Plain pointers + sizes, row-major, shape comments outermost first: `(n, dim)` = n rows of dim floats.
//  - A batch of tokens is always a matrix: prefill passes the whole prompt (n = prompt length), decode n = 1.
//  - Activations are fp32. Weights stay in their file's GGML type (QMatrix) and are dequantised inside matmul.
//  - `pool` (optional, last argument): run on the engine's thread pool; nullptr = single-threaded on the caller.
//    No op keeps state between calls, so two engines (two pools) can run side by side.
//  - In-place is allowed where a comment says so.
//
// One file per op family: rmsnorm_cpu.cpp, rope_cpu.cpp, attention_cpu.cpp, matmul_cpu.cpp, elementwise_cpu.cpp
// (swiglu, add, softmax, argmax, sampling; embedding sits in matmul_cpu.cpp with the row decoders);
// threadpool_cpu.{h,cpp} holds the pool.
#pragma once
#include <cstddef>
#include <cstdint>

#include "loader/config.h"
#include "loader/tensor.h"

namespace llm {

class ThreadPool;  // kernels/threadpool_cpu.h

// A weight matrix W (rows x cols) = (out_features x in_features) as it lies in the file: row r starts at
// data + r * row_bytes, in GGML type `type` (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K).
struct QMatrix {
  GGMLType type = GGMLType::F32;
  const uint8_t* data = nullptr;
  int64_t rows = 0;       // out_features
  int64_t cols = 0;       // in_features (a multiple of the type's block size)
  size_t row_bytes = 0;   // ggml_row_bytes(type, cols)
};
// View a loaded tensor (shape {rows, cols}) as a QMatrix; throws llm::Error for a type we cannot dequantise.
QMatrix qmatrix_from_view(const TensorView& t);

// ---- normalisation ----------------------------------------------------------------------------------
// out[i, :] = x[i, :] / sqrt(mean(x[i, :]^2) + eps) * w           x, out: (n, dim); w: (dim). out may == x.
void rmsnorm_cpu(float* out, const float* x, const float* w, int n, int dim, float eps, ThreadPool* pool = nullptr);

// ---- RoPE ----------------------------------------------------------------------------------------------
// inv_freq[j] = theta^(-2j/head_dim) for j < head_dim/2, with Llama-3.1 "llama3" scaling applied when
// scaling.type == llama3 (wavelength > original_max/low_freq_factor: freq/factor; < original_max/high_freq_factor:
// unchanged; in between: smooth interpolation).                                       inv_freq: (head_dim/2)
void rope_inv_freq_cpu(float* inv_freq, int head_dim, float theta, const RopeScaling& scaling);
// Rotate x in place. x: (n, n_heads, head_dim) with row stride `row_stride` floats between tokens
// (n_heads*head_dim when packed); pos: (n) the position of each token. Pairs (layout, j < head_dim/2):
//   interleaved: (2j, 2j+1)          half_split: (j, j + head_dim/2)
// each rotated by angle pos * inv_freq[j]: (a, b) -> (a cos - b sin, a sin + b cos).
void rope_cpu(float* x, const int* pos, int n, int n_heads, int head_dim, int64_t row_stride, const float* inv_freq,
              RopeLayout layout, ThreadPool* pool = nullptr);
// The same rotation from a table of the angles' cosines and sines (the low-rank attentions rotate every rebuilt
// key at every step: the table saves their trigonometry). rope_table_cpu fills rows p0 .. p1-1 of cs, row p =
// head_dim floats: cos of pos * inv_freq[j] for j < head_dim/2, then the sines, computed exactly as rope_cpu does,
// so rope_table_apply_cpu (n_heads 1) gives rope_cpu's result bit for bit.
void rope_table_cpu(float* cs, int p0, int p1, int head_dim, const float* inv_freq);
void rope_table_apply_cpu(float* x, const int* pos, int n, int head_dim, int64_t row_stride, const float* cs,
                          RopeLayout layout);

// ---- attention -------------------------------------------------------------------------------------------
// Causal GQA attention of a block of n_q queries against a key/value cache, prefill (n_q = prompt block) and
// decode (n_q = 1) alike.
//   q:   (n_q, n_heads, head_dim)                   queries, RoPE already applied
//   k,v: (n_kv_heads, kv_stride, head_dim)          one layer's cache, positions 0..n_kv-1 valid (kv_stride >=
//                                                  n_kv is the cache capacity), keys RoPE'd
//   out: (n_q, n_heads, head_dim)
// Query i sits at position n_kv - n_q + i and sees keys 0..n_kv - n_q + i (causal). Head h reads KV head
// h / (n_heads / n_kv_heads). Scores are scaled by 1/sqrt(head_dim); softmax in fp32 with the max subtracted.
void attention_cpu(float* out, const float* q, const float* k, const float* v, int n_q, int n_kv, int n_heads,
                   int n_kv_heads, int head_dim, int64_t kv_stride, ThreadPool* pool = nullptr);

// ---- matmul over quantised weights --------------------------------------------------------------------
// out = x W^T:  x: (n, w.cols), out: (n, w.rows). n = 1 is the decode GEMV (dequantisation fused into the dot
// product); n > 1 dequantises a tile of W's rows once and reuses it for all n rows of x.
void matmul_cpu(float* out, const float* x, const QMatrix& w, int n, ThreadPool* pool = nullptr);
// Several weights applied to the same input in one pass over the pool (Q/K/V, gate/up): out[i] = x W_i^T for
// i < count. One synchronisation instead of `count`, which matters at decode (n = 1) where each matmul is tens
// of microseconds. Same results as count separate matmul_cpu calls.
void matmul_group_cpu(float* const* outs, const QMatrix* const* ws, int count, const float* x, int n,
                      ThreadPool* pool = nullptr);
// Dot product of row r of w with x (w.cols floats): the building block, exposed for tests.
float matrow_dot_cpu(const QMatrix& w, int64_t r, const float* x);

// ---- embedding ---------------------------------------------------------------------------------------------
// out[i, :] = dequant(table row tokens[i]).   tokens: (n), each in [0, table.rows); out: (n, table.cols).
// Throws llm::Error for an id out of range.
void embedding_cpu(float* out, const int* tokens, int n, const QMatrix& table);

// ---- element-wise -----------------------------------------------------------------------------------------
// out[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)).  all (n); out may == gate.
void swiglu_cpu(float* out, const float* gate, const float* up, int64_t n, ThreadPool* pool = nullptr);
// x[i] += y[i] (the residual add).  (n)
void add_cpu(float* x, const float* y, int64_t n);
// In place, numerically stable: x[i] = exp(x[i] - max) / sum.  (n)
void softmax_cpu(float* x, int n);
// Index of the largest value (the first one on ties).  (n)
int argmax_cpu(const float* x, int n);
// Sample an index from probabilities p (n, non-negative, need not be normalised) with coin u in [0, 1):
// the first i with cumsum(p)[i] > u * sum(p).
int sample_probs_cpu(const float* p, int n, float u);

}  // namespace llm
