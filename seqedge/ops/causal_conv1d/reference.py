"""Reference stateful causal depthwise conv1d (Mamba's short convolution), SiLU applied after.

Shapes (Bt = batch, D = channels, T = time, K = kernel size):
    x       (Bt, D, T)      input, channels first
    weight  (D, 1, K)       depthwise kernel (nn.Conv1d layout)
    bias    (D,)
    state   (Bt, D, K-1)    the last K-1 inputs of the previous call (zeros at the start)
returns
    y       (Bt, D, T)      silu(conv(x)) where output t sees inputs t-K+1 .. t
    state   (Bt, D, K-1)    the last K-1 inputs, to carry into the next call
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def causal_conv1d_ref(x: Tensor, weight: Tensor, bias: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    K = weight.shape[-1]
    window = torch.cat([state, x], dim=2)  # (Bt, D, K-1+T)
    ys = []
    for t in range(x.shape[2]):
        taps = window[:, :, t : t + K]  # (Bt, D, K)
        ys.append((taps * weight[:, 0]).sum(-1) + bias)  # (Bt, D)
    y = torch.stack(ys, dim=2)  # (Bt, D, T)
    return F.silu(y), window[:, :, x.shape[2] :]
