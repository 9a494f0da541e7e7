"""Projected latency on a device: a roofline per phase, calibrated per runtime class.

    hw = hardware(profile, "cpu")                       # the unit(s) a runtime class runs on
    cal = calibration()                                 # efficiencies fitted on published measurements
    p = project(shape, "decode", 4.5, "int4", hw, cal["cpu"], context=512)
    p.tok_s, p.bound, p.explain()

time = max(FLOPs / (peak[dtype] x compute efficiency), bytes / (bandwidth x bandwidth efficiency))
       + a fixed per-call overhead.

The efficiencies are fitted per runtime class (cpu, gpu, npu) on the published on-device measurements
shipped in seqedge/bench/data/published_latencies.json (copied from the project's shared data, sources
in each point): the geometric mean of what each point implies, so the fit is in-sample; `calibration_errors`
reports the projection for every point against its published figure. Those points are large models whose
per-call overhead is negligible; the fixed per-token overhead of seqedge's own runtime is measured on the
host instead (measured time minus the host's roofline) and passed in as `overhead_ms`, scaled by clock.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
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
    "cpu": {"fp32": "fp32", "bf16": "fp32", "fp16": "fp16", "int8": "int8", "int4": "int8", "q": "int8"},
    "gpu": {"fp32": "fp32", "bf16": "fp16", "fp16": "fp16", "int8": "fp16", "int4": "fp16", "q": "fp16"},
    "npu": {"fp32": "fp16", "bf16": "fp16", "fp16": "fp16", "int8": "int8", "int4": "fp16", "q": "fp16"},
}

# What each published point's weights are, in bits per weight (scales included), from its "weights" text.
POINT_BITS = {
    "et-1b-bf16": ("bf16", 16.0, None),
    "et-1b-int4": ("int4", 5.0, 8.0),  # int4 g32 + fp32 scale; 8-bit embedding and output
    "qnn-8b-w4a16": ("int4", 4.5, None),  # int4 weights, scales per group (not published: ~0.5 bit)
    "pi5-3b-q4km": ("q", 4.8, None),  # llama.cpp Q4_K_M, stated ~4.8 bits per weight
    "orin-8b-int4": ("int4", 4.5, None),  # MLC q4f16: int4 + fp16 scale per 32
    "orin-3b-int4": ("int4", 4.5, None),
    "4090-7b-f16": ("fp16", 16.0, None),
    "4090-7b-q8": ("q", 8.5, None),  # Q8_0, stated 8.5 bits per weight
}


@dataclass(frozen=True)
class Hardware:
    device: str
    units: str
    kind: str
    bandwidth_gbs: float
    peak: dict[str, float]  # GFLOP/s (GOP/s) per dtype
    threads: int = 0

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
        return Hardware(profile.name, "+".join(u.name for u in fast), "cpu", bw, peak, profile.default_threads())
    units = [u for u in profile.units if u.kind == cls]
    if not units:
        raise BadInputError(f"profile {profile.name} has no {cls} unit", f"pick a runtime for one of its units "
                            f"({', '.join(sorted({u.kind for u in profile.units}))})")
    u = units[0]
    return Hardware(profile.name, u.name, cls, u.bandwidth_gbs, dict(u.peak))


@dataclass(frozen=True)
class ClassCalibration:
    cls: str
    bandwidth_efficiency: float
    compute_efficiency: float
    overhead_ms: float
    points: tuple[str, ...]
    source: str  # "published" | "default (no published point for this class)"


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
                f"{hw['bandwidth_gbs']:g} GB/s × {cal['bandwidth_efficiency']:.2f} = {self.memory_s * 1e3:,.2f} ms · "
                f"+{self.overhead_s * 1e3:.3f} ms per-call overhead"
                + f" → {self.tok_s:,.1f} tok/s [{cal['cls']} calibration: {cal['source']}]")


def project(shape: ModelShape, phase: str, bits: float, weight_format: str, hw: Hardware, cal: ClassCalibration,
            tokens: int = 1, context: int = 0, head_bits: float | None = None, overhead_ms: float = 0.0) -> Projection:
    """`overhead_ms`: the runtime's fixed cost per call on this device (added to the class calibration's)."""
    """Roofline time for `tokens` (decode: 1) after `context` earlier tokens."""
    dtype, peak = hw.peak_for(COMPUTE_DTYPE[hw.kind][weight_format])
    if phase == "decode":
        flops, nbytes = shape.decode_flops(context), shape.decode_bytes(bits, context, head_bits)
    else:
        flops, nbytes = shape.prefill_flops(tokens, context), shape.prefill_bytes(bits, tokens, context, head_bits)
    compute_s = flops / (peak * 1e9 * cal.compute_efficiency)
    memory_s = nbytes / (hw.bandwidth_gbs * 1e9 * cal.bandwidth_efficiency)
    overhead_s = (cal.overhead_ms + overhead_ms) / 1e3
    seconds = max(compute_s, memory_s) + overhead_s
    return Projection(phase, tokens, context, dtype, flops, nbytes, compute_s, memory_s, overhead_s, seconds,
                      "compute" if compute_s > memory_s else "memory",
                      {**asdict(hw), "peak_used": peak}, asdict(cal))


# --- calibration on published measurements ------------------------------------------------------------


def published() -> dict[str, Any]:
    return json.loads(resources.files("seqedge.bench").joinpath("data/published_latencies.json").read_text())


def published_config(name: str) -> dict[str, Any]:
    return json.loads(resources.files("seqedge.bench").joinpath(f"data/configs/{name}.json").read_text())


def _implied(point: dict[str, Any]) -> dict[str, float]:
    """The efficiencies a published point implies on its device's roofline (overhead taken as zero)."""
    cls = PUBLISHED_RUNTIMES[point["runtime"]]
    shape = ModelShape.of_config(published_config(point["config"]))
    fmt, bits, head_bits = POINT_BITS[point["id"]]
    hw = hardware(load_profile(point["device"]), cls)
    out = {}
    prompt = point.get("prompt_tokens", 0)
    out["bandwidth"] = shape.decode_bytes(bits, prompt, head_bits, state_bytes=2) / (
        hw.bandwidth_gbs * 1e9 / point["decode_tok_s"])
    if point.get("prefill_tok_s"):
        _, peak = hw.peak_for(COMPUTE_DTYPE[cls][fmt])
        out["compute"] = shape.prefill_flops(prompt) / (peak * 1e9 * prompt / point["prefill_tok_s"])
    return out


def _geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


@lru_cache(maxsize=1)
def calibration() -> dict[str, ClassCalibration]:
    points = published()["points"]
    implied = {p["id"]: _implied(p) for p in points}
    out = {}
    for cls in CLASSES:
        ids = [p["id"] for p in points if PUBLISHED_RUNTIMES[p["runtime"]] == cls]
        bw = [implied[i]["bandwidth"] for i in ids]
        comp = [implied[i]["compute"] for i in ids if "compute" in implied[i]]
        if not ids:
            out[cls] = ClassCalibration(cls, 0.5, 0.3, 0.0, (), "default (no published point for this class)")
            continue
        out[cls] = ClassCalibration(cls, round(_geomean(bw), 4), round(_geomean(comp), 4) if comp else 0.3, 0.0,
                                    tuple(ids), "published" if comp else "published (bandwidth only; compute 0.3 "
                                    "assumed)")
    return out


def calibration_errors() -> list[dict[str, Any]]:
    """Projection vs published figure for every published point and metric (relative error)."""
    cal = calibration()
    rows = []
    for p in published()["points"]:
        cls = PUBLISHED_RUNTIMES[p["runtime"]]
        shape = ModelShape.of_config(published_config(p["config"]))
        fmt, bits, head_bits = POINT_BITS[p["id"]]
        hw = hardware(load_profile(p["device"]), cls)
        prompt = p.get("prompt_tokens", 0)
        dec = project(shape, "decode", bits, fmt, hw, cal[cls], context=prompt, head_bits=head_bits)
        rows.append({"id": p["id"], "metric": "decode_tok_s", "published": p["decode_tok_s"],
                     "projected": round(dec.tok_s, 2), "error": round(dec.tok_s / p["decode_tok_s"] - 1, 4),
                     "bound": dec.bound, "source": p["source"]})
        if p.get("prefill_tok_s"):
            pre = project(shape, "prefill", bits, fmt, hw, cal[cls], tokens=prompt, head_bits=head_bits)
            rows.append({"id": p["id"], "metric": "prefill_tok_s", "published": p["prefill_tok_s"],
                         "projected": round(pre.tok_s, 2), "error": round(pre.tok_s / p["prefill_tok_s"] - 1, 4),
                         "bound": pre.bound, "source": p["source"]})
    return rows
