// CPU twins of the mixed-precision KV-cache kernels (issue 7; maths in docs/DESIGN.md "Family 2", user guide in
// docs/prefill-compression.md, cache layout in engine/kv_prefill.h). The CUDA kernels (a later session) are
// tested against these.
//
// One cached row (head_dim values of one token's key or value for one KV head) at `bits`:
//   bits 2, 4, 8: head_dim/group groups, each [fp16 scale][fp16 min][group*bits/8 bytes of codes]; value
//                 x ~= min + code * scale, code in [0, 2^bits - 1] (asymmetric, round to nearest). Codes are
//                 packed little-end first: at 4 bits byte = c0 | c1 << 4, at 2 bits c0 | c1 << 2 | c2 << 4 | c3 << 6.
//   bits 16:      the "16-bit" class kept at full precision. The CPU stores it as fp32 (so a cache whose every
//                 token is at 16 bits reproduces the full fp32 cache exactly); the CUDA cache will store fp16/bf16.
//                 quant_row_bytes reports what is stored here (4 bytes a value).
#pragma once
#include <cstddef>
#include <cstdint>

namespace llm {

class ThreadPool;

// Bytes of one row of n values at bits (2, 4, 8, 16) with groups of `group` values (group divides n, group % 4 == 0).
size_t quant_row_bytes(int n, int bits, int group);
// The same row as the CUDA cache would hold it (16-bit class at 2 bytes a value): the number the reports use.
size_t quant_row_bytes_16(int n, int bits, int group);
// Quantise x (n) into dst (quant_row_bytes(n, bits, group) bytes). Error bound per value (tests check it):
// |x - dequant(x)| <= scale/2 + fp16 rounding of min and scale, scale = (max - min) / (2^bits - 1) of the group.
void quantize_row_cpu(uint8_t* dst, const float* x, int n, int bits, int group);
void dequantize_row_cpu(float* dst, const uint8_t* src, int n, int bits, int group);

// ---- attention over the mixed-precision cache (kernels/attention_quant_cpu.cpp) ------------------------------
// Causal GQA attention of n_q queries against n_kv cached entries (a layer's kept tokens, in position order).
// Entry e of KV head g lies at data[g] + off[g][e]: its key row then its value row, both at bits[g][e] (the
// same width for K and V). Each key/value is dequantised into a head_dim buffer on the stack of the task and
// used at once: nothing is dequantised into a full-size buffer.
//   q:   (n_q, n_heads, head_dim) RoPE applied (keys were cached after RoPE)
//   out: (n_q, n_heads, head_dim)
// Query i sees entries 0 .. n_kv - n_q + i (the last n_q entries are the queries' own tokens). Same arithmetic
// order as attention_cpu, so a cache of fp32 rows gives bit-identical results.
struct QuantAttentionArgs {
  const float* q = nullptr;
  const uint8_t* const* data = nullptr;   // (n_kv_heads) pointers
  const uint64_t* const* off = nullptr;   // (n_kv_heads) pointers to (n_kv) byte offsets
  const uint8_t* const* bits = nullptr;   // (n_kv_heads) pointers to (n_kv) widths
  int n_q = 0, n_kv = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, group = 0;
};
void attention_quant_cpu(float* out, const QuantAttentionArgs& a, ThreadPool* pool = nullptr);

// ---- attention with importance accumulators (prefill) ------------------------------------------------------
// Causal self-attention of m tokens (exactly attention_cpu with n_q = n_kv = m) that also accumulates, without
// forming the m x m matrix, for every KV head g and key j:
//   cum[g, j] = sum over all queries i >= j and the heads h of group g of p_{i,h}(j)        (H2O's A_cum, raw)
//   win[g, j] = the same sum over the last `w` queries only                                (SnapKV's window, raw)
// Work is split by query head, each head owning an (m) accumulator row, then reduced over the group in a fixed
// order: deterministic whatever the thread count.
//   q: (m, n_heads, head_dim); k, v: (n_kv_heads, m, head_dim); out: (m, n_heads, head_dim)
//   cum, win: (n_kv_heads, m); scratch: (2, n_heads, m) floats
void attention_importance_cpu(float* out, float* cum, float* win, float* scratch, const float* q, const float* k,
                              const float* v, int m, int n_heads, int n_kv_heads, int head_dim, int w,
                              ThreadPool* pool = nullptr);

}  // namespace llm
