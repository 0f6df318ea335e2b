// KV profiles (issue 6): for every layer and KV head, a DOWN basis (rows d_j: c_j = d_j . x) and an UP basis
// (rows u_j: x_hat = sum_{j<r} c_j u_j), head_dim x head_dim each, ordered by importance, so that rank r is
// the first r rows of both (nested). The second moment C of what is compressed comes from:
//   weights: C = W W^T of the head's W_K,g / W_V,g block (head_dim x dim): no data needed.
//   calib:   C = E[k k^T] of keys taken BEFORE RoPE, E[v v^T] of values, over text run through the model.
// and the error minimised, E[(x - x_hat)^T M (x - x_hat)], from the metric:
//   energy: M = I. Down = up = the eigenvectors of C (orthonormal; the version-1 profiles).
//   score:  keys: M = mean over relative distances D of R_D^T C_q R_D (C_q: the second moment of the group's
//           pre-RoPE queries, W_Q,h W_Q,h^T summed over the group for `weights`, E[q q^T] for `calib`; R_D: RoPE
//           by D), so the error is that of the attention scores q.k. Values: M = sum_h W_O,h^T W_O,h over the
//           group's query heads (the error after the output projection). With S = (M + eps I)^{1/2} and V the
//           eigenvectors of S C S: down row j = S v_j, up row j = S^{-1} v_j (not orthogonal; still nested).
// Bases live in the layout of the model's own weights (GGUF: interleaved RoPE pairs); rebuilt keys get the
// model's RoPE layout applied, so that is consistent.
//
// File (safetensors, written by `llm compress`):
//   k_basis, v_basis             F32 (n_layers, n_kv_heads, head_dim, head_dim)  row j = DOWN vector j
//   k_up, v_up                   F32 (same)                                      row j = UP vector j (version 2;
//                                                                                absent in version 1: up = down)
//   k_eigenvalues, v_eigenvalues F32 (n_layers, n_kv_heads, head_dim)            descending (of S C S)
//   metadata: format=llm-kv-profile, version=2, basis, metric (energy|score; absent in version 1: energy), arch,
//             n_layers, n_kv_heads, head_dim, dim, model_hash (FNV-1a of layer 0's W_K and W_V bytes as
//             stored), calib_tokens, calib_source, calib_ctx.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/llm.h"
#include "loader/config.h"

namespace llm {

class Model;
struct Weights;
class ThreadPool;

// Error metric a profile's bases minimise (see above).
enum class KVMetric { energy, score };
const char* kv_metric_name(KVMetric m);
// Relative distances the RoPE average of the `weights` score metric runs over (calib uses its window size).
constexpr int kKVScoreDistances = 512;

// Calibration capture (kv_calibration_collect): sums of k k^T (pre-RoPE), v v^T, and q q^T (pre-RoPE, summed
// over the KV head's group of query heads) per (layer, KV head).
struct KVCalibration {
  int head_dim = 0, n_kv_heads = 0;
  std::vector<double> kk, vv;  // (n_layers, n_kv_heads, head_dim, head_dim)
  std::vector<double> qq;      // (same); empty when the queries were not captured
  int64_t count = 0;           // tokens seen (per layer)
  int n_ctx = 0;               // the window size (relative distances seen: 0 .. n_ctx-1)
};

struct KVProfile {
  std::string basis;  // "weights" or "calib"
  KVMetric metric = KVMetric::energy;
  std::string arch;
  int n_layers = 0, n_kv_heads = 0, head_dim = 0, dim = 0;
  std::string model_hash;  // kv_model_hash of the model it was made for
  int64_t calib_tokens = 0;
  int calib_ctx = 0;
  std::string calib_source;
  std::vector<float> k_basis, v_basis;  // (n_layers, n_kv_heads, head_dim, head_dim), row j = DOWN vector j
  std::vector<float> k_up, v_up;        // (same), row j = UP vector j (energy metric: equal to the down rows)
  std::vector<float> k_eig, v_eig;      // (n_layers, n_kv_heads, head_dim) descending

  // Down rows for (layer, KV head): head_dim floats each; rows 0..r-1 are the rank-r projection.
  const float* k_rows(int l, int g) const { return k_basis.data() + (size_t(l) * n_kv_heads + g) * head_dim * head_dim; }
  const float* v_rows(int l, int g) const { return v_basis.data() + (size_t(l) * n_kv_heads + g) * head_dim * head_dim; }
  // Up rows (rebuild x_hat = sum_j c_j up_j).
  const float* k_up_rows(int l, int g) const { return k_up.data() + (size_t(l) * n_kv_heads + g) * head_dim * head_dim; }
  const float* v_up_rows(int l, int g) const { return v_up.data() + (size_t(l) * n_kv_heads + g) * head_dim * head_dim; }
};

// Identity of a model for profile matching: FNV-1a 64 over layer 0's attn_k and attn_v bytes as stored, hex.
std::string kv_model_hash(const Weights& w);

// `weights` profile from the model's W_K / W_V (dequantised to fp32, W W^T in double); the score metric also
// reads W_Q and W_O. `device` solves the eigenproblems: cpu, Jacobi per block on the pool (eigh_jacobi_cpu);
// cuda, one batched cuSOLVER call per layer and stage (eigh_batched_cuda, kernels/linalg_cuda.h; it throws
// llm::Error without a device). The moments are formed on the CPU either way. Both give the same conventions
// (descending, largest component positive), so the profiles agree to rounding outside degenerate eigenspaces.
KVProfile kv_profile_from_weights(const Config& c, const Weights& w, ThreadPool* pool,
                                  const std::function<void(float)>& on_progress = {},
                                  KVMetric metric = KVMetric::energy, Device device = Device::cpu);

// Run `tokens` through the model (full cache) in windows of n_ctx tokens, each a fresh cache, summing k k^T of
// the pre-RoPE keys, v v^T of the values and q q^T of the pre-RoPE queries of every layer and KV head.
KVCalibration kv_calibration_collect(Model& model, const std::vector<int>& tokens, int n_ctx,
                                     const std::function<void(float)>& on_progress = {});
// `calib` profile from E[k k^T] and E[v v^T] (score metric: also E[q q^T] for keys, W_O for values). `device` as
// for kv_profile_from_weights (cuda: every block of the model in one batched call per stage); `pool` (optional)
// runs the CPU parts in parallel.
KVProfile kv_profile_from_calibration(const Config& c, const Weights& w, const KVCalibration& cal,
                                      KVMetric metric = KVMetric::energy, Device device = Device::cpu,
                                      ThreadPool* pool = nullptr);

// The metrics of the score-aware bases, per (layer, KV head), (n_layers, n_kv_heads, head_dim, head_dim):
// keys: the RoPE average of the queries' second moment qq (same shape; from kv_query_moment_from_weights or a
// calibration's sums) over relative distances 0 .. n_dist-1; values: sum over the group of W_O,h^T W_O,h.
std::vector<double> kv_query_moment_from_weights(const Config& c, const Weights& w, ThreadPool* pool);
std::vector<double> kv_key_metric(const Config& c, const std::vector<double>& qq, int n_dist);
std::vector<double> kv_value_metric(const Config& c, const Weights& w, ThreadPool* pool);
// One (hd x hd) block: out = mean_{D=0}^{n_dist-1} R_{-D}^T C R_{-D}, R_D = the model's RoPE rotation by
// position D (pairs per `layout`, frequencies inv_freq): the score of a query at i and a key at j <= i is
// q^T R_{-(i-j)} k, so E[(q . R e)^2] = e^T M e with M this average.
void kv_rope_average(const double* C, int hd, const float* inv_freq, RopeLayout layout, int n_dist, double* out);
// Down / up rows (hd x hd each) and eigenvalues minimising E[(x - x_hat)^T M (x - x_hat)] for second moment C
// (destroyed); M == nullptr: the energy metric (orthonormal, down = up).
void kv_basis_whitened(double* C, const double* M, int hd, float* down, float* up, float* eig);

// Mean relative reconstruction error of the keys (keys=true) or values the moments describe at rank r:
// E[(x - x_hat)^T M (x - x_hat)] / E[x^T M x] = tr(E^T M E C) / tr(M C), E = I - up_r^T down_r, averaged over
// layers and KV heads. metric empty: M = I (the energy error).
double kv_projection_error(const KVProfile& p, const KVCalibration& cal, bool keys, int r,
                           const std::vector<double>& metric = {});

void kv_profile_save(const KVProfile& p, const std::string& path);
KVProfile kv_profile_load(const std::string& path);
// Throws an llm::Error naming the file when the profile was made for another model (shape or hash mismatch).
void kv_profile_check(const KVProfile& p, const Config& c, const Weights& w, const std::string& path);


}  // namespace llm
