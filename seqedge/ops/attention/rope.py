"""`seqedge::rope` — rotary position embedding of queries or keys at positions [pos, pos + T): what ExecuTorch's
attention lowering runs before it writes keys into the program-held cache and attends (exporters/decompositions.py
`attention_cached_sdpa`), as seqedge's C++ kernel (runtimes/native/kernels/rope.cpp) — one call where the rotation
decomposes into a dozen nodes (positions, two table gathers and concatenations, the half-swap's slices, negation
and concatenation, the products), each a dispatch of ExecuTorch's interpreter or a split of the XNNPACK graph.

Shapes:
    x        (Bt, T, h, hd)   queries or keys of the new tokens, hd even
    pos      (1,) int64       absolute position of the first (>= 0); a position past the tables takes their last
                              row (as the other lowerings' gathers do)
    cos, sin (S, hd/2)        RoPE tables: row p holds position p's angles
returns      (Bt, T, h, hd)   rope_ref(x, cos, sin, positions): Hugging Face's rotate_half pairing
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqedge.ops.attention.reference import rope_ref


def rope_at_ref(x: Tensor, pos: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    T = x.shape[1]
    positions = torch.clamp(pos.reshape(-1)[:1] + torch.arange(T), max=cos.shape[0] - 1)  # (T,)
    return rope_ref(x, cos, sin, positions)  # (Bt, T, h, hd)


@torch.library.custom_op("seqedge::rope", mutates_args=())
def rope(x: Tensor, pos: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    return rope_at_ref(x, pos, cos, sin)


@rope.register_fake
def _(x, pos, cos, sin):
    return torch.empty_like(x)
