// seqedge::selective_scan.out — the Mamba-1 recurrence as an ExecuTorch CPU kernel.
//
//   h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t,   y_t = C_t . h_t + D * u_t
//
// Shapes (see seqedge/ops/selective_scan/reference.py): u, delta (Bt, T, D); A (D, N); B, C (Bt, T, N);
// D (D); state (Bt, D, N). Outputs y (Bt, T, D) and state_out (Bt, D, N), resized here for dynamic T.
// Channels are independent recurrences: a block of 16 channels walks time once with its (N, 16) states in
// registers, so every operation — exp(delta * A) included — runs across 16 channels at once (one AVX-512
// register, two AVX2, four NEON) with no horizontal sums; blocks are split over threads. The cost is linear in
// T and nothing of size (T, D, N) is materialised. Compiled per x86-64 feature level (vector_math.h).
//
// Registered boxed (two outputs): stack = [u, delta, A, B, C, D, state, y, state_out].

#include <executorch/runtime/kernel/kernel_includes.h>
#include <executorch/runtime/kernel/operator_registry.h>
#include <executorch/runtime/kernel/thread_parallel_interface.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "vector_math.h"

namespace seqedge {
namespace {

using executorch::aten::Tensor;
using executorch::runtime::Error;
using executorch::runtime::EValue;
using executorch::runtime::KernelRuntimeContext;
using executorch::runtime::Span;

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

void selective_scan_out(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  const Tensor& u = stack[0]->toTensor();
  const Tensor& delta = stack[1]->toTensor();
  const Tensor& A = stack[2]->toTensor();
  const Tensor& B = stack[3]->toTensor();
  const Tensor& C = stack[4]->toTensor();
  const Tensor& Dv = stack[5]->toTensor();
  const Tensor& state = stack[6]->toTensor();
  Tensor& y = stack[7]->toTensor();
  Tensor& state_out = stack[8]->toTensor();

  ET_KERNEL_CHECK_MSG(ctx, u.dim() == 3 && A.dim() == 2 && state.dim() == 3, InvalidArgument, ,
                      "selective_scan: expected u (Bt,T,D), A (D,N), state (Bt,D,N)");
  ET_KERNEL_CHECK_MSG(ctx, u.scalar_type() == executorch::aten::ScalarType::Float, InvalidArgument, ,
                      "selective_scan: float32 only");
  const int64_t Bt = u.size(0), T = u.size(1), Dm = u.size(2), N = A.size(1);
  ET_KERNEL_CHECK_MSG(ctx, N <= kMaxState, InvalidArgument, , "selective_scan: d_state > 256");
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(y, u.sizes()) == Error::Ok, InvalidArgument, );
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(state_out, state.sizes()) == Error::Ok, InvalidArgument, );

  const Scan scan{u.const_data_ptr<float>(), delta.const_data_ptr<float>(), A.const_data_ptr<float>(),
                  B.const_data_ptr<float>(), C.const_data_ptr<float>(), Dv.const_data_ptr<float>(),
                  state.const_data_ptr<float>(), y.mutable_data_ptr<float>(), state_out.mutable_data_ptr<float>(),
                  Bt, T, Dm, N};
  auto block = select_isa(scan_block_v4, scan_block_v3, scan_block_baseline);
  // state and state_out may alias when the planner reuses the buffer: a block reads its channels' state fully
  // before writing it, and blocks are disjoint, so that is safe.
  const int64_t blocks = (Dm + kLanes - 1) / kLanes;
  executorch::extension::parallel_for(0, Bt * blocks, 4, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / blocks, d0 = (item % blocks) * kLanes;
      block(scan, b, d0, std::min<int64_t>(kLanes, Dm - d0));
    }
  });
}

const auto registered = executorch::runtime::register_kernel(
    executorch::runtime::Kernel("seqedge::selective_scan.out", selective_scan_out));

}  // namespace
}  // namespace seqedge
