// Small vector helpers shared by seqedge's kernels: written as plain loops the compiler vectorises, and
// (x86-64 Linux) compiled per CPU generation for the functions marked SEQEDGE_VECTOR_CLONES.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

// The hot loops, compiled for the machine's vector width where the toolchain can dispatch at load time
// (glibc ifunc); one portable build elsewhere (Android/iOS builds pick their -march themselves).
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define SEQEDGE_VECTOR_CLONES __attribute__((target_clones("arch=skylake-avx512", "arch=haswell", "default")))
#else
#define SEQEDGE_VECTOR_CLONES
#endif
#if defined(__GNUC__)
#define SEQEDGE_INLINE inline __attribute__((always_inline))  // compiled into each clone, with its vector width
#else
#define SEQEDGE_INLINE inline
#endif

namespace seqedge {

SEQEDGE_INLINE float dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  float s = 0;
  for (; i < n; ++i) s += a[i] * b[i];
  for (float x : acc) s += x;
  return s;
}

// exp(x) for x <= 0 (softmax after subtracting the row maximum), in arithmetic the compiler vectorises
// (std::exp is a scalar libm call, which keeps the softmax loop scalar).
// 2^(x / ln 2) = 2^n * 2^f with n = round(x / ln 2), |f| <= 1/2; 2^f by a degree-6 polynomial (relative
// error < 2e-7); 2^n built in the exponent bits. Below -87 the result is 0 (as expf underflows).
SEQEDGE_INLINE float exp_nonpositive(float x) {
  const float t = std::max(x, -87.0f) * 1.44269504088896341f;
  const float n = std::nearbyint(t);
  const float f = t - n;
  float p = 1.535336188319500e-4f;
  p = p * f + 1.339887440266574e-3f;
  p = p * f + 9.618437357674640e-3f;
  p = p * f + 5.550332471162809e-2f;
  p = p * f + 2.402264791363012e-1f;
  p = p * f + 6.931472028550421e-1f;
  p = p * f + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return x < -87.0f ? 0.0f : p * scale;
}

}  // namespace seqedge
