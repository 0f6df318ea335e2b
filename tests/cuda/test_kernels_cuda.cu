// Every CUDA kernel against its CPU twin (kernels/ops_cpu.h) on seeded random inputs, at Llama-3-8B shapes
// (dim 4096, 32/8 heads, head_dim 128, ffn 14336) and the demo model's (576, 9/3, 64, 1536), odd lengths and
// contexts that cross the 64-key tiles; plus one hand-computable case per kernel family.
// Every full-cache kernel runs for both element types (TEST_CASE_TEMPLATE over bf16 and f16, issue 5 --dtype):
// tolerances are sized for bf16 (2^-9 relative rounding of a 16-bit output) and their rounding parts scaled by
// elem_tol<T>() (1/8 for f16, 3 more mantissa bits); fp32 outputs only differ by summation order.
// Without a GPU every case prints "SKIPPED: no CUDA device" and passes.
#include <algorithm>
#include <numeric>

#include "cuda_test_util.cuh"
#include "kernels/attention_cuda.h"
#include "kernels/elementwise_cuda.h"
#include "kernels/embedding_cuda.h"
#include "kernels/matmul_cuda.h"
#include "kernels/ops_cpu.h"
#include "kernels/rmsnorm_cuda.h"
#include "kernels/rope_cuda.h"
#include "kernels/sampling_cuda.h"
#include "kernels/threadpool_cpu.h"

using namespace llm;
using namespace llm_cuda_test;

namespace {
template <class T>  // bf16 or f16 bits
QMatrix elem_matrix(const std::vector<uint16_t>& bits, int64_t rows, int64_t cols) {
  QMatrix m;
  m.type = elem_ggml_type<T>();
  m.data = reinterpret_cast<const uint8_t*>(bits.data());
  m.rows = rows;
  m.cols = cols;
  m.row_bytes = size_t(cols) * 2;
  return m;
}
}  // namespace

TEST_CASE_TEMPLATE("cuda rmsnorm and add+rmsnorm match rmsnorm_cpu", T, bf16, f16) {
  if (!have_cuda()) return;
  std::mt19937 rng(1);
  const float et = elem_tol<T>();
  for (auto [n, dim] : {std::pair{1, 4096}, {7, 576}, {3, 4096}, {33, 576}}) {
    CAPTURE(n);
    CAPTURE(dim);
    std::vector<float> x = random_f32(rng, size_t(n) * dim, 2.0f), y = random_f32(rng, size_t(n) * dim, 1.0f);
    std::vector<float> w = random_f32(rng, dim, 1.5f);
    DeviceBuffer dx = upload(x), dy = upload(y), dw = upload(w), dout(size_t(n) * dim * 2);
    rmsnorm_cuda(dout.as<T>(), dx.as<float>(), dw.as<float>(), n, dim, 1e-5f, nullptr);
    std::vector<float> ref(x.size());
    rmsnorm_cpu(ref.data(), x.data(), w.data(), n, dim, 1e-5f);
    check_close("rmsnorm", download_elem<T>(dout, ref.size()), ref, 1e-4f * et, 8e-3f * et);

    add_rmsnorm_cuda(dout.as<T>(), dx.as<float>(), dy.as<float>(), dw.as<float>(), n, dim, 1e-5f, nullptr);
    std::vector<float> xs = x;
    add_cpu(xs.data(), y.data(), int64_t(xs.size()));
    rmsnorm_cpu(ref.data(), xs.data(), w.data(), n, dim, 1e-5f);
    check_close("add_rmsnorm residual", download<float>(dx, xs.size()), xs, 0.0f, 0.0f);  // fp32 add: exact
    check_close("add_rmsnorm out", download_elem<T>(dout, ref.size()), ref, 1e-4f * et, 8e-3f * et);
  }
  // hand case: x = 1 everywhere has rms 1, so out = w exactly (eps 0)
  std::vector<float> x(8, 1.0f), w = {1, 2, 3, 4, 5, 6, 7, 8};
  DeviceBuffer dx = upload(x), dw = upload(w), dout(16);
  rmsnorm_cuda(dout.as<T>(), dx.as<float>(), dw.as<float>(), 1, 8, 0.0f, nullptr);
  check_close("rmsnorm hand", download_elem<T>(dout, 8), w, 0.0f, 0.0f);
}

TEST_CASE_TEMPLATE("cuda embedding gather matches embedding_cpu", T, bf16, f16) {
  if (!have_cuda()) return;
  std::mt19937 rng(2);
  for (auto [vocab, dim] : {std::pair{1000, 576}, {300, 4096}}) {
    std::vector<uint16_t> bits;
    random_elem<T>(rng, size_t(vocab) * dim, 1.0f, bits);
    std::vector<int> tok = {0, vocab - 1, 17, 17, 5};
    DeviceBuffer dt = upload(bits), dtok = upload(tok), dout(tok.size() * dim * 4);
    embedding_cuda(dout.as<float>(), dtok.as<int>(), int(tok.size()), dt.as<T>(), vocab, dim, nullptr);
    std::vector<float> ref(tok.size() * dim);
    embedding_cpu(ref.data(), tok.data(), int(tok.size()), elem_matrix<T>(bits, vocab, dim));
    check_close("embedding", download<float>(dout, ref.size()), ref, 0.0f, 0.0f);
  }
}

TEST_CASE_TEMPLATE("cuda rope + KV write matches rope_cpu in both layouts, with llama3 scaling", T, bf16, f16) {
  if (!have_cuda()) return;
  std::mt19937 rng(3);
  const float et = elem_tol<T>();
  struct Case {
    int n_heads, n_kv, hd, n, capacity;
    RopeLayout layout;
    bool llama3;
    float theta;
  };
  for (const Case& k : {Case{32, 8, 128, 5, 32768, RopeLayout::half_split, true, 500000.0f},
                        Case{32, 8, 128, 3, 32768, RopeLayout::interleaved, true, 500000.0f},
                        Case{9, 3, 64, 37, 4096, RopeLayout::interleaved, false, 100000.0f},
                        Case{9, 3, 64, 2, 4096, RopeLayout::half_split, false, 100000.0f}}) {
    CAPTURE(k.n_heads);
    CAPTURE(k.n);
    CAPTURE(static_cast<int>(k.layout));
    const int qd = k.n_heads * k.hd, kvd = k.n_kv * k.hd, row = qd + 2 * kvd;
    RopeScaling sc;
    if (k.llama3) {
      sc.type = RopeScaling::Type::llama3;
      sc.factor = 8.0f;
      sc.low_freq_factor = 1.0f;
      sc.high_freq_factor = 4.0f;
      sc.original_max_position = 8192;
    }
    std::vector<float> inv(k.hd / 2);
    rope_inv_freq_cpu(inv.data(), k.hd, k.theta, sc);
    std::vector<float> qkv = random_f32(rng, size_t(k.n) * row, 2.0f);
    std::vector<int> pos(k.n);
    for (int i = 0; i < k.n; ++i) pos[i] = i == 0 ? k.capacity - 1 : (i * 7919) % k.capacity;  // far positions too
    // distinct slots so the cache comparison is unambiguous
    std::sort(pos.begin(), pos.end());
    pos.erase(std::unique(pos.begin(), pos.end()), pos.end());
    const int n = int(pos.size());
    const size_t cache = size_t(k.n_kv) * k.capacity * k.hd;
    DeviceBuffer dqkv = upload(qkv), dpos = upload(pos), dinv = upload(inv), dq(size_t(n) * qd * 2),
                 dk(cache * 2), dv(cache * 2);
    CUDA_CHECK(cudaMemset(dk.ptr, 0, cache * 2));
    CUDA_CHECK(cudaMemset(dv.ptr, 0, cache * 2));
    rope_kv_write_cuda(dq.as<T>(), dk.as<T>(), dv.as<T>(), dqkv.as<float>(), dpos.as<int>(), n, k.n_heads,
                       k.n_kv, k.hd, k.capacity, dinv.as<float>(), k.layout, nullptr);
    std::vector<float> ref = qkv;
    rope_cpu(ref.data(), pos.data(), n, k.n_heads, k.hd, row, inv.data(), k.layout);
    rope_cpu(ref.data() + qd, pos.data(), n, k.n_kv, k.hd, row, inv.data(), k.layout);
    std::vector<float> rq(size_t(n) * qd);
    for (int i = 0; i < n; ++i) std::copy_n(ref.data() + size_t(i) * row, qd, rq.data() + size_t(i) * qd);
    check_close("rope q", download_elem<T>(dq, rq.size()), rq, 2e-3f * et, 8e-3f * et);
    std::vector<float> gk = download_elem<T>(dk, cache), gv = download_elem<T>(dv, cache);
    std::vector<float> got_k, ref_k, got_v, ref_v;
    for (int i = 0; i < n; ++i)
      for (int g = 0; g < k.n_kv; ++g)
        for (int d = 0; d < k.hd; ++d) {
          const size_t slot = (size_t(g) * k.capacity + pos[i]) * k.hd + d;
          got_k.push_back(gk[slot]);
          ref_k.push_back(ref[size_t(i) * row + qd + g * k.hd + d]);
          got_v.push_back(gv[slot]);
          ref_v.push_back(qkv[size_t(i) * row + qd + kvd + g * k.hd + d]);
        }
    check_close("rope k in cache", got_k, ref_k, 2e-3f * et, 8e-3f * et);
    check_close("v in cache", got_v, ref_v, 0.0f, 4e-3f * et);
  }
  // hand case: head_dim 4, pair 0 turned by pos * pi/2 = pi/2 (a -> -b, b -> a), pair 1 by 0; token at slot 1.
  // half-split pairs (0,2),(1,3): [1,2,3,4] -> [-3,2,1,4]; interleaved pairs (0,1),(2,3): -> [-2,1,3,4].
  for (RopeLayout layout : {RopeLayout::half_split, RopeLayout::interleaved}) {
    CAPTURE(static_cast<int>(layout));
    const std::vector<float> qkv = {1, 2, 3, 4, 1, 2, 3, 4, 5, 6, 7, 8}, inv = {1.57079632679f, 0.0f};
    DeviceBuffer dqkv = upload(qkv), dinv = upload(inv), dpos = upload(std::vector<int>{1}), dq(8), dk(16), dv(16);
    CUDA_CHECK(cudaMemset(dk.ptr, 0, 16));
    CUDA_CHECK(cudaMemset(dv.ptr, 0, 16));
    rope_kv_write_cuda(dq.as<T>(), dk.as<T>(), dv.as<T>(), dqkv.as<float>(), dpos.as<int>(), 1, 1, 1, 4, 2,
                       dinv.as<float>(), layout, nullptr);
    const std::vector<float> want = layout == RopeLayout::half_split ? std::vector<float>{-3, 2, 1, 4}
                                                                      : std::vector<float>{-2, 1, 3, 4};
    check_close("rope hand q", download_elem<T>(dq, 4), want, 1e-6f, 0.0f);
    std::vector<float> want_k(4, 0.0f), want_v(4, 0.0f);  // slot 0 untouched, slot 1 written
    want_k.insert(want_k.end(), want.begin(), want.end());
    want_v.insert(want_v.end(), {5, 6, 7, 8});
    check_close("rope hand k cache", download_elem<T>(dk, 8), want_k, 1e-6f, 0.0f);
    check_close("rope hand v cache", download_elem<T>(dv, 8), want_v, 0.0f, 0.0f);
  }
}

TEST_CASE_TEMPLATE("cuda GEMV and cuBLASLt GEMM match matmul_cpu", T, bf16, f16) {
  if (!have_cuda()) return;
  std::mt19937 rng(4);
  ThreadPool pool(2);
  CublasLt lt;
  struct Case {
    int n, rows, cols;
  };
  for (const Case& k : {Case{1, 6144, 4096}, Case{1, 3072, 576}, Case{1, 577, 1536}, Case{1, 33, 14336},
                        Case{1, 4096, 14336}, Case{17, 1536, 576}, Case{33, 1024, 4096}, Case{2, 576, 1536}}) {
    CAPTURE(k.n);
    CAPTURE(k.rows);
    CAPTURE(k.cols);
    std::vector<uint16_t> wb, xb;
    std::vector<float> w = random_elem<T>(rng, size_t(k.rows) * k.cols, 0.05f, wb);
    std::vector<float> x = random_elem<T>(rng, size_t(k.n) * k.cols, 1.0f, xb);
    std::vector<float> ref(size_t(k.n) * k.rows);
    matmul_cpu(ref.data(), x.data(), elem_matrix<T>(wb, k.rows, k.cols), k.n, &pool);
    // tolerance from the magnitude of the terms: fp32 sums in a different order
    std::vector<float> mag(ref.size());
    for (int i = 0; i < k.n; ++i)
      for (int r = 0; r < k.rows; ++r) {
        double s = 0;
        for (int c = 0; c < k.cols; ++c) s += std::fabs(w[size_t(r) * k.cols + c] * x[size_t(i) * k.cols + c]);
        mag[size_t(i) * k.rows + r] = float(s);
      }
    const float atol = 1e-5f * *std::max_element(mag.begin(), mag.end()) + 1e-6f;
    DeviceBuffer dw = upload(wb), dx = upload(xb), dy(ref.size() * 4);
    if (k.n == 1) {
      gemv_cuda(dy.as<float>(), dw.as<T>(), dx.as<T>(), k.rows, k.cols, nullptr);
      check_close("gemv", download<float>(dy, ref.size()), ref, atol, 1e-5f);
    }
    CUDA_CHECK(cudaMemset(dy.ptr, 0xff, ref.size() * 4));  // NaN: every element must be written
    gemm_cuda(lt, dy.as<float>(), dx.as<T>(), dw.as<T>(), k.n, k.rows, k.cols, nullptr);
    // cuBLASLt: bf16 (and f16) products are exact in fp32, but the tensor cores' fp32 accumulation may align/truncate
    // differently and split-K changes the order: 1.6e-4 of the term magnitudes (a transposed or mis-strided
    // layout is off by O(magnitude), three orders more)
    check_close("cublaslt gemm", download<float>(dy, ref.size()), ref, atol * 16, 1e-5f);
  }
  // hand case: W = [[1, 2, ..., 8], [-1, ..., -1]], x = 1 -> y = [36, -8]
  std::vector<uint16_t> wb(16), xb(8, elem_bits<T>(1.0f));
  for (int c = 0; c < 8; ++c) {
    wb[c] = elem_bits<T>(float(c + 1));
    wb[8 + c] = elem_bits<T>(-1.0f);
  }
  DeviceBuffer dw = upload(wb), dx = upload(xb), dy(8);
  gemv_cuda(dy.as<float>(), dw.as<T>(), dx.as<T>(), 2, 8, nullptr);
  check_close("gemv hand", download<float>(dy, 2), {36.0f, -8.0f}, 0.0f, 0.0f);
  gemm_cuda(lt, dy.as<float>(), dx.as<T>(), dw.as<T>(), 1, 2, 8, nullptr);
  check_close("gemm hand", download<float>(dy, 2), {36.0f, -8.0f}, 0.0f, 0.0f);
}

TEST_CASE_TEMPLATE("cuda swiglu and residual add match the CPU", T, bf16, f16) {
  if (!have_cuda()) return;
  std::mt19937 rng(5);
  const float et = elem_tol<T>();
  for (auto [n, ffn] : {std::pair{1, 14336}, {3, 1536}, {5, 7}}) {
    std::vector<float> gu = random_f32(rng, size_t(n) * 2 * ffn, 6.0f);
    std::vector<float> g(size_t(n) * ffn), u(size_t(n) * ffn), ref(size_t(n) * ffn);
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < ffn; ++j) {
        g[size_t(i) * ffn + j] = gu[size_t(i) * 2 * ffn + j];
        u[size_t(i) * ffn + j] = gu[size_t(i) * 2 * ffn + ffn + j];
      }
    swiglu_cpu(ref.data(), g.data(), u.data(), int64_t(ref.size()));
    DeviceBuffer dgu = upload(gu), dout(ref.size() * 2);
    swiglu_cuda(dout.as<T>(), dgu.as<float>(), n, ffn, nullptr);
    check_close("swiglu", download_elem<T>(dout, ref.size()), ref, 1e-5f * et, 8e-3f * et);
  }
  std::vector<float> x = random_f32(rng, 1001, 3.0f), y = random_f32(rng, 1001, 3.0f), ref = x;
  add_cpu(ref.data(), y.data(), 1001);
  DeviceBuffer dx = upload(x), dy = upload(y);
  add_cuda(dx.as<float>(), dy.as<float>(), 1001, nullptr);
  check_close("add", download<float>(dx, 1001), ref, 0.0f, 0.0f);
  // hand case: silu(0) * u = 0, silu(g) for large g ~ g
  std::vector<float> h = {0.0f, 20.0f, 5.0f, 0.5f};  // gate [0, 20], up [5, 0.5]
  DeviceBuffer dh = upload(h), dout(4);
  swiglu_cuda(dout.as<T>(), dh.as<float>(), 1, 2, nullptr);
  check_close("swiglu hand", download_elem<T>(dout, 2), {0.0f, 10.0f}, 0.0f, 4e-3f * et);
}

TEST_CASE("cuda argmax and top-k/top-p sampling match the CPU") {
  if (!have_cuda()) return;
  std::mt19937 rng(6);
  DeviceBuffer dout(4);
  for (int n : {128256, 49152, 1000, 1}) {
    std::vector<float> x = random_f32(rng, n, 10.0f);
    DeviceBuffer dx = upload(x);
    argmax_cuda(dout.as<int>(), dx.as<float>(), n, nullptr);
    CHECK(download<int>(dout, 1)[0] == argmax_cpu(x.data(), n));
  }
  {  // ties: the first index wins
    std::vector<float> x = {1.0f, 3.0f, 3.0f, 2.0f};
    DeviceBuffer dx = upload(x);
    argmax_cuda(dout.as<int>(), dx.as<float>(), 4, nullptr);
    CHECK(download<int>(dout, 1)[0] == 1);
  }
  {  // hand case: p ~ [1, 1, 2] -> sorted ids 2, 0, 1 with cumsum 2, 3, 4 (of 4)
    std::vector<float> x = {0.0f, 0.0f, std::log(2.0f)};
    DeviceBuffer dx = upload(x);
    SampleScratch sc = sample_scratch_create(3);
    for (auto [u, want] : {std::pair{0.4f, 2}, {0.6f, 0}, {0.9f, 1}}) {
      sample_cuda(dout.as<int>(), dx.as<float>(), 3, 1.0f, 0, 1.0f, u, sc, nullptr);
      CHECK(download<int>(dout, 1)[0] == want);
    }
    sample_cuda(dout.as<int>(), dx.as<float>(), 3, 1.0f, 1, 1.0f, 0.99f, sc, nullptr);  // top-1
    CHECK(download<int>(dout, 1)[0] == 2);
    sample_cuda(dout.as<int>(), dx.as<float>(), 3, 1.0f, 0, 0.5f, 0.99f, sc, nullptr);  // top-p 0.5: only id 2
    CHECK(download<int>(dout, 1)[0] == 2);
  }
  // random: CPU reference in double (stable descending sort, softmax, top-k, top-p, draw)
  const int n = 50000;
  SampleScratch sc = sample_scratch_create(n);
  std::vector<float> x = random_f32(rng, n, 8.0f);
  DeviceBuffer dx = upload(x);
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return x[a] > x[b]; });
  struct P {
    float t;
    int k;
    float p, u;
  };
  for (const P& c : {P{1.0f, 0, 1.0f, 0.3f}, P{0.7f, 40, 1.0f, 0.77f}, P{1.3f, 0, 0.9f, 0.5f}, P{1.0f, 100, 0.8f, 0.1f},
                     P{2.0f, 5000, 0.95f, 0.999f}}) {
    CAPTURE(c.t);
    CAPTURE(c.k);
    CAPTURE(c.p);
    CAPTURE(c.u);
    const int m = c.k > 0 ? c.k : n;
    std::vector<double> p(m);
    double total = 0;
    for (int i = 0; i < m; ++i) total += p[i] = std::exp((double(x[order[i]]) - x[order[0]]) / c.t);
    int keep = m;
    double cum = 0;
    if (c.p < 1.0f)
      for (int i = 0; i < m; ++i) {
        cum += p[i];
        if (cum >= c.p * total) {
          keep = i + 1;
          break;
        }
      }
    double kept = 0;
    for (int i = 0; i < keep; ++i) kept += p[i];
    const double target = c.u * kept;
    int want = keep - 1;
    double near = 1e30;  // distance of the target to the nearest boundary, relative
    cum = 0;
    for (int i = 0; i < keep; ++i) {
      cum += p[i];
      near = std::min(near, std::fabs(cum - target) / kept);
      if (cum > target) {
        want = i;
        break;
      }
    }
    sample_cuda(dout.as<int>(), dx.as<float>(), n, c.t, c.k, c.p, c.u, sc, nullptr);
    const int got = download<int>(dout, 1)[0];
    if (near > 1e-4) CHECK(got == order[want]);
    else MESSAGE("sampling case within 1e-4 of a cumsum boundary: not compared (fp32 vs double)");
  }
}

namespace {
// One attention comparison: random q (n_q, n_heads, hd) and cache in T; prefill or decode kernel vs attention_cpu.
template <class T>
void attention_case(std::mt19937& rng, int n_heads, int n_kv_heads, int hd, int n_q, int n_kv, int capacity,
                    bool decode, int splits_override = 0) {
  CAPTURE(n_heads);
  CAPTURE(n_kv_heads);
  CAPTURE(hd);
  CAPTURE(n_q);
  CAPTURE(n_kv);
  CAPTURE(decode);
  std::vector<uint16_t> qb, kb, vb;
  const float et = elem_tol<T>();
  std::vector<float> q = random_elem<T>(rng, size_t(n_q) * n_heads * hd, 2.0f, qb);  // scores ~ N(0, 0.7): peaked enough that a wrongly masked key shows
  std::vector<float> k = random_elem<T>(rng, size_t(n_kv_heads) * capacity * hd, 1.0f, kb);
  std::vector<float> v = random_elem<T>(rng, size_t(n_kv_heads) * capacity * hd, 1.0f, vb);
  std::vector<float> ref(q.size());
  attention_cpu(ref.data(), q.data(), k.data(), v.data(), n_q, n_kv, n_heads, n_kv_heads, hd, capacity);
  DeviceBuffer dq = upload(qb), dk = upload(kb), dv = upload(vb), dout(q.size() * 2);
  CUDA_CHECK(cudaMemset(dout.ptr, 0xff, q.size() * 2));  // NaN: every element must be written
  if (decode) {
    REQUIRE(n_q == 1);
    int sms = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    const int splits = splits_override > 0 ? splits_override : attention_decode_splits(n_kv_heads, capacity, sms);
    CAPTURE(splits);
    DeviceBuffer ws(attention_decode_workspace_floats(n_heads, hd, splits) * 4);
    DeviceBuffer dpos = upload(std::vector<int>{n_kv - 1});
    attention_decode_cuda(dout.as<T>(), dq.as<T>(), dk.as<T>(), dv.as<T>(), dpos.as<int>(), n_heads,
                          n_kv_heads, hd, capacity, splits, ws.as<float>(), nullptr);
    check_close("attention decode", download_elem<T>(dout, ref.size()), ref, 4e-3f * et, 8e-3f * et);
  } else {
    attention_prefill_cuda(dout.as<T>(), dq.as<T>(), dk.as<T>(), dv.as<T>(), n_q, n_kv, n_heads,
                           n_kv_heads, hd, capacity, nullptr);
    // P is rounded to T before P.V (as in flash attention): a little looser than decode
    check_close("attention prefill", download_elem<T>(dout, ref.size()), ref, 8e-3f * et, 1.6e-2f * et);
  }
}
}  // namespace

TEST_CASE_TEMPLATE("cuda flash prefill attention matches attention_cpu (causal, GQA, tile edges)", T, bf16, f16) {
  if (!have_cuda()) return;
  std::mt19937 rng(7);
  attention_case<T>(rng, 32, 8, 128, 70, 70, 80, false);     // Llama-3-8B heads, crosses the 64-query/64-key tiles
  attention_case<T>(rng, 32, 8, 128, 33, 133, 200, false);   // a second prompt block after 100 cached tokens
  attention_case<T>(rng, 9, 3, 64, 130, 130, 130, false);    // demo model heads, 3 query tiles
  attention_case<T>(rng, 9, 3, 64, 5, 200, 256, false);      // a short block late in the context
  attention_case<T>(rng, 32, 32, 128, 64, 64, 64, false);    // MHA (Llama-2), exactly one tile
  attention_case<T>(rng, 8, 1, 64, 1, 1, 16, false);         // a single key
  {  // hand case: q = 0 gives uniform weights: row 0 = v0, row 1 = (v0 + v1) / 2
    const int hd = 64;
    std::vector<uint16_t> qb(2 * hd, elem_bits<T>(0.0f)), kb(2 * hd, elem_bits<T>(0.5f)), vb(2 * hd);
    for (int d = 0; d < hd; ++d) {
      vb[d] = elem_bits<T>(1.0f);
      vb[hd + d] = elem_bits<T>(3.0f);
    }
    DeviceBuffer dq = upload(qb), dk = upload(kb), dv = upload(vb), dout(2 * hd * 2);
    attention_prefill_cuda(dout.as<T>(), dq.as<T>(), dk.as<T>(), dv.as<T>(), 2, 2, 1, 1, hd, 2, nullptr);
    std::vector<float> want(2 * hd);
    for (int d = 0; d < hd; ++d) {
      want[d] = 1.0f;
      want[hd + d] = 2.0f;
    }
    check_close("prefill hand", download_elem<T>(dout, 2 * hd), want, 0.0f, 0.0f);
  }
}

TEST_CASE_TEMPLATE("cuda split-K decode attention matches attention_cpu (GQA groups 1..8, long contexts)", T, bf16,
                   f16) {
  if (!have_cuda()) return;
  std::mt19937 rng(8);
  for (int n_kv : {1, 63, 64, 65, 1000, 4097}) attention_case<T>(rng, 32, 8, 128, 1, n_kv, 4200, true);
  for (int n_kv : {1, 130, 2049}) attention_case<T>(rng, 9, 3, 64, 1, n_kv, 2100, true);
  attention_case<T>(rng, 32, 32, 128, 1, 777, 800, true);   // group 1 (Llama-2)
  attention_case<T>(rng, 16, 8, 64, 1, 300, 300, true);     // group 2
  attention_case<T>(rng, 64, 8, 128, 1, 500, 512, true);    // group 8
  attention_case<T>(rng, 32, 8, 128, 1, 32768, 32768, true);  // Llama-3 at 32K
  attention_case<T>(rng, 32, 8, 128, 1, 1000, 4200, true, 1);    // one split does everything
  attention_case<T>(rng, 32, 8, 128, 1, 100, 4200, true, 200);   // most splits empty
  {  // hand case: q = 0 -> the mean of the values 1, 2, 3, 4, 5, 6 = 3.5
    const int hd = 128, n = 6;
    std::vector<uint16_t> qb(hd, elem_bits<T>(0.0f)), kb(n * hd, elem_bits<T>(0.25f)), vb(n * hd);
    for (int t = 0; t < n; ++t)
      for (int d = 0; d < hd; ++d) vb[t * hd + d] = elem_bits<T>(float(t + 1));
    DeviceBuffer dq = upload(qb), dk = upload(kb), dv = upload(vb), dout(hd * 2), dpos = upload(std::vector<int>{n - 1});
    DeviceBuffer ws(attention_decode_workspace_floats(1, hd, 3) * 4);
    attention_decode_cuda(dout.as<T>(), dq.as<T>(), dk.as<T>(), dv.as<T>(), dpos.as<int>(), 1, 1, hd, n, 3,
                          ws.as<float>(), nullptr);
    check_close("decode hand", download_elem<T>(dout, hd), std::vector<float>(hd, 3.5f), 0.0f, 0.0f);
  }
}

TEST_CASE_TEMPLATE("cuda conversions and seeded fills (the bench's synthetic weights)", T, bf16, f16) {
  if (!have_cuda()) return;
  std::mt19937 rng(10);
  // fp32 -> T rounds to nearest even like the loader's f32_to_bf16 / f32_to_fp16 (bit for bit, f16 overflowing to
  // inf and underflowing through its subnormals), T -> fp32 is exact
  std::vector<float> x = random_f32(rng, 4099, 100.0f);
  x.insert(x.end(), {0.0f, -0.0f, 1.0f, 1.00390625f, 1.01171875f, 3.0e38f, 1.0e-40f});  // ties, huge, denormal
  x.insert(x.end(), {1.00048828125f, 65504.0f, 65520.0f, -70000.0f, 1.0e-6f, 3.0e-8f});  // f16: tie, max, overflow,
                                                                                      // subnormals
  const int64_t n = int64_t(x.size());
  DeviceBuffer dx = upload(x), db(size_t(n) * 2), dy(size_t(n) * 4);
  f32_to_elem_cuda(db.as<T>(), dx.as<float>(), n, nullptr);
  elem_to_f32_cuda(dy.as<float>(), db.as<T>(), n, nullptr);
  const std::vector<uint16_t> bits = download<uint16_t>(db, size_t(n));
  const std::vector<float> back = download<float>(dy, size_t(n));
  int bad = 0;
  for (int64_t i = 0; i < n; ++i) bad += bits[i] != elem_bits<T>(x[i]) || back[i] != elem_float<T>(bits[i]);
  CHECK(bad == 0);
  // seeded fill: reproducible, seed-dependent, inside [-scale, scale], centred
  const int64_t m = 100003;
  DeviceBuffer a(size_t(m) * 2), b(size_t(m) * 2), c(size_t(m) * 2);
  fill_random_cuda(a.as<T>(), m, 7, 0.5f, nullptr);
  fill_random_cuda(b.as<T>(), m, 7, 0.5f, nullptr);
  fill_random_cuda(c.as<T>(), m, 8, 0.5f, nullptr);
  const std::vector<float> fa = download_elem<T>(a, size_t(m)), fb = download_elem<T>(b, size_t(m)),
                           fc = download_elem<T>(c, size_t(m));
  CHECK(fa == fb);
  CHECK(fa != fc);
  double mean = 0;
  float lo = 1, hi = -1;
  for (float v : fa) {
    mean += v;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  mean /= double(m);
  CHECK(lo >= -0.5f);
  CHECK(hi <= 0.5f);
  CHECK(lo < -0.49f);
  CHECK(hi > 0.49f);
  CHECK(std::fabs(mean) < 0.005);  // uniform on [-0.5, 0.5]: sd of the mean 0.29 / sqrt(1e5) = 0.0009
  DeviceBuffer d(4 * 1001);
  fill_const_f32_cuda(d.as<float>(), 1001, 1.5f, nullptr);
  CHECK(download<float>(d, 1001) == std::vector<float>(1001, 1.5f));
}
