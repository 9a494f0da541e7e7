// seqedge::rms_norm.out — RMSNorm with its weight over the last dimension, for ExecuTorch's methods
// (exporters/decompositions.py rms_norm_kernel: XNNPACK ran a decode step's norm as its own delegate call of ten
// ops, ~4-5 us each, 61 of them a llama-135m token, and a prompt's mean of squares as a global average pool, 31 ms
// of a 1,024-token llama-135m prompt where this kernel takes 3). Reference: seqedge/ops/rms_norm (rms_norm_ref).
//
//   x (..., D) float32; weight (D) float32; eps; out (..., D)
//
// Registered boxed: stack = [x, weight, eps, out]. Rows are split over ExecuTorch's threadpool from kParallelRows.

#include "et_kernel.h"

#include <cstdint>

#include "rms_norm_core.h"

namespace seqedge {
namespace {

constexpr int64_t kParallelRows = 16;  // a decode step's one row costs less than a dispatch to the pool

void rms_norm_out(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  ET_KERNEL_CHECK_MSG(ctx, stack.size() >= 4 && stack[0]->isTensor() && stack[1]->isTensor() &&
                      stack[2]->isDouble() && stack[3]->isTensor(), InvalidArgument, ,
                      "rms_norm: arguments (x, weight, eps, out) expected");
  const Tensor& x = stack[0]->toTensor();
  const Tensor& weight = stack[1]->toTensor();
  const double eps = stack[2]->toDouble();
  Tensor& out = stack[3]->toTensor();
  ET_KERNEL_CHECK_MSG(ctx, x.scalar_type() == ScalarType::Float && weight.scalar_type() == ScalarType::Float &&
                      x.dim() >= 1 && weight.dim() == 1, InvalidArgument, ,
                      "rms_norm: float32 x (..., D) and weight (D) expected");
  const int64_t D = x.size(x.dim() - 1);
  ET_KERNEL_CHECK_MSG(ctx, D > 0 && weight.size(0) == D && eps >= 0, InvalidArgument, ,
                      "rms_norm: the weight must have x's last dimension, eps must not be negative");
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(out, x.sizes()) == Error::Ok, InvalidArgument, );
  const norm_core::Norm norm{x.const_data_ptr<float>(), weight.const_data_ptr<float>(), out.mutable_data_ptr<float>(),
                             x.numel() / D, D, static_cast<float>(eps)};
  if (norm.rows < kParallelRows) return norm_core::rows(norm, 0, norm.rows);
  executorch::extension::parallel_for(0, norm.rows, 4, [&](int64_t begin, int64_t end) {
    norm_core::rows(norm, begin, end);
  });
}

const auto registered = executorch::runtime::register_kernel(
    executorch::runtime::Kernel("seqedge::rms_norm.out", rms_norm_out));

}  // namespace
}  // namespace seqedge
