"""Resolve what the user pointed at into something that runs the prefill/step protocol.

A checkpoint folder (config.json) or a user factory gives the PyTorch model; an artifact folder
(manifest.json) gives its runtime adapter, chosen by the manifest's format.
"""

from __future__ import annotations

from pathlib import Path

from seqedge.checkpoint import load_model
from seqedge.errors import BadPathError

MANIFEST = "manifest.json"


def load_runnable(target: Path | str | None, user_model: str | None = None, checkpoint: Path | str | None = None,
                  threads: int = 2):
    if user_model:
        return load_model(user_model=user_model, checkpoint=checkpoint)
    if target is None:
        raise BadPathError("no model given", "pass a checkpoint or artifact folder, or --model package.module:factory")
    target = Path(target)
    if (target / MANIFEST).is_file():
        from seqedge.runtimes import open_artifact

        return open_artifact(target, threads=threads)
    return load_model(target)
