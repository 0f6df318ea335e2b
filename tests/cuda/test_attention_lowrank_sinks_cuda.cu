// Attention sinks (sinks=N) in the low-rank attention kernels (kernels/attention_lowrank.cu, the shared block
// program of kernels/lowrank_tile.cuh): the first N tokens' cached full keys (fp32, before RoPE) replace the keys
// rebuilt from c_k, RoPE'd at their positions like the rebuilt ones.
//  - against the CPU twin attention_lowrank_cpu (which implements sinks on the CPU path) on seeded caches whose
//    sink keys are drawn independently of c_k (ignoring them, or taking them at the wrong row, position or head,
//    changes the output by the order of the output itself: checked too): prefill and split-K decode, N inside the
//    first 32-key tile, N crossing a tile boundary (33, 40, 70), N larger than the sequence (every key a sink),
//    splits that start inside the sinks, the fp32 and the bf16 cache, both RoPE layouts, the demo and Llama-3 shapes;
//  - at full ranks (r_k = r_v = head_dim) with sinks the kernels equal the full-cache attention attention_cpu on the
//    same keys and values, even with the sink tokens' c_k rows zeroed (only the sinks can supply their keys);
//  - kv_lowrank_sink_write_cuda (the sinks' full keys W_K x, written at positions < N only) against host dot
//    products of the same bf16 values.
// Everything is fp32 on both sides (bf16 inputs are rounded on the host first): only summation order, expf and
// sincosf differ, so the tolerances are test_lowrank_cuda.cu's. Small shapes: these run under the CPU emulator.
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

// A seeded low-rank cache of n_kv tokens (capacity rows), its queries and n_sink full keys per KV head (rows
// 0 .. n_sink-1 of k_sink; k_sink_stride = n_sink), host side.
struct Cache : Inputs {
  int n_sink = 0;
  std::vector<float> k_sink;
};

// cv_slack 3: a value-block stride the tensor-core decode kernel refuses (tc_decode_case passes 8)
Cache make_cache(std::mt19937& rng, const Shape& s, int n_q, int n_kv, int n_sink, bool round_bf16,
                 int cv_slack = 3) {
  Cache in;
  in.n_sink = n_sink;
  fill_inputs(in, rng, s, n_q, n_kv, n_kv + 7, cv_slack, round_bf16);
  // full keys of unit variance per dim, like the rebuilt ones, but unrelated to c_k
  in.k_sink = random_f32(rng, size_t(s.n_kv_heads) * n_sink * s.hd, 1.7f);
  return in;
}

// n_sink < 0: the cache's own sinks; 0: none (the same cache read without them)
std::vector<float> cpu_twin(const Cache& in, const Shape& s, int n_q, int n_kv, RopeLayout layout, int n_sink = -1) {
  LowRankAttentionArgs a = cpu_args(in, s, n_q, n_kv, layout);
  a.n_sink = n_sink < 0 ? in.n_sink : n_sink;
  a.k_sink = a.n_sink > 0 ? in.k_sink.data() : nullptr;
  a.k_sink_stride = in.n_sink;
  std::vector<float> z(size_t(n_q) * s.n_heads * in.r_vmax);
  ThreadPool pool(2);
  attention_lowrank_cpu(z.data(), a, &pool);
  return z;
}

template <class T>
struct Dev : DeviceInputs<T> {
  DeviceBuffer ks;
  Dev(const Cache& in, const Shape& s, RopeLayout layout) {
    upload_inputs(*this, in, s, layout);
    if (in.n_sink > 0) {
      ks = upload(in.k_sink);
      this->a.k_sink = ks.as<float>();
      this->a.k_sink_stride = in.n_sink;
      this->a.n_sink = in.n_sink;
    }
  }
};

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
  return m;
}

template <class T>
void prefill_case(std::mt19937& rng, const Shape& s, int n_q, int n_kv, int n_sink, RopeLayout layout) {
  CAPTURE(s.hd);
  CAPTURE(n_q);
  CAPTURE(n_kv);
  CAPTURE(n_sink);
  CAPTURE(sizeof(T));
  const Cache in = make_cache(rng, s, n_q, n_kv, n_sink, !std::is_same_v<T, float>);
  const std::vector<float> ref = cpu_twin(in, s, n_q, n_kv, layout);
  // the sinks matter here: without them the CPU twin's output moves by 10x the tolerance or more
  CHECK(max_abs_diff(ref, cpu_twin(in, s, n_q, n_kv, layout, 0)) > 0.01);
  Dev<T> d(in, s, layout);
  check_close("sinks prefill z", prefill_z(d.a, n_q, n_kv), ref, kAtol, kRtol);
}

// splits 0: attention_lowrank_decode_splits for this device
template <class T>
void decode_case(std::mt19937& rng, const Shape& s, int n_kv, int n_sink, RopeLayout layout, int splits = 0) {
  CAPTURE(s.hd);
  CAPTURE(n_kv);
  CAPTURE(n_sink);
  CAPTURE(sizeof(T));
  const Cache in = make_cache(rng, s, 1, n_kv, n_sink, !std::is_same_v<T, float>);
  const std::vector<float> ref = cpu_twin(in, s, 1, n_kv, layout);
  if (n_kv > 1) CHECK(max_abs_diff(ref, cpu_twin(in, s, 1, n_kv, layout, 0)) > 0.01);  // one key: p = 1 anyway
  Dev<T> d(in, s, layout);
  if (splits <= 0) splits = attention_lowrank_decode_splits(s.n_kv_heads, int(in.ck_stride), sm_count());
  CAPTURE(splits);
  d.a.kernel = LowRankKernel::generic;
  check_close("sinks decode z", decode_z(d.a, n_kv, splits), ref, kAtol, kRtol);
}

// The tensor-core decode kernel (bf16 cache) with sinks; tolerances of test_lowrank_cuda.cu's tc_case (bf16 U_K,
// rebuilt keys and probabilities). The sinks move z by > 0.01 here, so reading c_k for them fails the check.
void tc_decode_case(std::mt19937& rng, const Shape& s, int n_kv, int n_sink, RopeLayout layout, int splits = 0) {
  CAPTURE(s.hd);
  CAPTURE(n_kv);
  CAPTURE(n_sink);
  const Cache in = make_cache(rng, s, 1, n_kv, n_sink, true, 8);
  const std::vector<float> ref = cpu_twin(in, s, 1, n_kv, layout);
  if (n_kv > 1) CHECK(max_abs_diff(ref, cpu_twin(in, s, 1, n_kv, layout, 0)) > 0.01);
  Dev<bf16> d(in, s, layout);
  d.a.kernel = LowRankKernel::tensor;
  REQUIRE(attention_lowrank_tc_supported(d.a));
  if (splits <= 0) splits = attention_lowrank_decode_splits(s.n_kv_heads, int(in.ck_stride), sm_count());
  CAPTURE(splits);
  check_close("sinks tensor-core decode z", decode_z(d.a, n_kv, splits), ref, 4e-3f, 1e-2f);
}

}  // namespace

TEST_CASE("cuda low-rank prefill with sinks matches attention_lowrank_cpu (N in a tile, across tiles, N > n)") {
  if (!have_cuda()) return;
  std::mt19937 rng(71);
  prefill_case<float>(rng, kDemo, 45, 45, 4, RopeLayout::half_split);     // N inside the first tile
  prefill_case<float>(rng, kDemo, 70, 70, 33, RopeLayout::interleaved);   // N one past the first tile
  prefill_case<float>(rng, kDemo, 5, 80, 40, RopeLayout::half_split);     // a later block; sinks all cached
  prefill_case<float>(rng, kDemo, 20, 20, 64, RopeLayout::half_split);    // N > n: every key is a sink
  prefill_case<float>(rng, kLlama3, 17, 50, 33, RopeLayout::half_split);  // llama3 scaling, group 4
  prefill_case<bf16>(rng, kDemo, 33, 66, 40, RopeLayout::half_split);
}

TEST_CASE("cuda low-rank split-K decode with sinks matches attention_lowrank_cpu (splits inside the sinks)") {
  if (!have_cuda()) return;
  std::mt19937 rng(72);
  decode_case<float>(rng, kDemo, 1, 4, RopeLayout::half_split);        // the first token: a sink, alone
  decode_case<float>(rng, kDemo, 3, 8, RopeLayout::interleaved);       // N > n
  decode_case<float>(rng, kDemo, 97, 4, RopeLayout::half_split);       // default splits
  decode_case<float>(rng, kDemo, 97, 70, RopeLayout::half_split, 3);   // splits of 32: two of the three in the sinks
  decode_case<float>(rng, kDemo, 130, 33, RopeLayout::interleaved, 1); // one split, N across a tile
  decode_case<float>(rng, kLlama3, 65, 40, RopeLayout::half_split, 2);
  decode_case<bf16>(rng, kDemo, 100, 36, RopeLayout::half_split, 4);
}

TEST_CASE("cuda low-rank tensor-core decode with sinks matches attention_lowrank_cpu") {
  if (!have_cuda()) return;
  std::mt19937 rng(74);
  tc_decode_case(rng, kDemo, 1, 4, RopeLayout::half_split);          // the first token: a sink, alone
  tc_decode_case(rng, kDemo, 3, 8, RopeLayout::interleaved);         // N > n
  tc_decode_case(rng, kDemo, 97, 4, RopeLayout::half_split);         // N inside the first 16-key tile
  tc_decode_case(rng, kDemo, 97, 21, RopeLayout::half_split, 3);     // N across a tile; splits of 3 tiles
  tc_decode_case(rng, kDemo, 130, 33, RopeLayout::interleaved, 1);   // one split
  tc_decode_case(rng, kLlama3, 65, 40, RopeLayout::half_split, 2);
  tc_decode_case(rng, kLlama3, 300, 4, RopeLayout::interleaved);
}

// At full ranks the low-rank cache holds the keys and values exactly (c_k = U_K k with U_K orthonormal, c_v = v at
// rank head_dim with U_V = I): z equals the ordinary attention output over the full cache. The sink tokens' c_k rows
// are zeroed, so the equality holds only if their cached full keys are used, rotated at their own positions.
TEST_CASE("cuda low-rank attention at full ranks with sinks equals the full-cache attention") {
  if (!have_cuda()) return;
  std::mt19937 rng(73);
  const int nh = 4, nkv = 2, hd = 32, n_kv = 45;
  for (const int n_sink : {5, 40, 64}) {  // in a tile, across a tile boundary, every key
    for (const RopeLayout layout : {RopeLayout::half_split, RopeLayout::interleaved}) {
      CAPTURE(n_sink);
      CAPTURE(static_cast<int>(layout));
      const int ns = std::min(n_sink, n_kv);  // sink rows the cache holds
      // orthonormal U_K rows (Gram-Schmidt of seeded noise, twice) per KV head
      std::vector<float> uk(size_t(nkv) * hd * hd);
      for (int g = 0; g < nkv; ++g) {
        std::vector<double> b(size_t(hd) * hd);
        std::normal_distribution<double> nd(0.0, 1.0);
        for (double& x : b) x = nd(rng);
        for (int i = 0; i < hd; ++i)
          for (int pass = 0; pass < 2; ++pass) {
            for (int j = 0; j < i; ++j) {
              double dot = 0;
              for (int e = 0; e < hd; ++e) dot += b[size_t(i) * hd + e] * b[size_t(j) * hd + e];
              for (int e = 0; e < hd; ++e) b[size_t(i) * hd + e] -= dot * b[size_t(j) * hd + e];
            }
            double nn = 0;
            for (int e = 0; e < hd; ++e) nn += b[size_t(i) * hd + e] * b[size_t(i) * hd + e];
            for (int e = 0; e < hd; ++e) b[size_t(i) * hd + e] /= std::sqrt(nn);
          }
        for (size_t i = 0; i < b.size(); ++i) uk[size_t(g) * hd * hd + i] = float(b[i]);
      }
      const std::vector<float> k = random_f32(rng, size_t(nkv) * n_kv * hd, 1.7f);  // pre-RoPE keys
      const std::vector<float> v = random_f32(rng, size_t(nkv) * n_kv * hd, 1.0f);
      const std::vector<float> q = random_f32(rng, size_t(n_kv) * nh * hd, 2.0f);
      std::vector<float> inv(hd / 2);
      rope_inv_freq_cpu(inv.data(), hd, 10000.0f, RopeScaling{});
      // c_k = U_K k (zero for the sinks), c_v = v at rank hd, the sinks' full keys
      std::vector<float> ck(size_t(nkv) * n_kv * hd, 0.0f), ks(size_t(nkv) * n_sink * hd, 0.0f);
      for (int g = 0; g < nkv; ++g)
        for (int t = 0; t < n_kv; ++t) {
          const float* kt = k.data() + (size_t(g) * n_kv + t) * hd;
          if (t < ns) {
            std::copy_n(kt, hd, ks.data() + (size_t(g) * n_sink + t) * hd);
            continue;
          }
          for (int j = 0; j < hd; ++j) {
            double c = 0;
            for (int e = 0; e < hd; ++e) c += double(uk[(size_t(g) * hd + j) * hd + e]) * kt[e];
            ck[(size_t(g) * n_kv + t) * hd + j] = float(c);
          }
        }
      std::vector<int32_t> vrank(n_kv, hd);
      std::vector<int64_t> voff(n_kv + 1);
      for (int t = 0; t <= n_kv; ++t) voff[t] = int64_t(t) * hd;
      // the full cache: keys RoPE'd at their positions
      std::vector<float> kr = k;
      std::vector<int> pos(n_kv);
      std::iota(pos.begin(), pos.end(), 0);
      for (int g = 0; g < nkv; ++g)
        rope_cpu(kr.data() + size_t(g) * n_kv * hd, pos.data(), n_kv, 1, hd, hd, inv.data(), layout);
      DeviceBuffer dq = upload(q), dck = upload(ck), duk = upload(uk), dcv = upload(v), dvoff = upload(voff),
                   dvrank = upload(vrank), dinv = upload(inv), dks = upload(ks);
      LowRankAttentionCudaArgs<float> a;
      a.q = dq.as<float>();
      a.ck = dck.as<float>();
      a.uk = duk.as<float>();
      a.cv = dcv.as<float>();
      a.voff = dvoff.as<int64_t>();
      a.vrank = dvrank.as<int32_t>();
      a.ck_stride = n_kv;
      a.cv_stride = int64_t(n_kv) * hd;
      a.r_k = a.r_vmax = hd;
      a.n_heads = nh;
      a.n_kv_heads = nkv;
      a.head_dim = hd;
      a.inv_freq = dinv.as<float>();
      a.rope_layout = layout;
      a.k_sink = dks.as<float>();
      a.k_sink_stride = n_sink;
      a.n_sink = n_sink;
      // prefill: every query
      std::vector<float> ref(size_t(n_kv) * nh * hd);
      attention_cpu(ref.data(), q.data(), kr.data(), v.data(), n_kv, n_kv, nh, nkv, hd, n_kv);
      DeviceBuffer z(ref.size() * 4), ws(attention_lowrank_prefill_workspace_floats(n_kv, nh, hd) * 4);
      attention_lowrank_prefill_cuda<float>(z.as<float>(), a, n_kv, n_kv, ws.as<float>(), nullptr);
      check_close("full ranks + sinks prefill", download<float>(z, ref.size()), ref, kAtol, kRtol);
      // decode: the last query alone, 2 splits
      a.q = dq.as<float>() + size_t(n_kv - 1) * nh * hd;
      const std::vector<float> ref1(ref.end() - size_t(nh) * hd, ref.end());
      DeviceBuffer dpos = upload(std::vector<int>{n_kv - 1}), z1(ref1.size() * 4),
                   ws1(attention_lowrank_decode_workspace_floats(nh, hd, 2) * 4);
      attention_lowrank_decode_cuda<float>(z1.as<float>(), a, dpos.as<int>(), 2, ws1.as<float>(), nullptr);
      check_close("full ranks + sinks decode", download<float>(z1, ref1.size()), ref1, kAtol, kRtol);
    }
  }
}

// The sinks' full keys W_K x: rows at positions < N written (a block of 5 at position 2 with N = 4 writes rows
// 2, 3), later positions leave the buffer alone (a decode step at position 3 writes row 3, at 4 nothing).
TEST_CASE("cuda kv_lowrank_sink_write writes W_K x at positions < N only") {
  if (!have_cuda()) return;
  std::mt19937 rng(74);
  const int dim = 96, nkv = 2, hd = 16, n_sink = 4, kvd = nkv * hd;
  std::vector<uint16_t> wbits, xbits;
  const std::vector<float> w = random_bf16(rng, size_t(kvd) * dim, 0.2f, wbits);
  const std::vector<float> x = random_bf16(rng, size_t(5) * dim, 1.0f, xbits);
  const float sentinel = 7.0f;
  auto key = [&](int i, int row) {  // row (g, d) of W_K . x_i
    float acc = 0.0f;
    for (int e = 0; e < dim; ++e) acc += w[size_t(row) * dim + e] * x[size_t(i) * dim + e];
    return acc;
  };
  DeviceBuffer dw = upload(wbits), dx = upload(xbits);
  DeviceBuffer dks = upload(std::vector<float>(size_t(nkv) * n_sink * hd, sentinel));
  std::vector<float> ref(size_t(nkv) * n_sink * hd, sentinel);
  auto run = [&](int n, int pos0) {
    DeviceBuffer dpos = upload(std::vector<int>{pos0});
    kv_lowrank_sink_write_cuda(dks.as<float>(), dw.as<bf16>(), dx.as<bf16>(), n, dim, nkv, hd, n_sink,
                               dpos.as<int>(), nullptr);
    for (int i = 0; i < n && pos0 + i < n_sink; ++i)
      for (int g = 0; g < nkv; ++g)
        for (int d = 0; d < hd; ++d) ref[(size_t(g) * n_sink + pos0 + i) * hd + d] = key(i, g * hd + d);
    CUDA_CHECK(cudaDeviceSynchronize());
  };
  run(5, 2);
  check_close("sink write block", download<float>(dks, ref.size()), ref, 1e-5f, 1e-5f);
  CHECK(download<float>(dks, ref.size())[0] == sentinel);  // rows 0, 1 untouched
  run(1, 3);
  check_close("sink write decode", download<float>(dks, ref.size()), ref, 1e-5f, 1e-5f);
  const std::vector<float> before = download<float>(dks, ref.size());
  run(1, 4);  // past the sinks: nothing written
  CHECK(download<float>(dks, ref.size()) == before);
  run(3, 0);
  check_close("sink write from 0", download<float>(dks, ref.size()), ref, 1e-5f, 1e-5f);
}

// Checked before any CUDA call, so this case runs without a GPU too.
TEST_CASE("cuda low-rank attention: sinks without their keys are refused with a clear error") {
  LowRankAttentionCudaArgs<float> a;
  a.n_heads = 9;
  a.n_kv_heads = 3;
  a.head_dim = 64;
  a.r_k = 16;
  a.r_vmax = 64;
  float dummy = 0.0f;  // non-null pointers (never dereferenced: the check comes first)
  a.q = a.uk = a.inv_freq = &dummy;
  a.ck = a.cv = &dummy;
  const int64_t o = 0;
  const int32_t r = 1;
  a.voff = &o;
  a.vrank = &r;
  a.n_sink = 4;  // k_sink null
  CHECK_THROWS_WITH_AS(attention_lowrank_prefill_cuda<float>(nullptr, a, 1, 1, nullptr, nullptr),
                       doctest::Contains("sinks 4"), llm::Error);
  a.k_sink = &dummy;
  a.k_sink_stride = 2;  // < n_sink
  CHECK_THROWS_WITH_AS(attention_lowrank_decode_cuda<float>(nullptr, a, nullptr, 1, nullptr, nullptr),
                       doctest::Contains("k_sink_stride"), llm::Error);
}
