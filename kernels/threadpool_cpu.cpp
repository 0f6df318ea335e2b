#include "kernels/threadpool_cpu.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define LLM_CPU_RELAX() _mm_pause()
#else
#define LLM_CPU_RELAX() std::this_thread::yield()
#endif

namespace llm {

namespace {
constexpr int kSpin = 2000;  // ~ tens of microseconds of spinning before sleeping
constexpr uint64_t kClosed = 0xffffffffu;  // claim index of a job being set up: above any chunk count
}

ThreadPool::ThreadPool(int n_threads) {
  n_threads_ = n_threads > 0 ? n_threads : static_cast<int>(std::thread::hardware_concurrency());
  if (n_threads_ < 1) n_threads_ = 1;
  for (int i = 1; i < n_threads_; ++i) threads_.emplace_back([this] { worker(); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  wake_.fetch_add(1);
  wake_.notify_all();
  for (auto& t : threads_) t.join();
}

// A chunk is claimed by a compare-exchange on claim_ that also checks the job generation, so a worker that wakes
// late can never take a chunk of a newer job with the function of an older one: job_/n_chunks_ are written
// before claim_ is published (release) and read after a successful claim (acquire).
//
// run() first CLOSES the claim word (new generation, index kClosed) and only then writes n_chunks_: a worker still
// holding the old job's exhausted claim word (gen, n_old) that reads the NEW n_chunks_ (> n_old) must fail its
// compare-exchange. Without the closing store it could succeed between the n_chunks_ and claim_ stores, run a
// chunk that does not exist (with the old or new function) and count it in the new job's done_, so that run()
// returned while a chunk still ran: seen as SIGSEGVs in matmul_cpu with 16 threads on the GPU machine
// (docs/performance.md, "First GPU session"); 2 cores never showed it.
bool ThreadPool::work_on(uint64_t gen) {
  bool any = false;
  uint64_t v = claim_.load(std::memory_order_acquire);
  for (;;) {
    if ((v >> 32) != (gen & 0xffffffffu)) return any;
    const int64_t idx = static_cast<int64_t>(v & 0xffffffffu);
    if (idx >= n_chunks_.load(std::memory_order_acquire)) return any;  // acquire: see the closing claim_ store
    if (!claim_.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
    (*job_.load(std::memory_order_relaxed))(idx);
    any = true;
    done_.fetch_add(1, std::memory_order_acq_rel);
    v = claim_.load(std::memory_order_acquire);
  }
}

void ThreadPool::worker() {
  uint64_t seen = 0;
  for (;;) {
    uint64_t w = wake_.load(std::memory_order_acquire);
    for (int s = 0; w == seen && s < kSpin; ++s) {
      LLM_CPU_RELAX();
      w = wake_.load(std::memory_order_acquire);
    }
    while (w == seen) {
      wake_.wait(seen, std::memory_order_acquire);
      w = wake_.load(std::memory_order_acquire);
    }
    seen = w;
    if (stop_.load()) return;
    work_on(claim_.load(std::memory_order_acquire) >> 32);
  }
}

void ThreadPool::run(int64_t n_chunks, const std::function<void(int64_t)>& fn) {
  if (n_chunks <= 0) return;
  if (n_threads_ == 1 || n_chunks == 1) {
    for (int64_t c = 0; c < n_chunks; ++c) fn(c);
    return;
  }
  ++gen_;
  claim_.store((gen_ & 0xffffffffu) << 32 | kClosed, std::memory_order_seq_cst);  // no claim until published
  job_.store(&fn, std::memory_order_relaxed);
  done_.store(0, std::memory_order_relaxed);
  n_chunks_.store(n_chunks, std::memory_order_release);
  claim_.store((gen_ & 0xffffffffu) << 32, std::memory_order_release);
  wake_.fetch_add(1, std::memory_order_acq_rel);
  wake_.notify_all();
  work_on(gen_);
  // every chunk is claimed; wait for the ones still running on workers
  for (int s = 0; done_.load(std::memory_order_acquire) < n_chunks; ++s) {
    if (s < kSpin) {
      LLM_CPU_RELAX();
    } else {
      std::this_thread::yield();
    }
  }
}

}  // namespace llm
