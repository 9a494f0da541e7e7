"""`seqedge::rnn_scan` — the Elman/LSTM/GRU recurrence over time as one custom op (see reference.py).

ExecuTorch runs it as seqedge's C++ kernel (runtimes/native/kernels/rnn_scan.cpp) in both methods: the `scan`
higher-order op it replaces ran the cell op by op in the interpreter (LSTM decode 6-8x slower than
onnxruntime's native LSTM). Eager execution is the reference (the op only exists in the ExecuTorch export
path; models run nn.RNN/nn.LSTM/nn.GRU). Not differentiable: it is an inference op.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqedge.ops.rnn_scan.reference import rnn_scan_ref


@torch.library.custom_op("seqedge::rnn_scan", mutates_args=())
def rnn_scan(gx: Tensor, w_hh: Tensor, b_hh: Tensor, h0: Tensor, c0: Tensor, cell: int
             ) -> tuple[Tensor, Tensor, Tensor]:
    return rnn_scan_ref(gx, w_hh, b_hh, h0, c0, cell)


@rnn_scan.register_fake
def _(gx, w_hh, b_hh, h0, c0, cell):
    return gx.new_empty((gx.shape[0], gx.shape[1], h0.shape[1])), torch.empty_like(h0), torch.empty_like(c0)
