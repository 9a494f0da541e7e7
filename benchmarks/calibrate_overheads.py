"""Measure each runtime's fixed per-call cost on the reference shapes and write
seqedge/bench/data/runtime_overheads.json (see seqedge/bench/overheads.py).

    python benchmarks/calibrate_overheads.py [--threads 2] [--runtimes onnxruntime,executorch]

For each runtime and family: the `tiny` preset with random weights (seed 0) exported fp32, its decode
steps timed by `seqedge.bench.child` (the same child process `seqedge bench` uses) after a 64-token
prefill, and the median step minus this machine's roofline for that shape, per layer. Run it on a quiet
machine; the load average is stored with the result. The host check in tests/test_bench.py then compares
projections built from these constants with measurements on other shapes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from seqedge.bench.measure import run_child
from seqedge.bench.roofline import calibration, hardware, project
from seqedge.bench.shape import ModelShape
from seqedge.exporters import ExportPlan, export
from seqedge.fsutil import atomic_write_bytes
from seqedge.host import host_profile
from seqedge.models import build_model

FORMAT = {"onnxruntime": "onnx", "executorch": "executorch"}
FAMILIES = ("transformer", "mamba", "lstm", "gru")
OUT = Path(__file__).resolve().parents[1] / "seqedge" / "bench" / "data" / "runtime_overheads.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runtimes", default="onnxruntime,executorch")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    host = host_profile()
    hw, cal = hardware(host, "cpu"), calibration()["cpu"]
    text = bytes(range(32, 127)) * 2
    loads, table = [], {}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        for runtime in a.runtimes.split(","):
            for family in FAMILIES:
                torch.manual_seed(0)
                model = build_model(family, "tiny").eval()
                art = Path(tmp) / f"{family}-{runtime}"
                export(model, ExportPlan(out=art, format=FORMAT[runtime], verify_steps=4, eval_bytes=32,
                                         max_len=256 if runtime == "executorch" else None))
                loads.append(float(open("/proc/loadavg").read().split()[0]))
                raw = run_child(art, a.threads, [], [64], 128, text)
                step_ms = 1e3 * statistics.median(raw["decode"][0]["seconds"])
                shape = ModelShape.of_model(model)
                roof_ms = 1e3 * project(shape, "decode", 32, "fp32", hw, cal, context=64).seconds
                per_layer = max(0.0, step_ms - roof_ms) / max(1, shape.layers)
                table.setdefault(runtime, {})[family] = {
                    "per_layer_ms": round(per_layer, 4), "shape": f"{family}/tiny fp32", "layers": shape.layers,
                    "decode_ms_p50": round(step_ms, 4), "roofline_ms": round(roof_ms, 4),
                    "others_busy_cores": raw["decode"][0]["state"]["others_busy_cores"]}
                print(f"{runtime:12s} {family:12s} step {step_ms:7.3f} ms  roofline {roof_ms:6.3f} ms  "
                      f"→ {per_layer:.4f} ms/layer", flush=True)
    cpu = host.units[0]
    payload = {
        "about": "Each runtime's fixed per-call cost per layer, measured on the reference shapes (seqedge/bench/"
                 "overheads.py). Regenerate with the command below on a quiet machine.",
        "reference": {"machine": f"{cpu.core}, {cpu.cores} cores ({platform.machine()})", "ghz": cpu.ghz,
                      "threads": a.threads, "measured": time.strftime("%Y-%m-%d"), "loadavg": max(loads),
                      "command": f"python benchmarks/calibrate_overheads.py --threads {a.threads}",
                      "seqedge_commit": commit, "copy_bandwidth_gbs": hw.bandwidth_gbs},
        "runtimes": table}
    atomic_write_bytes(a.out, (json.dumps(payload, indent=1) + "\n").encode())
    print(f"wrote {os.path.relpath(a.out)}")


if __name__ == "__main__":
    main()
