"""Projected latency on a device: a roofline per phase, calibrated per runtime class.

    hw = hardware(profile, "cpu")                       # the unit(s) a runtime class runs on
    cal = calibration()                                 # efficiencies fitted on published measurements
    p = project(shape, "decode", 4.5, "int4", hw, cal["cpu"], context=512)
    p.tok_s, p.bound, p.explain()

time = max(FLOPs / (peak[dtype] x compute efficiency), bytes / (bandwidth x bandwidth efficiency))
       + a fixed per-call overhead.

The efficiencies are fitted per runtime class (cpu, gpu, npu) and phase (bandwidth on decode figures,
compute on prefill figures) on the published on-device measurements in
seqedge/bench/data/published_latencies.json (seeded from the project's shared data; each point names its
source): the geometric mean of what each point implies. `calibration_errors` checks every point twice:
in-sample, and leave-one-out (predicted by a fit that excludes it) — the error to believe. A class and
phase with fewer than MIN_POINTS points is reported as uncalibrated. Those points are large models whose
per-call overhead is negligible; a runtime's fixed per-token cost comes from bench/overheads.py (measured
once on reference shapes, stored with its provenance) and is passed in as `overhead_ms`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Any

from seqedge.bench.shape import ModelShape
from seqedge.errors import BadInputError
from seqedge.profiles import Profile, load_profile

CLASSES = ("cpu", "gpu", "npu")

# published runtime names -> runtime class
PUBLISHED_RUNTIMES = {"executorch-xnnpack": "cpu", "llama.cpp-cpu (Ollama)": "cpu", "qnn-npu": "npu",
                      "mlc-cuda": "gpu", "llama.cpp-cuda": "gpu"}

# the arithmetic a runtime class does for a weight format (CPU kernels widen bf16 to fp32; 4/8-bit CPU
# kernels quantize activations to int8; GPUs dequantize to fp16; NPUs run int8 natively, else fp16)
COMPUTE_DTYPE = {
    "cpu": {"fp32": "fp32", "bf16": "fp32", "fp16": "fp16", "int8": "int8", "int4": "int8", "q": "int8",
            "w8a16": "fp32", "w8a8": "int8"},
    "gpu": {"fp32": "fp32", "bf16": "fp16", "fp16": "fp16", "int8": "fp16", "int4": "fp16", "q": "fp16",
            "w8a16": "fp16", "w8a8": "fp16"},
    # the QNN recipes: 16-bit activations run at about the fp16 rate on the HTP (no published int16 figure)
    "npu": {"fp32": "fp16", "bf16": "fp16", "fp16": "fp16", "int8": "int8", "int4": "fp16", "q": "fp16",
            "w8a16": "fp16", "w8a8": "int8"},
}

MIN_POINTS = 3  # fewer published points than this for a class and phase: the projection is uncalibrated
# A step whose bytes fit in this share of a profile's last-level cache reads them from there: the rest holds the
# activations, and on a shared machine other tenants' lines (a 2-core VM on a Xeon with 300 MB of L3 kept a
# 122 MB fp32 Mamba resident between decode steps: 475 tok/s, where the 1 GiB copy figure projected 141).
CACHE_SHARE = 0.5
DEFAULT_EFFICIENCY = {"bandwidth": 0.5, "compute": 0.3}  # ESTIMATES, used only where no point exists

@dataclass(frozen=True)
class Hardware:
    device: str
    units: str
    kind: str
    bandwidth_gbs: float
    peak: dict[str, float]  # GFLOP/s (GOP/s) per dtype
    threads: int = 0
    cache_mb: float = 0.0  # the profile's last-level cache (Profile.cache_mb), 0: not counted
    cache_bandwidth_gbs: float = 0.0

    def stream_bandwidth(self, nbytes: float) -> tuple[float, str]:
        """(GB/s, where from) for a step of `nbytes`: the last-level cache's where they fit in CACHE_SHARE of it
        (they stay there from one step to the next), else memory's."""
        if self.cache_mb and nbytes <= CACHE_SHARE * self.cache_mb * 1e6:
            return self.cache_bandwidth_gbs, f"its {self.cache_mb:g} MB last-level cache"
        return self.bandwidth_gbs, "memory"

    def peak_for(self, dtype: str) -> tuple[str, float]:
        if dtype in self.peak:
            return dtype, self.peak[dtype]
        for fallback in ("fp16", "fp32", "int8"):
            if fallback in self.peak:
                return fallback, self.peak[fallback]
        raise BadInputError(f"profile {self.device} lists no peak throughput for its {self.units}",
                            "add a `peak = { fp32 = ... }` table to that unit")


def hardware(profile: Profile, cls: str) -> Hardware:
    """The compute a runtime class gets on a device: CPU = the big (+mid) clusters at the default thread
    count, bandwidth capped by the memory bus; GPU/NPU = that unit."""
    if cls == "cpu":
        cpus = profile.cpu_units
        if not cpus:
            raise BadInputError(f"profile {profile.name} has no CPU unit", "add a [[units]] entry with kind = \"cpu\"")
        fast = [u for u in cpus if u.name in ("cpu-big", "cpu-mid")] or cpus
        peak: dict[str, float] = {}
        for u in fast:
            for k, v in u.peak.items():
                peak[k] = peak.get(k, 0.0) + v
        bw = min(profile.memory_bandwidth_gbs, sum(u.bandwidth_gbs for u in fast))
        return Hardware(profile.name, "+".join(u.name for u in fast), "cpu", bw, peak, profile.default_threads(),
                        profile.cache_mb, profile.cache_bandwidth_gbs)
    units = [u for u in profile.units if u.kind == cls]
    if not units:
        raise BadInputError(f"profile {profile.name} has no {cls} unit", f"pick a runtime for one of its units "
                            f"({', '.join(sorted({u.kind for u in profile.units}))})")
    u = units[0]
    return Hardware(profile.name, u.name, cls, u.bandwidth_gbs, dict(u.peak))


@dataclass(frozen=True)
class ClassCalibration:
    """A runtime class's efficiencies, each fitted on its own phase's points: bandwidth on decode figures,
    compute on prefill figures. `source` says, per phase, how many points and whether that is enough."""

    cls: str
    bandwidth_efficiency: float
    compute_efficiency: float
    overhead_ms: float
    decode_points: tuple[str, ...]
    prefill_points: tuple[str, ...]
    source: str

    @property
    def points(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.decode_points + self.prefill_points))

    def calibrated(self, phase: str) -> bool:
        return len(self.decode_points if phase == "decode" else self.prefill_points) >= MIN_POINTS


@dataclass
class Projection:
    phase: str  # decode | prefill
    tokens: int
    context: int
    dtype: str
    flops: float
    bytes: float
    compute_s: float
    memory_s: float
    overhead_s: float
    seconds: float
    bound: str  # compute | memory
    hardware: dict[str, Any]
    calibration: dict[str, Any]

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "tok_s": self.tok_s}

    def explain(self) -> str:
        hw, cal = self.hardware, self.calibration
        return (f"{self.phase} {self.tokens} token(s) at context {self.context}: {self.bound}-bound · "
                f"{self.flops / 1e9:,.2f} GFLOP on {hw['units']} ({self.dtype} peak {hw['peak_used']:,.0f} GFLOP/s × "
                f"{cal['compute_efficiency']:.2f}) = {self.compute_s * 1e3:,.2f} ms · {self.bytes / 1e6:,.1f} MB at "
                f"{hw['bandwidth_used']:g} GB/s ({hw['bandwidth_from']}) × {cal['bandwidth_efficiency']:.2f} = "
                f"{self.memory_s * 1e3:,.2f} ms · "
                f"+{self.overhead_s * 1e3:.3f} ms per-call overhead"
                + f" → {self.tok_s:,.1f} tok/s [{cal['cls']} calibration: {cal['source']}]")


def project(shape: ModelShape, phase: str, bits: float, weight_format: str, hw: Hardware, cal: ClassCalibration,
            tokens: int = 1, context: int = 0, head_bits: float | None = None, overhead_ms: float = 0.0,
            kv_itemsize: int | None = None) -> Projection:
    """Roofline time for `tokens` (decode: 1) after `context` earlier tokens. `overhead_ms`: the runtime's
    fixed cost per call on this device (added to the class calibration's); `kv_itemsize`: bytes per element of
    the KV caches (shape.kv_itemsize; default 4)."""
    dtype, peak = hw.peak_for(COMPUTE_DTYPE[hw.kind][weight_format])
    if phase == "decode":
        flops = shape.decode_flops(context)
        nbytes = shape.decode_bytes(bits, context, head_bits, kv_itemsize=kv_itemsize)
    else:
        flops = shape.prefill_flops(tokens, context)
        nbytes = shape.prefill_bytes(bits, tokens, context, head_bits, kv_itemsize=kv_itemsize)
    compute_s = flops / (peak * 1e9 * cal.compute_efficiency)
    bandwidth, source = hw.stream_bandwidth(nbytes)
    memory_s = nbytes / (bandwidth * 1e9 * cal.bandwidth_efficiency)
    overhead_s = (cal.overhead_ms + overhead_ms) / 1e3
    seconds = max(compute_s, memory_s) + overhead_s
    return Projection(phase, tokens, context, dtype, flops, nbytes, compute_s, memory_s, overhead_s, seconds,
                      "compute" if compute_s > memory_s else "memory",
                      {**asdict(hw), "peak_used": peak, "bandwidth_used": bandwidth, "bandwidth_from": source},
                      asdict(cal))


# --- calibration on published measurements ------------------------------------------------------------


def published() -> dict[str, Any]:
    return json.loads(resources.files("seqedge.bench").joinpath("data/published_latencies.json").read_text())


def published_config(name: str) -> dict[str, Any]:
    return json.loads(resources.files("seqedge.bench").joinpath(f"data/configs/{name}.json").read_text())


@cache
def _published_shape(config: str) -> ModelShape:
    return ModelShape.of_config(published_config(config))


@cache
def _published_hardware(device: str, cls: str) -> Hardware:
    return hardware(load_profile(device), cls)


def _point_terms(point: dict[str, Any]):
    cls = PUBLISHED_RUNTIMES[point["runtime"]]
    return cls, _published_shape(point["config"]), _published_hardware(point["device"], cls)


def _implied(point: dict[str, Any]) -> dict[str, float]:
    """The efficiencies a published point implies on its device's roofline (overhead taken as zero)."""
    cls, shape, hw = _point_terms(point)
    bits, head_bits = point["bits_per_weight"], point.get("head_bits")
    out = {}
    prompt = point.get("prompt_tokens", 0)
    nbytes = shape.decode_bytes(bits, prompt, head_bits, state_bytes=2)
    out["bandwidth"] = nbytes / (hw.stream_bandwidth(nbytes)[0] * 1e9 / point["decode_tok_s"])
    if point.get("prefill_tok_s"):
        _, peak = hw.peak_for(COMPUTE_DTYPE[cls][point["format"]])
        out["compute"] = shape.prefill_flops(prompt) / (peak * 1e9 * prompt / point["prefill_tok_s"])
    return out


def _geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def _phase_source(phase: str, ids: list[str], what: str) -> str:
    if not ids:
        return f"{phase}: uncalibrated (no published point; {what} {DEFAULT_EFFICIENCY[what]} is an ESTIMATE)"
    if len(ids) < MIN_POINTS:
        return (f"{phase}: uncalibrated ({len(ids)} published point{'s' if len(ids) > 1 else ''}, fewer than "
                f"{MIN_POINTS}: its error cannot be checked on points it was not fitted on)")
    return f"{phase}: fitted on {len(ids)} published points"


def fit(points: list[dict[str, Any]]) -> dict[str, ClassCalibration]:
    """Per runtime class and phase: the geometric mean of the efficiencies the points imply."""
    implied = {p["id"]: _implied(p) for p in points}
    out = {}
    for cls in CLASSES:
        ids = [p["id"] for p in points if PUBLISHED_RUNTIMES[p["runtime"]] == cls]
        dec = [i for i in ids if "bandwidth" in implied[i]]
        pre = [i for i in ids if "compute" in implied[i]]
        bw = round(_geomean([implied[i]["bandwidth"] for i in dec]), 4) if dec else DEFAULT_EFFICIENCY["bandwidth"]
        comp = round(_geomean([implied[i]["compute"] for i in pre]), 4) if pre else DEFAULT_EFFICIENCY["compute"]
        source = "; ".join((_phase_source("decode", dec, "bandwidth"), _phase_source("prefill", pre, "compute")))
        out[cls] = ClassCalibration(cls, bw, comp, 0.0, tuple(dec), tuple(pre), source)
    return out


@lru_cache(maxsize=1)
def calibration() -> dict[str, ClassCalibration]:
    return fit(published()["points"])


def _project_point(point: dict[str, Any], cal: dict[str, ClassCalibration], metric: str) -> Projection:
    cls, shape, hw = _point_terms(point)
    bits, head_bits, prompt = point["bits_per_weight"], point.get("head_bits"), point.get("prompt_tokens", 0)
    if metric == "decode_tok_s":
        return project(shape, "decode", bits, point["format"], hw, cal[cls], context=prompt, head_bits=head_bits)
    return project(shape, "prefill", bits, point["format"], hw, cal[cls], tokens=prompt, head_bits=head_bits)


def calibration_errors() -> list[dict[str, Any]]:
    """Every published point and metric against two projections: the fit on all points (in-sample
    `error`) and a fit that leaves that point out (`loo_error`: the out-of-sample check; None when the
    class has no other point for that phase, `calibrated` False when it has fewer than MIN_POINTS)."""
    points = published()["points"]
    full = calibration()
    rows = []
    for p in points:
        cls = PUBLISHED_RUNTIMES[p["runtime"]]
        loo = fit([q for q in points if q["id"] != p["id"]])
        for metric, phase in (("decode_tok_s", "decode"), ("prefill_tok_s", "prefill")):
            if not p.get(metric):
                continue
            inside = _project_point(p, full, metric)
            others = loo[cls].decode_points if phase == "decode" else loo[cls].prefill_points
            out = _project_point(p, loo, metric).tok_s if others else None
            rows.append({"id": p["id"], "class": cls, "metric": metric, "published": p[metric],
                         "projected": round(inside.tok_s, 2), "error": round(inside.tok_s / p[metric] - 1, 4),
                         "loo_projected": None if out is None else round(out, 2),
                         "loo_error": None if out is None else round(out / p[metric] - 1, 4),
                         "calibrated": full[cls].calibrated(phase), "bound": inside.bound, "source": p["source"]})
    return rows
