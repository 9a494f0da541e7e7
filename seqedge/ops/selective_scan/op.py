"""`seqedge::selective_scan` — the Mamba-1 recurrence as one custom op (see reference.py for shapes).

Export (torch.export, ONNX, ExecuTorch) sees one node; each exporter registers its own lowering by
op name. Eager execution runs seqedge's C++ scan (native.py) on float32 CPU tensors; elsewhere (or
without a compiler) it steps the recurrence (sequential.py) up to LONG tokens and uses the chunked scan
(chunked.py) beyond, where it measured faster; training uses the hand-derived backward.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqedge.ops.registration import register_scan
from seqedge.ops.selective_scan.chunked import selective_scan_chunked
from seqedge.ops.selective_scan.native import scan_native
from seqedge.ops.selective_scan.sequential import scan_backward, scan_forward

LONG = 2048  # measured: at T=1024 sequential 0.16 s vs chunked 0.21 s per mamba-130m layer; at 4096, 1.26 vs 0.95


@torch.library.custom_op("seqedge::selective_scan", mutates_args=())
def selective_scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, state: Tensor
) -> tuple[Tensor, Tensor]:
    native = scan_native(u, delta, A, B, C, D, state)
    if native is not None:
        return native
    if u.shape[1] > LONG:
        return selective_scan_chunked(u, delta, A, B, C, D, state)
    return scan_forward(u, delta, A, B, C, D, state)


register_scan(selective_scan, lambda inputs, grad_y, grad_state: scan_backward(*inputs, grad_y, grad_state))
