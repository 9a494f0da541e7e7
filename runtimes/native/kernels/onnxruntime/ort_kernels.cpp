// seqedge's custom ops for onnxruntime: libseqedge_ort_kernels.so, registered into a session with
// SessionOptions.register_custom_ops_library (onnxruntime calls RegisterCustomOps below).
//
//   seqedge.SelectiveScan(u, delta, A, B, C, D, state) -> (y, state_out)        the Mamba-1 scan
//   seqedge.MambaScan(u, delta, A, B, C, D, state, z) -> (y, state_out)         the same with mamba's
//       selective_scan_fn extras: the step is softplus(delta), and y is gated by silu(z)
//   seqedge.CausalConv1d(x, weight, bias, state) -> (y, state_out)               Mamba's convolution + SiLU,
//       channels last (x, y (Bt, T, D))
//
// The scan is selective_scan_core.h, the same source as the ExecuTorch kernel seqedge::selective_scan.out,
// and the convolution causal_conv_core.h; their references are in seqedge/ops (selective_scan_ref,
// mamba_scan_ref, causal_conv1d_ref). Blocks of channels are split over the session's intra-op threads
// (KernelContext_ParallelFor). Every operand's type and shape is checked before any data is read: the graph
// is an untrusted file. Errors come back as onnxruntime statuses naming the op.

#include <algorithm>
#include <string>

#include "../causal_conv_core.h"
#include "../selective_scan_core.h"
#include "ort_abi.h"

namespace seqedge::ort {
namespace {

const Api* g_api = nullptr;  // set once by RegisterCustomOps

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

// The op's inputs, all float32 of rank <= 3, with their shapes; nothing is read from a tensor before its
// element type and rank are known.
Status* read_operands(const KernelContext* ctx, const char* op, const char* const* names, size_t kInputs,
                      Operand* out) {
  size_t n = 0;
  SEQEDGE_ORT_TRY(g_api->input_count(ctx, &n));
  if (n != kInputs) return fail(op, "expects " + std::to_string(kInputs) + " inputs");
  for (size_t i = 0; i < kInputs; ++i) {
    const Value* v = nullptr;
    SEQEDGE_ORT_TRY(g_api->input(ctx, i, &v));
    if (v == nullptr) return fail(op, std::string("input ") + names[i] + " is missing");
    TypeAndShape* info = nullptr;
    SEQEDGE_ORT_TRY(g_api->type_and_shape(v, &info));
    int type = 0;
    size_t rank = 0;
    Status* s = g_api->element_type(info, &type);
    if (s == nullptr) s = g_api->rank(info, &rank);
    if (s == nullptr && rank <= 3) s = g_api->dims(info, out[i].dims, rank);
    g_api->release(info);
    if (s != nullptr) return s;
    if (type != kFloat) return fail(op, std::string("input ") + names[i] + " must be float32");
    if (rank > 3) return fail(op, std::string("input ") + names[i] + " has more than 3 dimensions");
    out[i].rank = static_cast<int64_t>(rank);
    void* data = nullptr;
    SEQEDGE_ORT_TRY(g_api->data(v, &data));
    out[i].data = static_cast<const float*>(data);
  }
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
  return g_api->parallel_for(ctx, run_item<scan_core::Scan, scan_core::scan_item>, static_cast<size_t>(items), 0,
                             &scan);
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
  return g_api->parallel_for(ctx, run_item<conv_core::Conv, conv_core::conv_item>, static_cast<size_t>(items), 0,
                             const_cast<conv_core::Conv*>(&conv));
}

Status* create_kernel(const CustomOp*, const void*, const KernelInfo*, void** kernel) {
  *kernel = nullptr;  // stateless: everything comes from the inputs
  return nullptr;
}

// An op of `inputs` float inputs and two float outputs, computed by `compute`.
template <size_t kInputs>
CustomOp make_op(const char* (*name)(const CustomOp*), Status* (*compute)(void*, KernelContext*)) {
  CustomOp op{};
  op.version = kCustomOpVersion;
  op.GetName = name;
  op.GetExecutionProviderType = [](const CustomOp*) { return "CPUExecutionProvider"; };
  op.GetInputType = [](const CustomOp*, size_t) { return kFloat; };
  op.GetInputTypeCount = [](const CustomOp*) { return kInputs; };
  op.GetOutputType = [](const CustomOp*, size_t) { return kFloat; };
  op.GetOutputTypeCount = [](const CustomOp*) { return size_t{2}; };
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

const CustomOp kOps[] = {
    make_op<7>([](const CustomOp*) { return "SelectiveScan"; }, compute_scan<false>),
    make_op<8>([](const CustomOp*) { return "MambaScan"; }, compute_scan<true>),
    make_op<4>([](const CustomOp*) { return "CausalConv1d"; }, compute_conv),
};

}  // namespace
}  // namespace seqedge::ort

extern "C" __attribute__((visibility("default"))) seqedge::ort::Status* RegisterCustomOps(
    seqedge::ort::SessionOptions* options, const seqedge::ort::ApiBase* base) {
  using namespace seqedge::ort;
  static const void* const* table = base->GetApi(kApiVersion);
  if (table == nullptr) return nullptr;  // an onnxruntime older than the table: nothing registered
  static const Api api(table);
  g_api = &api;
  OpDomain* domain = nullptr;
  SEQEDGE_ORT_TRY(api.create_domain("seqedge", &domain));
  for (const CustomOp& op : kOps) SEQEDGE_ORT_TRY(api.domain_add(domain, &op));
  return api.add_domain(options, domain);
}
