// ThreadPool: the CPU backend's workers, owned by an engine (never global, so two engines can coexist).
// run(fn) calls fn(thread_index, n_threads) on every worker and on the caller (index 0) and returns when all
// are done. Workers spin briefly before sleeping on a futex: an op takes microseconds in decode, and waking a
// sleeping thread costs about as much, so a short spin keeps per-op overhead low without burning a core while
// the engine is idle. Calls must not nest.
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
  void run(const std::function<void(int, int)>& fn);

 private:
  void worker(int index);
  int n_threads_ = 1;
  std::vector<std::thread> threads_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  const std::function<void(int, int)>* job_ = nullptr;
};

// fn(begin, end) over contiguous chunks of [0, n), one chunk per thread; single-threaded when pool is null.
inline void parallel_for(ThreadPool* pool, int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  if (!pool || pool->size() == 1 || n <= 1) {
    if (n > 0) fn(0, n);
    return;
  }
  pool->run([&](int t, int nt) {
    int64_t b = n * t / nt, e = n * (t + 1) / nt;
    if (b < e) fn(b, e);
  });
}

}  // namespace llm
