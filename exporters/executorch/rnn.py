"""RNN / LSTM / GRU layers written for ExecuTorch: the input projection for all steps as one matmul, then
the recurrence as a `scan` over time, for decode (T = 1) too: unrolling the one step would hand XNNPACK a
partition whose output is its own input (the state's reshape round trip), which it refuses.

ExecuTorch unrolls `nn.RNN`/`nn.LSTM` over time (minutes to lower, fixed length); these layers keep dynamic T and
reuse the original parameters (same names, same gate order as PyTorch: LSTM i, f, g, o; GRU r, z, n).
`scan_rnns(model)` returns a copy of the model with every nn.RNN / nn.LSTM / nn.GRU swapped.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch._higher_order_ops.scan import scan


class _ScanRNN(nn.Module):
    """Holds the original layer's parameters under their own names."""

    def __init__(self, rnn: nn.RNNBase):
        super().__init__()
        self.weight_ih_l0, self.weight_hh_l0 = rnn.weight_ih_l0, rnn.weight_hh_l0
        self.bias_ih_l0, self.bias_hh_l0 = rnn.bias_ih_l0, rnn.bias_hh_l0


class ScanElman(_ScanRNN):
    def __init__(self, rnn: nn.RNN):
        super().__init__(rnn)
        self.act = torch.tanh if rnn.nonlinearity == "tanh" else torch.relu

    def cell(self, h, gx_t):
        h = self.act(gx_t + h @ self.weight_hh_l0.T)  # (B, H)
        return h, h.clone()

    def forward(self, x: Tensor, h0: Tensor):
        gx = x @ self.weight_ih_l0.T + (self.bias_ih_l0 + self.bias_hh_l0)  # (B, T, H)
        h, y = scan(self.cell, h0[0], gx, dim=1)  # y (B, T, H)
        return y, h[None]


class ScanLSTM(_ScanRNN):
    def cell(self, hc, gx_t):
        h, c = hc  # (B, H) each
        i, f, g, o = (gx_t + h @ self.weight_hh_l0.T).chunk(4, dim=-1)  # (B, H) each
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return (h, c), h.clone()

    def forward(self, x: Tensor, hc: tuple[Tensor, Tensor]):
        gx = x @ self.weight_ih_l0.T + (self.bias_ih_l0 + self.bias_hh_l0)  # (B, T, 4H)
        (h, c), y = scan(self.cell, (hc[0][0], hc[1][0]), gx, dim=1)  # y (B, T, H)
        return y, (h[None], c[None])


class ScanGRU(_ScanRNN):
    def cell(self, h, gx_t):
        xr, xz, xn = gx_t.chunk(3, dim=-1)  # (B, H) each
        hr, hz, hn = (h @ self.weight_hh_l0.T + self.bias_hh_l0).chunk(3, dim=-1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        h = (1 - z) * n + z * h  # (B, H)
        return h, h.clone()

    def forward(self, x: Tensor, h0: Tensor):
        gx = x @ self.weight_ih_l0.T + self.bias_ih_l0  # (B, T, 3H)
        h, y = scan(self.cell, h0[0], gx, dim=1)  # y (B, T, H)
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
