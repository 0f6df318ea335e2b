// Decode attention over the mixed-precision KV cache (issue 7) vs the full bf16 decode kernel, on the GPU.
//
//   build-gpu/bench_quant_cuda [--json] [--iters N] [--ctx 1024,8192,32768]
//
// For Llama-2-7B (32 query / 32 KV heads) and Llama-3-8B (32 / 8) shapes, head_dim 128, and each context: one
// layer's decode attention (one query token) over
//   bf16       the full cache, attention_decode_cuda (kernels/attention.cu)
//   mixed      8/4/2 bits at 0.2/0.5/0.3 of the entries + the last 32 entries at 16 bits (bf16), group 32:
//              the default `--kv quant:` spec; attention_quant_decode_cuda (kernels/attention_quant.cu)
//   q8, q4, q2 every entry at one width (no recent window)
// Timing: CUDA events around `iters` steps; one step runs the kernel over every layer copy in turn (cache, offsets
// and widths each their own copy), and there are enough copies that one step over the packed caches reads
// >= 256 MB, five times the H100's L2, so the numbers are DRAM numbers as in a real decode step (where the
// weights flush the L2 between layers). Reported: microseconds per layer, the bytes a layer's
// call reads (cache rows + per-entry offsets and widths for the packed cache), GB/s on those bytes, the speed-up
// over bf16 and the percentage of the device-to-device copy bandwidth measured in the same run.
// Random data (a hash of the index), quantised on the device by quantize_rows_cuda.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/attention_cuda.h"
#include "kernels/attention_quant_cuda.h"
#include "kernels/common.cuh"
#include "kernels/cuda_events.cuh"
#include "kernels/quant_cuda.h"

using namespace llm;

namespace {

__global__ void fill_random_bf16(bf16* x, size_t n, uint32_t seed, float scale) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed ^ uint32_t(i >> 32) * 40503u;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    x[i] = __float2bfloat16_rn(scale * (float(h & 0xffffff) / 8388608.0f - 1.0f));
  }
}
void fill(bf16* x, size_t n, uint32_t seed, float scale) {
  fill_random_bf16<<<1024, 256>>>(x, n, seed, scale);
  CUDA_CHECK_LAUNCH();
}

struct Shape {
  const char* model;
  int n_heads, n_kv_heads, head_dim;
};

double copy_bandwidth_gbs() {
  const size_t bytes = size_t(1) << 30;
  DeviceBuffer a(bytes), b(bytes);
  CUDA_CHECK(cudaMemset(a.ptr, 1, bytes));
  CudaEvents ev;
  CUDA_CHECK(cudaMemcpy(b.ptr, a.ptr, bytes, cudaMemcpyDeviceToDevice));
  CUDA_CHECK(cudaEventRecord(ev.a));
  for (int i = 0; i < 10; ++i) CUDA_CHECK(cudaMemcpy(b.ptr, a.ptr, bytes, cudaMemcpyDeviceToDevice));
  CUDA_CHECK(cudaEventRecord(ev.b));
  return 2.0 * bytes * 10 / (ev.ms() * 1e-3) / 1e9;  // read + write
}

// Times fn(layer) over `layers` copies, iters times; returns microseconds per layer call.
template <class F>
double time_layers(int layers, int iters, F fn) {
  for (int l = 0; l < layers; ++l) fn(l);  // warm-up
  CudaEvents ev;
  CUDA_CHECK(cudaEventRecord(ev.a));
  for (int it = 0; it < iters; ++it)
    for (int l = 0; l < layers; ++l) fn(l);
  CUDA_CHECK(cudaEventRecord(ev.b));
  return double(ev.ms()) * 1e3 / (double(iters) * layers);
}

// Widths of n entries: the last `recent` at 16, the rest 8/4/2 at fractions f8/f4/(rest), spread by a hash.
std::vector<uint8_t> widths(int n, float f8, float f4, int recent, int only) {
  std::vector<uint8_t> w(n);
  for (int e = 0; e < n; ++e) {
    if (only) {
      w[e] = uint8_t(only);
      continue;
    }
    if (e >= n - recent) {
      w[e] = 16;
      continue;
    }
    const float u = float((uint32_t(e) * 2654435761u) >> 8) / 16777216.0f;
    w[e] = u < f8 ? 8 : u < f8 + f4 ? 4 : 2;
  }
  return w;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    bool json = false;
    int iters = 20;
    std::vector<int> ctxs = {1024, 8192, 32768};
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--json") {
        json = true;
      } else if (a == "--iters" && i + 1 < argc) {
        iters = std::max(1, std::atoi(argv[++i]));
      } else if (a == "--ctx" && i + 1 < argc) {
        ctxs.clear();
        std::string s = argv[++i];
        for (size_t p = 0; p <= s.size();) {
          const size_t q = std::min(s.find(',', p), s.size());
          const int v = std::atoi(s.substr(p, q - p).c_str());
          if (v <= 0) fail("bench_quant_cuda: --ctx wants positive integers separated by commas, got '", s, "'");
          ctxs.push_back(v);
          p = q + 1;
        }
      } else {
        std::fprintf(stderr, "usage: %s [--json] [--iters N] [--ctx 1024,8192,32768]\n", argv[0]);
        return 2;
      }
    }
    if (cuda_devices() == 0) fail("bench_quant_cuda: no CUDA device (run it on the GPU machine: tools/gpu_session.sh)");
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    const int sms = prop.multiProcessorCount;
    const double copy_gbs = copy_bandwidth_gbs();
    const int group = 32, recent = 32;
    nlohmann::json out = nlohmann::json::array();
    if (!json) std::printf("device %s, %d SMs; device-to-device copy %.0f GB/s\n", prop.name, sms, copy_gbs);

    for (const Shape& sh : {Shape{"llama-2-7b", 32, 32, 128}, Shape{"llama-3-8b", 32, 8, 128}}) {
      const int hd = sh.head_dim, Hkv = sh.n_kv_heads, H = sh.n_heads;
      for (const int n : ctxs) {
        const size_t vals = size_t(Hkv) * n * hd;
        const size_t bf16_layer = 2 * vals * 2;
        // layer copies cycled per step: enough that a step over the packed caches (~1/3 of bf16) reads >= 256 MB
        const size_t packed_est = std::max<size_t>(1, bf16_layer / 3);
        const int layers = std::clamp(ceil_div(int64_t(256) << 20, int64_t(packed_est)), 1, 512);
        // one bf16 K and V per layer copy (the source of every packed cache too)
        std::vector<DeviceBuffer> kc, vc;
        for (int l = 0; l < layers; ++l) {
          kc.emplace_back(vals * 2);
          vc.emplace_back(vals * 2);
          fill(kc.back().as<bf16>(), vals, 17u + 2 * l, 1.0f);
          fill(vc.back().as<bf16>(), vals, 18u + 2 * l, 1.0f);
        }
        DeviceBuffer dq(size_t(H) * hd * 2), dout(size_t(H) * hd * 2), dpos(4), dn(4);
        fill(dq.as<bf16>(), size_t(H) * hd, 5u, 2.0f);
        const int last = n - 1;
        CUDA_CHECK(cudaMemcpy(dpos.ptr, &last, 4, cudaMemcpyHostToDevice));
        CUDA_CHECK(cudaMemcpy(dn.ptr, &n, 4, cudaMemcpyHostToDevice));

        auto record = [&](const char* cache, double us, double bytes, double base_us) {
          const double gbs = bytes / (us * 1e-6) / 1e9;
          out.push_back({{"model", sh.model}, {"n_heads", H}, {"n_kv_heads", Hkv}, {"head_dim", hd}, {"ctx", n},
                         {"cache", cache}, {"layers_cycled", layers}, {"us_per_layer", us},
                         {"bytes_per_layer", bytes}, {"gb_per_s", gbs}, {"pct_of_copy", 100.0 * gbs / copy_gbs},
                         {"speedup_vs_bf16", base_us / us}, {"device", prop.name}});
          if (!json)
            std::printf("%-10s ctx %6d  %-6s %9.1f us/layer  %8.2f MB  %7.0f GB/s (%3.0f%% of copy)  %5.2fx vs bf16\n",
                        sh.model, n, cache, us, bytes / 1e6, gbs, 100.0 * gbs / copy_gbs, base_us / us);
        };

        // full bf16 cache
        const int splits_bf = attention_decode_splits(Hkv, n, sms);
        DeviceBuffer ws_bf(attention_decode_workspace_floats(H, hd, splits_bf) * 4);
        const double us_bf = time_layers(layers, iters, [&](int l) {
          attention_decode_cuda(dout.as<bf16>(), dq.as<bf16>(), kc[l].as<bf16>(), vc[l].as<bf16>(), dpos.as<int>(), H,
                                Hkv, hd, n, splits_bf, ws_bf.as<float>(), nullptr);
        });
        record("bf16", us_bf, double(bf16_layer), us_bf);

        // packed caches
        struct Mix {
          const char* name;
          int only;
        };
        for (const Mix& mx : {Mix{"mixed", 0}, Mix{"q8", 8}, Mix{"q4", 4}, Mix{"q2", 2}}) {
          const int rows = Hkv * n;
          std::vector<uint8_t> bits(rows);
          std::vector<uint64_t> koff(rows), voff(rows);
          size_t bytes = 0;
          for (int g = 0; g < Hkv; ++g) {
            const std::vector<uint8_t> w = widths(n, 0.2f, 0.5f, std::min(recent, n), mx.only);
            for (int e = 0; e < n; ++e) {
              const int r = g * n + e;
              bits[r] = w[e];
              koff[r] = bytes;
              voff[r] = bytes + quant_row_bytes_cuda(hd, w[e], group, 2);
              bytes += 2 * quant_row_bytes_cuda(hd, w[e], group, 2);
            }
          }
          DeviceBuffer dvoff(size_t(rows) * 8);
          CUDA_CHECK(cudaMemcpy(dvoff.ptr, voff.data(), size_t(rows) * 8, cudaMemcpyHostToDevice));
          std::vector<DeviceBuffer> data, lbits, loff;  // per layer copy: packed rows, widths, key offsets
          for (int l = 0; l < layers; ++l) {
            data.emplace_back(bytes);
            lbits.emplace_back(size_t(rows));
            loff.emplace_back(size_t(rows) * 8);
            CUDA_CHECK(cudaMemcpy(lbits.back().ptr, bits.data(), size_t(rows), cudaMemcpyHostToDevice));
            CUDA_CHECK(cudaMemcpy(loff.back().ptr, koff.data(), size_t(rows) * 8, cudaMemcpyHostToDevice));
            QuantRowsArgs a;
            a.dst = data.back().as<uint8_t>();
            a.bits = lbits.back().as<uint8_t>();
            a.x_stride = hd;
            a.n_rows = rows;
            a.n = hd;
            a.group = group;
            a.row16 = 2;
            a.dst_off = loff.back().as<uint64_t>();
            quantize_rows_cuda(a, kc[l].as<bf16>(), nullptr);
            a.dst_off = dvoff.as<uint64_t>();
            quantize_rows_cuda(a, vc[l].as<bf16>(), nullptr);
          }
          CUDA_CHECK(cudaDeviceSynchronize());
          const int splits = attention_quant_decode_splits(Hkv, n, sms);
          DeviceBuffer ws(attention_quant_workspace_floats(1, H, hd, splits) * 4);
          QuantDecodeArgs a;
          a.q = dq.as<bf16>();
          a.n_kv = dn.as<int>();
          a.stride = n;
          a.n_q = 1;
          a.n_heads = H;
          a.n_kv_heads = Hkv;
          a.head_dim = hd;
          a.group = group;
          a.row16 = 2;
          const double us = time_layers(layers, iters, [&](int l) {
            a.data = data[l].as<uint8_t>();
            a.off = loff[l].as<uint64_t>();
            a.bits = lbits[l].as<uint8_t>();
            attention_quant_decode_cuda(dout.as<bf16>(), a, splits, ws.as<float>(), nullptr);
          });
          record(mx.name, us, double(bytes) + double(rows) * 9.0, us_bf);  // + 8 B offset and 1 B width an entry
        }
      }
    }
    if (json) std::printf("%s\n", out.dump(1).c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
