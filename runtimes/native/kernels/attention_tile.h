// Causal grouped-query attention over a KV cache in tiles, for prefill: shared by seqedge::cached_sdpa.out
// (cached_sdpa.cpp, when a call has positions for every thread), the runner's llama::custom_sdpa.out
// (llm_attention.cpp) and onnxruntime's seqedge.Attention (onnxruntime/ort_kernels.cpp), so a prompt is attended
// by the same code in Python, in an app and in both formats.
//
//   q (B, T, Hq, D); k, v (B, S, Hkv, D) or (B, Hkv, S, D) (`layout`) with positions [0, start + T) written;
//   out (B, T, Hq, D). Query t (position start + t) attends keys [0, start + t] (causal) or [0, start + T);
//   query head h reads kv head h / (Hq / Hkv). Reference: seqedge/ops/attention/cached.py.
//
// The caller brings the threads: `parallel(n, fn)` runs fn(begin, end) over a split of [0, n) (ExecuTorch's
// parallel_for, onnxruntime's KernelContext_ParallelFor).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "vector_math.h"

namespace seqedge {
namespace tile_core {
namespace {  // internal linkage: each kernel library carries its own copy

// Where a cache keeps position j of kv head h: ExecuTorch's caches are (B, S, Hkv, D), a position's heads side by
// side; seqedge::attention's (the onnxruntime state) are (B, Hkv, S, D), a head's positions side by side.
enum class CacheLayout { kPositionMajor, kHeadMajor };

struct Sdpa {
  const float *q, *k, *v;
  float* out;
  int64_t T, Hq, D, S, Hkv, start;
  bool causal;
  float scale;
  CacheLayout layout = CacheLayout::kPositionMajor;
  // float16 caches, for decode_core::attend_all (k and v then unused): the rows a work item reads are widened in
  // registers, so the cache is streamed at half the bytes
  const uint16_t *k16 = nullptr, *v16 = nullptr;
  int64_t at(int64_t b, int64_t j, int64_t kv) const {  // floats from a cache's start to (b, j, kv)'s row of D
    return layout == CacheLayout::kPositionMajor ? ((b * S + j) * Hkv + kv) * D : ((b * Hkv + kv) * S + j) * D;
  }
  int64_t step() const { return layout == CacheLayout::kPositionMajor ? Hkv * D : D; }  // from position j to j + 1
};

constexpr int64_t kTileQueries = 8;  // query positions per work item
constexpr int64_t kKeys = 16;        // keys scored at once (the vectors run over keys)
constexpr int64_t kValues = 64;      // value rows accumulated per pass (kValues x D floats stay in L1)
constexpr int64_t kMaxHeadDim = 512;

// The keys of every (batch row, kv head), transposed once per call for all of its tiles, in blocks of kKeys:
// (B, Hkv, blocks, D, kKeys), so the block a tile scores is one contiguous D x kKeys run (rows of keys a
// power-of-two apart fell into one L1 set); the last block's padding is zeros, scored and never stored.
struct KeysT {
  std::vector<float> data;
  int64_t blocks = 0;
  int64_t at(const Sdpa& s, int64_t b, int64_t kv, int64_t j0) const {  // where key j0's block starts
    return ((b * s.Hkv + kv) * blocks + j0 / kKeys) * s.D * kKeys;
  }
  const float* block(const Sdpa& s, int64_t b, int64_t kv, int64_t j0) const { return data.data() + at(s, b, kv, j0); }
};

// w[0, n) replaced by exp(w - m), m its largest entry; returns {m, the sum of the exps}. kWidth lanes at a time
// (exp_row: 8): a float max or sum the loop vectoriser leaves scalar, as it may not reorder them (the running max
// alone was a tenth of a T = 1024 prompt's attention).
struct ExpSum {
  float max, total;
};
template <int kWidth>
SEQEDGE_INLINE ExpSum exp_row_lanes(float* w, int64_t n) {
  using V = typename FloatsOf<kWidth>::type;
  const int64_t full = n / kWidth * kWidth;
  V mv = V{} - INFINITY;
  for (int64_t j = 0; j < full; j += kWidth) {
    const V x = loadv<V>(w + j);
    mv = x > mv ? x : mv;
  }
  float m = -INFINITY;
  for (int64_t i = 0; i < kWidth; ++i) m = std::max(m, mv[i]);
  for (int64_t j = full; j < n; ++j) m = std::max(m, w[j]);
  V sum = {};
  for (int64_t j = 0; j < full; j += kWidth) {
    const V e = exp_nonpositive_lanes<kWidth>(loadv<V>(w + j) - m);
    storev(w + j, e);
    sum += e;
  }
  float total = 0;
  for (int64_t i = 0; i < kWidth; ++i) total += sum[i];
  for (int64_t j = full; j < n; ++j) total += (w[j] = exp_nonpositive(w[j] - m));
  return {m, total};
}
SEQEDGE_INLINE ExpSum exp_row(float* w, int64_t n) { return exp_row_lanes<8>(w, n); }

// w[0, n) replaced by its softmax, kWidth lanes at a time.
template <int kWidth>
SEQEDGE_INLINE void softmax_row(float* w, int64_t n) {
  const float inv = 1.0f / exp_row_lanes<kWidth>(w, n).total;
  for (int64_t j = 0; j < n; ++j) w[j] *= inv;
}

// acc[i][p] += x(i) * v[p] over R rows and the P vectors v of `from` (side by side): the inner step of both of
// attend_tile's products, each row's scalar against vectors loaded once for all the rows, the sums in registers.
template <int64_t R, int64_t P, class V, class X>
SEQEDGE_INLINE void add_outer(V (&acc)[R][P], const float* from, const X& x) {
  V v[P];
#pragma GCC unroll 16
  for (int64_t p = 0; p < P; ++p) v[p] = loadv<V>(from + static_cast<int64_t>(sizeof(V) / sizeof(float)) * p);
#pragma GCC unroll 16
  for (int64_t i = 0; i < R; ++i) {
    const float c = x(i);
#pragma GCC unroll 16
    for (int64_t p = 0; p < P; ++p) acc[i][p] += c * v[p];
  }
}

// One work item: batch row b, kv head kv, query positions [t0, t0 + nt). Its rows are those positions x the
// query heads sharing the kv head (row r: position t0 + r / group, head kv * group + r % group), so each key
// and value block is read once for all of them. Scores: kScoreRows rows against a block of kKeys keys, their
// sums held in registers across the head dimension; outputs: kValueRows rows' D sums held in registers over a
// block of kValues value rows. (Both were arrays of floats the compiler kept on the stack, and the keys were
// transposed per tile: one llama-135m layer's T = 1024 prompt took ~36 ms on 2 threads, ~16-20 ms then.)
// kD fixes the head dimension at compile time (64, 128; 0: any, whose outputs are summed in memory).
// kWidth is the floats per vector the build's registers hold: 16 at v4 (AVX-512), 8 at v3 (AVX2), 4 in the
// baseline (SSE2, and NEON on arm64). Wider generic vectors than the registers are lowered through the stack:
// the baseline's 8-float vectors spilled every score sum on arm64 (GCC 12), and at v4 8 floats used half of
// each register. Per llama-135m layer at T = 1024 (9 query heads over 3, D = 64, 2 threads of an AVX-512 Zen):
// 9.0 ms at 8 floats, 5.5 at 16; the SSE2 build 8.1 -> 2.6 ms at T = 256.
// (A head-by-head loop, one dot product per key, gave llama-135m ~290 tok/s at T = 1024 in the runner, where
// the wheel's kernel, on libtorch's MKL, gave ~570 inside Python.)
template <int kD, int kWidth>
SEQEDGE_INLINE void attend_tile(const Sdpa& s, const KeysT& kT, int64_t b, int64_t kv, int64_t t0, int64_t nt,
                                std::vector<float>& buf) {
  using V = typename FloatsOf<kWidth>::type;
  constexpr int64_t kParts = kKeys / kWidth;            // vectors per block of keys
  constexpr int64_t kScoreRows = kWidth == 16 ? 8 : 4;  // rows scored at once: 8 (v4, v3) or 16 (baseline) sums
  // rows summed at once over the same value rows: at v4 16 of its 32 registers (4 rows at D = 64: each value
  // vector loaded once for 4 FMAs); below, one row (D = 64 fills 8 AVX2 or 16 NEON registers)
  constexpr int64_t kValueRows = kWidth == 16 && kD > 0 ? std::max<int64_t>(1, 16 * kWidth / kD) : 1;
  const int64_t group = s.Hq / s.Hkv, rows = nt * group, D = kD ? kD : s.D;
  const int64_t keys = s.causal ? s.start + t0 + nt : s.start + s.T;  // keys the tile's last position sees
  buf.resize(rows * keys);
  float* scores = buf.data();  // (rows, keys), then each row's softmax weights
  const auto seen = [&](int64_t r) { return s.causal ? s.start + t0 + r / group + 1 : keys; };
  const auto offset = [&](int64_t r) { return ((b * s.T + t0 + r / group) * s.Hq + kv * group + r % group) * D; };
  for (int64_t j0 = 0; j0 < keys; j0 += kKeys) {
    const int64_t nk = std::min(kKeys, keys - j0);
    for (int64_t r0 = 0; r0 < rows; r0 += kScoreRows) {  // each key block row loaded once for all of them
      if (seen(std::min(r0 + kScoreRows, rows) - 1) <= j0) continue;  // (rows past the tile's last repeat it)
      const float* q[kScoreRows];
      for (int64_t i = 0; i < kScoreRows; ++i) q[i] = s.q + offset(std::min(r0 + i, rows - 1));
      V acc[kScoreRows][kParts] = {};
      const float* kd = kT.block(s, b, kv, j0);
      for (int64_t d = 0; d < D; ++d, kd += kKeys) add_outer(acc, kd, [&](int64_t i) { return q[i][d]; });
      for (int64_t i = 0; i < kScoreRows && r0 + i < rows; ++i) {
        float row[kKeys];
        for (int64_t p = 0; p < kParts; ++p) storev(row + kWidth * p, acc[i][p] * s.scale);
        const int64_t n = std::min(nk, seen(r0 + i) - j0);
        std::memcpy(scores + (r0 + i) * keys + j0, row, sizeof(float) * std::max<int64_t>(n, 0));
      }
    }
  }
  // softmax of each row over the keys it sees, weight 0 past them: a pass of kValueRows rows sums the value rows
  // the last of them sees (causal: a later position sees more), the others' zero weights adding nothing
  for (int64_t r = 0; r < rows; ++r) {
    softmax_row<kWidth>(scores + r * keys, seen(r));
    std::fill(scores + r * keys + seen(r), scores + (r + 1) * keys, 0.f);
    std::fill(s.out + offset(r), s.out + offset(r) + D, 0.f);
  }
  const float* values = s.v + s.at(b, 0, kv);
  const int64_t step = s.step();
  for (int64_t j0 = 0; j0 < keys; j0 += kValues) {
    for (int64_t r0 = 0; r0 < rows; r0 += kValueRows) {
      const int64_t last = std::min(r0 + kValueRows, rows) - 1;  // sees the most keys of them
      const int64_t end = std::min(j0 + kValues, seen(last));
      if (end <= j0) continue;
      if constexpr (kD > 0) {  // the rows' D sums in registers (D / kWidth vectors a row)
        constexpr int64_t kSums = kD / kWidth;
        float* o[kValueRows];
        const float* w[kValueRows];
        for (int64_t i = 0; i < kValueRows; ++i) {
          const int64_t r = std::min(r0 + i, rows - 1);  // past the last row: it again, not stored
          o[i] = s.out + offset(r);
          w[i] = scores + r * keys;
        }
        V acc[kValueRows][kSums];
#pragma GCC unroll 16
        for (int64_t i = 0; i < kValueRows; ++i)
#pragma GCC unroll 16
          for (int64_t x = 0; x < kSums; ++x) acc[i][x] = loadv<V>(o[i] + kWidth * x);
        for (int64_t j = j0; j < end; ++j) add_outer(acc, values + j * step, [&](int64_t i) { return w[i][j]; });
        for (int64_t i = kValueRows - 1; i >= 0; --i)  // the repeated last row stored last, the same sums
#pragma GCC unroll 16
          for (int64_t x = 0; x < kSums; ++x) storev(o[i] + kWidth * x, acc[i][x]);
      } else {
        for (int64_t r = r0; r <= last; ++r) {
          float* o = s.out + offset(r);
          const float* w = scores + r * keys;
          for (int64_t j = j0; j < end; ++j) {
            const float c = w[j];
            const float* vj = values + j * step;
            for (int64_t d = 0; d < D; ++d) o[d] += c * vj[d];
          }
        }
      }
    }
  }
}

#define SEQEDGE_TILE_PARAMS \
  (const Sdpa& s, const KeysT& kT, int64_t b, int64_t kv, int64_t t0, int64_t nt, std::vector<float>& buf)
SEQEDGE_WIDTH_VARIANTS(tile_d64, (attend_tile<64, kWidth>), SEQEDGE_TILE_PARAMS, (s, kT, b, kv, t0, nt, buf))
SEQEDGE_WIDTH_VARIANTS(tile_d128, (attend_tile<128, kWidth>), SEQEDGE_TILE_PARAMS, (s, kT, b, kv, t0, nt, buf))
SEQEDGE_WIDTH_VARIANTS(tile_any, (attend_tile<0, kWidth>), SEQEDGE_TILE_PARAMS, (s, kT, b, kv, t0, nt, buf))

// A prompt over float16 caches (s.k16, s.v16; B batch rows) reads each key many times: the written positions
// [0, start + T) as floats once, into this thread's scratch, and `s` pointed at them (S = start + T), for the tiles.
inline void widen_written_caches(Sdpa& s, int64_t B) {
  const int64_t len = s.start + s.T;
  const bool by_head = s.layout == CacheLayout::kHeadMajor;
  const int64_t runs = by_head ? B * s.Hkv : B, row = by_head ? s.D : s.Hkv * s.D;  // contiguous runs; a position's
  thread_local std::vector<float> kf, vf;
  kf.resize(static_cast<size_t>(runs * len * row));
  vf.resize(kf.size());
  for (int64_t r = 0; r < runs; ++r) {
    halves_to_floats(s.k16 + r * s.S * row, kf.data() + r * len * row, len * row);
    halves_to_floats(s.v16 + r * s.S * row, vf.data() + r * len * row, len * row);
  }
  s.k = kf.data();
  s.v = vf.data();
  s.S = len;
  s.k16 = s.v16 = nullptr;
}

// Attend every query of `s`: the keys transposed (one work item per batch row x kv head), then the tiles (work
// items: batch row x kv head x tile of positions), each over the caller's threads.
template <class Parallel>
inline void attend_all(const Sdpa& s, int64_t B, Parallel&& parallel) {
  const auto tile = s.D == 64 ? select_isa(tile_d64_v4, tile_d64_v3, tile_d64_baseline)
      : s.D == 128 ? select_isa(tile_d128_v4, tile_d128_v3, tile_d128_baseline)
      : select_isa(tile_any_v4, tile_any_v3, tile_any_baseline);
  const int64_t keys = s.start + s.T;  // the most any query sees
  KeysT kT;
  kT.blocks = (keys + kKeys - 1) / kKeys;
  kT.data.assign(B * s.Hkv * kT.blocks * s.D * kKeys, 0.f);
  parallel(B * s.Hkv, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / s.Hkv, kv = item % s.Hkv;
      for (int64_t j = 0; j < keys; ++j) {
        const float* kj = s.k + s.at(b, j, kv);
        float* out = kT.data.data() + kT.at(s, b, kv, j) + j % kKeys;
        for (int64_t d = 0; d < s.D; ++d) out[d * kKeys] = kj[d];
      }
    }
  });
  const int64_t tiles = (s.T + kTileQueries - 1) / kTileQueries;
  parallel(B * s.Hkv * tiles, [&](int64_t begin, int64_t end) {
    std::vector<float> buf;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t i = item % tiles, kv = (item / tiles) % s.Hkv, b = item / (tiles * s.Hkv);
      const int64_t t0 = i * kTileQueries;
      tile(s, kT, b, kv, t0, std::min(kTileQueries, s.T - t0), buf);
    }
  });
}

}  // namespace
}  // namespace tile_core
}  // namespace seqedge
