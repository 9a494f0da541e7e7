"""Resolve what the user pointed at into something that runs the prefill/step protocol.

A checkpoint folder (config.json) or a user factory gives the PyTorch model; an artifact folder
(manifest.json) gives its runtime adapter, chosen by the manifest's format.
"""

from __future__ import annotations

import os
from pathlib import Path

from seqedge.checkpoint import load_model
from seqedge.errors import BadInputError, BadPathError

MANIFEST = "manifest.json"


def load_runnable(target: Path | str | None, user_model: str | None = None, checkpoint: Path | str | None = None,
                  threads: int = 2, max_seq_len: int | None = None):
    if user_model:
        return load_model(user_model=user_model, checkpoint=checkpoint)
    if target is None:
        raise BadPathError("no model given", "pass a checkpoint or artifact folder, or --model package.module:factory")
    target = Path(target)
    if os.path.lexists(target / MANIFEST):  # a manifest that is not a regular file is refused, not skipped
        from seqedge.runtimes import open_artifact

        return open_artifact(target, threads=threads)
    return load_model(target, max_seq_len=max_seq_len)


def model_source(target: Path | str | None, user_model: str | None, checkpoint: Path | str | None,
                 family: str | None, preset: str | None, seed: int, max_seq_len: int | None = None) -> dict:
    """How to rebuild the PyTorch reference later (recorded in the manifest as `source`)."""
    if user_model:
        return {"kind": "user", "model": user_model, "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None}
    if family:
        return {"kind": "preset", "family": family, "preset": preset or "tiny", "seed": seed}
    return {"kind": "checkpoint", "path": str(Path(target).resolve()),
            **({"max_seq_len": max_seq_len} if max_seq_len is not None else {})}


def model_from_source(source: dict):
    """The PyTorch model an artifact was exported from, rebuilt from its manifest's `source`."""
    import torch

    from seqedge.models import build_model

    kind = source.get("kind")
    if kind == "preset":
        torch.manual_seed(source["seed"])
        return build_model(source["family"], source["preset"]).eval()
    if kind == "user":  # code: an artifact names it, it never runs it (artifacts are untrusted input)
        spec = source.get("model")
        raise BadInputError(f"the artifact was exported from user code ({spec!r}), which seqedge does not import "
                            "because an artifact names it", f"pass it yourself: --model {spec} --checkpoint WEIGHTS, "
                            "or --against CHECKPOINT")
    if kind == "transformers":  # a --via optimum artifact: transformers' own model is the reference
        from seqedge.exporters.optimum import TransformersReference

        return TransformersReference(Path(source["path"]))
    if kind == "checkpoint":
        return load_model(source["path"], max_seq_len=source.get("max_seq_len"))
    raise BadPathError("the artifact does not say which model it came from", "pass --against CHECKPOINT")


def load_exportable(target, user_model, checkpoint, family, preset, seed, max_seq_len=None):
    """The model to export: a checkpoint folder, a user factory, or a fresh preset (seeded)."""
    import torch

    from seqedge.models import FAMILIES, build_model

    if family:
        FAMILIES[family].config(preset or "tiny")
        torch.manual_seed(seed)
        return build_model(family, preset or "tiny").eval()
    return load_model(target, user_model=user_model, checkpoint=checkpoint, max_seq_len=max_seq_len)


def load_shape(target, family, preset, max_seq_len=None):
    """A shape-only model (PyTorch's meta device: no weights read, nothing allocated) for selection and
    projections, from a preset or a folder's config.json; None for what only a full load can tell (GGUF)."""
    import torch

    from seqedge.checkpoint import CONFIG, read_json
    from seqedge.models import FAMILIES, config_from_dict, model_from_config

    if family:
        cfg = FAMILIES[family].config(preset or "tiny")
    elif target is not None and Path(target).is_dir():
        d = read_json(Path(target) / CONFIG, "model config")
        if "family" not in d and "model_type" in d:
            from seqedge.ingest.hf import hf_config

            cfg = hf_config(Path(target), d, max_seq_len)
        else:
            cfg = config_from_dict(d, where=str(Path(target) / CONFIG))
    else:
        return None
    with torch.device("meta"):
        return model_from_config(cfg)


def tokenizer_source(target: Path | str | None) -> Path | None:
    """The folder holding the tokenizer of what the user pointed at: the checkpoint or artifact folder itself,
    the rebuilt tokenizer of a GGUF file, or None (byte-level)."""
    if target is None:
        return None
    target = Path(target)
    if target.suffix == ".gguf" and target.is_file():
        from seqedge.ingest.gguf import tokenizer_folder

        return tokenizer_folder(target)
    return target if (target / "tokenizer.json").is_file() else None
