"""What one sweep task does, on whichever Ray node runs it: export, measure, project, measure on a device.

    outcome = run_task(task)     # {"status": "done", ...} or {"status": "failed", "error": "one line"}

A task is a plain dataclass (pickled to the node); its `key` is a digest of everything its result depends on
(the target's bytes, the recipe, the format, the lengths, the device profile, seqedge's own source), so the
driver skips a task whose key already has a result. Tasks never raise: a user error (a bad recipe, a gate that
fails) or a crash becomes a failed outcome with one line, and the other tasks go on. Artifacts travel as
`{relative name: bytes}` (an export returns them; measuring and projecting tasks unpack them into a private
temporary folder), so a node needs nothing of the driver's filesystem.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from seqedge.errors import SeqedgeError
from seqedge.registry import Registry
from seqedge.sweep.spec import Recipe, Sweep, SweepTarget

TASK_KINDS: Registry = Registry("sweep task kind")
RUNTIME_OF_FORMAT = {"onnx": "onnxruntime", "executorch": "executorch"}


@dataclass(frozen=True)
class Task:
    kind: str  # export | measure | project | device
    key: str
    target: SweepTarget
    recipe: Recipe
    format: str
    device: str | None = None  # project / device tasks
    parent: str | None = None  # the export task whose artifact this task uses
    options: dict[str, Any] = field(default_factory=dict, hash=False)  # lengths, threads, adb serial/runner, ...

    @property
    def label(self) -> str:
        return " · ".join(x for x in (self.kind, self.target.name, self.recipe.label, self.format, self.device) if x)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "target": self.target.name, "recipe": self.recipe.label,
                "format": self.format, "device": self.device, "parent": self.parent}


def digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def target_digest(t: SweepTarget, seed: int) -> str:
    """The target's content: every file of a folder (names and bytes), a config's bytes, or preset + seed."""
    if t.kind == "preset":
        return digest("preset", t.family, t.preset, seed)
    from seqedge.fsutil import sha256_file

    path = Path(t.path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return digest("files", [(str(f.relative_to(path)) if path.is_dir() else f.name, sha256_file(f)) for f in files])


def profile_digest(device: str) -> str:
    from seqedge.profiles import load_profile

    return digest(asdict(load_profile(device)))


def plan_tasks(sweep: Sweep) -> list[Task]:
    """The matrix as tasks, parents before children: per (target, recipe, format) an export, a host
    measurement (when `measure`), a projection per device and a device measurement per attached phone;
    config-only targets get the projections alone."""
    from seqedge.fsutil import source_digest

    code = source_digest()
    lengths = {"prompt_lengths": sweep.prompt_lengths, "decode_tokens": sweep.decode_tokens, "threads": sweep.threads}
    profiles = {d: profile_digest(d) for d in sweep.devices}
    tasks = []
    for t in sweep.targets:
        tdig = target_digest(t, sweep.seed)
        for r in sweep.recipes:
            for f in sweep.formats:
                base = dict(target=t, recipe=r, format=f)
                if not t.has_weights:
                    for d in sweep.devices:
                        tasks.append(Task("project", digest("project", tdig, asdict(r), f, d, profiles[d], lengths, code),
                                          **base, device=d, options=lengths))
                    continue
                ek = digest("export", tdig, asdict(r), f, sweep.seed, code)
                tasks.append(Task("export", ek, **base, options={"seed": sweep.seed, "threads": sweep.threads}))
                if sweep.measure:
                    tasks.append(Task("measure", digest("measure", ek, lengths), **base, parent=ek, options=lengths))
                for d in sweep.devices:
                    tasks.append(Task("project", digest("project", ek, d, profiles[d], lengths), **base, device=d,
                                      parent=ek, options=lengths))
                for d, adb in sweep.adb.items():
                    tasks.append(Task("device", digest("device", ek, d, profiles[d], asdict(adb), lengths), **base,
                                      device=d, parent=ek, options={**lengths, **asdict(adb)}))
    return tasks


def _node() -> dict[str, Any]:
    """Where a task ran, and how loaded that machine was when it finished (measurements carry their own)."""
    return {"node": socket.gethostname(), "cpu": platform.processor() or platform.machine(),
            "loadavg": [round(x, 2) for x in os.getloadavg()]}


def run_task(task: Task, files: dict[str, bytes] | None = None, config: bytes | None = None) -> dict[str, Any]:
    """Run one task here; never raises (the outcome says what failed, in one line)."""
    t0 = time.perf_counter()
    try:
        out = TASK_KINDS[task.kind](task, files, config)
        out["status"] = "done"
    except SeqedgeError as e:
        out = {"status": "failed", "error": " ".join(str(e).split())}
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # a crash in a library the task drives: reported, and the sweep goes on
        out = {"status": "failed", "error": f"internal error in {task.kind}: {type(e).__name__}: "
                                            + " ".join(str(e).split())[:300]}
    out.update(seconds=round(time.perf_counter() - t0, 2), **_node())
    return out


def unpack(files: dict[str, bytes], folder: Path) -> Path:
    """An artifact's files (as `pack` gives them) into `folder`, each name checked to stay inside it."""
    from seqedge.untrusted import member

    folder.mkdir(exist_ok=True)
    for name, data in files.items():
        path = member(folder, name, "artifact file")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder


def pack(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@TASK_KINDS.register("export")
def export_task(task: Task, files, config) -> dict[str, Any]:
    """Export and verify (the exporter's own parity and accuracy gates); the artifact comes back as bytes."""
    import torch

    from seqedge.exporters import ExportPlan, export
    from seqedge.loading import load_exportable, model_source, tokenizer_source

    torch.set_num_threads(task.options["threads"])
    t, r = task.target, task.recipe
    with tempfile.TemporaryDirectory(prefix="seqedge-sweep-") as tmp:
        out = Path(tmp) / "artifact"
        if t.kind == "hf":
            from seqedge.ingest.hf import has_family

            if has_family(Path(t.path)) is False:  # no seqedge family for it: optimum-onnx's graph
                from seqedge.exporters.optimum import export_via_optimum

                manifest = export_via_optimum(Path(t.path), ExportPlan(
                    out=out, format=task.format, quant=r.name, group_size=r.group_size,
                    max_bpb_increase=r.max_bpb_increase, threads=task.options["threads"],
                    source={"kind": "transformers", "path": t.path}, tokenizer_dir=tokenizer_source(t.path)))
                return {"manifest": _summary(manifest), "files": pack(out)}
        path = t.path if t.kind != "preset" else None
        model = load_exportable(path, None, None, t.family, t.preset, task.options["seed"])
        plan = ExportPlan(out=out, format=task.format, quant=r.name, group_size=r.group_size,
                          max_bpb_increase=r.max_bpb_increase, threads=task.options["threads"],
                          source=model_source(path, None, None, t.family, t.preset, task.options["seed"]),
                          tokenizer_dir=tokenizer_source(path))
        manifest = export(model, plan)
        return {"manifest": _summary(manifest), "files": pack(out)}


def _summary(manifest: dict) -> dict[str, Any]:
    """What the results table and plots need from a manifest."""
    q, parity = manifest.get("quant") or {}, manifest.get("parity") or {}
    keep = ("recipe", "weight_bytes", "size_ratio", "bits_per_weight", "bpb", "bpb_fp32", "bpb_increase",
            "top1_agreement")
    return {"format": manifest.get("format"), "family": manifest.get("family"),
            "export_seconds": manifest.get("export_seconds"), "quant": {k: q[k] for k in keep if k in q},
            "parity": {k: parity.get(k) for k in ("max_abs_diff", "token_agreement", "mean_kl")} if parity else None}


def _bench(task: Task, files, config, **plan) -> list[dict]:
    from seqedge.bench.run import BenchPlan, bench

    o = task.options
    with tempfile.TemporaryDirectory(prefix="seqedge-sweep-") as tmp:
        if files is not None:
            target = str(unpack(files, Path(tmp) / task.parent))
            extra = {}
        else:  # a config.json alone: projected for this recipe and format's runtime
            target = str(Path(tmp) / "config.json")
            Path(target).write_bytes(config)
            extra = {"quant": task.recipe.name, "runtime": RUNTIME_OF_FORMAT[task.format]}
        result = bench(BenchPlan([target], prompt_lengths=o["prompt_lengths"], decode_tokens=o["decode_tokens"],
                                 threads=o["threads"], **extra, **plan))
    return [r.to_json() for r in result.records]


@TASK_KINDS.register("measure")
def measure_task(task: Task, files, config) -> dict[str, Any]:
    """Timed here (measured-host) through the artifact's runtime, in a child process, on an idle node."""
    records = _bench(task, files, config, device="host", host=True)
    return {"records": [r for r in records if r["kind"] == "measured-host"]}


@TASK_KINDS.register("project")
def project_task(task: Task, files, config) -> dict[str, Any]:
    """The calibrated roofline for the device (projected; nothing is timed)."""
    return {"records": _bench(task, files, config, device=task.device, host=False)}


@TASK_KINDS.register("device")
def device_task(task: Task, files, config) -> dict[str, Any]:
    """Timed on the phone over adb by the native runner, on the node the phone is attached to."""
    records = _bench(task, files, config, device=task.device, host=False, adb=task.options["serial"],
                     runner=Path(task.options["runner"]))
    return {"records": [r for r in records if r["kind"] == "measured-device"]}
