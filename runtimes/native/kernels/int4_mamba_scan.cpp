// seqedge::int4_mamba_scan.out — seqedge::mamba_scan.out whose step is Mamba's dt_proj, an int4 product of dt
// (Bt, T, R) plus dt_bias (D), computed inside (onnxruntime's seqedge.Int4MambaScan; reference:
// seqedge/ops/int4_matmul int4_mamba_scan_ref). A decode step runs each 16 channels' product and their scan step on
// one thread, one dispatch to the pool where the product and the bias took their own kernels and dispatches; a
// prompt's steps are computed whole into scratch, then scanned in chunks of time as mamba_scan does. The codes and
// scales as seqedge::int4_matmul takes them (rows, or groups of 16 rows).
//
// Registered boxed: stack = [u, dt, dt_codes, dt_scales, dt_bias, A, B, C, D, state, z, y, state_out].

#include <cstdint>
#include <vector>

#include "et_scan.h"
#include "int4_matmul_core.h"

namespace seqedge {
namespace {

using scan_core::Scan;

// steps[m, n0 .. n0 + count) += bias[n0 .. n0 + count) for every row m.
void add_bias(float* steps, const float* bias, int64_t M, int64_t N, int64_t n0, int64_t count) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = n0; n < n0 + count; ++n) steps[m * N + n] += bias[n];
}

void int4_mamba_scan_out(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  constexpr const char* op = "int4_mamba_scan";
  const Tensor &u = stack[0]->toTensor(), &dt = stack[1]->toTensor(), &codes = stack[2]->toTensor();
  const Tensor &scales = stack[3]->toTensor(), &bias = stack[4]->toTensor();
  const Tensor* in[7] = {&u, nullptr, &stack[5]->toTensor(), &stack[6]->toTensor(), &stack[7]->toTensor(),
                         &stack[8]->toTensor(), &stack[9]->toTensor()};  // the scan's operands (delta: computed)
  const Tensor &A = *in[2], &state = *in[6], &z = stack[10]->toTensor();
  Tensor& y = stack[11]->toTensor();
  Tensor& state_out = stack[12]->toTensor();

  for (const Tensor* t : {&u, &dt, &bias, in[2], in[3], in[4], in[5], in[6], &z}) {
    ET_KERNEL_CHECK_MSG(ctx, t->scalar_type() == ScalarType::Float, InvalidArgument, , "%s: float32 operands", op);
  }
  ET_KERNEL_CHECK_MSG(ctx, u.dim() == 3 && dt.dim() == 3 && dt.size(0) == u.size(0) && dt.size(1) == u.size(1),
                      InvalidArgument, , "%s: dt must be (Bt, T, R) for u (Bt, T, D)", op);
  const bool grouped = codes.dim() == 3 && codes.size(2) == int4_core::kGroupBlockBytes;
  const int64_t R = dt.size(2), Dm = u.size(2), nb = int4_core::blocks(R);
  const int64_t N = codes.dim() == 3 ? codes.size(0) * (grouped ? 16 : 1) : -1;
  ET_KERNEL_CHECK_MSG(ctx, codes.scalar_type() == ScalarType::Byte && codes.dim() == 3 &&
                      scales.scalar_type() == ScalarType::Half && scales.dim() == (grouped ? 3 : 2) &&
                      codes.size(1) == nb && scales.size(0) == codes.size(0) && scales.size(1) == nb &&
                      (grouped ? scales.size(2) == 16 : codes.size(2) == int4_core::kRowBlockBytes) && N == Dm,
                      InvalidArgument, , "%s: dt_codes (D, ceil(R/32), 16) and float16 dt_scales (D, ceil(R/32)), or "
                      "codes (D/16, ceil(R/32), 256) and scales (D/16, ceil(R/32), 16), expected for u's D", op);
  const char* bad = int4_core::shape_error(R, N);
  ET_KERNEL_CHECK_MSG(ctx, bad == nullptr, InvalidArgument, , "%s: %s", op, bad);
  ET_KERNEL_CHECK_MSG(ctx, bias.dim() == 1 && bias.size(0) == Dm, InvalidArgument, , "%s: dt_bias must be (D)", op);
  scan_core::Shapes shapes{};
  for (int i = 0; i < 7; ++i) {  // delta is the product: u's shape
    const Tensor& t = i == 1 ? u : *in[i];
    shapes.rank[i] = t.dim();
    for (int64_t k = 0; k < std::min<int64_t>(shapes.rank[i], 3); ++k) shapes.dims[i][k] = t.size(k);
  }
  bad = scan_core::scan_shape_error(shapes);
  ET_KERNEL_CHECK_MSG(ctx, bad == nullptr, InvalidArgument, , "%s: %s", op, bad);
  ET_KERNEL_CHECK_MSG(ctx, gate_fits(z, u), InvalidArgument, , "%s: z must have u's shape (Bt, T, D)", op);
  const int64_t Bt = u.size(0), T = u.size(1), M = Bt * T;
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(y, u.sizes()) == Error::Ok, InvalidArgument, );
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(state_out, state.sizes()) == Error::Ok, InvalidArgument, );
  if (M == 0 || Dm == 0) return;

  thread_local std::vector<uint8_t> scratch;
  thread_local std::vector<float> products;  // each channel's step before its softplus
  products.resize(static_cast<size_t>(M * Dm));
  float* const steps = products.data();  // (the pool's threads have thread_locals of their own)
  int4_core::MatMul mm = int4_core::prepare(dt.const_data_ptr<float>(), codes.const_data_ptr<uint8_t>(),
                                            static_cast<const uint16_t*>(scales.const_data_ptr()), steps, M, N, R,
                                            false, scratch, grouped);
  Scan scan{u.const_data_ptr<float>(), steps, A.const_data_ptr<float>(), in[3]->const_data_ptr<float>(),
            in[4]->const_data_ptr<float>(), in[5]->const_data_ptr<float>(), state.const_data_ptr<float>(),
            y.mutable_data_ptr<float>(), state_out.mutable_data_ptr<float>(), Bt, T, Dm, A.size(1)};
  scan.z = z.const_data_ptr<float>();
  scan.delta_softplus = true;
  const float* b = bias.const_data_ptr<float>();
  const int64_t rows = int4_core::item_rows(mm), blocks = (Dm + scan_core::kLanes - 1) / scan_core::kLanes;
  if (M < int4_core::kParallelRows) {
    for (int64_t m = 0; m < M; ++m) int4_core::quantize_row(mm, m);
  } else {
    executorch::extension::parallel_for(0, M, 1, [&](int64_t begin, int64_t end) {
      for (int64_t m = begin; m < end; ++m) int4_core::quantize_row(mm, m);
    });
  }
  if (T == 1 && rows == scan_core::kLanes) {  // a step: each block's 16 steps, then its scan, on one thread
    executorch::extension::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        int4_core::item(mm, i);
        add_bias(steps, b, M, N, i * rows, std::min(rows, N - i * rows));
        for (int64_t r = 0; r < Bt; ++r) scan_core::scan_item(scan, r * blocks + i);
      }
    });
    return;
  }
  executorch::extension::parallel_for(0, int4_core::items(mm), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      int4_core::item(mm, i);
      add_bias(steps, b, M, N, i * rows, std::min(rows, N - i * rows));
    }
  });
  scan_on_pool(scan);
}

const auto registered = executorch::runtime::register_kernel(
    executorch::runtime::Kernel("seqedge::int4_mamba_scan.out", int4_mamba_scan_out));

}  // namespace
}  // namespace seqedge
