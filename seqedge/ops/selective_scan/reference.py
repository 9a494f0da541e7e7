"""Reference selective scan (Mamba-1): the readable, sequential ground truth.

Shapes (Bt = batch, T = time, D = channels = d_inner, N = d_state):
    u      (Bt, T, D)   input
    delta  (Bt, T, D)   step size Δ, already positive (softplus applied by the caller)
    A      (D, N)       continuous-time decay, negative
    B      (Bt, T, N)   input matrix, input-dependent
    C      (Bt, T, N)   output matrix, input-dependent
    D      (D,)         skip connection
    state  (Bt, D, N)   h_{t-1} carried in from the previous call (zeros at the start)
returns
    y      (Bt, T, D)
    state  (Bt, D, N)   h_T, to carry into the next call

    h_t = exp(Δ_t · A) ⊙ h_{t-1} + Δ_t · B_t · u_t
    y_t = C_t · h_t + D · u_t
"""

from __future__ import annotations

import torch
from torch import Tensor


def selective_scan_ref(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, state: Tensor
) -> tuple[Tensor, Tensor]:
    h = state.float()  # (Bt, D, N)
    ys = []
    for t in range(u.shape[1]):
        dA = torch.exp(delta[:, t, :, None].float() * A.float())  # (Bt, D, N)
        dBu = delta[:, t, :, None].float() * B[:, t, None, :].float() * u[:, t, :, None].float()  # (Bt, D, N)
        h = dA * h + dBu  # (Bt, D, N)
        y = (h * C[:, t, None, :].float()).sum(-1) + D.float() * u[:, t].float()  # (Bt, D)
        ys.append(y)
    y = torch.stack(ys, dim=1)  # (Bt, T, D)
    return y.to(u.dtype), h.to(state.dtype)


def mamba_scan_ref(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, state: Tensor, z: Tensor
) -> tuple[Tensor, Tensor]:
    """The scan as Mamba's block uses it (mamba's selective_scan_fn with delta_softplus=True and z): the step is
    softplus(delta) and the output is gated, y · silu(z) with z (Bt, T, D). What onnxruntime's
    `seqedge.MambaScan` computes (the ONNX fusion of exporters/onnx/fusions.py puts it in place)."""
    y, h = selective_scan_ref(u, torch.nn.functional.softplus(delta), A, B, C, D, state)  # (Bt, T, D), (Bt, D, N)
    return y * torch.nn.functional.silu(z), h
