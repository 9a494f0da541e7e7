"""`seqedge::to_half` — float32 to float16, rounded to nearest even: what ExecuTorch's attention lowering writes the
new keys and values into program-held float16 caches with (exporters/decompositions.py `attention_cached_sdpa`),
as seqedge's C++ kernel (runtimes/native/kernels/to_half.cpp, F16C's conversion where the CPU has it). ExecuTorch
runs `Tensor.to(float16)` as its portable `_to_dim_order_copy` (XNNPACK takes no dtype conversions), ~2.4 ns an
element: 28 ms, 6 %, of a llama-135m int4 prompt of 1,024 tokens (ETDump, 2 threads).

Shapes:
    x        (...)  float32
returns      (...)  float16, x rounded to the nearest float16 (ties to even; past 65504 infinity)
"""

from __future__ import annotations

import torch
from torch import Tensor


def to_half_ref(x: Tensor) -> Tensor:
    return x.to(torch.float16)


@torch.library.custom_op("seqedge::to_half", mutates_args=())
def to_half(x: Tensor) -> Tensor:
    return to_half_ref(x)


@to_half.register_fake
def _(x):
    return torch.empty_like(x, dtype=torch.float16)
