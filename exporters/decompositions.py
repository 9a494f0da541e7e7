"""Export-friendly torch decompositions of seqedge's ops, shared by the exporters' lowering registries.

Each function has its op's signature and semantics (see the op's reference.py) but uses only ops that
export with a symbolic length and that backends run: no data-dependent slicing, no Python loop over
time (the recurrence is the `scan` higher-order op, which stays control flow in ONNX and ExecuTorch).
`Substitute` swaps them in while torch.export traces the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch._higher_order_ops.scan import scan
from torch.overrides import TorchFunctionMode

from seqedge.ops.causal_conv1d.op import causal_conv1d_eager


def scan_over_time(u, delta, A, B, C, D, state):
    """selective_scan as a `scan` over time (any T)."""
    a = torch.exp(delta[..., None] * A)  # (Bt, T, D, N)
    b = (delta * u)[..., None] * B[:, :, None, :]  # (Bt, T, D, N)

    def step(h, xs):
        a_t, b_t, c_t = xs  # (Bt, D, N), (Bt, D, N), (Bt, N)
        h = a_t * h + b_t  # (Bt, D, N)
        return h, (h * c_t[:, None, :]).sum(-1)  # (Bt, D)

    h, y = scan(step, state, (a, b, C), dim=1)  # y stacked along time: (Bt, T, D)
    return y + D * u, h


def scan_single_step(u, delta, A, B, C, D, state):
    """selective_scan for T = 1 (decode): plain elementwise ops, no control flow."""
    a = torch.exp(delta[:, 0, :, None] * A)  # (Bt, D, N)
    h = a * state + (delta[:, 0] * u[:, 0])[..., None] * B[:, 0, None, :]  # (Bt, D, N)
    y = (h * C[:, 0, None, :]).sum(-1) + D * u[:, 0]  # (Bt, D)
    return y[:, None], h


def conv_concat(x, weight, bias, state):
    """causal_conv1d as Concat + depthwise Conv + SiLU + Slice."""
    return causal_conv1d_eager(x, weight, bias, state)


def attention_masked(q, k, v, k_cache, v_cache, pos):
    """attention: masked write into the fixed cache + causal attention over every cache slot."""
    T, S = q.shape[2], k_cache.shape[2]
    idx = torch.arange(S, device=q.device)  # (S,)
    rel = idx - pos  # (S,) offset of each cache slot into the new tokens
    write = ((rel >= 0) & (rel < T))[None, None, :, None]  # (1, 1, S, 1)
    src = rel.clamp(0, T - 1)  # (S,)
    k_cache = torch.where(write, k.index_select(2, src), k_cache)  # (Bt, Hkv, S, hd)
    v_cache = torch.where(write, v.index_select(2, src), v_cache)  # (Bt, Hkv, S, hd)
    visible = idx[None, :] <= (pos + torch.arange(T, device=q.device))[:, None]  # (T, S)
    rep = q.shape[1] // k.shape[1]
    keys = k_cache.repeat_interleave(rep, dim=1)  # (Bt, H, S, hd)
    vals = v_cache.repeat_interleave(rep, dim=1)  # (Bt, H, S, hd)
    out = F.scaled_dot_product_attention(q, keys, vals, attn_mask=visible)  # (Bt, H, T, hd)
    return out, k_cache, v_cache


class Substitute(TorchFunctionMode):
    """While active (around torch.export), run each op's decomposition instead of the op; record which
    ops were met, so the exporter can say which lowering it used."""

    def __init__(self, decompositions: dict):
        super().__init__()
        self.decompositions = decompositions
        self.seen: set = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        key = func.default if isinstance(func, torch._ops.OpOverloadPacket) else func  # torch.ops.seqedge.x(...)
        if key in self.decompositions:
            self.seen.add(key)
            return self.decompositions[key](*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))
