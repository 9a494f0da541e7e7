// seqedge::causal_conv1d.out — one step (T = 1: decode) of Mamba's causal depthwise convolution with its
// carried window, then SiLU, as an ExecuTorch CPU kernel (the convolution itself is causal_conv_core.h, shared
// with the onnxruntime kernel); blocks of channels are split over ExecuTorch's threadpool.
//
// Operands in the op's layout (seqedge/ops/causal_conv1d): x (Bt, D, 1), weight (D, 1, K), bias (D),
// state (Bt, D, K-1); outputs y (Bt, D, 1) and state_out (Bt, D, K-1). At T = 1 channels first and channels last
// are the same memory, so the core's step reads x where it lies. A prompt (T > 1) is not this kernel's: the
// prefill method lowers the op to XNNPACK's depthwise convolution (exporters/executorch/lowerings.py). In decode
// that was one delegate call of ~11 ops per layer, ~30 us of a mamba-130m step's ~200 us a layer.
//
// Registered boxed (two outputs): stack = [x, weight, bias, state, y, state_out].

#include "et_kernel.h"

#include "causal_conv_core.h"

namespace seqedge {
namespace {

void causal_conv1d_out(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  const Tensor& x = stack[0]->toTensor();
  const Tensor& w = stack[1]->toTensor();
  const Tensor& bias = stack[2]->toTensor();
  const Tensor& state = stack[3]->toTensor();
  Tensor& y = stack[4]->toTensor();
  Tensor& state_out = stack[5]->toTensor();

  const Tensor* operands[4] = {&x, &w, &bias, &state};
  for (const Tensor* t : operands)
    ET_KERNEL_CHECK_MSG(ctx, t->scalar_type() == ScalarType::Float, InvalidArgument, , "causal_conv1d: float32 only");
  ET_KERNEL_CHECK_MSG(ctx, x.dim() == 3 && x.size(2) == 1, InvalidArgument, ,
                      "causal_conv1d: one step only, x (Bt, D, 1) (a prompt lowers to XNNPACK's convolution)");
  int64_t dims[4][3] = {}, rank[4] = {};
  rank[0] = 3;
  dims[0][0] = x.size(0), dims[0][1] = 1, dims[0][2] = x.size(1);  // as the core's channels-last (Bt, T, D)
  for (int i = 1; i < 4; ++i) {
    rank[i] = operands[i]->dim();
    for (int64_t k = 0; k < std::min<int64_t>(rank[i], 3); ++k) dims[i][k] = operands[i]->size(k);
  }
  const char* bad = conv_core::conv_shape_error(dims, rank);
  ET_KERNEL_CHECK_MSG(ctx, bad == nullptr, InvalidArgument, , "causal_conv1d: %s", bad);
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(y, x.sizes()) == Error::Ok, InvalidArgument, );
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(state_out, state.sizes()) == Error::Ok, InvalidArgument, );

  const conv_core::Conv conv{x.const_data_ptr<float>(), w.const_data_ptr<float>(), bias.const_data_ptr<float>(),
                             state.const_data_ptr<float>(), y.mutable_data_ptr<float>(),
                             state_out.mutable_data_ptr<float>(), x.size(0), 1, x.size(1), w.size(2)};
  executorch::extension::parallel_for(0, conv_core::conv_items(conv), 8, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) conv_core::conv_item(conv, item);
  });
}

const auto registered = executorch::runtime::register_kernel(
    executorch::runtime::Kernel("seqedge::causal_conv1d.out", causal_conv1d_out));

}  // namespace
}  // namespace seqedge
