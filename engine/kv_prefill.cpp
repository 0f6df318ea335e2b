// Real-time prefill compression: importance, token selection, the mixed-precision cache and the forward pass
// that builds it (see engine/kv_prefill.h for the maths and the layout).
#include "engine/kv_prefill.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "engine/kv_lowrank.h"
#include "engine/model.h"
#include "kernels/lowrank_cpu.h"
#include "kernels/lowrank_tasks_cpu.h"
#include "kernels/quant_cpu.h"
#include "kernels/threadpool_cpu.h"
#include "loader/error.h"

namespace llm {

// ---- importance ----------------------------------------------------------------------------------------------

static void normalise(float* x, int m) {
  double s = 0;
  for (int t = 0; t < m; ++t) s += x[t];
  if (s <= 0) return;
  const float inv = static_cast<float>(1.0 / s);
  for (int t = 0; t < m; ++t) x[t] *= inv;
}

KVImportance kv_importance_compute(const float* cum_raw, const float* win_raw, int n_kv_heads, int m, int /*group*/,
                                   int /*w_rows*/, const int* pos, int n_prompt, const KVImportanceParams& p) {
  KVImportance I;
  I.n_kv_heads = n_kv_heads;
  I.m = m;
  const size_t N = size_t(n_kv_heads) * m;
  I.win.assign(N, 0.0f);
  I.cum.assign(N, 0.0f);
  I.prior.assign(N, 0.0f);
  I.score.assign(N, 0.0f);
  const int half = p.pool / 2;
  for (int g = 0; g < n_kv_heads; ++g) {
    float* win = I.win.data() + size_t(g) * m;
    float* cum = I.cum.data() + size_t(g) * m;
    float* pri = I.prior.data() + size_t(g) * m;
    const float* wr = win_raw + size_t(g) * m;
    // SnapKV's smoothing: the mean over the in-range neighbours |t' - t| <= pool/2 (a prefix sum, O(m))
    std::vector<double> pre(m + 1, 0.0);
    for (int t = 0; t < m; ++t) pre[t + 1] = pre[t] + wr[t];
    for (int t = 0; t < m; ++t) {
      const int lo = std::max(0, t - half), hi = std::min(m - 1, t + half);
      win[t] = static_cast<float>((pre[hi + 1] - pre[lo]) / (hi - lo + 1));
    }
    for (int t = 0; t < m; ++t) {
      cum[t] = cum_raw[size_t(g) * m + t];
      pri[t] = (pos[t] < p.sinks || pos[t] >= n_prompt - p.recent) ? 1.0f : 0.0f;
    }
    normalise(win, m);
    normalise(cum, m);
    normalise(pri, m);
    float* sc = I.score.data() + size_t(g) * m;
    for (int t = 0; t < m; ++t) sc[t] = p.a * win[t] + p.b * cum[t] + p.c * pri[t];
  }
  return I;
}

std::vector<int> kv_select(const float* score, const int* pos, int m, int count, int sinks, int win_start) {
  std::vector<char> keep(m, 0);
  std::vector<int> rest;
  int kept = 0;
  for (int t = 0; t < m; ++t) {
    if (pos[t] < sinks || pos[t] >= win_start) keep[t] = 1, ++kept;
    else rest.push_back(t);
  }
  std::stable_sort(rest.begin(), rest.end(), [&](int a, int b) { return score[a] > score[b]; });
  for (size_t r = 0; r < rest.size() && kept < count; ++r) keep[rest[r]] = 1, ++kept;
  std::vector<int> out;
  for (int t = 0; t < m; ++t)
    if (keep[t]) out.push_back(t);
  return out;
}

// ---- the cache -------------------------------------------------------------------------------------------------

KVPrefill kv_prefill_create(const KVPrefillSpec& spec, const Config& c, const KVLowRankModel* lowrank) {
  kv_prefill_spec_check(spec, c, lowrank != nullptr);
  if (spec.quant.wbits != 16 && (!lowrank || lowrank->spec.window == 0))
    fail("--kv quant: wbits=", spec.quant.wbits, " sets the width of the low-rank window's full entries, but the spec "
         "has no window: add window=N to the svd part (e.g. svd:k=1/4,window=64+quant:8,wbits=8) or drop wbits");
  KVPrefill p;
  p.spec = spec;
  p.n_layers = c.n_layers;
  p.n_kv_heads = c.n_kv_heads;
  p.head_dim = c.head_dim;
  p.lowrank = lowrank;
  const int g = spec.quant.group;
  if (lowrank) {
    p.group = g < 0 ? 32 : g;  // rank rows: groups of 32 from the first coefficient (0: one group per row)
  } else {
    p.group = g == 0 || (g < 0 && c.head_dim % 32 != 0) ? c.head_dim : g < 0 ? 32 : g;
    if (c.head_dim % p.group != 0) p.group = c.head_dim;  // quant off (checked above when on): rows stay fp32
  }
  p.keep = kv_keep_schedule(spec.keep, c.n_layers);
  p.budget = kv_evict_budgets(spec.evict, c.n_layers);
  p.layers.resize(c.n_layers);
  for (auto& L : p.layers) {
    L.data.resize(c.n_kv_heads);
    L.off.assign(c.n_kv_heads, std::vector<uint64_t>{0});
    L.bits.resize(c.n_kv_heads);
    if (lowrank) L.vrank.resize(c.n_kv_heads), L.krank.resize(c.n_kv_heads), L.cvrank.resize(c.n_kv_heads),
        L.cbits.resize(c.n_kv_heads);
  }
  p.layer_tokens.assign(c.n_layers, 0);
  return p;
}

size_t KVPrefill::bytes_used() const {
  size_t b = 0;
  for (const auto& L : layers) {
    b += L.pos.size() * sizeof(int32_t);
    for (int g = 0; g < n_kv_heads; ++g)
      for (size_t e = 0; e < L.bits[g].size(); ++e) {
        const int w = L.bits[g][e];
        if (lowrank)  // + a key rank per entry when it varies (window, sinks)
          b += quant_rank_row_bytes_16(L.krank[g][e], w, group) + quant_rank_row_bytes_16(L.vrank[g][e], w, group) +
               1 + sizeof(uint16_t) +
               (lowrank->spec.window > 0 || lowrank->spec.sinks > 0 ? sizeof(uint16_t) : 0);
        else
          b += 2 * quant_row_bytes_16(head_dim, w, group) + 1;
      }
  }
  return b;
}

std::vector<int64_t> KVPrefill::width_histogram() const {
  std::vector<int64_t> h(4, 0);
  for (const auto& L : layers)
    for (const auto& bits : L.bits)
      for (uint8_t w : bits) h[w == 2 ? 0 : w == 4 ? 1 : w == 8 ? 2 : 3]++;
  return h;
}

// Append one entry (token row i of the (m, n_kv_heads, head_dim) k/v blocks) to KV head g of layer L.
static void append_entry(KVPrefillLayer& L, int g, const float* k_row, const float* v_row, int hd, int bits,
                         int group) {
  const size_t rb = quant_row_bytes(hd, bits, group);
  auto& d = L.data[g];
  const size_t at = d.size();
  d.resize(at + 2 * rb);
  quantize_row_cpu(d.data() + at, k_row, hd, bits, group);
  quantize_row_cpu(d.data() + at + rb, v_row, hd, bits, group);
  L.off[g].push_back(at + 2 * rb);
  L.bits[g].push_back(static_cast<uint8_t>(bits));
}

// quant hadamard: rotate `rows` consecutive head_dim rows in place (hadamard_rotate_cpu)
static void rotate_rows(float* x, int64_t rows, int hd, ThreadPool* pool) {
  parallel_for(pool, rows, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) hadamard_rotate_cpu(x + size_t(t) * hd, hd);
  });
}

// svd: append one entry (rank-space rows: c_k of rk values (head_dim: the full key), c_v of r values) to KV head g
// of layer L; cr, cb: the value rank and width it takes when it leaves the windows.
static void append_lowrank_entry(KVPrefillLayer& L, int g, const float* ck, int rk, const float* cv, int r, int bits,
                                 int group, int cr, int cb) {
  const size_t kb = quant_rank_row_bytes(rk, bits, group), vb = quant_rank_row_bytes(r, bits, group);
  auto& d = L.data[g];
  const size_t at = d.size();
  d.resize(at + kb + vb);
  quantize_rank_row_cpu(d.data() + at, ck, rk, bits, group);
  quantize_rank_row_cpu(d.data() + at + kb, cv, r, bits, group);
  L.off[g].push_back(at + kb + vb);
  L.bits[g].push_back(static_cast<uint8_t>(bits));
  L.vrank[g].push_back(static_cast<uint16_t>(r));
  L.krank[g].push_back(static_cast<uint16_t>(rk));
  L.cvrank[g].push_back(static_cast<uint16_t>(cr));
  L.cbits[g].push_back(static_cast<uint8_t>(cb));
}

// svd: rewrite the entries of KV head g from e0 on so that entry e has the key length, value rank and width
// want(e, kl, vr, bits) leaves in its arguments. An unchanged entry keeps its bytes; a changed one is read as fp32
// (a quantised one dequantised: only the window's full entries at wbits change from a width below 16): a full key
// shortened to kl < head_dim is projected, c_k = DOWN_K[:kl] k (kdown: the block's DOWN rows), a value is truncated
// to its first vr coefficients (nested bases). The offsets stay a prefix sum.
template <class Want>
static void relayout_lowrank(KVPrefillLayer& L, int g, int e0, int hd, int group, const float* kdown, Want want) {
  const int E = static_cast<int>(L.bits[g].size());
  if (e0 >= E) return;
  auto& d = L.data[g];
  const uint64_t base = L.off[g][e0];
  const std::vector<uint8_t> tail(d.begin() + base, d.end());
  const std::vector<uint64_t> off(L.off[g].begin() + e0, L.off[g].end());
  const std::vector<uint16_t> kr(L.krank[g].begin() + e0, L.krank[g].end()),
      vr(L.vrank[g].begin() + e0, L.vrank[g].end()), cr(L.cvrank[g].begin() + e0, L.cvrank[g].end());
  const std::vector<uint8_t> bits(L.bits[g].begin() + e0, L.bits[g].end()),
      cb(L.cbits[g].begin() + e0, L.cbits[g].end());
  d.resize(base), L.off[g].resize(size_t(e0) + 1);
  L.bits[g].resize(e0), L.vrank[g].resize(e0), L.krank[g].resize(e0), L.cvrank[g].resize(e0), L.cbits[g].resize(e0);
  std::vector<float> key(hd), row;
  for (int e = e0; e < E; ++e) {
    const int j = e - e0;
    int kl = kr[j], r = vr[j], w = bits[j];
    want(e, kl, r, w);
    const uint8_t* src = tail.data() + (off[j] - base);
    if (kl == kr[j] && r == vr[j] && w == bits[j]) {  // unchanged: its bytes as they are
      const size_t nb = off[j + 1] - off[j];
      d.insert(d.end(), src, src + nb);
      L.off[g].push_back(d.size());
      L.bits[g].push_back(bits[j]), L.vrank[g].push_back(vr[j]), L.krank[g].push_back(kr[j]);
      L.cvrank[g].push_back(cr[j]), L.cbits[g].push_back(cb[j]);
      continue;
    }
    if (r > vr[j] || (kl != kr[j] && kr[j] != hd) || kl > kr[j])
      fail("internal: entry ", e, " cannot change from key ", kr[j], "/value ", vr[j], " at ", int(bits[j]),
           " bits to ", kl, "/", r, " at ", w);
    row.resize(size_t(kr[j]) + vr[j]);  // (at 16 bits a copy; a window entry at wbits leaving it: dequantised)
    dequantize_rank_row_cpu(row.data(), src, kr[j], bits[j], group);
    dequantize_rank_row_cpu(row.data() + kr[j], src + quant_rank_row_bytes(kr[j], bits[j], group), vr[j], bits[j],
                            group);
    const float* k = row.data();
    if (kl != kr[j]) {
      lowrank_project_cpu(key.data(), kdown, row.data(), kl, hd);
      k = key.data();
    }
    append_lowrank_entry(L, g, k, kl, row.data() + kr[j], r, w, group, cr[j], cb[j]);
  }
}

int kv_requant_bits(const KVQuantSpec& q) {
  if (!q.on) return 16;
  float acc = 0.0f;
  for (size_t b = 0; b < q.bits.size(); ++b) {
    acc += q.frac[b];
    if (acc >= 0.5f - 1e-6f) return q.bits[b];
  }
  return q.bits.back();
}

// Slide the 16-bit recent window of layer L so that only its last `recent` entries stay at 16 bits: the entries
// falling out are re-quantised to `width`. Every entry from win_begin on is a 16-bit (fp32) row, so the tail of
// each head's block from win_begin is copied out, cut, and re-appended (the leaving entries at `width`, the rest
// unchanged at 16): the offsets stay a prefix sum, and the cost is one window of rows per call.
static void slide_window(KVPrefillLayer& L, int recent, int width, int hd, int group) {
  const int E = static_cast<int>(L.pos.size()), wb = L.win_begin;
  const int nb = std::max(wb, E - recent);
  if (nb == wb) return;
  L.win_begin = nb;
  if (width == 16) return;
  std::vector<float> tail;
  for (size_t g = 0; g < L.data.size(); ++g) {
    auto& d = L.data[g];
    const uint64_t base = L.off[g][wb];
    tail.resize((d.size() - base) / sizeof(float));
    std::memcpy(tail.data(), d.data() + base, d.size() - base);
    const std::vector<uint64_t> off(L.off[g].begin() + wb, L.off[g].end());
    for (int e = wb; e < E; ++e)
      if (L.bits[g][e] != 16) fail("internal: entry ", e, " of the recent window is at ", int(L.bits[g][e]), " bits");
    d.resize(base), L.off[g].resize(size_t(wb) + 1), L.bits[g].resize(wb);
    for (int e = wb; e < E; ++e) {
      const float* row = tail.data() + (off[e - wb] - base) / sizeof(float);
      const int bits = e < nb ? width : 16;
      append_entry(L, static_cast<int>(g), row, row + hd, hd, bits, group);
    }
  }
}

template <class T>
static void grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

// ---- the forward pass ------------------------------------------------------------------------------------------

void kv_prefill_forward(const Config& c, const Weights& w, KVPrefill& P, KVCache& kv, RunState& s,
                        const int* tokens, int n, LogitsMode mode, ThreadPool* pool) {
  const int dim = c.dim, hd = c.head_dim, H = c.n_heads, Hkv = c.n_kv_heads, qd = H * hd, kvd = Hkv * hd;
  const int group = H / Hkv;
  const bool prefill = kv.n == 0;
  const KVImportanceParams& imp = P.spec.imp;
  const KVLowRankModel* LR = P.lowrank;
  if (prefill && mode == LogitsMode::all && P.keep.back() < 1.0f)
    fail("--kv keep: selective propagation drops prompt tokens from the upper layers, so it has no logits for "
         "every prompt position (perplexity over the prompt itself); drop keep:... or score a continuation");
  if (prefill) {
    for (auto& L : P.layers) {
      L.pos.clear();
      for (int g = 0; g < Hkv; ++g) {
        L.data[g].clear(), L.off[g].assign(1, 0), L.bits[g].clear();
        if (LR) L.vrank[g].clear(), L.krank[g].clear(), L.cvrank[g].clear(), L.cbits[g].clear();
      }
    }
    P.n_prompt = n;
  }
  // svd: value ranks decided per call (seed, uniform, scores given by Session::set_token_scores), or per layer and
  // KV head from the layer's own importance scores (policy=importance during the prefill)
  std::vector<int32_t> call_rank;
  bool rank_by_layer_score = false;
  if (LR) {
    std::vector<float> given;
    given.swap(P.next_scores);
    if (!given.empty() && given.size() != size_t(n))
      fail("set_token_scores: ", given.size(), " scores given for a forward call of ", n, " tokens");
    const KVRankPolicy policy = LR->spec.policy;
    call_rank.assign(n, LR->ranks.v_high);
    if (policy == KVRankPolicy::importance && given.empty())
      rank_by_layer_score = prefill;  // after the prefill: the newest tokens take v_high
    else if (policy != KVRankPolicy::uniform)
      kv_policy_ranks(call_rank.data(), policy, LR->ranks, kv.n, n, P.decode_step, given);
  }
  const size_t N = n;
  grow(P.x, N * dim), grow(P.xb, N * dim), grow(P.q, N * qd), grow(P.k, N * kvd), grow(P.v, N * kvd);
  grow(P.att, N * qd), grow(P.hb, N * c.ffn_dim), grow(P.hb2, N * c.ffn_dim);
  grow(P.pos, N), grow(P.idx, N), grow(P.layer_score, N);
  if (prefill) {
    grow(P.kt, N * kvd), grow(P.vt, N * kvd), grow(P.acc_cum, N * Hkv), grow(P.acc_win, N * Hkv);
    grow(P.acc_scr, 2 * N * H);
  }
  float* x = P.x.data();
  embedding_cpu(x, tokens, n, w.token_embd);
  int m = n;
  for (int i = 0; i < n; ++i) P.pos[i] = kv.n + i, P.idx[i] = i;
  // svd: the rebuilt keys' RoPE table, every position this call reads (grown once here, not per layer)
  const float* rope_cs = LR ? runstate_rope_table(s, kv.n + n, c.head_dim) : nullptr;
  const int win_start = kv.n + n - std::min(imp.w, n);  // the question window: always kept
  const int w_rows = std::min(imp.w, n);

  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = w.layers[l];
    KVPrefillLayer& C = P.layers[l];
    // ---- selective propagation: from here on compute only on the kept tokens (their own positions) ----
    if (prefill && l > 0) {
      const int target = std::max(1, static_cast<int>(std::ceil(P.keep[l] * n)));
      if (target < m) {
        const std::vector<int> sel = kv_select(P.layer_score.data(), P.pos.data(), m, target, imp.sinks, win_start);
        for (size_t a = 0; a < sel.size(); ++a) {
          const int from = sel[a];
          if (from != int(a)) std::memcpy(x + a * dim, x + size_t(from) * dim, dim * sizeof(float));
          P.pos[a] = P.pos[from];
          P.idx[a] = P.idx[from];
        }
        m = static_cast<int>(sel.size());
      }
    }
    if (prefill) P.layer_tokens[l] = m;
    // ---- attention ----
    rmsnorm_cpu(P.xb.data(), x, L.attn_norm, m, dim, c.rms_eps, pool);
    const KVLowRankModel::Layer* Lr = LR ? &LR->layers[l] : nullptr;
    // svd: rk = the c_k row stride (r_kpad: alloc=spectrum pads lower-rank blocks with zero rows), rv = z's width
    const int rk = LR ? LR->r_kpad : 0, rv = LR ? LR->r_fused : 0, ckd = Hkv * rk;
    const int W = LR ? kv_window_tokens(LR->spec, kv.capacity) : 0, S = LR ? LR->spec.sinks : 0;
    if (W > 0 || S > 0) grow(P.kfull, size_t(m) * kvd);
    {
      // svd: P.k holds c_k (m, Hkv*r_k), before RoPE; with window=N the full keys W_K x instead (P.kfull), from
      // which c_k = DOWN_K[:r] k below (the low-rank cache's window arithmetic: prefill and decode agree)
      float* outs[3] = {P.q.data(), W > 0 ? P.kfull.data() : P.k.data(), P.v.data()};
      const QMatrix* ws[3] = {&L.wq, Lr && W == 0 ? &Lr->wk : &L.wk, &L.wv};
      matmul_group_cpu(outs, ws, 3, P.xb.data(), m, pool);
    }
    if (W == 0 && S > 0) matmul_cpu(P.kfull.data(), P.xb.data(), L.wk, m, pool);  // sinks' full keys
    if (W > 0)
      parallel_for(pool, int64_t(m) * Hkv, [&](int64_t b, int64_t e) {
        for (int64_t task = b; task < e; ++task) {
          const int i = static_cast<int>(task / Hkv), g = static_cast<int>(task % Hkv);
          const float* kd = Lr->uk_down.data() + size_t(g) * rk * hd;
          const float* k = P.kfull.data() + size_t(i) * kvd + size_t(g) * hd;
          lowrank_project_cpu(P.k.data() + size_t(i) * ckd + size_t(g) * rk, kd, k, rk, hd);
        }
      });
    // svd: the compressed key row of computed token i in KV head g: its length (with window/sinks/alloc=spectrum
    // head_dim means the full key; without them every row is r_k coefficients, as before) and values
    const bool per_entry_k = LR && (W > 0 || S > 0 || LR->spec.k_alloc_spectrum);
    auto key_len = [&](int g, int i) {
      return !per_entry_k ? rk : P.pos[i] < S ? hd : LR->k_rank[size_t(l) * Hkv + g];
    };
    auto key_row = [&](float* dst, int g, int i) {
      const int kl = key_len(g, i);
      const float* ck = P.k.data() + size_t(i) * ckd + size_t(g) * rk;
      if (kl < hd || !per_entry_k) std::memcpy(dst, ck, size_t(kl) * sizeof(float));
      else if (W > 0 || S > 0) std::memcpy(dst, P.kfull.data() + size_t(i) * kvd + size_t(g) * hd, hd * sizeof(float));
      else lowrank_rebuild_cpu(dst, ck, Lr->uk.data() + size_t(g) * rk * hd, rk, hd);  // a block of key rank head_dim
    };
    rope_cpu(P.q.data(), P.pos.data(), m, H, hd, qd, s.inv_freq.data(), c.rope_layout, pool);
    if (!LR) rope_cpu(P.k.data(), P.pos.data(), m, Hkv, hd, kvd, s.inv_freq.data(), c.rope_layout, pool);
    std::vector<int32_t> rank;  // svd: (Hkv, m) value rank of each computed token in each KV head
    if (LR) {
      rank.resize(size_t(Hkv) * m);
      for (int g = 0; g < Hkv; ++g)
        for (int i = 0; i < m; ++i) rank[size_t(g) * m + i] = call_rank[P.idx[i]];
    }
    auto value_sinks = [&] {  // vsinks=N: the first N positions' values at rank head_dim (r_fused is then head_dim)
      for (int g = 0; g < Hkv && LR && LR->spec.vsinks > 0; ++g)
        for (int i = 0; i < m; ++i)
          if (P.pos[i] < LR->spec.vsinks) rank[size_t(g) * m + i] = hd;
    };
    value_sinks();
    if (prefill) {
      if (LR) {
        // keys rebuilt from c_k and RoPE'd ((Hkv, m, hd), the prefill's scratch only) to score the tokens; the
        // attention output itself is computed from the rank-space rows below
        parallel_for(pool, int64_t(Hkv) * m, [&](int64_t b, int64_t e) {
          for (int64_t task = b; task < e; ++task) {
            const int g = static_cast<int>(task / m), i = static_cast<int>(task % m);
            float* kt = P.kt.data() + (size_t(g) * m + i) * hd;
            std::fill_n(kt, hd, 0.0f);
            const float* ck = P.k.data() + size_t(i) * ckd + size_t(g) * rk;
            const float* u = Lr->uk.data() + size_t(g) * rk * hd;
            for (int j = 0; j < rk; ++j)
              for (int d = 0; d < hd; ++d) kt[d] += ck[j] * u[size_t(j) * hd + d];
          }
        });
        for (int g = 0; g < Hkv; ++g)
          rope_cpu(P.kt.data() + size_t(g) * m * hd, P.pos.data(), m, 1, hd, hd, s.inv_freq.data(), c.rope_layout,
                   pool);
        attention_importance_cpu(nullptr, P.acc_cum.data(), P.acc_win.data(), P.acc_scr.data(), P.q.data(),
                                 P.kt.data(), nullptr, m, H, Hkv, hd, w_rows, pool);
      } else {
        for (int i = 0; i < m; ++i)  // (m, Hkv, hd) -> (Hkv, m, hd): each KV head's keys contiguous
          for (int g = 0; g < Hkv; ++g) {
            std::memcpy(P.kt.data() + (size_t(g) * m + i) * hd, P.k.data() + size_t(i) * kvd + g * hd, hd * 4);
            std::memcpy(P.vt.data() + (size_t(g) * m + i) * hd, P.v.data() + size_t(i) * kvd + g * hd, hd * 4);
          }
        attention_importance_cpu(P.att.data(), P.acc_cum.data(), P.acc_win.data(), P.acc_scr.data(), P.q.data(),
                                 P.kt.data(), P.vt.data(), m, H, Hkv, hd, w_rows, pool);
      }
      const KVImportance I =
          kv_importance_compute(P.acc_cum.data(), P.acc_win.data(), Hkv, m, group, w_rows, P.pos.data(), n, imp);
      if (rank_by_layer_score) {  // svd policy=importance: this layer's and head's scores give the value ranks
        int dummy = 0;
        for (int g = 0; g < Hkv; ++g) {
          const std::vector<float> sc(I.score.begin() + size_t(g) * m, I.score.begin() + size_t(g + 1) * m);
          kv_policy_ranks(rank.data() + size_t(g) * m, KVRankPolicy::importance, LR->ranks, 0, m, dummy, sc);
        }
        value_sinks();
      }
      // eviction: which of the m tokens this layer's cache keeps, by the method's own score
      std::vector<float> ms(m, 0.0f);
      for (int t = 0; t < m; ++t) {
        P.layer_score[t] = 0.0f;
        for (int g = 0; g < Hkv; ++g) P.layer_score[t] += I.score[size_t(g) * m + t];
        float v = P.layer_score[t];
        switch (P.spec.evict.method) {
          case KVEvict::streaming: v = static_cast<float>(P.pos[t]); break;  // the most recent
          case KVEvict::h2o:
            v = 0;
            for (int g = 0; g < Hkv; ++g) v += I.cum[size_t(g) * m + t];
            break;
          case KVEvict::snapkv:
          case KVEvict::pyramidkv:
            v = 0;
            for (int g = 0; g < Hkv; ++g) v += I.win[size_t(g) * m + t];
            break;
          default: break;
        }
        ms[t] = v;
      }
      const int count = std::min(m, std::max(1, static_cast<int>(std::ceil(P.budget[l] * n))));
      std::vector<int> entries(m);
      std::iota(entries.begin(), entries.end(), 0);
      if (count < m) entries = kv_select(ms.data(), P.pos.data(), m, count, imp.sinks, win_start);
      for (int e : entries) C.pos.push_back(P.pos[e]);
      C.win_begin = static_cast<int>(C.pos.size());  // the first entry of the prompt's 16-bit window
      for (size_t a = 0; a < entries.size(); ++a)
        if (P.pos[entries[a]] >= n - P.spec.quant.recent) {
          C.win_begin = static_cast<int>(a);
          break;
        }
      C.full_begin = static_cast<int>(C.pos.size());  // svd window=N: the first entry of the last W positions
      for (size_t a = 0; a < entries.size() && W > 0; ++a)
        if (P.pos[entries[a]] >= n - W) {
          C.full_begin = static_cast<int>(a);
          break;
        }
      if (LR) {
        // the computed tokens' rank-space rows in fp32 (c_k, then c_v at the token's rank in this head): the
        // prefill attends to them exactly (as the low-rank cache would), the layer's cache keeps a subset
        P.rows.resize(Hkv), P.rows_off.resize(Hkv);
        for (int g = 0; g < Hkv; ++g) {
          auto& off = P.rows_off[g];
          off.assign(size_t(m) + 1, 0);
          for (int i = 0; i < m; ++i)
            off[i + 1] = off[i] + size_t(key_len(g, i) + rank[size_t(g) * m + i]) * sizeof(float);
          P.rows[g].resize(off[m] / sizeof(float));
        }
        if (W > 0) grow(P.kwin, size_t(Hkv) * m * hd), grow(P.vwin, size_t(Hkv) * m * hd);
        parallel_for(pool, int64_t(Hkv) * m, [&](int64_t b, int64_t e) {
          for (int64_t task = b; task < e; ++task) {
            const int g = static_cast<int>(task / m), i = static_cast<int>(task % m);
            float* dst = P.rows[g].data() + P.rows_off[g][i] / sizeof(float);
            key_row(dst, g, i);
            const float* v = P.v.data() + size_t(i) * kvd + size_t(g) * hd;
            const float* uv = Lr->uv.data() + size_t(g) * rv * hd;
            lowrank_project_cpu(dst + key_len(g, i), uv, v, rank[size_t(g) * m + i], hd);
            if (W > 0) {  // the window's full forms: every query reads its own last W positions from these
              std::memcpy(P.kwin.data() + (size_t(g) * m + i) * hd, P.kfull.data() + size_t(i) * kvd + size_t(g) * hd,
                          hd * sizeof(float));
              lowrank_project_cpu(P.vwin.data() + (size_t(g) * m + i) * hd, uv, v, hd, hd);
            }
          }
        });
        std::vector<const uint8_t*> data(Hkv), bits(Hkv);
        std::vector<const uint64_t*> off(Hkv);
        std::vector<const uint16_t*> vr(Hkv), kr(Hkv);
        const std::vector<uint8_t> b16(m, 16);
        std::vector<uint16_t> r16(size_t(Hkv) * m), k16(size_t(Hkv) * m);
        for (size_t t = 0; t < r16.size(); ++t) r16[t] = static_cast<uint16_t>(rank[t]);
        for (int g = 0; g < Hkv; ++g) {
          data[g] = reinterpret_cast<const uint8_t*>(P.rows[g].data());
          off[g] = P.rows_off[g].data();
          bits[g] = b16.data();
          vr[g] = r16.data() + size_t(g) * m;
          kr[g] = k16.data() + size_t(g) * m;
          for (int i = 0; i < m; ++i) k16[size_t(g) * m + i] = static_cast<uint16_t>(key_len(g, i));
        }
        LowRankQuantAttentionArgs a;
        a.q = P.q.data();
        a.data = data.data(), a.off = off.data(), a.bits = bits.data(), a.vrank = vr.data();
        a.pos = P.pos.data();
        a.uk = Lr->uk.data();
        a.r_k = rk, a.r_vmax = rv, a.group = P.group;
        a.n_q = m, a.n_kv = m, a.n_heads = H, a.n_kv_heads = Hkv, a.head_dim = hd;
        a.inv_freq = s.inv_freq.data();
        a.rope_layout = c.rope_layout;
        a.rope_cs = rope_cs;
        if (per_entry_k) a.krank = kr.data();
        if (W > 0) a.k_win = P.kwin.data(), a.v_win = P.vwin.data(), a.win_stride = m, a.win_lo = 0, a.window = W;
        attention_lowrank_quant_cpu(P.att.data(), a, pool);  // z: (m, H, r_vmax)
      }
      if (!LR && P.spec.quant.hadamard)  // the cache holds H k and H v (the prefill's attention is done)
        rotate_rows(P.k.data(), int64_t(m) * Hkv, hd, pool), rotate_rows(P.v.data(), int64_t(m) * Hkv, hd, pool);
      // mixed precision per KV head: the recent window at 16 bits, the rest by importance quantiles
      const KVQuantSpec& qs = P.spec.quant;
      for (int g = 0; g < Hkv; ++g) {
        std::vector<int> width(entries.size(), 16);
        if (qs.on) {
          std::vector<int> order;
          for (size_t a = 0; a < entries.size(); ++a)
            if (P.pos[entries[a]] < n - qs.recent) order.push_back(static_cast<int>(a));
          const float* sc = I.score.data() + size_t(g) * m;
          std::stable_sort(order.begin(), order.end(),
                           [&](int a, int b) { return sc[entries[a]] > sc[entries[b]]; });
          const size_t R = order.size();
          size_t r = 0;
          float acc = 0;
          for (size_t b = 0; b < qs.bits.size(); ++b) {
            acc += qs.frac[b];
            const size_t end = b + 1 == qs.bits.size() ? R : std::min(R, size_t(std::lround(acc * R)));
            for (; r < end; ++r) width[order[r]] = qs.bits[b];
          }
        }
        for (size_t a = 0; a < entries.size(); ++a) {
          const int i = entries[a];
          if (LR && W > 0 && P.pos[i] >= n - W) {  // the last W positions: in full, at 16 bits or wbits
            const int wb = qs.on && P.pos[i] < n - qs.recent ? qs.wbits : 16;
            append_lowrank_entry(C, g, P.kwin.data() + (size_t(g) * m + i) * hd, hd,
                                 P.vwin.data() + (size_t(g) * m + i) * hd, hd, wb, P.group, rank[size_t(g) * m + i],
                                 width[a]);
          } else if (LR) {
            const float* row = P.rows[g].data() + P.rows_off[g][i] / sizeof(float);
            const int r = rank[size_t(g) * m + i];
            append_lowrank_entry(C, g, row, key_len(g, i), row + key_len(g, i), r, width[a], P.group, r, width[a]);
          } else {
            append_entry(C, g, P.k.data() + size_t(i) * kvd + g * hd, P.v.data() + size_t(i) * kvd + g * hd, hd,
                         width[a], P.group);
          }
        }
      }
    } else if (LR) {
      // svd, after the prefill: the new tokens join every layer at 16 bits (rank-space rows; with window=N in full),
      // then attend
      const int E0 = static_cast<int>(C.pos.size()), pos0 = kv.n, last = kv.n + m - 1;
      int win_lo = E0;  // window: the first entry inside some query's window (pos > pos0 - W); all held in full
      for (int e = C.full_begin; e < E0 && W > 0; ++e)
        if (C.pos[e] > pos0 - W) {
          win_lo = e;
          break;
        }
      const int nw = W > 0 ? E0 - win_lo + m : 0;
      if (W > 0) grow(P.kwin, size_t(Hkv) * nw * hd), grow(P.vwin, size_t(Hkv) * nw * hd);
      for (int g = 0; g < Hkv && W > 0; ++g)  // side rows of the old window entries (full rows in the cache)
        for (int e = win_lo; e < E0; ++e) {
          if (C.krank[g][e] != hd || C.vrank[g][e] != hd) fail("internal: window entry ", e, " is not held in full");
          float* kw = P.kwin.data() + (size_t(g) * nw + e - win_lo) * hd;
          float* vw = P.vwin.data() + (size_t(g) * nw + e - win_lo) * hd;
          const uint8_t* src = C.data[g].data() + C.off[g][e];
          const int b = C.bits[g][e];  // 16, or wbits: read dequantised
          dequantize_rank_row_cpu(kw, src, hd, b, P.group);
          dequantize_rank_row_cpu(vw, src + quant_rank_row_bytes(hd, b, P.group), hd, b, P.group);
        }
      std::vector<float> row(size_t(2) * hd);
      for (int i = 0; i < m; ++i) {
        C.pos.push_back(P.pos[i]);
        for (int g = 0; g < Hkv; ++g) {
          const int r = rank[size_t(g) * m + i];
          const float* v = P.v.data() + size_t(i) * kvd + size_t(g) * hd;
          if (W > 0) {
            float* kw = P.kwin.data() + (size_t(g) * nw + E0 - win_lo + i) * hd;
            float* vw = P.vwin.data() + (size_t(g) * nw + E0 - win_lo + i) * hd;
            std::memcpy(kw, P.kfull.data() + size_t(i) * kvd + size_t(g) * hd, hd * sizeof(float));
            lowrank_project_cpu(vw, Lr->uv.data() + size_t(g) * rv * hd, v, hd, hd);
            append_lowrank_entry(C, g, kw, hd, vw, hd, 16, P.group, r, 16);
          } else {
            const int kl = key_len(g, i);
            key_row(row.data(), g, i);
            lowrank_project_cpu(row.data() + kl, Lr->uv.data() + size_t(g) * rv * hd, v, r, hd);
            append_lowrank_entry(C, g, row.data(), kl, row.data() + kl, r, 16, P.group, r, 16);
          }
        }
      }
      if (W > 0) {
        // the window slides: entries now past the last query's window are truncated to their compressed forms at
        // 16 bits before the attention (queries past their window read them so; their width comes after it)
        int fb = static_cast<int>(C.pos.size());
        for (int e = C.full_begin; e < int(C.pos.size()); ++e)
          if (C.pos[e] > last - W) {
            fb = e;
            break;
          }
        for (int g = 0; g < Hkv && fb > C.full_begin; ++g) {
          const int kr_g = LR->k_rank[size_t(l) * Hkv + g];
          relayout_lowrank(C, g, C.full_begin, hd, P.group, Lr->uk_down.data() + size_t(g) * rk * hd,
                           [&](int e, int& kl, int& r, int& w) {
                             if (e >= fb) return;
                             kl = C.pos[e] < S ? hd : kr_g;
                             r = C.cvrank[g][e];
                             w = 16;  // (a wbits entry too: its width comes after the attention)
                           });
        }
        C.full_begin = fb;
      } else {
        C.full_begin = static_cast<int>(C.pos.size());  // no window: nothing held in full
      }
      std::vector<const uint8_t*> data(Hkv), bits(Hkv);
      std::vector<const uint64_t*> off(Hkv);
      std::vector<const uint16_t*> vr(Hkv), kr(Hkv);
      for (int g = 0; g < Hkv; ++g)
        data[g] = C.data[g].data(), off[g] = C.off[g].data(), bits[g] = C.bits[g].data(), vr[g] = C.vrank[g].data(),
        kr[g] = C.krank[g].data();
      LowRankQuantAttentionArgs a;
      a.q = P.q.data();
      a.data = data.data(), a.off = off.data(), a.bits = bits.data(), a.vrank = vr.data();
      if (per_entry_k) a.krank = kr.data();
      a.pos = C.pos.data();
      a.uk = Lr->uk.data();
      a.r_k = rk, a.r_vmax = rv, a.group = P.group;
      a.n_q = m, a.n_kv = static_cast<int>(C.pos.size()), a.n_heads = H, a.n_kv_heads = Hkv, a.head_dim = hd;
      a.inv_freq = s.inv_freq.data();
      a.rope_layout = c.rope_layout;
      a.rope_cs = rope_cs;
      if (W > 0) a.k_win = P.kwin.data(), a.v_win = P.vwin.data(), a.win_stride = nw, a.win_lo = win_lo, a.window = W;
      attention_lowrank_quant_cpu(P.att.data(), a, pool);
      // widths after the attention: the quant recent window slides (an entry leaving it takes kv_requant_bits; one
      // still held in full takes it when it leaves the low-rank window), then every compressed 16-bit entry whose
      // width is lower is quantised to it
      if (P.spec.quant.on) {
        const int E = static_cast<int>(C.pos.size()), nb = std::max(C.win_begin, E - P.spec.quant.recent);
        const int req = kv_requant_bits(P.spec.quant);
        for (int g = 0; g < Hkv; ++g)
          for (int e = C.win_begin; e < nb; ++e) C.cbits[g][e] = static_cast<uint8_t>(req);
        C.win_begin = nb;
      }
      // (with wbits, the window's full entries now older than the recent window take it)
      const int wbits = P.spec.quant.on ? P.spec.quant.wbits : 16, wend = std::max(C.full_begin, C.win_begin);
      auto width_of = [&](int g, int e) {
        return e < C.full_begin ? int(C.cbits[g][e]) : e < wend && C.bits[g][e] == 16 ? wbits : int(C.bits[g][e]);
      };
      std::vector<int> want;
      for (int g = 0; g < Hkv; ++g) {
        int e0 = wend;
        for (int e = 0; e < wend; ++e)
          if (C.bits[g][e] != width_of(g, e)) {
            e0 = e;
            break;
          }
        if (e0 == wend) continue;
        want.resize(wend - e0);  // (taken before the relayout, which rewrites bits from e0 on)
        for (int e = e0; e < wend; ++e) want[e - e0] = width_of(g, e);
        relayout_lowrank(C, g, e0, hd, P.group, Lr->uk_down.data() + size_t(g) * rk * hd,
                         [&](int e, int&, int&, int& w) {
                           if (e < wend) w = want[e - e0];
                         });
      }
    } else {
      // after the prefill: the new tokens join every layer at 16 bits, then attend to the whole cache
      // (hadamard: the cache holds H k and H v, so q.k = (Hq).(Hk), and the output comes back from H sum p v below)
      const bool rot = P.spec.quant.hadamard;
      if (rot)
        rotate_rows(P.k.data(), int64_t(m) * Hkv, hd, pool), rotate_rows(P.v.data(), int64_t(m) * Hkv, hd, pool),
            rotate_rows(P.q.data(), int64_t(m) * H, hd, pool);
      for (int i = 0; i < m; ++i) {
        C.pos.push_back(P.pos[i]);
        for (int g = 0; g < Hkv; ++g)
          append_entry(C, g, P.k.data() + size_t(i) * kvd + g * hd, P.v.data() + size_t(i) * kvd + g * hd, hd, 16,
                       P.group);
      }
      std::vector<const uint8_t*> data(Hkv), bits(Hkv);
      std::vector<const uint64_t*> off(Hkv);
      for (int g = 0; g < Hkv; ++g) data[g] = C.data[g].data(), off[g] = C.off[g].data(), bits[g] = C.bits[g].data();
      QuantAttentionArgs a;
      a.q = P.q.data();
      a.data = data.data();
      a.off = off.data();
      a.bits = bits.data();
      a.n_q = m;
      a.n_kv = static_cast<int>(C.pos.size());
      a.n_heads = H;
      a.n_kv_heads = Hkv;
      a.head_dim = hd;
      a.group = P.group;
      attention_quant_cpu(P.att.data(), a, pool);
      if (rot) rotate_rows(P.att.data(), int64_t(m) * H, hd, pool);
    }
    // after a later call: the recent window slides, the entries falling out are re-quantised (this call's
    // attention above saw them at 16 bits)
    if (!prefill && P.spec.quant.on && !LR)  // (svd: done above, with the low-rank window)
      slide_window(C, P.spec.quant.recent, kv_requant_bits(P.spec.quant), hd, P.group);
    matmul_cpu(P.xb.data(), P.att.data(), Lr ? Lr->wo : L.wo, m, pool);  // svd: W_fused on z
    add_cpu(x, P.xb.data(), int64_t(m) * dim);
    // ---- feed-forward (SwiGLU) ----
    rmsnorm_cpu(P.xb.data(), x, L.ffn_norm, m, dim, c.rms_eps, pool);
    {
      float* outs[2] = {P.hb.data(), P.hb2.data()};
      const QMatrix* ws[2] = {&L.w_gate, &L.w_up};
      matmul_group_cpu(outs, ws, 2, P.xb.data(), m, pool);
    }
    swiglu_cpu(P.hb.data(), P.hb.data(), P.hb2.data(), int64_t(m) * c.ffn_dim, pool);
    matmul_cpu(P.xb.data(), P.hb.data(), L.w_down, m, pool);
    add_cpu(x, P.xb.data(), int64_t(m) * dim);
  }
  kv.n += n;

  const size_t V = c.vocab_size;
  if (mode == LogitsMode::all) {
    if (m != n) fail("internal: all logits asked for but ", n - m, " tokens were dropped");
    grow(s.logits, N * V);
    rmsnorm_cpu(P.xb.data(), x, w.output_norm, n, dim, c.rms_eps, pool);
    matmul_cpu(s.logits.data(), P.xb.data(), w.output, n, pool);
  } else {
    // the last token is in the question window, so it is always kept
    rmsnorm_cpu(P.xb.data(), x + size_t(m - 1) * dim, w.output_norm, 1, dim, c.rms_eps, pool);
    matmul_cpu(s.logits.data(), P.xb.data(), w.output, 1, pool);
  }
}

}  // namespace llm
