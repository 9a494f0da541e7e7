// seqedge::int4_matmul.out — seqedge's int4 matmul (int4_matmul_core.h, the kernel onnxruntime runs as
// seqedge.Int4MatMul) as an ExecuTorch CPU kernel: y (..., N) = a (..., K) @ dequant(codes, scales)^T, the
// activations quantized to int8 per block of 32 as they arrive. Reference: seqedge/ops/int4_matmul
// (int4_matmul_ref). The ExecuTorch int4 recipe puts it in place of XNNPACK's 8da4w linear for x86-64 targets
// with AVX2 (quant/executorch.py), where it is the faster kernel.
//
// seqedge::int4_matmul_swiglu.out is the same product of a fused gate/up projection (N even) followed by its
// SwiGLU: y (..., N / 2) = silu(gate) * up of the two halves, computed as each work item's rows come (the core's
// `glu`; onnxruntime's seqedge.Int4MatMulSwiGLU). Reference: int4_matmul_swiglu_ref.
//
// Work items (16 or 32 output rows each) are split over ExecuTorch's threadpool; a prompt's activation rows are
// quantized over it too. Registered boxed: stack = [a, codes, scales, out].

#include "et_kernel.h"

#include <cstdint>
#include <vector>

#include "int4_matmul_core.h"

namespace seqedge {
namespace {

void int4_matmul(KernelRuntimeContext& ctx, Span<EValue*> stack, bool swiglu) {
  ET_KERNEL_CHECK_MSG(ctx, stack.size() >= 4 && stack[0]->isTensor() && stack[1]->isTensor() &&
                      stack[2]->isTensor() && stack[3]->isTensor(), InvalidArgument, ,
                      "int4_matmul: arguments (a, codes, scales, out) expected");
  const Tensor& a = stack[0]->toTensor();
  const Tensor& codes = stack[1]->toTensor();
  const Tensor& scales = stack[2]->toTensor();
  Tensor& out = stack[3]->toTensor();
  ET_KERNEL_CHECK_MSG(ctx, a.scalar_type() == ScalarType::Float && a.dim() >= 1 && a.dim() <= 4, InvalidArgument, ,
                      "int4_matmul: float32 activations of rank 1-4 expected");
  // rows (N, K/32, 16) with scales (N, K/32), or groups of 16 rows (N/16, K/32, 256) with scales (N/16, K/32, 16)
  const bool grouped = codes.dim() == 3 && codes.size(2) == int4_core::kGroupBlockBytes;
  ET_KERNEL_CHECK_MSG(ctx, codes.scalar_type() == ScalarType::Byte && codes.dim() == 3 &&
                      scales.scalar_type() == ScalarType::Half && scales.dim() == (grouped ? 3 : 2), InvalidArgument, ,
                      "int4_matmul: uint8 codes (N, K/32, 16) and float16 scales (N, K/32), or codes (N/16, K/32, 256) "
                      "and scales (N/16, K/32, 16), expected");
  const int64_t K = a.size(a.dim() - 1), N = codes.size(0) * (grouped ? 16 : 1);
  const char* bad = int4_core::shape_error(K, N);
  ET_KERNEL_CHECK_MSG(ctx, bad == nullptr, InvalidArgument, , "int4_matmul: %s", bad);
  ET_KERNEL_CHECK_MSG(ctx, !swiglu || N % (grouped ? 32 : 2) == 0, InvalidArgument, ,
                      "int4_matmul_swiglu: N (rows of codes) must be even (grouped: a multiple of 32): gate and up halves");
  const int64_t nb = int4_core::blocks(K);
  ET_KERNEL_CHECK_MSG(ctx, codes.size(1) == nb && scales.size(0) == codes.size(0) && scales.size(1) == nb &&
                      (grouped ? scales.size(2) == 16 : codes.size(2) == int4_core::kRowBlockBytes),
                      InvalidArgument, , "int4_matmul: codes (N, ceil(K/32), 16) and scales (N, ceil(K/32)), or codes "
                      "(N/16, ceil(K/32), 256) and scales (N/16, ceil(K/32), 16), expected");
  executorch::aten::SizesType sizes[4];
  int64_t M = 1;
  for (int64_t i = 0; i + 1 < a.dim(); ++i) {
    sizes[i] = a.size(i);
    M *= a.size(i);
  }
  sizes[a.dim() - 1] = static_cast<executorch::aten::SizesType>(swiglu ? N / 2 : N);
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(out, {sizes, static_cast<size_t>(a.dim())}) == Error::Ok,
                  InvalidArgument, );
  if (M == 0) return;

  thread_local std::vector<uint8_t> scratch;  // reused across calls: a prompt's rows would be a fresh mapping each time
  int4_core::MatMul mm = int4_core::prepare(a.const_data_ptr<float>(), codes.const_data_ptr<uint8_t>(),
                                            static_cast<const uint16_t*>(scales.const_data_ptr()),
                                            out.mutable_data_ptr<float>(), M, N, K, swiglu, scratch, grouped);
  if (M < int4_core::kParallelRows) {  // decode: a dispatch to the pool costs more than the rows
    for (int64_t m = 0; m < M; ++m) int4_core::quantize_row(mm, m);
  } else {
    executorch::extension::parallel_for(0, M, 1, [&](int64_t begin, int64_t end) {
      for (int64_t m = begin; m < end; ++m) int4_core::quantize_row(mm, m);
    });
  }
  executorch::extension::parallel_for(0, int4_core::items(mm), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) int4_core::item(mm, i);
  });
}

void int4_matmul_out(KernelRuntimeContext& ctx, Span<EValue*> stack) { int4_matmul(ctx, stack, false); }
void int4_matmul_swiglu_out(KernelRuntimeContext& ctx, Span<EValue*> stack) { int4_matmul(ctx, stack, true); }

const auto registered = executorch::runtime::register_kernel(
    executorch::runtime::Kernel("seqedge::int4_matmul.out", int4_matmul_out));
const auto registered_swiglu = executorch::runtime::register_kernel(
    executorch::runtime::Kernel("seqedge::int4_matmul_swiglu.out", int4_matmul_swiglu_out));

}  // namespace
}  // namespace seqedge
