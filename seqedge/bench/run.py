"""`seqedge bench`: measured on the host, projected for the device, measured on the device when attached.

    result = bench(BenchPlan(targets=["art"], device="pixel8"), on_step=print)
    result.records          # list[Record], each with its kind
    result.explain()        # the terms of every projection

A TARGET is an artifact folder (benchmarked as it is), a checkpoint folder or a family/preset (exported
on the fly as the device profile's selection says, into a temporary folder), or a `config.json` alone
(Hugging Face Llama/Mamba or seqedge: projections only, no weights needed).

A projection is a function of the model's shape, the recipe, the device profile, the runtime class's
calibration (bench/roofline.py) and the runtime's per-call cost (bench/overheads.py) — never of this run's
--threads or of a measurement of the same artifact. With `--device host` the projection for this machine
is compared with the measurement (`checks`): the one place a projection can be checked here.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from seqedge.bench.overheads import runtime_overhead
from seqedge.bench.records import Record
from seqedge.bench.roofline import Projection, calibration, hardware, project
from seqedge.bench.shape import ModelShape, kv_itemsize, weight_bits
from seqedge.errors import MAX_THREADS, BadInputError, UnsupportedError, check_range
from seqedge.profiles import Profile, load_profile

FORMS = ("an artifact folder (manifest.json)", "a checkpoint folder (config.json + weights)",
         "a family/preset such as mamba/small or llama-135m", "a config.json (Hugging Face Llama/Mamba or seqedge)")


MAX_LENGTH = 1 << 20  # prompt lengths and decode steps


@dataclass
class BenchPlan:
    targets: list[str]
    device: str
    quant: str | None = None
    runtime: str | None = None
    prompt_lengths: list[int] = field(default_factory=lambda: [64, 256, 1024])
    decode_tokens: int = 128
    threads: int = 2
    adb: str | None = None
    runner: Path | None = None
    host: bool = True  # measure on this machine when the target has weights
    peers: bool = False  # also llama.cpp on the same shape, in this run (bench/peers.py)


@dataclass
class Target:
    name: str
    kind: str  # artifact | checkpoint | preset | config
    shape: ModelShape
    facts: Any
    path: Path | None = None
    manifest: dict | None = None
    family: str | None = None
    preset: str | None = None


def resolve(target: str) -> Target:
    from seqedge.loading import MANIFEST
    from seqedge.models import FAMILIES
    from seqedge.select import FAMILY_OPS, ModelFacts

    path = Path(target)
    if path.is_dir() and (path / MANIFEST).is_file():
        from seqedge.exporters.artifact import read_manifest
        from seqedge.models import config_from_dict

        manifest = read_manifest(path)
        shape = ModelShape.of_config(config_from_dict(manifest["config"]).to_dict())
        return Target(path.name, "artifact", shape, ModelFacts.of_manifest(manifest), path, manifest)
    if path.is_dir() and (path / "config.json").is_file():
        from seqedge.checkpoint import load_model

        model = load_model(path)
        return Target(path.name, "checkpoint", ModelShape.of_model(model), ModelFacts.of_model(model), path)
    if path.is_file() and path.suffix == ".json":
        try:
            config = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadInputError(f"TARGET {path} is not valid JSON", f"TARGET is one of: {'; '.join(FORMS)}") from None
        if not isinstance(config, dict) or not ({"family", "model_type"} & set(config)):
            raise BadInputError(f"TARGET {path} is a JSON file but not a model config (no model_type or family)",
                                f"TARGET is one of: {'; '.join(FORMS)}")
        shape = ModelShape.of_config(config)
        facts = ModelFacts(shape.family, FAMILY_OPS.get(shape.family, ()), shape.parameters)
        return Target(path.stem, "config", shape, facts, path)
    if not path.exists():
        family, _, preset = target.replace(":", "/").partition("/")
        if not preset:  # a preset name alone, if one family has it (llama-135m, mamba-130m)
            owners = [f for f in FAMILIES.names() if target in FAMILIES[f].presets]
            family, preset = (owners[0], target) if len(owners) == 1 else (family, "")
        if family in FAMILIES and preset in FAMILIES[family].presets:
            from seqedge.models import build_model

            with torch.device("meta"):
                model = build_model(family, preset)
            return Target(f"{family}/{preset}", "preset", ModelShape.of_model(model), ModelFacts.of_model(model),
                          family=family, preset=preset)
    raise BadInputError(f"TARGET {target!r} is not a benchmark target", f"TARGET is one of: {'; '.join(FORMS)}")


@dataclass
class Check:
    """A projection for this machine next to the measurement of the same figure."""

    metric: str
    at: int
    projected: float
    measured: float
    busy: str | None

    @property
    def error(self) -> float:
        return self.projected / self.measured - 1


@dataclass(frozen=True)
class RunnerCheck:
    """--runner on this host: the native runner (what an app embeds) next to the Python runtime, same figure."""

    metric: str
    at: int
    python: float
    runner: float
    busy: str | None

    @property
    def difference(self) -> float:
        return self.runner / self.python - 1


@dataclass
class TargetResult:
    target: Target
    candidate: Any
    recipe: str
    group: int | None
    projections: list[Projection] = field(default_factory=list)
    overhead: Any = None  # bench.overheads.Overhead: the runtime's per-call cost on the device
    checks: list[Check] = field(default_factory=list)  # --device host: projected vs measured
    runner_checks: list[RunnerCheck] = field(default_factory=list)  # --runner here: native runner vs Python


@dataclass
class BenchResult:
    profile: Profile
    plan: BenchPlan
    records: list[Record] = field(default_factory=list)
    targets: list[TargetResult] = field(default_factory=list)

    def explain(self) -> list[str]:
        lines = []
        for t in self.targets:
            c = t.candidate
            lines.append(f"{t.target.name} on {self.profile.display_name}: {c.runtime}/{c.backend} on {c.unit}, "
                         f"{t.recipe} ({weight_bits(t.recipe, t.group):g} bits/weight)")
            lines.append(f"  per-call cost {t.overhead.ms:.3f} ms: {t.overhead.provenance}")
            lines += [f"  {p.explain()}" for p in t.projections]
            lines += [f"  host check: {c.metric} at {c.at}: projected {c.projected:,.1f}, measured {c.measured:,.1f}, "
                      f"error {c.error:+.1%}" + (f" (busy: {c.busy})" if c.busy else "") for c in t.checks]
        return lines

    def to_json(self) -> dict[str, Any]:
        return {"device": self.profile.name, "device_name": self.profile.display_name,
                "calibration": {k: v.__dict__ for k, v in calibration().items()},
                "targets": [{"target": t.target.name, "kind": t.target.kind, "runtime": t.candidate.runtime,
                             "backend": t.candidate.backend, "unit": t.candidate.unit, "quant": t.recipe,
                             "group_size": t.group, "overhead_ms": t.overhead.ms,
                             "overhead_provenance": t.overhead.provenance,
                             "checks": [{**c.__dict__, "error": round(c.error, 4)} for c in t.checks],
                             "shape": t.target.shape.to_json()} for t in self.targets],
                "records": [r.to_json() for r in self.records]}


def _choose(profile: Profile, target: Target, plan: BenchPlan):
    from seqedge.select import select

    selection = select(profile, target.facts)
    cands = [c for c in selection.candidates if not plan.runtime or c.runtime == plan.runtime]
    if not cands:
        why = "; ".join(f"{r.runtime}/{r.backend} on {r.unit}: {r.reason}" for r in selection.rejected
                        if not plan.runtime or r.runtime == plan.runtime)
        raise UnsupportedError(f"no runtime on {profile.name} can run {target.name}"
                               + (f" with --runtime {plan.runtime}" if plan.runtime else "") + f" ({why})",
                               "see `seqedge select TARGET --device NAME` for the reasons")
    return cands[0]


def _unit_class(profile: Profile, unit: str) -> str:
    if unit == "cpu":
        return "cpu"
    return next(u.kind for u in profile.units if u.name == unit)


def _check_lengths(target: Target, plan: BenchPlan) -> None:
    """Measured prompt lengths (and the decode steps after them) must fit the artifact and its cache;
    projections have no such limit."""
    limits = []
    if target.manifest and target.manifest.get("max_prefill_len"):
        limits.append(("its longest prefill", target.manifest["max_prefill_len"], 0))
    cap = target.shape.max_seq_len
    if cap and target.kind != "config":
        limits.append(("its cache", cap, plan.decode_tokens + 2))
    for what, limit, extra in limits:
        for P in plan.prompt_lengths:
            if P + extra > limit:
                raise BadInputError(f"prompt length {P} (+{extra} decode tokens) exceeds {target.name}'s maximum "
                                    f"{limit} ({what})", f"use --prompt-lengths up to {limit - extra}"
                                    + (" or re-export with a larger --max-len" if target.kind == "artifact" else ""))


def _export_for(target: Target, cand, recipe: str, folder: Path, plan: BenchPlan) -> Path:
    from seqedge.checkpoint import load_model
    from seqedge.exporters import ExportPlan, export
    from seqedge.models import build_model

    if target.kind == "checkpoint":
        model = load_model(target.path)
    else:
        torch.manual_seed(0)
        model = build_model(target.family, target.preset).eval()
    out = folder / target.name.replace("/", "-")
    export(model, ExportPlan(out=out, format=cand.format, ops=cand.ops_flavour, quant=recipe, verify_steps=8,
                             eval_bytes=64, threads=plan.threads,
                             backend=cand.backend if cand.format == "executorch" else "xnnpack",
                             max_len=max(plan.prompt_lengths) if cand.format == "executorch" else None,
                             max_bpb_increase=1.0))
    return out


def bench(plan: BenchPlan, on_step=None) -> BenchResult:
    from seqedge.data import held_out_prompt
    from seqedge.quant import RECIPES

    step = on_step or (lambda _: None)
    if not plan.targets:
        raise BadInputError("no TARGET given", f"TARGET is one of: {'; '.join(FORMS)}")
    for P in plan.prompt_lengths:
        check_range("--prompt-lengths", P, 1, MAX_LENGTH, "e.g. --prompt-lengths 64,256")
    check_range("--decode-tokens", plan.decode_tokens, 1, MAX_LENGTH, "e.g. --decode-tokens 128")
    check_range("--threads", plan.threads, 1, MAX_THREADS, "e.g. --threads 2 (threads used on this machine)")
    if plan.adb and not plan.runner:
        raise BadInputError("--adb needs --runner PATH (seqedge_runner built for the device)",
                            "build it with `seqedge build-runner` for the device's ABI")
    if plan.runner:
        from seqedge.bench.device import runner_files

        runner_files(plan.runner)  # a regular executable ELF file, before anything runs
    profile = load_profile(plan.device)
    result = BenchResult(profile, plan)
    targets = [resolve(t) for t in plan.targets]
    cal = calibration()
    text = held_out_prompt(max(plan.prompt_lengths) + plan.decode_tokens + 8)
    with tempfile.TemporaryDirectory(prefix="seqedge-bench-") as tmp:
        for target in targets:
            cand = _choose(profile, target, plan)
            recipe = plan.quant or cand.quant
            RECIPES[recipe]  # an unknown --quant fails here, listing the recipes
            group = (target.manifest or {}).get("quant", {}).get("group_size") or RECIPES[recipe].default_group
            if (plan.host or plan.adb) and target.kind != "config":  # measured lengths must fit the model
                _check_lengths(target, plan)
            cls = _unit_class(profile, cand.unit)
            hw = hardware(profile, cls)
            tr = TargetResult(target, cand, recipe, group, overhead=runtime_overhead(cand.runtime, target.shape,
                                                                                       profile, cls))
            base = {"device": profile.name, "runtime": cand.runtime, "backend": cand.backend, "unit": cand.unit,
                    "quant": recipe}
            host_records: list[Record] = []
            artifact = target.path if target.kind == "artifact" else None
            if plan.host and target.kind != "config":
                if artifact is None:
                    step(f"exporting {target.name} ({cand.format}, {recipe})")
                    artifact = _export_for(target, cand, recipe, Path(tmp), plan)
                host_records = _measure_host(artifact, target, plan, text, step)
                result.records += host_records
            fmt = recipe.split("-")[0]
            bits = weight_bits(recipe, group)
            # bytes per element of the KV caches: of the artifact measured (its manifest, read when it was resolved
            # or measured), else of an export of the recipe
            kv = kv_itemsize(target.manifest if artifact is not None else None, recipe)
            inputs = {**base, "class": cls, "bits_per_weight": bits, "overhead_ms": tr.overhead.ms,
                      "device_threads": hw.threads, "kv_itemsize": kv}
            for phase, lengths in (("prefill", plan.prompt_lengths), ("decode", plan.prompt_lengths)):
                for n in lengths:
                    p = (project(target.shape, "prefill", bits, fmt, hw, cal[cls], tokens=n, overhead_ms=tr.overhead.ms,
                                 kv_itemsize=kv)
                         if phase == "prefill" else
                         project(target.shape, "decode", bits, fmt, hw, cal[cls], context=n, overhead_ms=tr.overhead.ms,
                                 kv_itemsize=kv))
                    tr.projections.append(p)
                    prov = _provenance(p, cal[cls], tr.overhead, profile)
                    at = {**inputs, ("prompt_tokens" if phase == "prefill" else "context"): n, "bound": p.bound,
                          "flops": p.flops, "bytes": p.bytes}
                    if phase == "prefill":
                        result.records.append(Record(target.name, "projected", "prefill_tok_s", round(p.tok_s, 2),
                                                     "tok/s", at, prov))
                        result.records.append(Record(target.name, "projected", "ttft_ms", round(p.seconds * 1e3, 3),
                                                     "ms", at, prov))
                    else:
                        result.records.append(Record(target.name, "projected", "decode_tok_s", round(p.tok_s, 2),
                                                     "tok/s", at, prov))
                        result.records.append(Record(target.name, "projected", "decode_ms", round(p.seconds * 1e3, 3),
                                                     "ms", at, prov + " (a point estimate, not a percentile)"))
            result.records.append(Record(target.name, "projected", "size_mb",
                                         round(target.shape.weight_bytes(bits) / 1e6, 2), "MB", inputs,
                                         f"weights at {bits:g} bits each (scales included), from the model's shape"))
            if profile.kind == "host":
                tr.checks = _checks(result.records, target.name)
            if plan.peers:
                from seqedge.bench.peers import peer_records

                step(f"{target.name}: llama.cpp on the same shape")
                result.records += peer_records(target.name, target.shape, plan.prompt_lengths, plan.prompt_lengths,
                                               plan.decode_tokens, plan.threads)
            if plan.adb or plan.runner:
                result.records += _measure_device(plan, artifact, target, cand, text, base, step)
                if not plan.adb:
                    tr.runner_checks = _runner_checks(result.records, target.name)
            result.targets.append(tr)
    return result


def _measure_host(artifact: Path, target: Target, plan: BenchPlan, text: bytes, step) -> list[Record]:
    from seqedge.bench.measure import folder_mb, measure_host
    from seqedge.exporters.artifact import read_manifest

    # an artifact TARGET had its files checked (sha256) when resolved; an on-the-fly export was just written
    target.manifest = target.manifest or read_manifest(artifact, check_files=False)
    manifest = target.manifest
    _check_lengths(target, plan)
    inputs = {"format": manifest["format"], "quant": manifest["quant"]["recipe"]}
    records = measure_host(artifact, target.name, plan.prompt_lengths, plan.prompt_lengths, plan.decode_tokens,
                           text, plan.threads, inputs, on_step=lambda s: step(f"{target.name}: host {s}"))
    records.append(Record(target.name, "measured-host", "size_mb", round(folder_mb(artifact), 2), "MB",
                          {**inputs, "what": "artifact folder on disk"}, "bytes of every file in the artifact folder"))
    return records


def _provenance(p: Projection, cal, overhead, profile: Profile) -> str:
    phase_points = cal.decode_points if p.phase == "decode" else cal.prefill_points
    fit = (f"{cal.cls} {p.phase} efficiency fitted on {len(phase_points)} published points"
           if cal.calibrated(p.phase) else f"{cal.cls} {p.phase}: UNCALIBRATED ({len(phase_points)} published "
           f"point(s))")
    return (f"roofline of {profile.name} {p.hardware['units']} ({p.bound}-bound); {fit}; per-call cost: "
            f"{overhead.provenance}")


def _same_figures(records: list[Record], target: str, kind: str, against: str) -> list[tuple[Record, Record]]:
    """Each decode/prefill figure of `kind` with the `against` figure of the same metric at the same length."""
    other = {(r.metric, r.at): r for r in records if r.target == target and r.kind == against}
    return [(r, other[(r.metric, r.at)]) for r in records
            if r.target == target and r.kind == kind and r.metric in ("decode_tok_s", "prefill_tok_s")
            and (r.metric, r.at) in other]


def _checks(records: list[Record], target: str) -> list[Check]:
    """--device host: each projected decode/prefill figure next to the measured one at the same length."""
    return [Check(r.metric, r.at, r.value, m.value, m.inputs.get("busy"))
            for r, m in _same_figures(records, target, "projected", "measured-host")]


def _measure_device(plan: BenchPlan, artifact: Path | None, target: Target, cand, text: bytes, base: dict,
                    step) -> list[Record]:
    """The native runner over adb (--adb), or on this machine (--runner alone)."""
    from seqedge.bench.device import AdbTransport, LocalTransport, measure_device, prompts_of_tokens

    if artifact is None or (target.manifest or {}).get("format") != "executorch":
        raise UnsupportedError(f"--adb and --runner run ExecuTorch artifacts with the native runner; {target.name} "
                               f"is {(target.manifest or {}).get('format', 'not an artifact')}",
                               "export it with --format executorch (or pick a device whose selection is executorch)")
    step(f"{target.name}: pushing to {plan.adb}" if plan.adb else f"{target.name}: the native runner on this host")
    transport = AdbTransport(plan.adb) if plan.adb else LocalTransport()
    try:
        prompts = prompts_of_tokens(artifact, plan.prompt_lengths)
        return measure_device(transport, plan.runner, artifact, target.name, prompts, plan.decode_tokens,
                              plan.threads, base)
    finally:
        transport.close()


def _runner_checks(records: list[Record], target: str) -> list[RunnerCheck]:
    """--runner on this host: the native runner's figure against the Python runtime's at the same prompt length
    or context (same prompt tokens: prompts_of_tokens)."""
    return [RunnerCheck(r.metric, r.at, p.value, r.value, p.inputs.get("busy"))
            for r, p in _same_figures(records, target, "measured-device", "measured-host")]
