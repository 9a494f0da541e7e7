// seqedge's int4 matmul: y (M, N) = a (M, K) @ dequant(w)^T, with w in 4-bit codes and one float16 scale per
// block of 32 along K, and the activations quantized to int8 per block of 32 as they arrive (the dot products
// then run in 8-bit integers: VNNI's vpdpbusd on AVX-512, vpmaddubsw on AVX2). The reference is
// seqedge/ops/int4_matmul (int4_matmul_ref); onnxruntime runs it as seqedge.Int4MatMul (ort_kernels.cpp).
//
// The weight codes are onnxruntime MatMulNBits' (symmetric, zero point 8): row n, block b, byte j holds
// w[n, 32b + 2j] in its low nibble and w[n, 32b + 2j + 1] in its high one, so a graph's MatMulNBits initializers
// are read as they are — or the same bytes in groups of 16 rows (`interleaved`, "The interleaved layout" below),
// which the exporters store where N is a multiple of 16: decode's fastest form. Per weight that is 16 bytes + a
// 2-byte scale per 32, 0.5625 bytes (llama.cpp's Q4_0); MatMulNBits' int8 compute reads 0.75 (a float scale and a
// float block sum besides).
//
// The kernels walk K in chunks of 128 (four blocks: 64 bytes of codes, one AVX-512 load); the low nibbles of a
// chunk are the even positions of its four blocks, the high ones the odd positions. quantize_row writes each
// activation row in that order — per chunk 64 codes for the even positions, then 64 for the odd — so one
// 32-bit lane of a dot product sums 4 + 4 products of one block. The zero point is taken out once per block
// instead of per product: sum (w - 8) a = sum w a - 8 sum a, and the second term, times the activation scale,
// is `cb` (one float per block), so a row subtracts sum_b scale_w[b] cb[b] — one FMA per 16 blocks.
//
// That layout serves decode, which streams each weight row once for one activation row. A prompt of 16 rows or
// more (x86 with VNNI; 4 or more on AVX2, with vpmaddubsw) takes the prompt kernel instead: each work item's weight rows are unpacked into L1 with
// 16 rows side by side (one 32-bit lane per row, four codes of K each), the activations are quantized in K
// order, and every activation row is multiplied against the item with one broadcast per four codes — a block's
// integer sums are scaled once per 8 vpdpbusd instead of once per 2 (llama-135m int4's projections at T = 256 on
// 2 threads: 234-278 -> 125-149 ms).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "vector_math.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SEQEDGE_INT4_X86 1
#define SEQEDGE_TARGET_VNNI __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx512vnni,avx2,fma,f16c")))
#endif

namespace seqedge::int4_core {

constexpr int64_t kBlock = 32;   // weights per scale
constexpr int64_t kChunk = 128;  // weights per step of the kernels (four blocks)
constexpr int64_t kRows = 4;     // weight rows one pass over an activation row computes
// The rows' float16 scales are a stream of their own, 1/8 of the codes' bytes: prefetched as far ahead as the codes
// are (8 KB of codes). Unprefetched, the step's scale loads stalled: in perf's profile of a mamba-130m onnxruntime
// decode step, ~40 % of the decode kernel's samples sat on the instructions after them.
constexpr int64_t kScalesAhead = 8192 / 8;
constexpr int64_t kTileRows = 4; // activation rows one pass of a prompt's tile computes (x86 VNNI)
constexpr int64_t kWideTileRows = 8;  // ... and of a wide tile, where 8 rows remain (each chunk unpacked half as often)

inline int64_t blocks(int64_t K) { return (K + kBlock - 1) / kBlock; }  // the last one zero-padded
inline int64_t chunks(int64_t K) { return (K + kChunk - 1) / kChunk; }
inline int64_t padded_blocks(int64_t K) { return (chunks(K) + 3) / 4 * 16; }  // blocks, rounded up to 16

struct MatMul {
  const float* a;          // (M, K) activations
  const uint8_t* w;        // (N, ceil(K / 32) * 16) codes, MatMulNBits' order (a partial last block padded)
  const uint16_t* scales;  // (N, ceil(K / 32)) float16 bits
  float* y;                // (M, N)
  int64_t M, N, K;
  float* glu = nullptr;    // SwiGLU: when set, (M, N / 2) = silu(y[:, :N/2]) * y[:, N/2:] (y is then scratch)
  bool natural = false;    // the activation codes in K order, for the prompt kernel (use_prompt_kernel)
  bool interleaved = false;  // w and scales in groups of 16 rows (the interleaved layout below; N a multiple of 16)
  // scratch filled by quantize_row, per activation row (C = chunks(K); zero past K):
  int8_t* qa;  // (M, C * 128) codes: per chunk the even positions of its blocks, then the odd ones (natural: K order)
  float* da;   // (M, B)       block scales (max |a| / 127); B = padded_blocks(K)
  float* cb;   // (M, B)       8 x the block's code sum x its scale: the zero point's share
};

// Bytes of scratch M rows of K need (qa, da, cb in that order; each part a multiple of 64 bytes).
inline int64_t scratch_bytes(int64_t M, int64_t K) { return M * (chunks(K) * kChunk + 2 * 4 * padded_blocks(K)); }

inline void place_scratch(MatMul& p, void* scratch) {
  auto* base = static_cast<uint8_t*>(scratch);
  p.qa = reinterpret_cast<int8_t*>(base);
  p.da = reinterpret_cast<float*>(base + p.M * chunks(p.K) * kChunk);
  p.cb = p.da + p.M * padded_blocks(p.K);
}

// What is wrong with K and N for this kernel, or nullptr.
inline const char* shape_error(int64_t K, int64_t N) {
  if (K <= 0) return "K (the last dimension of A) must be positive";
  if (N <= 0) return "N (rows of B) must be positive";
  return nullptr;
}

// The bytes a block of codes takes in the last dimension of B: 16 (MatMulNBits' rows) or 256 (groups of 16 rows,
// the interleaved layout below).
constexpr int64_t kRowBlockBytes = 16, kGroupBlockBytes = 256;

inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);  // inf, NaN
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    exp = 113;
    while ((man & 0x400u) == 0) {
      man <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Activation row m's input and scratch, the block scales past its chunks zeroed.
struct RowScratch {
  const float* a;
  int8_t* q;
  float *da, *cb;
  int64_t C;
};
inline RowScratch row_scratch(const MatMul& p, int64_t m) {
  const int64_t C = chunks(p.K), B = padded_blocks(p.K);
  RowScratch r{p.a + m * p.K, p.qa + m * C * kChunk, p.da + m * B, p.cb + m * B, C};
  std::fill(r.da + 4 * C, r.da + B, 0.f);
  std::fill(r.cb + 4 * C, r.cb + B, 0.f);
  return r;
}

// Activation row m as int8 blocks, in the chunk order above (natural: in K order). The portable form; x86 takes
// quantize_row_vnni (AVX-512) or quantize_row_avx2, the same arithmetic a block at a time.
SEQEDGE_INLINE void quantize_row_portable(const MatMul& p, int64_t m) {
  const auto [a, q, da, cb, C] = row_scratch(p, m);
  for (int64_t c = 0; c < C; ++c) {
    int8_t* lo = q + c * kChunk;  // even positions of the chunk's blocks, 16 per block
    int8_t* hi = lo + 64;         // odd positions
    for (int64_t b = 0; b < 4; ++b) {
      const int64_t base = (4 * c + b) * kBlock;
      if (base >= p.K) {
        std::memset(p.natural ? q + base : lo + 16 * b, 0, p.natural ? 32 : 16);
        if (!p.natural) std::memset(hi + 16 * b, 0, 16);
        da[4 * c + b] = cb[4 * c + b] = 0.f;
        continue;
      }
      float x[kBlock] = {};  // a partial last block is zero-padded
      std::copy(a + base, a + std::min(base + kBlock, p.K), x);
      float amax = 0.f;
      for (int64_t j = 0; j < kBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
      const float inv = amax > 0.f ? 127.f / amax : 0.f;
      da[4 * c + b] = amax / 127.f;
      int32_t sum = 0;
      for (int64_t j = 0; j < 16; ++j) {
        const int8_t even = static_cast<int8_t>(std::nearbyint(x[2 * j] * inv));
        const int8_t odd = static_cast<int8_t>(std::nearbyint(x[2 * j + 1] * inv));
        if (p.natural) {
          q[base + 2 * j] = even;
          q[base + 2 * j + 1] = odd;
        } else {
          lo[16 * b + j] = even;
          hi[16 * b + j] = odd;
        }
        sum += even + odd;
      }
      cb[4 * c + b] = static_cast<float>(8 * sum) * da[4 * c + b];
    }
  }
}

#ifdef SEQEDGE_INT4_X86
// quantize_row_portable, vectorised: per block max |a|, the codes rounded to nearest even (as nearbyint, which
// the baseline build calls out of libm: ~2 us per 576-wide row, 121 rows per llama-135m token), their sum.
SEQEDGE_TARGET_VNNI inline void quantize_row_vnni(const MatMul& p, int64_t m) {
  const auto [a, q, da, cb, C] = row_scratch(p, m);
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  for (int64_t blk = 0; blk < 4 * C; ++blk) {
    const int64_t base = blk * kBlock, c = blk / 4, b = blk % 4;
    const int64_t left = std::max<int64_t>(0, std::min<int64_t>(kBlock, p.K - base));
    const __mmask16 m0 = static_cast<__mmask16>(left >= 16 ? 0xffff : (1u << left) - 1);
    const __mmask16 m1 = static_cast<__mmask16>(left >= 32 ? 0xffff : left <= 16 ? 0 : (1u << (left - 16)) - 1);
    const __m512 x0 = _mm512_maskz_loadu_ps(m0, a + base), x1 = _mm512_maskz_loadu_ps(m1, a + base + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1)));
    const float inv = amax > 0.f ? 127.f / amax : 0.f;
    const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(x0, _mm512_set1_ps(inv)));  // round to nearest even
    const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(x1, _mm512_set1_ps(inv)));
    da[blk] = amax / 127.f;
    cb[blk] = static_cast<float>(8 * _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1))) * da[blk];
    if (p.natural) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + base), _mm512_cvtsepi32_epi8(q0));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + base + 16), _mm512_cvtsepi32_epi8(q1));
    } else {
      int8_t* lo = q + c * kChunk + 16 * b;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(lo), _mm512_cvtsepi32_epi8(_mm512_permutex2var_epi32(q0, even, q1)));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(lo + 64), _mm512_cvtsepi32_epi8(_mm512_permutex2var_epi32(q0, odd, q1)));
    }
  }
}

// The same on AVX2: a block is four registers of 8 floats (a partial block copied into a zero-padded one first),
// packed to 32 codes in K order (two saturating packs and a permute); the chunk order then splits them into even
// and odd positions with one byte shuffle per 128-bit lane and a 64-bit permute.
SEQEDGE_TARGET_V3 inline void quantize_row_avx2(const MatMul& p, int64_t m) {
  const auto [a, q, da, cb, C] = row_scratch(p, m);
  const __m256 sign = _mm256_set1_ps(-0.f);
  const __m256i in_order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const __m256i evens_first = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
                                               0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
  for (int64_t blk = 0; blk < 4 * C; ++blk) {
    const int64_t base = blk * kBlock, c = blk / 4, b = blk % 4;
    const int64_t left = std::max<int64_t>(0, std::min<int64_t>(kBlock, p.K - base));
    alignas(32) float padded[kBlock] = {};
    const float* x = a + base;
    if (left < kBlock) {
      std::copy(a + base, a + base + left, padded);
      x = padded;
    }
    __m256 v[4];
    __m256 amax8 = _mm256_setzero_ps();
    for (int k = 0; k < 4; ++k) {
      v[k] = _mm256_loadu_ps(x + 8 * k);
      amax8 = _mm256_max_ps(amax8, _mm256_andnot_ps(sign, v[k]));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax8), _mm256_extractf128_ps(amax8, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    const float amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
    const __m256 inv = _mm256_set1_ps(amax > 0.f ? 127.f / amax : 0.f);
    __m256i qi[4];
    for (int k = 0; k < 4; ++k) qi[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], inv));  // round to nearest even
    const __m256i sum8 = _mm256_add_epi32(_mm256_add_epi32(qi[0], qi[1]), _mm256_add_epi32(qi[2], qi[3]));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum8), _mm256_extracti128_si256(sum8, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
    da[blk] = amax / 127.f;
    cb[blk] = static_cast<float>(8 * _mm_cvtsi128_si32(s4)) * da[blk];
    const __m256i codes = _mm256_permutevar8x32_epi32(
        _mm256_packs_epi16(_mm256_packs_epi32(qi[0], qi[1]), _mm256_packs_epi32(qi[2], qi[3])), in_order);
    if (p.natural) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + base), codes);
    } else {
      const __m256i split = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(codes, evens_first), 0xd8);
      int8_t* lo = q + c * kChunk + 16 * b;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(lo), _mm256_castsi256_si128(split));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(lo + 64), _mm256_extracti128_si256(split, 1));
    }
  }
}
#endif

// The VNNI kernels run: AVX-512 at the level the kernels may use (SEQEDGE_KERNEL_ISA) and VNNI. Read once.
inline bool vnni() {
#ifdef SEQEDGE_INT4_X86
  static const bool yes = isa_level() >= 4 && __builtin_cpu_supports("avx512vnni");
  return yes;
#else
  return false;
#endif
}

inline void quantize_row(const MatMul& p, int64_t m) {
#ifdef SEQEDGE_INT4_X86
  if (vnni()) return quantize_row_vnni(p, m);
  if (isa_level() >= 3) return quantize_row_avx2(p, m);
#endif
  quantize_row_portable(p, m);
}

// y[m, n0 .. n0 + rows) — the portable path: exact integer block sums, then the scales.
SEQEDGE_INLINE void rows_portable(const MatMul& p, int64_t m, int64_t n0, int64_t rows) {
  const int64_t C = chunks(p.K), nb = blocks(p.K);
  const int8_t* q = p.qa + m * C * kChunk;
  const float* da = p.da + m * padded_blocks(p.K);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t n = n0 + r;
    const uint8_t* w = p.w + n * (blocks(p.K) * 16);
    const uint16_t* s = p.scales + n * nb;
    float acc = 0.f;
    for (int64_t b = 0; b < nb; ++b) {
      const int8_t* lo = q + (b / 4) * kChunk + (b % 4) * 16;
      const int8_t* hi = lo + 64;
      int32_t dot = 0;
      for (int64_t j = 0; j < 16; ++j)
        dot += ((w[16 * b + j] & 15) - 8) * lo[j] + ((w[16 * b + j] >> 4) - 8) * hi[j];
      acc += half_to_float(s[b]) * da[b] * static_cast<float>(dot);
    }
    p.y[m * p.N + n] = acc;
  }
}

#ifdef SEQEDGE_INT4_X86
// The dot products of one half chunk (blocks b, b + 1 of a row: 32 bytes of codes at `at`, of which the second
// block's 16 may be past the row: `both` false) against the activation codes of those blocks (`alo`: the low
// nibbles' partners, `ahi`: the high ones'), as floats: lanes 0-3 sum to block b's, 4-7 to block b + 1's.
SEQEDGE_TARGET_V3 SEQEDGE_INLINE __m256 half_dot_avx2(const uint8_t* at, bool both, __m256i alo, __m256i ahi) {
  const __m256i low = _mm256_set1_epi8(0x0f);
  const __m256i wv = both ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(at))
                          : _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(at)));
  const __m256i wl = _mm256_and_si256(wv, low), wh = _mm256_and_si256(_mm256_srli_epi16(wv, 4), low);
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(
      _mm256_add_epi16(_mm256_maddubs_epi16(wl, alo), _mm256_maddubs_epi16(wh, ahi)), _mm256_set1_epi16(1)));
}

// AVX2: each chunk as two halves of 32 bytes (two blocks); u8 x s8 pairs by vpmaddubsw (|sum| <= 2 * 15 * 127
// per pair, twice: fits int16), then pairs of pairs by vpmaddwd into 8 lanes of 4 + 4 products (lanes 0-3 the
// half's first block, 4-7 its second); R rows share each activation load. Whole groups of 16 blocks take their
// scales 16 at a time (two registers of float16 widened, times the activation's) with the zero point's share of
// those blocks; the blocks after the last whole group (nb % 16) take theirs two at a time. The codes of whole
// groups are prefetched 8 KB ahead into L2, as group_vnni does.
template <int64_t R>
SEQEDGE_TARGET_V3 SEQEDGE_INLINE void group_avx2(const MatMul& p, int64_t m, int64_t n0) {
  const int64_t C = chunks(p.K), nb = blocks(p.K), row_bytes = nb * 16, whole = nb / 16 * 16;
  const int8_t* q = p.qa + m * C * kChunk;
  const float* da = p.da + m * padded_blocks(p.K);
  const float* cb = p.cb + m * padded_blocks(p.K);
  const __m256i pair = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);  // lane -> its block of the half
  const uint8_t* w = p.w + n0 * row_bytes;
  const uint16_t* s = p.scales + n0 * nb;
  __m256 acc[R];
  for (int64_t r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t g = 0; g < whole; g += 16) {  // 16 blocks: their scales in two registers per row
    const __m256 da0 = _mm256_loadu_ps(da + g), da1 = _mm256_loadu_ps(da + g + 8);
    const __m256 cb0 = _mm256_loadu_ps(cb + g), cb1 = _mm256_loadu_ps(cb + g + 8);
    __m256 s16[R][2];
    for (int64_t r = 0; r < R; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(s + r * nb + g) + kScalesAhead, _MM_HINT_T1);
      const __m256i halves = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + r * nb + g));
      const __m256 sw0 = _mm256_cvtph_ps(_mm256_castsi256_si128(halves));
      const __m256 sw1 = _mm256_cvtph_ps(_mm256_extracti128_si256(halves, 1));
      acc[r] = _mm256_fnmadd_ps(sw1, cb1, _mm256_fnmadd_ps(sw0, cb0, acc[r]));  // the zero point's share
      s16[r][0] = _mm256_mul_ps(sw0, da0);
      s16[r][1] = _mm256_mul_ps(sw1, da1);
    }
#pragma GCC unroll 8
    for (int64_t k = 0; k < 8; ++k) {  // blocks b = g + 2k, b + 1
      const int64_t b = g + 2 * k;
      const int8_t* qb = q + (b / 4) * kChunk + 16 * (b % 4);
      const __m256i alo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qb));
      const __m256i ahi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qb + 64));
      const __m256i lanes = _mm256_add_epi32(pair, _mm256_set1_epi32(static_cast<int>(2 * (k % 4))));
      for (int64_t r = 0; r < R; ++r) {
        const uint8_t* at = w + r * row_bytes + 16 * b;
        if (k % 2 == 0) _mm_prefetch(reinterpret_cast<const char*>(at + 8192), _MM_HINT_T1);  // a line a chunk
        acc[r] = _mm256_fmadd_ps(half_dot_avx2(at, true, alo, ahi), _mm256_permutevar8x32_ps(s16[r][k / 4], lanes),
                                 acc[r]);
      }
    }
  }
  __m128 zero_point[R];
  for (int64_t r = 0; r < R; ++r) zero_point[r] = _mm_setzero_ps();
  for (int64_t b = whole; b < nb; b += 2) {  // the rest, two blocks at a time (da and cb are padded past nb)
    const bool both = b + 1 < nb;
    const int8_t* qb = q + (b / 4) * kChunk + 16 * (b % 4);
    const __m256i alo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qb));
    const __m256i ahi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qb + 64));
    const __m128 da2 = _mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(da + b)));
    const __m128 cb2 = _mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(cb + b)));
    for (int64_t r = 0; r < R; ++r) {
      const uint32_t bits = s[r * nb + b] | (both ? static_cast<uint32_t>(s[r * nb + b + 1]) << 16 : 0u);
      const __m128 sw = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(bits)));  // the two weight scales, 0, 0
      zero_point[r] = _mm_fmadd_ps(sw, cb2, zero_point[r]);
      const __m256 scale = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_mul_ps(sw, da2)), pair);
      acc[r] = _mm256_fmadd_ps(half_dot_avx2(w + r * row_bytes + 16 * b, both, alo, ahi), scale, acc[r]);
    }
  }
  for (int64_t r = 0; r < R; ++r) {
    const __m128 h4 = _mm_sub_ps(_mm_add_ps(_mm256_castps256_ps128(acc[r]), _mm256_extractf128_ps(acc[r], 1)),
                                 zero_point[r]);
    const __m128 h2 = _mm_add_ps(h4, _mm_movehl_ps(h4, h4));
    p.y[m * p.N + n0 + r] = _mm_cvtss_f32(_mm_add_ss(h2, _mm_movehdup_ps(h2)));
  }
}

// Weight rows per pass of group_avx2: more rows share the activation loads, but their accumulators and scales
// then spill (llama-135m's 121 projections at one activation row, 2 threads of a Zen 3: 3.3-3.9 ms at 1 row a
// pass, 3.4-4.1 at 2, 4.3-7.4 at 4).
constexpr int64_t kRowsAvx2 = 1;

SEQEDGE_TARGET_V3 inline void rows_avx2(const MatMul& p, int64_t m, int64_t n0, int64_t rows) {
  int64_t r = 0;
  for (; r + kRowsAvx2 <= rows; r += kRowsAvx2) group_avx2<kRowsAvx2>(p, m, n0 + r);
  for (; r < rows; ++r) group_avx2<1>(p, m, n0 + r);
}

// AVX-512 VNNI: a chunk is one 64-byte load per row; R rows share each activation load. The codes are
// prefetched 8 KB ahead, into L2 (_MM_HINT_T1): a row of a small K is only a few cache lines, too short a
// stream for the hardware prefetcher to find.
template <int64_t R>
SEQEDGE_TARGET_VNNI SEQEDGE_INLINE void group_vnni(const MatMul& p, int64_t m, int64_t n0) {
  const int64_t C = chunks(p.K), nb = blocks(p.K), row_bytes = blocks(p.K) * 16;
  const int8_t* q = p.qa + m * C * kChunk;
  const float* da = p.da + m * padded_blocks(p.K);
  const float* cb = p.cb + m * padded_blocks(p.K);
  const __m512i low = _mm512_set1_epi8(0x0f);
  const uint8_t* w = p.w + n0 * row_bytes;
  const uint16_t* s = p.scales + n0 * nb;
  __m512 acc[R];
  for (int64_t r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < C; g += 4) {  // 16 blocks: their scales in one vector per row
    const int64_t blocks16 = std::min<int64_t>(16, nb - 4 * g);
    const __mmask16 scale_lanes = static_cast<__mmask16>((1u << blocks16) - 1);
    const __m512 da16 = _mm512_loadu_ps(da + 4 * g), cb16 = _mm512_loadu_ps(cb + 4 * g);
    __m512 s16[R];
    for (int64_t r = 0; r < R; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(s + r * nb + 4 * g) + kScalesAhead, _MM_HINT_T1);
      const __m512 sw = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(scale_lanes, s + r * nb + 4 * g));
      acc[r] = _mm512_fnmadd_ps(sw, cb16, acc[r]);  // the zero point's share of these blocks
      s16[r] = _mm512_mul_ps(sw, da16);
    }
    for (int64_t c = g; c < std::min(C, g + 4); ++c) {
      const int64_t blocks = std::min<int64_t>(4, nb - 4 * c);
      const __mmask64 bytes = blocks == 4 ? ~__mmask64{0} : (__mmask64{1} << (16 * blocks)) - 1;
      const __m512i alo = _mm512_loadu_si512(q + c * kChunk), ahi = _mm512_loadu_si512(q + c * kChunk + 64);
      // lane l of a dot product is block 4 (c - g) + l / 4 of the 16
      const __m512i quads = _mm512_add_epi32(_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                                             _mm512_set1_epi32(static_cast<int>(4 * (c - g))));
      for (int64_t r = 0; r < R; ++r) {
        _mm_prefetch(reinterpret_cast<const char*>(w + r * row_bytes + 64 * c + 8192), _MM_HINT_T1);
        const __m512i wv = _mm512_maskz_loadu_epi8(bytes, w + r * row_bytes + 64 * c);
        const __m512i wl = _mm512_and_si512(wv, low), wh = _mm512_and_si512(_mm512_srli_epi16(wv, 4), low);
        const __m512i dot = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), wl, alo), wh, ahi);
        acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_permutexvar_ps(quads, s16[r]), acc[r]);
      }
    }
  }
  for (int64_t r = 0; r < R; ++r) p.y[m * p.N + n0 + r] = _mm512_reduce_add_ps(acc[r]);
}

// A prompt: kTileRows activation rows x R weight rows per pass, so each chunk of codes is unpacked once for all
// the activation rows (decode's path unpacks it per row).
template <int64_t MR, int64_t R>
SEQEDGE_TARGET_VNNI SEQEDGE_INLINE void tile_vnni(const MatMul& p, int64_t m0, int64_t n0) {
  const int64_t C = chunks(p.K), nb = blocks(p.K), row_bytes = blocks(p.K) * 16, B = padded_blocks(p.K);
  const __m512i low = _mm512_set1_epi8(0x0f);
  const uint8_t* w = p.w + n0 * row_bytes;
  const uint16_t* s = p.scales + n0 * nb;
  __m512 acc[MR][R];
  for (int64_t i = 0; i < MR; ++i)
    for (int64_t r = 0; r < R; ++r) acc[i][r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < C; g += 4) {
    const int64_t blocks16 = std::min<int64_t>(16, nb - 4 * g);
    const __mmask16 scale_lanes = static_cast<__mmask16>((1u << blocks16) - 1);
    __m512 s16[MR][R];
    for (int64_t r = 0; r < R; ++r) {
      const __m512 sw = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(scale_lanes, s + r * nb + 4 * g));
      for (int64_t i = 0; i < MR; ++i) {
        const int64_t m = m0 + i;
        acc[i][r] = _mm512_fnmadd_ps(sw, _mm512_loadu_ps(p.cb + m * B + 4 * g), acc[i][r]);
        s16[i][r] = _mm512_mul_ps(sw, _mm512_loadu_ps(p.da + m * B + 4 * g));
      }
    }
    for (int64_t c = g; c < std::min(C, g + 4); ++c) {
      const int64_t blocks = std::min<int64_t>(4, nb - 4 * c);
      const __mmask64 bytes = blocks == 4 ? ~__mmask64{0} : (__mmask64{1} << (16 * blocks)) - 1;
      const __m512i quads = _mm512_add_epi32(_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                                             _mm512_set1_epi32(static_cast<int>(4 * (c - g))));
      for (int64_t r = 0; r < R; ++r) {
        const __m512i wv = _mm512_maskz_loadu_epi8(bytes, w + r * row_bytes + 64 * c);
        const __m512i wl = _mm512_and_si512(wv, low), wh = _mm512_and_si512(_mm512_srli_epi16(wv, 4), low);
        for (int64_t i = 0; i < MR; ++i) {
          const int8_t* q = p.qa + (m0 + i) * C * kChunk + c * kChunk;
          const __m512i dot = _mm512_dpbusd_epi32(
              _mm512_dpbusd_epi32(_mm512_setzero_si512(), wl, _mm512_loadu_si512(q)), wh, _mm512_loadu_si512(q + 64));
          acc[i][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_permutexvar_ps(quads, s16[i][r]), acc[i][r]);
        }
      }
    }
  }
  for (int64_t i = 0; i < MR; ++i)
    for (int64_t r = 0; r < R; ++r) p.y[(m0 + i) * p.N + n0 + r] = _mm512_reduce_add_ps(acc[i][r]);
}

SEQEDGE_TARGET_VNNI inline void tiles_vnni(const MatMul& p, int64_t m0, int64_t n0, int64_t rows) {
  int64_t r = 0;
  for (; r + 2 <= rows; r += 2) tile_vnni<kTileRows, 2>(p, m0, n0 + r);
  for (; r < rows; ++r) tile_vnni<kTileRows, 1>(p, m0, n0 + r);
}

// kWideTileRows activation rows per pass, one weight row at a time (their sums fill the registers R = 2 used).
SEQEDGE_TARGET_VNNI inline void wide_tiles_vnni(const MatMul& p, int64_t m0, int64_t n0, int64_t rows) {
  for (int64_t r = 0; r < rows; ++r) tile_vnni<kWideTileRows, 1>(p, m0, n0 + r);
}

SEQEDGE_TARGET_VNNI inline void rows_vnni(const MatMul& p, int64_t m, int64_t n0, int64_t rows) {
  int64_t r = 0;
  for (; r + kRows <= rows; r += kRows) group_vnni<kRows>(p, m, n0 + r);
  for (; r < rows; ++r) group_vnni<1>(p, m, n0 + r);
}

// A prompt's kernel: the 16 output rows of a work item, unpacked once into `packed` (one byte per code) and
// interleaved the way vpdpbusd wants them — per block of 32 and step of 4 codes, 64 bytes holding those 4 codes
// of each of the 16 rows (lane n: row n0 + n) — with the rows' scales per block side by side (16 floats). Each
// activation row (codes in K order) then feeds all 16 rows with one broadcast per step of 4 codes, and a block's
// 8 steps of integer sums are scaled once: kPromptRows activation rows share every weight load, their integer
// and float sums in registers. (The row-by-row tiles above convert every 128 codes, per activation row and
// weight row pair: llama-135m int4 prefill ran ~870 tok/s at T = 256 on 2 threads that way.)
constexpr int64_t kPromptRows = 6;  // activation rows per pass of the prompt kernel (x 32 rows: 24 sums in registers)
constexpr int64_t kLanes = 16;      // output rows per work item, one per 32-bit lane

struct PackedRows {
  uint8_t* codes;  // (nb, 8, 16, 4): block, step, row, code; 64-byte aligned
  float* scales;               // (nb, 16)
};

// One block of the 16 rows: their 16 bytes each (4 rows to a register, one row to a 128-bit lane; rows past
// `count` zero) become 8 steps of 16 rows x 4 codes. Per lane the nibbles are interleaved into the row's 32 codes
// in order (steps 0-3 from the low 8 bytes, 4-7 from the high 8); a permute inside each register groups the
// 4 rows' dwords by step, and two rounds of 128-bit shuffles across the 4 registers gather each step's 16 rows.
SEQEDGE_TARGET_VNNI inline void pack_block(const uint8_t* first, int64_t row_bytes, int64_t count, uint8_t* dst) {
  const __m512i low = _mm512_set1_epi8(0x0f);
  const __m512i by_step = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  __m512i half[2][4];  // [steps 0-3 | 4-7][rows 4k .. 4k + 3], dwords grouped by step
  for (int64_t k = 0; k < 4; ++k) {
    __m512i x = _mm512_setzero_si512();
    for (int64_t i = 0; i < 4; ++i) {
      const int64_t r = 4 * k + i;
      if (r < count)
        x = _mm512_inserti32x4(x, _mm_loadu_si128(reinterpret_cast<const __m128i*>(first + r * row_bytes)),
                               static_cast<int>(i));
    }
    const __m512i lo = _mm512_and_si512(x, low), hi = _mm512_and_si512(_mm512_srli_epi16(x, 4), low);
    half[0][k] = _mm512_permutexvar_epi32(by_step, _mm512_unpacklo_epi8(lo, hi));
    half[1][k] = _mm512_permutexvar_epi32(by_step, _mm512_unpackhi_epi8(lo, hi));
  }
  for (int64_t h = 0; h < 2; ++h) {
    const __m512i* P = half[h];
    const __m512i u0 = _mm512_shuffle_i32x4(P[0], P[1], 0x44), u1 = _mm512_shuffle_i32x4(P[2], P[3], 0x44);
    const __m512i v0 = _mm512_shuffle_i32x4(P[0], P[1], 0xee), v1 = _mm512_shuffle_i32x4(P[2], P[3], 0xee);
    uint8_t* out = dst + 4 * h * kLanes * 4;  // steps 4h .. 4h + 3
    _mm512_store_si512(out, _mm512_shuffle_i32x4(u0, u1, 0x88));
    _mm512_store_si512(out + 64, _mm512_shuffle_i32x4(u0, u1, 0xdd));
    _mm512_store_si512(out + 128, _mm512_shuffle_i32x4(v0, v1, 0x88));
    _mm512_store_si512(out + 192, _mm512_shuffle_i32x4(v0, v1, 0xdd));
  }
}

// How far ahead (bytes) pack_rows prefetches each of its 16 rows: the rows are 16 streams, more than the hardware
// prefetcher follows at once.
constexpr int64_t kPackAhead = 256;

// 16 float16 scales (bits) widened into `out`.
SEQEDGE_TARGET_VNNI inline void widen16_vnni(const uint16_t* bits, float* out) {
  _mm512_storeu_ps(out, _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(bits))));
}

// The `count` rows from n0 into `out`, a block at a time (PackBlock: pack_block or pack_block_avx2; Widen:
// widen16_vnni or widen16_avx2), flattened into a caller of their feature level (pack_rows, pack_rows_avx2).
template <void (*PackBlock)(const uint8_t*, int64_t, int64_t, uint8_t*), void (*Widen)(const uint16_t*, float*)>
inline void pack_rows_with(const MatMul& p, int64_t n0, int64_t count, const PackedRows& out) {
  const int64_t nb = blocks(p.K), row_bytes = nb * 16;
  const uint8_t* w = p.w + n0 * row_bytes;
  for (int64_t b = 0; b < nb; ++b) {
    if (16 * b + kPackAhead < row_bytes && b % 4 == 0)
      for (int64_t r = 0; r < count; ++r)
        _mm_prefetch(reinterpret_cast<const char*>(w + r * row_bytes + 16 * b + kPackAhead), _MM_HINT_T0);
    PackBlock(w + 16 * b, row_bytes, count, out.codes + b * 8 * kLanes * 4);
    alignas(32) uint16_t bits[kLanes] = {};  // past N: scale 0, never stored
    for (int64_t r = 0; r < count; ++r) bits[r] = p.scales[(n0 + r) * nb + b];
    Widen(bits, out.scales + b * kLanes);
  }
}

SEQEDGE_TARGET_VNNI __attribute__((flatten)) inline void pack_rows(const MatMul& p, int64_t n0, int64_t count,
                                                                   const PackedRows& out) {
  pack_rows_with<pack_block, widen16_vnni>(p, n0, count, out);
}

// y[m0 .. m0 + MR) at two groups of up to 16 rows (g.n0[v], g.count[v]: a matmul's next 32 rows, or a SwiGLU's
// 16 gate rows and their 16 up rows) from their packed codes: each broadcast of 4 activation codes feeds both.
// Per block: sum_k code * a in integers (the codes unsigned, 0..15), then y += scale_w * (da * sum - cb): the
// zero point 8 comes out through cb.
struct Groups {
  PackedRows w[2];
  int64_t n0[2], count[2];
};

template <int64_t MR>
SEQEDGE_TARGET_VNNI SEQEDGE_INLINE void prompt_tile_vnni(const MatMul& p, const Groups& g, int64_t m0) {
  const int64_t nb = blocks(p.K), row = chunks(p.K) * kChunk, B = padded_blocks(p.K);
  __m512 acc[MR][2];
  for (int64_t i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    __m512i dot[MR][2];
    for (int64_t i = 0; i < MR; ++i) dot[i][0] = dot[i][1] = _mm512_setzero_si512();
    const uint8_t* c0 = g.w[0].codes + b * 8 * kLanes * 4;
    const uint8_t* c1 = g.w[1].codes + b * 8 * kLanes * 4;
#pragma GCC unroll 8
    for (int64_t j = 0; j < 8; ++j) {
      const __m512i w0 = _mm512_load_si512(c0 + 64 * j), w1 = _mm512_load_si512(c1 + 64 * j);
      for (int64_t i = 0; i < MR; ++i) {
        int32_t a4;
        std::memcpy(&a4, p.qa + (m0 + i) * row + 32 * b + 4 * j, 4);
        const __m512i a = _mm512_set1_epi32(a4);
        dot[i][0] = _mm512_dpbusd_epi32(dot[i][0], w0, a);
        dot[i][1] = _mm512_dpbusd_epi32(dot[i][1], w1, a);
      }
    }
    const __m512 s0 = _mm512_loadu_ps(g.w[0].scales + b * kLanes), s1 = _mm512_loadu_ps(g.w[1].scales + b * kLanes);
    for (int64_t i = 0; i < MR; ++i) {
      const __m512 da = _mm512_set1_ps(p.da[(m0 + i) * B + b]), cb = _mm512_set1_ps(p.cb[(m0 + i) * B + b]);
      acc[i][0] = _mm512_fmadd_ps(_mm512_fmsub_ps(_mm512_cvtepi32_ps(dot[i][0]), da, cb), s0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(_mm512_fmsub_ps(_mm512_cvtepi32_ps(dot[i][1]), da, cb), s1, acc[i][1]);
    }
  }
  for (int64_t v = 0; v < 2; ++v) {
    const __mmask16 lanes = static_cast<__mmask16>((1u << g.count[v]) - 1);
    for (int64_t i = 0; i < MR && g.count[v] > 0; ++i)
      _mm512_mask_storeu_ps(p.y + (m0 + i) * p.N + g.n0[v], lanes, acc[i][v]);
  }
}

// Two packed groups (codes, then scales) in this thread's buffer, 64-byte aligned, reused across calls.
inline Groups prompt_groups(const MatMul& p, const int64_t (&n0)[2], const int64_t (&count)[2]) {
  const int64_t nb = blocks(p.K), code_bytes = nb * 8 * kLanes * 4, scale_bytes = nb * kLanes * 4;
  thread_local std::vector<uint8_t> buffer;
  buffer.resize(static_cast<size_t>(2 * (code_bytes + scale_bytes) + 64));
  auto* base = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(buffer.data()) + 63) & ~uintptr_t{63});
  Groups g{};
  for (int64_t v = 0; v < 2; ++v) {
    g.w[v] = {base + v * code_bytes, reinterpret_cast<float*>(base + 2 * code_bytes + v * scale_bytes)};
    g.n0[v] = n0[v], g.count[v] = count[v];
  }
  return g;
}

// Two groups of rows (n0[v], count[v] <= 16 each; a count of 0: none) of y for every activation row.
SEQEDGE_TARGET_VNNI inline void prompt_rows_vnni(const MatMul& p, const int64_t (&n0)[2], const int64_t (&count)[2]) {
  const Groups g = prompt_groups(p, n0, count);
  for (int64_t v = 0; v < 2; ++v) pack_rows(p, n0[v], count[v], g.w[v]);
  int64_t m = 0;
  for (; m + kPromptRows <= p.M; m += kPromptRows) prompt_tile_vnni<kPromptRows>(p, g, m);
  for (; m < p.M; ++m) prompt_tile_vnni<1>(p, g, m);
}

// The prompt kernel on AVX2 (no VNNI), on the same packed layout: a register holds 8 of the 16 rows (4 codes
// each), so a step is two loads. vpmaddubsw multiplies 4 codes by the broadcast activation codes into pairs
// (|pair| <= 2 * 15 * 127) summed in int16 over the block's 8 steps (<= 30,480: no overflow), then vpmaddwd
// adds the pairs into one int32 per row once per block. One group of 16 rows at a time (the registers hold
// kPromptRowsAvx2 activation rows' sums for it).
//
// Each sum's adds are kept in order by an empty asm: integer adds associate, and GCC 12 otherwise computed a
// step's products first and summed them as a tree, spilling the products to the stack (llama-135m's 121
// projections at M = 256 on 2 threads of a Zen 3: 268 ms with 3 rows a pass, 180-185 in order; 4 rows in order
// 171-173, 5 rows 173, 2 rows 197).
constexpr int64_t kPromptRowsAvx2 = 4;

// pack_block's AVX2 form: per row the block's 16 bytes become its 32 codes in order (8 dwords: its 8 steps);
// an 8 x 8 transpose of dwords over 8 rows gives each step's 8 rows, stored as that step's half.
SEQEDGE_TARGET_V3 inline void pack_block_avx2(const uint8_t* first, int64_t row_bytes, int64_t count, uint8_t* dst) {
  const __m128i low = _mm_set1_epi8(0x0f);
  for (int64_t half = 0; half < 2; ++half) {
    __m256i x[8];
    for (int64_t i = 0; i < 8; ++i) {
      const int64_t r = 8 * half + i;
      if (r >= count) {
        x[i] = _mm256_setzero_si256();
        continue;
      }
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(first + r * row_bytes));
      const __m128i lo = _mm_and_si128(v, low), hi = _mm_and_si128(_mm_srli_epi16(v, 4), low);
      x[i] = _mm256_set_m128i(_mm_unpackhi_epi8(lo, hi), _mm_unpacklo_epi8(lo, hi));  // codes 0-15 | 16-31
    }
    __m256i t[8], u[8];
    for (int64_t k = 0; k < 4; ++k) {  // rows 2k, 2k + 1: dwords interleaved
      t[2 * k] = _mm256_unpacklo_epi32(x[2 * k], x[2 * k + 1]);
      t[2 * k + 1] = _mm256_unpackhi_epi32(x[2 * k], x[2 * k + 1]);
    }
    for (int64_t k = 0; k < 2; ++k) {  // rows 4k .. 4k + 3: u[4k + j] holds step j | step j + 4
      u[4 * k] = _mm256_unpacklo_epi64(t[4 * k], t[4 * k + 2]);
      u[4 * k + 1] = _mm256_unpackhi_epi64(t[4 * k], t[4 * k + 2]);
      u[4 * k + 2] = _mm256_unpacklo_epi64(t[4 * k + 1], t[4 * k + 3]);
      u[4 * k + 3] = _mm256_unpackhi_epi64(t[4 * k + 1], t[4 * k + 3]);
    }
    for (int64_t j = 0; j < 4; ++j) {
      _mm256_store_si256(reinterpret_cast<__m256i*>(dst + 64 * j + 32 * half),
                         _mm256_permute2x128_si256(u[j], u[4 + j], 0x20));
      _mm256_store_si256(reinterpret_cast<__m256i*>(dst + 64 * (j + 4) + 32 * half),
                         _mm256_permute2x128_si256(u[j], u[4 + j], 0x31));
    }
  }
}

SEQEDGE_TARGET_V3 inline void widen16_avx2(const uint16_t* bits, float* out) {
  const __m256i h = _mm256_load_si256(reinterpret_cast<const __m256i*>(bits));
  _mm256_storeu_ps(out, _mm256_cvtph_ps(_mm256_castsi256_si128(h)));
  _mm256_storeu_ps(out + 8, _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)));
}

SEQEDGE_TARGET_V3 __attribute__((flatten)) inline void pack_rows_avx2(const MatMul& p, int64_t n0, int64_t count,
                                                                      const PackedRows& out) {
  pack_rows_with<pack_block_avx2, widen16_avx2>(p, n0, count, out);
}

// y[m0 .. m0 + MR) at one group of up to 16 rows (n0, count) from its packed codes.
template <int64_t MR>
SEQEDGE_TARGET_V3 SEQEDGE_INLINE void prompt_tile_avx2(const MatMul& p, const PackedRows& w, int64_t n0,
                                                       int64_t count, int64_t m0) {
  const int64_t nb = blocks(p.K), row = chunks(p.K) * kChunk, B = padded_blocks(p.K);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[MR][2];
  for (int64_t i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    __m256i dot[MR][2];
    for (int64_t i = 0; i < MR; ++i) dot[i][0] = dot[i][1] = _mm256_setzero_si256();
    const uint8_t* codes = w.codes + b * 8 * kLanes * 4;
#pragma GCC unroll 8
    for (int64_t j = 0; j < 8; ++j) {
      const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(codes + 64 * j));
      const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(codes + 64 * j + 32));
      for (int64_t i = 0; i < MR; ++i) {
        int32_t a4;
        std::memcpy(&a4, p.qa + (m0 + i) * row + 32 * b + 4 * j, 4);
        const __m256i a = _mm256_set1_epi32(a4);
        dot[i][0] = _mm256_add_epi16(dot[i][0], _mm256_maddubs_epi16(w0, a));
        dot[i][1] = _mm256_add_epi16(dot[i][1], _mm256_maddubs_epi16(w1, a));
        asm("" : "+x"(dot[i][0]), "+x"(dot[i][1]));  // keep each sum's adds in order (see above)
      }
    }
    const __m256 s0 = _mm256_loadu_ps(w.scales + b * kLanes), s1 = _mm256_loadu_ps(w.scales + b * kLanes + 8);
    for (int64_t i = 0; i < MR; ++i) {
      const __m256 da = _mm256_set1_ps(p.da[(m0 + i) * B + b]), cb = _mm256_set1_ps(p.cb[(m0 + i) * B + b]);
      const __m256 d0 = _mm256_cvtepi32_ps(_mm256_madd_epi16(dot[i][0], ones));
      const __m256 d1 = _mm256_cvtepi32_ps(_mm256_madd_epi16(dot[i][1], ones));
      acc[i][0] = _mm256_fmadd_ps(_mm256_fmsub_ps(d0, da, cb), s0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(_mm256_fmsub_ps(d1, da, cb), s1, acc[i][1]);
    }
  }
  for (int64_t i = 0; i < MR; ++i) {
    float* y = p.y + (m0 + i) * p.N + n0;
    if (count == kLanes) {
      _mm256_storeu_ps(y, acc[i][0]);
      _mm256_storeu_ps(y + 8, acc[i][1]);
    } else {
      alignas(32) float row16[kLanes];
      _mm256_store_ps(row16, acc[i][0]);
      _mm256_store_ps(row16 + 8, acc[i][1]);
      std::copy(row16, row16 + count, y);
    }
  }
}

SEQEDGE_TARGET_V3 inline void prompt_rows_avx2(const MatMul& p, const int64_t (&n0)[2], const int64_t (&count)[2]) {
  const Groups g = prompt_groups(p, n0, count);
  for (int64_t v = 0; v < 2; ++v) {
    if (count[v] == 0) continue;
    pack_rows_avx2(p, n0[v], count[v], g.w[v]);
    int64_t m = 0;
    for (; m + kPromptRowsAvx2 <= p.M; m += kPromptRowsAvx2)
      prompt_tile_avx2<kPromptRowsAvx2>(p, g.w[v], n0[v], count[v], m);
    for (; m < p.M; ++m) prompt_tile_avx2<1>(p, g.w[v], n0[v], count[v], m);
  }
}

// The prompt kernel this CPU has (use_prompt_kernel says whether there is one).
inline void prompt_rows(const MatMul& p, const int64_t (&n0)[2], const int64_t (&count)[2]) {
  if (vnni()) return prompt_rows_vnni(p, n0, count);
  prompt_rows_avx2(p, n0, count);
}
#endif

// --- The interleaved layout: 16 rows side by side ---------------------------------------------------------------
// An exporter stores a weight whose N is a multiple of 16 in groups of 16 rows (`interleaved`): codes
// (N/16, nb, 256), scales (N/16, nb, 16). Per group and block, four 64-byte vectors: 32-bit lane n of vector j
// holds bytes 4j .. 4j + 3 of row 16g + n's block (MatMulNBits' bytes, regrouped: low nibble position 2i, high
// 2i + 1), and the block's 16 scales follow each other. One vpdpbusd then multiplies 16 rows by one broadcast of
// 4 activation codes (chunk order: a block's even positions are the low nibbles' partners), no row needs a
// horizontal sum, and each group is one contiguous stream; a prompt's activation rows share every vector's load,
// so no packing step is needed either. Group g starts at byte g * nb * 256 of the codes and half g * nb * 16 of the
// scales — where row 16 g starts in MatMulNBits' layout, so a split output's first row is found the same way.
// (benchmarks/int4_layout.cpp: a decode step's products x1.13-1.52 over the row layout's kernel on Zen 5; one
// onnxruntime decode step, repacked at run time, x1.09 mamba-130m and x1.14 llama-135m.)

inline int64_t group_bytes(int64_t K) { return blocks(K) * kGroupBlockBytes; }  // one group's codes

// y[m0 .. m1) at group g's 16 rows (written at column 16 g) — the portable path.
SEQEDGE_INLINE void group16_portable(const MatMul& p, int64_t m0, int64_t m1, int64_t g) {
  const int64_t C = chunks(p.K), nb = blocks(p.K);
  const uint8_t* w = p.w + g * group_bytes(p.K);
  const uint16_t* s = p.scales + g * nb * 16;
  for (int64_t m = m0; m < m1; ++m) {
    const int8_t* q = p.qa + m * C * kChunk;
    const float* da = p.da + m * padded_blocks(p.K);
    for (int64_t n = 0; n < 16; ++n) {
      float acc = 0.f;
      for (int64_t b = 0; b < nb; ++b) {
        const int8_t* lo = q + (b / 4) * kChunk + (b % 4) * 16;
        const int8_t* hi = lo + 64;
        int32_t dot = 0;
        for (int64_t j = 0; j < 4; ++j)
          for (int64_t k = 0; k < 4; ++k) {
            const uint8_t byte = w[(b * 4 + j) * 64 + 4 * n + k];
            dot += ((byte & 15) - 8) * lo[4 * j + k] + ((byte >> 4) - 8) * hi[4 * j + k];
          }
        acc += half_to_float(s[b * 16 + n]) * da[b] * static_cast<float>(dot);
      }
      p.y[m * p.N + 16 * g + n] = acc;
    }
  }
}

#ifdef SEQEDGE_INT4_X86
// One activation row at group g (decode). The high nibbles are masked in place (16 x their code) and their sums
// shifted back once per block; two chains each for the low and high sums, so the vpdpbusd latencies overlap.
// Codes are prefetched 4 KB ahead into L1 (the group's stream runs on into the next group, the same thread's
// next item in a decode step's contiguous runs).
SEQEDGE_TARGET_VNNI SEQEDGE_INLINE void group16_row_vnni(const MatMul& p, int64_t m, int64_t g) {
  const int64_t nb = blocks(p.K), B = padded_blocks(p.K);
  const int8_t* q = p.qa + m * chunks(p.K) * kChunk;
  const float* da = p.da + m * B;
  const float* cb = p.cb + m * B;
  const uint8_t* w = p.w + g * group_bytes(p.K);
  const uint16_t* s = p.scales + g * nb * 16;
  const __m512i low = _mm512_set1_epi8(0x0f), high = _mm512_set1_epi8(static_cast<char>(0xf0));
  __m512 acc = _mm512_setzero_ps(), zero_point = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const int8_t* lo = q + (b / 4) * kChunk + (b % 4) * 16;
    const int8_t* hi = lo + 64;
    for (int64_t line = 0; line < 4; ++line)
      _mm_prefetch(reinterpret_cast<const char*>(w + b * 256 + 64 * line) + 4096, _MM_HINT_T0);
    __m512i dl[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
    __m512i dh[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
    for (int64_t j = 0; j < 4; ++j) {
      const __m512i v = _mm512_loadu_si512(w + b * 256 + 64 * j);
      int32_t l4, h4;
      std::memcpy(&l4, lo + 4 * j, 4);
      std::memcpy(&h4, hi + 4 * j, 4);
      dl[j % 2] = _mm512_dpbusd_epi32(dl[j % 2], _mm512_and_si512(v, low), _mm512_set1_epi32(l4));
      dh[j % 2] = _mm512_dpbusd_epi32(dh[j % 2], _mm512_and_si512(v, high), _mm512_set1_epi32(h4));
    }
    const __m512i dot = _mm512_add_epi32(_mm512_add_epi32(dl[0], dl[1]),
                                         _mm512_srai_epi32(_mm512_add_epi32(dh[0], dh[1]), 4));
    const __m512 sw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + 16 * b)));
    acc = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(da[b])), sw, acc);
    zero_point = _mm512_fmadd_ps(sw, _mm512_set1_ps(cb[b]), zero_point);
  }
  _mm512_storeu_ps(p.y + m * p.N + 16 * g, _mm512_sub_ps(acc, zero_point));
}

// MR activation rows from m0 at group g (a prompt): each vector's nibbles are split once for all MR rows.
template <int64_t MR>
SEQEDGE_TARGET_VNNI SEQEDGE_INLINE void group16_tile_vnni(const MatMul& p, int64_t m0, int64_t g) {
  const int64_t nb = blocks(p.K), B = padded_blocks(p.K), row = chunks(p.K) * kChunk;
  const uint8_t* w = p.w + g * group_bytes(p.K);
  const uint16_t* s = p.scales + g * nb * 16;
  const __m512i low = _mm512_set1_epi8(0x0f);
  __m512 acc[MR];
  for (int64_t i = 0; i < MR; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t at = (b / 4) * kChunk + (b % 4) * 16;
    __m512i dot[MR];
    for (int64_t i = 0; i < MR; ++i) dot[i] = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int64_t j = 0; j < 4; ++j) {
      const __m512i v = _mm512_loadu_si512(w + b * 256 + 64 * j);
      const __m512i wl = _mm512_and_si512(v, low), wh = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
      for (int64_t i = 0; i < MR; ++i) {
        const int8_t* lo = p.qa + (m0 + i) * row + at + 4 * j;
        int32_t l4, h4;
        std::memcpy(&l4, lo, 4);
        std::memcpy(&h4, lo + 64, 4);
        dot[i] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(dot[i], wl, _mm512_set1_epi32(l4)), wh,
                                     _mm512_set1_epi32(h4));
      }
    }
    const __m512 sw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + 16 * b)));
    for (int64_t i = 0; i < MR; ++i) {
      const __m512 da = _mm512_set1_ps(p.da[(m0 + i) * B + b]), cb = _mm512_set1_ps(p.cb[(m0 + i) * B + b]);
      acc[i] = _mm512_fmadd_ps(_mm512_fmsub_ps(_mm512_cvtepi32_ps(dot[i]), da, cb), sw, acc[i]);
    }
  }
  for (int64_t i = 0; i < MR; ++i) _mm512_storeu_ps(p.y + (m0 + i) * p.N + 16 * g, acc[i]);
}

constexpr int64_t kGroupRows = 6;  // activation rows per pass of group16_tile_vnni (their sums in registers)

SEQEDGE_TARGET_VNNI inline void group16_vnni(const MatMul& p, int64_t m0, int64_t m1, int64_t g) {
  int64_t m = m0;
  for (; m + kGroupRows <= m1; m += kGroupRows) group16_tile_vnni<kGroupRows>(p, m, g);
  for (; m + 2 <= m1; m += 2) group16_tile_vnni<2>(p, m, g);
  for (; m < m1; ++m) group16_row_vnni(p, m, g);
}

// AVX2: a register holds 8 of the 16 rows (the vector's halves); vpmaddubsw multiplies each row's 4 codes by the
// broadcast activation codes into int16 pairs (|pair| <= 2 * 15 * 127), summed over the block's 4 vectors x 2
// nibbles (<= 30,480: no overflow), then vpmaddwd adds the pairs into one int32 per row once per block.
template <int64_t MR>
SEQEDGE_TARGET_V3 SEQEDGE_INLINE void group16_tile_avx2(const MatMul& p, int64_t m0, int64_t g) {
  const int64_t nb = blocks(p.K), B = padded_blocks(p.K), row = chunks(p.K) * kChunk;
  const uint8_t* w = p.w + g * group_bytes(p.K);
  const uint16_t* s = p.scales + g * nb * 16;
  const __m256i low = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  __m256 acc[MR][2];
  for (int64_t i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t at = (b / 4) * kChunk + (b % 4) * 16;
    for (int64_t line = 0; line < 4; ++line)
      _mm_prefetch(reinterpret_cast<const char*>(w + b * 256 + 64 * line) + 4096, _MM_HINT_T0);
    __m256i dot[MR][2];
    for (int64_t i = 0; i < MR; ++i) dot[i][0] = dot[i][1] = _mm256_setzero_si256();
    for (int64_t j = 0; j < 4; ++j) {
      __m256i wl[2], wh[2];
      for (int64_t h = 0; h < 2; ++h) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + b * 256 + 64 * j + 32 * h));
        wl[h] = _mm256_and_si256(v, low);
        wh[h] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
      }
      for (int64_t i = 0; i < MR; ++i) {
        const int8_t* lo = p.qa + (m0 + i) * row + at + 4 * j;
        int32_t l4, h4;
        std::memcpy(&l4, lo, 4);
        std::memcpy(&h4, lo + 64, 4);
        const __m256i al = _mm256_set1_epi32(l4), ah = _mm256_set1_epi32(h4);
        for (int64_t h = 0; h < 2; ++h)
          dot[i][h] = _mm256_add_epi16(dot[i][h], _mm256_add_epi16(_mm256_maddubs_epi16(wl[h], al),
                                                                   _mm256_maddubs_epi16(wh[h], ah)));
      }
    }
    const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 16 * b));
    const __m128i bits_hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 16 * b + 8));
    const __m256 sw[2] = {_mm256_cvtph_ps(bits), _mm256_cvtph_ps(bits_hi)};
    for (int64_t i = 0; i < MR; ++i) {
      const __m256 da = _mm256_set1_ps(p.da[(m0 + i) * B + b]), cb = _mm256_set1_ps(p.cb[(m0 + i) * B + b]);
      for (int64_t h = 0; h < 2; ++h) {
        const __m256 d = _mm256_cvtepi32_ps(_mm256_madd_epi16(dot[i][h], ones));
        acc[i][h] = _mm256_fmadd_ps(_mm256_fmsub_ps(d, da, cb), sw[h], acc[i][h]);
      }
    }
  }
  for (int64_t i = 0; i < MR; ++i) {
    _mm256_storeu_ps(p.y + (m0 + i) * p.N + 16 * g, acc[i][0]);
    _mm256_storeu_ps(p.y + (m0 + i) * p.N + 16 * g + 8, acc[i][1]);
  }
}

SEQEDGE_TARGET_V3 inline void group16_avx2(const MatMul& p, int64_t m0, int64_t m1, int64_t g) {
  int64_t m = m0;
  for (; m + 2 <= m1; m += 2) group16_tile_avx2<2>(p, m, g);
  for (; m < m1; ++m) group16_tile_avx2<1>(p, m, g);
}
#endif

// y[m0 .. m1) at group g, with the best kernel this CPU has.
inline void group16(const MatMul& p, int64_t m0, int64_t m1, int64_t g) {
#ifdef SEQEDGE_INT4_X86
  if (vnni()) return group16_vnni(p, m0, m1, g);
  if (isa_level() >= 3) return group16_avx2(p, m0, m1, g);
#endif
  group16_portable(p, m0, m1, g);
}

// Row n of the weight, dequantized: out[k] = (code - 8) * scale for k < nb * 32, from either layout (an embedding
// lookup that shares a tied head's codes: onnxruntime's seqedge.Int4Gather).
inline void dequantize_row(const uint8_t* w, const uint16_t* scales, int64_t nb, bool interleaved, int64_t n,
                           float* out) {
  const int64_t g = n / 16, lane = n % 16;
  for (int64_t b = 0; b < nb; ++b) {
    const float s = half_to_float(interleaved ? scales[(g * nb + b) * 16 + lane] : scales[n * nb + b]);
    for (int64_t i = 0; i < 16; ++i) {
      const uint8_t byte = interleaved ? w[((g * nb + b) * 4 + i / 4) * 64 + 4 * lane + i % 4] : w[(n * nb + b) * 16 + i];
      out[32 * b + 2 * i] = static_cast<float>((byte & 15) - 8) * s;
      out[32 * b + 2 * i + 1] = static_cast<float>((byte >> 4) - 8) * s;
    }
  }
}

using RowsFn = void (*)(const MatMul&, int64_t, int64_t, int64_t);

inline void rows_baseline(const MatMul& p, int64_t m, int64_t n0, int64_t rows) { rows_portable(p, m, n0, rows); }

// `rows` (kTileRows or kWideTileRows) activation rows from m0 at once, where the CPU has such a kernel (else
// nullptr: row by row).
inline RowsFn tile_kernel([[maybe_unused]] int64_t rows) {
#ifdef SEQEDGE_INT4_X86
  if (vnni()) return rows == kWideTileRows ? static_cast<RowsFn>(wide_tiles_vnni) : static_cast<RowsFn>(tiles_vnni);
#endif
  return nullptr;
}

// The best kernel this CPU has, capped by SEQEDGE_KERNEL_ISA (v4 needs VNNI besides; without it, AVX2).
inline RowsFn rows_kernel() {
  static const RowsFn fn = [] {
#ifdef SEQEDGE_INT4_X86
    if (vnni()) return static_cast<RowsFn>(rows_vnni);
    if (isa_level() >= 3) return static_cast<RowsFn>(rows_avx2);
#endif
    return static_cast<RowsFn>(rows_baseline);
  }();
  return fn;
}

// Work items: item i is rows [16 i, 16 i + 16) of y for every activation row, so the rows' codes stay in cache
// while the activation rows pass over them.
constexpr int64_t kItemRows = 16;

// Activation rows from which a call takes the prompt kernel (its packing of each item's weights pays off), where
// the CPU has one: AVX-512 VNNI, whose row-by-row path is fast, from 16; AVX2 from 4 (llama-135m's projections on 2
// threads of a Zen 3: 8 rows 26.8 ms row by row against 18.5 packed, 4 rows 14.2-16.3 against 13.0-13.4, 3 rows
// 10.8 against 13.0).
constexpr int64_t kPromptKernelRows = 16;
constexpr int64_t kPromptKernelRowsAvx2 = 4;

inline bool use_prompt_kernel(int64_t M) {
#ifdef SEQEDGE_INT4_X86
  static_assert(kItemRows == kLanes, "an item is the prompt kernel's 16 lanes");
#endif
  return vnni() ? M >= kPromptKernelRows : isa_level() >= 3 && M >= kPromptKernelRowsAvx2;
}

inline int64_t outputs(const MatMul& p) { return p.glu ? p.N / 2 : p.N; }

// Output rows an item computes (the prompt kernel's items of a plain matmul are 32 rows), and how many items.
inline int64_t item_rows(const MatMul& p) { return p.natural && p.glu == nullptr ? 2 * kItemRows : kItemRows; }
inline int64_t items(const MatMul& p) { return (outputs(p) + item_rows(p) - 1) / item_rows(p); }

// glu[m0 .. m1, n0 .. n0 + count) = silu(gate) * up, from the gate and up products in y (N / 2 apart), eight at a
// time (silu8). With std::exp a prompt's T x N / 2 of them cost more than they saved: llama-135m int4 prefill at
// T = 1024 ran 10 % slower as one kernel than with the SwiGLU in XNNPACK.
SEQEDGE_INLINE void swiglu_block(const MatMul& p, int64_t m0, int64_t m1, int64_t n0, int64_t count) {
  const int64_t H = outputs(p);
  for (int64_t j = m0; j < m1; ++j) {
    const float* gate = p.y + j * p.N + n0;
    float* out = p.glu + j * H + n0;
    int64_t r = 0;
    for (; r + 8 <= count; r += 8) store8(out + r, silu8(load8(gate + r)) * load8(gate + H + r));
    for (; r < count; ++r) out[r] = gate[r] / (1.f + std::exp(-gate[r])) * gate[H + r];
  }
}
SEQEDGE_ISA_VARIANTS(swiglu, swiglu_block, (const MatMul& p, int64_t m0, int64_t m1, int64_t n0, int64_t count),
                     (p, m0, m1, n0, count))

inline void swiglu_rows(const MatMul& p, int64_t m0, int64_t m1, int64_t n0, int64_t count) {
  static const auto fn = select_isa(swiglu_v4, swiglu_v3, swiglu_baseline);
  fn(p, m0, m1, n0, count);
}

// Item i: outputs [16 i, 16 i + 16) for every activation row; with SwiGLU, the gate rows and the up rows N / 2
// further, then the product.
inline void item(const MatMul& p, int64_t i) {
  const int64_t H = outputs(p), n0 = i * kItemRows, count = std::min(kItemRows, H - n0);
  if (p.interleaved) {  // item i is group i (and, with SwiGLU, the up rows' group H / 16 further)
    group16(p, 0, p.M, i);
    if (p.glu != nullptr) {
      group16(p, 0, p.M, H / kItemRows + i);
      swiglu_rows(p, 0, p.M, n0, count);
    }
    return;
  }
  const RowsFn rows = rows_kernel(), tiles = tile_kernel(kTileRows), wide = tile_kernel(kWideTileRows);
#ifdef SEQEDGE_INT4_X86
  if (p.natural && p.glu == nullptr) {  // the prompt kernel: rows [32 i, 32 i + 32) for every activation row
    const int64_t at = 2 * i * kItemRows, first = std::min(kItemRows, H - at);
    prompt_rows(p, {at, at + kItemRows}, {first, std::clamp<int64_t>(H - at - kItemRows, 0, kItemRows)});
    return;
  }
  if (p.natural) {  // a SwiGLU's 16 gate rows and their up rows at once, then the product
    prompt_rows(p, {n0, H + n0}, {count, count});
    swiglu_rows(p, 0, p.M, n0, count);
    return;
  }
#endif
  for (int64_t m = 0; m < p.M;) {
    const int64_t left = p.M - m;
    const int64_t step = wide != nullptr && left >= kWideTileRows ? kWideTileRows
                         : tiles != nullptr && left >= kTileRows  ? kTileRows
                                                                  : 1;
    const RowsFn fn = step == kWideTileRows ? wide : step == kTileRows ? tiles : rows;
    fn(p, m, n0, count);
    if (p.glu != nullptr) {
      fn(p, m, H + n0, count);
      swiglu_rows(p, m, m + step, n0, count);
    }
    m += step;
  }
}

constexpr int64_t kParallelRows = 16;  // activation rows from which quantizing them is split over threads

// A product ready to run: y (M, N) into `out` or, with SwiGLU, glu (M, N / 2); its scratch (place_scratch's parts
// and, with SwiGLU, the gate and up products before the GLU) in `scratch`, grown as needed; the prompt kernel chosen
// by M. Shared by seqedge::int4_matmul(_swiglu).out and onnxruntime's seqedge.Int4MatMul(SwiGLU).
inline MatMul prepare(const float* a, const uint8_t* w, const uint16_t* scales, float* out, int64_t M, int64_t N,
                      int64_t K, bool swiglu, std::vector<uint8_t>& scratch, bool interleaved = false) {
  const int64_t products = swiglu ? M * N * static_cast<int64_t>(sizeof(float)) : 0;  // gate and up, before the GLU
  scratch.resize(static_cast<size_t>(scratch_bytes(M, K) + products));
  MatMul mm{a, w, scales, out, M, N, K};
  if (swiglu) {
    mm.glu = out;
    mm.y = reinterpret_cast<float*>(scratch.data() + scratch_bytes(M, K));
  }
  place_scratch(mm, scratch.data());
  mm.interleaved = interleaved;
  mm.natural = !interleaved && use_prompt_kernel(M);  // the interleaved kernels read the activations in chunk order
  return mm;
}

}  // namespace seqedge::int4_core
