"""The stateful interface every exporter emits: `(tokens, *state) -> (logits, *new_state)`.

`StatefulGraph` wraps any model that implements the protocol into a module whose inputs and outputs
are flat, named tensors — `tokens` (B, T) int64 and each state tensor by name; `logits` (B, 1, V) for
the last position and `new.{name}` for each state tensor — in `model.state_spec()` order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seqedge.models import TensorSpec


class StatefulGraph(nn.Module):
    def __init__(self, model: nn.Module, state_names: list[str]):
        super().__init__()
        self.model = model
        self.state_names = state_names

    def forward(self, tokens: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        logits, new = self.model.prefill(tokens, dict(zip(self.state_names, state)), last_only=True)
        return (logits, *(new[n] for n in self.state_names))


@dataclass(frozen=True)
class Interface:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    state: list[TensorSpec]

    @classmethod
    def of(cls, model) -> Interface:
        state = state_spec(model)
        with torch.no_grad():  # vocabulary from one probe call: works for user models without a config
            vocab = model.prefill(torch.zeros(1, 1, dtype=torch.long), model.init_state(1))[0].shape[-1]
        inputs = [TensorSpec("tokens", "int64", ("batch", "seq")), *state]
        outputs = [TensorSpec("logits", "float32", ("batch", 1, vocab)),
                   *(TensorSpec(f"new.{s.name}", s.dtype, s.shape) for s in state)]
        return cls(inputs, outputs, state)

    def without_state(self, names: set[str]) -> Interface:
        """The interface with some state tensors no longer passed in and out (held by the program)."""
        keep = lambda s: s.name not in names and s.name.removeprefix("new.") not in names  # noqa: E731
        return Interface([s for s in self.inputs if keep(s)], [s for s in self.outputs if keep(s)],
                         [s for s in self.state if keep(s)])

    def to_json(self) -> dict:
        return {"inputs": [s.to_json() for s in self.inputs], "outputs": [s.to_json() for s in self.outputs],
                "state": [s.to_json() for s in self.state]}


def state_spec(model) -> list[TensorSpec]:
    """The model's own `state_spec`, or one derived from `init_state` (dims that follow the batch are "batch")."""
    if hasattr(model, "state_spec"):
        return model.state_spec("batch")
    one, two = model.init_state(1), model.init_state(2)
    return [TensorSpec(n, str(t.dtype).removeprefix("torch."),
                       tuple("batch" if a != b else a for a, b in zip(t.shape, two[n].shape))) for n, t in one.items()]


def example_inputs(model, T: int = 5, batch: int = 1) -> tuple[Tensor, ...]:
    tokens = torch.arange(T).repeat(batch, 1) % 256  # (B, T)
    return (tokens, *model.init_state(batch).values())
