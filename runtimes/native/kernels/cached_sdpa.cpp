// seqedge::cached_sdpa.out — causal grouped-query attention over a KV cache the program holds: the decode
// method's attention (exporters/executorch/lowerings.py). Reference: seqedge/ops/attention/cached.py.
//
//   q (B, T, Hq, D); k_cache, v_cache (B, S, Hkv, D), positions [0, start_pos + T) written; out (B, T, Hq, D)
//   query t (absolute position start_pos + t) attends keys [0, start_pos + t], scaled by 1/sqrt(D);
//   query head h reads kv head h / (Hq / Hkv) (grouped-query attention).
//
// Decode reads the whole valid cache once per token, so the work is arranged around reading it once:
// one work item per (batch, query position, kv head) scores all Hq / Hkv query heads that share that kv
// head against each key row, then accumulates each value row into all of them; with fewer items than
// threads the keys are split in chunks whose partial softmaxes are merged (flash-decoding). (ExecuTorch's
// llama::custom_sdpa, tiled for prefill, took 1.2-1.9 ms per llama-135m layer at T = 1 with 256-1024 cached
// positions on 2 threads; its flash-attention blocking does not pay at one query row.)
//
// Registered boxed: stack = [q, k_cache, v_cache, start_pos, out].

#include <executorch/runtime/kernel/kernel_includes.h>
#include <executorch/runtime/kernel/operator_registry.h>
#include <executorch/runtime/kernel/thread_parallel_interface.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "vector_math.h"

namespace seqedge {
namespace {

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::runtime::Error;
using executorch::runtime::EValue;
using executorch::runtime::KernelRuntimeContext;
using executorch::runtime::Span;

// The G query heads qg (G, D) of one kv head against keys [j0, j1) (row j at k + j * row): unnormalised
// output o (G, D) = sum_j exp(s_j - m) v_j, with m (G) the largest score and l (G) the sum of exp(s_j - m).
SEQEDGE_VECTOR_CLONES
void attend(const float* qg, const float* k, const float* v, int64_t row, int64_t j0, int64_t j1, int64_t G,
            int64_t D, float scale, float* w, float* o, float* m, float* l) {
  const int64_t n = j1 - j0;
  for (int64_t j = 0; j < n; ++j) {
    const float* kj = k + (j0 + j) * row;
    for (int64_t g = 0; g < G; ++g) w[g * n + j] = scale * dot(qg + g * D, kj, D);
  }
  for (int64_t g = 0; g < G; ++g) {
    float* wg = w + g * n;
    m[g] = *std::max_element(wg, wg + n);
    float total = 0;
    const float mg = m[g];
    for (int64_t j = 0; j < n; ++j) wg[j] = exp_nonpositive(wg[j] - mg);
    for (int64_t j = 0; j < n; ++j) total += wg[j];
    l[g] = total;
  }
  std::fill(o, o + G * D, 0.f);
  for (int64_t j = 0; j < n; ++j) {
    const float* vj = v + (j0 + j) * row;
    for (int64_t g = 0; g < G; ++g) {
      const float c = w[g * n + j];
      float* og = o + g * D;
      for (int64_t d = 0; d < D; ++d) og[d] += c * vj[d];
    }
  }
}

void cached_sdpa_out(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  const Tensor& q = stack[0]->toTensor();
  const Tensor& k = stack[1]->toTensor();
  const Tensor& v = stack[2]->toTensor();
  const int64_t start = stack[3]->toInt();
  Tensor& out = stack[4]->toTensor();
  ET_KERNEL_CHECK_MSG(ctx, q.dim() == 4 && k.dim() == 4 && v.dim() == 4 && q.scalar_type() == ScalarType::Float &&
                      k.scalar_type() == ScalarType::Float && v.scalar_type() == ScalarType::Float, InvalidArgument, ,
                      "cached_sdpa: float32 (B, T, H, D) query and (B, S, Hkv, D) caches expected");
  const int64_t B = q.size(0), T = q.size(1), Hq = q.size(2), D = q.size(3);
  const int64_t S = k.size(1), Hkv = k.size(2);
  ET_KERNEL_CHECK_MSG(ctx, Hkv > 0 && Hq % Hkv == 0 && k.size(3) == D && v.size(1) == S && v.size(2) == Hkv &&
                      v.size(3) == D && k.size(0) == B && v.size(0) == B, InvalidArgument, ,
                      "cached_sdpa: query and cache shapes disagree");
  ET_KERNEL_CHECK_MSG(ctx, start >= 0 && start + T <= S, InvalidArgument, , "cached_sdpa: start_pos + T > cache length");
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(out, q.sizes()) == Error::Ok, InvalidArgument, );
  const float scale = 1.0f / std::sqrt(float(D));
  const int64_t G = Hq / Hkv;  // query heads per kv head
  const int64_t row = Hkv * D;  // floats between consecutive positions of one kv head
  const float* pq = q.const_data_ptr<float>();
  const float* pk = k.const_data_ptr<float>();
  const float* pv = v.const_data_ptr<float>();
  float* po = out.mutable_data_ptr<float>();

  // Work: one (batch, query position, kv head) group, its keys split into `chunks` when there are fewer groups
  // than twice the threads (decode: 3 kv heads on 2 threads), merged afterwards (flash-decoding).
  const int64_t groups = B * T * Hkv;
  const int64_t threads = std::max<int64_t>(1, executorch::extension::get_thread_count());
  const int64_t chunks = groups >= 2 * threads ? 1
      : std::max<int64_t>(1, std::min<int64_t>((2 * threads + groups - 1) / groups, (start + T) / 64));
  const int64_t part = G * D + 2 * G;  // o (G, D), m (G), l (G) per chunk
  std::vector<float> parts(groups * chunks * part);

  executorch::extension::parallel_for(0, groups * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> w;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t c = item % chunks, grp = item / chunks;
      const int64_t kv = grp % Hkv, t = (grp / Hkv) % T, b = grp / (Hkv * T);
      const int64_t n = start + t + 1;  // keys this query position sees
      const int64_t j0 = n * c / chunks, j1 = n * (c + 1) / chunks;
      float* o = parts.data() + item * part;
      float *m = o + G * D, *l = m + G;
      if (j1 <= j0) {
        std::fill(o, o + part, 0.f);
        std::fill(m, m + G, -INFINITY);
        continue;
      }
      w.resize(G * (j1 - j0));
      attend(pq + ((b * T + t) * Hq + kv * G) * D, pk + b * S * row + kv * D, pv + b * S * row + kv * D, row, j0,
             j1, G, D, scale, w.data(), o, m, l);
    }
  });

  for (int64_t grp = 0; grp < groups; ++grp) {
    const int64_t kv = grp % Hkv, t = (grp / Hkv) % T, b = grp / (Hkv * T);
    float* og = po + ((b * T + t) * Hq + kv * G) * D;  // (G, D)
    for (int64_t g = 0; g < G; ++g) {
      float mx = -INFINITY, total = 0;
      for (int64_t c = 0; c < chunks; ++c) mx = std::max(mx, parts[(grp * chunks + c) * part + G * D + g]);
      std::fill(og + g * D, og + (g + 1) * D, 0.f);
      for (int64_t c = 0; c < chunks; ++c) {
        const float* o = parts.data() + (grp * chunks + c) * part;
        if (o[G * D + g] == -INFINITY) continue;  // an empty chunk
        const float f = std::exp(o[G * D + g] - mx);
        total += f * o[G * D + G + g];
        for (int64_t d = 0; d < D; ++d) og[g * D + d] += f * o[g * D + d];
      }
      for (int64_t d = 0; d < D; ++d) og[g * D + d] /= total;
    }
  }
}

const auto registered = executorch::runtime::register_kernel(
    executorch::runtime::Kernel("seqedge::cached_sdpa.out", cached_sdpa_out));

}  // namespace
}  // namespace seqedge
