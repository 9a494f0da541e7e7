// seqedge::selective_scan.out — the Mamba-1 recurrence as an ExecuTorch CPU kernel (the scan itself is
// selective_scan_core.h, shared with the onnxruntime kernel); blocks of channels are split over
// ExecuTorch's threadpool. Outputs are resized here for dynamic T.
// seqedge::mamba_scan.out — the same with Mamba's block around it (onnxruntime's seqedge.MambaScan): the step is
// softplus(delta) and y is gated by silu(z), z (Bt, T, D).
//
// Registered boxed (two outputs): stack = [u, delta, A, B, C, D, state, (z,) y, state_out].

#include "et_scan.h"

namespace seqedge {
namespace {

using scan_core::Scan;

template <bool kGated>
void scan_out(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  constexpr const char* op = kGated ? "mamba_scan" : "selective_scan";
  constexpr int kInputs = kGated ? 8 : 7;
  const Tensor* in[kInputs];
  for (int i = 0; i < kInputs; ++i) in[i] = &stack[i]->toTensor();
  Tensor& y = stack[kInputs]->toTensor();
  Tensor& state_out = stack[kInputs + 1]->toTensor();
  const Tensor &u = *in[0], &delta = *in[1], &A = *in[2], &B = *in[3], &C = *in[4], &Dv = *in[5], &state = *in[6];

  for (int i = 0; i < kInputs; ++i) {
    ET_KERNEL_CHECK_MSG(ctx, in[i]->scalar_type() == executorch::aten::ScalarType::Float, InvalidArgument, ,
                        "%s: float32 only", op);
  }
  scan_core::Shapes shapes{};
  for (int i = 0; i < 7; ++i) {
    shapes.rank[i] = in[i]->dim();
    for (int64_t k = 0; k < std::min<int64_t>(shapes.rank[i], 3); ++k) shapes.dims[i][k] = in[i]->size(k);
  }
  const char* bad = scan_core::scan_shape_error(shapes);
  ET_KERNEL_CHECK_MSG(ctx, bad == nullptr, InvalidArgument, , "%s: %s", op, bad);
  if (kGated) {
    ET_KERNEL_CHECK_MSG(ctx, gate_fits(*in[kInputs - 1], u), InvalidArgument, , "%s: z must have u's shape (Bt, T, D)",
                        op);
  }
  const int64_t Bt = u.size(0), T = u.size(1), Dm = u.size(2), N = A.size(1);
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(y, u.sizes()) == Error::Ok, InvalidArgument, );
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(state_out, state.sizes()) == Error::Ok, InvalidArgument, );

  Scan scan{u.const_data_ptr<float>(), delta.const_data_ptr<float>(), A.const_data_ptr<float>(),
            B.const_data_ptr<float>(), C.const_data_ptr<float>(), Dv.const_data_ptr<float>(),
            state.const_data_ptr<float>(), y.mutable_data_ptr<float>(), state_out.mutable_data_ptr<float>(),
            Bt, T, Dm, N};
  if (kGated) {
    const Tensor& z = *in[kInputs - 1];
    scan.z = z.const_data_ptr<float>();
    scan.delta_softplus = true;
  }
  scan_on_pool(scan);
}

const auto registered = executorch::runtime::register_kernel(
    executorch::runtime::Kernel("seqedge::selective_scan.out", scan_out<false>));
const auto registered_gated = executorch::runtime::register_kernel(
    executorch::runtime::Kernel("seqedge::mamba_scan.out", scan_out<true>));

}  // namespace
}  // namespace seqedge
