"""Reference cached causal grouped-query attention with rotary positions: the readable ground truth.

Shapes (Bt = batch, H = query heads, Hkv = key/value heads, H % Hkv == 0, T = new tokens,
S = cache length, hd = head dim):
    q        (Bt, T, H*hd)      queries of the new tokens, as the projection gives them (no RoPE yet)
    k, v     (Bt, T, Hkv*hd)    keys/values of the new tokens (no RoPE yet)
    k_cache  (Bt, Hkv, S, hd)   fixed-size cache; positions < pos are valid (keys stored rotated)
    v_cache  (Bt, Hkv, S, hd)
    pos      (1,) int64         position of the first new token; pos + T <= S
    cos, sin (S, hd/2)          RoPE tables: cos/sin of position p times each frequency (row p)
returns
    out      (Bt, T, H*hd)
    k_cache, v_cache            with the new (rotated) keys and values written at [pos, pos + T); slots from
                                pos + T on are never read and unspecified (a lowering may zero them)

New token i sits at absolute position pos + i: q and k are rotated there (Hugging Face's rotate_half
convention: the first and second halves of each head are the pair), then query i attends to cache
positions 0 .. pos + i, scaled by 1/sqrt(hd). Taking RoPE into the op lets a lowering fuse it
(seqedge's onnxruntime kernel and onnxruntime's GroupQueryAttention rotate inside it).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def rope_ref(x: Tensor, cos: Tensor, sin: Tensor, positions: Tensor) -> Tensor:
    """x (Bt, T, h, hd) rotated to `positions` (T,) with tables (S, hd/2)."""
    c = torch.cat([cos[positions], cos[positions]], dim=-1)[None, :, None, :]  # (1, T, 1, hd)
    s = torch.cat([sin[positions], sin[positions]], dim=-1)[None, :, None, :]  # (1, T, 1, hd)
    x1, x2 = x.chunk(2, dim=-1)  # (Bt, T, h, hd/2) each
    return x * c + torch.cat([-x2, x1], dim=-1) * s


def attention_ref(
    q: Tensor, k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor, pos: Tensor, cos: Tensor, sin: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    Bt, T, _ = q.shape
    Hkv, hd = k_cache.shape[1], k_cache.shape[3]
    H = q.shape[2] // hd
    p = int(pos.reshape(-1)[0])
    positions = torch.arange(p, p + T)  # (T,)
    q = rope_ref(q.reshape(Bt, T, H, hd), cos, sin, positions)  # (Bt, T, H, hd)
    k = rope_ref(k.reshape(Bt, T, Hkv, hd), cos, sin, positions)  # (Bt, T, Hkv, hd)
    v = v.reshape(Bt, T, Hkv, hd)  # (Bt, T, Hkv, hd)
    k_cache = k_cache.clone()
    v_cache = v_cache.clone()
    k_cache[:, :, p : p + T] = k.transpose(1, 2)
    v_cache[:, :, p : p + T] = v.transpose(1, 2)
    out = torch.empty(Bt, T, H, hd, dtype=q.dtype)
    for b in range(Bt):
        for h in range(H):
            g = h // (H // Hkv)  # the kv head this query head shares
            for i in range(T):
                keys = k_cache[b, g, : p + i + 1].float()  # (p+i+1, hd)
                vals = v_cache[b, g, : p + i + 1].float()  # (p+i+1, hd)
                scores = keys @ q[b, i, h].float() / math.sqrt(hd)  # (p+i+1,)
                out[b, i, h] = (torch.softmax(scores, dim=0) @ vals).to(q.dtype)  # (hd,)
    return out.reshape(Bt, T, H * hd), k_cache, v_cache
