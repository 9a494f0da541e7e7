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
// with once the cache outgrew L2 (seqedge::cached_sdpa, the same shapes: 124 -> 77-91 us a layer at 1,024). float16
// caches are widened in registers as the rows are read (F16C, NEON), not through a float32 scratch, so a step
// streams half the bytes for a few conversions (the same shapes at 1,024: onnxruntime's op 68-74 -> 47 us a layer,
// cached_sdpa 83 -> 44; through a scratch, float16 had been the slower of the two). The query heads sharing a kv
// head are scored together, each key widened once for up to four of them, and rows are prefetched 4 KB ahead,
// the first rows of a range too (onnxruntime's op, float16, the same shapes at 1,024: 39-52 -> 31-34 us a layer;
// llama-135m ONNX int4 decode at 1,024 positions 5.35 -> 4.92 ms a token). While the keys are scored, the value
// rows at the same distance ahead are prefetched too, so the value pass finds its range in L2 (where a
// position's heads sit side by side it reads each row once per kv head, a stride the prefetcher missed), and
// with AVX-512's registers three query heads share each value row read, not two (llama-135m's 3 per kv head in
// one pass, not two): ExecuTorch int4 decode through the runner, lockstep turns, at 1,024 positions x1.09-1.12
// for the first and x1.15-1.17 with both, at 256 x1.05; onnxruntime's op, one kv head a row, unchanged
// (x0.99). (ExecuTorch's
// llama::custom_sdpa, tiled for prefill, took 1.2-1.9 ms per llama-135m
// layer at T = 1 with 256-1024 cached positions on 2 threads; one item per kv head, reading a third of each
// position-major row per pass, ran compute-bound at ~3 GB/s of cache.)
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <type_traits>
#include <vector>

#include "attention_tile.h"
#include "vector_math.h"

namespace seqedge {
namespace decode_core {
namespace {  // internal linkage: each kernel library carries its own copy

// How far ahead of the rows being read the next ones are prefetched (into L2): a few DRAM latencies of one
// thread's stream. Eight rows (1 KB of a float16 head-major cache) left the score loop waiting on its loads.
constexpr int64_t kPrefetchBytes = 4096;

// The scores of HEADS query heads (q: D apart) against four keys (kh: rows `row` apart): each key's D values are
// widened once for all the heads sharing it, where a head at a time widened them G times; kWidth lanes a step
// (16 in the AVX-512 build where D allows: half the instructions of 8), the four keys' sums reduced together.
// D is FIXED_D where that is compiled in (> 0), else any_d (a multiple of kWidth).
template <int64_t FIXED_D, class C, bool kF16C, int64_t HEADS, int kWidth>
SEQEDGE_INLINE void score_four(const float* q, const C* kh, int64_t row, int64_t any_d, float scale, float* wh,
                               int64_t n) {
  using V = typename FloatsOf<kWidth>::type;
  const int64_t D = FIXED_D > 0 ? FIXED_D : any_d;
  V a[HEADS][4] = {};
  for (int64_t d = 0; d < D; d += kWidth) {
    const V k0 = load_lanes<kWidth, kF16C>(kh + d), k1 = load_lanes<kWidth, kF16C>(kh + row + d);
    const V k2 = load_lanes<kWidth, kF16C>(kh + 2 * row + d), k3 = load_lanes<kWidth, kF16C>(kh + 3 * row + d);
    for (int64_t h = 0; h < HEADS; ++h) {
      const V qv = loadv<V>(q + h * D + d);
      a[h][0] += qv * k0;
      a[h][1] += qv * k1;
      a[h][2] += qv * k2;
      a[h][3] += qv * k3;
    }
  }
  for (int64_t h = 0; h < HEADS; ++h) {
    const Floats4 sums = scale * sum_four(a[h][0], a[h][1], a[h][2], a[h][3]);
    std::memcpy(wh + h * n, &sums, sizeof sums);
  }
}

// The outputs of HEADS query heads (oh, D apart; their weights wh, n apart) over n value rows (vh, `row` apart):
// each row loaded once for all of them, the sums in registers across the rows (FIXED_D a multiple of kWidth),
// the rows `ahead` prefetched.
template <int64_t FIXED_D, class C, bool kF16C, int64_t HEADS, int kWidth>
SEQEDGE_INLINE void value_pass(const float* wh, const C* vh, int64_t row, int64_t n, int64_t ahead, float* oh) {
  using V = typename FloatsOf<kWidth>::type;
  constexpr int64_t kVectors = FIXED_D / kWidth;
  V acc[HEADS][kVectors] = {};
  for (int64_t j = 0; j < n; ++j, vh += row) {
    if (j + ahead < n)
      for (int64_t off = 0; off < FIXED_D; off += 64 / sizeof(C)) __builtin_prefetch(vh + ahead * row + off, 0, 2);
    float c[HEADS];
    for (int64_t h = 0; h < HEADS; ++h) c[h] = wh[h * n + j];
    for (int64_t i = 0; i < kVectors; ++i) {
      const V x = load_lanes<kWidth, kF16C>(vh + kWidth * i);
      for (int64_t h = 0; h < HEADS; ++h) acc[h][i] += c[h] * x;
    }
  }
  for (int64_t h = 0; h < HEADS; ++h)
    for (int64_t i = 0; i < kVectors; ++i) storev(oh + h * FIXED_D + kWidth * i, acc[h][i]);
}

// Every query head q (Hkv * G, D) of one position against keys [j0, j1) (row j at k + j * Hkv * D):
// unnormalised o (Hkv * G, D) = sum_j exp(s_j - m) v_j, m the largest score and l the sum of exp(s_j - m)
// per head; w is scratch of (Hkv * G) * (j1 - j0) scores. The cache rows are float32 (C float) or float16 (C
// uint16_t, the bits), widened in registers as they are read (vector_math.h's load_lanes).
template <int64_t FIXED_D, class C, bool kF16C, int64_t kHeads, int kWidth = 8>
SEQEDGE_INLINE void attend_rows(const float* q, const C* k, const C* v, int64_t Hkv, int64_t G,
                                int64_t any_d, int64_t j0, int64_t j1, float scale, float* w, float* o, float* m,
                                float* l) {
  const int64_t D = FIXED_D > 0 ? FIXED_D : any_d;
  const int64_t n = j1 - j0, H = Hkv * G, row = Hkv * D;
  const int64_t ahead = std::max<int64_t>(8, kPrefetchBytes / static_cast<int64_t>(row * sizeof(C)));  // rows
  for (int64_t r = 0; r < std::min(ahead, n); ++r)  // the first rows of the range, which no loop below prefetches
    for (int64_t off = 0; off < row; off += 64 / sizeof(C)) {
      __builtin_prefetch(k + (j0 + r) * row + off, 0, 2);
      __builtin_prefetch(v + (j0 + r) * row + off, 0, 2);
    }
  int64_t j = 0;
  if (D % kWidth == 0) {  // four keys at a time: four independent sums per query head (one dot's adds are a chain)
    for (; j + 4 <= n; j += 4) {
      const C* kj = k + (j0 + j) * row;
      if (j + ahead + 4 <= n)  // the rows kPrefetchBytes ahead, into L2
        for (int64_t off = 0; off < 4 * row; off += 64 / sizeof(C)) {
          __builtin_prefetch(kj + ahead * row + off, 0, 2);
          __builtin_prefetch(v + (j0 + j + ahead) * row + off, 0, 2);
        }
      for (int64_t hk = 0; hk < Hkv; ++hk)
        for (int64_t g = 0; g < G; g += kHeads) {  // up to kHeads heads per pass over the keys' values
          const float* qh = q + (hk * G + g) * D;
          const C* kh = kj + hk * D;
          float* wh = w + (hk * G + g) * n + j;
          switch (std::min<int64_t>(kHeads, G - g)) {
            case 1: score_four<FIXED_D, C, kF16C, 1, kWidth>(qh, kh, row, D, scale, wh, n); break;
            case 2: score_four<FIXED_D, C, kF16C, 2, kWidth>(qh, kh, row, D, scale, wh, n); break;
            case 3: score_four<FIXED_D, C, kF16C, (kHeads >= 3 ? 3 : 1), kWidth>(qh, kh, row, D, scale, wh, n); break;
            default: score_four<FIXED_D, C, kF16C, (kHeads >= 4 ? 4 : 1), kWidth>(qh, kh, row, D, scale, wh, n);
          }
        }
    }
  }
  for (; j < n; ++j) {  // the last keys (or every key where D is not a multiple of 8), one at a time
    const C* kj = k + (j0 + j) * row;
    for (int64_t hk = 0; hk < Hkv; ++hk)
      for (int64_t g = 0; g < G; ++g) {
        const float* qh = q + (hk * G + g) * D;
        const C* kh = kj + hk * D;
        Floats8 acc = {};
        int64_t d = 0;
        for (; d + 8 <= D; d += 8) acc += load8(qh + d) * load8<kF16C>(kh + d);
        float dot = sum8(acc);
        for (; d < D; ++d) dot += qh[d] * as_float(kh[d]);
        w[(hk * G + g) * n + j] = scale * dot;
      }
  }
  for (int64_t h = 0; h < H; ++h) {
    const tile_core::ExpSum e = tile_core::exp_row_lanes<kWidth>(w + h * n, n);  // (attention_tile.h)
    m[h] = e.max;
    l[h] = e.total;
  }
  if constexpr (FIXED_D > 0 && FIXED_D % kWidth == 0) {  // each head's output in registers across the keys
    constexpr int64_t kVectors = FIXED_D / kWidth;
    // heads sharing each value row load (registers permitting: three where AVX-512 gives 32)
    constexpr int64_t kPair = kVectors <= 8 ? (kHeads >= 3 ? 3 : 2) : 1;
    for (int64_t hk = 0; hk < Hkv; ++hk)
      for (int64_t g = 0; g < G;) {  // kPair heads at a time, the group's last ones two or one at a time
        const int64_t left = G - g;
        float* oh = o + (hk * G + g) * D;
        const float* wh = w + (hk * G + g) * n;
        const C* vh = v + j0 * row + hk * D;
        if (left >= kPair) {
          value_pass<FIXED_D, C, kF16C, kPair, kWidth>(wh, vh, row, n, ahead, oh);
          g += kPair;
        } else if (left >= 2) {
          value_pass<FIXED_D, C, kF16C, 2, kWidth>(wh, vh, row, n, ahead, oh);
          g += 2;
        } else {
          value_pass<FIXED_D, C, kF16C, 1, kWidth>(wh, vh, row, n, ahead, oh);
          g += 1;
        }
      }
    return;
  }
  std::fill(o, o + H * D, 0.f);
  for (int64_t j = 0; j < n; ++j) {
    const C* vj = v + (j0 + j) * row;
    for (int64_t hk = 0; hk < Hkv; ++hk) {
      const C* __restrict__ vh = vj + hk * D;
      for (int64_t g = 0; g < G; ++g) {
        const float c = w[(hk * G + g) * n + j];
        float* __restrict__ oh = o + (hk * G + g) * D;
        for (int64_t d = 0; d < D; ++d) oh[d] += c * as_float(vh[d]);
      }
    }
  }
}

// attend_rows per head dim and cache type, compiled for each feature level (SEQEDGE_ISA_VARIANTS, but with the
// float16 widening by F16C in the v3 and v4 builds): NAME_v4, NAME_v3, NAME_baseline. Up to four query heads
// share a pass over the keys where AVX-512's 32 registers hold their 16 sums; two with AVX2's 16, where three
// heads' 12 sums, 4 keys and the query spill (llama-135m's seqedge.Attention, float16, 1,024 positions, on 2
// threads of a Zen 3, three interleaved rounds: 45.5 / 50.0 / 44.6 us a layer two at a time, 50.6 / 51.5 / 44.8
// three, 61.2 / 49.1 / 52.6 one).
#define SEQEDGE_ATTEND_VARIANTS(NAME, FIXED_D, C)                                                                  \
  SEQEDGE_TARGET_V4 void NAME##_v4(SEQEDGE_ATTEND_PARAMS(C)) {                                                     \
    attend_rows<FIXED_D, C, true, 4, (FIXED_D > 0 && FIXED_D % kWideLanes == 0 ? kWideLanes : 8)>                  \
        SEQEDGE_ATTEND_ARGS;                                                                                       \
  }                                                                                                                \
  SEQEDGE_TARGET_V3 void NAME##_v3(SEQEDGE_ATTEND_PARAMS(C)) {                                                     \
    attend_rows<FIXED_D, C, true, kAvx2Heads> SEQEDGE_ATTEND_ARGS;                                                \
  }                                                                                                                \
  void NAME##_baseline(SEQEDGE_ATTEND_PARAMS(C)) { attend_rows<FIXED_D, C, false, 2> SEQEDGE_ATTEND_ARGS; }
constexpr int64_t kAvx2Heads = 2;
#define SEQEDGE_ATTEND_PARAMS(C)                                                                                \
  const float *q, const C *k, const C *v, int64_t Hkv, int64_t G, int64_t D, int64_t j0, int64_t j1, float scale, \
      float *w, float *o, float *m, float *l
#define SEQEDGE_ATTEND_ARGS (q, k, v, Hkv, G, D, j0, j1, scale, w, o, m, l)
SEQEDGE_ATTEND_VARIANTS(attend_d64, 64, float)
SEQEDGE_ATTEND_VARIANTS(attend_d128, 128, float)
SEQEDGE_ATTEND_VARIANTS(attend_any, 0, float)
SEQEDGE_ATTEND_VARIANTS(attend_d64_half, 64, uint16_t)
SEQEDGE_ATTEND_VARIANTS(attend_d128_half, 128, uint16_t)
SEQEDGE_ATTEND_VARIANTS(attend_any_half, 0, uint16_t)
#undef SEQEDGE_ATTEND_VARIANTS
#undef SEQEDGE_ATTEND_PARAMS
#undef SEQEDGE_ATTEND_ARGS

// The variant for head dim D and cache type C at this CPU's feature level.
template <class C>
auto pick_attend(int64_t D) {
  if constexpr (std::is_same_v<C, float>)
    return D == 64 ? select_isa(attend_d64_v4, attend_d64_v3, attend_d64_baseline)
        : D == 128 ? select_isa(attend_d128_v4, attend_d128_v3, attend_d128_baseline)
        : select_isa(attend_any_v4, attend_any_v3, attend_any_baseline);
  else
    return D == 64 ? select_isa(attend_d64_half_v4, attend_d64_half_v3, attend_d64_half_baseline)
        : D == 128 ? select_isa(attend_d128_half_v4, attend_d128_half_v3, attend_d128_half_baseline)
        : select_isa(attend_any_half_v4, attend_any_half_v3, attend_any_half_baseline);
}

// Steps scoring at most this many (query head, key) pairs run on the calling thread: ~1-2 us of work, less than a
// round trip through the pool (llama-135m's nine heads: the first 56 positions).
constexpr int64_t kInlineScores = 512;

// Attend every query of `s` (B batch rows), the keys of each split into ranges of >= 64 so that there are about
// `split` work items per query position — a multiple of it where that takes at most twice the ranges — over
// `parallel` (attention_tile.h's contract). `split` is the threads that run them where the caller knows them
// (each item starts its stream of rows cold: fewer items are faster while none waits), or more for balance.
template <class Parallel>
inline void attend_all(const tile_core::Sdpa& s, int64_t B, int64_t split, Parallel&& parallel) {
  const int64_t T = s.T, Hq = s.Hq, D = s.D, Hkv = s.Hkv, start = s.start;
  const int64_t G = Hq / Hkv;  // query heads per kv head
  const bool side_by_side = s.layout == tile_core::CacheLayout::kPositionMajor;
  const int64_t groups = side_by_side ? 1 : Hkv, group_kv = side_by_side ? Hkv : 1;  // kv heads per item
  const int64_t group_q = group_kv * G;  // query heads per item
  const int64_t positions = B * T;
  const int64_t per_position = std::max<int64_t>(1, (split + positions - 1) / positions);
  int64_t chunks = (per_position + groups - 1) / groups;  // key ranges per (position, group)
  if (const int64_t even = per_position / std::gcd(groups, per_position); even <= 2 * chunks)
    chunks = even;  // items a multiple of `split`, so that no thread takes one more (3 kv heads on 2 threads: 6)
  chunks = std::max<int64_t>(1, std::min<int64_t>(chunks, (start + T) / 64));
  const int64_t part = group_q * D + 2 * group_q;  // o (group_q, D), m (group_q), l (group_q) per item
  const int64_t items = positions * groups * chunks;
  thread_local std::vector<float> parts;  // the caller's, reused: a step's allocation cost more than its merge
  parts.resize(items * part);
  const auto attend = pick_attend<float>(D);
  const auto attend_half = pick_attend<uint16_t>(D);

  float* const all_parts = parts.data();
  auto run = [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> w;  // each thread's scores, reused across items and calls
    for (int64_t item = begin; item < end; ++item) {
      const int64_t c = item % chunks, g = (item / chunks) % groups, pos = item / (chunks * groups);
      const int64_t t = pos % T, b = pos / T;
      const int64_t n = start + t + 1;  // keys this query position sees
      const int64_t j0 = n * c / chunks, j1 = n * (c + 1) / chunks;
      float* o = all_parts + item * part;
      float *m = o + group_q * D, *l = m + group_q;
      if (j1 <= j0) {
        std::fill(o, o + part, 0.f);
        std::fill(m, m + group_q, -INFINITY);
        continue;
      }
      w.resize(group_q * (j1 - j0));
      const float* qh = s.q + ((b * T + t) * Hq + g * group_q) * D;
      if (s.k16 != nullptr) {
        attend_half(qh, s.k16 + s.at(b, 0, g), s.v16 + s.at(b, 0, g), group_kv, G, D, j0, j1, s.scale, w.data(), o, m, l);
      } else {
        attend(qh, s.k + s.at(b, 0, g), s.v + s.at(b, 0, g), group_kv, G, D, j0, j1, s.scale, w.data(), o, m, l);
      }
    }
  };
  if (items == 1 || positions * Hq * (start + T) <= kInlineScores) {
    run(0, items);  // no threadpool round trip: it costs more than a few hundred scores
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
