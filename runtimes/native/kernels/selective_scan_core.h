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
// materialised. A single step (T = 1: decode) walks each channel's N states instead, contiguous in the
// (Bt, D, N) layout, so the block does not gather and scatter its state across channels.
// Compiled per x86-64 feature level (vector_math.h).
//
// Mamba's block around the scan can come in too (seqedge.MambaScan, mamba's selective_scan_fn with
// delta_softplus and z): delta_softplus takes softplus(delta) as the step, and z (Bt, T, D) gates the output,
// y_t * silu(z_t) (reference: seqedge/ops/selective_scan/reference.py mamba_scan_ref).
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
  const float* z = nullptr;     // (Bt, T, D): y_t * silu(z_t) when given
  bool delta_softplus = false;  // the step is softplus(delta)
  int64_t rows = 0;             // positions per batch row in the tensors (0: T; a time chunk's view: the whole T)
};

SEQEDGE_INLINE int64_t seq_rows(const Scan& s) { return s.rows > 0 ? s.rows : s.T; }

// Lane-wide steps shared by the scan and the single step, each a loop over all kLanes lanes (so it vectorises;
// the options are tested outside the loops): lanes past nd read 0 and are not stored.
SEQEDGE_INLINE void load_lanes(const float* src, int64_t i, int64_t nd, float* out) {
  if (nd == kLanes) {
    std::memcpy(out, src + i, sizeof(float) * kLanes);
    return;
  }
  for (int64_t c = 0; c < kLanes; ++c) out[c] = c < nd ? src[i + c] : 0.f;
}

// The step sizes of the lanes at index i: delta, or softplus(delta).
SEQEDGE_INLINE void load_step_sizes(const Scan& s, int64_t i, int64_t nd, float* dt) {
  load_lanes(s.delta, i, nd, dt);
  if (s.delta_softplus) apply16(dt, [](Floats8 v) { return softplus8(v); });
}

// Store the lanes' outputs at index i, gated by silu(z) when z is given.
SEQEDGE_INLINE void store_outputs(const Scan& s, int64_t i, int64_t nd, float* y) {
  if (s.z) {
    float z[kLanes];
    load_lanes(s.z, i, nd, z);
    apply16(z, [](Floats8 v) { return silu8(v); });
    for (int64_t c = 0; c < kLanes; ++c) y[c] *= z[c];
  }
  if (nd == kLanes)
    std::memcpy(s.y + i, y, sizeof(float) * kLanes);
  else
    for (int64_t c = 0; c < nd; ++c) s.y[i + c] = y[c];
}

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
  const int64_t rows = seq_rows(s);
  for (int64_t t = 0; t < s.T; ++t) {
    const int64_t i = (b * rows + t) * Dm + d0;
    const float* Bt_ = s.B + (b * rows + t) * N;
    const float* Ct_ = s.C + (b * rows + t) * N;
    float dt[kLanes], u[kLanes], du[kLanes], acc[kLanes];
    load_step_sizes(s, i, nd, dt);
    load_lanes(s.u, i, nd, u);
    for (int64_t c = 0; c < kLanes; ++c) {
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
    for (int64_t c = 0; c < kLanes; ++c) acc[c] += Dl[c] * u[c];
    store_outputs(s, i, nd, acc);
  }
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < nd; ++c) s.state_out[(b * Dm + d0 + c) * N + n] = h[n][c];
}

// One time step (T = 1) of channels [d0, d0 + nd): each channel's N states are contiguous, so the loop over
// them is the vector loop and the state is read and written in place of a transpose. N a multiple of 8 (Mamba's
// 16) takes eight states a vector with nothing else in the channel loop: written as one loop with a remainder,
// the compiler rebuilt the exponential's constants and tested the remainder's aliasing per channel, and the
// step took ~30 us for mamba-130m's 1536 x 16 states on one Zen 3 thread (24 of them a token).
SEQEDGE_INLINE void step_channels(const Scan& s, int64_t b, int64_t d0, int64_t nd, const float* dt, const float* u,
                                  float* y) {
  const int64_t N = s.N, i0 = b * s.Dm + d0;
  const float* Bn = s.B + b * N;
  const float* Cn = s.C + b * N;
  if (N % 8 == 0) {
    for (int64_t c = 0; c < nd; ++c) {
      const int64_t i = i0 + c;
      const float step = dt[c], du = step * u[c];
      const float* A = s.A + (d0 + c) * N;
      const float* h0 = s.state + i * N;
      float* h1 = s.state_out + i * N;  // may alias h0: each state is read before it is written
      Floats8 acc = {};
      for (int64_t n = 0; n < N; n += 8) {
        const Floats8 h = exp_nonpositive8(step * load8(A + n)) * load8(h0 + n) + du * load8(Bn + n);
        store8(h1 + n, h);
        acc += load8(Cn + n) * h;
      }
      y[c] = sum8(acc) + s.Dv[d0 + c] * u[c];
    }
    return;
  }
  float h[kMaxState];
  for (int64_t c = 0; c < nd; ++c) {
    const int64_t i = i0 + c;
    const float du = dt[c] * u[c];
    const float* A = s.A + (d0 + c) * N;
    const float* h0 = s.state + i * N;
    for (int64_t n = 0; n < N; ++n) h[n] = exp_nonpositive(dt[c] * A[n]) * h0[n] + du * Bn[n];
    for (int64_t n = 0; n < N; ++n) s.state_out[i * N + n] = h[n];  // may alias state: read above
    y[c] = dot(Cn, h, N) + s.Dv[d0 + c] * u[c];
  }
}

// The 16 lanes' sums of 16 vectors, as one vector (lane c: the sum of p[c]): four rounds that each add
// neighbouring runs of lanes of two vectors, so that 16 horizontal sums cost 15 vector adds and their shuffles.
SEQEDGE_INLINE Floats16 lane_sums16(const Floats16 (&p)[16]) {
  Floats16 a[8], b[4], c[2];
  for (int k = 0; k < 8; ++k)  // lane 2m + j: p[2k + j], lanes 2m .. 2m + 1
    a[k] = __builtin_shufflevector(p[2 * k], p[2 * k + 1], 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30) +
           __builtin_shufflevector(p[2 * k], p[2 * k + 1], 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
  for (int k = 0; k < 4; ++k)  // lane 4m + j: p[4k + j], lanes 4m .. 4m + 3
    b[k] = __builtin_shufflevector(a[2 * k], a[2 * k + 1], 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29) +
           __builtin_shufflevector(a[2 * k], a[2 * k + 1], 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
  for (int k = 0; k < 2; ++k)  // lane 8m + j: p[8k + j], lanes 8m .. 8m + 7
    c[k] = __builtin_shufflevector(b[2 * k], b[2 * k + 1], 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27) +
           __builtin_shufflevector(b[2 * k], b[2 * k + 1], 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
  return __builtin_shufflevector(c[0], c[1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
         __builtin_shufflevector(c[0], c[1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
}

// step_channels for a whole block at 16 floats a register (v4), N a multiple of 16 (Mamba's 16): a channel's 16
// states a vector, and the 16 channels' dot products C . h summed across lanes together (lane_sums16) instead of one
// by one. Mamba-130m's step at 2 threads (perf of an onnxruntime decode loop): the step was ~9 % of the samples,
// most of them its per-channel horizontal sums and its two 8-lane exponentials per channel.
SEQEDGE_INLINE void step_channels16(const Scan& s, int64_t b, int64_t d0, const float* dt, const float* u, float* y) {
  const int64_t N = s.N, i0 = b * s.Dm + d0;
  const float* Bn = s.B + b * N;
  const float* Cn = s.C + b * N;
  Floats16 dots[kLanes];
  for (int64_t c = 0; c < kLanes; ++c) {
    const float step = dt[c], du = step * u[c];
    const float* A = s.A + (d0 + c) * N;
    const float* h0 = s.state + (i0 + c) * N;
    float* h1 = s.state_out + (i0 + c) * N;  // may alias h0: each state is read before it is written
    Floats16 acc = {};
    for (int64_t n = 0; n < N; n += 16) {
      const Floats16 h = exp_nonpositive_lanes<16>(step * loadv<Floats16>(A + n)) * loadv<Floats16>(h0 + n) +
                         du * loadv<Floats16>(Bn + n);
      storev(h1 + n, h);
      acc += loadv<Floats16>(Cn + n) * h;
    }
    dots[c] = acc;
  }
  const Floats16 sums = lane_sums16(dots);
  for (int64_t c = 0; c < kLanes; ++c) y[c] = sums[c] + s.Dv[d0 + c] * u[c];
}

// One time step of channels [d0, d0 + nd) of batch row b, at the build's vector width (step_channels16 at 16).
template <int kWidth>
SEQEDGE_INLINE void step_block(const Scan& s, int64_t b, int64_t d0, int64_t nd) {
  const int64_t i0 = b * s.Dm + d0;
  float dt[kLanes], u[kLanes], y[kLanes] = {};
  load_step_sizes(s, i0, nd, dt);
  load_lanes(s.u, i0, nd, u);
  if (kWidth == 16 && nd == kLanes && s.N % 16 == 0)
    step_channels16(s, b, d0, dt, u, y);
  else
    step_channels(s, b, d0, nd, dt, u, y);
  store_outputs(s, i0, nd, y);
}

SEQEDGE_ISA_VARIANTS(scan_block, scan_block, (const Scan& s, int64_t b, int64_t d0, int64_t nd), (s, b, d0, nd))
SEQEDGE_WIDTH_VARIANTS(step_block, step_block<kWidth>, (const Scan& s, int64_t b, int64_t d0, int64_t nd),
                       (s, b, d0, nd))

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

// A runtime scans a long sequence in chunks of kTimeChunk steps, each chunk's items over its threads and the state
// carried through state_out: a block walking all T at once reads its rows Dm floats apart over the whole prompt
// (mamba-130m in onnxruntime, T = 4,096 against 1,024: the op took 4.7x the time for 4x the steps, 4.2x in chunks).
// Chunk `c` of `s` (time_chunks(s) of them) is a view of steps [c kTimeChunk, ...) that starts from the state the one
// before it left.
constexpr int64_t kTimeChunk = 256;
inline int64_t time_chunks(const Scan& s) { return std::max<int64_t>(1, (s.T + kTimeChunk - 1) / kTimeChunk); }
inline Scan time_chunk(const Scan& s, int64_t c) {
  if (s.T <= kTimeChunk) return s;
  const int64_t t0 = c * kTimeChunk;
  Scan v = s;
  v.rows = seq_rows(s);
  v.T = std::min(kTimeChunk, s.T - t0);
  v.u += t0 * s.Dm;
  v.delta += t0 * s.Dm;
  v.y += t0 * s.Dm;
  if (v.z != nullptr) v.z += t0 * s.Dm;
  v.B += t0 * s.N;
  v.C += t0 * s.N;
  if (c > 0) v.state = s.state_out;
  return v;
}

// Run work item `item` with the kernel built for this CPU. state and state_out may alias (a planner reusing
// the buffer): a block reads its channels' state fully before writing it, and blocks are disjoint.
inline void scan_item(const Scan& s, int64_t item) {
  static const auto block = select_isa(scan_block_v4, scan_block_v3, scan_block_baseline);
  static const auto step = select_isa(step_block_v4, step_block_v3, step_block_baseline);
  const int64_t blocks = (s.Dm + kLanes - 1) / kLanes;
  const int64_t b = item / blocks, d0 = (item % blocks) * kLanes;
  (s.T == 1 ? step : block)(s, b, d0, std::min<int64_t>(kLanes, s.Dm - d0));
}

}  // namespace
}  // namespace scan_core
}  // namespace seqedge
