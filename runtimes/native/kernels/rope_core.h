// Rotary position embedding of one head's vector: shared by ExecuTorch's seqedge::rope.out (rope.cpp) and
// onnxruntime's seqedge.Attention (onnxruntime/ort_kernels.cpp). Reference: seqedge/ops/attention/reference.py
// (rope_ref).
#pragma once

#include <cstdint>

namespace seqedge {
namespace rope_core {
namespace {  // internal linkage: each kernel library carries its own copy

// x (D) rotated to the position whose tables are c, s (D / 2): Hugging Face's rotate_half pairing (the first and
// second halves of the head are the pairs).
inline void rotate(const float* x, const float* c, const float* s, int64_t D, float* out) {
  const int64_t half = D / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float x1 = x[i], x2 = x[i + half];
    out[i] = x1 * c[i] - x2 * s[i];
    out[i + half] = x2 * c[i] + x1 * s[i];
  }
}

}  // namespace
}  // namespace rope_core
}  // namespace seqedge
