// llama::update_cache.out and llama::custom_sdpa.out — ExecuTorch's LLM attention ops, for seqedge's
// native runner.
//
// ExecuTorch ships these kernels in libcustom_ops_aot_lib.so, which also links libtorch and the Python
// bindings: fine inside Python (seqedge imports it), not in an app. An Android/iOS build compiles
// ExecuTorch's own `custom_ops` target; this file gives the host runner the same two ops with the same
// schemas and semantics (see executorch/extension/llm/custom_ops/custom_ops.py), so a `.pte` runs the
// same in both. update_cache copies float32 or float16 caches (seqedge keeps them in float16, attended by
// seqedge::cached_sdpa); custom_sdpa is float32 only, with no attention mask (seqedge's lowering never passes
// one). custom_sdpa is the tiled attention of attention_tile.h, the same code as seqedge::cached_sdpa's for a
// prompt.
//
//   update_cache(value (B, T, H, D), cache (B, S, H, D) mutable, start_pos):  cache[:, start_pos:+T] = value
//   custom_sdpa(q (B, T, Hq, D), k_cache, v_cache (B, S, Hkv, D), start_pos, mask=None, p=0, is_causal, scale)
//       query t attends keys [0, start_pos + t] (causal) or [0, start_pos + T); Hq / Hkv query heads share a
//       kv head (grouped-query attention); out (B, T, Hq, D).

#include "et_kernel.h"

#include <cmath>
#include <cstdint>
#include <cstring>

#include "attention_tile.h"

namespace seqedge {
namespace {

// stack = [value, cache, start_pos, out]
void update_cache_out(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  const Tensor& value = stack[0]->toTensor();
  Tensor& cache = stack[1]->toTensor();
  const int64_t start = stack[2]->toInt();
  const ScalarType type = value.scalar_type();
  ET_KERNEL_CHECK_MSG(ctx, value.dim() == 4 && cache.dim() == 4 && cache.scalar_type() == type &&
                      (type == ScalarType::Float || type == ScalarType::Half), InvalidArgument, ,
                      "update_cache: float32 or float16 (B, T, H, D) value and (B, S, H, D) cache of its type expected");
  const int64_t B = value.size(0), T = value.size(1), S = cache.size(1);
  ET_KERNEL_CHECK_MSG(ctx, cache.size(0) == B && cache.size(2) == value.size(2) && cache.size(3) == value.size(3),
                      InvalidArgument, , "update_cache: value and cache shapes disagree");
  const int64_t size = type == ScalarType::Float ? 4 : 2;
  const int64_t row = value.size(2) * value.size(3) * size;  // bytes per position
  ET_KERNEL_CHECK_MSG(ctx, start >= 0 && start + T <= S, InvalidArgument, , "update_cache: start_pos + T > cache length");
  const auto* src = static_cast<const char*>(value.const_data_ptr());
  auto* dst = static_cast<char*>(cache.mutable_data_ptr());
  for (int64_t b = 0; b < B; ++b) std::memcpy(dst + (b * S + start) * row, src + b * T * row, T * row);
}

// stack = [query, key, value, start_pos, attn_mask, dropout_p, is_causal, scale, out]
void custom_sdpa_out(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  const Tensor& q = stack[0]->toTensor();
  const Tensor& k = stack[1]->toTensor();
  const Tensor& v = stack[2]->toTensor();
  const int64_t start = stack[3]->toInt();
  const bool causal = stack[6]->toBool();
  Tensor& out = stack[8]->toTensor();
  ET_KERNEL_CHECK_MSG(ctx, stack[4]->isNone(), InvalidArgument, , "custom_sdpa: attention masks are not supported here");
  ET_KERNEL_CHECK_MSG(ctx, q.dim() == 4 && k.dim() == 4 && v.dim() == 4 && q.scalar_type() == ScalarType::Float &&
                      k.scalar_type() == ScalarType::Float && v.scalar_type() == ScalarType::Float &&
                      v.size(1) == k.size(1) && v.size(2) == k.size(2) && k.size(3) == q.size(3) &&
                      v.size(3) == q.size(3) && k.size(0) == q.size(0) && v.size(0) == q.size(0), InvalidArgument, ,
                      "custom_sdpa: float32 (B, T, H, D) query and (B, S, Hkv, D) caches expected");
  const int64_t B = q.size(0), T = q.size(1), Hq = q.size(2), D = q.size(3);
  const int64_t S = k.size(1), Hkv = k.size(2);
  ET_KERNEL_CHECK_MSG(ctx, Hkv > 0 && Hq % Hkv == 0 && start >= 0 && start + T <= S, InvalidArgument, ,
                      "custom_sdpa: query heads not a multiple of kv heads, or start_pos + T > cache length");
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(out, q.sizes()) == Error::Ok, InvalidArgument, );
  const float scale = stack[7]->isNone() ? 1.0f / std::sqrt(float(D)) : float(stack[7]->toDouble());
  ET_KERNEL_CHECK_MSG(ctx, D > 0 && D <= tile_core::kMaxHeadDim, InvalidArgument, ,
                      "custom_sdpa: head dimension over 512");
  tile_core::attend_all(tile_core::Sdpa{q.const_data_ptr<float>(), k.const_data_ptr<float>(), v.const_data_ptr<float>(),
                                        out.mutable_data_ptr<float>(), T, Hq, D, S, Hkv, start, causal, scale}, B,
                        [](int64_t n, const auto& fn) { executorch::extension::parallel_for(0, n, 1, fn); });
}

const auto registered_update = executorch::runtime::register_kernel(
    executorch::runtime::Kernel("llama::update_cache.out", update_cache_out));
const auto registered_sdpa = executorch::runtime::register_kernel(
    executorch::runtime::Kernel("llama::custom_sdpa.out", custom_sdpa_out));

}  // namespace
}  // namespace seqedge
