// seqedge_on_each_pool_thread(fn, arg): call fn(arg) once on every thread of ExecuTorch's threadpool (the caller
// included), so a thread-local setting reaches the threads that run a program's kernels.
//
// Why: inside Python, ExecuTorch's LLM kernels come from the executorch wheel (libcustom_ops_aot_lib), whose
// llama::custom_sdpa multiplies through executorch::cpublas::gemm -> libtorch's MKL sgemm. It calls MKL from
// the threadpool's workers, where OpenMP's thread count is the process default (the cores), not torch's
// setting (omp_set_num_threads and mkl_set_num_threads_local are per thread): every gemm opened an OpenMP team,
// whose workers then spun beside the threadpool's. llama-135m int4 prefill at T = 256 on 2 cores ran at
// ~480 tok/s that way and ~1,100-1,300 with OMP_NUM_THREADS=1. The Python runtime passes omp_set_num_threads
// and mkl_set_num_threads_local (from the libraries torch loaded) with 1 (runtimes/executorch.py).
//
// One item per thread: ExecuTorch's parallel_for hands the pool an even split of the range, and every item
// waits (bounded) until all have started, so no thread finishes early and takes a second one. Returns how
// many threads ran fn (the pool's size when it worked).

#include "et_kernel.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

extern "C" __attribute__((visibility("default"))) int64_t seqedge_on_each_pool_thread(void (*fn)(int), int arg) {
  if (fn == nullptr) return 0;
  const int64_t n = executorch::extension::get_thread_count();
  if (n <= 1) {
    fn(arg);
    return 1;
  }
  std::atomic<int64_t> started{0};
  executorch::extension::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      fn(arg);
      started.fetch_add(1);
      const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
      while (started.load() < n && std::chrono::steady_clock::now() < until) std::this_thread::yield();
    }
  });
  return started.load();
}
