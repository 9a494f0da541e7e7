"""A runtime's fixed cost per call (dispatch, the Python adapter, state in and out), measured once on
reference shapes and stored with its provenance; never taken from the run being projected.

    oh = runtime_overhead("executorch", shape, profile)   # Overhead(ms=0.41, provenance="...")

The constants live in data/runtime_overheads.json, written by `python benchmarks/calibrate_overheads.py`:
for each runtime and family, the reference shape's (the family's `tiny` preset, whose weights stay in
cache) median decode step minus the host roofline for it, per layer, on the reference machine at its
clock. A projection uses per-layer cost × the target's layers × reference clock / device clock: a function
of the model, the runtime and the profile only. The host check (`seqedge bench --device host`) then
compares that projection with a measurement on other shapes than the reference ones.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from seqedge.bench.shape import ModelShape
from seqedge.profiles import Profile

DATA = "data/runtime_overheads.json"


@dataclass(frozen=True)
class Overhead:
    ms: float
    provenance: str


@lru_cache(maxsize=1)
def table() -> dict[str, Any]:
    return json.loads(resources.files("seqedge.bench").joinpath(DATA).read_text())


def device_ghz(profile: Profile) -> float:
    return max((u.ghz for u in profile.cpu_units), default=0.0)


def runtime_overhead(runtime: str, shape: ModelShape, profile: Profile, unit_class: str = "cpu") -> Overhead:
    """The per-call cost `runtime` adds for `shape` on `profile`'s CPU, scaled by clock from the reference."""
    data = table()
    ref = data["reference"]
    per_runtime = data["runtimes"].get(runtime)
    if unit_class != "cpu" or not per_runtime:
        why = (f"{unit_class} runtimes" if unit_class != "cpu" else f"runtime {runtime}")
        return Overhead(0.0, f"no measured per-call cost for {why}: 0 assumed (the class calibration absorbs it)")
    entry = per_runtime.get(shape.family)
    if entry is not None:
        per_layer, which = entry["per_layer_ms"], f"{runtime} on {entry['shape']}"
    else:  # a family not measured: the median of the runtime's families, said so
        per_layer = statistics.median(e["per_layer_ms"] for e in per_runtime.values())
        which = f"{runtime}, median of {', '.join(sorted(per_runtime))} (no reference for {shape.family})"
    ghz = device_ghz(profile) or ref["ghz"]
    ms = round(per_layer * max(1, shape.layers) * ref["ghz"] / ghz, 4)
    return Overhead(ms, f"{per_layer:.4f} ms per layer × {max(1, shape.layers)} layers × {ref['ghz']:g} GHz / "
                        f"{ghz:g} GHz: measured for {which} on {ref['machine']} ({ref['measured']}, load "
                        f"{ref['loadavg']}, `{ref['command']}`)")
