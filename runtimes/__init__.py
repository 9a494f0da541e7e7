"""Runtime adapters (installed as `seqedge.runtimes`), registered by name and imported lazily.

Every adapter follows one protocol (see base.py): `available() -> (bool, reason)`, `load(artifact,
threads)`, `init_state`, `prefill`, `step`, `close`. `open_artifact(folder)` picks the adapter for
the artifact's format from its manifest.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from seqedge.exporters.artifact import read_manifest
from seqedge.registry import Registry

RUNTIMES: Registry[str] = Registry("runtime")
RUNTIMES.add("onnxruntime", "seqedge.runtimes.onnxruntime:OnnxRuntimeAdapter")
RUNTIMES.add("torch", "seqedge.runtimes.torch_eager:TorchEagerAdapter")
RUNTIMES.add("executorch", "seqedge.runtimes.executorch:ExecuTorchAdapter")
RUNTIMES.add("onnxruntime-optimum", "seqedge.runtimes.optimum:OptimumOnnxAdapter")
RUNTIMES.add("onnxruntime-static", "seqedge.runtimes.onnxruntime_static:StaticOnnxAdapter")

FORMAT_RUNTIME = {"onnx": "onnxruntime", "executorch": "executorch"}
VIA_RUNTIME = {"optimum": "onnxruntime-optimum"}  # artifacts whose graph another exporter made
STATIC_RUNTIME = {"onnx": "onnxruntime-static"}  # static-shape artifacts (a chunk graph and a step graph)


def adapter_class(name: str):
    module, _, cls = RUNTIMES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def open_artifact(folder: Path | str, threads: int = 2, runtime: str | None = None, check_files: bool = True,
                  backend: str | None = None, manifest: dict | None = None):
    """The adapter for the artifact's format, loaded. `backend` (a device profile's choice: an onnxruntime
    execution provider such as cuda, or an ExecuTorch delegate) defaults to the artifact's own
    (`target.backend` in the manifest), else the CPU. `manifest`: an exporter's own, before it writes it
    (any other artifact's manifest is read from its folder and checked)."""
    manifest = manifest if manifest is not None else read_manifest(folder, check_files=check_files)
    name = (runtime or VIA_RUNTIME.get(manifest.get("via"))
            or (STATIC_RUNTIME.get(manifest["format"]) if manifest.get("static") else None)
            or FORMAT_RUNTIME.get(manifest["format"]))
    adapter = adapter_class(name)()
    backend = backend or (manifest.get("target") or {}).get("backend")
    adapter.load(Path(folder), threads=threads, manifest=manifest, **({"backend": backend} if backend else {}))
    return adapter
