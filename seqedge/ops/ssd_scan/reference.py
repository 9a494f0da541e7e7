"""Reference SSD scan (Mamba-2): the readable, sequential ground truth.

Shapes (Bt = batch, T = time, H = heads, P = head_dim, G = groups of heads sharing B/C, N = state size):
    x      (Bt, T, H, P)   input
    dt     (Bt, T, H)      step size Δ per head, already positive (softplus + bias applied by the caller)
    A      (H,)            continuous-time decay per head, negative
    B      (Bt, T, G, N)   input matrix, shared by the H/G heads of a group
    C      (Bt, T, G, N)   output matrix, likewise
    D      (H,)            skip connection per head
    state  (Bt, H, P, N)   S_{t-1} carried in from the previous call (zeros at the start)
returns
    y      (Bt, T, H, P)
    state  (Bt, H, P, N)   S_T, to carry into the next call

    S_t = exp(Δ_t · A) · S_{t-1} + Δ_t · x_t ⊗ B_t        (a scalar decay per head)
    y_t = S_t · C_t + D · x_t
"""

from __future__ import annotations

import torch
from torch import Tensor


def ssd_scan_ref(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
                 state: Tensor) -> tuple[Tensor, Tensor]:
    H, G = x.shape[2], B.shape[2]
    Bh = B.float().repeat_interleave(H // G, dim=2)  # (Bt, T, H, N): each head's group's B
    Ch = C.float().repeat_interleave(H // G, dim=2)  # (Bt, T, H, N)
    s = state.float()  # (Bt, H, P, N)
    ys = []
    for t in range(x.shape[1]):
        decay = torch.exp(dt[:, t].float() * A.float())  # (Bt, H)
        xt = x[:, t].float()  # (Bt, H, P)
        s = decay[..., None, None] * s + (dt[:, t, :, None].float() * xt)[..., None] * Bh[:, t, :, None, :]  # (Bt, H, P, N)
        ys.append((s * Ch[:, t, :, None, :]).sum(-1) + D.float()[:, None] * xt)  # (Bt, H, P)
    return torch.stack(ys, dim=1).to(x.dtype), s.to(state.dtype)
