// seqedge::cached_sdpa.out — causal grouped-query attention over a KV cache the program holds: the decode
// method's attention (exporters/executorch/lowerings.py). Reference: seqedge/ops/attention/cached.py.
//
//   q (B, T, Hq, D); k_cache, v_cache (B, S, Hkv, D), positions [0, start_pos + T) written; out (B, T, Hq, D)
//   query t (absolute position start_pos + t) attends keys [0, start_pos + t], scaled by 1/sqrt(D);
//   query head h reads kv head h / (Hq / Hkv) (grouped-query attention).
//
// Decode reads the whole valid cache once per token, so the work is arranged around streaming it once: a work
// item is one query position and a range of key positions, and it reads each cache row whole (all kv heads,
// in order) and scores every query head against it; the ranges split the keys so both threads stream at
// decode (flash-decoding: each range's partial softmax is merged afterwards). Head dims 64 and 128 are
// compiled with the dimension fixed. (ExecuTorch's llama::custom_sdpa, tiled for prefill, took 1.2-1.9 ms per
// llama-135m layer at T = 1 with 256-1024 cached positions on 2 threads; one item per kv head, reading a
// third of each row per pass, ran compute-bound at ~3 GB/s of cache.)
//
// A call with a position for every thread (a prompt: the prefill method's lowering too) goes through the tiles
// of attention_tile.h instead, the keys read once per tile of positions.
//
// Registered boxed: stack = [q, k_cache, v_cache, start_pos, out].

#include "et_kernel.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "attention_tile.h"
#include "vector_math.h"

namespace seqedge {
namespace {

// Every query head q (Hkv * G, D) of one position against keys [j0, j1) (row j at k + j * Hkv * D):
// unnormalised o (Hkv * G, D) = sum_j exp(s_j - m) v_j, m the largest score and l the sum of exp(s_j - m)
// per head; w is scratch of (Hkv * G) * (j1 - j0) scores.
template <int64_t FIXED_D>
SEQEDGE_INLINE void attend_rows(const float* q, const float* k, const float* v, int64_t Hkv, int64_t G,
                                int64_t any_d, int64_t j0, int64_t j1, float scale, float* w, float* o, float* m,
                                float* l) {
  const int64_t D = FIXED_D > 0 ? FIXED_D : any_d;
  const int64_t n = j1 - j0, H = Hkv * G, row = Hkv * D;
  for (int64_t j = 0; j < n; ++j) {
    const float* kj = k + (j0 + j) * row;
    for (int64_t hk = 0; hk < Hkv; ++hk)
      for (int64_t g = 0; g < G; ++g) w[(hk * G + g) * n + j] = scale * dot(q + (hk * G + g) * D, kj + hk * D, D);
  }
  for (int64_t h = 0; h < H; ++h) {
    const tile_core::ExpSum e = tile_core::exp_row(w + h * n, n);  // 8 lanes at a time (attention_tile.h)
    m[h] = e.max;
    l[h] = e.total;
  }
  std::fill(o, o + H * D, 0.f);
  for (int64_t j = 0; j < n; ++j) {
    const float* vj = v + (j0 + j) * row;
    for (int64_t hk = 0; hk < Hkv; ++hk) {
      const float* __restrict__ vh = vj + hk * D;
      for (int64_t g = 0; g < G; ++g) {
        const float c = w[(hk * G + g) * n + j];
        float* __restrict__ oh = o + (hk * G + g) * D;
        for (int64_t d = 0; d < D; ++d) oh[d] += c * vh[d];
      }
    }
  }
}

#define SEQEDGE_ATTEND_PARAMS                                                                                \
  (const float* q, const float* k, const float* v, int64_t Hkv, int64_t G, int64_t D, int64_t j0, int64_t j1, \
   float scale, float* w, float* o, float* m, float* l)
#define SEQEDGE_ATTEND_ARGS (q, k, v, Hkv, G, D, j0, j1, scale, w, o, m, l)
SEQEDGE_ISA_VARIANTS(attend_d64, attend_rows<64>, SEQEDGE_ATTEND_PARAMS, SEQEDGE_ATTEND_ARGS)
SEQEDGE_ISA_VARIANTS(attend_d128, attend_rows<128>, SEQEDGE_ATTEND_PARAMS, SEQEDGE_ATTEND_ARGS)
SEQEDGE_ISA_VARIANTS(attend_any, attend_rows<0>, SEQEDGE_ATTEND_PARAMS, SEQEDGE_ATTEND_ARGS)

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
  const int64_t row = Hkv * D;  // floats between consecutive cache positions
  const float* pq = q.const_data_ptr<float>();
  const float* pk = k.const_data_ptr<float>();
  const float* pv = v.const_data_ptr<float>();
  float* po = out.mutable_data_ptr<float>();

  // A prompt (positions for every thread): in tiles of positions x the query heads sharing a kv head, each key
  // and value block read once for the tile (attention_tile.h, also the runner's llama::custom_sdpa).
  const int64_t positions = B * T;
  const int64_t threads = std::max<int64_t>(1, executorch::extension::get_thread_count());
  if (positions >= 2 * threads && D <= tile_core::kMaxHeadDim) {
    tile_core::attend_all(tile_core::Sdpa{pq, pk, pv, po, T, Hq, D, S, Hkv, start, true, scale}, B);
    return;
  }
  // Decode: one (batch, query position) with its keys split into `chunks` ranges of >= 64 keys when there are
  // fewer positions than twice the threads, merged afterwards.
  const int64_t chunks = positions >= 2 * threads ? 1
      : std::max<int64_t>(1, std::min<int64_t>((2 * threads + positions - 1) / positions, (start + T) / 64));
  const int64_t part = Hq * D + 2 * Hq;  // o (Hq, D), m (Hq), l (Hq) per range
  std::vector<float> parts(positions * chunks * part);
  auto attend = D == 64 ? select_isa(attend_d64_v4, attend_d64_v3, attend_d64_baseline)
      : D == 128 ? select_isa(attend_d128_v4, attend_d128_v3, attend_d128_baseline)
      : select_isa(attend_any_v4, attend_any_v3, attend_any_baseline);

  auto run = [&](int64_t begin, int64_t end) {
    std::vector<float> w;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t c = item % chunks, pos = item / chunks, t = pos % T, b = pos / T;
      const int64_t n = start + t + 1;  // keys this query position sees
      const int64_t j0 = n * c / chunks, j1 = n * (c + 1) / chunks;
      float* o = parts.data() + item * part;
      float *m = o + Hq * D, *l = m + Hq;
      if (j1 <= j0) {
        std::fill(o, o + part, 0.f);
        std::fill(m, m + Hq, -INFINITY);
        continue;
      }
      w.resize(Hq * (j1 - j0));
      attend(pq + (b * T + t) * Hq * D, pk + b * S * row, pv + b * S * row, Hkv, G, D, j0, j1, scale, w.data(), o, m, l);
    }
  };
  if (positions * chunks == 1) {
    run(0, 1);  // one item: no threadpool round trip
  } else {
    executorch::extension::parallel_for(0, positions * chunks, 1, run);
  }

  for (int64_t pos = 0; pos < positions; ++pos) {
    float* out_pos = po + pos * Hq * D;  // (Hq, D)
    for (int64_t h = 0; h < Hq; ++h) {
      float mx = -INFINITY, total = 0;
      for (int64_t c = 0; c < chunks; ++c) mx = std::max(mx, parts[(pos * chunks + c) * part + Hq * D + h]);
      float* oh = out_pos + h * D;
      std::fill(oh, oh + D, 0.f);
      for (int64_t c = 0; c < chunks; ++c) {
        const float* o = parts.data() + (pos * chunks + c) * part;
        if (o[Hq * D + h] == -INFINITY) continue;  // an empty range
        const float f = std::exp(o[Hq * D + h] - mx);
        total += f * o[Hq * D + Hq + h];
        for (int64_t d = 0; d < D; ++d) oh[d] += f * o[h * D + d];
      }
      for (int64_t d = 0; d < D; ++d) oh[d] /= total;
    }
  }
}

const auto registered = executorch::runtime::register_kernel(
    executorch::runtime::Kernel("seqedge::cached_sdpa.out", cached_sdpa_out));

}  // namespace
}  // namespace seqedge
