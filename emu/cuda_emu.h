// CPU emulation of the CUDA subset this project uses. Force-included (g++ -include emu/cuda_emu.h) into the
// kernels/*.cu, engine/*.cu and tests/cuda/*.cu sources when they are compiled as C++ for the emulated build
// (LLM_CUDA_EMU=ON, see emu/CMakeLists.txt). The real toolkit headers give the host types (dim3, cudaError_t,
// __nv_bfloat16 and its host conversions, cublasLt declarations); this file adds what only nvcc provides:
// __shared__ as block-wide storage, threadIdx & co. per emulated thread, barriers, warp shuffles, atomics,
// device intrinsics, and kernel launches (the build rewrites `k<<<cfg>>>(args)` into `::emu::Launcher(k, "k",
// cfg)(args)`, see emu/transform.cmake). emu/cuda_emu.cpp runs each block's threads as fibers with real
// barrier semantics and reports deadlocks, divergent barriers and bad launches.
#pragma once

// Blocks run one after another on one OS thread, so per-block shared memory can be static storage. All of it goes
// into one ELF section, emu_shared, which the emulator fills with 0xff bytes (NaN / -1) at every launch, so that a
// kernel reading shared memory it never wrote sees garbage, as on the GPU, not a previous launch's values.
// (g++ drops the section attribute on static locals of function templates, so template kernels' __shared__ stays
// plain static storage, zero at first and then holding the previous launch's values.)
// (`extern __shared__ T x[];` is rewritten by the transform into a pointer to the launch's dynamic buffer.)
#define __shared__ static __attribute__((section("emu_shared")))
#define __launch_bounds__(...)

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <device_launch_parameters.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

namespace emu {

// One emulated thread (a fiber). The scheduler keeps `current()` pointing at the running one.
struct ThreadState {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
  int linear = 0;  // threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)
};
extern thread_local ThreadState* g_current;
inline ThreadState& current() { return *g_current; }

// Block-wide barrier (__syncthreads); `site` identifies the call (file:line) so that threads waiting at two
// different barriers are reported instead of silently matched.
void sync_threads(const char* site);
// Warp collective: every live lane in `mask` must arrive at the same site; `value` (up to 8 bytes) is published
// and the value of lane `src_lane` returned (src_lane < 0: plain __syncwarp).
uint64_t warp_exchange(unsigned mask, uint64_t value, int src_lane, const char* site);
// Warp collective as warp_exchange, returning every lane's value: out[l] = lane l's (all ones for a lane that did not
// take part). The slots stay valid until the warp's next-but-one collective, so a caller that publishes a pointer
// to its own data may read the other lanes' data through out[] until it enters another collective (the tensor-core
// emulation in kernels/mma.cuh reads, then syncs the warp once more before any lane may change what it published).
void warp_allgather(unsigned mask, uint64_t value, uint64_t* out, const char* site);
// The launch's dynamic shared memory (extern __shared__), poisoned at the start of every block.
void* dynamic_smem();

#define EMU_STR2(x) #x
#define EMU_STR(x) EMU_STR2(x)
#define EMU_SITE __FILE__ ":" EMU_STR(__LINE__)

template <class T>
inline T shfl_impl(unsigned mask, T v, int src, const char* site) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "emulated shuffle: value of up to 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = warp_exchange(mask, bits, src, site);
  T r;
  std::memcpy(&r, &bits, sizeof(T));
  return r;
}
inline int lane_id() { return current().linear & 31; }

// ---- kernel launches -------------------------------------------------------------------------------------
struct LaunchSpec {
  const char* name;
  const void* fn;  // identifies the kernel for cudaFuncSetAttribute
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
};
// Runs (or, while the stream is being captured into a graph, records) a launch: `body(ctx)` is one thread.
struct KernelBody {
  void (*run)(void* ctx);
  void* ctx;
  void (*destroy)(void* ctx);
};
void launch(const LaunchSpec& spec, KernelBody body);

template <class... P>
struct Launcher {
  void (*fn)(P...);
  LaunchSpec spec;
  Launcher(void (*f)(P...), const char* name, dim3 grid, dim3 block, size_t smem = 0, cudaStream_t st = nullptr)
      : fn(f), spec{name, reinterpret_cast<const void*>(f), grid, block, smem, st} {}
  template <class... A>
  void operator()(A&&... args) const {
    static_assert(sizeof...(A) == sizeof...(P), "kernel launched with the wrong number of arguments");
    // Arguments are converted to the parameter types and copied now, as a real launch (and graph capture) does.
    using Tuple = std::tuple<std::decay_t<P>...>;
    struct Ctx {
      void (*fn)(P...);
      Tuple args;
    };
    auto* ctx = new Ctx{fn, Tuple(std::forward<A>(args)...)};
    KernelBody body{[](void* c) {
                      auto* k = static_cast<Ctx*>(c);
                      std::apply(k->fn, k->args);  // each thread gets its own copy of the parameters
                    },
                    ctx, [](void* c) { delete static_cast<Ctx*>(c); }};
    launch(spec, body);
  }
};

}  // namespace emu

#define threadIdx (::emu::current().thread_idx)
#define blockIdx (::emu::current().block_idx)
#define blockDim (::emu::current().block_dim)
#define gridDim (::emu::current().grid_dim)

#define __syncthreads() ::emu::sync_threads(EMU_SITE)
#define __syncwarp(...) ((void)::emu::warp_exchange(::emu::syncwarp_mask(__VA_ARGS__), 0, -1, EMU_SITE))
#define __shfl_sync(mask, v, src, ...) \
  ::emu::shfl_impl((mask), (v), ((::emu::lane_id() & ~(::emu::width_of(__VA_ARGS__) - 1)) + ((src) & (::emu::width_of(__VA_ARGS__) - 1))), EMU_SITE)
#define __shfl_xor_sync(mask, v, lm, ...) \
  ::emu::shfl_impl((mask), (v), ::emu::xor_src((lm), ::emu::width_of(__VA_ARGS__)), EMU_SITE)
#define __shfl_down_sync(mask, v, d, ...) \
  ::emu::shfl_impl((mask), (v), ::emu::down_src((d), ::emu::width_of(__VA_ARGS__)), EMU_SITE)

namespace emu {
inline unsigned syncwarp_mask() { return 0xffffffffu; }
inline unsigned syncwarp_mask(unsigned m) { return m; }
inline int width_of() { return 32; }
inline int width_of(int w) { return w; }
inline int xor_src(int lane_mask, int width) {
  const int lane = lane_id(), s = lane ^ lane_mask;
  // Outside the lane's width-segment: the lane keeps its own value (CUDA semantics).
  return (s & ~(width - 1)) == (lane & ~(width - 1)) ? s : lane;
}
inline int down_src(int delta, int width) {
  const int lane = lane_id(), s = lane + delta;
  return (s & ~(width - 1)) == (lane & ~(width - 1)) ? s : lane;
}
}  // namespace emu

// ---- device intrinsics: plain host operations (sources are compiled with -ffp-contract=off) -------------------
template <class T>
inline T __ldg(const T* p) { return *p; }
template <class T>
inline T __ldcs(const T* p) { return *p; }
template <class T>
inline void __stcs(T* p, T v) { *p = v; }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline void __sincosf(float x, float* s, float* c) { *s = sinf(x); *c = cosf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline int __float2int_rn(float x) { return int(nearbyintf(x)); }
inline float __int_as_float(int x) { float f; std::memcpy(&f, &x, 4); return f; }
inline float __uint_as_float(unsigned x) { float f; std::memcpy(&f, &x, 4); return f; }
inline int __float_as_int(float x) { int i; std::memcpy(&i, &x, 4); return i; }
inline unsigned __float_as_uint(float x) { unsigned i; std::memcpy(&i, &x, 4); return i; }

// Atomics: the threads of the emulator never run at the same time, so a read-modify-write is atomic.
template <class T>
inline T atomicAdd(T* p, T v) { T o = *p; *p = o + v; return o; }
template <class T>
inline T atomicMin(T* p, T v) { T o = *p; *p = v < o ? v : o; return o; }
template <class T>
inline T atomicMax(T* p, T v) { T o = *p; *p = v > o ? v : o; return o; }
template <class T>
inline T atomicExch(T* p, T v) { T o = *p; *p = v; return o; }
template <class T>
inline T atomicCAS(T* p, T cmp, T v) { T o = *p; if (o == cmp) *p = v; return o; }

// CUDA's global min/max overloads (integers: the usual promotion; floating point: fminf/fmaxf, NaN-ignoring).
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
template <class A, class B, class = std::enable_if_t<std::is_integral_v<A> && std::is_integral_v<B>>>
inline std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  return C(b) < C(a) ? C(b) : C(a);
}
template <class A, class B, class = std::enable_if_t<std::is_integral_v<A> && std::is_integral_v<B>>>
inline std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  return C(a) < C(b) ? C(b) : C(a);
}

// nvcc's cudaFuncSetAttribute(kernel, ...) overload for a kernel (a function pointer, template kernels included).
template <class... P>
inline cudaError_t cudaFuncSetAttribute(void (*kernel)(P...), cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attr, value);
}
