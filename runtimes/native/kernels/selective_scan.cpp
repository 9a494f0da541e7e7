// seqedge::selective_scan.out — the Mamba-1 recurrence as an ExecuTorch CPU kernel.
//
//   h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t,   y_t = C_t . h_t + D * u_t
//
// Shapes (see seqedge/ops/selective_scan/reference.py): u, delta (Bt, T, D); A (D, N); B, C (Bt, T, N);
// D (D); state (Bt, D, N). Outputs y (Bt, T, D) and state_out (Bt, D, N), resized here for dynamic T.
// Work is split over channels d (independent recurrences); each keeps its N states in registers and
// walks time once, so the cost is linear in T and nothing of size (T, D, N) is materialised.
//
// Registered boxed (two outputs): stack = [u, delta, A, B, C, D, state, y, state_out].

#include <executorch/runtime/kernel/kernel_includes.h>
#include <executorch/runtime/kernel/operator_registry.h>
#include <executorch/runtime/kernel/thread_parallel_interface.h>

#include <cmath>
#include <cstdint>

namespace seqedge {
namespace {

using executorch::aten::Tensor;
using executorch::runtime::Error;
using executorch::runtime::EValue;
using executorch::runtime::KernelRuntimeContext;
using executorch::runtime::Span;

constexpr int kMaxState = 256;

void scan_channels(const float* u, const float* delta, const float* A, const float* B, const float* C,
                   const float* Dv, const float* state, float* y, float* state_out, int64_t Bt, int64_t T,
                   int64_t Dm, int64_t N, int64_t d_begin, int64_t d_end) {
  float h[kMaxState];
  float a[kMaxState];
  for (int64_t b = 0; b < Bt; ++b) {
    for (int64_t d = d_begin; d < d_end; ++d) {
      const float* Ad = A + d * N;
      const float* h0 = state + (b * Dm + d) * N;
      for (int64_t n = 0; n < N; ++n) h[n] = h0[n];
      for (int64_t t = 0; t < T; ++t) {
        const int64_t i = (b * T + t) * Dm + d;
        const float dt = delta[i];
        const float du = dt * u[i];
        const float* Bt_ = B + (b * T + t) * N;
        const float* Ct_ = C + (b * T + t) * N;
        for (int64_t n = 0; n < N; ++n) a[n] = std::exp(dt * Ad[n]);
        float acc = 0.f;
        for (int64_t n = 0; n < N; ++n) {
          h[n] = a[n] * h[n] + du * Bt_[n];
          acc += Ct_[n] * h[n];
        }
        y[i] = acc + Dv[d] * u[i];
      }
      float* hs = state_out + (b * Dm + d) * N;
      for (int64_t n = 0; n < N; ++n) hs[n] = h[n];
    }
  }
}

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

  const float* pu = u.const_data_ptr<float>();
  const float* pd = delta.const_data_ptr<float>();
  const float* pA = A.const_data_ptr<float>();
  const float* pB = B.const_data_ptr<float>();
  const float* pC = C.const_data_ptr<float>();
  const float* pD = Dv.const_data_ptr<float>();
  const float* ps = state.const_data_ptr<float>();
  float* py = y.mutable_data_ptr<float>();
  float* pso = state_out.mutable_data_ptr<float>();
  // state and state_out may alias when the planner reuses the buffer: scan_channels reads a channel's
  // state fully before writing it, and channels are disjoint, so that is safe.
  executorch::extension::parallel_for(0, Dm, 64, [&](int64_t begin, int64_t end) {
    scan_channels(pu, pd, pA, pB, pC, pD, ps, py, pso, Bt, T, Dm, N, begin, end);
  });
}

const auto registered = executorch::runtime::register_kernel(
    executorch::runtime::Kernel("seqedge::selective_scan.out", selective_scan_out));

}  // namespace
}  // namespace seqedge
