"""Reference quantizers: llama.cpp's block formats, reproduced in PyTorch as fake quantization (weights
rounded onto the format's grid and stored back as float), the yardstick quantized exports are held to.

    q = q4_0(w)                       # (N, K) -> (N, K): every 32 weights along K share one scale
    base = on_grid(model, "q4_0")     # a copy of the model with every matrix on that grid

Q4_0 (ggml-quants.c `quantize_row_q4_0_ref`): per block of 32, the element of largest magnitude `m`
gives the scale d = m / -8 (stored as float16), values q = min(15, trunc(x / d + 8.5)), x' = (q - 8) * d;
equal to the `gguf` package's quantize + dequantize, bit for bit (tested). The grid
seqedge's int4 recipes are compared with: on the same weights and the same tokens, an int4 artifact
may lose at most a fixed multiple of what Q4_0 loses (recipe.py), so the gate follows the model (a
135M model loses far more to 4 bits than a toy does) without excusing a broken lowering.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

BLOCK = 32


ROWS = 512  # rows rounded at a time: the temporaries stay in cache (mamba-130m's grid 2.5x faster than whole)


def q4_0(w: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """`w` (N, K), K a multiple of `block`, rounded onto llama.cpp's Q4_0 grid (returned as float)."""
    n, k = w.shape
    out = torch.empty(n, k, dtype=w.dtype)
    for r in range(0, n, ROWS):
        x = w[r:r + ROWS].detach().float().reshape(-1, k // block, block)  # (R, K/B, B)
        m = x.gather(-1, x.abs().argmax(-1, keepdim=True))  # (R, K/B, 1) signed element of largest magnitude
        d = m / -8
        inv = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
        q = x.mul(inv).add_(8.5).trunc_().clamp_(max=15)  # ggml: MIN(15, (int8_t)(x * id + 8.5f))
        out[r:r + ROWS] = q.sub_(8).mul_(d.half().float()).reshape(-1, k)  # the block's scale is stored as fp16
    return out


GRIDS = {"q4_0": q4_0}


def on_grid(model: nn.Module, grid: str) -> nn.Module:
    """A copy of `model` with every weight matrix whose input width is a multiple of the block (linear
    layers, the output head, embedding tables) on `grid`; vectors, norms and convolutions stay float."""
    fn = GRIDS[grid]
    model = copy.deepcopy(model)
    with torch.no_grad():
        for module in model.modules():
            w = getattr(module, "weight", None)
            if isinstance(module, (nn.Linear, nn.Embedding)) and w is not None and w.shape[-1] % BLOCK == 0:
                w.copy_(fn(w))
    return model


def baseline_model(model, grid: str | None) -> nn.Module | None:
    """`model` on `grid` for a recipe's baseline; None without a grid or for a model that is not a module.
    An export builds it once and hands it to parity and to the bits/byte report."""
    return on_grid(model, grid) if grid and isinstance(model, nn.Module) else None
