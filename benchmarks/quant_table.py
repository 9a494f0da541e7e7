"""Quantization table: family x format x recipe -> size, bits/weight, held-out bits/byte and its increase,
greedy token agreement, decode tokens/s; on trained `small` checkpoints (accuracy) and on the
`mamba-130m` / `llama-135m` shapes (size and speed, random weights).

    .venv/bin/python benchmarks/quant_table.py [--checkpoints DIR] [--train-minutes 2] [--json out.json]
        [--families transformer,mamba,lstm,gru] [--shapes mamba-130m,llama-135m] [--skip-small]
        [--formats onnx,executorch]

Checkpoints missing from DIR are trained first (`seqedge train --preset small`). All timings use
SEQEDGE_BENCH_THREADS threads (default 2); compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import copy_bandwidth_gbs, decode_rate, finish_report, loadavg, threads  # noqa: E402

from seqedge.checkpoint import load_model, save_checkpoint  # noqa: E402
from seqedge.errors import SeqedgeError  # noqa: E402
from seqedge.exporters import ExportPlan, export  # noqa: E402
from seqedge.models import build_model  # noqa: E402
from seqedge.runtimes import open_artifact  # noqa: E402
from seqedge.train import TrainPlan, train  # noqa: E402

SMALL = {"onnx": ("fp32", "fp16", "int8", "int4", "int8-static"), "executorch": ("fp32", "int4")}
SHAPES = {"mamba-130m": ("mamba", "mamba-130m"), "llama-135m": ("transformer", "llama-135m")}
SHAPE_RECIPES = {"onnx": ("fp32", "int8", "int4"), "executorch": ("fp32", "int4")}


def row(model, out: Path, fmt: str, recipe: str, eval_bytes: int, tokens: int, verify: bool = True) -> dict:
    """One export (accuracy measured when `verify`; random-weight shapes are for size and speed only)."""
    t0 = time.perf_counter()
    try:
        man = export(model, ExportPlan(out=out, format=fmt, quant=recipe, verify=verify, verify_steps=64,
                                       eval_bytes=eval_bytes, threads=threads(), max_bpb_increase=1.0,
                                       max_len=1024 if fmt == "executorch" else None))
    except SeqedgeError as e:
        return {"error": e.message}
    q, parity = man["quant"], man["parity"] or {}
    runner = open_artifact(out, threads=threads())
    try:
        tok_s = decode_rate(runner, tokens=tokens, vocab=model.config.vocab_size)["tok_s"]
    finally:
        runner.close()
    return {"export_s": round(time.perf_counter() - t0, 1), "mb": round(q["weight_bytes"] / 1e6, 2),
            "size_ratio": q["size_ratio"], "bits_per_weight": q["bits_per_weight"], "bpb_fp32": q.get("bpb_fp32"),
            "bpb": q.get("bpb"), "bpb_increase": q.get("bpb_increase"), "top1_agreement": q.get("top1_agreement"),
            "token_agreement": parity.get("token_agreement"), "skipped": len(q["skipped"]),
            "decode_tok_s": round(tok_s, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoints", type=Path, default=Path.home() / ".cache" / "seqedge" / "bench-checkpoints")
    ap.add_argument("--train-minutes", type=float, default=2.0)
    ap.add_argument("--families", default="transformer,mamba,lstm,gru")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--skip-small", action="store_true")
    ap.add_argument("--formats", default="onnx,executorch")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(threads())
    bw = copy_bandwidth_gbs(threads=threads())
    results = {"threads": threads(), "copy_bandwidth_gbs": round(bw, 2), "loadavg_start": loadavg(), "small": {},
               "shapes": {}}
    print(f"copy bandwidth {bw:.1f} GB/s · threads {threads()} · loadavg {loadavg()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="seqedge-quant-"))
    for fam in ([] if args.skip_small else args.families.split(",")):
        ckpt = args.checkpoints / fam
        if not (ckpt / "config.json").is_file():
            print(f"training {fam} small for {args.train_minutes} min", flush=True)
            model, report = train(TrainPlan(family=fam, preset="small", minutes=args.train_minutes))
            save_checkpoint(model, ckpt, report=report)
        model = load_model(ckpt).eval()
        for fmt, recipes in ((f, SMALL[f]) for f in args.formats.split(",")):
            for recipe in recipes:
                r = row(model, work / f"{fam}-{fmt}-{recipe}", fmt, recipe, eval_bytes=2048, tokens=args.tokens)
                results["small"][f"{fam} {fmt} {recipe}"] = r
                print(f"small {fam} {fmt} {recipe}", json.dumps(r), flush=True)
    for name in args.shapes.split(",") if args.shapes else []:
        family, preset = SHAPES[name]
        torch.manual_seed(0)
        model = build_model(family, preset).eval()
        for fmt, recipes in ((f, SHAPE_RECIPES[f]) for f in args.formats.split(",")):
            for recipe in recipes:
                r = row(model, work / f"{name}-{fmt}-{recipe}", fmt, recipe, eval_bytes=64, tokens=args.tokens,
                        verify=False)
                results["shapes"][f"{name} {fmt} {recipe}"] = r
                print(f"shape {name} {fmt} {recipe}", json.dumps(r), flush=True)
    finish_report(results, args.json)


if __name__ == "__main__":
    main()
