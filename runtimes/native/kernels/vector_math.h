// Small vector helpers shared by seqedge's kernels: written as plain loops the compiler vectorises, and
// (x86-64 Linux) compiled per CPU generation for the functions marked SEQEDGE_VECTOR_CLONES.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

// The hot loops are compiled once per x86-64 feature level (v4: AVX-512, v3: AVX2 + FMA, and the baseline) and
// picked when a kernel first runs, by CPU features: `select_isa(f_v4, f_v3, f_baseline)`. SEQEDGE_KERNEL_ISA=
// baseline|v3|v4 caps the level, so the tests run every variant against the references. Elsewhere (arm64:
// NEON is the baseline) the three are the same build. (GCC's target_clones("arch=skylake-avx512") tests the CPU
// *model*, so every other model — Ice Lake, Sapphire Rapids, Zen — got the SSE2 build; features it is.)
#if defined(__x86_64__) && defined(__GNUC__)
#define SEQEDGE_TARGET_V4 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi2,f16c")))
#define SEQEDGE_TARGET_V3 __attribute__((target("avx2,fma,bmi2,f16c")))
#else
#define SEQEDGE_TARGET_V4
#define SEQEDGE_TARGET_V3
#endif
#if defined(__GNUC__)
#define SEQEDGE_INLINE inline __attribute__((always_inline))  // compiled into each variant, with its vector width
#else
#define SEQEDGE_INLINE inline
#endif

// One kernel body, three builds: SEQEDGE_ISA_VARIANTS(name, impl, (params), (args)) defines name_v4, name_v3
// and name_baseline, each calling the always-inline `impl` compiled for its level; select_isa picks one. They
// are inline, so a header outside an anonymous namespace (int4_matmul_core.h) can define them too.
#define SEQEDGE_ISA_VARIANTS(NAME, IMPL, PARAMS, ARGS) \
  SEQEDGE_TARGET_V4 inline void NAME##_v4 PARAMS { IMPL ARGS; } \
  SEQEDGE_TARGET_V3 inline void NAME##_v3 PARAMS { IMPL ARGS; } \
  inline void NAME##_baseline PARAMS { IMPL ARGS; }
// The same, with each level's vector width as kWidth inside IMPL (floats a register holds): 16 at v4 (AVX-512), 8
// at v3 (AVX2), 4 in the baseline (SSE2; NEON on arm64), for bodies written over FloatsOf<kWidth>. GCC lowers a
// generic vector wider than the registers through the stack. A template IMPL with other arguments goes in
// parentheses: (attend_tile<64, kWidth>).
#define SEQEDGE_WIDTH_VARIANTS(NAME, IMPL, PARAMS, ARGS) \
  SEQEDGE_TARGET_V4 inline void NAME##_v4 PARAMS { constexpr int kWidth = 16; IMPL ARGS; } \
  SEQEDGE_TARGET_V3 inline void NAME##_v3 PARAMS { constexpr int kWidth = 8; IMPL ARGS; } \
  inline void NAME##_baseline PARAMS { constexpr int kWidth = 4; IMPL ARGS; }

namespace seqedge {

// The feature level the kernels run at: the CPU's best (4, 3 or 0 for the baseline), capped by
// SEQEDGE_KERNEL_ISA. Read once per process.
inline int isa_level() {
  static const int level = [] {
    int best = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    const bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2");
    const bool v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                    __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
    best = v4 ? 4 : v3 ? 3 : 0;
#endif
    const char* want = std::getenv("SEQEDGE_KERNEL_ISA");
    if (want == nullptr || *want == 0) return best;
    const int cap = std::strcmp(want, "v4") == 0 ? 4 : std::strcmp(want, "v3") == 0 ? 3 : 0;
    return std::min(best, cap);
  }();
  return level;
}

template <class Fn>
Fn select_isa(Fn v4, Fn v3, Fn baseline) {
  const int level = isa_level();
  return level >= 4 ? v4 : level >= 3 ? v3 : baseline;
}

// IEEE half precision as stored (uint16_t), for caches kept in float16. Scalar forms, exact for every value
// (subnormals, infinities, NaN; float -> half rounds to nearest even, as torch's .half() does); F16C's
// vcvtph2ps / vcvtps2ph on x86-64 v3 and v4, which give the same values.
inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);  // infinity, NaN
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);  // normal: rebias 15 -> 127
  } else if (man == 0) {
    bits = sign;
  } else {  // subnormal: man * 2^-24, exact in float
    const float f = static_cast<float>(man) * 5.9604644775390625e-8f;
    std::memcpy(&bits, &f, sizeof bits);
    bits |= sign;
  }
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

inline uint16_t float_to_half_bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u);  // infinity, NaN
  if (ax >= 0x477ff000u) return sign | 0x7c00u;                                       // rounds past 65504
  if (ax < 0x38800000u) {  // below 2^-14: a subnormal half (or zero), rounded to nearest even by the FPU
    float a;
    std::memcpy(&a, &ax, sizeof a);
    return sign | static_cast<uint16_t>(std::nearbyint(a * 16777216.0f));  // a / 2^-24
  }
  const uint32_t rounded = ax + 0xfffu + ((ax >> 13) & 1u);  // to nearest even at bit 13
  return sign | static_cast<uint16_t>((rounded - 0x38000000u) >> 13);  // rebias 127 -> 15
}

inline void halves_to_floats_baseline(const uint16_t* h, float* f, int64_t n) {
  for (int64_t i = 0; i < n; ++i) f[i] = half_bits_to_float(h[i]);
}
inline void floats_to_halves_baseline(const float* f, uint16_t* h, int64_t n) {
  for (int64_t i = 0; i < n; ++i) h[i] = float_to_half_bits(f[i]);
}
#if defined(__x86_64__) && defined(__GNUC__)
SEQEDGE_TARGET_V3 inline void halves_to_floats_v3(const uint16_t* h, float* f, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(f + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))));
  for (; i < n; ++i) f[i] = half_bits_to_float(h[i]);
}
SEQEDGE_TARGET_V3 inline void floats_to_halves_v3(const float* f, uint16_t* h, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(h + i), _mm256_cvtps_ph(_mm256_loadu_ps(f + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) h[i] = float_to_half_bits(f[i]);
}
#else
inline void halves_to_floats_v3(const uint16_t* h, float* f, int64_t n) { halves_to_floats_baseline(h, f, n); }
inline void floats_to_halves_v3(const float* f, uint16_t* h, int64_t n) { floats_to_halves_baseline(f, h, n); }
#endif

// h[0, n) as floats into f, and back (the CPU's conversion instructions where the kernels run at v3 or above).
inline void halves_to_floats(const uint16_t* h, float* f, int64_t n) {
  static const auto fn = select_isa(halves_to_floats_v3, halves_to_floats_v3, halves_to_floats_baseline);
  fn(h, f, n);
}
inline void floats_to_halves(const float* f, uint16_t* h, int64_t n) {
  static const auto fn = select_isa(floats_to_halves_v3, floats_to_halves_v3, floats_to_halves_baseline);
  fn(f, h, n);
}

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

// 2^f for |f| <= 1/2 by a degree-6 polynomial (relative error < 2e-7), for a float or a GCC vector of them.
template <class T>
SEQEDGE_INLINE T exp2_fraction(T f) {
  T p = f * 1.535336188319500e-4f + 1.339887440266574e-3f;
  p = p * f + 9.618437357674640e-3f;
  p = p * f + 5.550332471162809e-2f;
  p = p * f + 2.402264791363012e-1f;
  p = p * f + 6.931472028550421e-1f;
  return p * f + 1.0f;
}

// exp(x) for x <= 0 (softmax after subtracting the row maximum), in arithmetic the compiler vectorises
// (std::exp is a scalar libm call, which keeps the softmax loop scalar).
// 2^(x / ln 2) = 2^n * 2^f with n = round(x / ln 2), |f| <= 1/2; 2^f by a degree-6 polynomial (relative
// error < 2e-7); 2^n built in the exponent bits. Below -87 the result is 0 (as expf underflows).
SEQEDGE_INLINE float exp_nonpositive(float x) {
  const float t = std::max(x, -87.0f) * 1.44269504088896341f;
  const float n = std::nearbyint(t);
  const float p = exp2_fraction(t - n);
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return x < -87.0f ? 0.0f : p * scale;
}

// 8 floats as one GCC vector (one AVX2 register; two SSE/NEON), for the functions below, which the loop
// vectoriser leaves scalar inside a kernel's fully unrolled 16-lane loops (wider generic vectors are lowered
// to scalar selects on AVX2). apply16 applies one to 16 lanes as two halves.
typedef float Floats8 __attribute__((vector_size(32)));
typedef int32_t Ints8 __attribute__((vector_size(32)));

SEQEDGE_INLINE Floats8 load8(const float* p) {
  Floats8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
SEQEDGE_INLINE void store8(float* p, Floats8 v) { std::memcpy(p, &v, sizeof v); }
// 16 and 4 floats as GCC vectors, for a kernel that takes its vector width from its build (attention_tile.h):
// 16 fill an AVX-512 register, 4 an SSE or NEON one. FloatsOf<4 | 8 | 16> names each; loadv / storev move one
// from or to memory.
typedef float Floats16 __attribute__((vector_size(64)));
typedef float Floats4 __attribute__((vector_size(16)));
typedef int32_t Ints16 __attribute__((vector_size(64)));
typedef int32_t Ints4 __attribute__((vector_size(16)));
template <int kWidth>
struct FloatsOf;  // type: kWidth floats; ints: as many int32
template <>
struct FloatsOf<4> {
  using type = Floats4;
  using ints = Ints4;
};
template <>
struct FloatsOf<8> {
  using type = Floats8;
  using ints = Ints8;
};
template <>
struct FloatsOf<16> {
  using type = Floats16;
  using ints = Ints16;
};
template <class V>
SEQEDGE_INLINE V loadv(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class V>
SEQEDGE_INLINE void storev(float* p, V v) {
  std::memcpy(p, &v, sizeof v);
}
// The sum of the 8 lanes (three halving steps: shuffles, not a scalar chain).
SEQEDGE_INLINE float sum8(Floats8 v) {
  const Floats4 lo = {v[0], v[1], v[2], v[3]}, hi = {v[4], v[5], v[6], v[7]};
  const Floats4 a = lo + hi;
  const Floats4 b = a + Floats4{a[2], a[3], a[0], a[1]};
  return b[0] + b[1];
}
// 8 cached values as floats, inside a kernel's loop: a float32 row as it is, a float16 row (the bits) widened
// in registers — F16C's vcvtph2ps where kF16C (x86-64's v3 and v4 builds), NEON's fcvtl on arm64 (every arm64
// CPU has it), the exact scalar conversion otherwise.
#if defined(__x86_64__) && defined(__GNUC__)
SEQEDGE_TARGET_V3 inline Floats8 widen8_f16c(const uint16_t* h) {
  const __m256 f = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h)));
  Floats8 v;
  std::memcpy(&v, &f, sizeof v);
  return v;
}
#endif
template <bool kF16C>
SEQEDGE_INLINE Floats8 load8(const float* p) {
  return load8(p);
}
template <bool kF16C>
SEQEDGE_INLINE Floats8 load8(const uint16_t* h) {
  Floats8 v;
#if defined(__aarch64__)
  const uint16x8_t bits = vld1q_u16(h);
  const float32x4_t lo = vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(bits)));
  const float32x4_t hi = vcvt_f32_f16(vreinterpret_f16_u16(vget_high_u16(bits)));
  std::memcpy(&v, &lo, sizeof lo);
  std::memcpy(reinterpret_cast<char*>(&v) + sizeof lo, &hi, sizeof hi);
#else
#if defined(__x86_64__) && defined(__GNUC__)
  if constexpr (kF16C) return widen8_f16c(h);
#endif
  for (int i = 0; i < 8; ++i) v[i] = half_bits_to_float(h[i]);
#endif
  return v;
}
// The same 16 at a time (an AVX-512 register), for kernels whose v4 build steps 16 lanes: a float32 row as it
// is, a float16 row widened by vcvtph2ps (the v4 build only; other builds step 8 lanes).
#if defined(__x86_64__) && defined(__GNUC__)
SEQEDGE_TARGET_V4 inline Floats16 widen16_f16c(const uint16_t* h) {
  const __m512 f = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h)));
  Floats16 v;
  std::memcpy(&v, &f, sizeof v);
  return v;
}
// The lanes a v4 build's kernel steps where it may step 16 (x86-64: one AVX-512 register); 8 elsewhere, where
// "v4" is a name only (arm64 compiles every variant alike and runs the baseline one).
constexpr int kWideLanes = 16;
#else
constexpr int kWideLanes = 8;
#endif
// kWidth (8, or kWideLanes) cached values as floats: load8<kF16C>, or 16 at a time as above.
template <int kWidth, bool kF16C, class C>
SEQEDGE_INLINE typename FloatsOf<kWidth>::type load_lanes(const C* p) {
  static_assert(kWidth == 8 || kWidth == kWideLanes, "16-lane steps are built for x86-64's v4 level only");
  if constexpr (kWidth == 8) {
    return load8<kF16C>(p);
  } else if constexpr (std::is_same_v<C, float>) {
    return loadv<Floats16>(p);
  } else {
#if defined(__x86_64__) && defined(__GNUC__)
    static_assert(kF16C, "16 float16 lanes are widened by AVX-512's vcvtph2ps");
    return widen16_f16c(p);
#endif
  }
}
// The sums of four vectors' lanes, as one vector of 4 (a transposition network: 8 + 4 + 2 + 2 lanes added at
// each stage), where four separate horizontal sums took three shuffles and adds each on a full register.
SEQEDGE_INLINE Floats4 sum_four(Floats8 a0, Floats8 a1, Floats8 a2, Floats8 a3) {
  const Floats8 b0 = __builtin_shufflevector(a0, a1, 0, 1, 2, 3, 8, 9, 10, 11) +
                     __builtin_shufflevector(a0, a1, 4, 5, 6, 7, 12, 13, 14, 15);  // a0 | a1, 4 lanes each
  const Floats8 b1 = __builtin_shufflevector(a2, a3, 0, 1, 2, 3, 8, 9, 10, 11) +
                     __builtin_shufflevector(a2, a3, 4, 5, 6, 7, 12, 13, 14, 15);  // a2 | a3
  const Floats8 c = __builtin_shufflevector(b0, b1, 0, 1, 8, 9, 4, 5, 12, 13) +
                    __builtin_shufflevector(b0, b1, 2, 3, 10, 11, 6, 7, 14, 15);  // a0 a0 a2 a2 a1 a1 a3 a3
  const Floats4 lo = __builtin_shufflevector(c, c, 0, 4, 2, 6), hi = __builtin_shufflevector(c, c, 1, 5, 3, 7);
  return lo + hi;  // a0 a1 a2 a3
}
SEQEDGE_INLINE Floats4 sum_four(Floats16 a0, Floats16 a1, Floats16 a2, Floats16 a3) {
  const Floats16 b0 = __builtin_shufflevector(a0, a1, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
                      __builtin_shufflevector(a0, a1, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  const Floats16 b1 = __builtin_shufflevector(a2, a3, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
                      __builtin_shufflevector(a2, a3, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  // b0: a0 | a1, 8 lanes each; b1: a2 | a3
  const Floats16 c = __builtin_shufflevector(b0, b1, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
                     __builtin_shufflevector(b0, b1, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
  // c: a0 | a1 | a2 | a3, 4 lanes each (one 128-bit lane each)
  const Floats16 d = c + __builtin_shufflevector(c, c, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
  const Floats16 e = d + __builtin_shufflevector(d, d, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
  return __builtin_shufflevector(e, e, 0, 4, 8, 12);
}
SEQEDGE_INLINE float as_float(float x) { return x; }
SEQEDGE_INLINE float as_float(uint16_t h) { return half_bits_to_float(h); }

template <class Fn>
SEQEDGE_INLINE void apply16(float* x, Fn fn) {
  store8(x, fn(load8(x)));
  store8(x + 8, fn(load8(x + 8)));
}

// exp_nonpositive over kWidth lanes: n = round(t) as trunc(t - 1/2) (t <= 0; no add-and-subtract rounding trick,
// which reassociation would fold away).
template <int kWidth, class F = typename FloatsOf<kWidth>::type, class I = typename FloatsOf<kWidth>::ints>
SEQEDGE_INLINE F exp_nonpositive_lanes(F x) {
  const F zero = {}, low = zero - 87.0f;
  const F t = (x < low ? low : x) * 1.44269504088896341f;
  const I ni = __builtin_convertvector(t - 0.5f, I);
  const F p = exp2_fraction(t - __builtin_convertvector(ni, F));
  const I bits = (ni + 127) << 23;
  F scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return x < low ? zero : p * scale;
}
SEQEDGE_INLINE Floats8 exp_nonpositive8(Floats8 x) { return exp_nonpositive_lanes<8>(x); }

// log(1 + e) for e in [0, 1]: 2·atanh(s) with s = e / (2 + e) in [0, 1/3], by its odd series to s^17
// (truncation < 4e-10 at s = 1/3); exact to float rounding for tiny e, where log1p(e) = e.
SEQEDGE_INLINE Floats8 log1p_unit8(Floats8 e) {
  const Floats8 s = e / (2.0f + e), s2 = s * s;
  Floats8 p = s2 * (1.0f / 17) + 1.0f / 15;
  p = p * s2 + 1.0f / 13;
  p = p * s2 + 1.0f / 11;
  p = p * s2 + 1.0f / 9;
  p = p * s2 + 1.0f / 7;
  p = p * s2 + 1.0f / 5;
  p = p * s2 + 1.0f / 3;
  p = p * s2 + 1.0f;
  return 2.0f * s * p;
}

// softplus(x) = log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), as torch computes it (above 20 torch returns
// x; here log1p(exp(-20)) = 2e-9 is below x's rounding there, so the two agree).
SEQEDGE_INLINE Floats8 softplus8(Floats8 x) {
  const Floats8 zero = {};
  const Floats8 a = x < zero ? -x : x;
  return (x > zero ? x : zero) + log1p_unit8(exp_nonpositive8(-a));
}

// silu(x) = x · sigmoid(x), with exp only of non-positive arguments (no overflow for either sign).
SEQEDGE_INLINE Floats8 silu8(Floats8 x) {
  const Floats8 zero = {}, one = zero + 1.0f;
  const Floats8 e = exp_nonpositive8(x < zero ? x : -x);
  return x * (x < zero ? e : one) / (one + e);
}

}  // namespace seqedge
