"""Reference cached causal grouped-query attention: the readable ground truth.

Shapes (Bt = batch, H = query heads, Hkv = key/value heads, H % Hkv == 0, T = new tokens,
S = cache length, hd = head dim):
    q        (Bt, H, T, hd)     queries of the new tokens (RoPE already applied)
    k, v     (Bt, Hkv, T, hd)   keys/values of the new tokens (RoPE already applied to k)
    k_cache  (Bt, Hkv, S, hd)   fixed-size cache; positions < pos are valid
    v_cache  (Bt, Hkv, S, hd)
    pos      (1,) int64         position of the first new token; pos + T <= S
returns
    out      (Bt, H, T, hd)
    k_cache, v_cache            with the new keys/values written at [pos, pos + T); slots from pos + T
                                on are never read and unspecified (a lowering may zero them)

Query i (absolute position pos + i) attends to cache positions 0 .. pos + i, scaled by 1/sqrt(hd).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def attention_ref(
    q: Tensor, k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor, pos: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    Bt, H, T, hd = q.shape
    Hkv = k.shape[1]
    p = int(pos.reshape(-1)[0])
    k_cache = k_cache.clone()
    v_cache = v_cache.clone()
    k_cache[:, :, p : p + T] = k
    v_cache[:, :, p : p + T] = v
    out = torch.empty_like(q)
    for b in range(Bt):
        for h in range(H):
            g = h // (H // Hkv)  # the kv head this query head shares
            for i in range(T):
                keys = k_cache[b, g, : p + i + 1].float()  # (p+i+1, hd)
                vals = v_cache[b, g, : p + i + 1].float()  # (p+i+1, hd)
                scores = keys @ q[b, h, i].float() / math.sqrt(hd)  # (p+i+1,)
                out[b, h, i] = (torch.softmax(scores, dim=0) @ vals).to(q.dtype)  # (hd,)
    return out, k_cache, v_cache
