"""`seqedge package`: one folder an app developer drops into their project, per target.

    out = package(PackagePlan(artifact=Path("art"), target="android", out=Path("pkg")))

Targets register by name in APP_TARGETS (android.py, ios.py, linux_arm64.py); each writes into a temporary
folder from the artifact's facts (facts.py) and the shared native sources (runtimes/native: the engine, the
kernels, the bridges), and the folder is renamed into place only when complete. Every package holds the
artifact (manifest.json and the files it lists, hash-checked first) under model/ and a README.md with the
exact steps, saying what was built and checked here and what is source only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from seqedge.apps.base import APP_TARGETS, PackagePlan, copy_artifact
from seqedge.apps.facts import AppFacts
from seqedge.schema import INT4_KERNEL

__all__ = ["APP_TARGETS", "PackagePlan", "package"]


def package(plan: PackagePlan, say: Callable[[str], None] = print) -> Path:
    from seqedge.fsutil import atomic_dir, check_output_folder

    target = APP_TARGETS[plan.target]
    check_output_folder(plan.out, plan.force, inputs=(plan.artifact,))
    facts = AppFacts.of(plan.artifact)
    if INT4_KERNEL in facts.native_kernels:
        say(f"note: {plan.artifact} was exported for an x86-64 CPU: its int4 layers run on seqedge's int4 kernel "
            "(a portable loop on arm64); export it with --device PROFILE of the phone or board for XNNPACK's NEON "
            "kernels")
    with atomic_dir(plan.out, plan.force) as tmp:
        copy_artifact(facts, tmp / "model")
        target.write(facts, plan, tmp, say)
    return plan.out


def _register() -> None:
    from seqedge.apps import android, ios, linux_arm64

    for mod in (android, ios, linux_arm64):
        APP_TARGETS.add(mod.TARGET.name, mod.TARGET)


_register()
