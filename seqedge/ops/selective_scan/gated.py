"""`seqedge::mamba_scan` — the selective scan with Mamba's block around it as one op (shapes: reference.py
mamba_scan_ref): the step is softplus(delta) and the output is gated, y · silu(z).

Not a model op: models call softplus, `seqedge::selective_scan` and the gate (models/mamba.py); an ExecuTorch
export's copy of the model calls this in their place (MambaMixer.gate_in_scan, exporters/projections.py
gate_scans), which runs as the C++ kernel `seqedge::mamba_scan.out` (runtimes/native/kernels/selective_scan.cpp,
the scan onnxruntime's seqedge.MambaScan runs). Eagerly it is those three steps.

`seqedge::int4_mamba_scan` is the same whose step, before its softplus, is Mamba's dt_proj as int4 codes, the
product of dt (Bt, T, R) plus dt_bias (D) (int4_mamba_scan_ref; an int4 dt_proj calls it, quant/executorch.py
Int4Linear.mamba_scan): ExecuTorch's kernel `seqedge::int4_mamba_scan.out` (runtimes/native/kernels/
int4_mamba_scan.cpp, onnxruntime's seqedge.Int4MambaScan) runs a step's product and scan block by block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from seqedge.ops.int4_matmul.op import int4_matmul_eager
from seqedge.ops.selective_scan.op import selective_scan


@torch.library.custom_op("seqedge::mamba_scan", mutates_args=())
def mamba_scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, state: Tensor, z: Tensor
) -> tuple[Tensor, Tensor]:
    y, h = selective_scan(u, F.softplus(delta), A, B, C, D, state)  # (Bt, T, D), (Bt, D, N)
    return y * F.silu(z), h


@mamba_scan.register_fake
def _(u, delta, A, B, C, D, state, z):
    return torch.empty_like(u), torch.empty_like(state)


@torch.library.custom_op("seqedge::int4_mamba_scan", mutates_args=())
def int4_mamba_scan(
    u: Tensor, dt: Tensor, dt_codes: Tensor, dt_scales: Tensor, dt_bias: Tensor, A: Tensor, B: Tensor, C: Tensor,
    D: Tensor, state: Tensor, z: Tensor
) -> tuple[Tensor, Tensor]:
    delta = int4_matmul_eager(dt, dt_codes, dt_scales) + dt_bias  # (Bt, T, D)
    return mamba_scan(u, delta, A, B, C, D, state, z)


@int4_mamba_scan.register_fake
def _(u, dt, dt_codes, dt_scales, dt_bias, A, B, C, D, state, z):
    return torch.empty_like(u), torch.empty_like(state)
