"""Mamba-2 language model: multi-head SSM with a scalar decay per head, B/C shared by `n_groups` groups of
heads, one causal convolution over x‖B‖C, and a gated RMSNorm before the output projection.

Parameter names and shapes match Hugging Face `Mamba2ForCausalLM` (`backbone.layers.{i}.mixer.in_proj.weight`,
`...mixer.conv1d.weight`, `...mixer.dt_bias`, `...mixer.A_log` (heads,), `...mixer.D` (heads,),
`...mixer.norm.weight`, `...mixer.out_proj.weight`), so HF checkpoints load as they are. Per head h and step t
(x_t: the head's P = head_dim channels; B_t, C_t: its group's N = state_size vectors):

    H_t = exp(Δ_t,h · A_h) · H_{t-1} + Δ_t,h · x_t ⊗ B_t        (P, N) per head
    y_t = H_t · C_t + D_h · x_t

— one `seqedge::ssd_scan` per layer (seqedge/ops/ssd_scan: the sequential reference, the chunked SSD form
that eager PyTorch runs, and a lowering per exporter). State per layer: `conv.{i}` (B, conv_dim, K - 1),
`ssm.{i}` (B, heads × head_dim, N), the head-major flattening of the op's (B, heads, head_dim, N).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqedge.models.base import ModelConfig
from seqedge.models.mamba import Mamba
from seqedge.ops import causal_conv1d, ssd_scan


@dataclass
class Mamba2Config(ModelConfig):
    family = "mamba2"
    vocab_size: int = 256
    hidden_size: int = 96
    state_size: int = 16
    num_hidden_layers: int = 4
    expand: int = 2
    head_dim: int = 16
    n_groups: int = 1
    conv_kernel: int = 4
    layer_norm_epsilon: float = 1e-5
    use_bias: bool = False
    use_conv_bias: bool = True
    time_step_min: float = 1e-3
    time_step_max: float = 1e-1
    tie_word_embeddings: bool = True

    def __post_init__(self):
        if self.intermediate_size % self.head_dim:
            raise ValueError(f"expand × hidden_size ({self.intermediate_size}) is not a multiple of head_dim "
                             f"({self.head_dim})")
        if self.num_heads % self.n_groups:
            raise ValueError(f"the {self.num_heads} heads do not split into n_groups ({self.n_groups}) equal groups")

    @property
    def intermediate_size(self) -> int:
        return self.expand * self.hidden_size

    @property
    def num_heads(self) -> int:
        return self.intermediate_size // self.head_dim

    @property
    def conv_dim(self) -> int:
        return self.intermediate_size + 2 * self.n_groups * self.state_size


class GatedRMSNorm(nn.Module):
    """HF's MambaRMSNormGated: RMSNorm of y · silu(z) over the whole inner width, in float32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        g = y.float() * F.silu(z.float())  # (B, T, D)
        return self.weight * F.rms_norm(g, (g.shape[-1],), eps=self.eps).to(y.dtype)


class Mamba2Mixer(nn.Module):
    def __init__(self, cfg: Mamba2Config):
        super().__init__()
        self.cfg = cfg
        D, H, K = cfg.intermediate_size, cfg.num_heads, cfg.conv_kernel
        self.in_proj = nn.Linear(cfg.hidden_size, D + cfg.conv_dim + H, bias=cfg.use_bias)  # z ‖ xBC ‖ dt
        self.conv1d = nn.Conv1d(cfg.conv_dim, cfg.conv_dim, K, groups=cfg.conv_dim, bias=cfg.use_conv_bias)
        dt = torch.exp(torch.rand(H) * (math.log(cfg.time_step_max) - math.log(cfg.time_step_min))
                       + math.log(cfg.time_step_min)).clamp_min(1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # (H,): softplus(dt_bias) = dt
        self.A_log = nn.Parameter(torch.log(torch.arange(1, H + 1, dtype=torch.float32)))  # (H,)
        self.D = nn.Parameter(torch.ones(H))
        self.norm = GatedRMSNorm(D, cfg.layer_norm_epsilon)
        self.out_proj = nn.Linear(D, cfg.hidden_size, bias=cfg.use_bias)

    def forward(self, x: Tensor, conv_state: Tensor, ssm_state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        c = self.cfg
        Bt, T, _ = x.shape
        D, H, P, N, G = c.intermediate_size, c.num_heads, c.head_dim, c.state_size, c.n_groups
        z, xbc, dt = self.in_proj(x).split([D, c.conv_dim, H], dim=-1)  # (B, T, D), (B, T, conv_dim), (B, T, H)
        bias = self.conv1d.bias if self.conv1d.bias is not None else self.conv1d.weight.new_zeros(c.conv_dim)
        xbc, conv_state = causal_conv1d(xbc.transpose(1, 2), self.conv1d.weight, bias, conv_state)  # (B, conv_dim, T)
        u, Bm, Cm = xbc.transpose(1, 2).split([D, G * N, G * N], dim=-1)  # (B, T, D), (B, T, G*N) x 2
        y, ssm_state = ssd_scan(u.reshape(Bt, T, H, P), F.softplus(dt + self.dt_bias), -torch.exp(self.A_log.float()),
                                Bm.reshape(Bt, T, G, N), Cm.reshape(Bt, T, G, N), self.D,
                                ssm_state.reshape(Bt, H, P, N))  # (B, T, H, P), (B, H, P, N)
        y, ssm_state = y.reshape(Bt, T, D), ssm_state.reshape(Bt, D, N)
        return self.out_proj(self.norm(y, z)), conv_state, ssm_state


class Mamba2(Mamba):
    """Mamba's backbone, head, state and prefill around the Mamba-2 mixer (same HF names above the mixer)."""

    mixer = Mamba2Mixer


__all__ = ["Mamba2", "Mamba2Config"]
