// seqedge::moe_ffn.out / seqedge::moe_ffn_q.out — a top-k mixture of SwiGLU experts as an ExecuTorch CPU kernel
// (reference: seqedge/ops/moe_ffn/reference.py). Only the k experts a token's router chooses are read, which is
// the point of a mixture of experts on a phone: decode reads k/E of the expert weights.
//
//   p = softmax(logits); chosen = the k largest p (renormalised to sum 1 when asked);
//   y = sum over chosen e of p_e * w2_e (silu(gate_e) * up_e),  gate/up = the even/odd rows of w13_e x
//
// Shapes: x (Bt, T, C), logits (Bt, T, E), w13 (E, 2I, C) gate and up rows interleaved, w2 (E, C, I); y like x.
// moe_ffn_q takes the experts as block codes (uint8, q + 2^(bits-1), 4-bit pairs low nibble first) and float
// scales (E, N, K/block): onnxruntime QMoE's raw layout. A row's dot product with x is, per block,
// scale * (sum codes * x - 2^(bits-1) * sum x): the block sums of x are taken once per token.
// One token (decode) splits the rows of each stage over the threadpool; several (prefill) split the tokens.
//
// Registered boxed: moe_ffn.out stack = [x, logits, w13, w2, top_k, renormalise, out];
//                   moe_ffn_q.out stack = [x, logits, w13_codes, w13_scales, w2_codes, w2_scales, top_k,
//                                          renormalise, bits, out].

#include "et_kernel.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "vector_math.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

namespace seqedge {
namespace {

// One expert weight tensor (E, N, K): float rows, or codes + scales in blocks of `block` along K.
struct Weights {
  const float* f = nullptr;
  const uint8_t* codes = nullptr;
  const float* scales = nullptr;
  int64_t N = 0, K = 0, bits = 0, block = 0;
};

// A vector the rows of one weight tensor multiply: for codes, its even/odd elements apart (4-bit pairs) and
// its block sums (the zero point's share), computed once.
struct Operand {
  const float* x = nullptr;
  std::vector<float> even, odd, block_sum;

  void prepare(const float* v, const Weights& w) {
    x = v;
    if (w.bits == 0) return;
    const int64_t nb = w.K / w.block;
    block_sum.assign(nb, 0.f);
    for (int64_t b = 0; b < nb; ++b)
      for (int64_t j = 0; j < w.block; ++j) block_sum[b] += v[b * w.block + j];
    if (w.bits == 4) {
      even.resize(w.K / 2);
      odd.resize(w.K / 2);
      for (int64_t m = 0; m < w.K / 2; ++m) {
        even[m] = v[2 * m];
        odd[m] = v[2 * m + 1];
      }
    }
  }
};

// 8 lanes in GCC/Clang vector types (Floats8, Ints8 and load8: vector_math.h): AVX2 registers in the v3/v4
// builds, SSE or NEON pairs otherwise.
typedef uint8_t u8x8 __attribute__((vector_size(8)));
typedef uint16_t u16x8 __attribute__((vector_size(16)));

// Eight codes widened to 32-bit lanes (through 16 bits: GCC turns a direct u8 -> i32 vector conversion into
// byte-by-byte scalar code). The AVX2 builds use row_dot_avx2 below instead.
SEQEDGE_INLINE Ints8 codes8(const uint8_t* c) {
  u8x8 b;
  std::memcpy(&b, c, sizeof b);
  return __builtin_convertvector(__builtin_convertvector(b, u16x8), Ints8);
}

// One block's codes times the operand, in 8 lanes: 8-bit codes against x, or 4-bit pairs (low nibble = even
// element) against x's even and odd elements. `bytes` is a multiple of 8.
SEQEDGE_INLINE Floats8 block_u8(const uint8_t* c, const float* x, int64_t bytes) {
  Floats8 part = {};
  for (int64_t i = 0; i < bytes; i += 8) part += __builtin_convertvector(codes8(c + i), Floats8) * load8(x + i);
  return part;
}

SEQEDGE_INLINE Floats8 block_u4(const uint8_t* c, const float* even, const float* odd, int64_t bytes) {
  Floats8 part = {};
  for (int64_t i = 0; i < bytes; i += 8) {
    const Ints8 w = codes8(c + i);
    part += __builtin_convertvector(w & 15, Floats8) * load8(even + i) + __builtin_convertvector(w >> 4, Floats8) * load8(odd + i);
  }
  return part;
}

// Row `row` (of E·N) of `w` times the operand: per block, scale · (codes · x - zero · sum x); the lanes stay
// apart across blocks and are summed once per row. Blocks whose bytes are not a multiple of 8 finish in scalars.
SEQEDGE_INLINE float row_dot(const Weights& w, int64_t row, const Operand& v) {
  if (w.bits == 0) return dot(w.f + row * w.K, v.x, w.K);
  const int64_t nb = w.K / w.block, bytes = w.block * w.bits / 8, body = bytes & ~int64_t{7};
  const uint8_t* c = w.codes + row * (w.K * w.bits / 8);
  const float* s = w.scales + row * nb;
  Floats8 acc = {};
  float zero_part = 0.f, tail = 0.f;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* cb = c + b * bytes;
    if (w.bits == 8) {
      const float* xb = v.x + b * w.block;
      acc += s[b] * block_u8(cb, xb, body);
      for (int64_t i = body; i < bytes; ++i) tail += s[b] * static_cast<float>(cb[i]) * xb[i];
    } else {
      const float *ev = v.even.data() + b * bytes, *od = v.odd.data() + b * bytes;
      acc += s[b] * block_u4(cb, ev, od, body);
      for (int64_t i = body; i < bytes; ++i)
        tail += s[b] * (static_cast<float>(cb[i] & 15) * ev[i] + static_cast<float>(cb[i] >> 4) * od[i]);
    }
    zero_part += s[b] * v.block_sum[b];
  }
  float total = tail - static_cast<float>(1 << (w.bits - 1)) * zero_part;
  for (int j = 0; j < 8; ++j) total += acc[j];
  return total;
}

#if defined(__x86_64__) && defined(__GNUC__)
// row_dot with AVX2 intrinsics: one vpmovzxbd per eight codes.
SEQEDGE_TARGET_V3 inline float hsum(__m256 v) {
  const __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 h = _mm_add_ps(q, _mm_movehl_ps(q, q));
  return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
}

SEQEDGE_TARGET_V3 float row_dot_avx2(const Weights& w, int64_t row, const Operand& v) {
  if (w.bits == 0) return dot(w.f + row * w.K, v.x, w.K);
  const int64_t nb = w.K / w.block, bytes = w.block * w.bits / 8, body = bytes & ~int64_t{7};
  const uint8_t* c = w.codes + row * (w.K * w.bits / 8);
  const float* s = w.scales + row * nb;
  const __m256i low4 = _mm256_set1_epi32(15);
  __m256 acc = _mm256_setzero_ps();
  float zero_part = 0.f, tail = 0.f;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* cb = c + b * bytes;
    __m256 part = _mm256_setzero_ps();
    if (w.bits == 8) {
      const float* xb = v.x + b * w.block;
      for (int64_t i = 0; i < body; i += 8) {
        const __m256i q = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(cb + i)));
        part = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), _mm256_loadu_ps(xb + i), part);
      }
      for (int64_t i = body; i < bytes; ++i) tail += s[b] * static_cast<float>(cb[i]) * xb[i];
    } else {
      const float *ev = v.even.data() + b * bytes, *od = v.odd.data() + b * bytes;
      for (int64_t i = 0; i < body; i += 8) {
        const __m256i q = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(cb + i)));
        part = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(q, low4)), _mm256_loadu_ps(ev + i), part);
        part = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(q, 4)), _mm256_loadu_ps(od + i), part);
      }
      for (int64_t i = body; i < bytes; ++i)
        tail += s[b] * (static_cast<float>(cb[i] & 15) * ev[i] + static_cast<float>(cb[i] >> 4) * od[i]);
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(s[b]), part, acc);
    zero_part += s[b] * v.block_sum[b];
  }
  return hsum(acc) + tail - static_cast<float>(1 << (w.bits - 1)) * zero_part;
}

// Four consecutive rows of 4-bit codes in blocks of 32 (the int4 recipe's default group) against one operand:
// its 32 values are loaded once per block for the four rows, and the rows' FMA chains run side by side.
SEQEDGE_TARGET_V3 void four_rows_q4_32(const Weights& w, int64_t row, const Operand& v, float* out) {
  const int64_t nb = w.K / 32, row_bytes = w.K / 2;
  const uint8_t* c = w.codes + row * row_bytes;
  const float* s = w.scales + row * nb;
  const __m256i low4 = _mm256_set1_epi32(15);
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t b = 0; b < nb; ++b) {
    const float *ev = v.even.data() + b * 16, *od = v.odd.data() + b * 16;
    const __m256 e0 = _mm256_loadu_ps(ev), e1 = _mm256_loadu_ps(ev + 8);
    const __m256 o0 = _mm256_loadu_ps(od), o1 = _mm256_loadu_ps(od + 8);
    for (int r = 0; r < 4; ++r) {
      const __m128i q16 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(c + r * row_bytes + b * 16));
      const __m256i q = _mm256_cvtepu8_epi32(q16), q2 = _mm256_cvtepu8_epi32(_mm_srli_si128(q16, 8));
      __m256 p = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_and_si256(q, low4)), e0);
      __m256 p2 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(q, 4)), o0);
      p = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(q2, low4)), e1, p);
      p2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(q2, 4)), o1, p2);
      acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(s[r * nb + b]), _mm256_add_ps(p, p2), acc[r]);
    }
  }
  for (int r = 0; r < 4; ++r) {
    float zero_part = 0.f;
    for (int64_t b = 0; b < nb; ++b) zero_part += s[r * nb + b] * v.block_sum[b];
    out[r] = hsum(acc[r]) - 8.f * zero_part;
  }
}

// The rows of one stage, four at a time where they share an expert and the layout allows.
SEQEDGE_TARGET_V3 void rows_avx2(const Weights& w, const int64_t* chosen, const Operand* ops, int64_t step, float* out,
                                 int64_t r0, int64_t r1) {
  const bool fours = w.bits == 4 && w.block == 32;
  for (int64_t r = r0; r < r1;) {
    const int64_t j = r / w.N, n = r % w.N, row = chosen[j] * w.N + n;
    if (fours && r + 4 <= r1 && n + 4 <= w.N) {
      four_rows_q4_32(w, row, ops[j * step], out + r);
      r += 4;
    } else {
      out[r] = row_dot_avx2(w, row, ops[j * step]);
      r += 1;
    }
  }
}
#endif

// Rows [r0, r1) of a stage over the k chosen experts (N rows each): out[r] = row r % N of expert
// chosen[r / N] times operand ops[(r / N) * step] (step 0: one operand for all).
#define SEQEDGE_ROWS_PARAMS \
  const Weights &w, const int64_t *chosen, const Operand *ops, int64_t step, float *out, int64_t r0, int64_t r1
void rows_baseline(SEQEDGE_ROWS_PARAMS) {
  for (int64_t r = r0; r < r1; ++r) out[r] = row_dot(w, chosen[r / w.N] * w.N + r % w.N, ops[(r / w.N) * step]);
}
#if defined(__x86_64__) && defined(__GNUC__)
SEQEDGE_TARGET_V4 void rows_v4(SEQEDGE_ROWS_PARAMS) { rows_avx2(w, chosen, ops, step, out, r0, r1); }
SEQEDGE_TARGET_V3 void rows_v3(SEQEDGE_ROWS_PARAMS) { rows_avx2(w, chosen, ops, step, out, r0, r1); }
#else
void rows_v4(SEQEDGE_ROWS_PARAMS) { rows_baseline(w, chosen, ops, step, out, r0, r1); }
void rows_v3(SEQEDGE_ROWS_PARAMS) { rows_baseline(w, chosen, ops, step, out, r0, r1); }
#endif

struct Moe {
  const float *x, *logits;
  float* y;
  Weights w13, w2;
  int64_t tokens, C, E, I, k;
  bool renormalise;
};

inline float silu(float v) { return v / (1.f + std::exp(-v)); }

// Per-token working memory.
struct Scratch {
  std::vector<float> probs, weights, h, a, down;
  std::vector<int64_t> chosen;
  Operand in;
  std::vector<Operand> act;

  explicit Scratch(const Moe& m)
      : probs(m.E), weights(m.k), h(m.k * 2 * m.I), a(m.k * m.I), down(m.k * m.C), chosen(m.k), act(m.k) {}
};

using RowsFn = void (*)(const Weights&, const int64_t*, const Operand*, int64_t, float*, int64_t, int64_t);

// One token; `split` runs a stage's rows [0, n) (over the threadpool, or in this thread).
template <class Split>
void token(const Moe& m, int64_t t, Scratch& s, RowsFn stage, Split split) {
  const float* lg = m.logits + t * m.E;
  const float top = *std::max_element(lg, lg + m.E);
  float total = 0.f;
  for (int64_t e = 0; e < m.E; ++e) total += s.probs[e] = std::exp(lg[e] - top);
  float chosen_total = 0.f;
  for (int64_t j = 0; j < m.k; ++j) {  // the k largest, first index on ties
    int64_t best = -1;
    for (int64_t e = 0; e < m.E; ++e)
      if ((best < 0 || s.probs[e] > s.probs[best]) && std::find(s.chosen.begin(), s.chosen.begin() + j, e) ==
                                                          s.chosen.begin() + j)
        best = e;
    s.chosen[j] = best;
    chosen_total += s.weights[j] = s.probs[best] / total;
  }
  if (m.renormalise)
    for (auto& w : s.weights) w /= chosen_total;

  s.in.prepare(m.x + t * m.C, m.w13);
  split(m.k * 2 * m.I, [&](int64_t r0, int64_t r1) { stage(m.w13, s.chosen.data(), &s.in, 0, s.h.data(), r0, r1); });
  for (int64_t j = 0; j < m.k; ++j) {
    for (int64_t i = 0; i < m.I; ++i) s.a[j * m.I + i] = silu(s.h[j * 2 * m.I + 2 * i]) * s.h[j * 2 * m.I + 2 * i + 1];
    s.act[j].prepare(s.a.data() + j * m.I, m.w2);
  }
  split(m.k * m.C, [&](int64_t r0, int64_t r1) { stage(m.w2, s.chosen.data(), s.act.data(), 1, s.down.data(), r0, r1); });
  float* y = m.y + t * m.C;
  for (int64_t c = 0; c < m.C; ++c) {
    float v = 0.f;
    for (int64_t j = 0; j < m.k; ++j) v += s.weights[j] * s.down[j * m.C + c];
    y[c] = v;
  }
}

void run(KernelRuntimeContext& ctx, const Moe& m) {
  const RowsFn stage = select_isa(rows_v4, rows_v3, rows_baseline);
  if (m.tokens == 1) {
    Scratch s(m);
    token(m, 0, s, stage, [](int64_t n, auto fn) { executorch::extension::parallel_for(0, n, 16, fn); });
    return;
  }
  executorch::extension::parallel_for(0, m.tokens, 1, [&](int64_t t0, int64_t t1) {
    Scratch s(m);
    for (int64_t t = t0; t < t1; ++t) token(m, t, s, stage, [](int64_t n, auto fn) { fn(0, n); });
  });
  (void)ctx;
}

bool is_float(const Tensor& t) { return t.scalar_type() == ScalarType::Float; }

// Checks shared by both kernels; fills m's token/width fields. Returns an error text or nullptr.
const char* check_io(const Tensor& x, const Tensor& logits, int64_t top_k, Moe& m) {
  if (x.dim() != 3 || logits.dim() != 3) return "expected x (Bt, T, C) and logits (Bt, T, E)";
  if (!is_float(x) || !is_float(logits)) return "x and logits must be float32";
  if (logits.size(0) != x.size(0) || logits.size(1) != x.size(1)) return "logits must have x's batch and length";
  m.tokens = x.size(0) * x.size(1);
  m.C = x.size(2);
  m.E = logits.size(2);
  m.k = top_k;
  if (m.E < 1 || top_k < 1 || top_k > m.E) return "top_k must be in [1, experts]";
  return nullptr;
}

// An expert weight tensor (E, N, K): float, or codes (E, N, K*bits/8) with scales (E, N, K/block).
const char* check_weights(const Tensor& w, const Tensor* scales, int64_t E, int64_t N, int64_t bits, Weights& out,
                          int64_t* K) {
  if (w.dim() != 3 || w.size(0) != E || w.size(1) != N) return "an expert weight's leading dims disagree with x/logits";
  out.N = N;
  out.bits = bits;
  if (bits == 0) {
    if (!is_float(w)) return "float expert weights must be float32";
    *K = out.K = w.size(2);
    out.f = w.const_data_ptr<float>();
    return nullptr;
  }
  if (w.scalar_type() != ScalarType::Byte || !is_float(*scales)) return "expert codes must be uint8, scales float32";
  if (scales->dim() != 3 || scales->size(0) != E || scales->size(1) != N || scales->size(2) < 1)
    return "expert scales must be (E, N, blocks)";
  out.K = w.size(2) * 8 / bits;
  const int64_t nb = scales->size(2);
  if (out.K % nb != 0 || (bits == 4 && (out.K / nb) % 2 != 0)) return "the blocks must divide the row (4-bit: in even widths)";
  out.block = out.K / nb;
  *K = out.K;
  out.codes = w.const_data_ptr<uint8_t>();
  out.scales = scales->const_data_ptr<float>();
  return nullptr;
}

// x, logits, w13 (E, 2I, C), w2 (E, C, I): the widths must agree.
const char* check_experts(Moe& m, const Tensor& w13, const Tensor* s13, const Tensor& w2, const Tensor* s2,
                          int64_t bits) {
  if (w13.dim() != 3 || w13.size(1) % 2 != 0) return "w13 must be (E, 2I, C)";
  m.I = w13.size(1) / 2;
  int64_t K13 = 0, K2 = 0;
  if (const char* bad = check_weights(w13, s13, m.E, 2 * m.I, bits, m.w13, &K13)) return bad;
  if (const char* bad = check_weights(w2, s2, m.E, m.C, bits, m.w2, &K2)) return bad;
  if (K13 != m.C || K2 != m.I) return "expert weights' input widths disagree with C and I";
  return nullptr;
}

void finish(KernelRuntimeContext& ctx, const Tensor& x, Tensor& out, Moe& m) {
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(out, x.sizes()) == Error::Ok, InvalidArgument, );
  m.x = x.const_data_ptr<float>();
  m.y = out.mutable_data_ptr<float>();
  run(ctx, m);
}

void moe_ffn_out(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  const Tensor& x = stack[0]->toTensor();
  const Tensor& logits = stack[1]->toTensor();
  Moe m{};
  const char* bad = check_io(x, logits, stack[4]->toInt(), m);
  if (bad == nullptr) bad = check_experts(m, stack[2]->toTensor(), nullptr, stack[3]->toTensor(), nullptr, 0);
  ET_KERNEL_CHECK_MSG(ctx, bad == nullptr, InvalidArgument, , "moe_ffn: %s", bad);
  m.logits = logits.const_data_ptr<float>();
  m.renormalise = stack[5]->toBool();
  finish(ctx, x, stack[6]->toTensor(), m);
}

void moe_ffn_q_out(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  const Tensor& x = stack[0]->toTensor();
  const Tensor& logits = stack[1]->toTensor();
  const int64_t bits = stack[8]->toInt();
  Moe m{};
  const char* bad = bits == 4 || bits == 8 ? check_io(x, logits, stack[6]->toInt(), m) : "bits must be 4 or 8";
  if (bad == nullptr) {
    const Tensor& s13 = stack[3]->toTensor();
    const Tensor& s2 = stack[5]->toTensor();
    bad = check_experts(m, stack[2]->toTensor(), &s13, stack[4]->toTensor(), &s2, bits);
  }
  ET_KERNEL_CHECK_MSG(ctx, bad == nullptr, InvalidArgument, , "moe_ffn_q: %s", bad);
  m.logits = logits.const_data_ptr<float>();
  m.renormalise = stack[7]->toBool();
  finish(ctx, x, stack[9]->toTensor(), m);
}

const executorch::runtime::Kernel kernels[] = {
    executorch::runtime::Kernel("seqedge::moe_ffn.out", moe_ffn_out),
    executorch::runtime::Kernel("seqedge::moe_ffn_q.out", moe_ffn_q_out),
};
const auto registered = executorch::runtime::register_kernels({kernels, 2});

}  // namespace
}  // namespace seqedge
