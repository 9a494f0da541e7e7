"""Checkpoint folders: `config.json` + `model.safetensors` (+ `train_report.json`), and user models.

    save_checkpoint(model, "runs/small", report={...})     # atomic: the folder appears whole
    model = load_checkpoint("runs/small")                   # built-in families
    model = load_user_model("pkg.mod:factory", "weights.safetensors")   # any nn.Module with the protocol

Untrusted weights are read only through safetensors or `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_model

from seqedge.errors import BadInputError, BadPathError, CorruptFileError, SeqedgeError, UnsupportedError
from seqedge.fsutil import atomic_dir
from seqedge.models import SequenceModel, config_from_dict, model_from_config
from seqedge.untrusted import MAX_JSON_BYTES, read_capped

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
REPORT = "train_report.json"
PROTOCOL = ("init_state", "prefill", "step")


def save_checkpoint(model: SequenceModel, out: Path | str, report: dict[str, Any] | None = None,
                    force: bool = False) -> Path:
    with atomic_dir(out, force=force) as tmp:
        (tmp / CONFIG).write_text(model.config.to_json())
        save_model(model, str(tmp / WEIGHTS))  # handles tied embedding/output weights
        if report is not None:
            (tmp / REPORT).write_text(json.dumps(report, indent=2))
    return Path(out)


def read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.exists() and not path.is_symlink():
        raise BadPathError(f"{what} {path} is missing", "point at a folder written by seqedge")
    try:
        data = json.loads(read_capped(path, what, MAX_JSON_BYTES).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise CorruptFileError(f"{what} {path} is not valid JSON ({e})", "re-create it") from None
    if not isinstance(data, dict):
        raise CorruptFileError(f"{what} {path} is not a JSON object", "re-create it")
    return data


def load_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """Weights from `.safetensors` or a `.pt`/`.pth`/`.bin` state dict (loaded with weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise BadPathError(f"checkpoint file {path} does not exist", "pass a .safetensors or .pt file")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, OSError, RuntimeError, EOFError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CorruptFileError(f"checkpoint {path} is corrupt or truncated ({first})",
                               "re-save it, or re-run seqedge train") from None
    except Exception as e:  # pickle refused by weights_only, etc.
        raise CorruptFileError(f"checkpoint {path} cannot be loaded safely ({type(e).__name__})",
                               "save a plain state dict (model.state_dict()) or use .safetensors") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CorruptFileError(f"checkpoint {path} is not a state dict of tensors", "save model.state_dict()")
    return sd


def load_weights(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: Path) -> None:
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # shape mismatch
        raise CorruptFileError(f"weights in {source} do not fit the model ({str(e).splitlines()[-1].strip()})",
                               "check that config and weights belong together") from None
    # tied weights are stored once; the alias counts as present
    tied = {n for n, p in model.named_parameters(remove_duplicate=False)} - set(dict(model.named_parameters()))
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CorruptFileError(f"weights in {source} do not match the model: {detail}",
                               "check that config and weights belong together")


def load_checkpoint(folder: Path | str, max_seq_len: int | None = None) -> SequenceModel:
    """A seqedge checkpoint folder, a local Hugging Face folder (config.json with a `model_type`) or a llama.cpp
    `.gguf` file; an HF/GGUF model's KV cache holds `max_seq_len` positions (default min(max_position_embeddings,
    2048))."""
    folder = Path(folder)
    if folder.suffix == ".gguf" and folder.is_file():
        from seqedge.ingest.gguf import load_gguf

        return load_gguf(folder, max_seq_len)
    if not folder.is_dir():
        raise BadPathError(f"checkpoint folder {folder} does not exist", "train one with `seqedge train --out DIR`")
    cfg_dict = read_json(folder / CONFIG, "model config")
    if "family" not in cfg_dict and "model_type" in cfg_dict:
        from seqedge.ingest.hf import load_hf

        return load_hf(folder, cfg_dict, max_seq_len)
    if max_seq_len is not None:
        raise BadInputError("--max-seq-len applies to Hugging Face folders", "a seqedge checkpoint keeps its own")
    try:
        cfg = config_from_dict(cfg_dict)
    except SeqedgeError:
        raise
    except (TypeError, ValueError) as e:
        raise CorruptFileError(f"model config {folder / CONFIG} is invalid ({e})", "re-create it") from None
    model = model_from_config(cfg)
    load_weights(model, load_state_dict(folder / WEIGHTS), folder / WEIGHTS)
    return model.eval()


def load_user_model(spec: str, checkpoint: Path | str | None = None) -> torch.nn.Module:
    """`package.module:factory` -> factory() -> nn.Module implementing init_state/prefill/step."""
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise BadInputError(f"--model {spec!r} is not of the form package.module:factory",
                            "e.g. --model mypkg.models:build")
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise BadInputError(f"cannot import {spec!r} ({e})", "check that the module is on PYTHONPATH") from None
    model = factory()
    missing = [m for m in PROTOCOL if not callable(getattr(model, m, None))]
    if not isinstance(model, torch.nn.Module) or missing:
        raise UnsupportedError(f"{spec} did not return an nn.Module with {', '.join(PROTOCOL)} (missing: "
                               f"{', '.join(missing) or 'nn.Module'})", "see README: 'Bring your own model'")
    if checkpoint is not None:
        load_weights(model, load_state_dict(checkpoint), Path(checkpoint))
    return model.eval()


def load_model(target: Path | str | None = None, user_model: str | None = None,
               checkpoint: Path | str | None = None, max_seq_len: int | None = None) -> torch.nn.Module:
    """One entry for the CLI: a checkpoint folder (seqedge's or Hugging Face's), or a user factory plus weights."""
    if user_model:
        return load_user_model(user_model, checkpoint)
    if target is None:
        raise BadInputError("no model given", "pass a checkpoint folder or --model package.module:factory")
    return load_checkpoint(target, max_seq_len)
