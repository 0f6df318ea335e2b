// Real-time prefill compression (issue 7; maths in docs/DESIGN.md "Family 2", user guide and numbers in
// docs/prefill-compression.md): prompt-guided token importance, mixed-precision KV (8/4/2 bits + a 16-bit
// recent window), selective propagation (higher layers compute only on kept tokens), and the eviction
// baselines StreamingLLM, H2O, SnapKV and PyramidKV in the same framework.
//
// The spec is the part after the low-rank spec in a unified `--kv` (engine/kv_lowrank.h owns `svd:...`):
//   --kv [full|svd:...]+quant:8/4/2=0.2/0.5/0.3,recent=32,group=32+keep:0.5,pyramid,from=8+evict:snapkv,budget=0.3
//        +imp:a=1,b=1,c=0.5,w=32,pool=7,sinks=4,recent=32
// (a spec that starts with one of quant:/keep:/evict:/imp: means full + those parts).
//
// Importance of token t in layer l, KV head g (every term normalised to sum 1 over the layer's tokens):
//   A_win(t) = mean over the last w prompt queries and the group's query heads of p(t), then averaged over
//              the neighbours |t' - t| <= pool/2 (SnapKV's pooling; pool = 1: none)
//   A_cum(t) = mean over all the layer's queries and the group's heads of p(t)       (H2O's heavy hitters)
//   P(t)     = 1/|prior| for t in prior = {position < sinks} U {position >= n - recent}, else 0
//   score    = a A_win + b A_cum + c P
//
// Cache (per layer l; the CUDA decode kernel will stream the same thing):
//   pos:            (E_l) int32 positions of the layer's entries, ascending (RoPE used them at prefill)
//   data[g]:        packed entries of KV head g: entry e at off[g][e] = key row then value row, bits[g][e] each
//                   (row format in kernels/quant_cpu.h); off[g]: (E_l + 1), bits[g]: (E_l)
// Tokens fed after the prefill (decode, or a later feed) are appended at 16 bits to every layer. With quant on,
// the 16-bit recent window then slides: after every call the last `quant.recent` entries of each layer stay at
// 16 bits and an older one (a decoded token, or a prompt token of the old window) is re-quantised once, when it
// falls out, to kv_requant_bits(quant). The call's own attention still sees its tokens at 16 bits (as the
// prefill's attention is exact). Decoded tokens have no importance score (the decode step does not measure
// the attention a token receives from later queries), hence one width for all of them.
//
// svd's quality options in the unified cache (the low-rank cache's semantics, engine/kv_lowrank.h):
//   window=N:   a query at position p reads the entries at positions p-N+1 .. p in full (the pre-RoPE key W_K x,
//               all head_dim value coefficients DOWN_V v) and the older ones compressed. The prefill's boundary is
//               per query (side rows of the full forms beside the compressed ones); the cache holds the last N
//               positions in full (entries full_begin ..), at 16 bits, or with quant's wbits=B those older than
//               the quant recent window at B bits (read back dequantised), and, as later calls slide the window, a token
//               leaving it is truncated to its key rank and policy value rank (cvrank) at 16 bits before the call's
//               attention (the queries past its window read it so) and quantised to its width (cbits) after it, as
//               the quant recent window re-quantises. The compressed keys are then DOWN_K[:r] W_K x (as the
//               low-rank cache's window computes them), so a prefill and token-by-token decode agree.
//   sinks=N:    the first N positions keep their full pre-RoPE key (krank = head_dim), at their width.
//   vsinks=N:   the first N positions keep all head_dim value coefficients (with window or vsinks, W_fused spans
//               head_dim rows: r_fused).
//   alloc=spectrum: each (layer, KV head) block's rank rows have that block's key rank (KVLowRankModel::k_rank;
//               U_K rows padded to r_kpad, so a row of rank r rebuilds with the first r).
// Bytes count every entry at its row lengths and width (window entries: head_dim keys and values at 16 bits).
//
// svd combined (the unified policy: `svd:...+quant:...+keep:...+evict:...`, or `svd:...,policy=importance` alone):
// the cache holds rank-space rows instead of head_dim rows. An entry of KV head g is its key coefficients c_k
// (r_k values, taken before RoPE: c_k = W_K' x with the folded down projection of engine/kv_lowrank.h) then its
// value coefficients c_v (vrank[g][e] values: the rows of U_V^T times v), both at bits[g][e] in the rank-row format
// of kernels/quant_cpu.h. Attention (attention_lowrank_quant_cpu) rebuilds each key with U_K, RoPEs it at the
// entry's position, accumulates the values in rank space, and W_fused projects. The value rank of an entry is per
// layer, KV head and token:
//   policy=seed:       by position, as the low-rank cache (prefill: position ratio in the prompt; decode: by step)
//   policy=uniform:    v_high
//   policy=importance: per layer and KV head, the same 20/40/40 split as kv_policy_ranks, over the tokens the
//                      layer computes, by the score that picks bits and keep/drop in that layer and head
//                      (score[g] below); Session::set_token_scores overrides it with one score per token of the
//                      next call (then every layer and head uses it). Tokens after the prefill: v_high (they are
//                      the newest, kept at 16 bits for the same reason) unless scores were set for that call.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/ops_cpu.h"
#include "loader/config.h"

namespace llm {

struct Weights;
struct KVLowRankModel;
struct RunState;
struct KVCache;
class ThreadPool;
enum class LogitsMode;

enum class KVEvict { none, streaming, h2o, snapkv, pyramidkv, importance };
enum class KVKeepSchedule { constant, linear, pyramid, list };
const char* kv_evict_name(KVEvict e);

struct KVImportanceParams {
  float a = 1.0f, b = 1.0f, c = 0.5f;  // weights of A_win, A_cum, P
  int w = 32;                          // question window: the last w prompt tokens (always kept)
  int pool = 7;                        // smoothing width of A_win (odd; 1 = none)
  int sinks = 4;                       // attention sinks: the first `sinks` positions (always kept)
  int recent = 32;                     // recency prior: the last `recent` prompt positions
};
struct KVQuantSpec {
  bool on = false;
  std::vector<int> bits{8, 4, 2};            // widths, tried from the most important tokens down
  std::vector<float> frac{0.2f, 0.5f, 0.3f}; // fraction of a layer-head's (non-recent) tokens at each width
  int recent = 32;                           // the last `recent` tokens stay at 16 bits (slides on decode)
  int group = -1;                            // values per scale/min group; 0: one per head row; -1: 32, or
                                             // one per head row when head_dim is not a multiple of 32
  int wbits = 16;                            // svd window=N: width of the window's full entries once they are
                                             // older than the recent window (16: they stay at 16 bits)
  bool hadamard = false;                     // head_dim rows (no svd): cache H k and H v (hadamard_rotate_cpu),
                                             // queries rotated the same, outputs rotated back
};
struct KVKeepSpec {
  bool on = false;
  float ratio = 1.0f;                      // fraction of the prompt still computed at the last layer
  KVKeepSchedule schedule = KVKeepSchedule::constant;
  std::vector<float> list;                 // schedule list: one ratio per layer (a shorter list repeats its last)
  int from = -1;                           // first layer that drops (-1: n_layers / 4)
};
struct KVEvictSpec {
  KVEvict method = KVEvict::none;
  float budget = 0.5f;  // fraction of the prompt's tokens a layer's cache keeps (pyramidkv: the mean)
};
struct KVPrefillSpec {
  KVImportanceParams imp;
  KVQuantSpec quant;
  KVKeepSpec keep;
  KVEvictSpec evict;
  std::string text;  // the prefill parts as given
  bool any() const { return quant.on || keep.on || evict.method != KVEvict::none; }
};

// Split a unified --kv spec at '+': the first part when it is `full` or `svd...` goes to `base` (else base =
// "full"), the rest is parsed here. Throws llm::Error naming the part and the grammar for anything else.
KVPrefillSpec kv_prefill_spec_parse(const std::string& spec, std::string& base);
// The prefill fields of a --kv-config JSON file: "quant", "keep", "evict", "imp", each a string in the same
// grammar as the spec part after its colon (e.g. {"kv": "svd", "quant": "8/4/2=0.2/0.5/0.3,recent=32"}).
KVPrefillSpec kv_prefill_spec_from_json_file(const std::string& path);
// Check the spec against a model (layer list length, group vs head_dim); throws with what to change. lowrank:
// combined with svd (the rows are rank-space rows: any group >= 4 is fine, see quant_rank_row_bytes).
void kv_prefill_spec_check(const KVPrefillSpec& s, const Config& c, bool lowrank = false);
std::string kv_prefill_spec_describe(const KVPrefillSpec& s);
// "imp:a=1,b=1,c=0.5,w=32,pool=7,sinks=4,recent=32" (every field, resolved)
std::string kv_importance_describe(const KVImportanceParams& p);

// Per-layer schedules (resolved for a model of n_layers):
//   keep: fraction of the prompt computed at layer l (1 before `from`; non-increasing)
//   evict budget: fraction of the prompt the layer's cache keeps (1 when no eviction)
std::vector<float> kv_keep_schedule(const KVKeepSpec& k, int n_layers);
std::vector<float> kv_evict_budgets(const KVEvictSpec& e, int n_layers);

// ---- importance (testable pieces) ----
// From raw accumulators of attention_importance_cpu over m tokens at positions pos (of a prompt of n_prompt
// tokens): the three normalised terms and the score, each (n_kv_heads, m). group = query heads per KV head,
// w_rows = how many window queries were accumulated.
struct KVImportance {
  int n_kv_heads = 0, m = 0;
  std::vector<float> win, cum, prior, score;
};
KVImportance kv_importance_compute(const float* cum_raw, const float* win_raw, int n_kv_heads, int m, int group,
                                   int w_rows, const int* pos, int n_prompt, const KVImportanceParams& p);
// Indices (ascending) of the `count` tokens to keep among m: every token at position < sinks or >= win_start
// first (kept even beyond count), then the highest `score` (ties: the earlier token).
std::vector<int> kv_select(const float* score, const int* pos, int m, int count, int sinks, int win_start);

// ---- the cache and its forward pass ----
struct KVPrefillLayer {
  std::vector<int32_t> pos;
  std::vector<std::vector<uint8_t>> data;   // (n_kv_heads)
  std::vector<std::vector<uint64_t>> off;   // (n_kv_heads) x (E + 1)
  std::vector<std::vector<uint8_t>> bits;   // (n_kv_heads) x (E)
  std::vector<std::vector<uint16_t>> vrank; // (n_kv_heads) x (E) value ranks; svd only (else empty)
  int win_begin = 0;  // quant on: first entry of the 16-bit recent window; every entry from here on is 16-bit
  // svd only: key row lengths (with window/sinks/alloc=spectrum, head_dim means the row is the full pre-RoPE key:
  // window, sinks, a block of key rank head_dim; without them every row is r_k coefficients, head_dim included),
  // and what an entry becomes when it leaves the windows: its value rank and width (16: stays)
  std::vector<std::vector<uint16_t>> krank, cvrank;  // (n_kv_heads) x (E)
  std::vector<std::vector<uint8_t>> cbits;           // (n_kv_heads) x (E)
  int full_begin = 0;  // svd window=N: the first entry held in full (full key, head_dim value coefficients, 16
                       // bits); every later entry is too. E when no entry is (or window=0)
};
// Width of a row leaving the recent window: the width of the class that holds the median-importance token under
// the fractions (the first class whose cumulative fraction reaches 1/2: 8/4/2=0.2/0.5/0.3 -> 4, 8/4=0.5/0.5 -> 8,
// quant:4 -> 4). Without a score a leaving token's importance is unknown, so it gets what a typical prompt token
// gets; the bytes then grow per decoded token as the prompt's did. 16 when quant is off (nothing re-quantised).
int kv_requant_bits(const KVQuantSpec& q);
struct KVPrefill {
  KVPrefillSpec spec;
  int n_layers = 0, n_kv_heads = 0, head_dim = 0, group = 0;  // svd: group of the rank rows (0: one per row)
  const KVLowRankModel* lowrank = nullptr;  // svd combined: the folded weights and bases (not owned)
  int decode_step = 0;                      // svd policy=seed: decode tokens since the prefill
  std::vector<float> next_scores;           // svd policy=importance: Session::set_token_scores (consumed)
  std::vector<float> keep, budget;  // (n_layers) schedules
  std::vector<KVPrefillLayer> layers;
  int n_prompt = 0;                 // tokens of the compressed prefill
  std::vector<int> layer_tokens;    // (n_layers) tokens computed at each layer in the last prefill
  // scratch, grown as needed
  std::vector<float> x, xb, q, k, v, kt, vt, att, hb, hb2, acc_cum, acc_win, acc_scr, layer_score;
  std::vector<std::vector<float>> rows;  // svd: (n_kv_heads) fp32 entries of the computed tokens (prefill attention)
  std::vector<std::vector<uint64_t>> rows_off;
  std::vector<float> kfull, kwin, vwin;  // svd window/sinks: full keys (m, n_kv_heads*head_dim); side rows of the
                                         // window's full forms (n_kv_heads, rows, head_dim)
  std::vector<int> pos, idx;

  // Bytes of the cache as the CUDA cache would hold it (16-bit class at 2 bytes a value; quantised rows with
  // their fp16 scale/min; plus 4 bytes of position per entry and layer, 1 byte of width per entry and head;
  // svd: rank-space rows, plus 2 bytes of value rank per entry and head).
  size_t bytes_used() const;
  // Counts of cached rows by width over all layers and heads: {2, 4, 8, 16} bits.
  std::vector<int64_t> width_histogram() const;
};
// lowrank: the svd part of a combined spec (nullptr: head_dim rows). It must outlive the cache.
KVPrefill kv_prefill_create(const KVPrefillSpec& spec, const Config& c, const KVLowRankModel* lowrank = nullptr);

// Hook called by forward_cpu when KVCache::prefill is set. A call on an empty cache (kv.n == 0) is the
// compressed prefill (the whole prompt at once); later calls append at 16 bits and attend to the cache.
// Logits as forward_cpu's; LogitsMode::all on a prefill that drops tokens (keep < 1) throws.
void kv_prefill_forward(const Config& c, const Weights& w, KVPrefill& p, KVCache& kv, RunState& s,
                        const int* tokens, int n, LogitsMode mode, ThreadPool* pool);

}  // namespace llm
