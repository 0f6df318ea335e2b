// The CUDA emulator's run time (see emu/cuda_emu.h): the block scheduler (threads as fibers, barriers, warp
// collectives, deadlock and divergence reports), kernel launches with H100 launch limits, and a shim of the CUDA
// runtime, cuBLASLt and CUB calls the project makes. Everything runs synchronously on the calling OS thread;
// stream capture records launches and copies as closures that cudaGraphLaunch replays.
// Anything not emulated fails loudly (an error status plus a line on stderr), never a silent success.
#include "emu/cuda_emu.h"

#include <cublasLt.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMU_ASAN 1
#endif
#endif
#ifdef EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if !defined(__x86_64__)
#error "emu/cuda_emu.cpp: the fiber switch is written for x86-64 only"
#endif

// ---- fiber switch (x86-64 SysV): saves the callee-saved registers, MXCSR and the x87 control word ----------------
extern "C" void emu_switch(void** save_sp, void* new_sp);
extern "C" void emu_fiber_start();
asm(R"(
  .text
  .globl emu_switch
  .type emu_switch,@function
emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_switch,.-emu_switch
  .globl emu_fiber_start
  .type emu_fiber_start,@function
emu_fiber_start:
  movq %r12, %rdi
  call emu_fiber_main@PLT
  ud2
  .size emu_fiber_start,.-emu_fiber_start
)");

namespace emu {

thread_local ThreadState* g_current = nullptr;

namespace {

#ifdef EMU_ASAN
constexpr size_t kStackBytes = 512 * 1024;  // ASan's redzones make frames several times larger
#else
constexpr size_t kStackBytes = 128 * 1024;
#endif
constexpr int kMaxThreads = 1024;
constexpr size_t kDefaultSmem = 48 * 1024, kOptinSmem = 227 * 1024;  // H100: 48 KB default, 227 KB opt-in

enum class Wait { ready, block_barrier, warp_collective, done };

struct Fiber {
  ThreadState st;
  void* sp = nullptr;
  char* stack_lo = nullptr;  // usable stack [stack_lo, stack_lo + kStackBytes); a guard page below
  void* fake_stack = nullptr;
  Wait wait = Wait::ready;
  const char* site = nullptr;
  int buf = 0;  // warp slot buffer of the collective this thread is in
};

struct Warp {
  unsigned exists = 0, exited = 0;  // lanes of the block in this warp / lanes that returned
  unsigned arrived = 0, mask = 0;
  const char* site = nullptr;
  int gen = 0;
  unsigned published[2] = {0, 0};  // lanes that published into slot[b] in the last completed collective
  uint64_t slot[2][32] = {};
};

struct Block;

[[noreturn]] void fatal_block(const Block& b, const std::string& what);

bool same_site(const char* a, const char* b) { return a == b || (a && b && std::strcmp(a, b) == 0); }

std::string str(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

struct Block {
  const LaunchSpec* spec = nullptr;
  uint3 idx{};
  int n = 0, live = 0;
  std::vector<Fiber>* fibers = nullptr;
  std::vector<Warp> warps;
  int barrier_arrived = 0;
  const char* barrier_site = nullptr;
};

// Per OS thread: the stacks (reused by every launch) and the running block.
struct Scheduler {
  std::vector<Fiber> fibers;
  void* sched_sp = nullptr;
  void* sched_fake = nullptr;
  const void* sched_bottom = nullptr;
  size_t sched_size = 0;
  Fiber* running = nullptr;
  Block* block = nullptr;
  KernelBody body{};
  unsigned char* smem = nullptr;
  size_t smem_bytes = 0;
  std::vector<int> order;

  Scheduler() : fibers(kMaxThreads) {}
  ~Scheduler() {
    for (Fiber& f : fibers)
      if (f.stack_lo) munmap(f.stack_lo - 4096, kStackBytes + 4096);
  }
};
thread_local Scheduler* t_sched = nullptr;
Scheduler& sched() {
  thread_local std::unique_ptr<Scheduler> s;
  if (!s) {
    s = std::make_unique<Scheduler>();
    t_sched = s.get();
  }
  return *s;
}

void release_block_barrier(Block& b) {
  for (Fiber& f : *b.fibers)
    if (&f - b.fibers->data() < b.n && f.wait == Wait::block_barrier) f.wait = Wait::ready;
  b.barrier_arrived = 0;
  b.barrier_site = nullptr;
}

unsigned participants(const Warp& w) { return w.mask & w.exists & ~w.exited; }

void release_warp(Block& b, int wi) {
  Warp& w = b.warps[size_t(wi)];
  const int buf = w.gen & 1;
  w.published[buf] = w.arrived;
  for (int l = 0; l < 32; ++l)
    if (w.arrived >> l & 1) (*b.fibers)[size_t(wi * 32 + l)].wait = Wait::ready;
  w.arrived = 0;
  w.site = nullptr;
  ++w.gen;
}

void yield_to_scheduler(Fiber& f) {
  Scheduler& s = *t_sched;
#ifdef EMU_ASAN
  __sanitizer_start_switch_fiber(&f.fake_stack, s.sched_bottom, s.sched_size);
#endif
  emu_switch(&f.sp, s.sched_sp);
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(f.fake_stack, &s.sched_bottom, &s.sched_size);
#endif
  g_current = &f.st;
}

std::string describe_threads(const Block& b) {
  // Runs of consecutive threads in the same state, e.g. "threads 0-31: __syncthreads at kernels/x.cu:12".
  std::string out;
  int start = 0;
  auto label = [&](int i) {
    const Fiber& f = (*b.fibers)[size_t(i)];
    switch (f.wait) {
      case Wait::ready: return std::string("runnable");
      case Wait::done: return std::string("exited");
      case Wait::block_barrier: return std::string("waiting at __syncthreads ") + f.site;
      case Wait::warp_collective: return std::string("waiting at warp collective ") + f.site;
    }
    return std::string("?");
  };
  for (int i = 1; i <= b.n; ++i) {
    if (i == b.n || label(i) != label(start)) {
      out += str("    threads %d-%d: %s\n", start, i - 1, label(start).c_str());
      start = i;
    }
  }
  return out;
}

[[noreturn]] void fatal_block(const Block& b, const std::string& what) {
  std::fprintf(stderr,
               "cuda emulator: kernel %s, block (%u,%u,%u) of grid (%u,%u,%u), %d threads: %s\n%s"
               "(the emulator runs each block's threads as fibers with CUDA's barrier rules: fix the kernel)\n",
               b.spec->name, b.idx.x, b.idx.y, b.idx.z, b.spec->grid.x, b.spec->grid.y, b.spec->grid.z, b.n,
               what.c_str(), describe_threads(b).c_str());
  std::fflush(stderr);
  std::abort();
}

void thread_exit_update(Block& b, Fiber& f) {
  const int t = f.st.linear;
  f.wait = Wait::done;
  --b.live;
  Warp& w = b.warps[size_t(t >> 5)];
  w.exited |= 1u << (t & 31);
  if (w.arrived && (w.arrived & participants(w)) == participants(w)) release_warp(b, t >> 5);
  if (b.barrier_arrived && b.barrier_arrived == b.live) release_block_barrier(b);
}

}  // namespace
}  // namespace emu

extern "C" [[gnu::used]] void emu_fiber_main(emu::Fiber* f) {
  using namespace emu;
  Scheduler& s = *t_sched;
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &s.sched_bottom, &s.sched_size);
#endif
  g_current = &f->st;
  s.body.run(s.body.ctx);
  thread_exit_update(*s.block, *f);
#ifdef EMU_ASAN
  __sanitizer_start_switch_fiber(nullptr, s.sched_bottom, s.sched_size);
#endif
  void* dead = nullptr;
  emu_switch(&dead, s.sched_sp);
  __builtin_unreachable();
}

namespace emu {

void sync_threads(const char* site) {
  Scheduler& s = *t_sched;
  if (!s.block) {
    std::fprintf(stderr, "cuda emulator: __syncthreads outside a kernel (%s)\n", site);
    std::abort();
  }
  Block& b = *s.block;
  Fiber& f = *s.running;
  if (b.barrier_arrived == 0) {
    b.barrier_site = site;
  } else if (!same_site(b.barrier_site, site)) {
    f.wait = Wait::block_barrier;
    f.site = site;
    fatal_block(b, str("divergent __syncthreads: thread %d reached %s while others wait at %s", f.st.linear, site,
                       b.barrier_site));
  }
  ++b.barrier_arrived;
  if (b.barrier_arrived == b.live) {
    release_block_barrier(b);
    return;
  }
  f.wait = Wait::block_barrier;
  f.site = site;
  yield_to_scheduler(f);
}

uint64_t warp_exchange(unsigned mask, uint64_t value, int src_lane, const char* site) {
  Scheduler& s = *t_sched;
  if (!s.block) {
    std::fprintf(stderr, "cuda emulator: warp collective outside a kernel (%s)\n", site);
    std::abort();
  }
  Block& b = *s.block;
  Fiber& f = *s.running;
  const int t = f.st.linear, lane = t & 31, wi = t >> 5;
  Warp& w = b.warps[size_t(wi)];
  if (!(mask >> lane & 1))
    fatal_block(b, str("thread %d calls a warp collective at %s with mask 0x%08x that excludes its own lane", t, site,
                       mask));
  if (w.arrived == 0) {
    w.mask = mask;
    w.site = site;
  } else if (w.mask != mask || !same_site(w.site, site)) {
    f.wait = Wait::warp_collective;
    f.site = site;
    fatal_block(b, str("divergent warp collective: lane %d of warp %d reached %s (mask 0x%08x) while lanes 0x%08x wait "
                       "at %s (mask 0x%08x)",
                       lane, wi, site, mask, w.arrived, w.site, w.mask));
  }
  const int buf = w.gen & 1;
  w.slot[buf][lane] = value;
  w.arrived |= 1u << lane;
  f.buf = buf;
  if ((w.arrived & participants(w)) == participants(w)) {
    release_warp(b, wi);
  } else {
    f.wait = Wait::warp_collective;
    f.site = site;
    yield_to_scheduler(f);
  }
  if (src_lane < 0) return 0;
  const int src = src_lane & 31;
  // Reading a lane that did not take part (exited, or outside the block) is undefined on the GPU: poison.
  if (!(w.published[f.buf] >> src & 1)) return ~uint64_t(0);
  return w.slot[f.buf][src];
}

void warp_allgather(unsigned mask, uint64_t value, uint64_t* out, const char* site) {
  warp_exchange(mask, value, -1, site);
  Scheduler& s = *t_sched;
  Fiber& f = *s.running;
  const Warp& w = s.block->warps[size_t(f.st.linear >> 5)];
  for (int l = 0; l < 32; ++l) out[l] = (w.published[f.buf] >> l & 1) ? w.slot[f.buf][l] : ~uint64_t(0);
}

void* dynamic_smem() {
  Scheduler& s = *t_sched;
  return s.smem;
}

namespace {

// ---- device-wide emulator state (launch limits, streams, capture, allocations, last error) --------------------------
struct DeviceState {
  std::mutex mu;
  std::map<const void*, int> max_dyn_smem;  // cudaFuncSetAttribute(MaxDynamicSharedMemorySize)
  std::map<const void*, size_t> allocations;
  size_t allocated = 0;
};
DeviceState& device() {
  static DeviceState d;  // the emulated device: one per process, as a real GPU is
  return d;
}
thread_local cudaError_t t_last_error = cudaSuccess;

cudaError_t set_error(cudaError_t e) {
  if (e != cudaSuccess) t_last_error = e;
  return e;
}

// LLM_CUDA_EMU_ORDER = forward (default) | reverse | shuffle; read once per process.
int schedule_order() {
  static const int mode = [] {
    const char* e = std::getenv("LLM_CUDA_EMU_ORDER");
    if (!e || !*e || std::strcmp(e, "forward") == 0) return 0;
    if (std::strcmp(e, "reverse") == 0) return 1;
    if (std::strcmp(e, "shuffle") == 0) return 2;
    std::fprintf(stderr, "cuda emulator: LLM_CUDA_EMU_ORDER=%s: use forward, reverse or shuffle\n", e);
    std::abort();
  }();
  return mode;
}

void run_block(const LaunchSpec& spec, KernelBody body, uint3 bidx) {
  Scheduler& s = sched();
  Block b;
  b.spec = &spec;
  b.idx = bidx;
  b.n = int(spec.block.x * spec.block.y * spec.block.z);
  b.live = b.n;
  b.fibers = &s.fibers;
  b.warps.resize(size_t((b.n + 31) / 32));
  for (int i = 0; i < b.n; ++i) b.warps[size_t(i >> 5)].exists |= 1u << (i & 31);
  s.block = &b;
  s.body = body;
  if (s.smem_bytes) std::memset(s.smem, 0xff, s.smem_bytes);  // uninitialised shared memory reads as NaN
  for (int i = 0; i < b.n; ++i) {
    Fiber& f = s.fibers[size_t(i)];
    if (!f.stack_lo) {
      void* m = mmap(nullptr, kStackBytes + 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
      if (m == MAP_FAILED) {
        std::fprintf(stderr, "cuda emulator: cannot map a fiber stack\n");
        std::abort();
      }
      mprotect(m, 4096, PROT_NONE);  // guard page: a stack overflow faults instead of corrupting a neighbour
      f.stack_lo = static_cast<char*>(m) + 4096;
    }
#ifdef EMU_ASAN
    __asan_unpoison_memory_region(f.stack_lo, kStackBytes);
#endif
    f.st.block_idx = bidx;
    f.st.block_dim = spec.block;
    f.st.grid_dim = spec.grid;
    f.st.linear = i;
    f.st.thread_idx = uint3{unsigned(i) % spec.block.x, unsigned(i) / spec.block.x % spec.block.y,
                            unsigned(i) / (spec.block.x * spec.block.y)};
    f.wait = Wait::ready;
    f.site = nullptr;
    f.fake_stack = nullptr;
    // Initial frame consumed by emu_switch: MXCSR/x87 CW, r15, r14, r13, r12 (= the fiber), rbx, rbp, return address.
    uintptr_t top = (reinterpret_cast<uintptr_t>(f.stack_lo) + kStackBytes) & ~uintptr_t(15);
    auto* frame = reinterpret_cast<uint64_t*>(top - 64);
    uint32_t mxcsr;
    uint16_t fcw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fcw));
    frame[0] = uint64_t(mxcsr) | uint64_t(fcw) << 32;
    frame[1] = frame[2] = frame[3] = 0;
    frame[4] = reinterpret_cast<uint64_t>(&f);
    frame[5] = frame[6] = 0;
    frame[7] = reinterpret_cast<uint64_t>(&emu_fiber_start);
    f.sp = frame;
  }
  ThreadState* outer = g_current;
  // Order in which runnable threads get the CPU on each pass (LLM_CUDA_EMU_ORDER): a kernel that is missing a
  // barrier reads another thread's data before or after it is written depending on this, so running the tests with
  // `reverse` and `shuffle` too exposes what the default (ascending) order happens to hide.
  std::vector<int>& order = s.order;
  order.resize(size_t(b.n));
  for (int i = 0; i < b.n; ++i) order[size_t(i)] = i;
  const int mode = schedule_order();
  if (mode == 1) std::reverse(order.begin(), order.end());
  uint64_t rng = 0x9e3779b97f4a7c15ull ^ (uint64_t(bidx.x) << 32) ^ (uint64_t(bidx.y) << 16) ^ bidx.z;
  while (b.live > 0) {
    bool progressed = false;
    if (mode == 2)
      for (int i = b.n - 1; i > 0; --i) {  // deterministic Fisher-Yates (xorshift), reproducible per block
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::swap(order[size_t(i)], order[size_t(rng % uint64_t(i + 1))]);
      }
    for (int oi = 0; oi < b.n; ++oi) {
      Fiber& f = s.fibers[size_t(order[size_t(oi)])];
      if (f.wait != Wait::ready) continue;
      progressed = true;
      s.running = &f;
#ifdef EMU_ASAN
      __sanitizer_start_switch_fiber(&s.sched_fake, f.stack_lo, kStackBytes);
#endif
      emu_switch(&s.sched_sp, f.sp);
#ifdef EMU_ASAN
      __sanitizer_finish_switch_fiber(s.sched_fake, nullptr, nullptr);
#endif
    }
    if (!progressed) fatal_block(b, "deadlock: no thread can run");
  }
  g_current = outer;
  s.running = nullptr;
  s.block = nullptr;
}

// Linker-provided bounds of the emu_shared section (every __shared__ variable); weak: there may be none.
extern "C" char __start_emu_shared[] __attribute__((weak));
extern "C" char __stop_emu_shared[] __attribute__((weak));

void run_grid(const LaunchSpec& spec, KernelBody body) {
  Scheduler& s = sched();
  char* const lo = __start_emu_shared;
  char* const hi = __stop_emu_shared;
  if (lo && hi > lo) std::memset(lo, 0xff, size_t(hi - lo));
  if (s.block) {
    std::fprintf(stderr, "cuda emulator: kernel %s launched from inside a kernel (dynamic parallelism is not emulated)\n",
                 spec.name);
    std::abort();
  }
  // Dynamic shared memory: malloc'd at its exact size so that ASan reports an overflow.
  s.smem_bytes = spec.smem;
  s.smem = spec.smem ? static_cast<unsigned char*>(std::malloc(spec.smem)) : nullptr;
  for (unsigned z = 0; z < spec.grid.z; ++z)
    for (unsigned y = 0; y < spec.grid.y; ++y)
      for (unsigned x = 0; x < spec.grid.x; ++x) run_block(spec, body, uint3{x, y, z});
  std::free(s.smem);
  s.smem = nullptr;
  s.smem_bytes = 0;
}

}  // namespace
}  // namespace emu

// ---- streams, events, graphs ----------------------------------------------------------------------------------------
struct CUgraph_st {
  std::vector<std::function<void()>> ops;
};
struct CUgraphExec_st {
  std::vector<std::function<void()>> ops;
};
struct CUstream_st {
  bool capturing = false;
  bool capture_invalid = false;
  CUgraph_st* graph = nullptr;
};
struct CUevent_st {
  double ms = 0.0;
};

namespace emu {
namespace {

thread_local int t_capturing = 0;  // streams of this thread in capture (cudaStreamCaptureModeThreadLocal)
std::vector<CUstream_st*>& capturing_streams() {
  thread_local std::vector<CUstream_st*> v;
  return v;
}

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// A call that is illegal while a stream is being captured (synchronous copies, allocation, device sync): the
// capture is invalidated, as CUDA does, and the call fails.
bool capture_forbids(const char* what) {
  if (!t_capturing) return false;
  std::fprintf(stderr, "cuda emulator: %s during stream capture is not allowed (capture invalidated)\n", what);
  for (CUstream_st* s : capturing_streams()) s->capture_invalid = true;
  set_error(cudaErrorStreamCaptureUnsupported);
  return true;
}

// Runs `op` now, or records it when `st` is capturing. The legacy default stream cannot be used while capturing.
cudaError_t submit(cudaStream_t st, std::function<void()> op) {
  if (st && st->capturing) {
    st->graph->ops.push_back(std::move(op));
    return cudaSuccess;
  }
  if (!st && t_capturing) {
    capture_forbids("work on the legacy default stream");
    return cudaErrorStreamCaptureImplicit;
  }
  op();
  return cudaSuccess;
}

}  // namespace

void launch(const LaunchSpec& spec, KernelBody body) {
  std::shared_ptr<void> owner(body.ctx, body.destroy);
  const dim3 g = spec.grid, b = spec.block;
  const uint64_t threads = uint64_t(b.x) * b.y * b.z;
  cudaError_t err = cudaSuccess;
  std::string why;
  if (threads == 0 || g.x == 0 || g.y == 0 || g.z == 0 || threads > 1024 || b.z > 64 || g.x > 2147483647u ||
      g.y > 65535 || g.z > 65535) {
    err = cudaErrorInvalidConfiguration;
    why = str("grid (%u,%u,%u) block (%u,%u,%u)", g.x, g.y, g.z, b.x, b.y, b.z);
  } else {
    size_t limit = kDefaultSmem;
    {
      std::lock_guard<std::mutex> lk(device().mu);
      auto it = device().max_dyn_smem.find(spec.fn);
      if (it != device().max_dyn_smem.end()) limit = size_t(it->second);
    }
    if (spec.smem > limit) {
      err = cudaErrorInvalidValue;
      why = str("%zu bytes of dynamic shared memory, limit %zu (raise it with cudaFuncSetAttribute, up to %zu)",
                spec.smem, limit, kOptinSmem);
    }
  }
  if (err != cudaSuccess) {
    // The GPU reports this through cudaGetLastError only; say it here too so that a test log shows why.
    std::fprintf(stderr, "cuda emulator: launch of %s rejected: %s\n", spec.name, why.c_str());
    set_error(err);
    return;
  }
  const LaunchSpec copy = spec;
  const cudaError_t e = submit(spec.stream, [copy, owner, body] { run_grid(copy, body); });
  set_error(e);
}

}  // namespace emu

// ---- the runtime API --------------------------------------------------------------------------------------------
using emu::set_error;

namespace {
cudaError_t unsupported(const char* what) {
  std::fprintf(stderr, "cuda emulator: %s is not emulated\n", what);
  return set_error(cudaErrorNotSupported);
}
}  // namespace

extern "C" {

const int warpSize = 32;  // declared by device_launch_parameters.h

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : set_error(cudaErrorInvalidDevice); }

cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device) {
  if (device != 0) return set_error(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = 132; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = int(emu::kOptinSmem); return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = int(emu::kDefaultSmem); return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; return cudaSuccess;
    case cudaDevAttrWarpSize: *value = 32; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; return cudaSuccess;
    default: break;
  }
  char buf[96];
  std::snprintf(buf, sizeof buf, "cudaDeviceGetAttribute(attribute %d)", int(attr));
  return unsupported(buf);
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  if (device != 0) return set_error(cudaErrorInvalidDevice);
  *p = cudaDeviceProp{};
  std::snprintf(p->name, sizeof p->name, "emulated H100 (CPU)");
  p->totalGlobalMem = size_t(80) << 30;
  p->sharedMemPerBlock = emu::kDefaultSmem;
  p->sharedMemPerBlockOptin = emu::kOptinSmem;
  p->sharedMemPerMultiprocessor = 228 * 1024;
  p->regsPerBlock = 65536;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024;
  p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 2147483647;
  p->maxGridSize[1] = p->maxGridSize[2] = 65535;
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = 132;
  p->l2CacheSize = 50 << 20;
  p->maxThreadsPerMultiProcessor = 2048;
  p->memoryBusWidth = 5120;
  return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
  const cudaError_t e = emu::t_last_error;
  emu::t_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError(void) { return emu::t_last_error; }

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument (emulated)";
    case cudaErrorMemoryAllocation: return "out of memory (emulated)";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument (emulated)";
    case cudaErrorInvalidDevice: return "invalid device ordinal (emulated)";
    case cudaErrorNotSupported: return "operation not supported by the CUDA emulator";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing (emulated)";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture (emulated)";
    case cudaErrorStreamCaptureImplicit: return "operation would make the legacy stream depend on a capturing blocking stream (emulated)";
    case cudaErrorIllegalState: return "illegal state (emulated)";
    default: return "unknown error (emulated)";
  }
}
const char* cudaGetErrorName(cudaError_t e) { return cudaGetErrorString(e); }

cudaError_t cudaMalloc(void** p, size_t n) {
  *p = nullptr;
  if (emu::capture_forbids("cudaMalloc")) return cudaErrorStreamCaptureUnsupported;
  if (n == 0) return cudaSuccess;
  void* m = nullptr;
  if (posix_memalign(&m, 256, n) != 0) return set_error(cudaErrorMemoryAllocation);
  std::memset(m, 0xff, n);  // uninitialised device memory reads as NaN / -1
  auto& d = emu::device();
  std::lock_guard<std::mutex> lk(d.mu);
  d.allocations[m] = n;
  d.allocated += n;
  *p = m;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  if (emu::capture_forbids("cudaFree")) return cudaErrorStreamCaptureUnsupported;
  auto& d = emu::device();
  {
    std::lock_guard<std::mutex> lk(d.mu);
    auto it = d.allocations.find(p);
    if (it == d.allocations.end()) {
      std::fprintf(stderr, "cuda emulator: cudaFree of %p, which cudaMalloc did not return\n", p);
      return set_error(cudaErrorInvalidValue);
    }
    d.allocated -= it->second;
    d.allocations.erase(it);
  }
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** p, size_t n) {
  *p = std::malloc(n ? n : 1);
  return *p ? cudaSuccess : set_error(cudaErrorMemoryAllocation);
}
cudaError_t cudaHostAlloc(void** p, size_t n, unsigned int) { return cudaMallocHost(p, n); }
cudaError_t cudaFreeHost(void* p) {
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total_b) {
  auto& d = emu::device();
  std::lock_guard<std::mutex> lk(d.mu);
  *total_b = size_t(80) << 30;
  *free_b = *total_b - std::min(*total_b, d.allocated);
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, enum cudaMemcpyKind) {
  if (emu::capture_forbids("cudaMemcpy")) return cudaErrorStreamCaptureUnsupported;
  if (n) std::memmove(dst, src, n);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, enum cudaMemcpyKind, cudaStream_t st) {
  return set_error(emu::submit(st, [dst, src, n] {
    if (n) std::memmove(dst, src, n);
  }));
}
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                              enum cudaMemcpyKind, cudaStream_t st) {
  if (width > dpitch || width > spitch) return set_error(cudaErrorInvalidPitchValue);
  return set_error(emu::submit(st, [=] {
    for (size_t r = 0; r < height; ++r)
      std::memmove(static_cast<char*>(dst) + r * dpitch, static_cast<const char*>(src) + r * spitch, width);
  }));
}
cudaError_t cudaMemcpy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                         enum cudaMemcpyKind kind) {
  if (emu::capture_forbids("cudaMemcpy2D")) return cudaErrorStreamCaptureUnsupported;
  return cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, height, kind, nullptr);
}
cudaError_t cudaMemset(void* p, int v, size_t n) {
  if (emu::capture_forbids("cudaMemset")) return cudaErrorStreamCaptureUnsupported;
  if (n) std::memset(p, v, n);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t st) {
  return set_error(emu::submit(st, [p, v, n] {
    if (n) std::memset(p, v, n);
  }));
}

cudaError_t cudaDeviceSynchronize(void) {
  if (emu::capture_forbids("cudaDeviceSynchronize")) return cudaErrorStreamCaptureUnsupported;
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* st) {
  *st = new CUstream_st;
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* st, unsigned int) {
  *st = new CUstream_st;
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t st) {
  if (st && st->capturing) return set_error(cudaErrorIllegalState);
  delete st;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t st) {
  if ((st && st->capturing) || (!st && emu::t_capturing)) {
    emu::capture_forbids("cudaStreamSynchronize");
    return cudaErrorStreamCaptureUnsupported;
  }
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new CUevent_st;
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int) { return cudaEventCreate(e); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t st) {
  return set_error(emu::submit(st, [e] { e->ms = emu::now_ms(); }));
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  *ms = float(b->ms - a->ms);
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t st, enum cudaStreamCaptureMode mode) {
  if (!st) return set_error(cudaErrorStreamCaptureUnsupported);  // the legacy stream cannot be captured
  if (st->capturing) return set_error(cudaErrorIllegalState);
  if (mode != cudaStreamCaptureModeThreadLocal && mode != cudaStreamCaptureModeGlobal)
    return unsupported("cudaStreamBeginCapture in relaxed mode");
  st->capturing = true;
  st->capture_invalid = false;
  st->graph = new CUgraph_st;
  ++emu::t_capturing;
  emu::capturing_streams().push_back(st);
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t st, cudaGraph_t* g) {
  *g = nullptr;
  if (!st || !st->capturing) return set_error(cudaErrorIllegalState);
  st->capturing = false;
  --emu::t_capturing;
  auto& v = emu::capturing_streams();
  v.erase(std::remove(v.begin(), v.end(), st), v.end());
  if (st->capture_invalid) {
    delete st->graph;
    st->graph = nullptr;
    return set_error(cudaErrorStreamCaptureInvalidated);
  }
  *g = st->graph;
  st->graph = nullptr;
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t g, unsigned long long) {
  if (!g) return set_error(cudaErrorInvalidValue);
  *exec = new CUgraphExec_st{g->ops};
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t st) {
  if (!exec) return set_error(cudaErrorInvalidValue);
  return set_error(emu::submit(st, [exec] {
    for (auto& op : exec->ops) op();
  }));
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) {
  delete g;
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) {
  delete e;
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* fn, enum cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return unsupported("cudaFuncSetAttribute(this attribute)");
  if (value < 0 || size_t(value) > emu::kOptinSmem) return set_error(cudaErrorInvalidValue);
  auto& d = emu::device();
  std::lock_guard<std::mutex> lk(d.mu);
  d.max_dyn_smem[fn] = value;
  return cudaSuccess;
}

}  // extern "C"

// ---- CUB: DeviceRadixSort::SortPairsDescending ------------------------------------------------------------------
namespace cub::emu_detail {
cudaError_t sort_pairs_descending(void* temp, size_t& temp_bytes, const float* keys_in, float* keys_out,
                                  const int* values_in, int* values_out, int n, int begin_bit, int end_bit,
                                  cudaStream_t stream) {
  const size_t need = size_t(std::max(n, 0)) * 8 + 256;
  if (!temp) {
    temp_bytes = need;
    return cudaSuccess;
  }
  if (temp_bytes < need || n < 0) return set_error(cudaErrorInvalidValue);
  if (begin_bit != 0 || end_bit != 32) return unsupported("SortPairsDescending on a bit range other than [0, 32)");
  return set_error(emu::submit(stream, [=] {
    // CUB's order: keys as radix-sortable unsigned (sign flips), descending, stable.
    auto radix = [](float f) {
      uint32_t u;
      std::memcpy(&u, &f, 4);
      return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    };
    std::vector<int> idx(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) idx[size_t(i)] = i;
    std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return radix(keys_in[a]) > radix(keys_in[b]); });
    std::vector<float> k(static_cast<size_t>(n));
    std::vector<int> v(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
      k[size_t(i)] = keys_in[idx[size_t(i)]];
      v[size_t(i)] = values_in[idx[size_t(i)]];
    }
    std::copy(k.begin(), k.end(), keys_out);
    std::copy(v.begin(), v.end(), values_out);
  }));
}
}  // namespace cub::emu_detail

// ---- cuBLASLt: the GEMM subset kernels/matmul.cu uses, computed on the CPU in fp32 ---------------------------------
struct cublasLtContext {};

namespace {
struct LtDesc {
  cublasComputeType_t compute;
  cudaDataType_t scale;
  cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
};
struct LtLayout {
  cudaDataType_t type;
  uint64_t rows, cols;
  int64_t ld;
};
static_assert(sizeof(LtDesc) <= sizeof(cublasLtMatmulDescOpaque_t), "LtDesc fits the opaque descriptor");
static_assert(sizeof(LtLayout) <= sizeof(cublasLtMatrixLayoutOpaque_t), "LtLayout fits the opaque layout");
LtDesc& desc_of(cublasLtMatmulDesc_t d) { return *reinterpret_cast<LtDesc*>(d); }
LtLayout& layout_of(cublasLtMatrixLayout_t l) { return *reinterpret_cast<LtLayout*>(l); }

cublasStatus_t lt_unsupported(const char* what) {
  std::fprintf(stderr, "cuda emulator: cuBLASLt %s is not emulated\n", what);
  return CUBLAS_STATUS_NOT_SUPPORTED;
}

bool lt_type_ok(cudaDataType_t t) { return t == CUDA_R_32F || t == CUDA_R_16BF || t == CUDA_R_16F; }
float lt_load(const void* p, cudaDataType_t t, size_t i) {
  switch (t) {
    case CUDA_R_32F: return static_cast<const float*>(p)[i];
    case CUDA_R_16BF: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case CUDA_R_16F: return __half2float(static_cast<const __half*>(p)[i]);
    default: return 0.0f;
  }
}
void lt_store(void* p, cudaDataType_t t, size_t i, float v) {
  switch (t) {
    case CUDA_R_32F: static_cast<float*>(p)[i] = v; break;
    case CUDA_R_16BF: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v); break;
    case CUDA_R_16F: static_cast<__half*>(p)[i] = __float2half_rn(v); break;
    default: break;
  }
}
// op(X) as a dense row-major (m x k) float matrix: element (i, k) of op(X) where X is column-major `l`.
std::vector<float> lt_gather(const void* p, const LtLayout& l, cublasOperation_t op, uint64_t& r, uint64_t& c) {
  r = op == CUBLAS_OP_N ? l.rows : l.cols;
  c = op == CUBLAS_OP_N ? l.cols : l.rows;
  std::vector<float> out(r * c);
  for (uint64_t i = 0; i < r; ++i)
    for (uint64_t j = 0; j < c; ++j) {
      const uint64_t row = op == CUBLAS_OP_N ? i : j, col = op == CUBLAS_OP_N ? j : i;
      out[i * c + j] = lt_load(p, l.type, row + col * uint64_t(l.ld));
    }
  return out;
}
}  // namespace

extern "C" {

cublasStatus_t cublasLtCreate(cublasLtHandle_t* h) {
  *h = new cublasLtContext;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}
const char* cublasGetStatusString(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED (not emulated)";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    default: return "cuBLAS status (emulated)";
  }
}
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* d, cublasComputeType_t compute, cudaDataType_t scale) {
  if (compute != CUBLAS_COMPUTE_32F || scale != CUDA_R_32F) return lt_unsupported("compute/scale type other than 32F");
  *d = new cublasLtMatmulDescOpaque_t{};
  new (*d) LtDesc{compute, scale};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
  delete d;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t size) {
  if ((attr == CUBLASLT_MATMUL_DESC_TRANSA || attr == CUBLASLT_MATMUL_DESC_TRANSB) && size == sizeof(int32_t)) {
    int32_t v;
    std::memcpy(&v, buf, 4);
    if (v != CUBLAS_OP_N && v != CUBLAS_OP_T) return lt_unsupported("conjugate transpose");
    (attr == CUBLASLT_MATMUL_DESC_TRANSA ? desc_of(d).ta : desc_of(d).tb) = cublasOperation_t(v);
    return CUBLAS_STATUS_SUCCESS;
  }
  return lt_unsupported("matmul descriptor attribute");
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* l, cudaDataType type, uint64_t rows, uint64_t cols,
                                          int64_t ld) {
  if (!lt_type_ok(type)) return lt_unsupported("matrix type");
  if (ld < int64_t(rows)) return CUBLAS_STATUS_INVALID_VALUE;
  *l = new cublasLtMatrixLayoutOpaque_t{};
  new (*l) LtLayout{type, rows, cols, ld};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
  delete l;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* p) {
  *p = new cublasLtMatmulPreferenceOpaque_t{};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
  delete p;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t, cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void*, size_t) {
  if (attr == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES) return CUBLAS_STATUS_SUCCESS;
  return lt_unsupported("preference attribute");
}
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t,
                                              cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                                              cublasLtMatmulPreference_t, int requested,
                                              cublasLtMatmulHeuristicResult_t results[], int* returned) {
  if (requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
  results[0] = cublasLtMatmulHeuristicResult_t{};
  results[0].state = CUBLAS_STATUS_SUCCESS;
  results[0].workspaceSize = 0;
  results[0].wavesCount = 1.0f;
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t desc, const void* alpha, const void* A,
                              cublasLtMatrixLayout_t Adesc, const void* B, cublasLtMatrixLayout_t Bdesc,
                              const void* beta, const void* C, cublasLtMatrixLayout_t Cdesc, void* D,
                              cublasLtMatrixLayout_t Ddesc, const cublasLtMatmulAlgo_t*, void*, size_t,
                              cudaStream_t stream) {
  const LtDesc d = desc_of(desc);
  const LtLayout la = layout_of(Adesc), lb = layout_of(Bdesc), lc = layout_of(Cdesc), ld = layout_of(Ddesc);
  const uint64_t m = d.ta == CUBLAS_OP_N ? la.rows : la.cols, k = d.ta == CUBLAS_OP_N ? la.cols : la.rows;
  const uint64_t kb = d.tb == CUBLAS_OP_N ? lb.rows : lb.cols, n = d.tb == CUBLAS_OP_N ? lb.cols : lb.rows;
  if (k != kb || lc.rows != m || lc.cols != n || ld.rows != m || ld.cols != n) {
    std::fprintf(stderr, "cuda emulator: cublasLtMatmul shapes do not match: op(A) %llux%llu, op(B) %llux%llu, C %llux%llu\n",
                 (unsigned long long)m, (unsigned long long)k, (unsigned long long)kb, (unsigned long long)n,
                 (unsigned long long)lc.rows, (unsigned long long)lc.cols);
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);  // host scalars
  const cudaError_t e = emu::submit(stream, [=] {
    uint64_t r, c;
    const std::vector<float> a = lt_gather(A, la, d.ta, r, c);   // m x k, row-major
    const std::vector<float> bt = lt_gather(B, lb, d.tb == CUBLAS_OP_N ? CUBLAS_OP_T : CUBLAS_OP_N, r, c);  // n x k
    // Columns of D split over the host's cores (plain host code: no fibers involved).
    auto columns = [&](uint64_t j0, uint64_t j1) {
      for (uint64_t j = j0; j < j1; ++j)
        for (uint64_t i = 0; i < m; ++i) {
          const float* x = &a[i * k];
          const float* y = &bt[j * k];
          float acc[8] = {};
          uint64_t t = 0;
          for (; t + 8 <= k; t += 8)
            for (int l = 0; l < 8; ++l) acc[l] += x[t + uint64_t(l)] * y[t + uint64_t(l)];
          float sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
          for (; t < k; ++t) sum += x[t] * y[t];
          float v = al * sum;
          if (be != 0.0f) v += be * lt_load(C, lc.type, i + j * uint64_t(lc.ld));
          lt_store(D, ld.type, i + j * uint64_t(ld.ld), v);
        }
    };
    const uint64_t workers = std::min<uint64_t>(std::max(1u, std::thread::hardware_concurrency()), std::max<uint64_t>(n, 1));
    std::vector<std::thread> pool;
    for (uint64_t w = 1; w < workers; ++w) pool.emplace_back(columns, n * w / workers, n * (w + 1) / workers);
    columns(0, n / workers);
    for (auto& th : pool) th.join();
  });
  return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

}  // extern "C"

// ---- cuSOLVER: the symmetric eigensolvers (Dsyevd, XsyevBatched in double), cyclic Jacobi on the CPU -----------------
#include <cusolverDn.h>

struct cusolverDnContext {
  cudaStream_t stream = nullptr;
};
struct cusolverDnParams {};

namespace {
// Eigen-decomposes the column-major n x n symmetric matrix whose `lower` (else upper) triangle is at a (leading
// dimension lda): eigenvalues ascending into w, orthonormal eigenvectors into the columns of a (LAPACK's layout).
// Returns 0, or the number of off-diagonal pairs left when 100 sweeps did not converge (cuSOLVER's info > 0).
int jacobi_eigh(double* a, int64_t n, int64_t lda, double* w, bool lower, bool vectors) {
  std::vector<double> m(size_t(n * n)), v(size_t(n * n), 0.0);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < n; ++i) {
      const bool stored = lower ? i >= j : i <= j;
      m[size_t(i * n + j)] = stored ? a[i + j * lda] : a[j + i * lda];
    }
  for (int64_t i = 0; i < n; ++i) v[size_t(i * n + i)] = 1.0;
  int left = 0;
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0.0, diag = 0.0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) (i == j ? diag : off) += m[size_t(i * n + j)] * m[size_t(i * n + j)];
    if (off <= 1e-30 * std::max(diag, 1e-300)) {
      left = 0;
      break;
    }
    left = 1;
    for (int64_t p = 0; p < n; ++p)
      for (int64_t q = p + 1; q < n; ++q) {
        const double apq = m[size_t(p * n + q)];
        if (apq == 0.0) continue;
        const double theta = (m[size_t(q * n + q)] - m[size_t(p * n + p)]) / (2.0 * apq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1.0));
        const double c = 1.0 / std::sqrt(t * t + 1.0), s = t * c;
        for (int64_t k = 0; k < n; ++k) {  // rows p, q
          const double mpk = m[size_t(p * n + k)], mqk = m[size_t(q * n + k)];
          m[size_t(p * n + k)] = c * mpk - s * mqk;
          m[size_t(q * n + k)] = s * mpk + c * mqk;
        }
        for (int64_t k = 0; k < n; ++k) {  // columns p, q
          const double mkp = m[size_t(k * n + p)], mkq = m[size_t(k * n + q)];
          m[size_t(k * n + p)] = c * mkp - s * mkq;
          m[size_t(k * n + q)] = s * mkp + c * mkq;
        }
        for (int64_t k = 0; k < n; ++k) {
          const double vkp = v[size_t(k * n + p)], vkq = v[size_t(k * n + q)];
          v[size_t(k * n + p)] = c * vkp - s * vkq;
          v[size_t(k * n + q)] = s * vkp + c * vkq;
        }
      }
  }
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[size_t(i)] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t x, int64_t y) { return m[size_t(x * n + x)] < m[size_t(y * n + y)]; });
  for (int64_t k = 0; k < n; ++k) {
    const int64_t src = order[size_t(k)];
    w[k] = m[size_t(src * n + src)];
    if (vectors)
      for (int64_t i = 0; i < n; ++i) a[i + k * lda] = v[size_t(i * n + src)];
  }
  return left;
}

cusolverStatus_t solver_unsupported(const char* what) {
  std::fprintf(stderr, "cuda emulator: cuSOLVER %s is not emulated\n", what);
  return CUSOLVER_STATUS_NOT_SUPPORTED;
}
bool solver_capturing(cusolverDnHandle_t h) { return (h->stream && h->stream->capturing) || emu::t_capturing; }
}  // namespace

extern "C" {

cusolverStatus_t cusolverDnCreate(cusolverDnHandle_t* h) {
  *h = new cusolverDnContext;
  return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnDestroy(cusolverDnHandle_t h) {
  delete h;
  return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnSetStream(cusolverDnHandle_t h, cudaStream_t st) {
  h->stream = st;
  return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnCreateParams(cusolverDnParams_t* p) {
  *p = new cusolverDnParams;
  return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnDestroyParams(cusolverDnParams_t p) {
  delete p;
  return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnDsyevd_bufferSize(cusolverDnHandle_t, cusolverEigMode_t, cublasFillMode_t, int n,
                                             const double*, int, const double*, int* lwork) {
  *lwork = std::max(1, 2 * n);
  return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnDsyevd(cusolverDnHandle_t h, cusolverEigMode_t jobz, cublasFillMode_t uplo, int n, double* A,
                                  int lda, double* W, double*, int lwork, int* info) {
  if (n < 0 || lda < std::max(1, n) || lwork < std::max(1, 2 * n)) return CUSOLVER_STATUS_INVALID_VALUE;
  if (solver_capturing(h)) return solver_unsupported("Dsyevd during stream capture");
  *info = jacobi_eigh(A, n, lda, W, uplo == CUBLAS_FILL_MODE_LOWER, jobz == CUSOLVER_EIG_MODE_VECTOR);
  return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnXsyevBatched_bufferSize(cusolverDnHandle_t, cusolverDnParams_t, cusolverEigMode_t,
                                                   cublasFillMode_t, int64_t n, cudaDataType ta, const void*,
                                                   int64_t, cudaDataType tw, const void*, cudaDataType tc,
                                                   size_t* dev_bytes, size_t* host_bytes, int64_t) {
  if (ta != CUDA_R_64F || tw != CUDA_R_64F || tc != CUDA_R_64F) return solver_unsupported("XsyevBatched on non-double");
  *dev_bytes = size_t(std::max<int64_t>(n, 1)) * 16;
  *host_bytes = 0;
  return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnXsyevBatched(cusolverDnHandle_t h, cusolverDnParams_t, cusolverEigMode_t jobz,
                                        cublasFillMode_t uplo, int64_t n, cudaDataType ta, void* A, int64_t lda,
                                        cudaDataType tw, void* W, cudaDataType tc, void*, size_t dev_bytes, void*,
                                        size_t, int* info, int64_t batch) {
  if (ta != CUDA_R_64F || tw != CUDA_R_64F || tc != CUDA_R_64F) return solver_unsupported("XsyevBatched on non-double");
  if (n < 0 || lda < std::max<int64_t>(1, n) || batch < 0 || dev_bytes < size_t(std::max<int64_t>(n, 1)) * 16)
    return CUSOLVER_STATUS_INVALID_VALUE;
  if (solver_capturing(h)) return solver_unsupported("XsyevBatched during stream capture");
  for (int64_t b = 0; b < batch; ++b)
    info[b] = jacobi_eigh(static_cast<double*>(A) + b * lda * n, n, lda, static_cast<double*>(W) + b * n,
                          uplo == CUBLAS_FILL_MODE_LOWER, jobz == CUSOLVER_EIG_MODE_VECTOR);
  return CUSOLVER_STATUS_SUCCESS;
}

}  // extern "C"
