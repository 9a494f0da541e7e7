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
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names - {"family"})
        if unknown:
            raise ValueError(f"unknown {cls.family} config keys: {', '.join(unknown)}")
        return cls(**{k: v for k, v in d.items() if k in names})


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

    def forward(self, tokens: Tensor) -> Tensor:
        logits, _ = self.prefill(tokens, self.init_state(tokens.shape[0]))
        return logits

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


class RMSNorm(nn.Module):
    """RMSNorm with HF's parameter name (`weight`), computed in float32 like HF Llama/Mamba."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        xf = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)  # one torch function: exporters can rewrite it
        return self.weight * xf.to(x.dtype)
