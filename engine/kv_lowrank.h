// Low-rank KV cache (issue 6; maths in docs/DESIGN.md "Family 1", user guide in docs/kv-compression.md).
//
//   keys:   c_k = DOWN_K[:r_k] k (before RoPE), fixed rank r_k. The projection is folded into W_K at load:
//           W_K' = DOWN_K[:r_k] W_K (n_kv_heads*r_k x dim, fp32), so the engine never forms a full key.
//           Attention rebuilds keys per tile with the UP rows (k_hat = sum_j c_j up_j), applies RoPE at each
//           key's position, scores. sinks=N: the first N tokens' full keys are kept and used instead.
//   window=N: the last N tokens' full pre-RoPE keys and full-rank value coefficients (DOWN_V v, all head_dim rows)
//           are kept in a ring; a query at p reads them for tokens p-N+1 .. p and the compressed forms for older
//           ones (W_fused then spans all head_dim UP rows, so z is head_dim wide). A token's c_k (DOWN_K[:r_k] k)
//           and c_v (the first vrank coefficients) are written when it leaves the ring, so each is held once.
//           The cache is append-only (Session::reset empties it), which the ring relies on.
//   vsinks=N: the first N tokens' values are stored at rank head_dim (exact) whatever the policy says.
//   values: c_v = DOWN_V[:r_t] v at the rank r_t the policy gives token t (nested bases: rank 32 is a prefix
//           of rank 128). Attention accumulates z_h in r_vmax dims; W_fused,h = W_O[:, head h] UP_V,g(h)[:r_vmax]^T
//           (dim x r_vmax) replaces W_O. No value is ever rebuilt.
//   DOWN = UP (orthonormal) for metric=energy; for metric=score they differ (engine/kv_profile.h).
//
// Cache layout (what the CUDA decode kernel streams):
//   ck:    per (layer, KV head) block b one contiguous block of (capacity, k_rank[b]) fp32 at ck_off[b] (packed:
//          alloc=spectrum blocks hold their own rank, no padding to r_kpad; without it every block is r_k wide,
//          which is (n_layers, n_kv_heads, capacity, r_k))
//   cv:    (n_layers, n_kv_heads, v_cap)           fp32; per (layer, KV head) one contiguous packed block:
//          token t's vrank[t] floats at voff[t]. Ranks are per token (the same in every layer and head), so one
//          offset array serves all blocks. v_cap grows (all blocks re-laid at once) as tokens arrive.
//   vrank: (capacity) int32, voff: (capacity + 1) int64 (voff[n] = end)
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/kv_profile.h"
#include "kernels/ops_cpu.h"
#include "loader/config.h"

namespace llm {

struct Weights;
struct LayerWeights;
struct RunState;
struct KVCache;
class ThreadPool;

enum class KVRankPolicy { seed, uniform, importance };
enum class KVBasis { weights, calib };
const char* kv_rank_policy_name(KVRankPolicy p);
const char* kv_basis_name(KVBasis b);

// A rank as written in a spec: absolute (num, den = 0) or a fraction of head_dim (num/den).
struct KVRank {
  int num = 0, den = 0;
  int resolve(int head_dim) const;  // throws for 0, > head_dim, or a fraction that is not a whole rank
};

// The parsed `--kv` spec (grammar in docs/kv-compression.md).
struct KVSpec {
  bool lowrank = false;          // false: "full", the uncompressed cache
  KVRank k{1, 4};                // default: head_dim/4
  std::vector<KVRank> v{{1, 4}, {1, 2}, {1, 1}};  // low/medium/high for seed and importance; one for uniform
  KVRankPolicy policy = KVRankPolicy::seed;
  KVBasis basis = KVBasis::weights;
  bool basis_given = false;      // written explicitly in the spec
  KVMetric metric = KVMetric::score;  // the error the bases minimise (engine/kv_profile.h)
  bool metric_given = false;
  int sinks = 0;                 // the first `sinks` tokens keep their full keys (attention sinks); 0 = off
  bool k_alloc_spectrum = false; // alloc=spectrum: per-(layer, KV head) key ranks from the profile's spectrum
  int vsinks = 0;                // the first `vsinks` tokens keep their values at full rank (head_dim); 0 = off
  int window = 0;                // a query at position p reads full keys and values of tokens p-window+1 .. p (a
                                 // recent window kept beside the compressed cache); 0 = off (the default)
  int window_den = 0;            // window=A/B: A/B of the session's context size (window holds A); 0: a count
  GGMLType fold = GGMLType::F16; // the folded weights W_K' and W_fused on the CPU: fold=f16 (default), f32, or q8
                                 // (Q8_0: a quarter of fp32's memory); see KVLowRankModel
  std::string text;              // as given (for messages)
};
KVSpec kv_spec_parse(const std::string& spec);
// The recent window in tokens for a session of n_ctx tokens: window, or window/window_den of n_ctx (rounded
// down, at least 1); never more than n_ctx. 0 when the spec has none.
int kv_window_tokens(const KVSpec& s, int n_ctx);
// The fields of a spec text between the separators sep ("a,b,,c" -> "a", "b", "", "c"); shared with the prefill
// spec parser (engine/kv_prefill_spec.cpp).
std::vector<std::string> kv_spec_fields(const std::string& text, char sep);
// {"kv": "full"|"svd", "k": 32 | "1/4", "v": [32, 64, 128] | "32/64/128", "policy": "...", "basis": "..."}
KVSpec kv_spec_from_json_file(const std::string& path);
// One --kv-config file holds both readers' keys (this one's and kv_prefill_spec_from_json_file's): each reader
// refuses a key outside the union, with kv_config_keys_text() listing it.
bool kv_config_key_known(const std::string& key);
const char* kv_config_keys_text();

// The spec resolved against a model's head_dim: every rank checked.
struct KVRanks {
  int k = 0;
  int v_low = 0, v_med = 0, v_high = 0;  // uniform: all three equal
  int v_max() const { return v_high; }
};
KVRanks kv_spec_ranks(const KVSpec& s, int head_dim);
// "svd:k=16,v=16/32/64,policy=seed,basis=weights" (resolved), or "full".
std::string kv_spec_describe(const KVSpec& s, const KVRanks& r);

// Per-token value ranks of a forward call of n tokens starting at position pos0 (decode_step: decode tokens
// since the last prefill, updated). Prefill = a call with n > 1 or an empty cache; decode = one token later.
//   seed:       prefill by position ratio i/n: < 0.2 or > 0.8 low, < 0.4 or > 0.6 medium, else high;
//               decode by step: < 10 high, < 30 medium, else low.
//   uniform:    every token at v_high (== v_low == v_med).
//   importance: scores (n, higher = more important; issue 7 supplies them): the top 20% of the call's tokens
//               high, the next 40% medium, the rest low (the seed's 20/40/40 split by score instead of place).
//               Throws when scores is empty.
void kv_policy_ranks(int32_t* out, KVRankPolicy policy, const KVRanks& r, int pos0, int n, int& decode_step,
                     const std::vector<float>& scores);

// alloc=spectrum: key ranks per (layer, KV head) (n_layers * n_kv_heads, l-major) at the memory of r_k everywhere:
// every block gets rank 1, then the (r_k - 1) x n_layers x n_kv_heads largest of the remaining key eigenvalues of
// the profile (k_eig: the error each basis vector removes, in the profile's metric; descending per block, so each
// block gets a prefix) add one rank each, a block at most head_dim. The sum is exactly r_k x n_layers x n_kv_heads.
std::vector<int> kv_key_rank_allocation(const KVProfile& p, int r_k);

// Model-side state: the spec, the profile, and the weights folded with the bases. The folded matrices are computed
// in fp32 (W_K' accumulated in double) and kept in fp16 (fold=f16, the default: GGML F16 rows, which matmul_cpu
// reads directly; for Llama-3-8B W_fused is 1 GiB instead of 2), fp32 (fold=f32) or Q8_0 (fold=q8: blocks of 32
// with an fp16 scale, 0.53 GiB; the matrices' columns must be a multiple of 32). The bases stay fp32.
struct KVLowRankModel {
  KVSpec spec;
  KVRanks ranks;
  KVProfile profile;
  std::vector<int> k_rank;  // (n_layers * n_kv_heads) key rank of each block: ranks.k, or the alloc=spectrum ranks
  int r_kpad = 0;           // max of k_rank: the row count per KV head of wk and uk below. Blocks of lower rank
                            // have zero rows there past their rank (unused); the CPU cache stores c_k packed at
                            // k_rank (KVLowRank::ck) and wk_pack computes only those rows
  int r_fused = 0;  // width of z and of W_fused's column blocks: ranks.v_max(), or head_dim with window or vsinks
  struct Layer {
    // DOWN rows project (c = down . x), UP rows rebuild (x_hat = sum_j c_j up_j); equal for the energy metric.
    std::vector<uint8_t> wk_data;  // (n_kv_heads*r_k, dim) rows of W_K' = DOWN_K[:r_k] W_K per KV head (fold)
    QMatrix wk;                    // view of wk_data
    std::vector<uint8_t> wk_pack_data;  // (sum_g k_rank[l, g], dim) W_K' without the zero rows past each KV head's
                                        // rank: KV head g's k_rank rows after those of heads < g. Empty when every
                                        // head of the layer has rank r_kpad (wk_pack then views wk_data)
    QMatrix wk_pack;             // view of wk_pack_data or wk_data: what the CPU cache's c_k = W_K' x computes
    std::vector<float> uk;       // (n_kv_heads, r_k, head_dim)   UP rows of the keys (rebuild basis)
    std::vector<float> uv;       // (n_kv_heads, r_fused, head_dim) DOWN rows of the values (value projection)
    std::vector<uint8_t> wo_data;  // (dim, n_heads*r_fused) rows of W_fused, column block h = W_O[:, h] UP_V,g(h)^T
    QMatrix wo;                    // view of wo_data (the fold's type)
    std::vector<float> uk_down;  // (n_kv_heads, r_k, head_dim)   DOWN rows of the keys (folded into wk)
    std::vector<float> uv_up;    // (n_kv_heads, r_fused, head_dim) UP rows of the values (folded into wo)
  };
  std::vector<Layer> layers;
};
// spec.lowrank must be true. profile_path empty: build a `weights` profile on the fly (basis=calib then fails:
// a calibration profile must be made with `llm compress --basis calib` and passed with --kv-profile). `device`
// solves that profile's eigenproblems (kv_profile_from_weights): cuda when the model runs there, one batched
// cuSOLVER call per layer and stage instead of n_layers x n_kv_heads x 2 Jacobi solves on the CPU.
std::unique_ptr<KVLowRankModel> kv_lowrank_model_create(const KVSpec& spec, const std::string& profile_path,
                                                        const Config& c, const Weights& w, ThreadPool* pool,
                                                        Device device = Device::cpu);

// Free the host copies of the folded weights (wk, wk_pack, wo: their views keep their shapes, data becomes
// nullptr) once a device holds its own (Model on cuda, after cuda_model_add_lowrank). The bases stay.
void kv_lowrank_release_folded(KVLowRankModel& m);

// Session-side state, pointed to by KVCache::lowrank (the hook in forward_cpu). Either a low-rank cache
// (model != nullptr) or a calibration capture over the ordinary full cache (calib != nullptr).
struct KVLowRank {
  const KVLowRankModel* model = nullptr;
  KVCalibration* calib = nullptr;
  int n_layers = 0, n_kv_heads = 0, head_dim = 0, capacity = 0;
  std::vector<float> ck;      // packed: block b = (layer, KV head) l-major is (capacity, model->k_rank[b]) at ck_off[b]
  std::vector<int64_t> ck_off;  // (n_layers * n_kv_heads) offset of each block in ck: capacity * sum of earlier ranks
  std::vector<float> cv;      // (n_layers, n_kv_heads, v_cap)
  int64_t v_cap = 0;          // floats per (layer, KV head) block of cv
  std::vector<int32_t> vrank; // (capacity)
  std::vector<int64_t> voff;  // (capacity + 1)
  int n_sink = 0;             // min(spec.sinks, capacity)
  std::vector<float> ksink;   // (n_layers, n_kv_heads, n_sink, head_dim) full pre-RoPE keys of tokens < n_sink
  int window = 0;             // spec.window: the recent window's ring (token t in slot t % window)
  std::vector<float> kwin;    // (n_layers, n_kv_heads, window, head_dim) full pre-RoPE keys
  std::vector<float> vwin;    // (n_layers, n_kv_heads, window, head_dim) full-rank value coefficients DOWN_V v
  int decode_step = 0;
  std::vector<float> next_scores;  // importance policy: scores of the next forward call's tokens (consumed)

  size_t bytes_used(int n_tokens) const;  // compressed bytes of the first n tokens (fp32 as stored; sinks' full
                                          // keys and the window's full keys and values included)
};
KVLowRank kv_lowrank_create(const KVLowRankModel& m, const Config& c, int capacity);

// ---- hooks called by forward_cpu (engine/forward_cpu.cpp) ----
// At the start of a forward call of n tokens at positions pos0..: assign the tokens' value ranks, grow cv.
void kv_lowrank_begin(KVLowRank& lr, int pos0, int n);
// The attention sub-layer of layer l for a block of n tokens at positions pos0..: reads the normed input
// s.xb, leaves the output-projected result (before the residual add) in s.xb. Appends to the cache.
void kv_lowrank_attention(const Config& c, const LayerWeights& L, int l, KVLowRank& lr, KVCache& kv, RunState& s,
                          int n, int pos0, ThreadPool* pool);

// Exact full-cache key/value bytes per token for a config at 16-bit and at the given ranks (report tables).
struct KVBytes {
  double full = 0, compressed = 0;
};
// value ranks weighted: mean value rank per token under the policy for a prompt (seed: 0.4 low + 0.4 med + 0.2 high).
KVBytes kv_bytes_per_token(const Config& c, int r_k, double mean_r_v, int bytes_per_elem);

}  // namespace llm
