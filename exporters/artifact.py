"""Artifact folders, shared by every format: the graph file(s) + `manifest.json`, nothing else.

    with artifact_writer(out, force) as tmp:      # temporary folder, renamed into place on success
        ... write graph files into tmp, verify them ...
        write_manifest(tmp, manifest)             # last: adds `files` (name -> sha256)
    manifest = read_manifest(folder)              # checks every file's sha256
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from seqedge import __version__
from seqedge.checkpoint import read_json
from seqedge.diagnostics import stage
from seqedge.errors import BadPathError, CorruptFileError
from seqedge.fsutil import atomic_dir, sha256_file
from seqedge.schema import check_manifest, state_bytes
from seqedge.untrusted import check_memory, member, regular_file

MANIFEST = "manifest.json"

artifact_writer = atomic_dir


def write_manifest(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)
    manifest = {**manifest, "seqedge_version": __version__, "files": {p.name: sha256_file(p) for p in files}}
    # allow_nan=False: a manifest is standard JSON for every runner (no NaN/Infinity literals)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, allow_nan=False))
    return manifest


def read_manifest(folder: Path | str, check_files: bool = True) -> dict[str, Any]:
    """The manifest of an artifact folder, which is untrusted input: its schema is checked before any of it
    is used; every entry of the folder must be a listed regular file inside it (symlinks leading out, FIFOs,
    devices and unlisted files are refused); with `check_files`, every file's sha256 is checked too."""
    folder = Path(folder)
    if not folder.exists():
        raise BadPathError(f"artifact folder {folder} does not exist", "export one with `seqedge export`")
    if not folder.is_dir():
        raise BadPathError(f"artifact {folder} is not a folder", "pass the folder `seqedge export --out` wrote")
    where = folder / MANIFEST
    manifest = check_manifest(read_json(where, "manifest"), str(where))
    listed = manifest["files"]
    try:
        present = {p.name for p in folder.iterdir()} - {MANIFEST}
    except OSError as e:
        raise BadPathError(f"artifact folder {folder} cannot be listed ({e.strerror})", "check its permissions") from None
    unlisted = sorted(present - set(listed))
    if unlisted:
        raise CorruptFileError(f"artifact folder {folder} holds {unlisted[0]!r}, which its manifest does not list",
                               "only files the manifest lists (and hashes) may be in an artifact; re-export it")
    total = 0
    for name, digest in listed.items():
        path = member(folder, name, "artifact file")
        if name not in present:
            raise CorruptFileError(f"artifact file {path} listed in the manifest is missing", "re-export the artifact")
        total += regular_file(path, "artifact file").st_size
        if check_files and sha256_file(path) != digest:
            raise CorruptFileError(f"artifact file {path} does not match its sha256 in the manifest",
                                   "the file was changed or truncated; re-export the artifact")
    check_memory(total + state_bytes(manifest), f"the artifact {folder} (its files and its state at batch 1)")
    return manifest


def base_manifest(model, plan, interface) -> dict[str, Any]:
    """The manifest keys every format shares; each exporter adds its own."""
    return {
        "family": getattr(getattr(model, "config", None), "family", "custom"),
        "config": model.config.to_dict() if hasattr(model, "config") else {},
        "quant": {"recipe": plan.quant},
        **interface.to_json(),
        "max_seq_len": getattr(model, "max_seq_len", None),
        "parameters": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),
        "source": plan.source,
        "target": plan.target,
        "parity": None,
    }


def copy_tokenizer(source: Path | None, folder: Path, manifest: dict[str, Any]):
    """The model's tokenizer files travel into the artifact (listed and hashed with the rest); returns the
    artifact's tokenizer (its `to_json()` is the manifest's `tokenizer` entry; bytes for byte-level models)."""
    import shutil

    from seqedge.tokenizer import check_fits, load_tokenizer, tokenizer_files

    files = tokenizer_files(source) if source is not None else {}
    for name, path in files.items():
        shutil.copyfile(path, folder / name)
    tok = load_tokenizer(folder if files else None)
    vocab = manifest["outputs"][0]["shape"][-1]
    check_fits(tok, vocab, str(source))
    return tok


def finish(folder: Path, model, manifest: dict[str, Any], plan, quant, weight_bytes: int,
           float_matrices: list, backend: str | None = None, ahead=None) -> dict[str, Any]:
    """Write the manifest with the quantization report; when the plan says to verify, check the artifact
    against the fp32 `model` (the recipe's tolerance) and measure what quantization cost, gating both.
    manifest.json is written last, after the gates: a folder without it is never taken for an artifact.
    `ahead`: the accuracy references computed while the export ran (ahead_references.py)."""
    from seqedge.exporters.verify import verify_artifact
    from seqedge.quant.reference import baseline_model
    from seqedge.quant.report import accuracy_report, gate, size_report
    from seqedge.runtimes import open_artifact

    manifest["quant"] = size_report(model, quant, weight_bytes, float_matrices)
    tokenizer = copy_tokenizer(plan.tokenizer_dir, folder, manifest)
    manifest["tokenizer"] = tokenizer.to_json()
    if plan.verify:
        with stage(f"verification in {manifest['format']}'s runtime", plan.subject):
            runner = open_artifact(folder, threads=plan.threads, manifest=manifest, backend=backend)

            @functools.cache
            def grid():  # built once, for parity and bits/byte, where `ahead` did not compute what they need
                with stage("reference grid for the gates", plan.subject):
                    return baseline_model(model, quant.recipe.parity.baseline)

            try:
                manifest["parity"] = verify_artifact(folder, model, plan.verify_steps, plan.prompt_bytes, runner=runner,
                                                     shown_as=plan.out, grid=grid, ahead=ahead)
                with stage("accuracy on held-out text", plan.subject):
                    manifest["quant"].update(accuracy_report(model, quant, runner, tokenizer, grid, ahead))
            finally:
                runner.close()
    gate(manifest["quant"], quant)  # may settle the bits/byte limit from the reference grid
    return write_manifest(folder, manifest)
