// The unified-cache attention kernel (kernels/attention_lowrank_quant.cu) against its CPU twin
// attention_lowrank_quant_cpu on seeded random caches: the demo model's shape (head_dim 64, 9/3 heads, r_k 16,
// value ranks 16/32/64) and Llama-3-8B's (head_dim 128, 32/8 heads, r_k 32, ranks 32/64/128, llama3 RoPE
// scaling); widths 2/4/8/16 and ranks drawn per entry and KV head; positions with gaps (as eviction leaves them);
// entry counts crossing the 32-entry tiles, the 16-query blocks and the splits; rank-row groups 32, 12 (a tail
// group) and 0 (one group a row); the 16-bit class as fp32 (the CPU cache uploaded as is) and as bf16. Both sides
// read the same bytes, so only summation order, expf and sincosf differ. Plus a hand-computable case (whose CPU
// half runs everywhere). Without a GPU the CUDA halves print "SKIPPED: no CUDA device" and pass.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "cuda_test_util.cuh"
#include "lowrank_test_util.cuh"
#include "kernels/attention_lowrank_quant_cuda.h"
#include "kernels/ops_cpu.h"
#include "kernels/quant_cpu.h"
#include "kernels/threadpool_cpu.h"

using namespace llm;
using namespace llm_cuda_test;
using namespace llm_lowrank_test;

namespace {

// A layer of the unified cache in the CPU's layout (one byte vector per KV head, 16-bit rows as fp32).
struct Cache {
  int r_vmax = 0, n_kv = 0, n_q = 0, group = 0;
  std::vector<std::vector<uint8_t>> data;
  std::vector<std::vector<uint64_t>> off;
  std::vector<std::vector<uint8_t>> bits;
  std::vector<std::vector<uint16_t>> vrank;
  std::vector<int32_t> pos;
  std::vector<float> q, uk, inv_freq;
};

float round_bf16(float x) { return bf16_to_f32(f32_to_bf16(x)); }

// round16: the source values are bf16-representable, so a bf16 16-bit class holds exactly what the CPU's fp32 does.
Cache make_cache(std::mt19937& rng, const Shape& s, int n_q, int n_kv, int group, bool round16) {
  Cache c;
  c.r_vmax = shape_r_vmax(s);
  c.n_kv = n_kv;
  c.n_q = n_q;
  c.group = group;
  std::uniform_int_distribution<int> pick_rank(0, int(s.ranks.size()) - 1), pick_bits(0, 3), gap(1, 6);
  std::uniform_real_distribution<float> u01(0.0f, 1.0f), u1(-1.0f, 1.0f);
  const int widths[4] = {2, 4, 8, 16};
  c.pos.resize(n_kv);
  for (int e = 0, p = 0; e < n_kv; ++e) {  // ascending with gaps: evicted tokens between kept ones
    c.pos[e] = p;
    p += u01(rng) < 0.25f ? gap(rng) : 1;
  }
  c.data.resize(s.n_kv_heads);
  c.off.resize(s.n_kv_heads);
  c.bits.resize(s.n_kv_heads);
  c.vrank.resize(s.n_kv_heads);
  std::vector<float> x(size_t(s.r_k) + c.r_vmax);
  for (int g = 0; g < s.n_kv_heads; ++g)
    for (int e = 0; e < n_kv; ++e) {
      const int w = widths[pick_bits(rng)], r = s.ranks[pick_rank(rng)];
      for (float& v : x) v = round16 ? round_bf16(u1(rng)) : u1(rng);
      const size_t nk = quant_rank_row_bytes(s.r_k, w, group), nv = quant_rank_row_bytes(r, w, group);
      std::vector<uint8_t>& d = c.data[g];
      c.off[g].push_back(d.size());
      c.bits[g].push_back(uint8_t(w));
      c.vrank[g].push_back(uint16_t(r));
      d.resize(d.size() + nk + nv);
      quantize_rank_row_cpu(d.data() + c.off[g][e], x.data(), s.r_k, w, group);
      quantize_rank_row_cpu(d.data() + c.off[g][e] + nk, x.data() + s.r_k, r, w, group);
    }
  make_queries_basis(rng, s, n_q, c.q, c.uk, c.inv_freq);
  return c;
}

std::vector<float> reference(const Cache& c, const Shape& s, RopeLayout layout) {
  std::vector<const uint8_t*> data, bits;
  std::vector<const uint64_t*> off;
  std::vector<const uint16_t*> vrank;
  for (int g = 0; g < s.n_kv_heads; ++g) {
    data.push_back(c.data[g].data());
    off.push_back(c.off[g].data());
    bits.push_back(c.bits[g].data());
    vrank.push_back(c.vrank[g].data());
  }
  LowRankQuantAttentionArgs a;
  a.q = c.q.data();
  a.data = data.data();
  a.off = off.data();
  a.bits = bits.data();
  a.vrank = vrank.data();
  a.pos = c.pos.data();
  a.uk = c.uk.data();
  a.r_k = s.r_k;
  a.r_vmax = c.r_vmax;
  a.group = c.group;
  a.n_q = c.n_q;
  a.n_kv = c.n_kv;
  a.n_heads = s.n_heads;
  a.n_kv_heads = s.n_kv_heads;
  a.head_dim = s.hd;
  a.inv_freq = c.inv_freq.data();
  a.rope_layout = layout;
  std::vector<float> z(size_t(c.n_q) * s.n_heads * c.r_vmax);
  ThreadPool pool;
  attention_lowrank_quant_cpu(z.data(), a, &pool);
  return z;
}

// The device layout: every KV head's rows in one buffer (16-bit rows rewritten as bf16 when row16 == 2), per-head
// arrays at a stride larger than n_kv (capacity slack, as a growing decode cache has).
struct DeviceCache {
  DeviceBuffer q, data, off, bits, vrank, pos, uk, inv, n_kv;
  LowRankQuantDecodeArgs a;
};
void upload_cache(DeviceCache& d, const Cache& c, const Shape& s, int row16, RopeLayout layout) {
  const int stride = c.n_kv + 9;
  std::vector<uint8_t> data;
  std::vector<uint64_t> off(size_t(s.n_kv_heads) * stride, 0);
  std::vector<uint8_t> bits(off.size(), 16);
  std::vector<uint16_t> vrank(off.size(), 1);
  std::vector<int32_t> pos(stride, 0);
  std::copy(c.pos.begin(), c.pos.end(), pos.begin());
  for (int g = 0; g < s.n_kv_heads; ++g)
    for (int e = 0; e < c.n_kv; ++e) {
      const size_t k = size_t(g) * stride + e;
      const int w = c.bits[g][e], r = c.vrank[g][e];
      const uint8_t* row = c.data[g].data() + c.off[g][e];
      off[k] = data.size();
      bits[k] = uint8_t(w);
      vrank[k] = uint16_t(r);
      if (w == 16 && row16 == 2) {
        for (int j = 0; j < s.r_k + r; ++j) {
          float v;
          std::memcpy(&v, row + size_t(j) * 4, 4);
          const uint16_t b = f32_to_bf16(v);  // exact: the values are bf16-representable
          data.push_back(uint8_t(b & 0xff));
          data.push_back(uint8_t(b >> 8));
        }
      } else {
        const size_t n = quant_rank_row_bytes(s.r_k, w, c.group) + quant_rank_row_bytes(r, w, c.group);
        data.insert(data.end(), row, row + n);
      }
    }
  data.resize(data.size() + 3);  // a buffer of at least one byte even for n_kv = 0
  d.q = upload(c.q);
  d.data = upload(data);
  d.off = upload(off);
  d.bits = upload(bits);
  d.vrank = upload(vrank);
  d.pos = upload(pos);
  d.uk = upload(c.uk);
  d.inv = upload(c.inv_freq);
  d.n_kv = upload(std::vector<int>{c.n_kv});
  d.a.q = d.q.as<float>();
  d.a.data = d.data.as<uint8_t>();
  d.a.off = d.off.as<uint64_t>();
  d.a.bits = d.bits.as<uint8_t>();
  d.a.vrank = d.vrank.as<uint16_t>();
  d.a.pos = d.pos.as<int32_t>();
  d.a.uk = d.uk.as<float>();
  d.a.inv_freq = d.inv.as<float>();
  d.a.n_kv = d.n_kv.as<int>();
  d.a.stride = stride;
  d.a.n_q = c.n_q;
  d.a.n_heads = s.n_heads;
  d.a.n_kv_heads = s.n_kv_heads;
  d.a.head_dim = s.hd;
  d.a.r_k = s.r_k;
  d.a.r_vmax = c.r_vmax;
  d.a.group = c.group;
  d.a.row16 = row16;
  d.a.rope_layout = layout;
}

constexpr float kAtol = 1e-4f, kRtol = 1e-3f;  // the same bytes on both sides: reordering and expf/sincosf only

struct Case {
  int n_q = 1, n_kv = 1, group = 32, row16 = 4, splits = 0;  // splits 0: attention_lowrank_quant_splits
  RopeLayout layout = RopeLayout::half_split;
};

void run_case(std::mt19937& rng, const Shape& s, const Case& k) {
  CAPTURE(s.hd);
  CAPTURE(k.n_q);
  CAPTURE(k.n_kv);
  CAPTURE(k.group);
  CAPTURE(k.row16);
  CAPTURE(static_cast<int>(k.layout));
  const Cache c = make_cache(rng, s, k.n_q, k.n_kv, k.group, k.row16 == 2);
  const std::vector<float> ref = reference(c, s, k.layout);
  DeviceCache d;
  upload_cache(d, c, s, k.row16, k.layout);
  const int splits = k.splits > 0 ? k.splits : attention_lowrank_quant_splits(s.n_kv_heads, d.a.stride, sm_count());
  CAPTURE(splits);
  DeviceBuffer z(ref.size() * 4),
      ws(attention_lowrank_quant_workspace_floats(k.n_q, s.n_heads, c.r_vmax, splits) * 4);
  attention_lowrank_quant_cuda(z.as<float>(), d.a, splits, ws.as<float>(), nullptr);
  check_close("lowrank quant z", download<float>(z, ref.size()), ref, kAtol, kRtol);
}

}  // namespace

TEST_CASE("cuda unified-cache decode matches attention_lowrank_quant_cpu (demo shape: widths, gaps, tiles, splits)") {
  if (!have_cuda()) return;
  std::mt19937 rng(71);
  for (int n_kv : {1, 31, 32, 33, 130, 2049}) run_case(rng, kDemo, {1, n_kv});
  run_case(rng, kDemo, {1, 777, 32, 4, 0, RopeLayout::interleaved});
  run_case(rng, kDemo, {1, 300, 12});      // tail groups: r_k 16 = 12 + 4, rank 64 = 5 * 12 + 4
  run_case(rng, kDemo, {1, 300, 0});       // one group a row
  run_case(rng, kDemo, {1, 515, 32, 2});   // the 16-bit class as bf16
  run_case(rng, kDemo, {1, 97, 32, 4, 3}); // splits ending mid-tile of the last
}

TEST_CASE("cuda unified-cache decode matches attention_lowrank_quant_cpu (Llama-3-8B shape)") {
  if (!have_cuda()) return;
  std::mt19937 rng(72);
  for (int n_kv : {1, 65, 1000, 4097}) run_case(rng, kLlama3, {1, n_kv});
  run_case(rng, kLlama3, {1, 333, 32, 4, 0, RopeLayout::interleaved});
  run_case(rng, kLlama3, {1, 1000, 32, 4, 1});    // one split does everything
  run_case(rng, kLlama3, {1, 100, 32, 4, 200});   // most splits empty
  run_case(rng, kLlama3, {1, 4097, 32, 2});       // bf16 16-bit class
  run_case(rng, kLlama3, {1, 700, 20, 2});        // tail groups + bf16
}

TEST_CASE("cuda unified-cache attention with several queries (causal over entries, 16-query blocks)") {
  if (!have_cuda()) return;
  std::mt19937 rng(73);
  run_case(rng, kDemo, {20, 70});                             // crosses 32-entry tiles and 16-query blocks
  run_case(rng, kDemo, {5, 200, 32, 4, 0, RopeLayout::interleaved});
  run_case(rng, kDemo, {33, 33, 32, 4, 4});                   // every entry is a query's own, several splits
  run_case(rng, kLlama3, {17, 300});
  run_case(rng, kLlama3, {3, 65, 0, 2, 2});
}

// head_dim 2, one head, r_k 1, U_K = [1 0], inv_freq = pi/2. Entry 0 (position 0, 2 bits): c_k = 0.25, c_v = (4)
// rank 1, both exact at 2 bits (a one-value group has scale 0). Entry 1 (position 5 after 4 evicted tokens, 16
// bits): c_k = c1, c_v = (8, 4) rank 2; its key (c1, 0) is rotated by 5 pi/2 to (0, c1). Query 1 = (0, 1) scores
// s0 = 0, s1 = c1 / sqrt(2) = ln 3 with c1 = ln(3) sqrt(2): p = (1/4, 3/4), z1 = (1 + 6, 0 + 3) = (7, 3). Query 0
// sees only entry 0: z0 = (4, 0).
TEST_CASE("cuda unified-cache attention: hand-computed case (gap in positions, mixed widths and ranks)") {
  const float c1 = std::log(3.0f) * std::sqrt(2.0f);
  const std::vector<float> q = {0.5f, -2.0f, 0.0f, 1.0f}, uk = {1.0f, 0.0f}, inv = {1.5707963267948966f};
  const float k0 = 0.25f, v0 = 4.0f, v1[2] = {8.0f, 4.0f};
  std::vector<uint8_t> data(quant_rank_row_bytes(1, 2, 32) * 2 + quant_rank_row_bytes(1, 16, 32) +
                            quant_rank_row_bytes(2, 16, 32));
  const uint64_t o1 = quant_rank_row_bytes(1, 2, 32) * 2;
  quantize_rank_row_cpu(data.data(), &k0, 1, 2, 32);
  quantize_rank_row_cpu(data.data() + quant_rank_row_bytes(1, 2, 32), &v0, 1, 2, 32);
  quantize_rank_row_cpu(data.data() + o1, &c1, 1, 16, 32);
  quantize_rank_row_cpu(data.data() + o1 + quant_rank_row_bytes(1, 16, 32), v1, 2, 16, 32);
  const std::vector<uint64_t> off = {0, o1};
  const std::vector<uint8_t> bits = {2, 16};
  const std::vector<uint16_t> vrank = {1, 2};
  const std::vector<int32_t> pos = {0, 5};
  const std::vector<float> expect = {4.0f, 0.0f, 7.0f, 3.0f};

  // the CPU twin first (runs on every machine): the hand values are right for the semantics both sides share
  const uint8_t* hd_data = data.data();
  const uint64_t* hd_off = off.data();
  const uint8_t* hd_bits = bits.data();
  const uint16_t* hd_vrank = vrank.data();
  LowRankQuantAttentionArgs c;
  c.q = q.data();
  c.data = &hd_data;
  c.off = &hd_off;
  c.bits = &hd_bits;
  c.vrank = &hd_vrank;
  c.pos = pos.data();
  c.uk = uk.data();
  c.r_k = 1;
  c.r_vmax = 2;
  c.group = 32;
  c.n_q = c.n_kv = 2;
  c.n_heads = c.n_kv_heads = 1;
  c.head_dim = 2;
  c.inv_freq = inv.data();
  std::vector<float> zc(4);
  attention_lowrank_quant_cpu(zc.data(), c);
  for (int i = 0; i < 4; ++i) CHECK(zc[i] == doctest::Approx(expect[i]).epsilon(1e-5));

  if (!have_cuda()) return;
  DeviceBuffer dq = upload(q), duk = upload(uk), dinv = upload(inv), ddata = upload(data), doff = upload(off),
               dbits = upload(bits), dvrank = upload(vrank), dpos = upload(pos),
               dn = upload(std::vector<int>{2}), z(4 * 4), ws(64 * 4);
  LowRankQuantDecodeArgs a;
  a.q = dq.as<float>();
  a.data = ddata.as<uint8_t>();
  a.off = doff.as<uint64_t>();
  a.bits = dbits.as<uint8_t>();
  a.vrank = dvrank.as<uint16_t>();
  a.pos = dpos.as<int32_t>();
  a.uk = duk.as<float>();
  a.inv_freq = dinv.as<float>();
  a.n_kv = dn.as<int>();
  a.stride = 2;
  a.n_q = 2;
  a.n_heads = a.n_kv_heads = 1;
  a.head_dim = 2;
  a.r_k = 1;
  a.r_vmax = 2;
  a.group = 32;
  a.row16 = 4;
  attention_lowrank_quant_cuda(z.as<float>(), a, 2, ws.as<float>(), nullptr);
  check_close("hand, two queries", download<float>(z, 4), expect, 1e-5f, 1e-5f);
  a.q = dq.as<float>() + 2;  // query 1 alone (decode of the last entry)
  a.n_q = 1;
  attention_lowrank_quant_cuda(z.as<float>(), a, 2, ws.as<float>(), nullptr);
  check_close("hand decode", download<float>(z, 2), {7.0f, 3.0f}, 1e-5f, 1e-5f);
}

// The argument checks run before any CUDA call, so this case runs without a GPU too.
TEST_CASE("cuda unified-cache attention: bad arguments are refused with a clear error") {
  LowRankQuantDecodeArgs a;  // null pointers
  a.n_heads = 9;
  a.n_kv_heads = 3;
  a.head_dim = 64;
  a.r_k = 16;
  a.r_vmax = 65;  // > head_dim
  a.stride = 10;
  CHECK_THROWS_WITH_AS(attention_lowrank_quant_cuda(nullptr, a, 1, nullptr, nullptr), doctest::Contains("ranks"),
                       llm::Error);
  a.r_vmax = 64;
  a.n_kv_heads = 2;
  CHECK_THROWS_WITH_AS(attention_lowrank_quant_cuda(nullptr, a, 1, nullptr, nullptr), doctest::Contains("multiple"),
                       llm::Error);
  a.n_kv_heads = 3;
  a.row16 = 3;
  CHECK_THROWS_WITH_AS(attention_lowrank_quant_cuda(nullptr, a, 1, nullptr, nullptr), doctest::Contains("row16"),
                       llm::Error);
  a.row16 = 4;
  CHECK_THROWS_WITH_AS(attention_lowrank_quant_cuda(nullptr, a, 0, nullptr, nullptr), doctest::Contains("splits"),
                       llm::Error);
  CHECK_THROWS_WITH_AS(attention_lowrank_quant_cuda(nullptr, a, 1, nullptr, nullptr), doctest::Contains("null"),
                       llm::Error);
}
