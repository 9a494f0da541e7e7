"""S4D language model: the linear time-invariant diagonal state-space layer (S4D-Real, Gu et al. 2022).

Each of the H channels is its own SSM with N real, negative decays; Δ, B and C do not depend on the input
(unlike Mamba), so a layer is a fixed filter over the whole stream — audio, sensor series or, as in the zoo,
bytes of text. Per layer (parameter names as the state-spaces `S4D` module):

    h_t = exp(Δ·A) ⊙ h_{t-1} + Δ·B̄ · u_t        A = -exp(log_A_real) (H, N), Δ = exp(log_dt) (H,)
    y_t = Σ_n C ⊙ h_t + D · u_t                 B̄ = B · (exp(Δ·A) - 1) / (Δ·A): zero-order hold

Prefill and decode go through `seqedge::selective_scan` with the parameters broadcast: the H·N (channel,
state) pairs are H·N scan channels of state size 1 with B = C = 1, the input scaled by B̄ and the output
contracted with C here. `s4d_convolution` is the other classic prefill — the layer as one causal
convolution with the kernel K[h, l] = Σ_n C Δ·B̄ exp(Δ·A·l), by FFT — which eager PyTorch runs for T > 1
(training, the reference in parity checks; faster there, and no exporter takes an FFT), so an artifact's
parity check compares two independent forms; `benchmarks/s4_prefill.py` measures the two. State per layer:
`ssm.{i}` (B, H, N).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqedge.models.base import ModelConfig, RMSNorm, SequenceModel, State, TensorSpec
from seqedge.ops import selective_scan


@dataclass
class S4Config(ModelConfig):
    family = "s4"
    vocab_size: int = 256
    hidden_size: int = 96
    state_size: int = 16  # N, per channel
    num_hidden_layers: int = 4
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    layer_norm_epsilon: float = 1e-5
    tie_word_embeddings: bool = True

    def __post_init__(self):
        if not self.dt_min < self.dt_max:
            raise ValueError(f"dt_min ({self.dt_min}) must be below dt_max ({self.dt_max})")


class S4D(nn.Module):
    def __init__(self, cfg: S4Config):
        super().__init__()
        H, N = cfg.hidden_size, cfg.state_size
        log_dt = torch.rand(H) * (math.log(cfg.dt_max) - math.log(cfg.dt_min)) + math.log(cfg.dt_min)
        self.log_dt = nn.Parameter(log_dt)  # (H,)
        self.log_A_real = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(H, 1))  # (H, N)
        self.B = nn.Parameter(torch.ones(H, N))
        self.C = nn.Parameter(torch.randn(H, N) * N**-0.5)
        self.D = nn.Parameter(torch.randn(H))

    def discrete(self) -> tuple[Tensor, Tensor, Tensor]:
        """Δ (H,), A (H, N) and B̄ (H, N): Δ·B̄ is the zero-order-hold input matrix."""
        dt = torch.exp(self.log_dt)  # (H,)
        A = -torch.exp(self.log_A_real)  # (H, N)
        dtA = dt[:, None] * A  # (H, N)
        return dt, A, self.B * torch.expm1(dtA) / dtA

    def forward(self, u: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        if u.shape[1] > 1 and not torch.compiler.is_exporting():  # eager prefill and training: the FFT form
            return s4d_convolution(self, u, state)  # (faster in PyTorch: benchmarks/s4_prefill.py; same values)
        return self.scan(u, state)

    def scan(self, u: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """The layer through `seqedge::selective_scan`: what exporters see and decode runs."""
        Bt, T, H = u.shape
        N = self.B.shape[1]
        dt, A, Bbar = self.discrete()
        x = (u[..., None] * Bbar).reshape(Bt, T, H * N)  # (Bt, T, H*N): the input of each (channel, state) pair
        delta = dt[:, None].expand(H, N).reshape(H * N).expand(Bt, T, H * N)  # (Bt, T, H*N)
        one = u.new_ones(Bt, T, 1)  # B = C = 1 for every pair
        h, state = selective_scan(x, delta, A.reshape(H * N, 1), one, one, u.new_zeros(H * N),
                                  state.reshape(Bt, H * N, 1))  # h (Bt, T, H*N): the states themselves
        y = (h.reshape(Bt, T, H, N) * self.C).sum(-1) + self.D * u  # (Bt, T, H)
        return y, state.reshape(Bt, H, N)


def s4d_convolution(layer: S4D, u: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """The same layer as one causal convolution (FFT, O(T log T) per channel), plus the carried state's
    contribution; returns what `layer(u, state)` returns. Eager only (no exporter takes an FFT)."""
    Bt, T, H = u.shape
    dt, A, Bbar = layer.discrete()
    dtA = dt[:, None] * A  # (H, N)
    steps = torch.arange(T, dtype=u.dtype, device=u.device)  # (T,)
    powers = torch.exp(dtA[..., None] * steps)  # (H, N, T): exp(Δ·A·l)
    kernel = torch.einsum("hn,hnl->hl", layer.C * dt[:, None] * Bbar, powers)  # (H, T)
    n = 2 * T
    y = torch.fft.irfft(torch.fft.rfft(u.transpose(1, 2), n) * torch.fft.rfft(kernel, n), n)[..., :T]  # (Bt, H, T)
    decay = powers * torch.exp(dtA)[..., None]  # (H, N, T): exp(Δ·A·(t+1)), how the carried state fades
    y = y.transpose(1, 2) + torch.einsum("bhn,hnt->bth", state * layer.C, decay) + layer.D * u  # (Bt, T, H)
    new = torch.einsum("bth,hnt->bhn", u, powers.flip(-1)) * (dt[:, None] * Bbar) + state * decay[..., -1]  # (Bt, H, N)
    return y, new


class S4Block(nn.Module):
    """Pre-norm residual block as the S4D paper's models: norm, S4D, GELU, a GLU output projection."""

    def __init__(self, cfg: S4Config):
        super().__init__()
        self.norm = RMSNorm(cfg.hidden_size, cfg.layer_norm_epsilon)
        self.s4 = S4D(cfg)
        self.out_proj = nn.Linear(cfg.hidden_size, 2 * cfg.hidden_size)

    def forward(self, x: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        y, state = self.s4(self.norm(x), state)  # (B, T, H)
        return x + F.glu(self.out_proj(F.gelu(y)), dim=-1), state


class S4(SequenceModel):
    def __init__(self, cfg: S4Config):
        super().__init__()
        self.config = cfg
        self.embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(S4Block(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm_f = RMSNorm(cfg.hidden_size, cfg.layer_norm_epsilon)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        nn.init.normal_(self.embeddings.weight, std=0.02)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embeddings.weight

    def recurrence_flops(self) -> int:  # exp, two FMAs and the C product per (channel, state) pair, per layer
        c = self.config
        return 6 * c.num_hidden_layers * c.hidden_size * c.state_size

    def state_spec(self, batch: int | str = "batch") -> list[TensorSpec]:
        c = self.config
        return [TensorSpec(f"ssm.{i}", "float32", (batch, c.hidden_size, c.state_size))
                for i in range(c.num_hidden_layers)]

    def prefill(self, tokens: Tensor, state: State, last_only: bool = False) -> tuple[Tensor, State]:
        x = self.embeddings(tokens)  # (B, T, H)
        new: State = {}
        for i, layer in enumerate(self.layers):
            x, new[f"ssm.{i}"] = layer(x, state[f"ssm.{i}"])
        if last_only:
            x = x[:, -1:]  # (B, 1, H)
        return self.lm_head(self.norm_f(x)), new  # (B, T or 1, V)


__all__ = ["S4", "S4Config", "S4D", "s4d_convolution"]
