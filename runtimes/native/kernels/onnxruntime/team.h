// A team of threads of seqedge's own for its onnxruntime kernels: parallel_for(fn, total, batches, data) runs
// fn(data, i) for every i in [0, total) on the caller and the team's workers, as onnxruntime's
// KernelContext_ParallelFor does on the session's intra-op pool.
//
// Why: a decode step of a fused int4 graph is ~160 nodes of seqedge's kernels, each split over the threads
// and joined again. Through onnxruntime's pool that round trip cost ~1.2 us more a node than one thread's
// tiny node (0.6 us), and the int4 products of llama-135m's step (121 nodes, 75.6 MB) took 1.47-1.58 ms
// through it against 1.11-1.19 ms for the same kernel behind a spin barrier (benchmarks/int4_layout.cpp). A
// session whose work is all seqedge's kernels runs onnxruntime on one thread and these on the team
// (runtimes/onnxruntime.py decides; the session config entry `seqedge.team_threads` says how many).
//
// The workers spin for a while after each job (the next node comes within microseconds) and then sleep on a
// condition variable, so an idle session costs nothing. A job is `units` contiguous runs of the items (`batches`
// of them, or every item on its own where batches is 0), claimed from one atomic word that also carries the
// job's generation: a worker that arrives late claims nothing of a newer job, and a worker that
// does not arrive at all (descheduled) leaves its runs to the caller, which never waits on a run nobody took.
// One job at a time: a second caller (two sessions in two threads) runs its job alone on its own thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SEQEDGE_TEAM_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define SEQEDGE_TEAM_PAUSE() asm volatile("yield")
#else
#define SEQEDGE_TEAM_PAUSE() ((void)0)
#endif

namespace seqedge::team {

// How long a worker polls for the next job before it sleeps: longer than the gap between two nodes, or
// between two decode steps of a Python loop, shorter than anything a user would see as a busy core.
constexpr auto kSpin = std::chrono::microseconds(300);

class Team {
 public:
  explicit Team(int threads) : threads_(threads < 1 ? 1 : threads) {
    for (int i = 1; i < threads_; ++i) workers_.emplace_back([this] { work_loop(); });
  }
  ~Team() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : workers_) t.join();
  }
  Team(const Team&) = delete;
  Team& operator=(const Team&) = delete;

  int threads() const { return threads_; }

  void parallel_for(void (*fn)(void*, size_t), size_t total, size_t batches, void* data) {
    if (total == 0) return;
    const size_t units = batches == 0 || batches > total ? total : batches;
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (units == 1 || threads_ == 1 || !busy.owns_lock()) {
      for (size_t i = 0; i < total; ++i) fn(data, i);
      return;
    }
    fn_.store(fn, std::memory_order_relaxed);
    data_.store(data, std::memory_order_relaxed);
    total_.store(total, std::memory_order_relaxed);
    units_.store(units, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    const uint64_t gen = ((claim_.load(std::memory_order_relaxed) >> 32) + 1) & 0xffffffffu;  // wraps, never stalls
    claim_.store(gen << 32 | units, std::memory_order_release);  // the job's runs, up for claiming
    {
      std::lock_guard<std::mutex> lock(mutex_);
      generation_.store(gen, std::memory_order_release);
    }
    if (sleeping_.load(std::memory_order_acquire) > 0) wake_.notify_all();
    run_units(gen);
    while (done_.load(std::memory_order_acquire) < units) SEQEDGE_TEAM_PAUSE();
  }

 private:
  // Claim and run the units of job `gen` until none is left: one run of a batched job at a time, or, where the
  // items are handed out one by one (batches 0), a share of those left that shrinks as they go (guided
  // scheduling: a prompt's rows of activations to quantize are ~0.2 us each, less than a claim's round trip
  // between cores; onnxruntime's pool splits them the same way).
  void run_units(uint64_t gen) {
    size_t ran = 0;  // units this thread ran, counted into done_ once, as it leaves
    for (;;) {
      uint64_t c = claim_.load(std::memory_order_acquire);
      const uint64_t left = c & 0xffffffffu;
      if ((c >> 32) != gen || left == 0) {
        if (ran) done_.fetch_add(ran, std::memory_order_release);
        return;
      }
      // the job's fields were written before its generation was published (release) and cannot change
      // until every claimed unit is done
      const size_t units = units_.load(std::memory_order_relaxed), total = total_.load(std::memory_order_relaxed);
      const uint64_t take = units == total ? std::max<uint64_t>(1, left / (2 * threads_)) : 1;
      if (!claim_.compare_exchange_weak(c, c - take, std::memory_order_acq_rel)) continue;
      const size_t u0 = units - left, u1 = u0 + take;
      const size_t begin = total * u0 / units, end = total * u1 / units;
      const auto fn = fn_.load(std::memory_order_relaxed);
      void* data = data_.load(std::memory_order_relaxed);
      for (size_t i = begin; i < end; ++i) fn(data, i);
      ran += take;
    }
  }

  void work_loop() {
    uint64_t seen = 0;
    for (;;) {
      const auto until = std::chrono::steady_clock::now() + kSpin;
      uint64_t gen = generation_.load(std::memory_order_acquire);
      for (int n = 0; gen == seen; ++n) {
        SEQEDGE_TEAM_PAUSE();
        if ((n & 255) == 255 && std::chrono::steady_clock::now() > until) break;
        gen = generation_.load(std::memory_order_acquire);
      }
      if (gen == seen) {
        std::unique_lock<std::mutex> lock(mutex_);
        sleeping_.fetch_add(1, std::memory_order_acq_rel);
        wake_.wait(lock, [&] { return stop_ || generation_.load(std::memory_order_acquire) != seen; });
        sleeping_.fetch_sub(1, std::memory_order_acq_rel);
        if (stop_) return;
        gen = generation_.load(std::memory_order_acquire);
      }
      seen = gen;
      run_units(gen);
    }
  }

  const int threads_;
  std::vector<std::thread> workers_;
  std::mutex busy_;   // held by the caller whose job the team runs
  std::mutex mutex_;  // guards sleeping and stopping
  std::condition_variable wake_;
  bool stop_ = false;
  std::atomic<int> sleeping_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<uint64_t> claim_{0};  // generation << 32 | runs not yet claimed
  std::atomic<size_t> done_{0}, units_{0}, total_{0};
  std::atomic<void (*)(void*, size_t)> fn_{nullptr};
  std::atomic<void*> data_{nullptr};
};

}  // namespace seqedge::team
