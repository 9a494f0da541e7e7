// seqedge's kernels for eager PyTorch: plain C entry points (libseqedge_eager_kernels.so) that
// seqedge/ops/native.py calls through ctypes on contiguous float32 CPU tensors, so the eager op (training,
// the parity references, accuracy reports) runs the same scan source as the ExecuTorch and onnxruntime
// kernels (selective_scan_core.h) instead of stepping (Bt, T, D, N) tensors in Python.
//
//   seqedge_selective_scan_f32(u, delta, A, B, C, D, state, y, state_out, Bt, T, Dm, N, threads) -> 0 | error
//
// Shapes as in selective_scan_core.h; the caller passes the tensors' own sizes (checked again here) and
// preallocated outputs. Blocks of channels are split over `threads` std::threads (the caller's thread is one).

#include <thread>
#include <vector>

#include "../selective_scan_core.h"

extern "C" __attribute__((visibility("default"))) int seqedge_selective_scan_f32(
    const float* u, const float* delta, const float* A, const float* B, const float* C, const float* Dv,
    const float* state, float* y, float* state_out, int64_t Bt, int64_t T, int64_t Dm, int64_t N, int threads) {
  using namespace seqedge::scan_core;
  if (Bt < 0 || T < 0 || Dm < 0 || N < 0 || N > kMaxState) return 1;
  const Scan scan{u, delta, A, B, C, Dv, state, y, state_out, Bt, T, Dm, N};
  const int64_t items = scan_items(scan);
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(threads, items));
  auto run = [&](int64_t w) {
    for (int64_t item = w; item < items; item += workers) scan_item(scan, item);
  };
  std::vector<std::thread> pool;
  for (int64_t w = 1; w < workers; ++w) pool.emplace_back(run, w);
  run(0);
  for (auto& t : pool) t.join();
  return 0;
}
