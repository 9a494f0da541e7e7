// seqedge::cached_sdpa.out — causal grouped-query attention over a KV cache the program holds: the decode
// method's attention (exporters/executorch/lowerings.py). Reference: seqedge/ops/attention/cached.py.
//
//   q (B, T, Hq, D); k_cache, v_cache (B, S, Hkv, D), float32 or float16, positions [0, start_pos + T) written;
//   out (B, T, Hq, D), float32
//   query t (absolute position start_pos + t) attends keys [0, start_pos + t], scaled by 1/sqrt(D);
//   query head h reads kv head h / (Hq / Hkv) (grouped-query attention).
//
// A call with a position for every thread (a prompt: the prefill method's lowering too) goes through the tiles
// of attention_tile.h, the keys read once per tile of positions; fewer positions (a decode step) through
// attention_decode.h, which streams each cached row once for the query heads sharing it, the keys split over
// the threads.
//
// Registered boxed: stack = [q, k_cache, v_cache, start_pos, out].

#include "et_kernel.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "attention_decode.h"
#include "attention_tile.h"

namespace seqedge {
namespace {

void cached_sdpa_out(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  const Tensor& q = stack[0]->toTensor();
  const Tensor& k = stack[1]->toTensor();
  const Tensor& v = stack[2]->toTensor();
  const int64_t start = stack[3]->toInt();
  Tensor& out = stack[4]->toTensor();
  const bool half = k.scalar_type() == ScalarType::Half;
  ET_KERNEL_CHECK_MSG(ctx, q.dim() == 4 && k.dim() == 4 && v.dim() == 4 && q.scalar_type() == ScalarType::Float &&
                      (k.scalar_type() == ScalarType::Float || half) && v.scalar_type() == k.scalar_type(),
                      InvalidArgument, , "cached_sdpa: a float32 (B, T, H, D) query and float32 or float16 "
                      "(B, S, Hkv, D) caches expected");
  const int64_t B = q.size(0), T = q.size(1), Hq = q.size(2), D = q.size(3);
  const int64_t S = k.size(1), Hkv = k.size(2);
  ET_KERNEL_CHECK_MSG(ctx, Hkv > 0 && Hq % Hkv == 0 && k.size(3) == D && v.size(1) == S && v.size(2) == Hkv &&
                      v.size(3) == D && k.size(0) == B && v.size(0) == B, InvalidArgument, ,
                      "cached_sdpa: query and cache shapes disagree");
  ET_KERNEL_CHECK_MSG(ctx, start >= 0 && start + T <= S, InvalidArgument, , "cached_sdpa: start_pos + T > cache length");
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(out, q.sizes()) == Error::Ok, InvalidArgument, );
  const float scale = 1.0f / std::sqrt(float(D));
  tile_core::Sdpa sdpa{q.const_data_ptr<float>(), nullptr, nullptr, out.mutable_data_ptr<float>(), T, Hq, D, S, Hkv,
                       start, true, scale};
  if (half) {
    sdpa.k16 = static_cast<const uint16_t*>(k.const_data_ptr());
    sdpa.v16 = static_cast<const uint16_t*>(v.const_data_ptr());
  } else {
    sdpa.k = k.const_data_ptr<float>();
    sdpa.v = v.const_data_ptr<float>();
  }
  const auto on_pool = [](int64_t n, const auto& fn) { executorch::extension::parallel_for(0, n, 1, fn); };

  // A prompt (positions for every thread): in tiles of positions x the query heads sharing a kv head, each key
  // and value block read once for the tile (attention_tile.h, also the runner's llama::custom_sdpa). float16
  // caches: the written positions as floats first (each key is read by many tiles).
  const int64_t positions = B * T;
  const int64_t threads = std::max<int64_t>(1, executorch::extension::get_thread_count());
  if (positions >= 2 * threads && D <= tile_core::kMaxHeadDim) {
    if (half) tile_core::widen_written_caches(sdpa, B);
    tile_core::attend_all(sdpa, B, on_pool);
    return;
  }
  // a step: float16 caches are widened in registers as each work item reads its rows (attention_decode.h), its
  // keys split into one range a thread (each range starts its stream of rows cold; the pool hands a range nobody
  // has started to the thread that is free): llama-135m ExecuTorch int4 decode at 1,024 positions, 2 threads,
  // 439-442 tok/s in 16 ranges, 464-476 in 2
  decode_core::attend_all(sdpa, B, threads, on_pool);
}

const auto registered = executorch::runtime::register_kernel(
    executorch::runtime::Kernel("seqedge::cached_sdpa.out", cached_sdpa_out));

}  // namespace
}  // namespace seqedge
