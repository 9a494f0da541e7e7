"""`seqedge::attention` — cached causal GQA with rotary positions as one custom op (see reference.py for shapes).

Eager execution rotates q and k, writes the cache out of place and runs SDPA over the valid prefix;
exporters lower the op by name (ONNX seqedge.Attention, seqedge's C++ kernel, or GroupQueryAttention, both
rotating inside the kernel; ExecuTorch update_cache + custom_sdpa / cached_sdpa, or plain SDPA).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from seqedge.ops.attention.reference import rope_ref


def attention_sdpa(
    q: Tensor, k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor, pos: Tensor, cos: Tensor, sin: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Fast eager path: rotate, slice-write the cache, SDPA over positions [0, pos + T) with a causal offset."""
    Bt, T, _ = q.shape
    Hkv, hd = k_cache.shape[1], k_cache.shape[3]
    H = q.shape[2] // hd
    p = int(pos.reshape(-1)[0])
    positions = torch.arange(p, p + T, device=q.device)  # (T,)
    q = rope_ref(q.reshape(Bt, T, H, hd), cos, sin, positions).transpose(1, 2)  # (Bt, H, T, hd)
    k = rope_ref(k.reshape(Bt, T, Hkv, hd), cos, sin, positions).transpose(1, 2)  # (Bt, Hkv, T, hd)
    v = v.reshape(Bt, T, Hkv, hd).transpose(1, 2)  # (Bt, Hkv, T, hd)
    k_cache = k_cache.clone()
    v_cache = v_cache.clone()
    k_cache[:, :, p : p + T] = k
    v_cache[:, :, p : p + T] = v
    keys = k_cache[:, :, : p + T]  # (Bt, Hkv, p+T, hd)
    vals = v_cache[:, :, : p + T]  # (Bt, Hkv, p+T, hd)
    # query i may see key j when j <= p + i
    mask = torch.ones(T, p + T, dtype=torch.bool, device=q.device).tril(diagonal=p)  # (T, p+T)
    out = F.scaled_dot_product_attention(q, keys, vals, attn_mask=mask, enable_gqa=True)  # (Bt, H, T, hd)
    return out.transpose(1, 2).reshape(Bt, T, H * hd), k_cache, v_cache


@torch.library.custom_op("seqedge::attention", mutates_args=())
def attention(
    q: Tensor, k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor, pos: Tensor, cos: Tensor, sin: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    return attention_sdpa(q, k, v, k_cache, v_cache, pos, cos, sin)


@attention.register_fake
def _(q, k, v, k_cache, v_cache, pos, cos, sin):
    return torch.empty_like(q), torch.empty_like(k_cache), torch.empty_like(v_cache)
