// seqedge::to_half.out — float32 to float16 (nearest even), for ExecuTorch's attention lowering: the new keys and
// values rounded into the program-held float16 caches (exporters/decompositions.py attention_cached_sdpa).
// ExecuTorch's portable _to_dim_order_copy took ~2.4 ns an element (28 ms of a llama-135m prompt of 1,024, ETDump);
// here F16C's conversion where the CPU has it (vector_math.h floats_to_halves). Reference: seqedge/ops/attention/
// to_half.py (to_half_ref).
//
//   x (...) float32; out (...) float16, x's shape
//
// Registered boxed: stack = [x, out]. Large tensors are split over ExecuTorch's threadpool in blocks of kBlock.

#include "et_kernel.h"

#include <algorithm>
#include <cstdint>

#include "vector_math.h"

namespace seqedge {
namespace {

constexpr int64_t kBlock = 16384;  // elements per work item: a decode step's few hundred stay on the calling thread

void to_half_out(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  ET_KERNEL_CHECK_MSG(ctx, stack.size() >= 2 && stack[0]->isTensor() && stack[1]->isTensor(), InvalidArgument, ,
                      "to_half: arguments (x, out) expected");
  const Tensor& x = stack[0]->toTensor();
  Tensor& out = stack[1]->toTensor();
  ET_KERNEL_CHECK_MSG(ctx, x.scalar_type() == ScalarType::Float && out.scalar_type() == ScalarType::Half,
                      InvalidArgument, , "to_half: float32 x and a float16 out expected");
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(out, x.sizes()) == Error::Ok, InvalidArgument, );
  const float* src = x.const_data_ptr<float>();
  auto* dst = static_cast<uint16_t*>(out.mutable_data_ptr());
  const int64_t n = x.numel();
  if (n <= kBlock) return floats_to_halves(src, dst, n);
  executorch::extension::parallel_for(0, (n + kBlock - 1) / kBlock, 1, [&](int64_t begin, int64_t end) {
    const int64_t from = begin * kBlock, to = std::min(n, end * kBlock);
    floats_to_halves(src + from, dst + from, to - from);
  });
}

const auto registered = executorch::runtime::register_kernel(
    executorch::runtime::Kernel("seqedge::to_half.out", to_half_out));

}  // namespace
}  // namespace seqedge
