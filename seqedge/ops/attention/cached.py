"""`seqedge::cached_sdpa` — causal grouped-query attention of new queries over a KV cache held in
ExecuTorch's (B, S, Hkv, D) layout: what ExecuTorch's decode method runs for `seqedge::attention`, as
seqedge's C++ kernel (runtimes/native/kernels/cached_sdpa.cpp). The same contract as `llama::custom_sdpa`
without its mask/dropout/scale arguments.

Shapes:
    q        (B, T, H, D)      new queries (RoPE applied)
    k_cache  (B, S, Hkv, D)    positions [0, start_pos + T) written (the new tokens' included); q's type or float16
    v_cache  (B, S, Hkv, D)
    start_pos                  absolute position of the first query
returns
    out      (B, T, H, D)      query t attends keys [0, start_pos + t], scaled by 1/sqrt(D); query head h
                               reads kv head h // (H // Hkv)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cached_sdpa_ref(q: Tensor, k_cache: Tensor, v_cache: Tensor, start_pos: int) -> Tensor:
    T = q.shape[1]
    n = start_pos + T
    keys = k_cache[:, :n].transpose(1, 2).to(q.dtype)  # (B, Hkv, n, D)  (a float16 cache attended in q's type)
    vals = v_cache[:, :n].transpose(1, 2).to(q.dtype)  # (B, Hkv, n, D)
    mask = torch.ones(T, n, dtype=torch.bool, device=q.device).tril(diagonal=start_pos)  # (T, n)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), keys, vals, attn_mask=mask, enable_gqa=True)  # (B, H, T, D)
    return out.transpose(1, 2).contiguous()  # (B, T, H, D)


@torch.library.custom_op("seqedge::cached_sdpa", mutates_args=())
def cached_sdpa(q: Tensor, k_cache: Tensor, v_cache: Tensor, start_pos: int) -> Tensor:
    return cached_sdpa_ref(q, k_cache, v_cache, start_pos)


@cached_sdpa.register_fake
def _(q, k_cache, v_cache, start_pos):
    return torch.empty_like(q)
