"""Mamba-1 language model: in_proj, causal depthwise conv1d, selective scan with input-dependent Δ, B, C.

Parameter names and shapes match Hugging Face `MambaForCausalLM` (`backbone.embeddings.weight`,
`backbone.layers.{i}.mixer.in_proj.weight`, `...mixer.A_log`, `backbone.norm_f.weight`, `lm_head.weight`).
The recurrence is one `seqedge::selective_scan` op per layer. State per layer: `conv.{i}` holds the
last d_conv - 1 inputs of the convolution, `ssm.{i}` the scan state h.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqedge.models.base import ModelConfig, RMSNorm, SequenceModel, State, TensorSpec
from seqedge.ops import causal_conv1d, mamba_scan, selective_scan


@dataclass
class MambaConfig(ModelConfig):
    family = "mamba"
    vocab_size: int = 256
    hidden_size: int = 96
    state_size: int = 8
    num_hidden_layers: int = 4
    expand: int = 2
    conv_kernel: int = 4
    time_step_rank: int = 0  # 0 means HF's "auto": ceil(hidden_size / 16)
    layer_norm_epsilon: float = 1e-5
    use_bias: bool = False
    use_conv_bias: bool = True
    tie_word_embeddings: bool = True
    zero_means_auto: ClassVar[tuple[str, ...]] = ("time_step_rank",)

    def __post_init__(self):
        if self.time_step_rank <= 0:
            self.time_step_rank = math.ceil(self.hidden_size / 16)

    @property
    def intermediate_size(self) -> int:
        return self.expand * self.hidden_size

    @property
    def conv_dim(self) -> int:  # channels the causal convolution runs over (Mamba-2 adds B and C)
        return self.intermediate_size


class MambaMixer(nn.Module):
    gated_scan = False  # softplus, scan and gate as one op (an export's copy: gate_in_scan)

    def __init__(self, cfg: MambaConfig):
        super().__init__()
        D, N, R, K = cfg.intermediate_size, cfg.state_size, cfg.time_step_rank, cfg.conv_kernel
        self.d_inner, self.d_state, self.dt_rank, self.d_conv = D, N, R, K
        self.in_proj = nn.Linear(cfg.hidden_size, 2 * D, bias=cfg.use_bias)
        self.conv1d = nn.Conv1d(D, D, K, groups=D, bias=cfg.use_conv_bias)
        self.x_proj = nn.Linear(D, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, D, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(D, 1))  # (D, N)
        self.D = nn.Parameter(torch.ones(D))
        self.out_proj = nn.Linear(D, cfg.hidden_size, bias=cfg.use_bias)
        # Mamba's Δ initialisation: softplus(bias) log-uniform in [1e-3, 1e-1]
        nn.init.uniform_(self.dt_proj.weight, -(R**-0.5), R**-0.5)
        dt = torch.exp(torch.rand(D) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp_min(1e-4)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def forward(self, x: Tensor, conv_state: Tensor, ssm_state: Tensor,
                length: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """`length` ((1,) int64): only the first `length` of the T steps are real (a padded chunk): the
        convolution's state is the window ending there and Δ = 0 on the padding, which leaves the scan's
        state unchanged (exp(0·A) = 1, Δ·u·B = 0)."""
        T = x.shape[1]
        xz = self.in_proj(x)  # (B, T, 2D)
        u, z = xz.chunk(2, dim=-1)  # (B, T, D) each
        bias = self.conv1d.bias if self.conv1d.bias is not None else self.conv1d.weight.new_zeros(self.d_inner)
        window = u.transpose(1, 2)  # (B, D, T)
        u, new_conv = causal_conv1d(window, self.conv1d.weight, bias, conv_state)  # (B, D, T)
        if length is not None:
            window = torch.cat([conv_state, window], dim=2)  # (B, D, K-1+T)
            new_conv = window.index_select(2, length + torch.arange(self.d_conv - 1))  # (B, D, K-1)
        u = u.transpose(1, 2)  # (B, T, D)
        dbc = self.x_proj(u)  # (B, T, R + 2N)
        dt, Bm, Cm = dbc.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        A = self._parameters.get("neg_exp_A_log")  # an export's constant (freeze_constants)
        A = -torch.exp(self.A_log.float()) if A is None else A  # (D, N)
        if self.gated_scan and length is None:
            in_scan = getattr(self.dt_proj, "mamba_scan", None)  # a quantized layer whose product the scan computes
            if in_scan is not None:
                y, ssm_state = in_scan(dt, u, A, Bm, Cm, self.D, ssm_state, z)  # (B, T, D), (B, D, N)
            else:
                y, ssm_state = mamba_scan(u, self.dt_proj(dt), A, Bm, Cm, self.D, ssm_state, z)
            return self.out_proj(y), new_conv, ssm_state
        delta = F.softplus(self.dt_proj(dt))  # (B, T, D)
        if length is not None:
            delta = delta * (torch.arange(T) < length).to(delta.dtype)[None, :, None]  # (B, T, D)
        y, ssm_state = selective_scan(u, delta, A, Bm, Cm, self.D, ssm_state)  # (B, T, D), (B, D, N)
        y = y * F.silu(z)  # (B, T, D)
        return self.out_proj(y), new_conv, ssm_state

    def freeze_constants(self) -> None:
        """A = -exp(A_log) once, as a constant, in place of the parameter (exporters/projections.py
        freeze_constants: on an export's copy of the model). ExecuTorch does not fold it: a mamba-130m token
        computed 24 Exp and Negate nodes over (1536, 16) each."""
        A = -torch.exp(self.A_log.detach().float())  # (D, N)
        self.neg_exp_A_log = nn.Parameter(A, requires_grad=False)  # a parameter: the quant report lists it, float
        del self._parameters["A_log"]

    def gate_in_scan(self) -> None:
        """softplus(Δ), the scan and the gate y · silu(z) as one op, `seqedge::mamba_scan` (exporters/projections.py
        gate_scans: on an ExecuTorch export's copy of the model, whose kernel does all three); with an int4 dt_proj,
        its product too (`seqedge::int4_mamba_scan`, Int4Linear.mamba_scan). Apart, a decode step ran the softplus
        and the gate as two XNNPACK calls a layer."""
        self.gated_scan = True


class MambaBlock(nn.Module):
    """Pre-norm residual block around a mixer (Mamba-1's here; Mamba-2 passes its own)."""

    def __init__(self, cfg: MambaConfig, mixer: type[nn.Module] = MambaMixer):
        super().__init__()
        self.norm = RMSNorm(cfg.hidden_size, cfg.layer_norm_epsilon)
        self.mixer = mixer(cfg)

    def forward(self, x, conv_state, ssm_state, length=None):
        extra = () if length is None else (length,)  # only mixers that take padded chunks are given one
        y, conv_state, ssm_state = self.mixer(self.norm(x), conv_state, ssm_state, *extra)
        return x + y, conv_state, ssm_state


class MambaBackbone(nn.Module):
    def __init__(self, cfg: MambaConfig, mixer: type[nn.Module] = MambaMixer):
        super().__init__()
        self.embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(MambaBlock(cfg, mixer) for _ in range(cfg.num_hidden_layers))
        self.norm_f = RMSNorm(cfg.hidden_size, cfg.layer_norm_epsilon)


class Mamba(SequenceModel):
    mixer: type[nn.Module] = MambaMixer

    def __init__(self, cfg: MambaConfig):
        super().__init__()
        self.config = cfg
        self.backbone = MambaBackbone(cfg, self.mixer)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        nn.init.normal_(self.backbone.embeddings.weight, std=0.02)
        for layer in self.backbone.layers:  # GPT-2 style rescale of the residual projections
            nn.init.kaiming_uniform_(layer.mixer.out_proj.weight, a=math.sqrt(5))
            layer.mixer.out_proj.weight.data /= math.sqrt(cfg.num_hidden_layers)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.backbone.embeddings.weight

    def recurrence_flops(self) -> int:  # exp, two FMAs and the C dot per state element, per layer
        c = self.config
        return 6 * c.num_hidden_layers * c.intermediate_size * c.state_size

    def state_spec(self, batch: int | str = "batch") -> list[TensorSpec]:
        c = self.config
        specs = []
        for i in range(c.num_hidden_layers):
            specs.append(TensorSpec(f"conv.{i}", "float32", (batch, c.conv_dim, c.conv_kernel - 1)))
            specs.append(TensorSpec(f"ssm.{i}", "float32", (batch, c.intermediate_size, c.state_size)))
        return specs

    def prefill(self, tokens: Tensor, state: State, last_only: bool = False) -> tuple[Tensor, State]:
        x = self.backbone.embeddings(tokens)  # (B, T, C)
        new: State = {}
        for i, layer in enumerate(self.backbone.layers):
            x, new[f"conv.{i}"], new[f"ssm.{i}"] = layer(x, state[f"conv.{i}"], state[f"ssm.{i}"])
        if last_only:
            x = x[:, -1:]  # (B, 1, C)
        return self.lm_head(self.backbone.norm_f(x)), new  # (B, T or 1, V)

    def prefill_padded(self, tokens: Tensor, length: Tensor, state: State) -> tuple[Tensor, State]:
        if self.mixer is not MambaMixer:
            raise NotImplementedError
        x = self.backbone.embeddings(tokens)  # (B, T, C)
        new: State = {}
        for i, layer in enumerate(self.backbone.layers):
            x, new[f"conv.{i}"], new[f"ssm.{i}"] = layer(x, state[f"conv.{i}"], state[f"ssm.{i}"], length)
        x = x.index_select(1, length - 1)  # (B, 1, C)
        return self.lm_head(self.backbone.norm_f(x)), new  # (B, 1, V)
