// seqedge's custom ops for onnxruntime: libseqedge_ort_kernels.so, registered into a session with
// SessionOptions.register_custom_ops_library (onnxruntime calls RegisterCustomOps below).
//
//   seqedge.SelectiveScan(u, delta, A, B, C, D, state) -> (y, state_out)   the Mamba-1 scan
//
// The scan is selective_scan_core.h, the same source as the ExecuTorch kernel seqedge::selective_scan.out,
// and its reference is seqedge/ops/selective_scan/reference.py. Blocks of channels are split over the
// session's intra-op threads (KernelContext_ParallelFor). Every operand's type and shape is checked before
// any data is read: the graph is an untrusted file. Errors come back as onnxruntime statuses naming the op.

#include <string>

#include "../selective_scan_core.h"
#include "ort_abi.h"

namespace seqedge::ort {
namespace {

const Api* g_api = nullptr;  // set once by RegisterCustomOps

Status* fail(const std::string& what) { return g_api->create_status(kInvalidArgument, ("seqedge.SelectiveScan: " + what).c_str()); }

#define SEQEDGE_ORT_TRY(expr)          \
  do {                                 \
    if (Status* _s = (expr)) return _s; \
  } while (0)

constexpr size_t kInputs = 7, kOutputs = 2;
const char* const kInputNames[kInputs] = {"u", "delta", "A", "B", "C", "D", "state"};

struct Operand {
  const float* data = nullptr;
  int64_t dims[3] = {0, 0, 0};
  int64_t rank = 0;
};

Status* read_operand(const KernelContext* ctx, size_t i, Operand* out) {
  const Value* v = nullptr;
  SEQEDGE_ORT_TRY(g_api->input(ctx, i, &v));
  if (v == nullptr) return fail(std::string("input ") + kInputNames[i] + " is missing");
  TypeAndShape* info = nullptr;
  SEQEDGE_ORT_TRY(g_api->type_and_shape(v, &info));
  int type = 0;
  size_t rank = 0;
  Status* s = g_api->element_type(info, &type);
  if (s == nullptr) s = g_api->rank(info, &rank);
  if (s == nullptr && rank <= 3) s = g_api->dims(info, out->dims, rank);
  g_api->release(info);
  if (s != nullptr) return s;
  if (type != kFloat) return fail(std::string("input ") + kInputNames[i] + " must be float32");
  if (rank > 3) return fail(std::string("input ") + kInputNames[i] + " has more than 3 dimensions");
  out->rank = static_cast<int64_t>(rank);
  void* data = nullptr;
  SEQEDGE_ORT_TRY(g_api->data(v, &data));
  out->data = static_cast<const float*>(data);
  return nullptr;
}

void run_item(void* scan, size_t item) {
  scan_core::scan_item(*static_cast<const scan_core::Scan*>(scan), static_cast<int64_t>(item));
}

Status* compute(void*, KernelContext* ctx) {
  size_t n = 0;
  SEQEDGE_ORT_TRY(g_api->input_count(ctx, &n));
  if (n != kInputs) return fail("expects 7 inputs (u, delta, A, B, C, D, state)");
  Operand in[kInputs];
  scan_core::Shapes shapes{};
  for (size_t i = 0; i < kInputs; ++i) {
    SEQEDGE_ORT_TRY(read_operand(ctx, i, &in[i]));
    shapes.rank[i] = in[i].rank;
    for (int k = 0; k < 3; ++k) shapes.dims[i][k] = in[i].dims[k];
  }
  if (const char* bad = scan_core::scan_shape_error(shapes)) return fail(bad);
  const int64_t Bt = in[0].dims[0], T = in[0].dims[1], Dm = in[0].dims[2], N = in[2].dims[1];
  Value *y = nullptr, *state_out = nullptr;
  SEQEDGE_ORT_TRY(g_api->output(ctx, 0, in[0].dims, 3, &y));
  SEQEDGE_ORT_TRY(g_api->output(ctx, 1, in[6].dims, 3, &state_out));
  void *y_data = nullptr, *state_data = nullptr;
  SEQEDGE_ORT_TRY(g_api->data(y, &y_data));
  SEQEDGE_ORT_TRY(g_api->data(state_out, &state_data));
  const scan_core::Scan scan{in[0].data, in[1].data, in[2].data, in[3].data, in[4].data, in[5].data, in[6].data,
                             static_cast<float*>(y_data), static_cast<float*>(state_data), Bt, T, Dm, N};
  const int64_t items = scan_core::scan_items(scan);
  if (items == 0) return nullptr;
  return g_api->parallel_for(ctx, run_item, static_cast<size_t>(items), 0, const_cast<scan_core::Scan*>(&scan));
}

Status* create_kernel(const CustomOp*, const void*, const KernelInfo*, void** kernel) {
  *kernel = nullptr;  // stateless: everything comes from the inputs
  return nullptr;
}

CustomOp make_selective_scan() {
  CustomOp op{};
  op.version = kCustomOpVersion;
  op.GetName = [](const CustomOp*) { return "SelectiveScan"; };
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

const CustomOp kSelectiveScan = make_selective_scan();

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
  SEQEDGE_ORT_TRY(api.domain_add(domain, &kSelectiveScan));
  return api.add_domain(options, domain);
}
