"""Issue 4 figures: ExecuTorch export time, `.pte` size and XNNPACK delegation per method; decode
tokens/s through executorch.runtime and through the native runner, next to the ONNX artifact in
onnxruntime for the same weights; Mamba prefill at T = 256 and 1024 (batch 1, 2 threads).

    .venv/bin/python benchmarks/executorch_speed.py [--shapes mamba-130m,llama-135m,lstm-small,gru-small]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import copy_bandwidth_gbs, decode_rate, loadavg, prefill_seconds, streamed_weight_bytes, threads  # noqa: E402
from seqedge.exporters import ExportPlan, export  # noqa: E402
from seqedge.runtimes import open_artifact  # noqa: E402

from seqedge.models import build_model  # noqa: E402
from seqedge.native import build_native  # noqa: E402

SHAPES = {"mamba-130m": ("mamba", "mamba-130m"), "llama-135m": ("transformer", "llama-135m"),
          "lstm-small": ("lstm", "small"), "gru-small": ("gru", "small")}


def runner_decode(runner_bin: Path, folder: Path, tokens: int) -> float:
    proc = subprocess.run([str(runner_bin), str(folder), "--prompt", "def main(argv):", "--max-new-tokens",
                           str(tokens + 1), "--threads", str(threads()), "--timing"], capture_output=True, text=True,
                          check=True)
    timing = json.loads([line for line in proc.stderr.splitlines() if line.startswith("{")][-1])
    return timing["decode_tok_s"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(threads())
    work = Path(tempfile.mkdtemp(prefix="seqedge-et-"))
    runner_bin = build_native(work / "native") / "seqedge_runner"
    bw = copy_bandwidth_gbs(threads=threads())
    results = {"threads": threads(), "copy_bandwidth_gbs": round(bw, 2), "loadavg_start": loadavg(), "shapes": {}}
    print(f"copy bandwidth {bw:.1f} GB/s · threads {threads()} · loadavg {loadavg()}", flush=True)
    for name in args.shapes.split(","):
        family, preset = SHAPES[name]
        torch.manual_seed(0)
        model = build_model(family, preset).eval()
        vocab = model.config.vocab_size
        row = {"bandwidth_limit_tok_s": round(bw * 1e9 / streamed_weight_bytes(model), 1)}
        t0 = time.perf_counter()
        man = export(model, ExportPlan(out=work / f"{name}-pte", format="executorch", verify_steps=8,
                                       threads=threads()))
        row["executorch"] = {"export_s": man["export_seconds"], "export_and_verify_s": round(time.perf_counter() - t0, 1),
                             "pte_mb": round(man["program_bytes"] / 1e6, 1),
                             "delegated_share": {m: d["delegated_share"] for m, d in man["delegation"].items()}}
        et = open_artifact(work / f"{name}-pte", threads=threads())
        row["executorch"]["decode_tok_s_pybindings"] = round(decode_rate(et, tokens=args.tokens, vocab=vocab)["tok_s"], 1)
        if family == "mamba":
            row["executorch"]["prefill_tok_s"] = {T: round(T / prefill_seconds(et, T, vocab=vocab), 1) for T in (256, 1024)}
        et.close()
        row["executorch"]["decode_tok_s_native_runner"] = round(runner_decode(runner_bin, work / f"{name}-pte",
                                                                              args.tokens), 1)
        man = export(model, ExportPlan(out=work / f"{name}-onnx", format="onnx", verify_steps=8, threads=threads()))
        ort = open_artifact(work / f"{name}-onnx", threads=threads())
        row["onnxruntime_fused_decode_tok_s"] = round(decode_rate(ort, tokens=args.tokens, vocab=vocab)["tok_s"], 1)
        if family == "mamba":
            row["onnxruntime_fused_prefill_tok_s"] = {T: round(T / prefill_seconds(ort, T, vocab=vocab), 1)
                                                      for T in (256, 1024)}
        ort.close()
        print(name, json.dumps(row), flush=True)
        results["shapes"][name] = row
    results["loadavg_end"] = loadavg()
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
