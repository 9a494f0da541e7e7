"""The runtime adapter protocol, and the shared state handling of artifact runners."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor


class RuntimeAdapter(Protocol):
    name: str

    @classmethod
    def available(cls) -> tuple[bool, str]: ...

    def load(self, artifact: Path, threads: int = 2, manifest: dict[str, Any] | None = None,
             backend: str = "cpu") -> None: ...

    def init_state(self, batch: int = 1) -> dict[str, Tensor]: ...

    def prefill(self, tokens: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]: ...

    def step(self, token: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]: ...

    def close(self) -> None: ...


class ArtifactRunner:
    """State from the manifest's `state` specs; `max_seq_len` from the manifest."""

    manifest: dict[str, Any]

    def init_state(self, batch: int = 1) -> dict[str, Tensor]:
        return {s["name"]: torch.zeros([batch if d == "batch" else d for d in s["shape"]], dtype=getattr(torch, s["dtype"]))
                for s in self.manifest["state"]}

    @property
    def state_names(self) -> list[str]:
        return [s["name"] for s in self.manifest["state"]]

    @property
    def max_seq_len(self) -> int | None:
        return self.manifest.get("max_seq_len")

    def step(self, token: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        return self.prefill(token, state)
