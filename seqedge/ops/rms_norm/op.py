"""`seqedge::rms_norm` — RMSNorm with its weight as one op (shapes: reference.py).

Not a model op: models call `F.rms_norm` with the weight (models/base.py RMSNorm), and ExecuTorch's methods trace
it as this op (exporters/decompositions.py rms_norm_kernel), which runs as the C++ kernel
`seqedge::rms_norm.out` (runtimes/native/kernels/rms_norm.cpp). Eagerly it is `F.rms_norm`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.library.custom_op("seqedge::rms_norm", mutates_args=())
def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    return F.rms_norm(x, (x.shape[-1],), weight, eps=eps)


@rms_norm.register_fake
def _(x, weight, eps):
    return torch.empty_like(x)
