// Causal grouped-query attention over a KV cache in tiles, for prefill: shared by seqedge::cached_sdpa.out
// (cached_sdpa.cpp, when a call has positions for every thread) and the runner's llama::custom_sdpa.out
// (llm_attention.cpp), so a prompt is attended by the same code in Python and in an app.
//
//   q (B, T, Hq, D); k, v (B, S, Hkv, D) with positions [0, start + T) written; out (B, T, Hq, D)
//   query t (position start + t) attends keys [0, start + t] (causal) or [0, start + T); query head h reads kv
//   head h / (Hq / Hkv). Reference: seqedge/ops/attention/cached.py.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "et_kernel.h"
#include "vector_math.h"

namespace seqedge {
namespace tile_core {
namespace {  // internal linkage: each kernel library carries its own copy

struct Sdpa {
  const float *q, *k, *v;
  float* out;
  int64_t T, Hq, D, S, Hkv, start;
  bool causal;
  float scale;
};

constexpr int64_t kTileQueries = 8;  // query positions per work item
constexpr int64_t kKeys = 16;        // keys scored at once (a transposed block: the vector runs over keys)
constexpr int64_t kRows = 4;         // query rows scored at once (4 x 16 accumulators stay in registers)
constexpr int64_t kValues = 64;      // value rows accumulated per pass (kValues x D floats stay in L1)
constexpr int64_t kMaxHeadDim = 512;

// One work item: batch row b, kv head kv, query positions [t0, t0 + nt). Its rows are those positions x the
// query heads sharing the kv head (row r: position t0 + r / group, head kv * group + r % group), so each key
// and value block is read once for all of them. Scores: a block of kKeys keys transposed to (D, kKeys), kRows
// rows' scores for it accumulated across the keys at once (no horizontal sums; 4 rows: T = 1024 ~610 -> ~650
// tok/s); outputs: each row's D accumulators held over a block of kValues value rows (two rows at once
// measured no different). kD fixes the head dimension at compile time (64, 128; 0: any).
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
    for (int64_t r0 = 0; r0 < rows; r0 += kRows) {  // kRows rows at once: each block row loaded once for all
      if (seen(std::min(r0 + kRows, rows) - 1) <= j0) continue;  // (rows past the tile's last repeat it, unstored)
      const float* q[kRows];
      for (int64_t i = 0; i < kRows; ++i) q[i] = s.q + offset(std::min(r0 + i, rows - 1));
      float acc[kRows][kKeys] = {};
      for (int64_t d = 0; d < D; ++d) {
        const float* kd = kt + d * kKeys;
        for (int64_t i = 0; i < kRows; ++i) {
          const float qd = q[i][d];
          for (int64_t jj = 0; jj < kKeys; ++jj) acc[i][jj] += qd * kd[jj];
        }
      }
      for (int64_t i = 0; i < kRows && r0 + i < rows; ++i) {
        const int64_t n = std::min(nk, seen(r0 + i) - j0);
        float* w = scores + (r0 + i) * keys + j0;
        for (int64_t jj = 0; jj < n; ++jj) w[jj] = s.scale * acc[i][jj];
      }
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

// Attend every query of `s` (work items: batch row x kv head x tile of positions, over the threadpool).
inline void attend_all(const Sdpa& s, int64_t B) {
  const auto tile = s.D == 64 ? select_isa(tile_d64_v4, tile_d64_v3, tile_d64_baseline)
      : s.D == 128 ? select_isa(tile_d128_v4, tile_d128_v3, tile_d128_baseline)
      : select_isa(tile_any_v4, tile_any_v3, tile_any_baseline);
  const int64_t tiles = (s.T + kTileQueries - 1) / kTileQueries;
  executorch::extension::parallel_for(0, B * s.Hkv * tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> buf;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t i = item % tiles, kv = (item / tiles) % s.Hkv, b = item / (tiles * s.Hkv);
      const int64_t t0 = i * kTileQueries;
      tile(s, b, kv, t0, std::min(kTileQueries, s.T - t0), buf);
    }
  });
}

}  // namespace
}  // namespace tile_core
}  // namespace seqedge
