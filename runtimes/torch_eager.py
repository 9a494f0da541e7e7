"""PyTorch eager adapter: the reference runtime, running a checkpoint folder's model directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor


class TorchEagerAdapter:
    name = "torch"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return True, f"torch {torch.__version__}"

    def load(self, artifact: Path, threads: int = 2, manifest: dict[str, Any] | None = None,
             backend: str = "cpu") -> None:
        from seqedge.checkpoint import load_checkpoint

        torch.set_num_threads(threads)
        self.model = load_checkpoint(artifact)
        self.manifest = manifest

    def init_state(self, batch: int = 1) -> dict[str, Tensor]:
        return self.model.init_state(batch)

    @property
    def max_seq_len(self) -> int | None:
        return self.model.max_seq_len

    def prefill(self, tokens: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.no_grad():
            return self.model.prefill(tokens, state, last_only=True)

    def step(self, token: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.no_grad():
            return self.model.step(token, state)

    def close(self) -> None:
        self.model = None
