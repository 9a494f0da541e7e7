// The Mamba-1 selective scan, shared by seqedge's kernels for each runtime: ExecuTorch
// (selective_scan.cpp, seqedge::selective_scan.out) and onnxruntime (onnxruntime/ort_kernels.cpp,
// seqedge.SelectiveScan). One source, so both runtimes compute the same thing at the same speed.
//
//   h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t,   y_t = C_t . h_t + D * u_t
//
// Shapes (see seqedge/ops/selective_scan/reference.py): u, delta (Bt, T, D); A (D, N); B, C (Bt, T, N);
// D (D); state (Bt, D, N). Outputs y (Bt, T, D) and state_out (Bt, D, N).
// Channels are independent recurrences: a block of 16 channels walks time once with its (N, 16) states in
// registers, so every operation — exp(delta * A) included — runs across 16 channels at once (one AVX-512
// register, two AVX2, four NEON) with no horizontal sums; a runtime splits the blocks over its threads
// (`scan_items` of them, `scan_item` runs one). The cost is linear in T and nothing of size (T, D, N) is
// materialised. Compiled per x86-64 feature level (vector_math.h).
#pragma once

#include <algorithm>
#include <cstdint>

#include "vector_math.h"

namespace seqedge {
namespace scan_core {
namespace {  // internal linkage: each kernel library carries its own copy (both may load into one process)

constexpr int kMaxState = 256;
constexpr int64_t kLanes = 16;  // channels per block

struct Scan {
  const float *u, *delta, *A, *B, *C, *Dv, *state;
  float *y, *state_out;
  int64_t Bt, T, Dm, N;
};

// Channels [d0, d0 + nd), nd <= kLanes, of batch row b; lanes past nd compute zeros and are not stored.
SEQEDGE_INLINE void scan_block(const Scan& s, int64_t b, int64_t d0, int64_t nd) {
  const int64_t N = s.N, Dm = s.Dm;
  float h[kMaxState][kLanes];   // (N, lanes) state
  float At[kMaxState][kLanes];  // (N, lanes) A, transposed
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < kLanes; ++c) {
      const bool live = c < nd;
      At[n][c] = live ? s.A[(d0 + c) * N + n] : 0.f;
      h[n][c] = live ? s.state[(b * Dm + d0 + c) * N + n] : 0.f;
    }
  float Dl[kLanes];
  for (int64_t c = 0; c < kLanes; ++c) Dl[c] = c < nd ? s.Dv[d0 + c] : 0.f;
  for (int64_t t = 0; t < s.T; ++t) {
    const int64_t i = (b * s.T + t) * Dm + d0;
    const float* Bt_ = s.B + (b * s.T + t) * N;
    const float* Ct_ = s.C + (b * s.T + t) * N;
    float dt[kLanes], u[kLanes], du[kLanes], acc[kLanes];
    for (int64_t c = 0; c < kLanes; ++c) {
      dt[c] = c < nd ? s.delta[i + c] : 0.f;
      u[c] = c < nd ? s.u[i + c] : 0.f;
      du[c] = dt[c] * u[c];
      acc[c] = 0.f;
    }
    for (int64_t n = 0; n < N; ++n) {
      const float bn = Bt_[n], cn = Ct_[n];
      for (int64_t c = 0; c < kLanes; ++c) {
        h[n][c] = exp_nonpositive(dt[c] * At[n][c]) * h[n][c] + du[c] * bn;  // delta * A <= 0 (A < 0, delta > 0)
        acc[c] += cn * h[n][c];
      }
    }
    for (int64_t c = 0; c < nd; ++c) s.y[i + c] = acc[c] + Dl[c] * u[c];
  }
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < nd; ++c) s.state_out[(b * Dm + d0 + c) * N + n] = h[n][c];
}

SEQEDGE_ISA_VARIANTS(scan_block, scan_block, (const Scan& s, int64_t b, int64_t d0, int64_t nd), (s, b, d0, nd))

// Why the operands' shapes do not fit one scan (nullptr when they do): u, delta (Bt, T, D); A (D, N);
// B, C (Bt, T, N); D (D); state (Bt, D, N). Each runtime checks this before touching any data — the
// graph that feeds the kernel is an untrusted file.
struct Shapes {
  int64_t dims[7][3];  // u, delta, A, B, C, D, state (the leading `rank` entries of each)
  int64_t rank[7];
};

inline const char* scan_shape_error(const Shapes& s) {
  for (int i : {0, 1, 3, 4, 6})
    if (s.rank[i] != 3) return "u, delta, B, C and state must be 3-D";
  if (s.rank[2] != 2 || s.rank[5] != 1) return "A must be 2-D (D, N) and D 1-D (D)";
  const int64_t Bt = s.dims[0][0], T = s.dims[0][1], Dm = s.dims[0][2], N = s.dims[2][1];
  const auto is = [&](int i, int64_t a, int64_t b, int64_t c) {
    return s.dims[i][0] == a && s.dims[i][1] == b && s.dims[i][2] == c;
  };
  if (Bt < 0 || T < 0 || Dm < 0 || N < 0) return "negative dimension";
  if (!is(1, Bt, T, Dm)) return "delta must have u's shape (Bt, T, D)";
  if (s.dims[2][0] != Dm || s.dims[5][0] != Dm) return "A must be (D, N) and D (D) for u's D";
  if (!is(3, Bt, T, N) || !is(4, Bt, T, N)) return "B and C must be (Bt, T, N)";
  if (!is(6, Bt, Dm, N)) return "state must be (Bt, D, N)";
  if (N > kMaxState) return "d_state is over 256";
  return nullptr;
}

// Work items of a scan: one per (batch row, block of kLanes channels).
inline int64_t scan_items(const Scan& s) { return s.Bt * ((s.Dm + kLanes - 1) / kLanes); }

// Run work item `item` with the kernel built for this CPU. state and state_out may alias (a planner reusing
// the buffer): a block reads its channels' state fully before writing it, and blocks are disjoint.
inline void scan_item(const Scan& s, int64_t item) {
  static const auto block = select_isa(scan_block_v4, scan_block_v3, scan_block_baseline);
  const int64_t blocks = (s.Dm + kLanes - 1) / kLanes;
  const int64_t b = item / blocks, d0 = (item % blocks) * kLanes;
  block(s, b, d0, std::min<int64_t>(kLanes, s.Dm - d0));
}

}  // namespace
}  // namespace scan_core
}  // namespace seqedge
