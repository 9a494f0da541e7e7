"""Mixture of experts at decode: what a top-k artifact reads per token, measured against dense models.

    .venv/bin/python benchmarks/moe_decode.py [--preset small-moe] [--set hidden_size=512 ...]
        [--formats onnx,executorch] [--quant int4] [--models moe,dense-active] [--rounds 3] [--json out.json]

Exports, from the same random weights, in the same run:
  moe          the mixture as seqedge exports it (one top-k node per layer: onnxruntime MoE/QMoE, seqedge's
               ExecuTorch kernel) — reads the k chosen experts per token
  moe-masked   the same model in the dense masked form (every expert on every token, unchosen ones weighted
               0): what seqedge exported before the top-k op, and what a plain torch.export of Mixtral's
               block without data-dependent control flow gives
  dense-total  a dense SwiGLU model as large as the mixture (intermediate = E x I)
  dense-active a dense SwiGLU model as large as the k active experts (intermediate = k x I) plus the router
and prints, per format: weight bytes, the projected bytes per decoded token (ModelShape.decode_bytes at the
recipe's bits) and the measured decode tok/s (medians of interleaved rounds, 2 threads by default), with the
load average. The moe row's time should sit at dense-active's, not at dense-total's.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from seqedge.bench.shape import ModelShape
from seqedge.exporters import ExportPlan, export
from seqedge.models import FAMILIES, build_model
from seqedge.models.transformer import SparseMoE
from seqedge.runtimes import open_artifact

sys.path.insert(0, str(Path(__file__).parent))
from common import decode_rate, finish_report, loadavg, threads  # noqa: E402

BITS = {"fp32": 32, "fp16": 16, "int8": 8, "int4": 4.5}


@contextlib.contextmanager
def masked_experts():
    """Exports in this block keep SparseMoE's dense masked form (its experts are not packed into the op)."""
    packed = SparseMoE.fuse_projections
    SparseMoE.fuse_projections = lambda self: None
    try:
        yield
    finally:
        SparseMoE.fuse_projections = packed


def configs(preset: str, overrides: dict) -> dict[str, dict]:
    """Overrides of `preset` for each model (the dense ones drop the experts)."""
    moe = {**FAMILIES["transformer"].presets[preset], **overrides}
    E, k, inner = moe["num_local_experts"], moe.get("num_experts_per_tok", 2), moe["intermediate_size"]
    return {"moe": overrides, "moe-masked": overrides,
            "dense-total": {**overrides, "num_local_experts": 0, "intermediate_size": E * inner},
            "dense-active": {**overrides, "num_local_experts": 0, "intermediate_size": k * inner}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small-moe")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides, e.g. hidden_size=512")
    ap.add_argument("--formats", default="onnx,executorch")
    ap.add_argument("--quant", default="int4")
    ap.add_argument("--models", default="moe,moe-masked,dense-total,dense-active")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    overrides = {k: int(v) for k, v in (s.split("=") for s in args.set)}
    torch.manual_seed(0)
    models = {}
    for name, cfg in configs(args.preset, overrides).items():
        if name not in args.models.split(","):
            continue
        torch.manual_seed(0)
        models[name] = build_model("transformer", args.preset, **cfg).eval()
    results = {"preset": args.preset, "overrides": overrides, "quant": args.quant, "threads": threads(),
               "loadavg_start": loadavg(), "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        folders = {}
        for fmt in args.formats.split(","):
            for name, model in models.items():
                out = Path(tmp) / f"{fmt}-{name}"
                with masked_experts() if name == "moe-masked" else contextlib.nullcontext():
                    m = export(model, ExportPlan(out=out, format=fmt, quant=args.quant, max_len=256, verify_steps=8,
                                                 eval_bytes=256))
                folders[fmt, name] = out
                shape = ModelShape.of_model(model)
                if name == "moe-masked":
                    shape = dataclasses.replace(shape, experts_inactive=0)  # it reads every expert
                results["rows"].append({"format": fmt, "model": name, "weight_bytes": m["quant"]["weight_bytes"],
                                        "projected_bytes_per_token": round(shape.decode_bytes(BITS[args.quant], 16)),
                                        "export_seconds": m["export_seconds"], "tok_s": []})
        torch.set_num_threads(threads())
        for _ in range(args.rounds):  # interleaved: every artifact once per round
            for row in results["rows"]:
                runner = open_artifact(folders[row["format"], row["model"]], threads=threads())
                row["tok_s"].append(round(decode_rate(runner, tokens=args.tokens)["tok_s"], 1))
                runner.close()
    for row in results["rows"]:
        row["tok_s_median"] = statistics.median(row["tok_s"])
    print(f"{'format':<11} {'model':<13} {'weights MB':>10} {'proj. MB/token':>14} {'decode tok/s':>13}  rounds")
    for row in results["rows"]:
        print(f"{row['format']:<11} {row['model']:<13} {row['weight_bytes'] / 1e6:>10.2f} "
              f"{row['projected_bytes_per_token'] / 1e6:>14.2f} {row['tok_s_median']:>13.1f}  {row['tok_s']}")
    finish_report(results, args.json)


if __name__ == "__main__":
    main()
