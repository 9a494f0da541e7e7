// Mamba's causal depthwise convolution with its carried window, then SiLU, channels last (the layout the
// projections around it use, so no transpose runs on either side):
//
//   window = concat(state, x) along time;  y_t[d] = silu(bias[d] + sum_k w[d, k] * window[t + k][d])
//
// Shapes: x (Bt, T, D); w (D, 1, K) (torch's depthwise Conv1d weight); bias (D); state (Bt, D, K-1) — the
// K-1 inputs before x, oldest first, as seqedge's `causal_conv1d` carries it. Outputs y (Bt, T, D) and
// state_out (Bt, D, K-1), the window's last K-1 inputs. Reference: seqedge/ops/causal_conv1d/reference.py
// (channels first: transpose x and y). A block of 16 channels keeps its window and weights in registers and
// walks time once; a runtime splits the blocks over its threads (`conv_items`, `conv_item`).
#pragma once

#include <algorithm>
#include <cstdint>

#include "vector_math.h"

namespace seqedge {
namespace conv_core {
namespace {  // internal linkage, as selective_scan_core.h

constexpr int64_t kMaxWidth = 64;  // K
constexpr int64_t kLanes = 16;

struct Conv {
  const float *x, *w, *bias, *state;
  float *y, *state_out;
  int64_t Bt, T, Dm, K;
};

SEQEDGE_INLINE void conv_block(const Conv& s, int64_t b, int64_t d0, int64_t nd) {
  const int64_t K = s.K, W = K - 1, Dm = s.Dm;
  float head[kMaxWidth][kLanes];  // the state, transposed: the K-1 inputs before x, oldest first
  float w[kMaxWidth][kLanes];
  float bias[kLanes];
  for (int64_t c = 0; c < kLanes; ++c) {
    const bool live = c < nd;
    bias[c] = live ? s.bias[d0 + c] : 0.f;
    for (int64_t k = 0; k < K; ++k) w[k][c] = live ? s.w[(d0 + c) * K + k] : 0.f;
    for (int64_t j = 0; j < W; ++j) head[j][c] = live ? s.state[(b * Dm + d0 + c) * W + j] : 0.f;
  }
  // input j of the window (0 .. W + T - 1): the state's, then x's rows (read in place when the block is full)
  float row[kLanes];
  const auto input = [&](int64_t j) -> const float* {
    if (j < W) return head[j];
    const float* x = s.x + (b * s.T + j - W) * Dm + d0;
    if (nd == kLanes) return x;
    for (int64_t c = 0; c < kLanes; ++c) row[c] = c < nd ? x[c] : 0.f;
    return row;
  };
  for (int64_t t = 0; t < s.T; ++t) {
    float acc[kLanes];
    for (int64_t c = 0; c < kLanes; ++c) acc[c] = bias[c];
    for (int64_t k = 0; k < K; ++k) {
      const float* in = input(t + k);
      for (int64_t c = 0; c < kLanes; ++c) acc[c] += w[k][c] * in[c];
    }
    apply16(acc, [](Floats8 v) { return silu8(v); });
    float* y = s.y + (b * s.T + t) * Dm + d0;
    for (int64_t c = 0; c < nd; ++c) y[c] = acc[c];
  }
  float tail[kMaxWidth][kLanes];  // the window's last K-1 inputs (read before any write: state may alias)
  for (int64_t j = 0; j < W; ++j) {
    const float* in = input(s.T + j);
    for (int64_t c = 0; c < kLanes; ++c) tail[j][c] = in[c];
  }
  for (int64_t j = 0; j < W; ++j)
    for (int64_t c = 0; c < nd; ++c) s.state_out[(b * Dm + d0 + c) * W + j] = tail[j][c];
}

// One time step (T = 1: decode) of channels [d0, d0 + nd): each channel's weights and window are contiguous
// (w (D, 1, K), state (Bt, D, K-1)), so a channel is read and its window shifted where it lies, in place of
// the block's transposes in and out (1536 channels, one core: 12.5 -> 10.5 us a node, ~2.2 us of it the call's
// fixed cost). The sum runs in the block's order: bias, the window oldest first, then x. FIXED_K > 0 compiles
// the width in (Mamba's 4: the loops over the window unrolled), 0 takes any.
template <int64_t FIXED_K>
SEQEDGE_INLINE void conv_step_channels(const Conv& s, int64_t b, int64_t d0, int64_t nd, float* acc) {
  const int64_t K = FIXED_K > 0 ? FIXED_K : s.K, W = K - 1;
  for (int64_t c = 0; c < nd; ++c) {
    const int64_t d = d0 + c, row = b * s.Dm + d;
    const float* w = s.w + d * K;
    const float* h = s.state + row * W;
    const float x = s.x[row];
    float a = s.bias[d];
    for (int64_t j = 0; j < W; ++j) a += w[j] * h[j];
    acc[c] = a + w[W] * x;
    float* out = s.state_out + row * W;  // may alias h: out[j] is written after h[j + 1] is read
    for (int64_t j = 0; j + 1 < W; ++j) out[j] = h[j + 1];
    if (W > 0) out[W - 1] = x;
  }
}

SEQEDGE_INLINE void conv_step_block(const Conv& s, int64_t b, int64_t d0, int64_t nd) {
  float acc[kLanes] = {};
  if (s.K == 4)
    conv_step_channels<4>(s, b, d0, nd, acc);
  else
    conv_step_channels<0>(s, b, d0, nd, acc);
  apply16(acc, [](Floats8 v) { return silu8(v); });
  float* y = s.y + b * s.Dm + d0;
  for (int64_t c = 0; c < nd; ++c) y[c] = acc[c];
}

SEQEDGE_ISA_VARIANTS(conv_block, conv_block, (const Conv& s, int64_t b, int64_t d0, int64_t nd), (s, b, d0, nd))
SEQEDGE_ISA_VARIANTS(conv_step_block, conv_step_block, (const Conv& s, int64_t b, int64_t d0, int64_t nd),
                     (s, b, d0, nd))

// Why the operands do not fit (nullptr when they do); dims as each runtime reads them, checked before any data.
inline const char* conv_shape_error(const int64_t (&dims)[4][3], const int64_t (&rank)[4]) {
  if (rank[0] != 3 || rank[1] != 3 || rank[2] != 1 || rank[3] != 3)
    return "x, weight and state must be 3-D and bias 1-D";
  const int64_t Bt = dims[0][0], T = dims[0][1], Dm = dims[0][2], K = dims[1][2];
  if (Bt < 0 || T < 0 || Dm < 0 || K < 0) return "negative dimension";
  if (dims[1][0] != Dm || dims[1][1] != 1 || dims[2][0] != Dm) return "weight must be (D, 1, K) and bias (D) for x's D";
  if (K < 1 || K > kMaxWidth) return "the kernel width K must be 1 to 64";
  if (dims[3][0] != Bt || dims[3][1] != Dm || dims[3][2] != K - 1) return "state must be (Bt, D, K-1)";
  return nullptr;
}

inline int64_t conv_items(const Conv& s) { return s.Bt * ((s.Dm + kLanes - 1) / kLanes); }

// state and state_out may alias: a block reads its window before any write, and blocks are disjoint.
inline void conv_item(const Conv& s, int64_t item) {
  static const auto block = select_isa(conv_block_v4, conv_block_v3, conv_block_baseline);
  static const auto step = select_isa(conv_step_block_v4, conv_step_block_v3, conv_step_block_baseline);
  const int64_t blocks = (s.Dm + kLanes - 1) / kLanes;
  const int64_t b = item / blocks, d0 = (item % blocks) * kLanes;
  (s.T == 1 ? step : block)(s, b, d0, std::min<int64_t>(kLanes, s.Dm - d0));
}

}  // namespace
}  // namespace conv_core
}  // namespace seqedge
