// seqedge's custom ops for onnxruntime: libseqedge_ort_kernels.so, registered into a session with
// SessionOptions.register_custom_ops_library (onnxruntime calls RegisterCustomOps below).
//
//   seqedge.SelectiveScan(u, delta, A, B, C, D, state) -> (y, state_out)        the Mamba-1 scan
//   seqedge.MambaScan(u, delta, A, B, C, D, state, z) -> (y, state_out)         the same with mamba's
//       selective_scan_fn extras: the step is softplus(delta), and y is gated by silu(z)
//   seqedge.CausalConv1d(x, weight, bias, state) -> (y, state_out)               Mamba's convolution + SiLU,
//       channels last (x, y (Bt, T, D))
//   seqedge.Int4MatMul(A, B, scales[, bias][, split]) -> Y[, Y1[, Y2]]             A (..., K) float32 times int4
//       weights: B (N, ceil(K/32), 16) uint8 in MatMulNBits' codes, scales (N, ceil(K/32)) float16 — or the same
//       bytes in groups of 16 rows, B (N/16, ceil(K/32), 256) and scales (N/16, ceil(K/32), 16) (int4_matmul_core.h's
//       interleaved layout; split sizes and SwiGLU halves then multiples of 16); Y (..., N),
//       plus bias (N) float32 when given; with 2 or 3 outputs split along the last axis into split's sizes (int64)
//   seqedge.Int4MatMulSkipRmsNorm(A, B, scales, skip, gamma, epsilon) -> (normed, sum)   the same, then the
//       residual add and RMSNorm after it: sum = Y + skip, normed = rms_norm(sum) * gamma (rms_norm_core.h)
//   seqedge.Int4MatMulConv(A, B, scales, bias, split, weight, conv_bias, state) -> (y, z, state_out)   the same split
//       into x | z, x then through CausalConv1d: Mamba's in_proj and convolution as one node
//   seqedge.Int4MambaScan(u, dt, dt_codes, dt_scales, dt_bias, A, B, C, D, state, z) -> (y, state_out)   MambaScan
//       whose step is the int4 product dt_proj(dt) (+ dt_bias), computed inside
//   seqedge.Int4Gather(B, scales, indices) -> Y     rows of such a weight dequantized, Y (..., ceil(K/32) * 32):
//       a tied embedding reading its head's codes in either layout
//   seqedge.Int4MatMulSwiGLU(A, B, scales) -> Y                                  the same, then a SwiGLU:
//       Y (..., N/2) = silu(gate) * up, gate and up the two halves of the product (a fused gate/up projection)
//   seqedge.Attention(q, k, v, k_cache, v_cache, pos, cos, sin) -> (out, k_cache_out, v_cache_out)
//       seqedge::attention (attention_ref): RoPE on q and k at positions [pos, pos + T), k and v written into the
//       (B, Hkv, S, D) caches there, causal grouped-query attention over [0, pos + T). k and v may be absent, q
//       then holding q, k, v side by side (B, T, (Hq + 2 Hkv) D). When a cache output is the cache input's buffer
//       (the runtime binds them so) only the new positions are written; otherwise [0, pos) is copied first. The
//       caches are float32 or float16 (two kernels of the op; float16: keys and values rounded when written,
//       attended in float32, half the bytes a step streams).
//
// The scan is selective_scan_core.h, the same source as the ExecuTorch kernel seqedge::selective_scan.out,
// the attention attention_tile.h (a prompt) and attention_decode.h (a step), seqedge::cached_sdpa.out's, and
// the convolution causal_conv_core.h; their references are in seqedge/ops (selective_scan_ref,
// mamba_scan_ref, causal_conv1d_ref). Blocks of channels are split over the session's intra-op threads
// (KernelContext_ParallelFor), or over a team of the library's own (team.h) where the session's config entry
// `seqedge.team_threads` names one: onnxruntime then runs on one thread and hands each node to the kernel. Every
// operand's type and shape is checked before any data is read: the graph is an untrusted file. Errors come back
// as onnxruntime statuses naming the op.

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "../attention_decode.h"
#include "../attention_tile.h"
#include "../causal_conv_core.h"
#include "../int4_matmul_core.h"
#include "../rms_norm_core.h"
#include "../rope_core.h"
#include "../selective_scan_core.h"
#include "ort_abi.h"
#include "team.h"

namespace seqedge::ort {
namespace {

const Api* g_api = nullptr;  // set once by RegisterCustomOps

// The team the kernel running on this thread was registered with (null: the session's intra-op pool). Set for
// the length of each compute from its kernel (compute_on_team, below): the session's thread is the one that
// calls a kernel and the one that hands its items out.
thread_local team::Team* t_team = nullptr;

// fn(data, i) for i in [0, total): on the kernel's team where it has one, else on the session's intra-op pool
// (KernelContext_ParallelFor). batches 0: the items one at a time; else that many contiguous runs.
Status* parallel_for(const KernelContext* ctx, void (*fn)(void*, size_t), size_t total, size_t batches, void* data) {
  if (t_team != nullptr) {
    t_team->parallel_for(fn, total, batches, data);
    return nullptr;
  }
  return g_api->parallel_for(ctx, fn, total, batches, data);
}

// The threads a kernel's items run on, where it knows them (its team's), else 0: onnxruntime does not tell a
// kernel its pool's size.
int64_t known_threads() { return t_team != nullptr ? t_team->threads() : 0; }

Status* fail(const char* op, const std::string& what) {
  return g_api->create_status(kInvalidArgument, ("seqedge." + std::string(op) + ": " + what).c_str());
}

#define SEQEDGE_ORT_TRY(expr)          \
  do {                                 \
    if (Status* _s = (expr)) return _s; \
  } while (0)

struct Operand {
  const float* data = nullptr;
  int64_t dims[3] = {0, 0, 0};
  int64_t rank = 0;
};

// Input i's element type, rank and dims (up to max_rank) and data; nothing is read from a tensor before its
// element type (`type`) and rank are known.
Status* read_typed(const KernelContext* ctx, const char* op, size_t i, const char* name, int type,
                   const char* type_name, size_t min_rank, size_t max_rank, int64_t* dims, size_t* rank,
                   const void** data) {
  const Value* v = nullptr;
  SEQEDGE_ORT_TRY(g_api->input(ctx, i, &v));
  if (v == nullptr) return fail(op, std::string("input ") + name + " is missing");
  int got = 0;
  if (g_api->shape_references()) {  // no allocation: ~0.2 us an input, 3-6 inputs a node, ~160 nodes a step
    const int64_t* shape = nullptr;
    SEQEDGE_ORT_TRY(g_api->type_and_dims(v, &got, &shape, rank));
    if (*rank <= max_rank && *rank > 0) std::copy(shape, shape + *rank, dims);
  } else {
    TypeAndShape* info = nullptr;
    SEQEDGE_ORT_TRY(g_api->type_and_shape(v, &info));
    Status* s = g_api->element_type(info, &got);
    if (s == nullptr) s = g_api->rank(info, rank);
    if (s == nullptr && *rank <= max_rank) s = g_api->dims(info, dims, *rank);
    g_api->release(info);
    if (s != nullptr) return s;
  }
  if (got != type) return fail(op, std::string("input ") + name + " must be " + type_name);
  if (*rank > max_rank)
    return fail(op, std::string("input ") + name + " has more than " + std::to_string(max_rank) + " dimensions");
  if (*rank < min_rank)
    return fail(op, std::string("input ") + name + " must have at least " + std::to_string(min_rank) + " dimensions");
  void* p = nullptr;
  SEQEDGE_ORT_TRY(g_api->data(v, &p));
  *data = p;
  return nullptr;
}

// Input i, float32 of rank <= 3, with its shape.
Status* read_operand(const KernelContext* ctx, const char* op, size_t i, const char* name, Operand* out) {
  size_t rank = 0;
  const void* data = nullptr;
  SEQEDGE_ORT_TRY(read_typed(ctx, op, i, name, kFloat, "float32", 0, 3, out->dims, &rank, &data));
  out->rank = static_cast<int64_t>(rank);
  out->data = static_cast<const float*>(data);
  return nullptr;
}

// The op's inputs, all float32 of rank <= 3, with their shapes.
Status* read_operands(const KernelContext* ctx, const char* op, const char* const* names, size_t kInputs,
                      Operand* out) {
  size_t n = 0;
  SEQEDGE_ORT_TRY(g_api->input_count(ctx, &n));
  if (n != kInputs) return fail(op, "expects " + std::to_string(kInputs) + " inputs");
  for (size_t i = 0; i < kInputs; ++i) SEQEDGE_ORT_TRY(read_operand(ctx, op, i, names[i], &out[i]));
  return nullptr;
}

// The two outputs, shaped as inputs `like0` and `like1`.
Status* make_outputs(KernelContext* ctx, const Operand& like0, const Operand& like1, float** y, float** state) {
  Value *a = nullptr, *b = nullptr;
  void *pa = nullptr, *pb = nullptr;
  SEQEDGE_ORT_TRY(g_api->output(ctx, 0, like0.dims, 3, &a));
  SEQEDGE_ORT_TRY(g_api->output(ctx, 1, like1.dims, 3, &b));
  SEQEDGE_ORT_TRY(g_api->data(a, &pa));
  SEQEDGE_ORT_TRY(g_api->data(b, &pb));
  *y = static_cast<float*>(pa);
  *state = static_cast<float*>(pb);
  return nullptr;
}

template <class Work, void (*item)(const Work&, int64_t)>
void run_item(void* work, size_t i) {
  item(*static_cast<const Work*>(work), static_cast<int64_t>(i));
}

// SelectiveScan (kGated false) and MambaScan (kGated true: softplus step, z gate).
template <bool kGated>
Status* compute_scan(void*, KernelContext* ctx) {
  static constexpr const char* op = kGated ? "MambaScan" : "SelectiveScan";
  static constexpr const char* const names[8] = {"u", "delta", "A", "B", "C", "D", "state", "z"};
  constexpr size_t kCount = kGated ? 8 : 7;
  Operand in[kCount];
  SEQEDGE_ORT_TRY(read_operands(ctx, op, names, kCount, in));
  scan_core::Shapes shapes{};
  for (size_t i = 0; i < 7; ++i) {
    shapes.rank[i] = in[i].rank;
    for (int k = 0; k < 3; ++k) shapes.dims[i][k] = in[i].dims[k];
  }
  if (const char* bad = scan_core::scan_shape_error(shapes)) return fail(op, bad);
  if (kGated && (in[kCount - 1].rank != 3 || !std::equal(in[0].dims, in[0].dims + 3, in[kCount - 1].dims)))
    return fail(op, "z must have u's shape (Bt, T, D)");
  float *y = nullptr, *state = nullptr;
  SEQEDGE_ORT_TRY(make_outputs(ctx, in[0], in[6], &y, &state));
  scan_core::Scan scan{in[0].data, in[1].data, in[2].data, in[3].data, in[4].data, in[5].data, in[6].data, y, state,
                       in[0].dims[0], in[0].dims[1], in[0].dims[2], in[2].dims[1]};
  if (kGated) {
    scan.z = in[kCount - 1].data;
    scan.delta_softplus = true;
  }
  const int64_t items = scan_core::scan_items(scan);
  if (items == 0) return nullptr;
  for (int64_t c = 0; c < scan_core::time_chunks(scan); ++c) {  // a long prompt in chunks of time
    scan_core::Scan part = scan_core::time_chunk(scan, c);
    SEQEDGE_ORT_TRY(parallel_for(ctx, run_item<scan_core::Scan, scan_core::scan_item>,
                                        static_cast<size_t>(items), 0, &part));
  }
  return nullptr;
}

Status* compute_conv(void*, KernelContext* ctx) {
  static constexpr const char* op = "CausalConv1d";
  static constexpr const char* const names[4] = {"x", "weight", "bias", "state"};
  Operand in[4];
  SEQEDGE_ORT_TRY(read_operands(ctx, op, names, 4, in));
  int64_t dims[4][3], rank[4];
  for (int i = 0; i < 4; ++i) {
    rank[i] = in[i].rank;
    std::copy(in[i].dims, in[i].dims + 3, dims[i]);
  }
  if (const char* bad = conv_core::conv_shape_error(dims, rank)) return fail(op, bad);
  float *y = nullptr, *state = nullptr;
  SEQEDGE_ORT_TRY(make_outputs(ctx, in[0], in[3], &y, &state));
  const conv_core::Conv conv{in[0].data, in[1].data, in[2].data, in[3].data, y, state,
                             in[0].dims[0], in[0].dims[1], in[0].dims[2], in[1].dims[2]};
  const int64_t items = conv_core::conv_items(conv);
  if (items == 0) return nullptr;
  return parallel_for(ctx, run_item<conv_core::Conv, conv_core::conv_item>, static_cast<size_t>(items), 0,
                             const_cast<conv_core::Conv*>(&conv));
}

void run_quantize(void* work, size_t m) {
  int4_core::quantize_row(*static_cast<const int4_core::MatMul*>(work), static_cast<int64_t>(m));
}

// Int4MatMul's products, one per output: output j is rows [first row j, + its count) of B, sharing the quantized
// activations, then the bias of those rows added. Items are numbered across the outputs.
constexpr size_t kMaxOutputs = 3;
struct Products {
  int4_core::MatMul part[kMaxOutputs];
  int64_t first_row[kMaxOutputs] = {};
  int64_t first_item[kMaxOutputs + 1] = {};
  size_t count = 1;
  const float* bias = nullptr;  // (N) or nullptr
};

void run_products(void* work, size_t i) {
  const Products& w = *static_cast<const Products*>(work);
  size_t j = 0;
  while (j + 1 < w.count && static_cast<int64_t>(i) >= w.first_item[j + 1]) ++j;
  const int4_core::MatMul& p = w.part[j];
  const int64_t local = static_cast<int64_t>(i) - w.first_item[j];
  int4_core::item(p, local);
  if (w.bias == nullptr) return;
  const int64_t per = int4_core::item_rows(p);
  const int64_t n0 = local * per, rows = std::min(per, p.N - n0);
  const float* b = w.bias + w.first_row[j] + n0;
  for (int64_t m = 0; m < p.M; ++m) {
    float* y = p.y + m * p.N + n0;
    for (int64_t r = 0; r < rows; ++r) y[r] += b[r];
  }
}

// An int4 product's three inputs from `first` on (0: an Int4MatMul's first three): A (..., K) float32,
// B (N, ceil(K/32), 16) uint8, scales (N, ceil(K/32)) float16, checked before anything is read; M the rows of A, yd
// the product's dims (..., N).
struct Int4Operands {
  const float* a;
  const uint8_t* codes;
  const uint16_t* scales;
  int64_t M = 1, K, N, nb, yd[4];
  size_t rank = 0;
  bool grouped = false;  // B and scales in groups of 16 rows (int4_matmul_core.h's interleaved layout)
};

Status* read_int4(const KernelContext* ctx, const char* op, Int4Operands* x, size_t first = 0) {
  int64_t ad[4], bd[4], sd[4];
  size_t br = 0, sr = 0;
  const void *a = nullptr, *b = nullptr, *s = nullptr;
  SEQEDGE_ORT_TRY(read_typed(ctx, op, first, "A", kFloat, "float32", 1, 4, ad, &x->rank, &a));
  SEQEDGE_ORT_TRY(read_typed(ctx, op, first + 1, "B", kUint8, "uint8", 3, 4, bd, &br, &b));
  SEQEDGE_ORT_TRY(read_typed(ctx, op, first + 2, "scales", kFloat16, "float16", 1, 4, sd, &sr, &s));
  x->K = ad[x->rank - 1];
  x->grouped = br == 3 && bd[2] == int4_core::kGroupBlockBytes;  // (N/16, ceil(K/32), 256): groups of 16 rows
  x->N = bd[0] * (x->grouped ? 16 : 1);
  if (const char* bad = int4_core::shape_error(x->K, x->N)) return fail(op, bad);
  x->nb = int4_core::blocks(x->K);
  if (br != 3 || bd[1] != x->nb || (!x->grouped && bd[2] != int4_core::kRowBlockBytes))
    return fail(op, "B must be (N, ceil(K/32), 16) or (N/16, ceil(K/32), 256) for A's K");
  int64_t scale_count = 1;
  for (size_t i = 0; i < sr; ++i) scale_count *= sd[i];
  if (x->grouped ? sr != 3 || sd[0] != bd[0] || sd[1] != x->nb || sd[2] != 16
                 : sr > 2 || sd[0] != (sr == 2 ? x->N : x->N * x->nb) || scale_count != x->N * x->nb)
    return fail(op, x->grouped ? "scales must be (N/16, ceil(K/32), 16) float16 for B's groups"
                               : "scales must be (N, ceil(K/32)) float16");
  for (size_t i = 0; i + 1 < x->rank; ++i) {
    x->M *= ad[i];
    x->yd[i] = ad[i];
  }
  x->yd[x->rank - 1] = x->N;
  x->a = static_cast<const float*>(a);
  x->codes = static_cast<const uint8_t*>(b);
  x->scales = static_cast<const uint16_t*>(s);
  return nullptr;
}

// A decode step's items in this many contiguous runs (one a core; onnxruntime hands the runs to its threads):
// onnxruntime's own split of items hands them out one at a time, so a thread's prefetch of the rows 8 KB ahead
// (int4_matmul_core.h) fetched rows the other thread took. Two builds alternated in one process (2 threads, 16
// loads of 150 steps): llama-135m int4 decode x1.14 (IQR 1.11-1.18), mamba-130m x1.07 (1.02-1.17). A prompt's
// items are whole tiles, split as onnxruntime splits them.
size_t decode_batches() {
  if (const int64_t n = known_threads()) return static_cast<size_t>(n);
  static const size_t n = std::max(2u, std::thread::hardware_concurrency());
  return n;
}

// The activations quantized (split over the pool from kParallelRows rows), then the products' items (`each(data,
// item)` for every item: run_products on `work` unless told otherwise).
Status* run_int4(KernelContext* ctx, Products& work, void (*each)(void*, size_t) = run_products, void* data = nullptr) {
  const int4_core::MatMul& first = work.part[0];
  if (first.M < int4_core::kParallelRows) {  // decode: a dispatch to the pool costs more than the rows
    for (int64_t m = 0; m < first.M; ++m) int4_core::quantize_row(first, m);
  } else {
    SEQEDGE_ORT_TRY(parallel_for(ctx, run_quantize, static_cast<size_t>(first.M), 0,
                                        const_cast<int4_core::MatMul*>(&first)));
  }
  for (size_t j = 0; j < work.count; ++j) work.first_item[j + 1] = work.first_item[j] + int4_core::items(work.part[j]);
  const size_t batches = first.M < int4_core::kParallelRows ? decode_batches() : 0;
  return parallel_for(ctx, each, static_cast<size_t>(work.first_item[work.count]), batches,
                             data != nullptr ? data : &work);
}

// Optional input i, a float32 bias (N), N the rows of the codes called `rows`; *bias left null when absent.
Status* read_bias(const KernelContext* ctx, const char* op, size_t i, const char* name, const char* rows, int64_t N,
                  const float** bias) {
  const Value* given = nullptr;
  SEQEDGE_ORT_TRY(g_api->input(ctx, i, &given));
  if (given == nullptr) return nullptr;
  int64_t dims[4];
  size_t rank = 0;
  const void* data = nullptr;
  SEQEDGE_ORT_TRY(read_typed(ctx, op, i, name, kFloat, "float32", 1, 1, dims, &rank, &data));
  if (dims[0] != N) return fail(op, std::string(name) + " must be (N), N the rows of " + rows);
  *bias = static_cast<const float*>(data);
  return nullptr;
}

// An int4 product's optional bias (input 3, float32 (N)) and split (input 4, int64, one size per output, summing to
// N; multiples of 16 for grouped codes), of `n` inputs and `outs` outputs; `sizes` gets the split's sizes.
Status* read_bias_split(const KernelContext* ctx, const char* op, size_t n, size_t outs, const Int4Operands& x,
                        const float** bias, int64_t* sizes) {
  const int64_t N = x.N;
  if (n > 3) SEQEDGE_ORT_TRY(read_bias(ctx, op, 3, "bias", "B", N, bias));
  const Value* split = nullptr;
  if (n > 4) SEQEDGE_ORT_TRY(g_api->input(ctx, 4, &split));
  if ((split != nullptr) != (outs > 1)) return fail(op, "split must be given exactly when there are 2 or 3 outputs");
  if (split != nullptr) {
    int64_t split_dims[4];
    size_t split_rank = 0;
    const void* data = nullptr;
    SEQEDGE_ORT_TRY(read_typed(ctx, op, 4, "split", kInt64, "int64", 1, 1, split_dims, &split_rank, &data));
    if (split_dims[0] != static_cast<int64_t>(outs)) return fail(op, "split must hold one size per output");
    int64_t total = 0;
    for (size_t j = 0; j < outs; ++j) {
      sizes[j] = static_cast<const int64_t*>(data)[j];
      if (sizes[j] <= 0 || sizes[j] > N) return fail(op, "split's sizes must be positive and sum to N");
      total += sizes[j];
    }
    if (total != N) return fail(op, "split's sizes must be positive and sum to N");
    for (size_t j = 0; j < outs && x.grouped; ++j)
      if (sizes[j] % 16 != 0) return fail(op, "split's sizes must be multiples of 16 when B is in groups of 16 rows");
  }
  return nullptr;
}

// Output j of an int4 product: dims `yd` (rank `ar`) with the last one `last`.
Status* int4_output(KernelContext* ctx, size_t j, int64_t* yd, size_t ar, int64_t last, float** y) {
  yd[ar - 1] = last;
  Value* yv = nullptr;
  void* data = nullptr;
  SEQEDGE_ORT_TRY(g_api->output(ctx, j, yd, ar, &yv));
  SEQEDGE_ORT_TRY(g_api->data(yv, &data));
  *y = static_cast<float*>(data);
  return nullptr;
}

// The products of one Int4MatMul: output j is rows [first_row[j], + sizes[j]) of B into y[j], the activations (and
// the scratch) shared.
Products make_products(const Int4Operands& x, float* const* y, const int64_t* sizes, size_t outs, const float* bias,
                       bool swiglu, std::vector<uint8_t>& scratch) {
  Products work;
  work.count = outs;
  work.bias = bias;
  work.part[0] = int4_core::prepare(x.a, x.codes, x.scales, y[0], x.M, swiglu ? x.N : sizes[0], x.K, swiglu, scratch,
                                    x.grouped);
  for (size_t j = 1; j < outs; ++j) {  // the same activations (and scratch); the next rows of B
    work.first_row[j] = work.first_row[j - 1] + sizes[j - 1];
    work.part[j] = work.part[0];
    work.part[j].w = x.codes + work.first_row[j] * x.nb * 16;
    work.part[j].scales = x.scales + work.first_row[j] * x.nb;
    work.part[j].y = y[j];
    work.part[j].N = sizes[j];
  }
  return work;
}

// Int4MatMul(A, B, scales[, bias][, split]) -> Y[, Y1[, Y2]]: with more than one output, the product is split
// along its last axis into outputs of `split`'s sizes (int64, one per output, summing to N) — Mamba's in_proj
// (x, z) and x_proj (dt, B, C) — and a bias (N) float32 is added to it, as the Split and Add it replaces did.
// Int4MatMulSwiGLU(A, B, scales) -> Y.
template <bool kSwiGLU>
Status* compute_int4(void*, KernelContext* ctx) {
  static constexpr const char* op = kSwiGLU ? "Int4MatMulSwiGLU" : "Int4MatMul";
  size_t n = 0, outs = 0;
  SEQEDGE_ORT_TRY(g_api->input_count(ctx, &n));
  SEQEDGE_ORT_TRY(g_api->output_count(ctx, &outs));
  if (n < 3 || n > (kSwiGLU ? 3 : 5)) return fail(op, kSwiGLU ? "expects 3 inputs" : "expects 3 to 5 inputs");
  if (outs < 1 || outs > (kSwiGLU ? 1 : kMaxOutputs)) return fail(op, "expects 1 to 3 outputs");
  Int4Operands x;
  SEQEDGE_ORT_TRY(read_int4(ctx, op, &x));
  const int64_t N = x.N, M = x.M;
  const size_t ar = x.rank;
  int64_t* yd = x.yd;
  if (kSwiGLU && N % (x.grouped ? 32 : 2) != 0)
    return fail(op, x.grouped ? "N (rows of B) must be a multiple of 32 in groups: gate and up halves"
                              : "N (rows of B) must be even: gate and up halves");
  const float* bias = nullptr;
  int64_t sizes[kMaxOutputs] = {kSwiGLU ? N / 2 : N};
  SEQEDGE_ORT_TRY(read_bias_split(ctx, op, n, outs, x, &bias, sizes));
  float* y[kMaxOutputs] = {};
  for (size_t j = 0; j < outs; ++j) SEQEDGE_ORT_TRY(int4_output(ctx, j, yd, ar, sizes[j], &y[j]));
  if (M == 0) return nullptr;
  thread_local std::vector<uint8_t> scratch;  // reused across calls: a prompt's rows would be a fresh mapping each time
  Products work = make_products(x, y, sizes, outs, bias, kSwiGLU, scratch);
  return run_int4(ctx, work);
}

// Int4MatMulConv(A, B, scales, bias, split, weight, conv_bias, state) -> (y, z, state_out): Mamba's in_proj and the
// convolution after it as one node: the product (+ bias when given) split into x | z by split's two sizes, x through
// CausalConv1d (weight (D, 1, K), conv_bias (D), state (Bt, D, K-1); SiLU after it) into y (Bt, T, D), x's D its
// first size. One node where there were two, and in a decode step no pool dispatch of its own for the convolution:
// each 16 channels are convolved by the thread that computed them, right after (one item of the product is one
// block of the convolution, its x written in place). A prompt's x is computed whole into scratch, then convolved.
struct ConvProducts {
  Products* products;
  conv_core::Conv conv;
  int64_t blocks = 0;  // 16-channel blocks of x: output 0's items
};

void run_conv_products(void* work, size_t i) {
  const ConvProducts& w = *static_cast<const ConvProducts*>(work);
  run_products(w.products, i);
  if (static_cast<int64_t>(i) < w.blocks)
    for (int64_t b = 0; b < w.conv.Bt; ++b) conv_core::conv_item(w.conv, b * w.blocks + static_cast<int64_t>(i));
}

Status* compute_int4_conv(void*, KernelContext* ctx) {
  static constexpr const char* op = "Int4MatMulConv";
  size_t n = 0, outs = 0;
  SEQEDGE_ORT_TRY(g_api->input_count(ctx, &n));
  SEQEDGE_ORT_TRY(g_api->output_count(ctx, &outs));
  if (n != 8 || outs != 3) return fail(op, "expects 8 inputs and 3 outputs");
  Int4Operands x;
  SEQEDGE_ORT_TRY(read_int4(ctx, op, &x));
  if (x.rank != 3) return fail(op, "A must be (Bt, T, K)");
  const float* bias = nullptr;
  int64_t sizes[kMaxOutputs] = {x.N};
  SEQEDGE_ORT_TRY(read_bias_split(ctx, op, 5, 2, x, &bias, sizes));
  static constexpr const char* const names[3] = {"weight", "conv_bias", "state"};
  Operand in[3];
  for (size_t i = 0; i < 3; ++i) SEQEDGE_ORT_TRY(read_operand(ctx, op, 5 + i, names[i], &in[i]));
  const int64_t Bt = x.yd[0], T = x.yd[1], D = sizes[0];
  int64_t dims[4][3] = {{Bt, T, D}}, rank[4] = {3};
  for (int i = 0; i < 3; ++i) {
    rank[i + 1] = in[i].rank;
    std::copy(in[i].dims, in[i].dims + 3, dims[i + 1]);
  }
  if (const char* bad = conv_core::conv_shape_error(dims, rank)) return fail(op, bad);
  float* y[kMaxOutputs] = {};
  SEQEDGE_ORT_TRY(int4_output(ctx, 0, x.yd, 3, D, &y[0]));
  SEQEDGE_ORT_TRY(int4_output(ctx, 1, x.yd, 3, sizes[1], &y[1]));
  const int64_t width = dims[1][2], state_dims[3] = {Bt, D, width - 1};
  Value* sv = nullptr;
  void* state_out = nullptr;
  SEQEDGE_ORT_TRY(g_api->output(ctx, 2, state_dims, 3, &sv));
  SEQEDGE_ORT_TRY(g_api->data(sv, &state_out));
  if (x.M == 0) return nullptr;
  thread_local std::vector<uint8_t> scratch;
  thread_local std::vector<float> raw;  // a prompt's x before its convolution
  // a decode step's items are 16 output rows each: the convolution's blocks, x convolved where it lies
  const bool each_item = T == 1 && x.M < int4_core::kParallelRows && D % conv_core::kLanes == 0;
  float* xs = y[0];
  if (!each_item) {
    raw.resize(static_cast<size_t>(x.M * D));
    xs = raw.data();
  }
  float* const targets[2] = {xs, y[1]};
  Products work = make_products(x, targets, sizes, 2, bias, false, scratch);
  ConvProducts fused{&work, conv_core::Conv{xs, in[0].data, in[1].data, in[2].data, y[0],
                                            static_cast<float*>(state_out), Bt, T, D, width},
                     D / conv_core::kLanes};
  if (each_item && int4_core::item_rows(work.part[0]) == conv_core::kLanes)
    return run_int4(ctx, work, run_conv_products, &fused);
  SEQEDGE_ORT_TRY(run_int4(ctx, work));  // x whole first (a step's in place: a block reads its x before writing y)
  return parallel_for(ctx, run_item<conv_core::Conv, conv_core::conv_item>,
                             static_cast<size_t>(conv_core::conv_items(fused.conv)), 0, &fused.conv);
}

// Int4MambaScan(u, dt, dt_codes, dt_scales, dt_bias, A, B, C, D, state, z) -> (y, state_out): MambaScan whose step
// is Mamba's dt_proj, an int4 product of dt (Bt, T, R) (codes and scales as Int4MatMul takes them, N = D rows; bias
// (D) or empty) computed inside: one node where there were two, and a decode step runs each 16 channels' product
// and their scan on one thread, with no dispatch for the product. A prompt's steps are computed whole into scratch,
// then scanned in chunks of time as MambaScan does.
struct ScanProducts {
  Products* products;
  scan_core::Scan scan;
  int64_t blocks = 0;  // 16-channel blocks: the product's items
};

void run_scan_products(void* work, size_t i) {
  const ScanProducts& w = *static_cast<const ScanProducts*>(work);
  run_products(w.products, i);
  for (int64_t b = 0; b < w.scan.Bt; ++b) scan_core::scan_item(w.scan, b * w.blocks + static_cast<int64_t>(i));
}

Status* compute_int4_scan(void*, KernelContext* ctx) {
  static constexpr const char* op = "Int4MambaScan";
  static constexpr const char* const names[11] = {"u", "", "", "", "", "A", "B", "C", "D", "state", "z"};
  static constexpr size_t kScanInputs[7] = {0, 5, 6, 7, 8, 9, 10};  // u, A, B, C, D, state, z
  size_t n = 0;
  SEQEDGE_ORT_TRY(g_api->input_count(ctx, &n));
  if (n != 11) return fail(op, "expects 11 inputs");
  Int4Operands x;
  SEQEDGE_ORT_TRY(read_int4(ctx, op, &x, 1));
  const float* bias = nullptr;
  int64_t sizes[kMaxOutputs] = {x.N};
  SEQEDGE_ORT_TRY(read_bias(ctx, op, 4, "dt_bias", "dt_codes", x.N, &bias));
  Operand in[7];
  for (size_t k = 0; k < 7; ++k)
    SEQEDGE_ORT_TRY(read_operand(ctx, op, kScanInputs[k], names[kScanInputs[k]], &in[k]));
  const Operand &u = in[0], &z = in[6];
  if (x.rank != 3 || u.rank != 3 || x.yd[0] != u.dims[0] || x.yd[1] != u.dims[1] || x.N != u.dims[2])
    return fail(op, "dt must be (Bt, T, R) and dt_codes hold D rows, for u (Bt, T, D)");
  scan_core::Shapes shapes{};
  for (size_t k = 0; k < 6; ++k) {  // u, delta (u's shape: the product's), A, B, C, D, state
    const Operand& o = k == 0 ? u : in[k];
    shapes.rank[k + (k > 0)] = o.rank;
    for (int d = 0; d < 3; ++d) shapes.dims[k + (k > 0)][d] = o.dims[d];
  }
  shapes.rank[1] = 3;
  std::copy(u.dims, u.dims + 3, shapes.dims[1]);
  if (const char* bad = scan_core::scan_shape_error(shapes)) return fail(op, bad);
  if (z.rank != 3 || !std::equal(u.dims, u.dims + 3, z.dims)) return fail(op, "z must have u's shape (Bt, T, D)");
  float *y = nullptr, *state = nullptr;
  SEQEDGE_ORT_TRY(make_outputs(ctx, u, in[5], &y, &state));
  const int64_t Bt = u.dims[0], T = u.dims[1], Dm = u.dims[2];
  if (x.M == 0 || Dm == 0) return nullptr;
  thread_local std::vector<uint8_t> scratch;
  thread_local std::vector<float> steps;  // the product: each channel's step before its softplus
  steps.resize(static_cast<size_t>(Bt * T * Dm));
  float* const targets[1] = {steps.data()};
  Products work = make_products(x, targets, sizes, 1, bias, false, scratch);
  scan_core::Scan scan{u.data, steps.data(), in[1].data, in[2].data, in[3].data, in[4].data, in[5].data, y, state,
                       Bt, T, Dm, in[1].dims[1]};
  scan.z = z.data;
  scan.delta_softplus = true;
  if (T == 1 && x.M < int4_core::kParallelRows && Dm % scan_core::kLanes == 0 &&
      int4_core::item_rows(work.part[0]) == scan_core::kLanes) {
    ScanProducts fused{&work, scan, Dm / scan_core::kLanes};
    return run_int4(ctx, work, run_scan_products, &fused);
  }
  SEQEDGE_ORT_TRY(run_int4(ctx, work));
  const int64_t items = scan_core::scan_items(scan);
  for (int64_t c = 0; c < scan_core::time_chunks(scan); ++c) {  // a long prompt in chunks of time
    scan_core::Scan part = scan_core::time_chunk(scan, c);
    SEQEDGE_ORT_TRY(parallel_for(ctx, run_item<scan_core::Scan, scan_core::scan_item>,
                                        static_cast<size_t>(items), 0, &part));
  }
  return nullptr;
}

// Int4Gather(B, scales, indices) -> Y: the rows `indices` (int64, rank 1-3) of an int4 weight (B and scales as
// Int4MatMul takes them, either layout), dequantized: Y (..., ceil(K/32) * 32) float32. A tied embedding reads its
// head's codes so, in groups of 16 rows where GatherBlockQuantized could only read rows. Every index is checked
// against B's rows before anything is written.
Status* compute_int4_gather(void*, KernelContext* ctx) {
  static constexpr const char* op = "Int4Gather";
  int64_t bd[4], sd[4], id[4];
  size_t br = 0, sr = 0, ir = 0;
  const void *b = nullptr, *s = nullptr, *ix = nullptr;
  SEQEDGE_ORT_TRY(read_typed(ctx, op, 0, "B", kUint8, "uint8", 3, 3, bd, &br, &b));
  SEQEDGE_ORT_TRY(read_typed(ctx, op, 1, "scales", kFloat16, "float16", 2, 3, sd, &sr, &s));
  SEQEDGE_ORT_TRY(read_typed(ctx, op, 2, "indices", kInt64, "int64", 1, 3, id, &ir, &ix));
  const bool grouped = bd[2] == int4_core::kGroupBlockBytes;
  if (!grouped && bd[2] != int4_core::kRowBlockBytes) return fail(op, "B must be (N, blocks, 16) or (N/16, blocks, 256)");
  const int64_t N = bd[0] * (grouped ? 16 : 1), nb = bd[1];
  if (N <= 0 || nb <= 0) return fail(op, "B must have rows and blocks");
  if (grouped ? sr != 3 || sd[0] != bd[0] || sd[1] != nb || sd[2] != 16 : sr != 2 || sd[0] != N || sd[1] != nb)
    return fail(op, "scales must be (N, blocks) float16, or (N/16, blocks, 16) for B's groups");
  int64_t count = 1, yd[4];
  for (size_t i = 0; i < ir; ++i) count *= yd[i] = id[i];
  yd[ir] = nb * int4_core::kBlock;
  const auto* rows = static_cast<const int64_t*>(ix);
  for (int64_t i = 0; i < count; ++i)
    if (rows[i] < 0 || rows[i] >= N) return fail(op, "indices must be in [0, N), N the rows of B");
  Value* yv = nullptr;
  void* y = nullptr;
  SEQEDGE_ORT_TRY(g_api->output(ctx, 0, yd, ir + 1, &yv));
  SEQEDGE_ORT_TRY(g_api->data(yv, &y));
  for (int64_t i = 0; i < count; ++i)
    int4_core::dequantize_row(static_cast<const uint8_t*>(b), static_cast<const uint16_t*>(s), nb, grouped, rows[i],
                              static_cast<float*>(y) + i * yd[ir]);
  return nullptr;
}

void run_norm_rows(void* work, size_t r) {
  const auto& norm = *static_cast<const norm_core::Norm*>(work);
  norm_core::rows(norm, static_cast<int64_t>(r), static_cast<int64_t>(r) + 1);
}

// Int4MatMulSkipRmsNorm(A, B, scales, skip, gamma, epsilon) -> (normed, sum): sum = A·Bᵀ + skip, normed =
// sum / sqrt(mean(sum², last axis) + epsilon) * gamma — an int4 projection and the residual add + RMSNorm after it
// (onnxruntime's SkipSimplifiedLayerNormalization) as one node. skip (..., N) as the product, gamma (N), epsilon
// one float32. The product is written into `sum`, then each row normalised.
Status* compute_int4_norm(void*, KernelContext* ctx) {
  static constexpr const char* op = "Int4MatMulSkipRmsNorm";
  size_t n = 0;
  SEQEDGE_ORT_TRY(g_api->input_count(ctx, &n));
  if (n != 6) return fail(op, "expects 6 inputs (A, B, scales, skip, gamma, epsilon)");
  Int4Operands x;
  SEQEDGE_ORT_TRY(read_int4(ctx, op, &x));
  int64_t kd[4], gd[4], ed[4];
  size_t kr = 0, gr = 0, er = 0;
  const void *skip = nullptr, *gamma = nullptr, *eps = nullptr;
  SEQEDGE_ORT_TRY(read_typed(ctx, op, 3, "skip", kFloat, "float32", 1, 4, kd, &kr, &skip));
  SEQEDGE_ORT_TRY(read_typed(ctx, op, 4, "gamma", kFloat, "float32", 1, 1, gd, &gr, &gamma));
  SEQEDGE_ORT_TRY(read_typed(ctx, op, 5, "epsilon", kFloat, "float32", 0, 1, ed, &er, &eps));
  if (kr != x.rank || !std::equal(kd, kd + kr, x.yd)) return fail(op, "skip must have the product's shape (..., N)");
  if (gd[0] != x.N) return fail(op, "gamma must be (N), N the rows of B");
  if (er == 1 && ed[0] != 1) return fail(op, "epsilon must be one value");
  Value *nv = nullptr, *sv = nullptr;
  void *normed = nullptr, *sum = nullptr;
  SEQEDGE_ORT_TRY(g_api->output(ctx, 0, x.yd, x.rank, &nv));
  SEQEDGE_ORT_TRY(g_api->output(ctx, 1, x.yd, x.rank, &sv));
  SEQEDGE_ORT_TRY(g_api->data(nv, &normed));
  SEQEDGE_ORT_TRY(g_api->data(sv, &sum));
  if (x.M == 0) return nullptr;
  thread_local std::vector<uint8_t> scratch;
  Products work;
  work.part[0] = int4_core::prepare(x.a, x.codes, x.scales, static_cast<float*>(sum), x.M, x.N, x.K, false, scratch,
                                    x.grouped);
  SEQEDGE_ORT_TRY(run_int4(ctx, work));
  norm_core::Norm norm{static_cast<float*>(sum), static_cast<const float*>(gamma), static_cast<float*>(normed), x.M,
                       x.N, *static_cast<const float*>(eps), static_cast<const float*>(skip), static_cast<float*>(sum)};
  if (x.M < int4_core::kParallelRows) {
    norm_core::rows(norm, 0, x.M);
    return nullptr;
  }
  return parallel_for(ctx, run_norm_rows, static_cast<size_t>(x.M), 0, &norm);
}

// The caller's threads for attention_tile.h / attention_decode.h: fn(begin, end) over [0, n) through parallel_for
// (items one at a time, or in `batches` contiguous runs); the first failure is kept for the op to return.
struct Pool {
  const KernelContext* ctx;
  size_t batches = 0;
  Status* status = nullptr;
  template <class Fn>
  void operator()(int64_t n, const Fn& fn) {
    if (status != nullptr) return;
    const auto each = [](void* f, size_t i) { (*static_cast<const Fn*>(f))(static_cast<int64_t>(i), static_cast<int64_t>(i) + 1); };
    status = parallel_for(ctx, each, static_cast<size_t>(n), batches, const_cast<Fn*>(&fn));
  }
};

// A call of kTilePositions positions or more is a prompt, attended in tiles (ExecuTorch's rule, two positions per
// thread, at the two threads seqedge runs phones on); fewer are steps. A step's keys are split into as many work
// items per position as the team has threads, each thread one contiguous run of them (attention_decode.h's
// attend_all: the items a multiple of the threads). On onnxruntime's pool, whose size a kernel is not told, into
// about kDecodeSplit (even on 2, 4 or 8 threads; each range keeps >= 64 keys), handed out one at a time. Each
// item starts its stream of rows cold: llama-135m's 30 layers at 1,024 float16 positions on a team of 2 threads,
// 6 items a position 20.0-20.4 us a layer, 18 items (kDecodeSplit) 24.1-27.9.
constexpr int64_t kTilePositions = 4;
constexpr int64_t kDecodeSplit = 16;

// The caches in float32 (C = float) or float16 (C = uint16_t, the bits): the op is registered for both.
template <class C>
Status* compute_attention(void*, KernelContext* ctx) {
  static constexpr const char* op = "Attention";
  constexpr bool kHalf = std::is_same_v<C, uint16_t>;
  constexpr int kCacheType = kHalf ? kFloat16 : kFloat;
  constexpr const char* kCacheTypeName = kHalf ? "float16" : "float32";
  size_t n = 0;
  SEQEDGE_ORT_TRY(g_api->input_count(ctx, &n));
  if (n != 8) return fail(op, "expects 8 inputs (q, k, v, k_cache, v_cache, pos, cos, sin)");
  const Value *kv_in[2] = {nullptr, nullptr};
  SEQEDGE_ORT_TRY(g_api->input(ctx, 1, &kv_in[0]));
  SEQEDGE_ORT_TRY(g_api->input(ctx, 2, &kv_in[1]));
  if ((kv_in[0] == nullptr) != (kv_in[1] == nullptr)) return fail(op, "k and v must be both given or both absent");
  const bool packed = kv_in[0] == nullptr;
  int64_t qd[4], kd[4], vd[4], kcd[4], vcd[4], pd[4], cd[4], sd[4];
  size_t qr = 0, kr = 0, vr = 0, kcr = 0, vcr = 0, pr = 0, cr = 0, sr = 0;
  const void *q = nullptr, *k = nullptr, *v = nullptr, *kc = nullptr, *vc = nullptr, *pp = nullptr, *cs = nullptr,
             *sn = nullptr;
  SEQEDGE_ORT_TRY(read_typed(ctx, op, 0, "q", kFloat, "float32", 3, 3, qd, &qr, &q));
  if (!packed) {
    SEQEDGE_ORT_TRY(read_typed(ctx, op, 1, "k", kFloat, "float32", 3, 3, kd, &kr, &k));
    SEQEDGE_ORT_TRY(read_typed(ctx, op, 2, "v", kFloat, "float32", 3, 3, vd, &vr, &v));
  }
  SEQEDGE_ORT_TRY(read_typed(ctx, op, 3, "k_cache", kCacheType, kCacheTypeName, 4, 4, kcd, &kcr, &kc));
  SEQEDGE_ORT_TRY(read_typed(ctx, op, 4, "v_cache", kCacheType, kCacheTypeName, 4, 4, vcd, &vcr, &vc));
  SEQEDGE_ORT_TRY(read_typed(ctx, op, 5, "pos", kInt64, "int64", 0, 1, pd, &pr, &pp));
  SEQEDGE_ORT_TRY(read_typed(ctx, op, 6, "cos", kFloat, "float32", 2, 2, cd, &cr, &cs));
  SEQEDGE_ORT_TRY(read_typed(ctx, op, 7, "sin", kFloat, "float32", 2, 2, sd, &sr, &sn));
  const int64_t B = qd[0], T = qd[1], Hkv = kcd[1], S = kcd[2], D = kcd[3];
  if (!std::equal(kcd, kcd + 4, vcd)) return fail(op, "k_cache and v_cache must have one shape (B, Hkv, S, D)");
  if (kcd[0] != B || Hkv <= 0 || D <= 0 || D % 2 != 0 || D > tile_core::kMaxHeadDim)
    return fail(op, "the caches must be (B, Hkv, S, D) for q's B, with an even D of at most 512");
  const int64_t q_width = packed ? qd[2] - 2 * Hkv * D : qd[2];
  if (q_width <= 0 || q_width % (Hkv * D) != 0)
    return fail(op, packed ? "packed q must be (B, T, (Hq + 2 Hkv) D), Hq a multiple of the caches' Hkv"
                           : "q must be (B, T, Hq D), Hq a multiple of the caches' Hkv");
  const int64_t Hq = q_width / D;
  for (const int64_t* d : {kd, vd})
    if (!packed && (d[0] != B || d[1] != T || d[2] != Hkv * D)) return fail(op, "k and v must be (B, T, Hkv D)");
  if (pr == 1 && pd[0] != 1) return fail(op, "pos must hold one position");
  const int64_t pos = *static_cast<const int64_t*>(pp);
  if (cd[1] != D / 2 || sd[0] != cd[0] || sd[1] != cd[1]) return fail(op, "cos and sin must be (positions, D / 2)");
  if (pos < 0 || pos + T > S || pos + T > cd[0])
    return fail(op, "pos + T is past the cache (or the rotary tables): positions [" + std::to_string(pos) + ", " +
                        std::to_string(pos + T) + ") of " + std::to_string(std::min(S, cd[0])));
  const int64_t out_dims[3] = {B, T, Hq * D};
  Value *ov = nullptr, *kov = nullptr, *vov = nullptr;
  void *out = nullptr, *ko = nullptr, *vo = nullptr;
  SEQEDGE_ORT_TRY(g_api->output(ctx, 0, out_dims, 3, &ov));
  SEQEDGE_ORT_TRY(g_api->output(ctx, 1, kcd, 4, &kov));
  SEQEDGE_ORT_TRY(g_api->output(ctx, 2, vcd, 4, &vov));
  SEQEDGE_ORT_TRY(g_api->data(ov, &out));
  SEQEDGE_ORT_TRY(g_api->data(kov, &ko));
  SEQEDGE_ORT_TRY(g_api->data(vov, &vo));
  if (B == 0 || T == 0) return nullptr;
  auto* kcache = static_cast<C*>(ko);
  auto* vcache = static_cast<C*>(vo);
  for (const auto& [from, to] : {std::pair{static_cast<const C*>(kc), kcache}, std::pair{static_cast<const C*>(vc), vcache}})
    if (from != to)  // not updated in place: the earlier positions first
      for (int64_t bh = 0; bh < B * Hkv; ++bh) std::memcpy(to + bh * S * D, from + bh * S * D, sizeof(C) * pos * D);

  // RoPE: q into scratch (B, T, Hq, D); k rotated and v copied into the caches at [pos, pos + T)
  const int64_t row = qd[2];  // floats per position of q (of q, k and v when packed)
  const float* qs = static_cast<const float*>(q);
  const float* ks = packed ? qs + Hq * D : static_cast<const float*>(k);
  const float* vs = packed ? qs + (Hq + Hkv) * D : static_cast<const float*>(v);
  const int64_t kv_row = packed ? row : Hkv * D;
  thread_local std::vector<float> rotated, key;
  rotated.resize(static_cast<size_t>(B * T * Hq * D));
  key.resize(static_cast<size_t>(D));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const float* c = static_cast<const float*>(cs) + (pos + t) * (D / 2);
      const float* s = static_cast<const float*>(sn) + (pos + t) * (D / 2);
      const int64_t at = b * T + t;
      for (int64_t h = 0; h < Hq; ++h) rope_core::rotate(qs + at * row + h * D, c, s, D, rotated.data() + (at * Hq + h) * D);
      for (int64_t h = 0; h < Hkv; ++h) {
        const int64_t slot = ((b * Hkv + h) * S + pos + t) * D;
        if constexpr (kHalf) {
          rope_core::rotate(ks + at * kv_row + h * D, c, s, D, key.data());
          floats_to_halves(key.data(), kcache + slot, D);
          floats_to_halves(vs + at * kv_row + h * D, vcache + slot, D);
        } else {
          rope_core::rotate(ks + at * kv_row + h * D, c, s, D, kcache + slot);
          std::memcpy(vcache + slot, vs + at * kv_row + h * D, sizeof(float) * D);
        }
      }
    }

  tile_core::Sdpa sdpa{rotated.data(), nullptr, nullptr, static_cast<float*>(out), T, Hq, D, S, Hkv, pos, true,
                       1.0f / std::sqrt(static_cast<float>(D)), tile_core::CacheLayout::kHeadMajor};
  if constexpr (kHalf) {
    sdpa.k16 = kcache;
    sdpa.v16 = vcache;
  } else {
    sdpa.k = kcache;
    sdpa.v = vcache;
  }
  Pool pool{ctx};
  if (B * T >= kTilePositions) {
    if constexpr (kHalf) tile_core::widen_written_caches(sdpa, B);  // a prompt reads each key many times
    tile_core::attend_all(sdpa, B, pool);
  } else {  // a step widens the rows each work item reads
    const int64_t threads = known_threads();
    pool.batches = static_cast<size_t>(threads);  // on the team, one contiguous run of items a thread
    decode_core::attend_all(sdpa, B, threads ? threads : kDecodeSplit, pool);
  }
  return pool.status;
}

// A registration's op: onnxruntime's CustomOp first (what it hands back to create_kernel), then the team its
// kernels run on (null: the session's pool) and the op's own compute.
struct BoundOp {
  CustomOp op;
  team::Team* team;
  Status* (*compute)(void*, KernelContext*);
};

Status* create_kernel(const CustomOp* op, const void*, const KernelInfo*, void** kernel) {
  // the op itself: kernels are stateless (everything comes from the inputs) but for the team they run on
  *kernel = const_cast<BoundOp*>(reinterpret_cast<const BoundOp*>(op));
  return nullptr;
}

Status* compute_on_team(void* kernel, KernelContext* ctx) {
  const BoundOp* bound = static_cast<const BoundOp*>(kernel);
  team::Team* const outer = t_team;
  t_team = bound->team;
  Status* status = bound->compute(kernel, ctx);
  t_team = outer;
  return status;
}

// An op of `inputs` float inputs and two float outputs, computed by `compute`.
template <size_t kInputs, size_t kOutputs = 2>
CustomOp make_op(const char* (*name)(const CustomOp*), Status* (*compute)(void*, KernelContext*)) {
  CustomOp op{};
  op.version = kCustomOpVersion;
  op.GetName = name;
  op.GetExecutionProviderType = [](const CustomOp*) { return "CPUExecutionProvider"; };
  op.GetInputType = [](const CustomOp*, size_t) { return kFloat; };
  op.GetInputTypeCount = [](const CustomOp*) { return kInputs; };
  op.GetOutputType = [](const CustomOp*, size_t) { return kFloat; };
  op.GetOutputTypeCount = [](const CustomOp*) { return kOutputs; };
  op.KernelDestroy = [](void*) {};
  op.GetInputCharacteristic = [](const CustomOp*, size_t) { return kRequired; };
  op.GetOutputCharacteristic = [](const CustomOp*, size_t) { return kRequired; };
  op.GetInputMemoryType = [](const CustomOp*, size_t) { return 0; };
  op.GetVariadicInputMinArity = [](const CustomOp*) { return 1; };
  op.GetVariadicInputHomogeneity = [](const CustomOp*) { return 1; };
  op.GetVariadicOutputMinArity = [](const CustomOp*) { return 1; };
  op.GetVariadicOutputHomogeneity = [](const CustomOp*) { return 1; };
  op.CreateKernelV2 = create_kernel;
  op.KernelComputeV2 = compute;
  return op;
}

// Int4MatMul: float32, uint8 and float16 inputs, an optional float32 bias and int64 split, one to three float32
// outputs. Int4MatMulSwiGLU: the first three inputs, one output.
template <bool kSwiGLU>
CustomOp int4_op() {
  CustomOp op = kSwiGLU ? make_op<3, 1>([](const CustomOp*) { return "Int4MatMulSwiGLU"; }, compute_int4<true>)
                        : make_op<5, kMaxOutputs>([](const CustomOp*) { return "Int4MatMul"; }, compute_int4<false>);
  op.GetInputType = [](const CustomOp*, size_t i) {
    return i == 0 || i == 3 ? kFloat : i == 1 ? kUint8 : i == 4 ? kInt64 : kFloat16;
  };
  op.GetInputCharacteristic = [](const CustomOp*, size_t i) { return i >= 3 ? kOptional : kRequired; };
  op.GetOutputCharacteristic = [](const CustomOp*, size_t i) { return i >= 1 ? kOptional : kRequired; };
  return op;
}

// Int4MatMulConv: Int4MatMul's five inputs (bias optional), then float32 weight, conv_bias and state; three float32
// outputs.
CustomOp int4_conv_op() {
  CustomOp op = make_op<8, 3>([](const CustomOp*) { return "Int4MatMulConv"; }, compute_int4_conv);
  op.GetInputType = [](const CustomOp*, size_t i) {
    return i == 1 ? kUint8 : i == 2 ? kFloat16 : i == 4 ? kInt64 : kFloat;
  };
  op.GetInputCharacteristic = [](const CustomOp*, size_t i) { return i == 3 ? kOptional : kRequired; };
  return op;
}

// Int4MambaScan: float32 inputs but for dt_codes (uint8) and dt_scales (float16); dt_bias optional.
CustomOp int4_scan_op() {
  CustomOp op = make_op<11, 2>([](const CustomOp*) { return "Int4MambaScan"; }, compute_int4_scan);
  op.GetInputType = [](const CustomOp*, size_t i) { return i == 2 ? kUint8 : i == 3 ? kFloat16 : kFloat; };
  op.GetInputCharacteristic = [](const CustomOp*, size_t i) { return i == 4 ? kOptional : kRequired; };
  return op;
}

// Attention: float32 inputs but for the int64 position and the caches (float32, or float16 for kHalf: two
// kernels of one op, onnxruntime picks by the caches' type); k and v optional (packed q); the caches returned in
// their type.
template <bool kHalf>
CustomOp attention_op() {
  CustomOp op = make_op<8, 3>([](const CustomOp*) { return "Attention"; },
                              compute_attention<std::conditional_t<kHalf, uint16_t, float>>);
  op.GetInputType = [](const CustomOp*, size_t i) {
    return i == 5 ? kInt64 : (i == 3 || i == 4) && kHalf ? kFloat16 : kFloat;
  };
  op.GetOutputType = [](const CustomOp*, size_t i) { return i > 0 && kHalf ? kFloat16 : kFloat; };
  op.GetInputCharacteristic = [](const CustomOp*, size_t i) { return i == 1 || i == 2 ? kOptional : kRequired; };
  return op;
}

// Int4MatMulSkipRmsNorm: Int4MatMul's three inputs, then float32 skip, gamma and epsilon; two float32 outputs.
CustomOp int4_norm_op() {
  CustomOp op = make_op<6, 2>([](const CustomOp*) { return "Int4MatMulSkipRmsNorm"; }, compute_int4_norm);
  op.GetInputType = [](const CustomOp*, size_t i) { return i == 1 ? kUint8 : i == 2 ? kFloat16 : kFloat; };
  return op;
}

// Int4Gather: uint8 codes, float16 scales, int64 indices; one float32 output.
CustomOp int4_gather_op() {
  CustomOp op = make_op<3, 1>([](const CustomOp*) { return "Int4Gather"; }, compute_int4_gather);
  op.GetInputType = [](const CustomOp*, size_t i) { return i == 0 ? kUint8 : i == 1 ? kFloat16 : kInt64; };
  return op;
}

const CustomOp kOps[] = {
    make_op<7>([](const CustomOp*) { return "SelectiveScan"; }, compute_scan<false>),
    make_op<8>([](const CustomOp*) { return "MambaScan"; }, compute_scan<true>),
    make_op<4>([](const CustomOp*) { return "CausalConv1d"; }, compute_conv),
    int4_op<false>(),
    int4_op<true>(),
    int4_norm_op(),
    int4_conv_op(),
    int4_scan_op(),
    int4_gather_op(),
    attention_op<false>(),
    attention_op<true>(),
};

constexpr size_t kOpCount = sizeof(kOps) / sizeof(kOps[0]);

// The session config entry naming the team: "N" (1-256) threads of seqedge's own (team.h), onnxruntime's
// intra-op pool where it is absent (runtimes/ort_kernels.py sets it).
constexpr const char* kTeamThreadsKey = "seqedge.team_threads";
constexpr int kMaxTeamThreads = 256;

Status* team_threads(const Api& api, const SessionOptions* options, int* threads) {
  *threads = 0;
  int has = 0;
  SEQEDGE_ORT_TRY(api.has_config(options, kTeamThreadsKey, &has));
  if (!has) return nullptr;
  char value[16] = {};
  size_t size = sizeof value;
  SEQEDGE_ORT_TRY(api.config(options, kTeamThreadsKey, value, &size));
  char* end = nullptr;
  const long n = std::strtol(value, &end, 10);
  if (end == value || *end != '\0' || n < 1 || n > kMaxTeamThreads)
    return api.create_status(kInvalidArgument, (std::string(kTeamThreadsKey) + " must be a thread count from 1 to " +
                                                std::to_string(kMaxTeamThreads) + ", not '" + value + "'").c_str());
  *threads = static_cast<int>(n);
  return nullptr;
}

// The ops bound to a team of `threads` (0: the session's pool), made once per team size and kept, with the team,
// for the life of the process: onnxruntime holds a session's ops until it ends, and a team is shared by every
// session of its size (it runs one job at a time; a second caller runs its job alone).
const BoundOp* bound_ops(int threads) {
  static std::mutex mutex;
  static auto* made = new std::map<int, BoundOp*>;  // never freed: sessions may outlive static destructors
  std::lock_guard<std::mutex> lock(mutex);
  BoundOp*& ops = (*made)[threads];
  if (ops == nullptr) {
    team::Team* team = threads > 0 ? new team::Team(threads) : nullptr;
    ops = new BoundOp[kOpCount];
    for (size_t i = 0; i < kOpCount; ++i) {
      ops[i] = BoundOp{kOps[i], team, kOps[i].KernelComputeV2};
      ops[i].op.KernelComputeV2 = compute_on_team;
    }
  }
  return ops;
}

}  // namespace
}  // namespace seqedge::ort

extern "C" __attribute__((visibility("default"))) seqedge::ort::Status* RegisterCustomOps(
    seqedge::ort::SessionOptions* options, const seqedge::ort::ApiBase* base) {
  using namespace seqedge::ort;
  static const void* const* table = base->GetApi(kApiVersion);
  if (table == nullptr) return nullptr;  // an onnxruntime older than the table: nothing registered
  static const Api api(table, base->GetApi(kShapeReferenceApiVersion) != nullptr);
  g_api = &api;
  int threads = 0;
  SEQEDGE_ORT_TRY(team_threads(api, options, &threads));
  const BoundOp* ops = bound_ops(threads);
  OpDomain* domain = nullptr;
  SEQEDGE_ORT_TRY(api.create_domain("seqedge", &domain));
  for (size_t i = 0; i < kOpCount; ++i) SEQEDGE_ORT_TRY(api.domain_add(domain, &ops[i].op));
  return api.add_domain(options, domain);
}
