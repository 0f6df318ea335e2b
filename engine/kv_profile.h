// KV profiles (issue 6): for every layer and KV head, orthonormal bases U_K, U_V (head_dim x head_dim, columns
// ordered by importance) that the low-rank cache projects keys and values onto. Two sources:
//   weights: left singular vectors of the head's W_K,g / W_V,g block (head_dim x dim) = eigenvectors of
//            W W^T (head_dim x head_dim), so the symmetric Jacobi solver suffices. No data needed.
//   calib:   eigenvectors of the (uncentred) second moment E[k k^T] of keys taken BEFORE RoPE, and E[v v^T]
//            of values, over text run through the model.
// Bases live in the layout of the model's own weights (GGUF: interleaved RoPE pairs); rebuilt keys get the
// model's RoPE layout applied, so that is consistent.
//
// File (safetensors, written by `llm compress`):
//   k_basis, v_basis             F32 (n_layers, n_kv_heads, head_dim, head_dim)  row j = basis vector j (U^T)
//   k_eigenvalues, v_eigenvalues F32 (n_layers, n_kv_heads, head_dim)            descending
//   metadata: format=llm-kv-profile, version=1, basis, arch, n_layers, n_kv_heads, head_dim, dim, model_hash
//             (FNV-1a of layer 0's W_K and W_V bytes as stored), calib_tokens, calib_source.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "loader/config.h"

namespace llm {

class Model;
struct Weights;
class ThreadPool;

// Calibration capture (kv_calibration_collect): sums of k k^T (pre-RoPE) and v v^T per (layer, KV head).
struct KVCalibration {
  int head_dim = 0, n_kv_heads = 0;
  std::vector<double> kk, vv;  // (n_layers, n_kv_heads, head_dim, head_dim)
  int64_t count = 0;           // tokens seen (per layer)
};

struct KVProfile {
  std::string basis;  // "weights" or "calib"
  std::string arch;
  int n_layers = 0, n_kv_heads = 0, head_dim = 0, dim = 0;
  std::string model_hash;  // kv_model_hash of the model it was made for
  int64_t calib_tokens = 0;
  std::string calib_source;
  std::vector<float> k_basis, v_basis;  // (n_layers, n_kv_heads, head_dim, head_dim), row j = basis vector j
  std::vector<float> k_eig, v_eig;      // (n_layers, n_kv_heads, head_dim) descending

  // Row j of U^T for (layer, KV head): head_dim floats; rows 0..r-1 are the rank-r basis.
  const float* k_rows(int l, int g) const { return k_basis.data() + (size_t(l) * n_kv_heads + g) * head_dim * head_dim; }
  const float* v_rows(int l, int g) const { return v_basis.data() + (size_t(l) * n_kv_heads + g) * head_dim * head_dim; }
};

// Identity of a model for profile matching: FNV-1a 64 over layer 0's attn_k and attn_v bytes as stored, hex.
std::string kv_model_hash(const Weights& w);

// `weights` profile from the model's W_K / W_V (dequantised to fp32, W W^T in double).
KVProfile kv_profile_from_weights(const Config& c, const Weights& w, ThreadPool* pool,
                                  const std::function<void(float)>& on_progress = {});

// Run `tokens` through the model (full cache) in windows of n_ctx tokens, each a fresh cache, summing k k^T of
// the pre-RoPE keys and v v^T of the values of every layer and KV head.
KVCalibration kv_calibration_collect(Model& model, const std::vector<int>& tokens, int n_ctx,
                                     const std::function<void(float)>& on_progress = {});
// `calib` profile: eigenvectors of E[k k^T] and E[v v^T].
KVProfile kv_profile_from_calibration(const Config& c, const Weights& w, const KVCalibration& cal);
// Mean relative reconstruction error of the keys (keys=true) or values the moments describe when projected on
// the first r basis vectors: E||x - U_r U_r^T x||^2 / E||x||^2 = 1 - sum_{j<r} u_j^T C u_j / tr C, averaged
// over layers and KV heads.
double kv_projection_error(const KVProfile& p, const KVCalibration& cal, bool keys, int r);

void kv_profile_save(const KVProfile& p, const std::string& path);
KVProfile kv_profile_load(const std::string& path);
// Throws an llm::Error naming the file when the profile was made for another model (shape or hash mismatch).
void kv_profile_check(const KVProfile& p, const Config& c, const Weights& w, const std::string& path);


}  // namespace llm
