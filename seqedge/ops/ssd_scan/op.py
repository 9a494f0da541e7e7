"""`seqedge::ssd_scan` — the Mamba-2 recurrence as one custom op (see reference.py for shapes).

Export (torch.export, ONNX, ExecuTorch) sees one node; each exporter registers its lowering by op name
(the chunked SSD form, onnxruntime's LinearAttention with one decay per head, an ONNX Scan, a recurrence
step). Eager execution runs one recurrence step for T = 1 and the chunked SSD form (chunked.py) otherwise;
training differentiates the chunked form (recomputed in the backward: nothing of size T × L is kept).
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqedge.ops.registration import register_scan
from seqedge.ops.ssd_scan.chunked import ssd_scan_chunked
from seqedge.ops.ssd_scan.reference import ssd_scan_ref


@torch.library.custom_op("seqedge::ssd_scan", mutates_args=())
def ssd_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
             state: Tensor) -> tuple[Tensor, Tensor]:
    if x.shape[1] == 1:
        return ssd_scan_ref(x, dt, A, B, C, D, state)
    return ssd_scan_chunked(x, dt, A, B, C, D, state)


def _backward(inputs, grad_y, grad_state):
    _, vjp = torch.func.vjp(ssd_scan_chunked, *inputs)
    grad_y = grad_y if grad_y is not None else torch.zeros_like(inputs[0])
    grad_state = grad_state if grad_state is not None else torch.zeros_like(inputs[-1])
    return vjp((grad_y, grad_state))


register_scan(ssd_scan, _backward)
