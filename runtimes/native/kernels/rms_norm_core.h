// seqedge's RMSNorm: each row of D of x scaled by 1 / sqrt(mean(x^2) + eps), times the weight. Shared by
// ExecuTorch's seqedge::rms_norm.out (rms_norm.cpp) and onnxruntime's seqedge.Int4MatMulSkipRmsNorm (a residual sum
// first); reference: seqedge/ops/rms_norm (rms_norm_ref).
#pragma once

#include <cmath>
#include <cstdint>

#include "vector_math.h"

namespace seqedge {
namespace norm_core {
namespace {  // internal linkage: each kernel library carries its own copy

struct Norm {
  const float* x;       // (rows, D)
  const float* weight;  // (D)
  float* y;             // (rows, D); may be x
  int64_t rows, D;
  float eps;
  const float* skip = nullptr;  // (rows, D): when set, the rows of x + skip are normalised, and kept in `sum`
  float* sum = nullptr;         // (rows, D); may be x
};

SEQEDGE_INLINE void norm_row(const Norm& s, int64_t r) {
  const float* x = s.x + r * s.D;
  float* y = s.y + r * s.D;
  if (s.skip != nullptr) {  // onnxruntime's SkipSimplifiedLayerNormalization: the residual sum first
    float* sum = s.sum + r * s.D;
    const float* skip = s.skip + r * s.D;
    for (int64_t i = 0; i < s.D; ++i) sum[i] = x[i] + skip[i];
    x = sum;
  }
  const float scale = 1.f / std::sqrt(dot(x, x, s.D) / static_cast<float>(s.D) + s.eps);
  for (int64_t i = 0; i < s.D; ++i) y[i] = x[i] * scale * s.weight[i];
}

SEQEDGE_INLINE void norm_rows(const Norm& s, int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) norm_row(s, r);
}

SEQEDGE_ISA_VARIANTS(norm_rows, norm_rows, (const Norm& s, int64_t begin, int64_t end), (s, begin, end))

// Rows [begin, end) with the kernel built for this CPU.
inline void rows(const Norm& s, int64_t begin, int64_t end) {
  static const auto fn = select_isa(norm_rows_v4, norm_rows_v3, norm_rows_baseline);
  fn(s, begin, end);
}

}  // namespace
}  // namespace norm_core
}  // namespace seqedge
