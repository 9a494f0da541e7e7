"""The one protocol every sequence model implements, and the config base class.

    state = model.init_state(batch)                       # flat, ordered {name: tensor}
    logits, state = model.prefill(tokens, state)          # tokens (B, T) -> logits (B, T, V)
    logits, state = model.step(token, state)              # token (B, 1)  -> logits (B, 1, V)

The state is a flat ordered dict of named tensors (KV cache `k.{i}`/`v.{i}` + `pos`; Mamba
`conv.{i}`/`ssm.{i}`; RNN `h.{i}`/`c.{i}`), so exporters can turn it into explicit graph inputs and
outputs and the manifest can describe it (`state_spec`). `forward(tokens)` is the training path:
logits for a whole sequence from the initial state.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

State = dict[str, Tensor]


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor in an exported interface: `shape` uses "batch" / "seq" for dynamic dims."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass
class ModelConfig:
    """Base for family configs. Subclasses are dataclasses with a `family` class attribute."""

    family: ClassVar[str] = ""
    vocab_size: int = 256

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """A config from untrusted JSON: every value is checked against its field's type and range first."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names - {"family"})
        if unknown:
            raise ValueError(f"unknown {cls.family} config keys: {', '.join(unknown)}"[:200])
        hints = typing.get_type_hints(cls)
        for k, v in d.items():
            if k in names:
                check_field(k, hints[k], v, zero_ok=k in cls.zero_means_auto)
        return cls(**{k: v for k, v in d.items() if k in names})

    zero_means_auto: ClassVar[tuple[str, ...]] = ()  # int fields where 0 asks for a derived value


MAX_CONFIG_INT = 1 << 24  # any one size (vocabulary, width, positions); memory is checked separately
MAX_LAYERS = 1024  # layer counts (the model is built on the meta device layer by layer before its size is known)


def check_field(key: str, tp: Any, value: Any, zero_ok: bool = False) -> None:
    """One config value against its annotated type: ints in [1, 2**24] (0 where it means "auto"), floats
    finite and positive, bools, and dict-or-None tables (their keys are the family's to check)."""
    def bad(expected: str) -> ValueError:
        return ValueError(f"{key} must be {expected}, got {value!r}"[:160])

    if tp is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
    elif tp is int:
        lo, hi = (0 if zero_ok else 1), (MAX_LAYERS if "layers" in key else MAX_CONFIG_INT)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise bad(f"an integer in [{lo}, {hi}]")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e30:
            raise bad("a positive finite number")
    elif typing.get_origin(tp) in (typing.Union, types.UnionType) and dict in typing.get_args(tp):
        if value is not None and not isinstance(value, dict):
            raise bad("a table or null")
    elif tp is str:
        if not isinstance(value, str) or len(value) > 256:
            raise bad("a string")


class SequenceModel(nn.Module):
    """Base class for the built-in families. User models need only the three protocol methods."""

    config: ModelConfig

    def state_spec(self, batch: int | str = "batch") -> list[TensorSpec]:
        raise NotImplementedError

    def init_state(self, batch: int = 1) -> State:
        state = {}
        for spec in self.state_spec(batch):
            state[spec.name] = torch.zeros(spec.shape, dtype=getattr(torch, spec.dtype))
        return state

    def prefill(self, tokens: Tensor, state: State, last_only: bool = False) -> tuple[Tensor, State]:
        raise NotImplementedError

    def step(self, token: Tensor, state: State) -> tuple[Tensor, State]:
        return self.prefill(token, state)

    def prefill_padded(self, tokens: Tensor, length: Tensor, state: State) -> tuple[Tensor, State]:
        """A fixed-length prefill chunk (what static-shape NPU graphs take): tokens (B, T) of which the first
        `length` ((1,) int64, 1 <= length <= T) are real and the rest padding. Returns the logits (B, 1, V)
        at position length - 1 and the state after the `length` real tokens, as `prefill` of them would;
        the padding changes nothing. Families that can say so implement it; None here."""
        raise NotImplementedError

    def forward(self, tokens: Tensor) -> Tensor:
        logits, _ = self.prefill(tokens, self.init_state(tokens.shape[0]))
        return logits

    def recurrence_flops(self) -> int:
        """FLOPs per token outside matmuls spent on a state-space recurrence (projections count them)."""
        return 0

    @property
    def max_seq_len(self) -> int | None:
        """Longest total sequence (prompt + generated) the state can hold; None when unbounded."""
        return None

    def num_parameters(self) -> int:
        seen: set[int] = set()
        n = 0
        for p in self.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
        return n


def fused_linear(*linears: nn.Linear) -> nn.Linear:
    """One Linear computing `linears` side by side (their rows stacked): y = cat([l(x) for l in linears], -1)."""
    out = sum(lin.out_features for lin in linears)
    has_bias = linears[0].bias is not None
    fused = nn.Linear(linears[0].in_features, out, bias=has_bias, device="meta")  # no initialisation to overwrite
    with torch.no_grad():
        fused.weight = nn.Parameter(torch.cat([lin.weight for lin in linears]))  # (out, in)
        if has_bias:
            fused.bias = nn.Parameter(torch.cat([lin.bias for lin in linears]))  # (out,)
    return fused


class RMSNorm(nn.Module):
    """RMSNorm with HF's parameter name (`weight`), computed in float32 like HF Llama/Mamba."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:  # the weight inside: one torch function
            return F.rms_norm(x, (x.shape[-1],), self.weight, eps=self.eps)  # for exporters to rewrite whole
        xf = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return self.weight * xf.to(x.dtype)
