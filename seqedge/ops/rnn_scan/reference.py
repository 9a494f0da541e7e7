"""Reference recurrence of the Elman RNN, LSTM and GRU cells over time: the readable, sequential ground truth of
`seqedge::rnn_scan` (PyTorch's gate order and equations: LSTM i, f, g, o; GRU r, z, n).

Shapes (Bt = batch, T = time, H = hidden size, G = gates: 1 Elman, 4 LSTM, 3 GRU):
    gx     (Bt, T, G·H)  the input projection x·W_ihᵀ + b_ih of every step (one matmul outside the scan)
    w_hh   (G·H, H)      the recurrent weight
    b_hh   (G·H,)        the recurrent bias
    h0     (Bt, H)       the hidden state carried in
    c0     (Bt, H)       the LSTM cell state carried in (ignored, and returned unchanged, by the other cells)
    cell   int           CELLS: 0 Elman tanh, 1 Elman ReLU, 2 LSTM, 3 GRU
returns
    y      (Bt, T, H)    the hidden state after each step
    h      (Bt, H), c (Bt, H)   the states to carry into the next call

    gh_t = W_hh h_{t-1} + b_hh
    Elman: h_t = act(gx_t + gh_t)
    LSTM:  i, f, g, o = σ, σ, tanh, σ of (gx_t + gh_t);  c_t = f c_{t-1} + i g;  h_t = o tanh(c_t)
    GRU:   r, z = σ(gx_t[r, z] + gh_t[r, z]);  n = tanh(gx_t[n] + r gh_t[n]);  h_t = (1 - z) n + z h_{t-1}
"""

from __future__ import annotations

import torch
from torch import Tensor

CELLS = {"rnn_tanh": 0, "rnn_relu": 1, "lstm": 2, "gru": 3}
GATES = {0: 1, 1: 1, 2: 4, 3: 3}


def rnn_scan_ref(gx: Tensor, w_hh: Tensor, b_hh: Tensor, h0: Tensor, c0: Tensor, cell: int
                 ) -> tuple[Tensor, Tensor, Tensor]:
    h, c = h0, c0
    ys = []
    for t in range(gx.shape[1]):
        x = gx[:, t]  # (Bt, G·H)
        gh = h @ w_hh.T + b_hh  # (Bt, G·H)
        if cell in (0, 1):
            h = torch.tanh(x + gh) if cell == 0 else torch.relu(x + gh)
        elif cell == 2:
            i, f, g, o = (x + gh).chunk(4, dim=-1)  # (Bt, H) each
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        else:
            xr, xz, xn = x.chunk(3, dim=-1)
            hr, hz, hn = gh.chunk(3, dim=-1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            h = (1 - z) * torch.tanh(xn + r * hn) + z * h
        ys.append(h)
    return torch.stack(ys, dim=1), h.clone(), c.clone()
