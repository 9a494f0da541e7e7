// Causal grouped-query attention over a KV cache for a few query positions (a decode step): shared by
// seqedge::cached_sdpa.out (cached_sdpa.cpp) and onnxruntime's seqedge.Attention (onnxruntime/ort_kernels.cpp).
// Shapes as attention_tile.h's Sdpa: q (B, T, Hq, D), caches in either layout, out (B, T, Hq, D).
//
// Decode reads the whole valid cache once per token, so the work is arranged around streaming it once: a work
// item is one query position, a group of kv heads and a range of key positions. It reads each cached row of the
// group whole and scores every query head sharing it; the ranges split the keys so every thread streams
// (flash-decoding: each range's partial softmax is merged afterwards). The group is every kv head where a
// position's heads sit side by side (ExecuTorch's layout: one row of Hkv x D), one kv head where a head's
// positions do (seqedge::attention's: one contiguous run of D per position). Head dims 64 and 128 are compiled
// with the dimension fixed. Scores are taken four keys at a time (four independent sums per head: one dot
// product's adds are a dependency chain, which bounded the step), and a fixed head dim keeps each head's output
// in registers across the keys, two heads per value row read (llama-135m's seqedge.Attention at 256 / 1,024
// positions, 30 layers, 2 threads: 20 -> 11 and 75 -> 61 us a layer). Rows a few steps ahead are prefetched:
// ExecuTorch's position-major rows are several cache lines each, which the hardware prefetcher did not keep up
// with once the cache outgrew L2 (seqedge::cached_sdpa, the same shapes: 124 -> 77-91 us a layer at 1,024). (ExecuTorch's llama::custom_sdpa, tiled for prefill, took 1.2-1.9 ms per llama-135m
// layer at T = 1 with 256-1024 cached positions on 2 threads; one item per kv head, reading a third of each
// position-major row per pass, ran compute-bound at ~3 GB/s of cache.)
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "attention_tile.h"
#include "vector_math.h"

namespace seqedge {
namespace decode_core {
namespace {  // internal linkage: each kernel library carries its own copy

// Every query head q (Hkv * G, D) of one position against keys [j0, j1) (row j at k + j * Hkv * D):
// unnormalised o (Hkv * G, D) = sum_j exp(s_j - m) v_j, m the largest score and l the sum of exp(s_j - m)
// per head; w is scratch of (Hkv * G) * (j1 - j0) scores.
template <int64_t FIXED_D>
SEQEDGE_INLINE void attend_rows(const float* q, const float* k, const float* v, int64_t Hkv, int64_t G,
                                int64_t any_d, int64_t j0, int64_t j1, float scale, float* w, float* o, float* m,
                                float* l) {
  const int64_t D = FIXED_D > 0 ? FIXED_D : any_d;
  const int64_t n = j1 - j0, H = Hkv * G, row = Hkv * D;
  int64_t j = 0;
  if (D % 8 == 0) {  // four keys at a time: four independent sums per query head (one dot's adds are a chain)
    for (; j + 4 <= n; j += 4) {
      const float* kj = k + (j0 + j) * row;
      if (j + 12 <= n)  // the rows four steps ahead, into L2 (position-major rows are several cache lines each)
        for (int64_t off = 0; off < 4 * row; off += 16) __builtin_prefetch(kj + 8 * row + off, 0, 2);
      for (int64_t hk = 0; hk < Hkv; ++hk)
        for (int64_t g = 0; g < G; ++g) {
          const float* qh = q + (hk * G + g) * D;
          const float* kh = kj + hk * D;
          Floats8 a0 = {}, a1 = {}, a2 = {}, a3 = {};
          for (int64_t d = 0; d < D; d += 8) {
            const Floats8 qv = load8(qh + d);
            a0 += qv * load8(kh + d);
            a1 += qv * load8(kh + row + d);
            a2 += qv * load8(kh + 2 * row + d);
            a3 += qv * load8(kh + 3 * row + d);
          }
          float* wh = w + (hk * G + g) * n + j;
          wh[0] = scale * sum8(a0);
          wh[1] = scale * sum8(a1);
          wh[2] = scale * sum8(a2);
          wh[3] = scale * sum8(a3);
        }
    }
  }
  for (; j < n; ++j) {
    const float* kj = k + (j0 + j) * row;
    for (int64_t hk = 0; hk < Hkv; ++hk)
      for (int64_t g = 0; g < G; ++g) w[(hk * G + g) * n + j] = scale * dot(q + (hk * G + g) * D, kj + hk * D, D);
  }
  for (int64_t h = 0; h < H; ++h) {
    const tile_core::ExpSum e = tile_core::exp_row(w + h * n, n);  // 8 lanes at a time (attention_tile.h)
    m[h] = e.max;
    l[h] = e.total;
  }
  if constexpr (FIXED_D > 0 && FIXED_D % 8 == 0) {  // each head's output in registers across the keys
    constexpr int64_t kVectors = FIXED_D / 8;
    constexpr int64_t kPair = kVectors <= 8 ? 2 : 1;  // heads sharing each value row load (registers permitting)
    for (int64_t hk = 0; hk < Hkv; ++hk)
      for (int64_t g = 0; g < G; g += kPair) {
        const int64_t heads = std::min<int64_t>(kPair, G - g);
        const float* wh = w + (hk * G + g) * n;
        const float* vh = v + j0 * row + hk * D;
        Floats8 acc[kPair][kVectors] = {};
        if (heads == 2) {
          for (int64_t j = 0; j < n; ++j, vh += row) {
            if (j + 8 < n)
              for (int64_t off = 0; off < D; off += 16) __builtin_prefetch(vh + 8 * row + off, 0, 2);
            const float c0 = wh[j], c1 = wh[n + j];
            for (int64_t i = 0; i < kVectors; ++i) {
              const Floats8 x = load8(vh + 8 * i);
              acc[0][i] += c0 * x;
              acc[kPair - 1][i] += c1 * x;
            }
          }
        } else {
          for (int64_t j = 0; j < n; ++j, vh += row) {
            const float c = wh[j];
            for (int64_t i = 0; i < kVectors; ++i) acc[0][i] += c * load8(vh + 8 * i);
          }
        }
        for (int64_t h = 0; h < heads; ++h)
          for (int64_t i = 0; i < kVectors; ++i) store8(o + (hk * G + g + h) * D + 8 * i, acc[h][i]);
      }
    return;
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
#undef SEQEDGE_ATTEND_PARAMS
#undef SEQEDGE_ATTEND_ARGS

// Attend every query of `s` (B batch rows), the keys of each split into ranges of >= 64 so that there are about
// `split` work items per query position (the caller's thread count, or more for balance), over `parallel`
// (attention_tile.h's contract).
template <class Parallel>
inline void attend_all(const tile_core::Sdpa& s, int64_t B, int64_t split, Parallel&& parallel) {
  const int64_t T = s.T, Hq = s.Hq, D = s.D, Hkv = s.Hkv, start = s.start;
  const int64_t G = Hq / Hkv;  // query heads per kv head
  const bool side_by_side = s.layout == tile_core::CacheLayout::kPositionMajor;
  const int64_t groups = side_by_side ? 1 : Hkv, group_kv = side_by_side ? Hkv : 1;  // kv heads per item
  const int64_t group_q = group_kv * G;  // query heads per item
  const int64_t positions = B * T;
  const int64_t per_position = std::max<int64_t>(1, (split + positions - 1) / positions);
  const int64_t by_split = std::max<int64_t>(1, std::min<int64_t>((per_position + groups - 1) / groups, (start + T) / 64));
  // float16 caches: ranges of at most 64 keys, whose converted rows stay in L1
  const int64_t chunks = s.k16 != nullptr ? std::max<int64_t>(by_split, (start + T + 63) / 64) : by_split;
  const int64_t part = group_q * D + 2 * group_q;  // o (group_q, D), m (group_q), l (group_q) per item
  const int64_t items = positions * groups * chunks;
  std::vector<float> parts(items * part);
  auto attend = D == 64 ? select_isa(attend_d64_v4, attend_d64_v3, attend_d64_baseline)
      : D == 128 ? select_isa(attend_d128_v4, attend_d128_v3, attend_d128_baseline)
      : select_isa(attend_any_v4, attend_any_v3, attend_any_baseline);

  auto run = [&](int64_t begin, int64_t end) {
    std::vector<float> w, kf, vf;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t c = item % chunks, g = (item / chunks) % groups, pos = item / (chunks * groups);
      const int64_t t = pos % T, b = pos / T;
      const int64_t n = start + t + 1;  // keys this query position sees
      const int64_t j0 = n * c / chunks, j1 = n * (c + 1) / chunks;
      float* o = parts.data() + item * part;
      float *m = o + group_q * D, *l = m + group_q;
      if (j1 <= j0) {
        std::fill(o, o + part, 0.f);
        std::fill(m, m + group_q, -INFINITY);
        continue;
      }
      w.resize(group_q * (j1 - j0));
      const float* qh = s.q + ((b * T + t) * Hq + g * group_q) * D;
      if (s.k16 != nullptr) {  // the item's rows [j0, j1) of its kv heads, one contiguous run in either layout
        const int64_t count = (j1 - j0) * group_kv * D;
        kf.resize(count);
        vf.resize(count);
        halves_to_floats(s.k16 + s.at(b, j0, g), kf.data(), count);
        halves_to_floats(s.v16 + s.at(b, j0, g), vf.data(), count);
        attend(qh, kf.data(), vf.data(), group_kv, G, D, 0, j1 - j0, s.scale, w.data(), o, m, l);
      } else {
        attend(qh, s.k + s.at(b, 0, g), s.v + s.at(b, 0, g), group_kv, G, D, j0, j1, s.scale, w.data(), o, m, l);
      }
    }
  };
  if (items == 1) {
    run(0, 1);  // one item: no threadpool round trip
  } else {
    parallel(items, run);
  }

  for (int64_t pos = 0; pos < positions; ++pos) {
    float* out_pos = s.out + pos * Hq * D;  // (Hq, D)
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t g = h / group_q, r = h % group_q;  // the item group holding head h, and its row there
      const float* first = parts.data() + (pos * groups + g) * chunks * part;
      float mx = -INFINITY, total = 0;
      for (int64_t c = 0; c < chunks; ++c) mx = std::max(mx, first[c * part + group_q * D + r]);
      float* oh = out_pos + h * D;
      std::fill(oh, oh + D, 0.f);
      for (int64_t c = 0; c < chunks; ++c) {
        const float* o = first + c * part;
        if (o[group_q * D + r] == -INFINITY) continue;  // an empty range
        const float f = std::exp(o[group_q * D + r] - mx);
        total += f * o[group_q * D + group_q + r];
        for (int64_t d = 0; d < D; ++d) oh[d] += f * o[r * D + d];
      }
      for (int64_t d = 0; d < D; ++d) oh[d] /= total;
    }
  }
}

}  // namespace
}  // namespace decode_core
}  // namespace seqedge
