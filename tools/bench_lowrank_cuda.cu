// bench_lowrank_cuda: decode attention over the low-rank KV cache (kernels/attention_lowrank.cu) against the
// full-cache split-K decode kernel (kernels/attention.cu): rows lowrank_fp32 and lowrank_bf16 are the block program
// (LowRankKernel::generic), lowrank_bf16_tc the tensor-core kernel (kernels/attention_lowrank_tc.cu); one
// layer at Llama-3-8B shapes (32 query heads, 8 KV
// heads, head_dim 128; r_k 32, values 32/64/128 laid out by the seed policy's prefill rule: 40% / 40% / 20%).
// For each context it times the kernels (CUDA events, mean over --reps launches after a warm-up) and reports the
// bytes each reads from global memory and the GB/s that implies, as a percentage of the device-to-device copy
// bandwidth measured in the same run; then the per-token figure for 32 layers.
//
//   bench_lowrank_cuda [--ctx 1024,8192,32768] [--reps 50] [--prefill N] [--json]
//   (--prefill N: also one layer's prefill attention of N tokens: full cache, block program, tensor cores)
//
// Bytes read: full = 2 (K, V) * n_kv_heads * n * head_dim * 2 B. Compressed = n_kv_heads * (n * r_k + sum of
// value ranks) * sizeof(cache dtype) + n_kv_heads * n * 12 B (voff + vrank, read by every KV head's blocks)
// + U_K (n_kv_heads * r_k * head_dim * 4 B per split block: counted once; the rest hits L2).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "engine/kv_lowrank.h"
#include "kernels/attention_cuda.h"
#include "kernels/attention_lowrank_cuda.h"
#include "kernels/cuda_events.cuh"
#include "kernels/ops_cpu.h"

using namespace llm;

namespace {

constexpr int kHeads = 32, kKV = 8, kHD = 128, kRK = 32, kLayers = 32;
const KVRanks kRanks{kRK, 32, 64, 128};

// Mean milliseconds per call of fn over reps calls, after 3 warm-up calls.
template <class F>
double time_ms(F&& fn, int reps) {
  for (int i = 0; i < 3; ++i) fn();
  CUDA_CHECK(cudaDeviceSynchronize());
  CudaEvents ev;
  CUDA_CHECK(cudaEventRecord(ev.a));
  for (int i = 0; i < reps; ++i) fn();
  CUDA_CHECK(cudaEventRecord(ev.b));
  return double(ev.ms()) / reps;
}

double copy_bandwidth() {
  size_t free_b = 0, total_b = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  const size_t bytes = std::min<size_t>(size_t(1) << 30, free_b / 4);
  DeviceBuffer a(bytes), b(bytes);
  CUDA_CHECK(cudaMemset(a.ptr, 1, bytes));
  const double ms = time_ms([&] { CUDA_CHECK(cudaMemcpyAsync(b.ptr, a.ptr, bytes, cudaMemcpyDeviceToDevice)); }, 10);
  return 2.0 * double(bytes) / (ms * 1e-3);  // read + write
}

// n small pseudo-random values (an LCG: the data only has to be finite and not all equal)
template <class T>
DeviceBuffer random_device(size_t n, float scale, uint32_t seed) {
  std::vector<T> h(n);
  uint32_t x = seed;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    const float f = scale * (float(x >> 8) / float(1u << 24) * 2.0f - 1.0f);
    if constexpr (std::is_same_v<T, float>)
      h[i] = f;
    else
      h[i] = __float2bfloat16_rn(f);
  }
  DeviceBuffer d(n * sizeof(T));
  CUDA_CHECK(cudaMemcpy(d.ptr, h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

struct Result {
  std::string kernel;
  int ctx = 0;
  double ms = 0, bytes = 0;
};

// One layer's seeded compressed cache of n tokens (value ranks by the seed policy's prefill rule) with cache dtype
// T, n_q queries, and the kernel arguments over it.
template <class T>
struct LowRankCache {
  std::vector<int64_t> voff;
  DeviceBuffer q, ck, uk, cv, dvoff, dvrank, dinv;
  LowRankAttentionCudaArgs<T> a;
  LowRankCache(int n, int n_q, uint32_t seed, LowRankKernel kernel) {
    std::vector<int32_t> vrank(n);
    int step = 0;
    kv_policy_ranks(vrank.data(), KVRankPolicy::seed, kRanks, 0, n, step, {});
    voff.assign(n + 1, 0);
    for (int t = 0; t < n; ++t) voff[t + 1] = voff[t] + vrank[t];
    std::vector<float> inv(kHD / 2);
    RopeScaling sc;
    sc.type = RopeScaling::Type::llama3;
    sc.factor = 8.0f;
    rope_inv_freq_cpu(inv.data(), kHD, 500000.0f, sc);
    q = random_device<float>(size_t(n_q) * kHeads * kHD, 1.0f, seed);
    ck = random_device<T>(size_t(kKV) * n * kRK, 1.0f, seed + 1);
    uk = random_device<float>(size_t(kKV) * kRK * kHD, 0.5f, seed + 2);
    cv = random_device<T>(size_t(kKV) * voff[n], 1.0f, seed + 3);
    dvoff = DeviceBuffer(voff.size() * 8);
    dvrank = DeviceBuffer(vrank.size() * 4);
    dinv = DeviceBuffer(inv.size() * 4);
    CUDA_CHECK(cudaMemcpy(dvoff.ptr, voff.data(), voff.size() * 8, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dvrank.ptr, vrank.data(), vrank.size() * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dinv.ptr, inv.data(), inv.size() * 4, cudaMemcpyHostToDevice));
    a.q = q.as<float>();
    a.ck = ck.as<T>();
    a.uk = uk.as<float>();
    a.cv = cv.as<T>();
    a.voff = dvoff.as<int64_t>();
    a.vrank = dvrank.as<int32_t>();
    a.ck_stride = n;
    a.cv_stride = voff[n];
    a.r_k = kRK;
    a.r_vmax = kRanks.v_max();
    a.n_heads = kHeads;
    a.n_kv_heads = kKV;
    a.head_dim = kHD;
    a.inv_freq = dinv.as<float>();
    a.v_align = 32;  // the seed ranks 32/64/128
    a.kernel = kernel;
  }
};

// One layer's compressed decode at context ctx with cache dtype T.
template <class T>
Result bench_lowrank(const char* name, int ctx, int sms, int reps,
                     LowRankKernel kernel = LowRankKernel::generic) {
  LowRankCache<T> c(ctx, 1, 1, kernel);
  const LowRankAttentionCudaArgs<T>& a = c.a;
  const std::vector<int64_t>& voff = c.voff;
  const std::vector<int> pos = {ctx - 1};
  DeviceBuffer dpos(4);
  CUDA_CHECK(cudaMemcpy(dpos.ptr, pos.data(), 4, cudaMemcpyHostToDevice));
  const int splits = attention_lowrank_decode_splits(kKV, ctx, sms);
  DeviceBuffer ws(attention_lowrank_decode_workspace_floats(kHeads, a.r_vmax, splits) * 4), z(kHeads * a.r_vmax * 4);
  Result r;
  r.kernel = name;
  r.ctx = ctx;
  r.ms = time_ms([&] { attention_lowrank_decode_cuda<T>(z.as<float>(), a, dpos.as<int>(), splits, ws.as<float>(),
                                                        nullptr); }, reps);
  r.bytes = double(kKV) * (double(ctx) * kRK + double(voff[ctx])) * sizeof(T) + double(kKV) * ctx * 12.0 +
            double(kKV) * kRK * kHD * 4.0;
  return r;
}

Result bench_full(int ctx, int sms, int reps) {
  const std::vector<int> pos = {ctx - 1};
  DeviceBuffer q = random_device<bf16>(size_t(kHeads) * kHD, 1.0f, 5);
  DeviceBuffer k = random_device<bf16>(size_t(kKV) * ctx * kHD, 1.0f, 6);
  DeviceBuffer v = random_device<bf16>(size_t(kKV) * ctx * kHD, 1.0f, 7);
  DeviceBuffer dpos(4), out(size_t(kHeads) * kHD * 2);
  CUDA_CHECK(cudaMemcpy(dpos.ptr, pos.data(), 4, cudaMemcpyHostToDevice));
  const int splits = attention_decode_splits(kKV, ctx, sms);
  DeviceBuffer ws(attention_decode_workspace_floats(kHeads, kHD, splits) * 4);
  Result r;
  r.kernel = "full_bf16";
  r.ctx = ctx;
  r.ms = time_ms([&] { attention_decode_cuda(out.as<bf16>(), q.as<bf16>(), k.as<bf16>(), v.as<bf16>(),
                                             dpos.as<int>(), kHeads, kKV, kHD, ctx, splits, ws.as<float>(),
                                             nullptr); }, reps);
  r.bytes = 2.0 * kKV * double(ctx) * kHD * 2.0;
  return r;
}

// One layer's prefill attention of n tokens from an empty cache (the prompt's keys all in the cache), ms: the full
// bf16 cache's kernel (attention_prefill_cuda) or the low-rank one (kernel = generic or tensor), bf16 caches.
double bench_prefill(int n, int reps, const char* which) {
  const std::string w = which;
  if (w == "full") {
    DeviceBuffer q = random_device<bf16>(size_t(n) * kHeads * kHD, 1.0f, 11);
    DeviceBuffer k = random_device<bf16>(size_t(kKV) * n * kHD, 1.0f, 12);
    DeviceBuffer v = random_device<bf16>(size_t(kKV) * n * kHD, 1.0f, 13);
    DeviceBuffer out(size_t(n) * kHeads * kHD * 2);
    return time_ms([&] { attention_prefill_cuda(out.as<bf16>(), q.as<bf16>(), k.as<bf16>(), v.as<bf16>(), n, n,
                                                kHeads, kKV, kHD, n, nullptr); }, reps);
  }
  LowRankCache<bf16> c(n, n, 14, w == "tensor" ? LowRankKernel::tensor : LowRankKernel::generic);
  const LowRankAttentionCudaArgs<bf16>& a = c.a;
  DeviceBuffer z(size_t(n) * kHeads * a.r_vmax * 4),
      ws(attention_lowrank_prefill_workspace_floats(n, kHeads, a.r_vmax) * 4);
  return time_ms([&] { attention_lowrank_prefill_cuda<bf16>(z.as<float>(), a, n, n, ws.as<float>(), nullptr); },
                 reps);
}

std::vector<int> parse_ctx(const char* s) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const int c = std::atoi(item.c_str());
    if (c < 1) fail("bench_lowrank_cuda: --ctx wants positive comma-separated token counts, got '", s, "'");
    out.push_back(c);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::vector<int> ctxs = {1024, 8192, 32768};
    int reps = 50, prefill = 0;
    bool json = false;
    for (int i = 1; i < argc; ++i) {
      if (!std::strcmp(argv[i], "--json")) {
        json = true;
      } else if (!std::strcmp(argv[i], "--ctx") && i + 1 < argc) {
        ctxs = parse_ctx(argv[++i]);
      } else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) {
        reps = std::max(1, std::atoi(argv[++i]));
      } else if (!std::strcmp(argv[i], "--prefill") && i + 1 < argc) {
        prefill = std::atoi(argv[++i]);
        if (prefill < 1) fail("bench_lowrank_cuda: --prefill wants a positive token count, got '", argv[i], "'");
      } else {
        std::fprintf(stderr, "usage: bench_lowrank_cuda [--ctx 1024,8192,32768] [--reps 50] [--prefill N] [--json]\n");
        return 2;
      }
    }
    if (cuda_devices() == 0) fail("bench_lowrank_cuda: no CUDA device found (run it on the GPU machine)");
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    const int sms = prop.multiProcessorCount;
    const double bw = copy_bandwidth();
    if (!json)
      std::printf("device %s (%d SMs), copy bandwidth %.0f GB/s; one layer, Llama-3-8B shapes (32/8 heads, head_dim "
                  "128, r_k %d, values 32/64/128 by the seed rule)\n%-14s %7s %10s %10s %8s %7s %12s %9s\n",
                  prop.name, sms, bw / 1e9, kRK, "kernel", "ctx", "us/layer", "MB read", "GB/s", "% copy",
                  "ms/token*32", "vs full");
    for (int ctx : ctxs) {
      const Result full = bench_full(ctx, sms, reps);
      for (const Result& r : {full, bench_lowrank<float>("lowrank_fp32", ctx, sms, reps),
                              bench_lowrank<bf16>("lowrank_bf16", ctx, sms, reps),
                              bench_lowrank<bf16>("lowrank_bf16_tc", ctx, sms, reps, LowRankKernel::tensor)}) {
        const double gbs = r.bytes / (r.ms * 1e-3) / 1e9;
        const double pct = 100.0 * gbs * 1e9 / bw;
        if (json)
          std::printf("{\"device\": \"%s\", \"kernel\": \"%s\", \"ctx\": %d, \"us_per_layer\": %.2f, "
                      "\"bytes_read\": %.0f, \"gb_s\": %.1f, \"pct_of_copy_bw\": %.1f, \"ms_per_token_32_layers\": "
                      "%.3f, \"speedup_vs_full\": %.3f, \"copy_gb_s\": %.1f}\n",
                      prop.name, r.kernel.c_str(), r.ctx, r.ms * 1e3, r.bytes, gbs, pct, r.ms * kLayers,
                      full.ms / r.ms, bw / 1e9);
        else
          std::printf("%-14s %7d %10.1f %10.2f %8.0f %6.1f%% %12.3f %8.2fx\n", r.kernel.c_str(), r.ctx, r.ms * 1e3,
                      r.bytes / 1e6, gbs, pct, r.ms * kLayers, full.ms / r.ms);
      }
    }
    if (prefill > 0) {  // one layer's prefill attention of `prefill` tokens: full cache, block program, tensor cores
      const int pr = std::max(1, reps / 10);
      const double full_ms = bench_prefill(prefill, pr, "full");
      for (const char* which : {"full", "generic", "tensor"}) {
        const double ms = std::strcmp(which, "full") ? bench_prefill(prefill, pr, which) : full_ms;
        const double tok_s = prefill / (ms * 1e-3 * kLayers);  // the attention's share of a 32-layer prefill
        if (json)
          std::printf("{\"device\": \"%s\", \"kernel\": \"prefill_%s\", \"n_tokens\": %d, \"us_per_layer\": %.2f, "
                      "\"tok_s_attention_32_layers\": %.0f, \"speedup_vs_full\": %.3f}\n",
                      prop.name, which, prefill, ms * 1e3, tok_s, full_ms / ms);
        else
          std::printf("prefill %-8s %6d tokens: %10.1f us/layer, %9.0f tok/s (attention only, 32 layers), %.2fx of "
                      "full\n", which, prefill, ms * 1e3, tok_s, full_ms / ms);
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
