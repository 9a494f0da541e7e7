// seqedge::selective_scan.out — the Mamba-1 recurrence as an ExecuTorch CPU kernel (the scan itself is
// selective_scan_core.h, shared with the onnxruntime kernel); blocks of channels are split over
// ExecuTorch's threadpool. Outputs are resized here for dynamic T.
//
// Registered boxed (two outputs): stack = [u, delta, A, B, C, D, state, y, state_out].

#include "et_kernel.h"

#include "selective_scan_core.h"

namespace seqedge {
namespace {

using scan_core::Scan;

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

  ET_KERNEL_CHECK_MSG(ctx, u.scalar_type() == executorch::aten::ScalarType::Float, InvalidArgument, ,
                      "selective_scan: float32 only");
  scan_core::Shapes shapes{};
  const Tensor* operands[7] = {&u, &delta, &A, &B, &C, &Dv, &state};
  for (int i = 0; i < 7; ++i) {
    shapes.rank[i] = operands[i]->dim();
    for (int64_t k = 0; k < std::min<int64_t>(shapes.rank[i], 3); ++k) shapes.dims[i][k] = operands[i]->size(k);
  }
  const char* bad = scan_core::scan_shape_error(shapes);
  ET_KERNEL_CHECK_MSG(ctx, bad == nullptr, InvalidArgument, , "selective_scan: %s", bad);
  const int64_t Bt = u.size(0), T = u.size(1), Dm = u.size(2), N = A.size(1);
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(y, u.sizes()) == Error::Ok, InvalidArgument, );
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(state_out, state.sizes()) == Error::Ok, InvalidArgument, );

  const Scan scan{u.const_data_ptr<float>(), delta.const_data_ptr<float>(), A.const_data_ptr<float>(),
                  B.const_data_ptr<float>(), C.const_data_ptr<float>(), Dv.const_data_ptr<float>(),
                  state.const_data_ptr<float>(), y.mutable_data_ptr<float>(), state_out.mutable_data_ptr<float>(),
                  Bt, T, Dm, N};
  for (int64_t c = 0; c < scan_core::time_chunks(scan); ++c) {  // a long prompt in chunks of time
    const Scan part = scan_core::time_chunk(scan, c);
    executorch::extension::parallel_for(0, scan_core::scan_items(part), 4, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) scan_core::scan_item(part, item);
    });
  }
}

const auto registered = executorch::runtime::register_kernel(
    executorch::runtime::Kernel("seqedge::selective_scan.out", selective_scan_out));

}  // namespace
}  // namespace seqedge
