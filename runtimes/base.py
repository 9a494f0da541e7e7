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
    _torch_threads: int | None = None

    def torch_moves_data_only(self) -> None:
        """The artifact's runtime computes on its own threads; torch only moves tensors between its calls. Each
        torch op big enough to run in parallel (copying a 49,152-wide logits row is one) leaves torch's OpenMP
        workers spinning, and on a 2-core machine they took a core from ExecuTorch's threadpool: a mamba-130m-wide
        4-layer ExecuTorch decode ran 10.5 ms/token with torch at 2 threads and 5.7 ms at 1 (`seqedge bench`: 124
        -> 226 tok/s). So torch runs on one thread while an artifact is loaded; `close` gives back the count it had.
        (onnxruntime's adapter measured no clear difference, and does not call it.)"""
        if self._torch_threads is None:
            self._torch_threads = torch.get_num_threads()
            torch.set_num_threads(1)

    def restore_torch_threads(self) -> None:
        if self._torch_threads is not None:
            torch.set_num_threads(self._torch_threads)
            self._torch_threads = None

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

    def logits_each(self, tokens: Tensor) -> Tensor:
        """The logits after every token of `tokens` (1, T) from an empty state, (T, V): the artifact's entries
        return the last position's only, so it steps token by token with the state carried (a runtime that
        can do better says so)."""
        state, rows = self.init_state(1), []
        for t in range(tokens.shape[1]):
            logits, state = self.step(tokens[:, t : t + 1], state)
            rows.append(logits[0, -1])
        return torch.stack(rows)  # (T, V)
