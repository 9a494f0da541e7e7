// seqedge::rnn_scan.out — the Elman / LSTM / GRU recurrence over time as an ExecuTorch CPU kernel
// (reference: seqedge/ops/rnn_scan/reference.py; PyTorch's gate order and equations).
//
//   gh_t = W_hh h_{t-1} + b_hh,  then the cell: Elman act(gx_t + gh_t); LSTM i, f, g, o; GRU r, z, n.
//
// Shapes: gx (Bt, T, G*H) — the input projection of every step, one matmul outside (XNNPACK); w_hh (G*H, H);
// b_hh (G*H); h0, c0 (Bt, H); cell 0 Elman tanh, 1 Elman ReLU, 2 LSTM, 3 GRU. Outputs y (Bt, T, H), h, c (Bt, H).
// Each step splits the hidden units over the threadpool: a range of units computes its G gate rows (dot
// products over the previous h, which every range reads whole) and updates its units' h and c into the
// other half of a double buffer, so the steps need no locks beyond parallel_for's own join. The `scan` this
// replaces ran every step op by op in the interpreter.
//
// Registered boxed (three outputs): stack = [gx, w_hh, b_hh, h0, c0, cell, y, h_out, c_out].

#include "et_kernel.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "vector_math.h"

namespace seqedge {
namespace {

struct Step {
  const float *gx, *w, *b, *h;  // gx: this step's row (G*H) for batch row b; h: h_{t-1} (H)
  const float* c;               // c_{t-1} (H), LSTM
  float *h_new, *c_new, *y;     // y: this step's output row (H)
  int64_t H, cell;
};

inline float sigmoid(float x) { return 1.f / (1.f + std::exp(-x)); }

// Hidden units [j0, j1) of one step.
SEQEDGE_INLINE void step_units(const Step& s, int64_t j0, int64_t j1) {
  const int64_t H = s.H;
  for (int64_t j = j0; j < j1; ++j) {
    const auto gate = [&](int64_t g) { return dot(s.w + (g * H + j) * H, s.h, H) + s.b[g * H + j]; };
    float h;
    if (s.cell == 0 || s.cell == 1) {
      const float a = s.gx[j] + gate(0);
      h = s.cell == 0 ? std::tanh(a) : std::max(a, 0.f);
    } else if (s.cell == 2) {
      const float i = sigmoid(s.gx[j] + gate(0)), f = sigmoid(s.gx[H + j] + gate(1));
      const float g = std::tanh(s.gx[2 * H + j] + gate(2)), o = sigmoid(s.gx[3 * H + j] + gate(3));
      const float c = f * s.c[j] + i * g;
      s.c_new[j] = c;
      h = o * std::tanh(c);
    } else {
      const float r = sigmoid(s.gx[j] + gate(0)), z = sigmoid(s.gx[H + j] + gate(1));
      const float n = std::tanh(s.gx[2 * H + j] + r * gate(2));
      h = (1.f - z) * n + z * s.h[j];
    }
    s.h_new[j] = h;
    s.y[j] = h;
  }
}

SEQEDGE_ISA_VARIANTS(step_units, step_units, (const Step& s, int64_t j0, int64_t j1), (s, j0, j1))

void rnn_scan_out(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  const Tensor& gx = stack[0]->toTensor();
  const Tensor& w = stack[1]->toTensor();
  const Tensor& b = stack[2]->toTensor();
  const Tensor& h0 = stack[3]->toTensor();
  const Tensor& c0 = stack[4]->toTensor();
  const int64_t cell = stack[5]->toInt();
  Tensor& y = stack[6]->toTensor();
  Tensor& h_out = stack[7]->toTensor();
  Tensor& c_out = stack[8]->toTensor();

  ET_KERNEL_CHECK_MSG(ctx, cell >= 0 && cell <= 3, InvalidArgument, , "rnn_scan: cell must be 0..3");
  const int64_t G = cell == 2 ? 4 : cell == 3 ? 3 : 1;
  ET_KERNEL_CHECK_MSG(ctx, gx.dim() == 3 && w.dim() == 2 && b.dim() == 1 && h0.dim() == 2 && c0.dim() == 2,
                      InvalidArgument, , "rnn_scan: expected gx (Bt,T,G*H), w_hh (G*H,H), b_hh (G*H), h0/c0 (Bt,H)");
  const int64_t Bt = gx.size(0), T = gx.size(1), H = h0.size(1);
  ET_KERNEL_CHECK_MSG(ctx, gx.size(2) == G * H && w.size(0) == G * H && w.size(1) == H && b.size(0) == G * H &&
                      h0.size(0) == Bt && c0.size(0) == Bt && c0.size(1) == H, InvalidArgument, ,
                      "rnn_scan: operand shapes disagree with the cell's gates");
  ET_KERNEL_CHECK_MSG(ctx, gx.scalar_type() == executorch::aten::ScalarType::Float, InvalidArgument, ,
                      "rnn_scan: float32 only");
  const executorch::aten::SizesType y_sizes[3] = {static_cast<executorch::aten::SizesType>(Bt),
                                                  static_cast<executorch::aten::SizesType>(T),
                                                  static_cast<executorch::aten::SizesType>(H)};
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(y, {y_sizes, 3}) == Error::Ok, InvalidArgument, );
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(h_out, h0.sizes()) == Error::Ok, InvalidArgument, );
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(c_out, c0.sizes()) == Error::Ok, InvalidArgument, );

  auto units = select_isa(step_units_v4, step_units_v3, step_units_baseline);
  const int64_t threads = std::max<int64_t>(1, executorch::extension::get_thread_count());
  const int64_t grain = std::max<int64_t>(16, (H + threads - 1) / threads);
  // h_{t-1} and c_{t-1} live in one half of a double buffer while step t writes the other: h0/c0 and the
  // outputs may share memory with each other (the planner), so they are only read first and written last.
  std::vector<float> buf(4 * H);
  const float* gxp = gx.const_data_ptr<float>();
  float* yp = y.mutable_data_ptr<float>();
  for (int64_t r = 0; r < Bt; ++r) {
    float *h = buf.data(), *c = h + H, *h_next = c + H, *c_next = h_next + H;
    std::copy(h0.const_data_ptr<float>() + r * H, h0.const_data_ptr<float>() + (r + 1) * H, h);
    std::copy(c0.const_data_ptr<float>() + r * H, c0.const_data_ptr<float>() + (r + 1) * H, c);
    for (int64_t t = 0; t < T; ++t) {
      const Step s{gxp + (r * T + t) * G * H, w.const_data_ptr<float>(), b.const_data_ptr<float>(), h, c,
                   h_next, c_next, yp + (r * T + t) * H, H, cell};
      if (H <= grain) {
        units(s, 0, H);
      } else {
        executorch::extension::parallel_for(0, H, grain, [&](int64_t j0, int64_t j1) { units(s, j0, j1); });
      }
      std::swap(h, h_next);
      if (cell == 2) std::swap(c, c_next);  // the other cells carry c through unchanged
    }
    std::copy(h, h + H, h_out.mutable_data_ptr<float>() + r * H);
    std::copy(c, c + H, c_out.mutable_data_ptr<float>() + r * H);
  }
}

const auto registered = executorch::runtime::register_kernel(
    executorch::runtime::Kernel("seqedge::rnn_scan.out", rnn_scan_out));

}  // namespace
}  // namespace seqedge
