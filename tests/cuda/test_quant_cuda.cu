// The mixed-precision KV kernels of issue 7 against their CPU twins (kernels/quant_cpu.h): row packing (byte for
// byte), dequantisation, decode attention over a mixed 2/4/8/16-bit packed cache, and the importance accumulators
// of prefill. Shapes: the demo model's heads (9/3, head_dim 64), Llama-2-7B's (32/32, 128) and Llama-3-8B's
// (32/8, 128); odd lengths and lengths that cross the 32-entry tiles and the splits; plus hand-computable cases.
// Without a GPU every case prints "SKIPPED: no CUDA device" and passes.
#include <algorithm>
#include <cstring>
#include <sstream>

#include "cuda_test_util.cuh"
#include "kernels/attention_quant_cuda.h"
#include "kernels/importance_cuda.h"
#include "kernels/quant_cpu.h"
#include "kernels/quant_cuda.h"

using namespace llm;
using namespace llm_cuda_test;

namespace {

const int kWidths[4] = {2, 4, 8, 16};

// Rows of n random values with a few special rows: constant (scale 0), +0/-0 mixed, a wide range, an outlier.
std::vector<float> random_rows(std::mt19937& rng, int rows, int n) {
  std::vector<float> x = random_f32(rng, size_t(rows) * n, 2.0f);
  for (int r = 0; r < rows; ++r) {
    float* row = x.data() + size_t(r) * n;
    switch (r % 7) {
      case 3: std::fill(row, row + n, 0.75f); break;
      case 4:
        for (int i = 0; i < n; ++i) row[i] = i % 2 ? -0.0f : 0.0f;
        break;
      case 5: row[n / 2] = 300.0f; break;
      default: break;
    }
  }
  return x;
}

// A packed layout: per-row widths and byte offsets (rows back to back), with row16 bytes a 16-bit value.
struct Packed {
  std::vector<uint8_t> bits;
  std::vector<uint64_t> off;
  size_t bytes = 0;
};
Packed pack_layout(std::mt19937& rng, int rows, int n, int group, int row16) {
  Packed p;
  for (int r = 0; r < rows; ++r) {
    const int b = kWidths[rng() % 4];
    p.bits.push_back(uint8_t(b));
    p.off.push_back(p.bytes);
    p.bytes += quant_row_bytes_cuda(n, b, group, row16);
  }
  return p;
}

// quantize_rows_cuda's arguments for n_rows rows of n values, read x_stride = n apart (src_row: none).
QuantRowsArgs rows_args(uint8_t* dst, const uint64_t* dst_off, const uint8_t* bits, int n_rows, int n, int group,
                        int row16) {
  QuantRowsArgs a;
  a.dst = dst;
  a.dst_off = dst_off;
  a.bits = bits;
  a.x_stride = n;
  a.n_rows = n_rows;
  a.n = n;
  a.group = group;
  a.row16 = row16;
  return a;
}

// Index of the first byte where got and ref differ; got.size() when none does.
size_t first_differing_byte(const std::vector<uint8_t>& got, const std::vector<uint8_t>& ref) {
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != ref[i]) return i;
  return got.size();
}

// Where byte i lies in a packed layout, and the bytes of its row around it (for the failure message).
std::string describe_byte(size_t i, const Packed& p, const std::vector<uint8_t>& got, const std::vector<uint8_t>& ref,
                          const float* x, const int* src, int n, int group) {
  if (i >= got.size()) return "no difference";
  int r = 0;
  while (r + 1 < int(p.off.size()) && p.off[r + 1] <= i) ++r;
  std::ostringstream o;
  const size_t in = i - p.off[r];
  o << "row " << r << " (" << int(p.bits[r]) << " bits) byte " << in << ":";
  const size_t b0 = in >= 8 ? in - 8 : 0;
  o << " got";
  for (size_t k = b0; k < in + 8 && p.off[r] + k < got.size(); ++k) o << ' ' << int(got[p.off[r] + k]);
  o << " | ref";
  for (size_t k = b0; k < in + 8 && p.off[r] + k < ref.size(); ++k) o << ' ' << int(ref[p.off[r] + k]);
  if (p.bits[r] != 16) {
    const size_t gb = 4 + size_t(group) * p.bits[r] / 8;
    const int gi = int(in / gb);
    const float* xg = x + size_t(src ? src[r] : r) * n + size_t(gi) * group;
    o << " | group " << gi << " inputs";
    for (int k = 0; k < group; ++k) o << ' ' << xg[k];
  }
  return o.str();
}

// attention_quant_decode_cuda's arguments over a flat device cache of stride entries a KV head.
QuantDecodeArgs decode_args(const DeviceBuffer& q, const DeviceBuffer& data, const DeviceBuffer& off,
                            const DeviceBuffer& bits, const DeviceBuffer& n_kv, int stride, int n_q, int n_heads,
                            int n_kv_heads, int hd, int group, int row16) {
  QuantDecodeArgs a;
  a.q = q.as<bf16>();
  a.data = data.as<uint8_t>();
  a.off = off.as<uint64_t>();
  a.bits = bits.as<uint8_t>();
  a.n_kv = n_kv.as<int>();
  a.stride = stride;
  a.n_q = n_q;
  a.n_heads = n_heads;
  a.n_kv_heads = n_kv_heads;
  a.head_dim = hd;
  a.group = group;
  a.row16 = row16;
  return a;
}

}  // namespace

TEST_CASE("cuda quantize_rows packs rows byte for byte as quantize_row_cpu (fp32 and bf16 inputs, all widths)") {
  if (!have_cuda()) return;
  std::mt19937 rng(71);
  for (auto [n, group] : {std::pair{64, 32}, {128, 32}, {64, 64}, {128, 4}, {64, 8}, {128, 128}}) {
    CAPTURE(n);
    CAPTURE(group);
    const int rows = 57;  // odd; every special row kind occurs
    std::vector<float> x = random_rows(rng, rows, n);
    // fp32 input, CPU layout (16-bit class as fp32): identical bytes
    const Packed p = pack_layout(rng, rows, n, group, 4);
    std::vector<uint8_t> ref(p.bytes, 0);
    for (int r = 0; r < rows; ++r) quantize_row_cpu(ref.data() + p.off[r], x.data() + size_t(r) * n, n, p.bits[r], group);
    DeviceBuffer dx = upload(x), doff = upload(p.off), dbits = upload(p.bits), ddst(p.bytes);
    CUDA_CHECK(cudaMemset(ddst.ptr, 0xAB, p.bytes));  // every byte must be written
    QuantRowsArgs a = rows_args(ddst.as<uint8_t>(), doff.as<uint64_t>(), dbits.as<uint8_t>(), rows, n, group, 4);
    quantize_rows_cuda(a, dx.as<float>(), nullptr);
    std::vector<uint8_t> got = download<uint8_t>(ddst, p.bytes);
    size_t first_bad = first_differing_byte(got, ref);
    INFO("first differing byte " << first_bad << " of " << got.size() << ": "
                                  << describe_byte(first_bad, p, got, ref, x.data(), nullptr, n, group));
    CHECK(first_bad == got.size());

    // dequantise on the GPU vs the CPU: the same formula (at most an FMA's rounding apart)
    DeviceBuffer dref = upload(ref), dout(size_t(rows) * n * 4);
    dequantize_rows_cuda(dout.as<float>(), dref.as<uint8_t>(), doff.as<uint64_t>(), dbits.as<uint8_t>(), rows, n,
                         group, 4, nullptr);
    std::vector<float> want(size_t(rows) * n);
    for (int r = 0; r < rows; ++r) dequantize_row_cpu(want.data() + size_t(r) * n, ref.data() + p.off[r], n, p.bits[r], group);
    check_close("dequantize", download<float>(dout, want.size()), want, 1e-5f, 1e-6f);

    // bf16 input, GPU layout (16-bit class as bf16), rows read through src_row in reverse order
    std::vector<uint16_t> xb(x.size());
    std::vector<float> xr(x.size());
    for (size_t i = 0; i < x.size(); ++i) xb[i] = f32_to_bf16(x[i]), xr[i] = bf16_to_f32(xb[i]);
    const Packed p2 = pack_layout(rng, rows, n, group, 2);
    std::vector<int> src(rows);
    for (int r = 0; r < rows; ++r) src[r] = rows - 1 - r;
    std::vector<uint8_t> ref2(p2.bytes, 0);
    for (int r = 0; r < rows; ++r) {
      const float* row = xr.data() + size_t(src[r]) * n;
      if (p2.bits[r] == 16)
        for (int i = 0; i < n; ++i) std::memcpy(ref2.data() + p2.off[r] + 2 * i, &xb[size_t(src[r]) * n + i], 2);
      else
        quantize_row_cpu(ref2.data() + p2.off[r], row, n, p2.bits[r], group);
    }
    DeviceBuffer dxb = upload(xb), doff2 = upload(p2.off), dbits2 = upload(p2.bits), dsrc = upload(src),
                 ddst2(p2.bytes);
    CUDA_CHECK(cudaMemset(ddst2.ptr, 0xAB, p2.bytes));
    a.dst = ddst2.as<uint8_t>();
    a.dst_off = doff2.as<uint64_t>();
    a.bits = dbits2.as<uint8_t>();
    a.src_row = dsrc.as<int>();
    a.row16 = 2;
    quantize_rows_cuda(a, dxb.as<bf16>(), nullptr);
    std::vector<uint8_t> got2 = download<uint8_t>(ddst2, p2.bytes);
    first_bad = first_differing_byte(got2, ref2);
    INFO("bf16 input: first differing byte " << first_bad << " of " << got2.size() << ": "
                                              << describe_byte(first_bad, p2, got2, ref2, xr.data(), src.data(), n, group));
    CHECK(first_bad == got2.size());
  }
  {  // hand case: 0 1 2 3 repeated at 2 bits, group 4: scale 1.0 (fp16 0x3C00), min 0, codes 0 | 1<<2 | 2<<4 | 3<<6
    const int n = 64;
    std::vector<float> x(n);
    for (int i = 0; i < n; ++i) x[i] = float(i % 4);
    std::vector<uint64_t> off = {0};
    std::vector<uint8_t> bits = {2};
    DeviceBuffer dx = upload(x), doff = upload(off), dbits = upload(bits), ddst(size_t(n / 4) * 5), dout(n * 4);
    const QuantRowsArgs a = rows_args(ddst.as<uint8_t>(), doff.as<uint64_t>(), dbits.as<uint8_t>(), 1, n, 4, 2);
    quantize_rows_cuda(a, dx.as<float>(), nullptr);
    std::vector<uint8_t> got = download<uint8_t>(ddst, size_t(n / 4) * 5);
    for (int g = 0; g < n / 4; ++g) {
      CHECK(got[g * 5 + 0] == 0x00);
      CHECK(got[g * 5 + 1] == 0x3C);
      CHECK(got[g * 5 + 2] == 0x00);
      CHECK(got[g * 5 + 3] == 0x00);
      CHECK(got[g * 5 + 4] == 0xE4);
    }
    dequantize_rows_cuda(dout.as<float>(), ddst.as<uint8_t>(), doff.as<uint64_t>(), dbits.as<uint8_t>(), 1, n, 4, 2,
                         nullptr);
    check_close("2-bit hand row", download<float>(dout, n), x, 0.0f, 0.0f);
  }
}

TEST_CASE("cuda hadamard_rows rotates bf16 rows bit for bit as hadamard_rotate_cpu, rows picked by positions") {
  if (!have_cuda()) return;
  std::mt19937 rng(11);
  for (int hd : {64, 128, 256}) {
    CAPTURE(hd);
    // a cache-shaped buffer: 3 blocks (KV heads) of cap = 9 slots; rotate the slots at positions {7, 2, 5} only
    const int blocks = 3, cap = 9;
    const std::vector<int> pos = {7, 2, 5};
    std::vector<uint16_t> xb;
    std::vector<float> x = random_bf16(rng, size_t(blocks) * cap * hd, 3.0f, xb);
    x[size_t(2) * hd + 1] = 250.0f, xb[size_t(2) * hd + 1] = f32_to_bf16(250.0f);  // an outlier channel
    std::vector<uint16_t> want = xb;
    std::vector<float> row(hd);
    for (int b = 0; b < blocks; ++b)
      for (int p : pos) {
        const size_t at = (size_t(b) * cap + p) * hd;
        for (int d = 0; d < hd; ++d) row[d] = x[at + d];
        hadamard_rotate_cpu(row.data(), hd);
        for (int d = 0; d < hd; ++d) want[at + d] = f32_to_bf16(row[d]);
      }
    DeviceBuffer dx = upload(xb), dpos = upload(pos);
    hadamard_rows_cuda(dx.as<bf16>(), dpos.as<int>(), int(pos.size()), blocks, int64_t(cap) * hd, hd, hd, nullptr);
    CHECK(download<uint16_t>(dx, xb.size()) == want);  // the other slots untouched, the rotated ones bit for bit
    // contiguous rows (pos null), token-major like q: n = 5 tokens of 3 heads; twice is the identity (H H = I)
    // up to the two bf16 roundings
    const int n = 5, heads = 3;
    std::vector<uint16_t> qb;
    std::vector<float> q = random_bf16(rng, size_t(n) * heads * hd, 1.0f, qb);
    DeviceBuffer dq = upload(qb);
    hadamard_rows_cuda(dq.as<bf16>(), nullptr, n, heads, hd, int64_t(heads) * hd, hd, nullptr);
    std::vector<uint16_t> once = download<uint16_t>(dq, qb.size());
    for (size_t r = 0; r < size_t(n) * heads; ++r) {
      for (int d = 0; d < hd; ++d) row[d] = q[r * hd + d];
      hadamard_rotate_cpu(row.data(), hd);
      for (int d = 0; d < hd; ++d) REQUIRE(once[r * hd + d] == f32_to_bf16(row[d]));
    }
    hadamard_rows_cuda(dq.as<bf16>(), nullptr, n, heads, hd, int64_t(heads) * hd, hd, nullptr);
    check_close("hadamard twice", download_bf16(dq, q.size()), q, 2e-2f, 1e-2f);
  }
  CHECK_THROWS_WITH_AS(hadamard_rows_cuda(nullptr, nullptr, 1, 1, 96, 96, 96, nullptr),
                       doctest::Contains("head_dim 96 unsupported"), Error);
}

namespace {

// A layer's mixed-precision cache as the CPU builds it (engine/kv_prefill.h: per KV head, entry e at off[g][e],
// key row then value row, both at bits[g][e]; the 16-bit class as fp32), and the same entries flattened for the
// device (one data block, absolute offsets (n_kv_heads, n_kv)).
struct MixedCache {
  std::vector<std::vector<uint8_t>> data;
  std::vector<std::vector<uint64_t>> off;
  std::vector<std::vector<uint8_t>> bits;
  std::vector<uint8_t> flat;
  std::vector<uint64_t> flat_off;
  std::vector<uint8_t> flat_bits;
};

// keys/values: (n_kv_heads, n_kv, hd) floats. row16 = 4: the device cache is the CPU cache's bytes. row16 = 2:
// the device cache is built by quantize_rows_cuda (16-bit rows as bf16; the values must be bf16-exact).
MixedCache make_cache(std::mt19937& rng, const std::vector<float>& k, const std::vector<float>& v, int n_kv_heads,
                      int n_kv, int hd, int group, int row16, bool all16 = false) {
  MixedCache c;
  c.data.resize(n_kv_heads);
  c.off.assign(n_kv_heads, std::vector<uint64_t>{0});
  c.bits.resize(n_kv_heads);
  std::vector<int> widths(size_t(n_kv_heads) * n_kv);
  for (auto& w : widths) w = all16 ? 16 : kWidths[rng() % 4];
  for (int g = 0; g < n_kv_heads; ++g)
    for (int e = 0; e < n_kv; ++e) {
      const int b = widths[size_t(g) * n_kv + e];
      const size_t rb = quant_row_bytes(hd, b, group), at = c.data[g].size();
      c.data[g].resize(at + 2 * rb);
      quantize_row_cpu(c.data[g].data() + at, k.data() + (size_t(g) * n_kv + e) * hd, hd, b, group);
      quantize_row_cpu(c.data[g].data() + at + rb, v.data() + (size_t(g) * n_kv + e) * hd, hd, b, group);
      c.off[g].push_back(at + 2 * rb);
      c.bits[g].push_back(uint8_t(b));
    }
  c.flat_bits.resize(size_t(n_kv_heads) * n_kv);
  c.flat_off.resize(size_t(n_kv_heads) * n_kv);
  if (row16 == 4) {
    for (int g = 0; g < n_kv_heads; ++g) {
      const size_t base = c.flat.size();
      c.flat.insert(c.flat.end(), c.data[g].begin(), c.data[g].end());
      for (int e = 0; e < n_kv; ++e) {
        c.flat_off[size_t(g) * n_kv + e] = base + c.off[g][e];
        c.flat_bits[size_t(g) * n_kv + e] = c.bits[g][e];
      }
    }
    return c;
  }
  // row16 = 2: quantise on the device, K rows and V rows in two launches
  const int rows = n_kv_heads * n_kv;
  std::vector<uint64_t> koff(rows), voff(rows);
  size_t bytes = 0;
  for (int r = 0; r < rows; ++r) {
    const int b = widths[r];
    c.flat_bits[r] = uint8_t(b);
    c.flat_off[r] = koff[r] = bytes;
    voff[r] = bytes + quant_row_bytes_cuda(hd, b, group, 2);
    bytes += 2 * quant_row_bytes_cuda(hd, b, group, 2);
  }
  DeviceBuffer dk = upload(k), dv = upload(v), dko = upload(koff), dvo = upload(voff), db = upload(c.flat_bits),
               dst(bytes);
  QuantRowsArgs a = rows_args(dst.as<uint8_t>(), dko.as<uint64_t>(), db.as<uint8_t>(), rows, hd, group, 2);
  quantize_rows_cuda(a, dk.as<float>(), nullptr);
  a.dst_off = dvo.as<uint64_t>();
  quantize_rows_cuda(a, dv.as<float>(), nullptr);
  c.flat = download<uint8_t>(dst, bytes);
  return c;
}

// One decode comparison: n_q queries over n_kv mixed entries, CUDA vs attention_quant_cpu.
void decode_case(std::mt19937& rng, int n_heads, int n_kv_heads, int hd, int n_kv, int group, int row16,
                 int n_q = 1, int splits_override = 0) {
  CAPTURE(n_heads);
  CAPTURE(n_kv_heads);
  CAPTURE(hd);
  CAPTURE(n_kv);
  CAPTURE(group);
  CAPTURE(row16);
  CAPTURE(n_q);
  std::vector<uint16_t> qb, kb, vb;
  const std::vector<float> q = random_bf16(rng, size_t(n_q) * n_heads * hd, 2.0f, qb);
  const std::vector<float> k = random_bf16(rng, size_t(n_kv_heads) * n_kv * hd, 1.0f, kb);
  const std::vector<float> v = random_bf16(rng, size_t(n_kv_heads) * n_kv * hd, 1.0f, vb);
  const MixedCache c = make_cache(rng, k, v, n_kv_heads, n_kv, hd, group, row16);
  std::vector<const uint8_t*> data(n_kv_heads), bits(n_kv_heads);
  std::vector<const uint64_t*> off(n_kv_heads);
  for (int g = 0; g < n_kv_heads; ++g) data[g] = c.data[g].data(), off[g] = c.off[g].data(), bits[g] = c.bits[g].data();
  QuantAttentionArgs ca;
  ca.q = q.data();
  ca.data = data.data();
  ca.off = off.data();
  ca.bits = bits.data();
  ca.n_q = n_q;
  ca.n_kv = n_kv;
  ca.n_heads = n_heads;
  ca.n_kv_heads = n_kv_heads;
  ca.head_dim = hd;
  ca.group = group;
  std::vector<float> ref(q.size());
  attention_quant_cpu(ref.data(), ca);

  int sms = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const int splits = splits_override > 0 ? splits_override : attention_quant_decode_splits(n_kv_heads, n_kv, sms);
  CAPTURE(splits);
  DeviceBuffer dq = upload(qb), ddata = upload(c.flat), doff = upload(c.flat_off), dbits = upload(c.flat_bits),
               dn = upload(std::vector<int>{n_kv}), dout(q.size() * 2),
               ws(attention_quant_workspace_floats(n_q, n_heads, hd, splits) * 4);
  CUDA_CHECK(cudaMemset(dout.ptr, 0xff, q.size() * 2));  // NaN: every element must be written
  const QuantDecodeArgs a =
      decode_args(dq, ddata, doff, dbits, dn, n_kv, n_q, n_heads, n_kv_heads, hd, group, row16);
  attention_quant_decode_cuda(dout.as<bf16>(), a, splits, ws.as<float>(), nullptr);
  check_close("quant decode attention", download_bf16(dout, ref.size()), ref, 4e-3f, 8e-3f);
}

}  // namespace

TEST_CASE("cuda decode attention over the mixed 2/4/8/16-bit cache matches attention_quant_cpu") {
  if (!have_cuda()) return;
  std::mt19937 rng(72);
  for (int n_kv : {1, 31, 33, 64, 65, 1000}) decode_case(rng, 9, 3, 64, n_kv, 32, 4);  // demo heads
  decode_case(rng, 9, 3, 64, 257, 64, 4);                                                // one group per row
  decode_case(rng, 9, 3, 64, 130, 8, 2);                                                 // small groups, GPU-built cache
  for (int n_kv : {1, 129, 777}) decode_case(rng, 32, 32, 128, n_kv, 32, 4);             // Llama-2-7B (MHA)
  for (int n_kv : {63, 4097}) decode_case(rng, 32, 8, 128, n_kv, 32, 4);                 // Llama-3-8B
  decode_case(rng, 32, 8, 128, 2049, 32, 2);                                             // GPU-built, bf16 16-bit rows
  decode_case(rng, 32, 8, 128, 8192, 32, 2);                                             // 8K
  decode_case(rng, 32, 8, 128, 500, 4, 4, 1, 1);                                         // one split does everything
  decode_case(rng, 32, 8, 128, 100, 32, 4, 1, 64);                                       // most splits empty
  decode_case(rng, 16, 8, 64, 300, 32, 4);                                               // GQA group 2
  decode_case(rng, 64, 8, 128, 300, 32, 4);                                              // GQA group 8
  decode_case(rng, 32, 8, 128, 200, 32, 4, 5);                                           // 5 new tokens (causal)
  decode_case(rng, 9, 3, 64, 40, 32, 2, 40);                                             // every entry a query

  {  // hand case: q = 0 gives uniform weights; value rows constant 1, 2, 3, 4 at widths 2, 4, 8, 16 -> mean 2.5
    const int hd = 128, n = 4, group = 32;
    std::vector<uint8_t> flat;
    std::vector<uint64_t> offs;
    std::vector<uint8_t> bits;
    for (int e = 0; e < n; ++e) {
      const int b = kWidths[e];
      const size_t rb = quant_row_bytes(hd, b, group), at = flat.size();
      std::vector<float> krow(hd, 0.5f), vrow(hd, float(e + 1));  // constant rows: scale 0, min exact
      flat.resize(at + 2 * rb);
      quantize_row_cpu(flat.data() + at, krow.data(), hd, b, group);
      quantize_row_cpu(flat.data() + at + rb, vrow.data(), hd, b, group);
      offs.push_back(at);
      bits.push_back(uint8_t(b));
    }
    std::vector<uint16_t> qb(hd, f32_to_bf16(0.0f));
    DeviceBuffer dq = upload(qb), ddata = upload(flat), doff = upload(offs), dbits = upload(bits),
                 dn = upload(std::vector<int>{n}), dout(hd * 2), ws(attention_quant_workspace_floats(1, 1, hd, 3) * 4);
    const QuantDecodeArgs a = decode_args(dq, ddata, doff, dbits, dn, n, 1, 1, 1, hd, group, 4);
    attention_quant_decode_cuda(dout.as<bf16>(), a, 3, ws.as<float>(), nullptr);
    check_close("quant decode hand", download_bf16(dout, hd), std::vector<float>(hd, 2.5f), 0.0f, 0.0f);
  }
}

namespace {

// One importance comparison: the CUDA accumulators vs attention_importance_cpu's on the same bf16 inputs.
void importance_case(std::mt19937& rng, int n_heads, int n_kv_heads, int hd, int m, int w) {
  CAPTURE(n_heads);
  CAPTURE(n_kv_heads);
  CAPTURE(hd);
  CAPTURE(m);
  CAPTURE(w);
  const int capacity = m + 7;  // slots past m hold garbage the kernels must not read
  std::vector<uint16_t> qb, kb, vb;
  const std::vector<float> q = random_bf16(rng, size_t(m) * n_heads * hd, 2.0f, qb);
  const std::vector<float> kc = random_bf16(rng, size_t(n_kv_heads) * capacity * hd, 1.0f, kb);
  const std::vector<float> v = random_f32(rng, size_t(n_kv_heads) * m * hd, 1.0f);
  std::vector<float> k(size_t(n_kv_heads) * m * hd);
  for (int g = 0; g < n_kv_heads; ++g)
    std::copy_n(kc.begin() + size_t(g) * capacity * hd, size_t(m) * hd, k.begin() + size_t(g) * m * hd);
  for (int g = 0; g < n_kv_heads; ++g)  // NaN in the unused slots: reading them would poison every sum
    for (size_t i = size_t(m) * hd; i < size_t(capacity) * hd; ++i) kb[size_t(g) * capacity * hd + i] = 0x7fc0;
  std::vector<float> out(q.size()), cum(size_t(n_kv_heads) * m), win(cum.size()), scr(2 * size_t(n_heads) * m);
  attention_importance_cpu(out.data(), cum.data(), win.data(), scr.data(), q.data(), k.data(), v.data(), m, n_heads,
                           n_kv_heads, hd, w);
  DeviceBuffer dq = upload(qb), dk = upload(kb), dcum(cum.size() * 4), dwin(win.size() * 4),
               ws(attention_importance_workspace_floats(m, n_heads) * 4);
  CUDA_CHECK(cudaMemset(dcum.ptr, 0xff, cum.size() * 4));
  CUDA_CHECK(cudaMemset(dwin.ptr, 0xff, win.size() * 4));
  attention_importance_cuda(dcum.as<float>(), dwin.as<float>(), dq.as<bf16>(), dk.as<bf16>(), m, n_heads, n_kv_heads,
                            hd, capacity, w, ws.as<float>(), nullptr);
  // fp32 on both sides; only the summation order and expf's last bits differ
  check_close("importance cum", download<float>(dcum, cum.size()), cum, 2e-5f, 2e-4f);
  check_close("importance win", download<float>(dwin, win.size()), win, 2e-5f, 2e-4f);
}

}  // namespace

TEST_CASE("cuda importance accumulators (A_cum, A_win) match attention_importance_cpu without an m x m matrix") {
  if (!have_cuda()) return;
  std::mt19937 rng(73);
  for (int m : {1, 31, 32, 33, 100}) importance_case(rng, 9, 3, 64, m, 32);  // demo heads, tile edges
  importance_case(rng, 9, 3, 64, 300, 300);                                  // window = every query: win == cum
  importance_case(rng, 9, 3, 64, 77, 0);                                     // no window
  importance_case(rng, 32, 32, 128, 65, 16);                                 // Llama-2-7B (MHA)
  importance_case(rng, 32, 8, 128, 70, 32);                                  // Llama-3-8B
  importance_case(rng, 32, 8, 128, 513, 64);                                 // many tiles
  {  // hand case: q = 0 -> p_i(j) = 1/(i+1). m = 4, one head: cum = [25, 13, 7, 3] / 12; w = 2: win = [7, 7, 7, 3] / 12
    const int hd = 64, m = 4;
    std::vector<uint16_t> qb(size_t(m) * hd, f32_to_bf16(0.0f)), kb(size_t(m) * hd, f32_to_bf16(0.3f));
    DeviceBuffer dq = upload(qb), dk = upload(kb), dcum(m * 4), dwin(m * 4), ws(attention_importance_workspace_floats(m, 1) * 4);
    attention_importance_cuda(dcum.as<float>(), dwin.as<float>(), dq.as<bf16>(), dk.as<bf16>(), m, 1, 1, hd, m, 2,
                              ws.as<float>(), nullptr);
    check_close("importance hand cum", download<float>(dcum, m), {25 / 12.0f, 13 / 12.0f, 7 / 12.0f, 3 / 12.0f}, 1e-6f, 1e-6f);
    check_close("importance hand win", download<float>(dwin, m), {7 / 12.0f, 7 / 12.0f, 7 / 12.0f, 3 / 12.0f}, 1e-6f, 1e-6f);
  }
}

TEST_CASE("cuda quant kernels reject bad shapes with a clear error") {
  if (!have_cuda()) return;
  QuantRowsArgs a;
  a.n_rows = 1;
  a.n = 64;
  a.group = 24;  // does not divide 64
  CHECK_THROWS_WITH_AS(quantize_rows_cuda(a, static_cast<const float*>(nullptr), nullptr),
                       doctest::Contains("multiple of 4 dividing head_dim"), Error);
  QuantDecodeArgs d;
  d.n_heads = 32;
  d.n_kv_heads = 8;
  d.head_dim = 96;
  CHECK_THROWS_WITH_AS(attention_quant_decode_cuda(nullptr, d, 1, nullptr, nullptr), doctest::Contains("head_dim 96"),
                       Error);
  CHECK_THROWS_WITH_AS(attention_importance_cuda(nullptr, nullptr, nullptr, nullptr, 100, 9, 3, 64, 50, 8, nullptr, nullptr),
                       doctest::Contains("capacity"), Error);
}
