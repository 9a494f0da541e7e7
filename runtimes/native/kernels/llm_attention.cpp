// llama::update_cache.out and llama::custom_sdpa.out — ExecuTorch's LLM attention ops, for seqedge's
// native runner.
//
// ExecuTorch ships these kernels in libcustom_ops_aot_lib.so, which also links libtorch and the Python
// bindings: fine inside Python (seqedge imports it), not in an app. An Android/iOS build compiles
// ExecuTorch's own `custom_ops` target; this file gives the host runner the same two ops with the same
// schemas and semantics (see executorch/extension/llm/custom_ops/custom_ops.py), so a `.pte` runs the
// same in both. Only float32, no attention mask (seqedge's lowering never passes one).
//
//   update_cache(value (B, T, H, D), cache (B, S, H, D) mutable, start_pos):  cache[:, start_pos:+T] = value
//   custom_sdpa(q (B, T, Hq, D), k_cache, v_cache (B, S, Hkv, D), start_pos, mask=None, p=0, is_causal, scale)
//       query t attends keys [0, start_pos + t] (causal) or [0, start_pos + T); Hq / Hkv query heads share a
//       kv head (grouped-query attention); out (B, T, Hq, D).

#include "et_kernel.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "vector_math.h"

namespace seqedge {
namespace {

// stack = [value, cache, start_pos, out]
void update_cache_out(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  const Tensor& value = stack[0]->toTensor();
  Tensor& cache = stack[1]->toTensor();
  const int64_t start = stack[2]->toInt();
  ET_KERNEL_CHECK_MSG(ctx, value.dim() == 4 && cache.dim() == 4 && value.scalar_type() == ScalarType::Float &&
                      cache.scalar_type() == ScalarType::Float, InvalidArgument, ,
                      "update_cache: float32 (B, T, H, D) value and (B, S, H, D) cache expected");
  const int64_t B = value.size(0), T = value.size(1), S = cache.size(1);
  const int64_t row = value.size(2) * value.size(3);  // floats per position
  ET_KERNEL_CHECK_MSG(ctx, start >= 0 && start + T <= S, InvalidArgument, , "update_cache: start_pos + T > cache length");
  const float* src = value.const_data_ptr<float>();
  float* dst = cache.mutable_data_ptr<float>();
  for (int64_t b = 0; b < B; ++b)
    std::memcpy(dst + (b * S + start) * row, src + b * T * row, sizeof(float) * T * row);
}

struct Sdpa {
  const float *q, *k, *v;
  float* out;
  int64_t T, Hq, D, S, Hkv, start;
  bool causal;
  float scale;
};

constexpr int64_t kTileQueries = 8;  // query positions per work item
constexpr int64_t kKeys = 16;        // keys scored at once (a transposed block: the vector runs over keys)
constexpr int64_t kValues = 64;      // value rows accumulated per pass (kValues x D floats stay in L1)
constexpr int64_t kMaxHeadDim = 512;

// One work item: batch row b, kv head kv, query positions [t0, t0 + nt). Its rows are those positions x the
// query heads sharing the kv head (row r: position t0 + r / group, head kv * group + r % group), so each key
// and value block is read once for all of them. Scores: a block of kKeys keys transposed to (D, kKeys), each
// row's scores for it accumulated across the keys (no horizontal sums); outputs: each row's D accumulators
// held over a block of kValues value rows. kD fixes the head dimension at compile time (64, 128; 0: any).
// (A head-by-head loop, one dot product per key, gave llama-135m ~290 tok/s at T = 1024 in the runner, where
// the wheel's kernel, on libtorch's MKL, gave ~570 inside Python.)
template <int kD>
SEQEDGE_INLINE void attend_tile(const Sdpa& s, int64_t b, int64_t kv, int64_t t0, int64_t nt, std::vector<float>& buf) {
  const int64_t group = s.Hq / s.Hkv, rows = nt * group, D = kD ? kD : s.D;
  const int64_t keys = s.causal ? s.start + t0 + nt : s.start + s.T;  // keys the tile's last position sees
  buf.resize(rows * keys + D * kKeys);
  float* scores = buf.data();              // (rows, keys), then each row's softmax weights
  float* kt = scores + rows * keys;        // (D, kKeys): a block of keys, transposed
  const auto seen = [&](int64_t r) { return s.causal ? s.start + t0 + r / group + 1 : keys; };
  const auto offset = [&](int64_t r) { return ((b * s.T + t0 + r / group) * s.Hq + kv * group + r % group) * D; };
  for (int64_t j0 = 0; j0 < keys; j0 += kKeys) {
    const int64_t nk = std::min(kKeys, keys - j0);
    for (int64_t jj = 0; jj < kKeys; ++jj) {
      const float* kj = s.k + ((b * s.S + j0 + std::min(jj, nk - 1)) * s.Hkv + kv) * D;  // past nk: a copy, unused
      for (int64_t d = 0; d < D; ++d) kt[d * kKeys + jj] = kj[d];
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t n = std::min(nk, seen(r) - j0);
      if (n <= 0) continue;
      const float* q = s.q + offset(r);
      float acc[kKeys] = {};
      for (int64_t d = 0; d < D; ++d) {
        const float qd = q[d];
        for (int64_t jj = 0; jj < kKeys; ++jj) acc[jj] += qd * kt[d * kKeys + jj];
      }
      float* w = scores + r * keys + j0;
      for (int64_t jj = 0; jj < n; ++jj) w[jj] = s.scale * acc[jj];
    }
  }
  for (int64_t r = 0; r < rows; ++r) {  // softmax of each row over the keys it sees
    float* w = scores + r * keys;
    const int64_t n = seen(r);
    float m = -INFINITY, total = 0;
    for (int64_t j = 0; j < n; ++j) m = std::max(m, w[j]);
    for (int64_t j = 0; j < n; ++j) total += (w[j] = exp_nonpositive(w[j] - m));
    const float inv = 1.0f / total;
    for (int64_t j = 0; j < n; ++j) w[j] *= inv;
    std::fill(s.out + offset(r), s.out + offset(r) + D, 0.f);
  }
  for (int64_t j0 = 0; j0 < keys; j0 += kValues) {
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t end = std::min(j0 + kValues, seen(r));
      if (end <= j0) continue;
      float* o = s.out + offset(r);
      float acc[kD ? kD : kMaxHeadDim];
      for (int64_t d = 0; d < D; ++d) acc[d] = o[d];
      const float* w = scores + r * keys;
      for (int64_t j = j0; j < end; ++j) {
        const float c = w[j];
        const float* vj = s.v + ((b * s.S + j) * s.Hkv + kv) * D;
        for (int64_t d = 0; d < D; ++d) acc[d] += c * vj[d];
      }
      for (int64_t d = 0; d < D; ++d) o[d] = acc[d];
    }
  }
}

#define SEQEDGE_TILE_PARAMS (const Sdpa& s, int64_t b, int64_t kv, int64_t t0, int64_t nt, std::vector<float>& buf)
SEQEDGE_ISA_VARIANTS(tile_d64, attend_tile<64>, SEQEDGE_TILE_PARAMS, (s, b, kv, t0, nt, buf))
SEQEDGE_ISA_VARIANTS(tile_d128, attend_tile<128>, SEQEDGE_TILE_PARAMS, (s, b, kv, t0, nt, buf))
SEQEDGE_ISA_VARIANTS(tile_any, attend_tile<0>, SEQEDGE_TILE_PARAMS, (s, b, kv, t0, nt, buf))

// stack = [query, key, value, start_pos, attn_mask, dropout_p, is_causal, scale, out]
void custom_sdpa_out(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  const Tensor& q = stack[0]->toTensor();
  const Tensor& k = stack[1]->toTensor();
  const Tensor& v = stack[2]->toTensor();
  const int64_t start = stack[3]->toInt();
  const bool causal = stack[6]->toBool();
  Tensor& out = stack[8]->toTensor();
  ET_KERNEL_CHECK_MSG(ctx, stack[4]->isNone(), InvalidArgument, , "custom_sdpa: attention masks are not supported here");
  ET_KERNEL_CHECK_MSG(ctx, q.dim() == 4 && k.dim() == 4 && q.scalar_type() == ScalarType::Float, InvalidArgument, ,
                      "custom_sdpa: float32 (B, T, H, D) query and (B, S, Hkv, D) caches expected");
  const int64_t B = q.size(0), T = q.size(1), Hq = q.size(2), D = q.size(3);
  const int64_t S = k.size(1), Hkv = k.size(2);
  ET_KERNEL_CHECK_MSG(ctx, Hkv > 0 && Hq % Hkv == 0 && start >= 0 && start + T <= S, InvalidArgument, ,
                      "custom_sdpa: query heads not a multiple of kv heads, or start_pos + T > cache length");
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(out, q.sizes()) == Error::Ok, InvalidArgument, );
  const float scale = stack[7]->isNone() ? 1.0f / std::sqrt(float(D)) : float(stack[7]->toDouble());
  const Sdpa sdpa{q.const_data_ptr<float>(), k.const_data_ptr<float>(), v.const_data_ptr<float>(),
                  out.mutable_data_ptr<float>(), T, Hq, D, S, Hkv, start, causal, scale};
  ET_KERNEL_CHECK_MSG(ctx, D > 0 && D <= kMaxHeadDim, InvalidArgument, , "custom_sdpa: head dimension over 512");
  const auto tile = D == 64 ? select_isa(tile_d64_v4, tile_d64_v3, tile_d64_baseline)
      : D == 128 ? select_isa(tile_d128_v4, tile_d128_v3, tile_d128_baseline)
      : select_isa(tile_any_v4, tile_any_v3, tile_any_baseline);
  const int64_t tiles = (T + kTileQueries - 1) / kTileQueries;
  // one work item per (batch, kv head, tile of query positions)
  executorch::extension::parallel_for(0, B * Hkv * tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> buf;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t i = item % tiles, kv = (item / tiles) % Hkv, b = item / (tiles * Hkv);
      const int64_t t0 = i * kTileQueries;
      tile(sdpa, b, kv, t0, std::min(kTileQueries, T - t0), buf);
    }
  });
}

const auto registered_update = executorch::runtime::register_kernel(
    executorch::runtime::Kernel("llama::update_cache.out", update_cache_out));
const auto registered_sdpa = executorch::runtime::register_kernel(
    executorch::runtime::Kernel("llama::custom_sdpa.out", custom_sdpa_out));

}  // namespace
}  // namespace seqedge
