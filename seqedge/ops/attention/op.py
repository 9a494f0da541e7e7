"""`seqedge::attention` — cached causal GQA as one custom op (see reference.py for shapes).

Eager execution writes the cache out of place and runs SDPA over the valid prefix; exporters lower
the op by name (ONNX GroupQueryAttention, ExecuTorch custom_sdpa + update_cache, or plain SDPA).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def attention_sdpa(
    q: Tensor, k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor, pos: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Fast eager path: slice-write the cache, SDPA over positions [0, pos + T) with a causal offset."""
    T = q.shape[2]
    p = int(pos.reshape(-1)[0])
    k_cache = k_cache.clone()
    v_cache = v_cache.clone()
    k_cache[:, :, p : p + T] = k
    v_cache[:, :, p : p + T] = v
    keys = k_cache[:, :, : p + T]  # (Bt, Hkv, p+T, hd)
    vals = v_cache[:, :, : p + T]  # (Bt, Hkv, p+T, hd)
    # query i may see key j when j <= p + i
    mask = torch.ones(T, p + T, dtype=torch.bool, device=q.device).tril(diagonal=p)  # (T, p+T)
    out = F.scaled_dot_product_attention(q, keys, vals, attn_mask=mask, enable_gqa=True)  # (Bt, H, T, hd)
    return out, k_cache, v_cache


@torch.library.custom_op("seqedge::attention", mutates_args=())
def attention(
    q: Tensor, k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor, pos: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    return attention_sdpa(q, k, v, k_cache, v_cache, pos)


@attention.register_fake
def _(q, k, v, k_cache, v_cache, pos):
    return torch.empty_like(q), torch.empty_like(k_cache), torch.empty_like(v_cache)
