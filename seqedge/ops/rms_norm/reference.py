"""Reference RMSNorm over the last dimension, with its weight (HF Llama/Mamba's, in float32).

Shapes (D = the normalised width):
    x       (..., D)
    weight  (D,)
returns
    y       (..., D)    x / sqrt(mean(x^2) + eps) * weight, each row of D on its own
"""

from __future__ import annotations

import torch
from torch import Tensor


def rms_norm_ref(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    xf = x.float()
    return xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.float()  # (..., D)
