// What seqedge's ExecuTorch scan kernels share (selective_scan.cpp, int4_mamba_scan.cpp): the scan run in chunks of
// time, each chunk's blocks of channels over ExecuTorch's threadpool, and the gate's shape check.
#pragma once

#include "et_kernel.h"

#include "selective_scan_core.h"

namespace seqedge {
namespace {  // internal linkage, as selective_scan_core.h's

// `scan` (a long prompt in chunks of time, scan_core::time_chunk), each chunk's items over the pool.
inline void scan_on_pool(const scan_core::Scan& scan) {
  for (int64_t c = 0; c < scan_core::time_chunks(scan); ++c) {
    const scan_core::Scan part = scan_core::time_chunk(scan, c);
    executorch::extension::parallel_for(0, scan_core::scan_items(part), 4, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) scan_core::scan_item(part, item);
    });
  }
}

// Whether z has u's shape (Bt, T, D), as the gate y * silu(z) needs.
inline bool gate_fits(const Tensor& z, const Tensor& u) {
  return z.dim() == 3 && u.dim() == 3 && z.size(0) == u.size(0) && z.size(1) == u.size(1) && z.size(2) == u.size(2);
}

}  // namespace
}  // namespace seqedge
