"""RNN / LSTM / GRU layers written for ExecuTorch: the input projection for all steps as one matmul (XNNPACK),
then the recurrence as one `seqedge::rnn_scan` node (seqedge's C++ kernel, runtimes/native/kernels/rnn_scan.cpp),
in both methods.

ExecuTorch unrolls `nn.RNN`/`nn.LSTM` over time (minutes to lower, fixed length); a `scan` higher-order op
keeps T dynamic but runs the cell op by op in the interpreter (LSTM decode 6-8x slower than onnxruntime's
native LSTM). These layers keep dynamic T and reuse the original parameters (same names, same gate order as
PyTorch: LSTM i, f, g, o; GRU r, z, n). `scan_rnns(model)` returns a copy of the model with every nn.RNN /
nn.LSTM / nn.GRU swapped.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import seqedge.ops  # noqa: F401  (defines seqedge::rnn_scan)
from seqedge.ops.rnn_scan import CELLS


class _ScanRNN(nn.Module):
    """Holds the original layer's parameters under their own names."""

    cell: int

    def __init__(self, rnn: nn.RNNBase):
        super().__init__()
        self.weight_ih_l0, self.weight_hh_l0 = rnn.weight_ih_l0, rnn.weight_hh_l0
        self.bias_ih_l0, self.bias_hh_l0 = rnn.bias_ih_l0, rnn.bias_hh_l0

    def recur(self, x: Tensor, h0: Tensor, c0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        gx = F.linear(x, self.weight_ih_l0, self.bias_ih_l0)  # (B, T, G·H): a linear XNNPACK takes
        return torch.ops.seqedge.rnn_scan(gx, self.weight_hh_l0, self.bias_hh_l0, h0, c0, self.cell)


class ScanElman(_ScanRNN):
    def __init__(self, rnn: nn.RNN):
        super().__init__(rnn)
        self.cell = CELLS["rnn_tanh" if rnn.nonlinearity == "tanh" else "rnn_relu"]

    def forward(self, x: Tensor, h0: Tensor):
        y, h, _ = self.recur(x, h0[0], torch.zeros_like(h0[0]))  # y (B, T, H)
        return y, h[None]


class ScanLSTM(_ScanRNN):
    cell = CELLS["lstm"]

    def forward(self, x: Tensor, hc: tuple[Tensor, Tensor]):
        y, h, c = self.recur(x, hc[0][0], hc[1][0])  # y (B, T, H)
        return y, (h[None], c[None])


class ScanGRU(_ScanRNN):
    cell = CELLS["gru"]

    def forward(self, x: Tensor, h0: Tensor):
        y, h, _ = self.recur(x, h0[0], torch.zeros_like(h0[0]))  # y (B, T, H)
        return y, h[None]


SWAPS = {nn.RNN: ScanElman, nn.LSTM: ScanLSTM, nn.GRU: ScanGRU}


def scan_rnns(model: nn.Module) -> nn.Module:
    """A copy of `model` whose single-layer, batch-first nn.RNN / nn.LSTM / nn.GRU modules are scan layers."""
    if not any(type(m) in SWAPS for m in model.modules()):
        return model
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            swap = SWAPS.get(type(child))
            if swap:
                if child.num_layers != 1 or not child.batch_first or child.bidirectional:
                    from seqedge.errors import UnsupportedError

                    path = f"{name}.{child_name}".lstrip(".")
                    raise UnsupportedError(f"layer {path} ({type(child).__name__}) must be single-layer, batch-first "
                                           "and unidirectional for ExecuTorch", "stack single-layer modules instead")
                setattr(module, child_name, swap(child))
    return model
