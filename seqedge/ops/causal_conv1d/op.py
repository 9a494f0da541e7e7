"""`seqedge::causal_conv1d` — Mamba's stateful causal depthwise conv + SiLU as one op (shapes: reference.py).

Eager: concatenate the carried inputs and run one grouped conv1d. ONNX lowers it to seqedge's own
`seqedge.CausalConv1d` (fused; `com.microsoft.CausalConvWithState` where seqedge's kernels cannot be built) or
Concat + Conv + Slice (portable).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def causal_conv1d_eager(x: Tensor, weight: Tensor, bias: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    T = x.shape[2]
    window = torch.cat([state, x], dim=2)  # (Bt, D, K-1+T)
    y = F.conv1d(window, weight, bias, groups=weight.shape[0])  # (Bt, D, T)
    return F.silu(y), window[:, :, T:]


@torch.library.custom_op("seqedge::causal_conv1d", mutates_args=())
def causal_conv1d(x: Tensor, weight: Tensor, bias: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    y, s = causal_conv1d_eager(x, weight, bias, state)
    return y, s.contiguous()


@causal_conv1d.register_fake
def _(x, weight, bias, state):
    return torch.empty_like(x), torch.empty_like(state)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_y, grad_state):
    inputs = [t.detach().requires_grad_(need) for t, need in zip(ctx.saved_tensors, ctx.needs_input_grad)]
    with torch.enable_grad():
        outs = causal_conv1d_eager(*inputs)
    pairs = [(o, g) for o, g in zip(outs, (grad_y, grad_state)) if g is not None]
    wanted = [t for t in inputs if t.requires_grad]
    grads = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs], allow_unused=True))
    return tuple(next(grads) if t.requires_grad else None for t in inputs)


causal_conv1d.register_autograd(_backward, setup_context=_setup_context)
