"""The pieces every app target shares: the plan, the target record, the registry, the artifact copy."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from seqedge.apps.facts import AppFacts
from seqedge.registry import Registry


@dataclass
class PackagePlan:
    artifact: Path
    target: str  # a name in APP_TARGETS
    out: Path
    force: bool = False
    executorch_wheel: Path | None = None  # linux-arm64: the target's ExecuTorch wheel (else downloaded, cached)
    tokenizers: bool | None = None  # linux-arm64: link the C++ tokenizer (None: when the artifact needs it)


@dataclass(frozen=True)
class AppTarget:
    name: str
    summary: str
    write: Callable[[AppFacts, PackagePlan, Path, Callable[[str], None]], None]  # (facts, plan, folder, say)


APP_TARGETS: Registry[AppTarget] = Registry("app target")


def native_sources() -> Path:
    """runtimes/native as installed (seqedge.runtimes package data)."""
    from seqedge.native import _source_dir

    return _source_dir()


# seqedge's own kernels: the packages' ExecuTorch (Android AAR, Swift PM kernels_llm) registers the llama:: ops
# itself, and a kernel registered twice aborts at load, so kernels/llm_attention.cpp stays out. Every header of
# kernels/ goes with them (what they include).
KERNELS = ("selective_scan.cpp", "causal_conv1d.cpp", "cached_sdpa.cpp", "rope.cpp", "rnn_scan.cpp", "moe_ffn.cpp",
           "int4_matmul.cpp", "int4_mamba_scan.cpp", "rms_norm.cpp", "to_half.cpp")


def copy_engine_sources(dest: Path) -> None:
    """engine/ and kernels/ from runtimes/native, and ExecuTorch's headers (executorch/include) of this version."""
    from seqedge.native import executorch_root

    src = native_sources()
    headers = tuple(sorted(p.name for p in (src / "kernels").glob("*.h")))
    for sub, names in (("engine", ("seqedge_engine.h", "seqedge_engine.cpp")), ("kernels", KERNELS + headers)):
        (dest / sub).mkdir(parents=True)
        for name in names:
            shutil.copy2(src / sub / name, dest / sub / name)
    shutil.copytree(executorch_root() / "include", dest / "executorch" / "include")


def copy_artifact(facts: AppFacts, dest: Path) -> None:
    """The artifact's manifest and listed files (already hash-checked by AppFacts.of), nothing else."""
    dest.mkdir(parents=True)
    for name in facts.files:
        shutil.copy2(facts.folder / name, dest / name)
