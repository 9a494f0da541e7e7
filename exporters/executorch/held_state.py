"""KV caches held by the ExecuTorch program itself, shared by its `prefill` and `decode` methods.

Carrying a KV cache explicitly costs a copy of the whole cache in and out of every call (llama-135m:
94 MB per token at a 2048-slot cache, more than the weights' share of the step at short contexts). So
the caches become the program's mutable buffers, exported with `share_mutable_buffers=True`: both
methods read and write the same memory, `llama::update_cache` writes the new keys/values in place and
`seqedge::cached_sdpa` reads the valid prefix. Only `pos` (and any recurrent state) stays explicit.

The contract this gives: one sequence per loaded program (a runner that loads the program twice gets
two sequences). Starting over is `pos = 0`, with no need to clear the caches: attention reads slots
[0, pos + T) only, and those are always written first. Held caches use ExecuTorch's (Bt, S, Hkv, hd)
layout; the model hands them to `seqedge::attention` untouched, and the ExecuTorch lowering of that op
(decompositions.attention_cached_sdpa) expects that layout.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from seqedge.models import TensorSpec

ATTENTION = torch.ops.seqedge.attention.default


class _CacheArgs(TorchFunctionMode):
    """Records which tensors are passed to `seqedge::attention` as its k_cache / v_cache."""

    def __init__(self):
        super().__init__()
        self.ids: set[int] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (ATTENTION, torch.ops.seqedge.attention):
            self.ids.update({id(args[3]), id(args[4])})
        return func(*args, **(kwargs or {}))


def held_caches(model, state: list[TensorSpec], dtype: str | None = None) -> list[TensorSpec]:
    """The state tensors the model uses as attention caches (found by one probe call), batch fixed at 1, of
    `dtype` (the plan's kv_cache: float16 halves the bytes a decode step streams; seqedge::cached_sdpa attends in
    float32) or the model's own."""
    init = model.init_state(1)
    probe = _CacheArgs()
    with torch.no_grad(), probe:
        model.prefill(torch.zeros(1, 1, dtype=torch.long), init)
    held = {name for name, t in init.items() if id(t) in probe.ids}
    return [TensorSpec(s.name, dtype or s.dtype, tuple(init[s.name].shape)) for s in state if s.name in held]


class HeldCacheGraph(nn.Module):
    """`(tokens, *explicit_state) -> (logits, *new_explicit_state)`, with the caches as program buffers."""

    def __init__(self, model: nn.Module, explicit: list[str], held: list[TensorSpec]):
        super().__init__()
        self.model = model
        self.explicit = explicit
        self.held = [s.name for s in held]
        for i, s in enumerate(held):
            Bt, Hkv, S, hd = s.shape
            self.register_buffer(f"cache_{i}", torch.zeros(Bt, S, Hkv, hd, dtype=getattr(torch, s.dtype)),
                                 persistent=False)  # (Bt, S, Hkv, hd): ExecuTorch's LLM kernel layout

    def forward(self, tokens: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        caches = {n: getattr(self, f"cache_{i}") for i, n in enumerate(self.held)}  # each (Bt, S, Hkv, hd)
        logits, new = self.model.prefill(tokens, {**dict(zip(self.explicit, state)), **caches}, last_only=True)
        return (logits, *(new[n] for n in self.explicit))
