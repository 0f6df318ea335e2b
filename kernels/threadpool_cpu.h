// ThreadPool: the CPU backend's workers, owned by an engine (never global, so two engines can coexist).
//
// run(n_chunks, fn) calls fn(chunk) for every chunk in [0, n_chunks), on the workers and on the caller, and
// returns when all are done. Chunks are CLAIMED dynamically (an atomic counter) rather than assigned per thread:
// on a loaded machine (2 cores shared with compilers) a worker may not be scheduled for milliseconds, and with
// static assignment every op would wait for it; here the caller simply takes the chunks nobody claimed. Workers
// spin briefly before sleeping on a futex: an op takes microseconds in decode and waking a sleeping thread costs
// about as much. Calls must not nest.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

namespace llm {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads = 0);  // 0: std::thread::hardware_concurrency()
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }
  void run(int64_t n_chunks, const std::function<void(int64_t)>& fn);

 private:
  void worker();
  bool work_on(uint64_t gen);  // claim and run chunks of job `gen`; false when none was left
  int n_threads_ = 1;
  std::vector<std::thread> threads_;
  std::atomic<uint64_t> wake_{0};   // bumped per job (and at shutdown); workers sleep on it
  std::atomic<uint64_t> claim_{0};  // (job generation << 32) | next chunk index
  std::atomic<int64_t> done_{0};    // chunks finished in the current job
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> n_chunks_{0};
  std::atomic<const std::function<void(int64_t)>*> job_{nullptr};
  uint64_t gen_ = 0;
};

// fn(begin, end) over contiguous pieces of [0, n) (about 4 per thread, claimed dynamically); single-threaded on
// the caller when pool is null.
inline void parallel_for(ThreadPool* pool, int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  if (!pool || pool->size() == 1 || n <= 1) {
    if (n > 0) fn(0, n);
    return;
  }
  const int64_t chunks = std::min<int64_t>(n, 4 * pool->size());
  pool->run(chunks, [&](int64_t c) { fn(n * c / chunks, n * (c + 1) / chunks); });
}

}  // namespace llm
