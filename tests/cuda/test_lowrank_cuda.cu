// The low-rank attention kernels (kernels/attention_lowrank.cu) against their CPU twin attention_lowrank_cpu on
// seeded random caches: the demo model's shape (head_dim 64, 9/3 heads, r_k 16, value ranks 16/32/64 mixed per
// token) and Llama-3-8B's (head_dim 128, 32/8 heads, r_k 32, ranks 32/64/128, llama3 RoPE scaling), both RoPE
// layouts, odd lengths, lengths crossing the 32-key tiles, the 16-query prefill blocks and the decode splits, the
// fp32 and the bf16 cache; plus a hand-computable case. Everything is fp32 on both sides (a bf16 cache is rounded
// on the host first, so the CPU twin sees the same values): only summation order, expf and sincosf differ.
// Without a GPU every case prints "SKIPPED: no CUDA device" and passes.
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

// cv_slack 5: the value blocks' stride is no multiple of 8, which the tensor-core decode kernel needs
Inputs make_inputs(std::mt19937& rng, const Shape& s, int n_q, int n_kv, int capacity, bool round_bf16,
                   int cv_slack = 5) {
  Inputs in;
  fill_inputs(in, rng, s, n_q, n_kv, capacity, cv_slack, round_bf16);
  return in;
}

std::vector<float> reference(const Inputs& in, const Shape& s, int n_q, int n_kv, RopeLayout layout) {
  const LowRankAttentionArgs a = cpu_args(in, s, n_q, n_kv, layout);
  std::vector<float> z(size_t(n_q) * s.n_heads * in.r_vmax);
  ThreadPool pool;
  attention_lowrank_cpu(z.data(), a, &pool);
  return z;
}

constexpr float kAtol = 1e-4f, kRtol = 1e-3f;  // fp32 on both sides: reordering and expf/sincosf only

template <class T>
void prefill_case(std::mt19937& rng, const Shape& s, int n_q, int n_kv, RopeLayout layout) {
  CAPTURE(s.hd);
  CAPTURE(n_q);
  CAPTURE(n_kv);
  CAPTURE(static_cast<int>(layout));
  CAPTURE(sizeof(T));
  const int capacity = n_kv + 7;
  const Inputs in = make_inputs(rng, s, n_q, n_kv, capacity, !std::is_same_v<T, float>);
  const std::vector<float> ref = reference(in, s, n_q, n_kv, layout);
  DeviceInputs<T> d;
  upload_inputs(d, in, s, layout);
  d.a.kernel = LowRankKernel::generic;  // the block program (the tensor-core kernel: tc_prefill_case)
  check_close("lowrank prefill z", prefill_z(d.a, n_q, n_kv), ref, kAtol, kRtol);
}

// splits 0: attention_lowrank_decode_splits for this device
template <class T>
void decode_case(std::mt19937& rng, const Shape& s, int n_kv, RopeLayout layout, int splits = 0) {
  CAPTURE(s.hd);
  CAPTURE(n_kv);
  CAPTURE(static_cast<int>(layout));
  CAPTURE(sizeof(T));
  const int capacity = n_kv + 40;
  const Inputs in = make_inputs(rng, s, 1, n_kv, capacity, !std::is_same_v<T, float>);
  const std::vector<float> ref = reference(in, s, 1, n_kv, layout);
  DeviceInputs<T> d;
  upload_inputs(d, in, s, layout);
  if (splits <= 0) splits = attention_lowrank_decode_splits(s.n_kv_heads, capacity, sm_count());
  CAPTURE(splits);
  d.a.kernel = LowRankKernel::generic;  // the block program (the tensor-core kernel: tc_case)
  check_close("lowrank decode z", decode_z(d.a, n_kv, splits), ref, kAtol, kRtol);
}

// The tensor-core decode kernel (kernels/attention_lowrank_tc.cu) on a bf16 cache against the CPU twin. Its
// roundings: U_K, the rebuilt RoPE'd keys and the probabilities to bf16 (8 significant bits, relative error <=
// 2^-9), the query to hi + lo bf16 (~2^-17). With these inputs (scores of standard deviation ~1.2, values in
// +-1, z a weighted mean of them) a score moves by ~1e-3 and z by a few 1e-4; kTcAtol / kTcRtol allow ~10x that,
// while any indexing or layout mistake (a wrong dim, key, rank, head or RoPE pair) moves z by ~0.1 or more.
constexpr float kTcAtol = 4e-3f, kTcRtol = 1e-2f;

void tc_case(std::mt19937& rng, const Shape& s, int n_kv, RopeLayout layout, int splits = 0) {
  CAPTURE(s.hd);
  CAPTURE(s.n_heads);
  CAPTURE(n_kv);
  CAPTURE(static_cast<int>(layout));
  const int capacity = n_kv + 40;
  const Inputs in = make_inputs(rng, s, 1, n_kv, capacity, true, 8);
  const std::vector<float> ref = reference(in, s, 1, n_kv, layout);
  DeviceInputs<bf16> d;
  upload_inputs(d, in, s, layout);
  d.a.kernel = LowRankKernel::tensor;
  REQUIRE(attention_lowrank_tc_supported(d.a));
  if (splits <= 0) splits = attention_lowrank_decode_splits(s.n_kv_heads, capacity, sm_count());
  CAPTURE(splits);
  const std::vector<float> z = decode_z(d.a, n_kv, splits);
  check_close("lowrank tensor-core decode z", z, ref, kTcAtol, kTcRtol);
  double worst = 0.0;
  for (size_t i = 0; i < z.size(); ++i) worst = std::max(worst, std::fabs(double(z[i]) - double(ref[i])));
  MESSAGE("tensor-core decode, head_dim " << s.hd << ", n_kv " << n_kv << ": max |z - cpu| = " << worst);
}

}  // namespace

TEST_CASE("cuda low-rank prefill attention matches attention_lowrank_cpu (causal, GQA, tile edges)") {
  if (!have_cuda()) return;
  std::mt19937 rng(61);
  prefill_case<float>(rng, kDemo, 70, 70, RopeLayout::half_split);    // crosses 32-key tiles and 16-query blocks
  prefill_case<float>(rng, kDemo, 5, 200, RopeLayout::interleaved);   // a short block late in the context
  prefill_case<float>(rng, kDemo, 33, 133, RopeLayout::half_split);   // a second block after 100 cached tokens
  prefill_case<float>(rng, kDemo, 1, 1, RopeLayout::half_split);      // a single key
  prefill_case<float>(rng, kDemo, 32, 32, RopeLayout::interleaved);   // exactly one tile
  prefill_case<float>(rng, kLlama3, 70, 70, RopeLayout::half_split);
  prefill_case<float>(rng, kLlama3, 17, 300, RopeLayout::interleaved);
  prefill_case<bf16>(rng, kDemo, 45, 101, RopeLayout::half_split);
  prefill_case<bf16>(rng, kLlama3, 33, 65, RopeLayout::half_split);
}

TEST_CASE("cuda low-rank split-K decode attention matches attention_lowrank_cpu (GQA, splits, long contexts)") {
  if (!have_cuda()) return;
  std::mt19937 rng(62);
  for (int n_kv : {1, 31, 32, 33, 130, 2049}) decode_case<float>(rng, kDemo, n_kv, RopeLayout::half_split);
  decode_case<float>(rng, kDemo, 777, RopeLayout::interleaved);
  for (int n_kv : {1, 65, 1000, 4097}) decode_case<float>(rng, kLlama3, n_kv, RopeLayout::half_split);
  decode_case<float>(rng, kLlama3, 333, RopeLayout::interleaved);
  decode_case<float>(rng, kLlama3, 1000, RopeLayout::half_split, 1);    // one split does everything
  decode_case<float>(rng, kLlama3, 100, RopeLayout::half_split, 200);   // most splits empty
  decode_case<float>(rng, kDemo, 97, RopeLayout::half_split, 3);        // splits ending mid-tile of the last
  decode_case<bf16>(rng, kDemo, 129, RopeLayout::half_split);
  decode_case<bf16>(rng, kLlama3, 4097, RopeLayout::half_split);
  decode_case<bf16>(rng, kLlama3, 32768, RopeLayout::half_split);      // Llama-3 at 32K, llama3 scaling
}

// The tensor-core prefill kernel against the CPU twin, with tc_case's error model. Early queries attend to a few
// keys, so z does not average the per-key errors out: a score error of ~2e-3 (std; bf16 U_K and keys) moves p by
// as much, and z by up to ~4 sigma x |c_v - z| ~ 8e-3 at the tail of half a million outputs (measured 4.5e-3 on
// the emulator); 1e-2 bounds that, while a wrong mask, key or rank moves z by 0.1 or more.
constexpr float kTcPrefillAtol = 1e-2f;
void tc_prefill_case(std::mt19937& rng, const Shape& s, int n_q, int n_kv, RopeLayout layout) {
  CAPTURE(s.hd);
  CAPTURE(s.n_heads);
  CAPTURE(n_q);
  CAPTURE(n_kv);
  CAPTURE(static_cast<int>(layout));
  const Inputs in = make_inputs(rng, s, n_q, n_kv, n_kv + 7, true, 8);
  const std::vector<float> ref = reference(in, s, n_q, n_kv, layout);
  DeviceInputs<bf16> d;
  upload_inputs(d, in, s, layout);
  d.a.kernel = LowRankKernel::tensor;
  const std::vector<float> z = prefill_z(d.a, n_q, n_kv);
  check_close("lowrank tensor-core prefill z", z, ref, kTcPrefillAtol, kTcRtol);
  double worst = 0.0;
  for (size_t i = 0; i < z.size(); ++i) worst = std::max(worst, std::fabs(double(z[i]) - double(ref[i])));
  MESSAGE("tensor-core prefill, head_dim " << s.hd << ", " << n_q << " queries over " << n_kv
                                           << " keys: max |z - cpu| = " << worst);
}

TEST_CASE("cuda low-rank tensor-core prefill matches attention_lowrank_cpu within bf16 rounding (causal, GQA)") {
  if (!have_cuda()) return;
  std::mt19937 rng(66);
  tc_prefill_case(rng, kDemo, 70, 70, RopeLayout::half_split);    // crosses 64-key tiles and 64-query blocks
  tc_prefill_case(rng, kDemo, 5, 200, RopeLayout::interleaved);   // a short block late in the context
  tc_prefill_case(rng, kDemo, 33, 133, RopeLayout::half_split);   // a second block after 100 cached tokens
  tc_prefill_case(rng, kDemo, 1, 1, RopeLayout::half_split);      // a single key
  tc_prefill_case(rng, kDemo, 64, 64, RopeLayout::interleaved);   // exactly one tile
  tc_prefill_case(rng, kLlama3, 130, 130, RopeLayout::half_split);
  tc_prefill_case(rng, kLlama3, 17, 300, RopeLayout::interleaved);
  tc_prefill_case(rng, Shape{32, 32, 128, 32, {32, 64, 128}, false, 10000.0f}, 40, 90, RopeLayout::half_split);
  tc_prefill_case(rng, Shape{16, 2, 64, 64, {16, 48, 64}, false, 10000.0f}, 100, 150, RopeLayout::interleaved);
}

TEST_CASE("cuda low-rank tensor-core decode matches attention_lowrank_cpu within bf16 rounding") {
  if (!have_cuda()) return;
  std::mt19937 rng(64);
  // tile edges (16 keys), both RoPE layouts, the default splits, one split, more splits than tiles
  for (int n_kv : {1, 15, 16, 17, 100}) tc_case(rng, kDemo, n_kv, RopeLayout::half_split);
  tc_case(rng, kDemo, 777, RopeLayout::interleaved);
  tc_case(rng, kDemo, 300, RopeLayout::half_split, 1);
  tc_case(rng, kDemo, 50, RopeLayout::half_split, 7);
  for (int n_kv : {33, 1000}) tc_case(rng, kLlama3, n_kv, RopeLayout::half_split);
  tc_case(rng, kLlama3, 333, RopeLayout::interleaved);
  tc_case(rng, kLlama3, 4097, RopeLayout::half_split);
  // multi-head attention (group 1, Llama-2-7B's shape) and a group of 8 (r_k 64)
  tc_case(rng, Shape{32, 32, 128, 32, {32, 64, 128}, false, 10000.0f}, 200, RopeLayout::half_split);
  tc_case(rng, Shape{16, 2, 64, 64, {16, 48, 64}, false, 10000.0f}, 250, RopeLayout::interleaved);
  if (cuda_emulated()) {
    MESSAGE("reduced under emulation: the 32K-key tensor-core case runs on a GPU only");
  } else {
    tc_case(rng, kLlama3, 32768, RopeLayout::half_split);
  }
}

TEST_CASE("cuda low-rank attention: the tensor-core kernels refuse what they cannot take, and say why") {
  if (!have_cuda()) return;
  std::mt19937 rng(65);
  const Inputs in = make_inputs(rng, kDemo, 1, 40, 48, true, 8);
  DeviceInputs<bf16> d;
  upload_inputs(d, in, kDemo, RopeLayout::half_split);
  d.a.kernel = LowRankKernel::tensor;
  REQUIRE(attention_lowrank_tc_supported(d.a));
  const int splits = 2;
  DeviceBuffer dpos = upload(std::vector<int>{39}), z(size_t(kDemo.n_heads) * in.r_vmax * 4),
               ws(attention_lowrank_decode_workspace_floats(kDemo.n_heads, in.r_vmax, splits) * 4);
  auto run = [&](const LowRankAttentionCudaArgs<bf16>& a) {
    attention_lowrank_decode_cuda<bf16>(z.as<float>(), a, dpos.as<int>(), splits, ws.as<float>(), nullptr);
  };
  LowRankAttentionCudaArgs<bf16> a = d.a;
  a.v_align = 4;  // ranks that may not be multiples of 8
  CHECK_THROWS_WITH_AS(run(a), doctest::Contains("multiple of 8"), llm::Error);
  CHECK_THROWS_WITH_AS(attention_lowrank_prefill_cuda<bf16>(z.as<float>(), a, 1, 40, ws.as<float>(), nullptr),
                       doctest::Contains("prefill_cuda: the tensor-core kernel cannot take"), llm::Error);
  a = d.a;
  a.cv_stride -= 3;
  CHECK_THROWS_WITH_AS(run(a), doctest::Contains("cv_stride"), llm::Error);
  a = d.a;
  a.window = 4;  // r_vmax 64 == head_dim, as window= needs; any device pointers: refused before they are read
  a.k_win = a.v_win = a.k_new = a.v_new = d.a.uk;
  CHECK_THROWS_WITH_AS(run(a), doctest::Contains("window="), llm::Error);
  a = d.a;
  a.r_k = 8;
  CHECK_THROWS_WITH_AS(run(a), doctest::Contains("key rank 8"), llm::Error);
  // automatic falls back to the block program for the same arguments, with the same result as generic
  a = d.a;
  a.v_align = 4;
  a.kernel = LowRankKernel::automatic;
  CHECK_FALSE(attention_lowrank_tc_supported(a));
  run(a);
  const std::vector<float> z_auto = download<float>(z, size_t(kDemo.n_heads) * in.r_vmax);
  a.kernel = LowRankKernel::generic;
  run(a);
  check_close("automatic = generic when the tensor-core kernel cannot run", z_auto,
              download<float>(z, size_t(kDemo.n_heads) * in.r_vmax), 0.0f, 0.0f);
  LowRankAttentionCudaArgs<float> af;
  af.head_dim = 64;
  af.n_heads = 9;
  af.n_kv_heads = 3;
  af.r_k = af.r_vmax = 16;
  af.q = d.a.q;
  af.uk = d.a.uk;
  af.inv_freq = d.a.inv_freq;
  af.voff = d.a.voff;
  af.vrank = d.a.vrank;
  af.ck = af.cv = d.a.uk;
  af.kernel = LowRankKernel::tensor;
  CHECK_THROWS_WITH_AS(
      attention_lowrank_decode_cuda<float>(z.as<float>(), af, dpos.as<int>(), splits, ws.as<float>(), nullptr),
      doctest::Contains("bf16"), llm::Error);
}

// head_dim 2, one head, r_k 1, U_K = [1 0], inv_freq = pi/2: key 0 = (c0, 0) unrotated, key 1 = (c1, 0) rotated
// by pi/2 = (0, c1). Query 1 = (0, 1) scores s0 = 0, s1 = c1 / sqrt(2) = ln 3 with c1 = ln(3) sqrt(2), so
// p = (1/4, 3/4). Values: token 0 rank 1 (4), token 1 rank 2 (8, 4): z1 = (1 + 6, 0 + 3) = (7, 3). Query 0 sees
// only key 0: z0 = pad(c_v,0) = (4, 0).
TEST_CASE("cuda low-rank attention: hand-computed case") {
  if (!have_cuda()) return;
  const float c1 = std::log(3.0f) * std::sqrt(2.0f);
  const std::vector<float> q = {0.5f, -2.0f, 0.0f, 1.0f}, ck = {0.25f, c1}, uk = {1.0f, 0.0f},
                           cv = {4.0f, 8.0f, 4.0f}, inv = {1.5707963267948966f};
  const std::vector<int64_t> voff = {0, 1, 3};
  const std::vector<int32_t> vrank = {1, 2};
  DeviceBuffer dq = upload(q), dck = upload(ck), duk = upload(uk), dcv = upload(cv), dinv = upload(inv),
               dvoff = upload(voff), dvrank = upload(vrank), z(4 * 4), ws(64 * 4);
  LowRankAttentionCudaArgs<float> a;
  a.q = dq.as<float>();
  a.ck = dck.as<float>();
  a.uk = duk.as<float>();
  a.cv = dcv.as<float>();
  a.voff = dvoff.as<int64_t>();
  a.vrank = dvrank.as<int32_t>();
  a.ck_stride = 2;
  a.cv_stride = 3;
  a.r_k = 1;
  a.r_vmax = 2;
  a.n_heads = a.n_kv_heads = 1;
  a.head_dim = 2;
  a.inv_freq = dinv.as<float>();
  attention_lowrank_prefill_cuda<float>(z.as<float>(), a, 2, 2, ws.as<float>(), nullptr);
  check_close("hand prefill", download<float>(z, 4), {4.0f, 0.0f, 7.0f, 3.0f}, 1e-5f, 1e-5f);
  a.q = dq.as<float>() + 2;  // query 1 alone, at position 1
  const std::vector<int> pos = {1};
  DeviceBuffer dpos = upload(pos);
  attention_lowrank_decode_cuda<float>(z.as<float>(), a, dpos.as<int>(), 2, ws.as<float>(), nullptr);
  check_close("hand decode", download<float>(z, 2), {7.0f, 3.0f}, 1e-5f, 1e-5f);
}

// The cache write (kv_lowrank_write_cuda) against the CPU engine's loop (engine/kv_lowrank.cpp
// kv_lowrank_attention: rope_cpu on q, c_k copied to its row, c_v = U_V[:, :r_t]^T v at voff): whole cache buffers
// compared, so a write outside the new tokens' rows and ranks shows up as a changed sentinel.
template <class T>
void write_case(std::mt19937& rng, const Shape& s, int n, int pos0, RopeLayout layout) {
  CAPTURE(s.hd);
  CAPTURE(n);
  CAPTURE(pos0);
  CAPTURE(sizeof(T));
  const int cap = pos0 + n + 9, rv = shape_r_vmax(s), nkv = s.n_kv_heads;
  std::uniform_int_distribution<int> pick(0, int(s.ranks.size()) - 1);
  std::vector<int32_t> vrank(cap);
  std::vector<int64_t> voff(cap + 1, 0);
  for (int t = 0; t < cap; ++t) {
    vrank[t] = s.ranks[pick(rng)];
    voff[t + 1] = voff[t] + vrank[t];
  }
  const int64_t cvs = voff[cap];
  std::vector<float> q = random_f32(rng, size_t(n) * s.n_heads * s.hd, 2.0f);
  std::vector<float> kc = random_f32(rng, size_t(n) * nkv * s.r_k, 1.0f);
  std::vector<float> v = random_f32(rng, size_t(n) * nkv * s.hd, 1.0f);
  std::vector<float> uv = random_f32(rng, size_t(nkv) * rv * s.hd, 0.2f);
  std::vector<float> inv(s.hd / 2);
  rope_inv_freq_cpu(inv.data(), s.hd, s.theta, RopeScaling{});
  const float sentinel = 7.0f;  // bf16-exact
  std::vector<float> ck_ref(size_t(nkv) * cap * s.r_k, sentinel), cv_ref(size_t(nkv) * cvs, sentinel);
  std::vector<float> q_ref = q;
  std::vector<int> pos(n);
  std::iota(pos.begin(), pos.end(), pos0);
  rope_cpu(q_ref.data(), pos.data(), n, s.n_heads, s.hd, int64_t(s.n_heads) * s.hd, inv.data(), layout);
  for (int i = 0; i < n; ++i)
    for (int g = 0; g < nkv; ++g) {
      const int t = pos0 + i;
      for (int j = 0; j < s.r_k; ++j)
        ck_ref[(size_t(g) * cap + t) * s.r_k + j] = kc[(size_t(i) * nkv + g) * s.r_k + j];
      for (int j = 0; j < vrank[t]; ++j) {
        float acc = 0.0f;
        for (int d = 0; d < s.hd; ++d) acc += uv[(size_t(g) * rv + j) * s.hd + d] * v[(size_t(i) * nkv + g) * s.hd + d];
        cv_ref[size_t(g) * cvs + voff[t] + j] = acc;
      }
    }
  DeviceBuffer dq = upload(q), dkc = upload(kc), dv = upload(v), duv = upload(uv), dinv = upload(inv),
               dvoff = upload(voff), dvrank = upload(vrank), dpos = upload(std::vector<int>{pos0}),
               dck = upload(to_cache_dtype<T>(std::vector<float>(ck_ref.size(), sentinel))),
               dcv = upload(to_cache_dtype<T>(std::vector<float>(cv_ref.size(), sentinel)));
  kv_lowrank_write_cuda<T>(dq.as<float>(), dkc.as<float>(), dv.as<float>(), duv.as<float>(), dck.as<T>(),
                           dcv.as<T>(), dvoff.as<int64_t>(), dvrank.as<int32_t>(), cap, cvs, n, s.n_heads, nkv,
                           s.hd, s.r_k, rv, dinv.as<float>(), layout, dpos.as<int>(), nullptr);
  check_close("write q", download<float>(dq, q.size()), q_ref, 1e-5f, 1e-5f);
  if constexpr (std::is_same_v<T, float>) {
    check_close("write ck", download<float>(dck, ck_ref.size()), ck_ref, 0.0f, 0.0f);
    check_close("write cv", download<float>(dcv, cv_ref.size()), cv_ref, 1e-5f, 1e-5f);
  } else {
    check_close("write ck bf16", download_bf16(dck, ck_ref.size()), ck_ref, 0.0f, 4e-3f);
    check_close("write cv bf16", download_bf16(dcv, cv_ref.size()), cv_ref, 1e-6f, 8e-3f);
  }
}

TEST_CASE("cuda low-rank cache write matches the CPU engine's (RoPE on q, c_k rows, c_v at each rank)") {
  if (!have_cuda()) return;
  std::mt19937 rng(63);
  write_case<float>(rng, kDemo, 5, 37, RopeLayout::half_split);  // a prefill block
  write_case<float>(rng, kDemo, 1, 100, RopeLayout::interleaved);  // a decode step
  write_case<float>(rng, kLlama3, 7, 0, RopeLayout::half_split);
  write_case<bf16>(rng, kLlama3, 1, 4000, RopeLayout::half_split);
  write_case<bf16>(rng, kDemo, 33, 3, RopeLayout::interleaved);
}

// The shape checks run before any CUDA call, so this case runs without a GPU too.
TEST_CASE("cuda low-rank attention: bad shapes are refused with a clear error") {
  LowRankAttentionCudaArgs<float> a;  // null pointers
  a.n_heads = 9;
  a.n_kv_heads = 3;
  a.head_dim = 64;
  a.r_k = 16;
  a.r_vmax = 65;  // > head_dim
  CHECK_THROWS_WITH_AS(attention_lowrank_prefill_cuda<float>(nullptr, a, 1, 1, nullptr, nullptr),
                       doctest::Contains("ranks"), llm::Error);
  a.r_vmax = 64;
  a.n_kv_heads = 2;
  CHECK_THROWS_WITH_AS(attention_lowrank_decode_cuda<float>(nullptr, a, nullptr, 1, nullptr, nullptr),
                       doctest::Contains("multiple"), llm::Error);
}
