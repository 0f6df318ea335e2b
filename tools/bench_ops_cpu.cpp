// bench_ops_cpu: single-thread micro-benchmark of the CPU ops at the demo model's shapes (SmolLM2-135M: dim 576,
// ffn 1536, vocab 49152). Reports CPU time per call (thread CPU clock, so a loaded machine inflates it less than
// wall time) and the weight bandwidth that implies.   usage: bench_ops_cpu [iterations]
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/ops_cpu.h"
#include "loader/ggml_quants.h"

using namespace llm;

static double cpu_s() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char** argv) {
  const int iters = argc > 1 ? std::atoi(argv[1]) : 50;
  std::mt19937 g(1);
  std::uniform_int_distribution<int> byte(0, 255);
  for (GGMLType t : {GGMLType::Q4_1, GGMLType::Q8_0, GGMLType::Q4_0, GGMLType::F32}) {
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1536, 576}, {576, 1536}}) {
      const size_t rb = ggml_row_bytes(t, cols);
      std::vector<uint8_t> w(rb * rows);
      for (auto& b : w) b = static_cast<uint8_t>(byte(g));
      if (t != GGMLType::F32) {  // sane scales
        const int bb = static_cast<int>(ggml_type_traits(t).block_bytes);
        for (size_t o = 0; o + bb <= w.size(); o += bb) {
          uint16_t h = f32_to_fp16(0.01f);
          std::memcpy(&w[o], &h, 2);
          if (t == GGMLType::Q4_1) std::memcpy(&w[o + 2], &h, 2);
        }
      } else {
        float* f = reinterpret_cast<float*>(w.data());
        for (int64_t i = 0; i < rows * cols; ++i) f[i] = 0.01f * (i % 7);
      }
      QMatrix m{t, w.data(), rows, cols, rb};
      for (int n : {1, 64}) {
        std::vector<float> x(size_t(n) * cols, 0.5f), out(size_t(n) * rows);
        matmul_cpu(out.data(), x.data(), m, n);
        const int it = n == 1 ? iters * 20 : iters;
        double t0 = cpu_s();
        for (int i = 0; i < it; ++i) matmul_cpu(out.data(), x.data(), m, n);
        double dt = (cpu_s() - t0) / it;
        std::printf("matmul %-5s %5lld x %-5lld n=%-3d %9.1f us  %7.2f GB/s weights  %7.2f GFLOP/s\n",
                    ggml_type_name(t), (long long)rows, (long long)cols, n, dt * 1e6, rb * rows / dt / 1e9,
                    2.0 * rows * cols * n / dt / 1e9);
      }
    }
  }
  // The weight-format decision at a DRAM-sized matrix (the demo model's output head, 49152 x 576, larger than
  // the caches): the same GEMV with the weights kept as F32 (converted at load), Q8_0 and Q4_1 (as in the file).
  for (GGMLType t : {GGMLType::F32, GGMLType::Q8_0, GGMLType::Q4_1}) {
    const int64_t rows = 49152, cols = 576;
    const size_t rb = ggml_row_bytes(t, cols);
    std::vector<uint8_t> w(rb * rows, 0x11);
    QMatrix m{t, w.data(), rows, cols, rb};
    std::vector<float> x(cols, 0.5f), out(rows);
    matmul_cpu(out.data(), x.data(), m, 1);
    double t0 = cpu_s();
    for (int i = 0; i < iters / 2 + 1; ++i) matmul_cpu(out.data(), x.data(), m, 1);
    double dt = (cpu_s() - t0) / (iters / 2 + 1);
    std::printf("head GEMV %-5s 49152 x 576: %6.1f MB  %8.2f ms  %6.2f GB/s\n", ggml_type_name(t), rb * rows / 1e6,
                dt * 1e3, rb * rows / dt / 1e9);
  }
  // attention decode at 512 cached tokens, prefill of 128
  const int H = 9, G = 3, d = 64, ctx = 512;
  std::vector<float> k(size_t(G) * ctx * d, 0.01f), v(k.size(), 0.02f), q(size_t(128) * H * d, 0.1f), o(q.size());
  for (int nq : {1, 128}) {
    double t0 = cpu_s();
    for (int i = 0; i < iters; ++i) attention_cpu(o.data(), q.data(), k.data(), v.data(), nq, ctx, H, G, d, ctx);
    std::printf("attention n_q=%d n_kv=%d: %.1f us\n", nq, ctx, (cpu_s() - t0) / iters * 1e6);
  }
  return 0;
}
