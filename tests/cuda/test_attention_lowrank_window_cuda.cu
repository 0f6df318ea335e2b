// window=N, vsinks=N and alloc=spectrum in the low-rank attention kernels (kernels/attention_lowrank.cu, the block
// program of kernels/lowrank_tile.cuh):
//  - window=N against the CPU twin attention_lowrank_cpu (its k_win / v_win rows) on seeded caches whose full keys
//    and value coefficients are drawn independently of c_k / c_v (reading the wrong form moves the output by far
//    more than the tolerance: checked): prefill with the per-query boundary inside a tile and crossing a tile
//    boundary, a later prefill block (older window rows from the ring, the block's own from k_new / v_new), window
//    larger than the sequence, window 1, split-K decode with the window inside one split or across two, fp32 and
//    bf16 caches, both RoPE layouts, the demo and Llama-3 shapes. The ring's other slots hold a sentinel, so a
//    read of the wrong slot shows;
//  - vsinks: the first tokens' value rows at rank head_dim in the packed c_v;
//  - alloc=spectrum: per-KV-head key ranks zero-padded to r_kpad (c_k columns and U_K rows past a head's rank zero)
//    give what the CPU twin gives for each head at its own rank, unpadded;
//  - full ranks + window (U_K = U_V = I) equal the full-cache attention_cpu, with the window tokens' c_k / c_v rows
//    zeroed in the decode (only the window can supply them);
//  - kv_lowrank_window_write_cuda puts the last min(n, N) tokens of a block at slot position % N.
// Everything is fp32 on both sides (bf16 inputs rounded on the host first): the tolerances of test_lowrank_cuda.cu.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <type_traits>

#include "cuda_test_util.cuh"
#include "lowrank_test_util.cuh"
#include "kernels/attention_lowrank_cuda.h"
#include "kernels/lowrank_cpu.h"
#include "kernels/ops_cpu.h"
#include "kernels/threadpool_cpu.h"

using namespace llm;
using namespace llm_cuda_test;
using namespace llm_lowrank_test;

namespace {

constexpr float kAtol = 1e-4f, kRtol = 1e-3f;
constexpr float kSentinel = 50.0f;  // ring slots the kernel must not read

// A seeded low-rank cache of n_kv tokens and n_q queries, plus every token's full pre-RoPE key and full-rank value
// coefficients kf / vf (n_kv_heads, n_kv, head_dim), unrelated to c_k / c_v. vsinks: the first tokens' value ranks
// set to head_dim (c_v redrawn to the new offsets).
struct WinCache : Inputs {
  int window = 0;
  std::vector<float> kf, vf;
};

WinCache make_cache(std::mt19937& rng, const Shape& s, int n_q, int n_kv, int window, bool round_bf16,
                    int vsinks = 0) {
  WinCache in;
  in.window = window;
  fill_inputs(in, rng, s, n_q, n_kv, n_kv + 7, 3, round_bf16);
  if (vsinks > 0) {
    for (int t = 0; t < std::min(vsinks, n_kv); ++t) in.vrank[t] = s.hd;
    for (int t = 0; t < n_kv; ++t) in.voff[t + 1] = in.voff[t] + in.vrank[t];
    in.cv_stride = in.voff[n_kv] + 3;
    in.cv = random_f32(rng, size_t(s.n_kv_heads) * in.cv_stride, 1.0f);
    if (round_bf16)
      for (float& x : in.cv) x = bf16_to_f32(f32_to_bf16(x));
  }
  in.kf = random_f32(rng, size_t(s.n_kv_heads) * n_kv * s.hd, 1.7f);
  in.vf = random_f32(rng, size_t(s.n_kv_heads) * n_kv * s.hd, 1.0f);
  return in;
}

// window < 0: the cache's own; 0: none (the same cache read compressed throughout)
std::vector<float> cpu_twin(const WinCache& in, const Shape& s, int n_q, int n_kv, RopeLayout layout,
                            int window = -1) {
  LowRankAttentionArgs a = cpu_args(in, s, n_q, n_kv, layout);
  a.window = window < 0 ? in.window : window;
  if (a.window > 0) {
    a.k_win = in.kf.data();
    a.v_win = in.vf.data();
    a.win_stride = n_kv;
    a.win_lo = 0;
  }
  std::vector<float> z(size_t(n_q) * s.n_heads * in.r_vmax);
  ThreadPool pool(2);
  attention_lowrank_cpu(z.data(), a, &pool);
  return z;
}

// The device side: the ring holds tokens [first - window, first) at slot t % window (sentinel elsewhere), the call's
// own tokens' rows are k_new / v_new (n_q, n_kv_heads, head_dim).
template <class T>
struct Dev : DeviceInputs<T> {
  DeviceBuffer kw, vw, kn, vn;
  Dev(const WinCache& in, const Shape& s, int n_q, int n_kv, RopeLayout layout) {
    upload_inputs(*this, in, s, layout);
    const int W = in.window, first = n_kv - n_q, H = s.n_kv_heads, D = s.hd;
    std::vector<float> rk(size_t(H) * W * D, kSentinel), rv(rk.size(), kSentinel);
    std::vector<float> nk(size_t(n_q) * H * D), nv(nk.size());
    for (int g = 0; g < H; ++g) {
      for (int t = std::max(0, first - W); t < first; ++t) {
        std::copy_n(in.kf.data() + (size_t(g) * n_kv + t) * D, D, rk.data() + (size_t(g) * W + t % W) * D);
        std::copy_n(in.vf.data() + (size_t(g) * n_kv + t) * D, D, rv.data() + (size_t(g) * W + t % W) * D);
      }
      for (int i = 0; i < n_q; ++i) {
        std::copy_n(in.kf.data() + (size_t(g) * n_kv + first + i) * D, D, nk.data() + (size_t(i) * H + g) * D);
        std::copy_n(in.vf.data() + (size_t(g) * n_kv + first + i) * D, D, nv.data() + (size_t(i) * H + g) * D);
      }
    }
    kw = upload(rk);
    vw = upload(rv);
    kn = upload(nk);
    vn = upload(nv);
    this->a.k_win = kw.as<float>();
    this->a.v_win = vw.as<float>();
    this->a.k_new = kn.as<float>();
    this->a.v_new = vn.as<float>();
    this->a.window = W;
  }
};

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
  return m;
}

template <class T>
void prefill_case(std::mt19937& rng, const Shape& s, int n_q, int n_kv, int window, RopeLayout layout,
                  int vsinks = 0) {
  CAPTURE(s.hd);
  CAPTURE(n_q);
  CAPTURE(n_kv);
  CAPTURE(window);
  CAPTURE(vsinks);
  CAPTURE(sizeof(T));
  const WinCache in = make_cache(rng, s, n_q, n_kv, window, !std::is_same_v<T, float>, vsinks);
  const std::vector<float> ref = cpu_twin(in, s, n_q, n_kv, layout);
  CHECK(max_abs_diff(ref, cpu_twin(in, s, n_q, n_kv, layout, 0)) > 0.01);  // the window matters
  Dev<T> d(in, s, n_q, n_kv, layout);
  check_close("window prefill z", prefill_z(d.a, n_q, n_kv), ref, kAtol, kRtol);
}

// splits 0: attention_lowrank_decode_splits for this device
template <class T>
void decode_case(std::mt19937& rng, const Shape& s, int n_kv, int window, RopeLayout layout, int splits = 0,
                 int vsinks = 0) {
  CAPTURE(s.hd);
  CAPTURE(n_kv);
  CAPTURE(window);
  CAPTURE(vsinks);
  CAPTURE(sizeof(T));
  const WinCache in = make_cache(rng, s, 1, n_kv, window, !std::is_same_v<T, float>, vsinks);
  const std::vector<float> ref = cpu_twin(in, s, 1, n_kv, layout);
  CHECK(max_abs_diff(ref, cpu_twin(in, s, 1, n_kv, layout, 0)) > 0.01);
  Dev<T> d(in, s, 1, n_kv, layout);
  if (splits <= 0) splits = attention_lowrank_decode_splits(s.n_kv_heads, int(in.ck_stride), sm_count());
  CAPTURE(splits);
  check_close("window decode z", decode_z(d.a, n_kv, splits), ref, kAtol, kRtol);
}

}  // namespace

TEST_CASE("cuda low-rank prefill with window=N matches attention_lowrank_cpu (boundary in a tile, across tiles)") {
  if (!have_cuda()) return;
  std::mt19937 rng(81);
  prefill_case<float>(rng, kDemo, 45, 45, 8, RopeLayout::half_split);      // boundaries inside tiles
  prefill_case<float>(rng, kDemo, 70, 70, 20, RopeLayout::interleaved);    // windows crossing tile boundaries
  prefill_case<float>(rng, kDemo, 12, 80, 40, RopeLayout::half_split);     // a later block: ring + own rows
  prefill_case<float>(rng, kDemo, 20, 45, 100, RopeLayout::half_split);    // window > sequence: all full
  prefill_case<float>(rng, kDemo, 40, 40, 1, RopeLayout::half_split);      // window 1: only the query's own token
  prefill_case<float>(rng, kLlama3, 17, 50, 9, RopeLayout::half_split);    // llama3 scaling, group 4
  prefill_case<bf16>(rng, kDemo, 33, 66, 16, RopeLayout::half_split);
}

TEST_CASE("cuda low-rank split-K decode with window=N matches attention_lowrank_cpu") {
  if (!have_cuda()) return;
  std::mt19937 rng(82);
  decode_case<float>(rng, kDemo, 1, 4, RopeLayout::half_split);         // the first token, alone
  decode_case<float>(rng, kDemo, 70, 10, RopeLayout::interleaved);      // window 60..69 across the tile at 64
  decode_case<float>(rng, kDemo, 97, 40, RopeLayout::half_split, 3);    // window across two splits
  decode_case<float>(rng, kDemo, 30, 64, RopeLayout::half_split, 2);    // window > sequence
  decode_case<float>(rng, kDemo, 50, 1, RopeLayout::half_split);        // window 1: the new token only
  decode_case<float>(rng, kLlama3, 65, 16, RopeLayout::half_split, 2);
  decode_case<bf16>(rng, kDemo, 100, 16, RopeLayout::half_split, 4);
}

TEST_CASE("cuda low-rank attention with vsinks (rank-head_dim value rows) matches attention_lowrank_cpu") {
  if (!have_cuda()) return;
  std::mt19937 rng(83);
  prefill_case<float>(rng, kDemo, 40, 40, 8, RopeLayout::half_split, 3);
  decode_case<float>(rng, kDemo, 75, 8, RopeLayout::half_split, 2, 3);
  // vsinks alone (no window): the cache's packed rows at rank head_dim, the compressed path
  const WinCache in = make_cache(rng, kDemo, 33, 33, 0, false, 5);
  LowRankAttentionArgs a = cpu_args(in, kDemo, 33, 33, RopeLayout::half_split);
  std::vector<float> ref(size_t(33) * kDemo.n_heads * in.r_vmax);
  attention_lowrank_cpu(ref.data(), a);
  DeviceInputs<float> d;
  upload_inputs(d, in, kDemo, RopeLayout::half_split);
  check_close("vsinks prefill z", prefill_z(d.a, 33, 33), ref, kAtol, kRtol);
  d.a.q += size_t(32) * kDemo.n_heads * kDemo.hd;  // the decode's query: the last one
  check_close("vsinks decode z", decode_z(d.a, 33, 2),
              std::vector<float>(ref.end() - kDemo.n_heads * in.r_vmax, ref.end()), kAtol, kRtol);
}

// alloc=spectrum: KV head g keeps rank k_rank[g] of r_kpad; the padded cache (zero columns of c_k, zero rows of U_K)
// and the packed one (block g at its own rank, ck_off / k_ranks) must give, for the heads of group g, what the
// unpadded cache of that head alone at rank k_rank[g] gives.
TEST_CASE("cuda low-rank attention with per-head key ranks zero-padded to r_kpad equals each head at its rank") {
  if (!have_cuda()) return;
  std::mt19937 rng(84);
  Shape s = kDemo;
  s.r_k = 24;  // r_kpad
  const std::vector<int> k_rank{24, 9, 15};
  const int n_q = 37, n_kv = 70, H = s.n_kv_heads, D = s.hd, gs = s.n_heads / H, rk = s.r_k;
  WinCache in;
  fill_inputs(in, rng, s, n_q, n_kv, n_kv + 5, 3, false);
  for (int g = 0; g < H; ++g) {
    for (int t = 0; t < int(in.ck_stride); ++t)
      for (int j = k_rank[g]; j < rk; ++j) in.ck[(size_t(g) * in.ck_stride + t) * rk + j] = 0.0f;
    for (int j = k_rank[g]; j < rk; ++j) std::fill_n(in.uk.data() + (size_t(g) * rk + j) * D, D, 0.0f);
  }
  DeviceInputs<float> d;
  upload_inputs(d, in, s, RopeLayout::half_split);
  // packed: block g holds ck_stride x k_rank[g] values at ck_off[g] (what a session with alloc=spectrum stores)
  std::vector<float> packed;
  std::vector<int64_t> off;
  for (int g = 0; g < H; ++g) {
    off.push_back(int64_t(packed.size()));
    for (int t = 0; t < int(in.ck_stride); ++t)
      for (int j = 0; j < k_rank[g]; ++j) packed.push_back(in.ck[(size_t(g) * in.ck_stride + t) * rk + j]);
  }
  DeviceBuffer dpacked = upload(packed), doff = upload(off), dranks = upload(k_rank);
  const int rv = in.r_vmax;
  for (const bool pack : {false, true}) {
    CAPTURE(pack);
    d.a.q = d.q.as<float>();
    if (pack) {
      d.a.ck = dpacked.as<float>();
      d.a.ck_off = doff.as<int64_t>();
      d.a.k_ranks = dranks.as<int>();
    }
    const std::vector<float> zp = prefill_z(d.a, n_q, n_kv);
    d.a.q += size_t(n_q - 1) * s.n_heads * D;  // the decode's query: the last one
    const std::vector<float> zd = decode_z(d.a, n_kv, 3);
    for (int g = 0; g < H; ++g) {
      CAPTURE(g);
      // head g alone, rank k_rank[g], no padding: its queries, c_k columns, U_K rows and c_v block
      const int kr = k_rank[g];
      std::vector<float> q(size_t(n_q) * gs * D), ck(size_t(in.ck_stride) * kr), uk(size_t(kr) * D);
      for (int i = 0; i < n_q; ++i)
        std::copy_n(in.q.data() + (size_t(i) * s.n_heads + g * gs) * D, gs * D, q.data() + size_t(i) * gs * D);
      for (int t = 0; t < int(in.ck_stride); ++t)
        std::copy_n(in.ck.data() + (size_t(g) * in.ck_stride + t) * rk, kr, ck.data() + size_t(t) * kr);
      std::copy_n(in.uk.data() + size_t(g) * rk * D, size_t(kr) * D, uk.data());
      LowRankAttentionArgs a = cpu_args(in, s, n_q, n_kv, RopeLayout::half_split);
      a.q = q.data();
      a.ck = ck.data();
      a.uk = uk.data();
      a.cv = in.cv.data() + size_t(g) * in.cv_stride;
      a.r_k = kr;
      a.n_heads = gs;
      a.n_kv_heads = 1;
      std::vector<float> ref(size_t(n_q) * gs * rv);
      attention_lowrank_cpu(ref.data(), a);
      std::vector<float> got(ref.size()), got1(size_t(gs) * rv);
      for (int i = 0; i < n_q; ++i)
        std::copy_n(zp.data() + (size_t(i) * s.n_heads + g * gs) * rv, gs * rv, got.data() + size_t(i) * gs * rv);
      std::copy_n(zd.data() + size_t(g) * gs * rv, gs * rv, got1.data());
      check_close("spectrum prefill z", got, ref, kAtol, kRtol);
      check_close("spectrum decode z", got1, std::vector<float>(ref.end() - gs * rv, ref.end()), kAtol, kRtol);
    }
  }
}

// At full ranks with U_K = U_V = I the cache holds the keys and values exactly: z equals the full-cache attention.
// In the decode the window tokens' c_k / c_v are zeroed, so only the window's rows (ring + the new token) give them.
TEST_CASE("cuda low-rank attention at full ranks with window=N equals the full-cache attention") {
  if (!have_cuda()) return;
  std::mt19937 rng(85);
  const int nh = 4, nkv = 2, hd = 32, n_kv = 45;
  for (const int W : {1, 7, 40, 64}) {
    for (const RopeLayout layout : {RopeLayout::half_split, RopeLayout::interleaved}) {
      CAPTURE(W);
      CAPTURE(static_cast<int>(layout));
      std::vector<float> uk(size_t(nkv) * hd * hd, 0.0f);
      for (int g = 0; g < nkv; ++g)
        for (int j = 0; j < hd; ++j) uk[(size_t(g) * hd + j) * hd + j] = 1.0f;
      const std::vector<float> k = random_f32(rng, size_t(nkv) * n_kv * hd, 1.7f);  // pre-RoPE keys
      const std::vector<float> v = random_f32(rng, size_t(nkv) * n_kv * hd, 1.0f);
      const std::vector<float> q = random_f32(rng, size_t(n_kv) * nh * hd, 2.0f);
      std::vector<float> inv(hd / 2);
      rope_inv_freq_cpu(inv.data(), hd, 10000.0f, RopeScaling{});
      std::vector<int32_t> vrank(n_kv, hd);
      std::vector<int64_t> voff(n_kv + 1);
      for (int t = 0; t <= n_kv; ++t) voff[t] = int64_t(t) * hd;
      std::vector<float> kr = k;
      std::vector<int> pos(n_kv);
      std::iota(pos.begin(), pos.end(), 0);
      for (int g = 0; g < nkv; ++g)
        rope_cpu(kr.data() + size_t(g) * n_kv * hd, pos.data(), n_kv, 1, hd, hd, inv.data(), layout);
      std::vector<float> ref(size_t(n_kv) * nh * hd);
      attention_cpu(ref.data(), q.data(), kr.data(), v.data(), n_kv, n_kv, nh, nkv, hd, n_kv);
      // ring + new rows as the forward pass holds them: prefill (first 0: all new); decode (first n_kv - 1)
      auto rows = [&](int first, int n_new, std::vector<float>& ring, std::vector<float>& nk, std::vector<float>& nv,
                      std::vector<float>& rvv) {
        ring.assign(size_t(nkv) * W * hd, kSentinel);
        rvv.assign(ring.size(), kSentinel);
        nk.resize(size_t(n_new) * nkv * hd);
        nv.resize(nk.size());
        for (int g = 0; g < nkv; ++g) {
          for (int t = std::max(0, first - W); t < first; ++t) {
            std::copy_n(k.data() + (size_t(g) * n_kv + t) * hd, hd, ring.data() + (size_t(g) * W + t % W) * hd);
            std::copy_n(v.data() + (size_t(g) * n_kv + t) * hd, hd, rvv.data() + (size_t(g) * W + t % W) * hd);
          }
          for (int i = 0; i < n_new; ++i) {
            std::copy_n(k.data() + (size_t(g) * n_kv + first + i) * hd, hd, nk.data() + (size_t(i) * nkv + g) * hd);
            std::copy_n(v.data() + (size_t(g) * n_kv + first + i) * hd, hd, nv.data() + (size_t(i) * nkv + g) * hd);
          }
        }
      };
      LowRankAttentionCudaArgs<float> a;
      a.r_k = a.r_vmax = hd;
      a.n_heads = nh;
      a.n_kv_heads = nkv;
      a.head_dim = hd;
      a.rope_layout = layout;
      a.ck_stride = n_kv;
      a.cv_stride = int64_t(n_kv) * hd;
      a.window = W;
      DeviceBuffer duk = upload(uk), dvoff = upload(voff), dvrank = upload(vrank), dinv = upload(inv);
      a.uk = duk.as<float>();
      a.voff = dvoff.as<int64_t>();
      a.vrank = dvrank.as<int32_t>();
      a.inv_freq = dinv.as<float>();
      // the kernel's inputs: queries, c_k / c_v, the ring, the call's own rows
      auto point = [&a](const DeviceBuffer& dq, const DeviceBuffer& dck, const DeviceBuffer& dcv,
                        const DeviceBuffer& dkw, const DeviceBuffer& dvw, const DeviceBuffer& dkn,
                        const DeviceBuffer& dvn) {
        a.q = dq.as<float>();
        a.ck = dck.as<float>();
        a.cv = dcv.as<float>();
        a.k_win = dkw.as<float>();
        a.v_win = dvw.as<float>();
        a.k_new = dkn.as<float>();
        a.v_new = dvn.as<float>();
      };
      {  // prefill of every query
        std::vector<float> ring, nk, nv, rvv;
        rows(0, n_kv, ring, nk, nv, rvv);
        DeviceBuffer dq = upload(q), dck = upload(k), dcv = upload(v), dkw = upload(ring), dvw = upload(rvv),
                     dkn = upload(nk), dvn = upload(nv);
        point(dq, dck, dcv, dkw, dvw, dkn, dvn);
        check_close("full ranks + window prefill", prefill_z(a, n_kv, n_kv), ref, kAtol, kRtol);
      }
      {  // decode of the last query, the window's c_k / c_v rows zeroed
        std::vector<float> ring, nk, nv, rvv, ck = k, cv = v;
        rows(n_kv - 1, 1, ring, nk, nv, rvv);
        for (int g = 0; g < nkv; ++g)
          for (int t = std::max(0, n_kv - W); t < n_kv; ++t) {
            std::fill_n(ck.data() + (size_t(g) * n_kv + t) * hd, hd, 0.0f);
            std::fill_n(cv.data() + (size_t(g) * n_kv + t) * hd, hd, 0.0f);
          }
        DeviceBuffer dq = upload(std::vector<float>(q.end() - size_t(nh) * hd, q.end())), dck = upload(ck),
                     dcv = upload(cv), dkw = upload(ring), dvw = upload(rvv), dkn = upload(nk), dvn = upload(nv);
        point(dq, dck, dcv, dkw, dvw, dkn, dvn);
        check_close("full ranks + window decode", decode_z(a, n_kv, 2),
                    std::vector<float>(ref.end() - size_t(nh) * hd, ref.end()), kAtol, kRtol);
      }
    }
  }
}

// The ring write: a block of 5 tokens at position 3 with N = 3 writes tokens 5, 6, 7 into slots 2, 0, 1; a decode
// step at 8 writes slot 2; a block of 2 at 0 writes slots 0, 1 (window larger than the block).
TEST_CASE("cuda kv_lowrank_window_write puts the block's last tokens at slot position % N") {
  if (!have_cuda()) return;
  std::mt19937 rng(86);
  const int nkv = 2, hd = 16, W = 3;
  DeviceBuffer dkw = upload(std::vector<float>(size_t(nkv) * W * hd, kSentinel)),
               dvw = upload(std::vector<float>(size_t(nkv) * W * hd, kSentinel));
  std::vector<float> rk(size_t(nkv) * W * hd, kSentinel), rv = rk;
  auto run = [&](int n, int pos0) {
    const std::vector<float> nk = random_f32(rng, size_t(n) * nkv * hd, 1.0f), nv = random_f32(rng, nk.size(), 1.0f);
    DeviceBuffer dkn = upload(nk), dvn = upload(nv), dpos = upload(std::vector<int>{pos0});
    kv_lowrank_window_write_cuda(dkw.as<float>(), dvw.as<float>(), dkn.as<float>(), dvn.as<float>(), n, nkv, hd, W,
                                 dpos.as<int>(), nullptr);
    for (int i = std::max(0, n - W); i < n; ++i)
      for (int g = 0; g < nkv; ++g) {
        std::copy_n(nk.data() + (size_t(i) * nkv + g) * hd, hd, rk.data() + (size_t(g) * W + (pos0 + i) % W) * hd);
        std::copy_n(nv.data() + (size_t(i) * nkv + g) * hd, hd, rv.data() + (size_t(g) * W + (pos0 + i) % W) * hd);
      }
    CUDA_CHECK(cudaDeviceSynchronize());
    CHECK(download<float>(dkw, rk.size()) == rk);
    CHECK(download<float>(dvw, rv.size()) == rv);
  };
  run(2, 0);
  run(5, 3);
  run(1, 8);
}

// Checked before any CUDA call, so this case runs without a GPU too.
TEST_CASE("cuda low-rank attention: a window without its rows or at a value rank below head_dim is refused") {
  LowRankAttentionCudaArgs<float> a;
  a.n_heads = 9;
  a.n_kv_heads = 3;
  a.head_dim = 64;
  a.r_k = 16;
  a.r_vmax = 64;
  float dummy = 0.0f;
  a.q = a.uk = a.inv_freq = &dummy;
  a.ck = a.cv = &dummy;
  const int64_t o = 0;
  const int32_t r = 1;
  a.voff = &o;
  a.vrank = &r;
  a.window = 8;  // rows null
  CHECK_THROWS_WITH_AS(attention_lowrank_prefill_cuda<float>(nullptr, a, 1, 1, nullptr, nullptr),
                       doctest::Contains("window 8"), llm::Error);
  a.k_win = a.v_win = a.k_new = a.v_new = &dummy;
  a.r_vmax = 32;
  CHECK_THROWS_WITH_AS(attention_lowrank_decode_cuda<float>(nullptr, a, nullptr, 1, nullptr, nullptr),
                       doctest::Contains("equal to head_dim"), llm::Error);
}
