// seqedge::rope.out — rotary position embedding of queries or keys at positions [pos, pos + T), for ExecuTorch's
// attention lowering (exporters/decompositions.py attention_cached_sdpa). Reference: seqedge/ops/attention/rope.py
// (rope_at_ref).
//
//   x (B, T, h, D) float32, D even; pos (1,) int64 >= 0; cos, sin (S, D / 2) float32; out (B, T, h, D)
//   token t is rotated to position min(pos + t, S - 1) (a position past the tables takes their last row).
//
// Registered boxed: stack = [x, pos, cos, sin, out].

#include "et_kernel.h"

#include <algorithm>
#include <cstdint>

#include "rope_core.h"

namespace seqedge {
namespace {

void rope_out(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  const Tensor& x = stack[0]->toTensor();
  const Tensor& pos = stack[1]->toTensor();
  const Tensor& cos = stack[2]->toTensor();
  const Tensor& sin = stack[3]->toTensor();
  Tensor& out = stack[4]->toTensor();
  ET_KERNEL_CHECK_MSG(ctx, x.dim() == 4 && x.scalar_type() == ScalarType::Float && cos.dim() == 2 &&
                      sin.dim() == 2 && cos.scalar_type() == ScalarType::Float &&
                      sin.scalar_type() == ScalarType::Float && pos.scalar_type() == ScalarType::Long &&
                      pos.numel() >= 1, InvalidArgument, ,
                      "rope: float32 x (B, T, h, D), int64 pos and float32 (S, D / 2) tables expected");
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3), S = cos.size(0);
  ET_KERNEL_CHECK_MSG(ctx, D % 2 == 0 && cos.size(1) * 2 == D && sin.size(0) == S && sin.size(1) == cos.size(1) &&
                      S > 0, InvalidArgument, , "rope: the tables must be (S, D / 2) for x's even D");
  const int64_t start = pos.const_data_ptr<int64_t>()[0];
  ET_KERNEL_CHECK_MSG(ctx, start >= 0, InvalidArgument, , "rope: pos must not be negative");
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(out, x.sizes()) == Error::Ok, InvalidArgument, );
  const float* xs = x.const_data_ptr<float>();
  float* ys = out.mutable_data_ptr<float>();
  const float* cs = cos.const_data_ptr<float>();
  const float* sn = sin.const_data_ptr<float>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t p = std::min(start + t, S - 1);
      const float* c = cs + p * (D / 2);
      const float* s = sn + p * (D / 2);
      for (int64_t h = 0; h < H; ++h) {
        const int64_t at = ((b * T + t) * H + h) * D;
        rope_core::rotate(xs + at, c, s, D, ys + at);
      }
    }
}

const auto registered = executorch::runtime::register_kernel(executorch::runtime::Kernel("seqedge::rope.out", rope_out));

}  // namespace
}  // namespace seqedge
