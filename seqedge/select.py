"""Pick the runtime, backend, format, quantization and threads that fit a device, with reasons.

    selection = select(load_profile("pixel8"), model)          # or an artifact's manifest
    selection.best                                             # Candidate(runtime, backend, format, quant, threads, ...)
    selection.rejected                                         # each (unit, runtime/backend) not taken, and why

A candidate is a (compute unit, runtime option) of the profile that seqedge can serve: the format has
an exporter, the runtime has an adapter, the quantization recipe exists and the unit runs that dtype,
every op of the model is supported there, and its shape constraints fit: a static-shape-only unit (an
NPU) is served by seqedge's static ONNX artifacts (fixed prefill chunks + a decode step, quantized in the
encodings the unit takes: exporters/onnx/static.py) where the family has them. On the host, the runtime must also be importable and
have the execution provider. Candidates are ranked by a projected decode rate: a memory-bound
roofline (unit bandwidth x the option's efficiency / weight bytes per token).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from seqedge.profiles import KNOWN_OPS, RUNTIME_FORMATS, ComputeUnit, Profile, RuntimeOption

# what each family's artifact needs from a runtime
FAMILY_OPS = {
    "transformer": ("seqedge::attention",),
    "mamba": ("seqedge::selective_scan", "seqedge::causal_conv1d"),
    "lstm": ("lstm",),
    "gru": ("gru",),
    "rnn": ("rnn",),
    "mamba2": ("seqedge::ssd_scan", "seqedge::causal_conv1d"),
    "s4": ("seqedge::selective_scan",),
}
BITS = {"fp32": 32, "fp16": 16, "bf16": 16, "int8": 8, "int4": 4, "w8a16": 8, "w8a8": 8}
# families whose models take a padded prefill chunk (`prefill_padded`), so static-shape artifacts
STATIC_FAMILIES = ("transformer", "mamba")
# recipes for static-shape units, best first, with the activation dtype each needs of the unit
STATIC_RECIPES = {"w8a16": "int16", "w8a8": "int8"}
WEIGHT_DTYPE = {"w8a16": "int8", "w8a8": "int8"}  # the weights of recipes named by more than their weights
STATIC_CHUNK = 128  # prefill chunk of a static artifact unless the user says otherwise
# NPU backends seqedge builds static artifacts for (and can check: onnxruntime-qnn emulates the HTP on x86-64)
STATIC_BACKENDS = ("qnn",)
# ExecuTorch delegates seqedge does not lower to, and what stands in the way
NOT_LOWERED = {
    "coreml": "its static graphs do lower whole to Core ML on Linux (benchmarks/coreml_lowering.py), but a Core ML "
              "program runs on macOS/iOS only, so seqedge cannot verify it here and does not ship it",
    "qnn": "ExecuTorch's QNN backend needs Qualcomm's QNN SDK to build; the HTP is served through onnxruntime-qnn",
}
# onnxruntime execution provider names for profile backends
ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider",
                 "coreml": "CoreMLExecutionProvider", "qnn": "QNNExecutionProvider", "nnapi": "NnapiExecutionProvider",
                 "xnnpack": "XnnpackExecutionProvider"}


@dataclass(frozen=True)
class ModelFacts:
    """What selection needs to know about a model or an artifact."""

    family: str
    ops: tuple[str, ...]
    parameters: int
    format: str | None = None  # set for an existing artifact
    quant: str | None = None  # set for an existing artifact
    dynamic_shapes: bool = True  # False: a static-shape artifact

    @classmethod
    def of_model(cls, model) -> ModelFacts:
        family = getattr(getattr(model, "config", None), "family", "custom")
        params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        return cls(family, FAMILY_OPS.get(family, ()), params)

    @classmethod
    def of_manifest(cls, manifest: dict[str, Any]) -> ModelFacts:
        # the model's ops a profile's runtimes name; the kernels an export put in besides (seqedge::int4_matmul,
        # seqedge::moe_ffn_q) are seqedge's own, compiled into every seqedge runtime and app
        ops = tuple(dict.fromkeys(op for o in manifest["ops"] if (op := o["op"].removeprefix("aten::")) in KNOWN_OPS))
        params = manifest.get("parameters") or 0
        if not params:
            import torch

            from seqedge.models import config_from_dict, model_from_config

            with torch.device("meta"):  # the shape only
                params = model_from_config(config_from_dict(manifest["config"], "the manifest's config")).num_parameters()
        return cls(manifest["family"], ops, params, manifest["format"], manifest["quant"]["recipe"],
                   dynamic_shapes=not manifest.get("static"))


# onnxruntime backends with the com.microsoft kernels seqedge's fused lowerings use
ORT_FUSED_BACKENDS = ("cpu", "cuda")


@dataclass(frozen=True)
class Candidate:
    unit: str
    runtime: str
    backend: str
    format: str
    quant: str
    threads: int
    score: float  # projected decode tokens/s
    reason: str
    static_chunk: int | None = None  # a static-shape artifact with prefill chunks of this length
    soc: dict[str, int] | None = None  # Qualcomm HTP: {"htp_arch", "soc_model"} to compile its context for

    @property
    def ops_flavour(self) -> str:
        """ONNX lowering flavour for this backend: fused where the contrib kernels exist."""
        if self.static_chunk:
            return "static"
        return "fused" if self.backend in ORT_FUSED_BACKENDS else "portable"

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "ops_flavour": self.ops_flavour}


@dataclass(frozen=True)
class Rejection:
    unit: str
    runtime: str
    backend: str
    reason: str


@dataclass
class Selection:
    profile: str
    candidates: list[Candidate] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None


def _producible_formats() -> set[str]:
    from seqedge.exporters import FORMATS

    return set(FORMATS.names())


def _adapters() -> set[str]:
    from seqedge.runtimes import RUNTIMES

    return set(RUNTIMES.names())


def _recipes(fmt: str | None = None) -> list[str]:
    """Quantization recipes seqedge implements (for `fmt`, when given), smallest first; calibrated
    (static) recipes are never picked by default: they need sample text the user chooses."""
    from seqedge.quant import QUANT_FORMATS, RECIPES

    names = [r for r in RECIPES.names() if not RECIPES[r].calibrated
             and (fmt not in QUANT_FORMATS or fmt in RECIPES[r].formats())]
    return sorted(names, key=lambda r: BITS.get(r.split("-")[0], 32))


def _computes(unit: ComputeUnit, recipe: str) -> bool:
    """Whether the unit has the arithmetic the recipe runs in (4/8-bit CPU kernels compute in int8)."""
    from seqedge.bench.roofline import COMPUTE_DTYPE

    base = recipe.split("-")[0]
    return base in unit.peak or COMPUTE_DTYPE.get(unit.kind, {}).get(base) in unit.peak


def host_availability(runtime: str, backend: str) -> tuple[bool, str]:
    """Whether this machine can run `runtime`/`backend` now (only asked for the host profile)."""
    from seqedge.runtimes import adapter_class

    ok, why = adapter_class(runtime).available()
    if not ok:
        return ok, why
    if runtime == "onnxruntime":
        import onnxruntime

        provider = ORT_PROVIDERS[backend]
        if provider not in onnxruntime.get_available_providers():
            return False, f"this onnxruntime build has no {provider} (has {', '.join(onnxruntime.get_available_providers())})"
    return True, why


def _check(option: RuntimeOption, unit: ComputeUnit, facts: ModelFacts, on_host: bool) -> tuple[str | None, str]:
    """(rejection reason or None, quant to use)."""
    fmt = RUNTIME_FORMATS[option.runtime]
    if facts.format and facts.format != fmt:
        return f"runs {fmt} artifacts; this one is {facts.format}", ""
    if fmt not in _producible_formats() and fmt != "checkpoint":
        return f"seqedge cannot produce {fmt} artifacts yet (formats: {', '.join(sorted(_producible_formats()))})", ""
    if option.runtime not in _adapters():
        return f"seqedge has no {option.runtime} runtime adapter yet", ""
    if option.runtime == "executorch":
        from seqedge.exporters.executorch import BACKENDS

        if option.backend not in BACKENDS:
            return (f"seqedge lowers ExecuTorch programs for {'/'.join(BACKENDS)} only, not {option.backend}"
                    + (f" ({NOT_LOWERED[option.backend]})" if option.backend in NOT_LOWERED else "")), ""
    missing = [op for op in facts.ops if op not in option.ops]
    if missing:
        return f"has no kernel for {', '.join(missing)} (supports {', '.join(option.ops)})", ""
    if option.static_shapes:
        return _check_static(option, unit, facts, on_host)
    if not facts.dynamic_shapes and (option.runtime, option.backend) != ("onnxruntime", "cpu"):
        return "runs dynamic-shape graphs; this artifact is static-shape (for NPUs; onnxruntime's CPU runs it too)", ""
    if facts.quant:
        quant = facts.quant
        if WEIGHT_DTYPE.get(quant, quant.split("-")[0]) not in option.dtypes:
            return f"runs {'/'.join(option.dtypes)} weights; the artifact is {quant}", ""
    else:
        fitting = [r for r in _recipes(fmt) if r.split("-")[0] in option.dtypes and _computes(unit, r)]
        if not fitting:
            return f"runs {'/'.join(option.dtypes)} weights; seqedge implements {', '.join(_recipes(fmt))}", ""
        quant = fitting[0]
    if on_host:
        ok, why = host_availability(option.runtime, option.backend)
        if not ok:
            return f"unavailable on this machine: {why}", ""
    return None, quant


def _check_static(option: RuntimeOption, unit: ComputeUnit, facts: ModelFacts, on_host: bool) -> tuple[str | None, str]:
    """A static-shape unit: seqedge's static ONNX artifacts, in a recipe whose activations the unit takes."""
    acts = "/".join(option.activation_dtypes)
    if option.runtime != "onnxruntime" or option.backend not in STATIC_BACKENDS:
        return (f"needs static shapes and {acts} activations; seqedge builds static-shape artifacts for onnxruntime's "
                f"{'/'.join(STATIC_BACKENDS)} only (not {option.runtime}/{option.backend})"), ""
    if facts.family not in STATIC_FAMILIES:
        return (f"needs static shapes; seqedge's static artifacts cover {', '.join(STATIC_FAMILIES)}, not "
                f"{facts.family}"), ""
    if facts.dynamic_shapes and facts.format:
        return "needs static shapes; this artifact has a dynamic length (re-export with --static-chunk)", ""
    recipes = [r for r, act in STATIC_RECIPES.items() if act in option.activation_dtypes and "int8" in option.dtypes]
    if facts.quant:
        if facts.quant not in recipes:
            return f"takes {'/'.join(recipes) or 'no seqedge recipe'} static artifacts; this one is {facts.quant}", ""
        recipes = [facts.quant]
    if not recipes:
        return f"needs {acts} activations; seqedge's static recipes are {', '.join(STATIC_RECIPES)}", ""
    if option.backend == "qnn" and not option.htp_arch:
        return "the profile names no htp_arch/soc_model to compile the HTP context binary for", ""
    if on_host:
        ok, why = host_availability(option.runtime, option.backend)
        if not ok:
            return f"unavailable on this machine: {why}", ""
    return None, recipes[0]


def _cpu_view(profile: Profile) -> list[tuple[ComputeUnit, int, float]]:
    """CPU clusters are offered as one candidate unit: the big (+mid) cores at default threads."""
    cpus = profile.cpu_units
    if not cpus:
        return []
    fast = [u for u in cpus if u.name in ("cpu-big", "cpu-mid")] or cpus
    bandwidth = min(profile.memory_bandwidth_gbs, sum(u.bandwidth_gbs for u in fast))
    return [(max(fast, key=lambda u: u.ghz), profile.default_threads(), bandwidth)]


def select(profile: Profile, facts: ModelFacts) -> Selection:
    on_host = profile.kind == "host"
    selection = Selection(profile.name)
    units = _cpu_view(profile) + [(u, 0, u.bandwidth_gbs) for u in profile.units if u.kind != "cpu"]
    for unit, threads, bandwidth in units:
        label = "cpu" if unit.kind == "cpu" else unit.name
        for rank, option in enumerate(unit.runtimes):
            reason, quant = _check(option, unit, facts, on_host)
            if reason:
                selection.rejected.append(Rejection(label, option.runtime, option.backend, reason))
                continue
            weight_bytes = facts.parameters * BITS[quant.split("-")[0]] / 8
            tok_s = bandwidth * 1e9 * option.efficiency / max(weight_bytes, 1)
            score = tok_s * (1 - 0.01 * rank)  # the profile's order breaks near-ties
            where = f"{label} ({threads} threads)" if threads else label
            static = STATIC_CHUNK if option.static_shapes else None
            selection.candidates.append(Candidate(
                label, option.runtime, option.backend, RUNTIME_FORMATS[option.runtime], quant, threads, round(score, 1),
                f"{where} via {option.runtime}/{option.backend}, {quant}: ~{tok_s:,.0f} tok/s projected decode "
                f"(memory-bound: {bandwidth:g} GB/s x {option.efficiency:g} / {weight_bytes / 1e6:,.1f} MB per token)"
                + (f"; static shapes: prefill chunks of {static} tokens + a decode step" if static else "")
                + (f"; {option.note}" if option.note else ""),
                static, {"htp_arch": option.htp_arch, "soc_model": option.soc_model} if option.htp_arch else None))
    selection.candidates.sort(key=lambda c: -c.score)
    return selection
