"""The state-space-duality (SSD) form of the Mamba-2 scan: matmuls inside chunks, a recurrence across them.

Split time into chunks of L steps. With a_t = Δ_t·A (log-decay per head) and its running sum Σ within a
chunk, every output is the sum of two terms (Dao & Gu, 2024, "Transformers are SSMs", the minimal SSD):

    within the chunk   y_t += Σ_{s≤t} (C_t·B_s) · exp(Σ_t − Σ_s) · Δ_s x_s     a masked (L × L) attention
    from before it     y_t += exp(Σ_t) · S_start · C_t                         the state entering the chunk

and the states at chunk boundaries follow one small recurrence over chunks, S_{c+1} = exp(Σ_c,end) · S_c +
Σ_s exp(Σ_c,end − Σ_s) Δ_s x_s ⊗ B_s, solved here as a (chunks+1)² lower-triangular decay matrix (a matmul, no
loop). Every heavy step is a batched matmul (XNNPACK, onnxruntime and BLAS take them), the work is linear in T
(L × T for the chunk attention; the chunk recurrence is (T/L)² scalars per head), and no control flow depends
on T: T is padded to a multiple of L with Δ = 0 steps, which leave the state unchanged (exp(0) = 1, no input).
Decays are differences of running sums within a chunk — exp of a value ≤ 0 — so nothing overflows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

CHUNK = 64


def _segsum(a: Tensor) -> Tensor:
    """(..., L) log-decays -> (..., L, L) with [t, s] = a_{s+1} + ... + a_t for s <= t, -inf above the diagonal."""
    L = a.shape[-1]
    seg = a[..., :, None].expand(*a.shape, L)  # (..., L, L): [t, s] = a_t
    seg = seg.masked_fill(~torch.ones(L, L, dtype=torch.bool, device=a.device).tril(-1), 0.0)
    seg = seg.cumsum(-2)  # [t, s] = a_{s+1} + ... + a_t below the diagonal
    return seg.masked_fill(~torch.ones(L, L, dtype=torch.bool, device=a.device).tril(0), float("-inf"))


def ssd_scan_chunked(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, state: Tensor,
                     chunk: int = CHUNK) -> tuple[Tensor, Tensor]:
    Bt, T, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    c = (T + chunk - 1) // chunk  # chunks; padded length c·L (a multiple of L that a symbolic T also sees)
    pad = c * chunk - T
    xs = F.pad(x.float(), (0, 0, 0, 0, 0, pad))  # (Bt, T', H, P)
    dts = F.pad(dt.float(), (0, 0, 0, pad))  # (Bt, T', H): Δ = 0 on the padding
    Bs = F.pad(B.float(), (0, 0, 0, 0, 0, pad)).repeat_interleave(H // G, dim=2)  # (Bt, T', H, N)
    Cs = F.pad(C.float(), (0, 0, 0, 0, 0, pad)).repeat_interleave(H // G, dim=2)  # (Bt, T', H, N)
    X = (xs * dts[..., None]).reshape(Bt, c, chunk, H, P).permute(0, 3, 1, 2, 4)  # (Bt, H, c, L, P): Δ·x
    Bc = Bs.reshape(Bt, c, chunk, H, N).permute(0, 3, 1, 2, 4)  # (Bt, H, c, L, N)
    Cc = Cs.reshape(Bt, c, chunk, H, N).permute(0, 3, 1, 2, 4)  # (Bt, H, c, L, N)
    a = (dts * A.float()).reshape(Bt, c, chunk, H).permute(0, 3, 1, 2)  # (Bt, H, c, L): log-decay per step
    cum = a.cumsum(-1)  # (Bt, H, c, L)

    # within each chunk: (C·Bᵀ) masked by the decays, times Δ·x
    decay_in = torch.exp(_segsum(a))  # (Bt, H, c, L, L)
    y = ((Cc @ Bc.transpose(-1, -2)) * decay_in) @ X  # (Bt, H, c, L, P)

    # the state each chunk adds, as of its end; then the states entering each chunk (a matmul over chunks)
    decay_to_end = torch.exp(cum[..., -1:] - cum)  # (Bt, H, c, L)
    added = (X * decay_to_end[..., None]).transpose(-1, -2) @ Bc  # (Bt, H, c, P, N)
    s0 = state.float().reshape(Bt, H, 1, P * N)  # (Bt, H, 1, P*N)
    states = torch.cat([s0, added.reshape(Bt, H, c, P * N)], dim=2)  # (Bt, H, c+1, P*N)
    chunk_decay = torch.exp(_segsum(F.pad(cum[..., -1], (1, 0))))  # (Bt, H, c+1, c+1)
    entering = chunk_decay @ states  # (Bt, H, c+1, P*N): [k] = the state after k chunks
    final = entering[:, :, -1].reshape(Bt, H, P, N)  # (Bt, H, P, N)
    start = entering[:, :, :-1].reshape(Bt, H, c, P, N)  # (Bt, H, c, P, N)

    # what the entering state contributes to each output of the chunk
    y = y + (Cc @ start.transpose(-1, -2)) * torch.exp(cum)[..., None]  # (Bt, H, c, L, P)
    y = y.permute(0, 2, 3, 1, 4).reshape(Bt, c * chunk, H, P)[:, :T]  # (Bt, T, H, P)
    y = y + D.float()[:, None] * x.float()
    return y.to(x.dtype), final.to(state.dtype)
