// The sliding 16-bit recent window of the mixed-precision cache (engine/kv_prefill.h): a decode loop that checks,
// after every step, the window invariant, the re-quantised rows against their 16-bit originals, the bytes, and
// finally that the next step's logits over the re-quantised cache equal those over its dequantised rows stored at
// 16 bits. Shared by tests/test_kv_prefill.cpp (head_dim rows) and tests/test_kv_unified.cpp (rank-space rows).
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "engine/kv_lowrank.h"
#include "engine/kv_prefill.h"
#include "engine/model.h"
#include "kernels/quant_cpu.h"
#include "tiny_llama2.h"

namespace llm_test {

// The quantisation error bound of one group of len values x -> y (quantize_row_cpu / quantize_rank_row_cpu at
// `bits`, then dequantised): half a step, plus the fp16 rounding of min and scale (relative 2^-11 each, scale times
// up to 2^bits-1). Checks every value and adds its |y - x| to err.
inline void check_quant_group(const float* x, const float* y, int len, int bits, double& err) {
  float lo = x[0], hi = x[0];
  for (int i = 0; i < len; ++i) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
  const float scale = (hi - lo) / float((1 << bits) - 1);
  const float bound = 0.5f * scale * (1 + 1e-3f) + 1e-3f * std::max(std::fabs(lo), std::fabs(hi)) + 1e-6f;
  for (int i = 0; i < len; ++i) {
    CHECK(std::fabs(y[i] - x[i]) <= bound);
    err += std::fabs(y[i] - x[i]);
  }
}

// The dequantised values of entry e of KV head g: key row then value row (svd: c_k then c_v).
inline std::vector<float> kv_entry_values(const KVPrefill& p, const KVPrefillLayer& L, int g, int e) {
  const uint8_t* src = L.data[g].data() + L.off[g][e];
  const int b = L.bits[g][e];
  std::vector<float> out;
  if (p.lowrank) {
    const int rk = L.krank.empty() ? p.lowrank->ranks.k : L.krank[g][e], r = L.vrank[g][e];
    out.resize(size_t(rk) + r);
    dequantize_rank_row_cpu(out.data(), src, rk, b, p.group);
    dequantize_rank_row_cpu(out.data() + rk, src + quant_rank_row_bytes(rk, b, p.group), r, b, p.group);
  } else {
    const int hd = p.head_dim;
    out.resize(2 * size_t(hd));
    dequantize_row_cpu(out.data(), src, hd, b, p.group);
    dequantize_row_cpu(out.data() + hd, src + quant_row_bytes(hd, b, p.group), hd, b, p.group);
  }
  return out;
}

// p with every row replaced by its dequantised values at 16 bits (fp32 rows), the window state kept.
inline KVPrefill kv_dequantised_copy(const KVPrefill& p) {
  KVPrefill d = p;
  for (size_t l = 0; l < p.layers.size(); ++l)
    for (int g = 0; g < p.n_kv_heads; ++g) {
      const KVPrefillLayer& S = p.layers[l];
      KVPrefillLayer& D = d.layers[l];
      D.data[g].clear(), D.off[g].assign(1, 0), std::fill(D.bits[g].begin(), D.bits[g].end(), uint8_t(16));
      for (size_t e = 0; e < S.bits[g].size(); ++e) {
        const std::vector<float> v = kv_entry_values(p, S, g, int(e));
        const size_t at = D.data[g].size();
        D.data[g].resize(at + v.size() * sizeof(float));
        std::memcpy(D.data[g].data() + at, v.data(), v.size() * sizeof(float));
        D.off[g].push_back(D.data[g].size());
      }
    }
  return d;
}

// One entry's bytes as bytes_used counts them (2 rows at quant_*_row_bytes_16 + 1 byte of width; svd + 2 of rank).
inline size_t kv_entry_bytes(const KVPrefill& p, const KVPrefillLayer& L, int g, int e, int bits) {
  if (p.lowrank)
    return quant_rank_row_bytes_16(L.krank.empty() ? p.lowrank->ranks.k : L.krank[g][e], bits, p.group) +
           quant_rank_row_bytes_16(L.vrank[g][e], bits, p.group) + 1 + 2;
  return 2 * quant_row_bytes_16(p.head_dim, bits, p.group) + 1;
}

// Prefill `prompt` into p (the spec's quant.recent = R < prompt size, quant on, no eviction), then decode `steps`
// greedy tokens checking the window after each. Returns nothing; every check is a doctest CHECK.
inline void kv_window_check(const TinyLlama2& m, KVPrefill& p, const std::vector<int>& prompt, int steps,
                            ThreadPool* pool) {
  const int R = p.spec.quant.recent, n = int(prompt.size()), W = kv_requant_bits(p.spec.quant);
  REQUIRE(W != 16);
  RunState s = runstate_create(m.c, 16);
  KVCache kv = kvcache_create(m.c, 128, /*allocate=*/false);
  kv.prefill = &p;
  forward_cpu(m.c, m.w, kv, s, prompt.data(), n, LogitsMode::last, pool);
  for (const auto& L : p.layers) CHECK(L.win_begin == n - R);  // no eviction: the prompt's last R entries
  for (int step = 1; step <= steps; ++step) {
    const KVPrefill prev = p;
    const int t = argmax_cpu(s.logits.data(), m.c.vocab_size);
    forward_cpu(m.c, m.w, kv, s, &t, 1, LogitsMode::last, pool);
    const int E = n + step;
    size_t expect = prev.bytes_used();
    for (size_t l = 0; l < p.layers.size(); ++l) {
      const KVPrefillLayer &L = p.layers[l], &P = prev.layers[l];
      CHECK(L.win_begin == E - R);
      expect += sizeof(int32_t);
      for (int g = 0; g < p.n_kv_heads; ++g) {
        REQUIRE(int(L.bits[g].size()) == E);
        REQUIRE(L.off[g].size() == size_t(E) + 1);
        CHECK(L.off[g][E] == L.data[g].size());
        for (int e = 0; e < E; ++e) {
          CAPTURE(l);
          CAPTURE(g);
          CAPTURE(e);
          // the invariant: the prompt's mix untouched, re-quantised entries at W, the last R at 16 bits
          const int want = e < n - R ? int(P.bits[g][e]) : e < E - R ? W : 16;
          CHECK(int(L.bits[g][e]) == want);
          if (e == E - R - 1) {  // just left the window: its 16-bit row, re-quantised within the width's bound
            CHECK(P.bits[g][e] == 16);
            const std::vector<float> a = kv_entry_values(prev, P, g, e), b = kv_entry_values(p, L, g, e);
            REQUIRE(a.size() == b.size());
            float lo = a[0], hi = a[0], err = 0;
            for (float x : a) lo = std::min(lo, x), hi = std::max(hi, x);
            for (size_t i = 0; i < a.size(); ++i) err = std::max(err, std::fabs(a[i] - b[i]));
            CHECK(err > 0.0f);
            CHECK(err <= 0.5f * (hi - lo) / float((1 << W) - 1) * 1.02f + 1e-3f * std::max(-lo, hi));
            expect -= kv_entry_bytes(prev, P, g, e, 16) - kv_entry_bytes(p, L, g, e, W);
          } else if (e < E - 1) {  // every other old entry: the same bytes as before the step
            const size_t len = L.off[g][e + 1] - L.off[g][e];
            REQUIRE(len == P.off[g][e + 1] - P.off[g][e]);
            CHECK(std::memcmp(L.data[g].data() + L.off[g][e], P.data[g].data() + P.off[g][e], len) == 0);
          } else {
            expect += kv_entry_bytes(p, L, g, e, 16);  // the new token
          }
        }
      }
    }
    CHECK(p.bytes_used() == expect);
  }
  // attention over the re-quantised rows == attention over their dequantised values stored at 16 bits
  KVPrefill d = kv_dequantised_copy(p);
  KVCache kv2 = kv;
  kv2.prefill = &d;
  RunState s2 = runstate_create(m.c, 16);
  const int t = argmax_cpu(s.logits.data(), m.c.vocab_size);
  forward_cpu(m.c, m.w, kv, s, &t, 1, LogitsMode::last, pool);
  forward_cpu(m.c, m.w, kv2, s2, &t, 1, LogitsMode::last, pool);
  float diff = 0;
  for (int i = 0; i < m.c.vocab_size; ++i) diff = std::max(diff, std::fabs(s.logits[i] - s2.logits[i]));
  CHECK(diff == 0.0f);
}

}  // namespace llm_test
