"""Issue 3 figures: ONNX export time and node count, decode and prefill speed of the shapes
`mamba-130m` and `llama-135m` (random weights, fp32, batch 1, 2 threads).

    .venv/bin/python benchmarks/onnx_speed.py [--quick] [--json out.json]

Compares, in one run: onnxruntime `fused` vs `portable` artifacts vs seqedge's PyTorch eager `step`
vs Hugging Face transformers eager `generate` (when the `hf` extra is installed), and states decode
as a fraction of the memory-bandwidth limit (streamed weight bytes per token ÷ measured copy bandwidth).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    LastOnly,
    copy_bandwidth_gbs,
    decode_rate,
    finish_report,
    loadavg,
    prefill_seconds,
    streamed_weight_bytes,
    threads,
)

from seqedge.exporters import ExportPlan, export  # noqa: E402
from seqedge.models import build_model  # noqa: E402
from seqedge.runtimes import open_artifact  # noqa: E402

SHAPES = {"mamba-130m": "mamba", "llama-135m": "transformer"}


def hf_decode(family: str, cfg, tokens: int) -> float | None:
    try:
        import transformers
    except ImportError:
        return None
    if family == "mamba":
        hf_cfg = transformers.MambaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, state_size=cfg.state_size,
                                          num_hidden_layers=cfg.num_hidden_layers, expand=cfg.expand,
                                          conv_kernel=cfg.conv_kernel)
        model = transformers.MambaForCausalLM(hf_cfg).eval()
    else:
        hf_cfg = transformers.LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                                          num_hidden_layers=cfg.num_hidden_layers,
                                          num_attention_heads=cfg.num_attention_heads,
                                          num_key_value_heads=cfg.num_key_value_heads,
                                          intermediate_size=cfg.intermediate_size, tie_word_embeddings=True)
        model = transformers.LlamaForCausalLM(hf_cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, 16))
    with torch.no_grad():
        model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    return tokens / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer tokens and lengths")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(threads())
    n_tok = 32 if args.quick else 64
    lengths = [256, 1024] if args.quick else [256, 1024, 4096]
    bw = copy_bandwidth_gbs(threads=threads())
    results = {"threads": threads(), "copy_bandwidth_gbs": round(bw, 2), "loadavg_start": loadavg(), "shapes": {}}
    print(f"copy bandwidth {bw:.1f} GB/s · threads {threads()} · loadavg {loadavg()}")
    work = Path(tempfile.mkdtemp(prefix="seqedge-bench-"))
    for preset, family in SHAPES.items():
        torch.manual_seed(0)
        model = build_model(family, preset).eval()
        row = {"streamed_weight_mb": round(streamed_weight_bytes(model) / 1e6, 1)}
        limit = bw * 1e9 / streamed_weight_bytes(model)  # tokens/s if every token streams the weights once
        row["bandwidth_limit_tok_s"] = round(limit, 1)
        for flavour in ("fused", "portable"):
            t0 = time.perf_counter()
            man = export(model, ExportPlan(out=work / f"{preset}-{flavour}", ops=flavour, verify_steps=8,
                                           threads=threads(), source={"kind": "preset", "family": family,
                                                                      "preset": preset, "seed": 0}))
            total = time.perf_counter() - t0
            runner = open_artifact(work / f"{preset}-{flavour}", threads=threads())
            d = decode_rate(runner, tokens=n_tok, vocab=model.config.vocab_size)
            row[flavour] = {"export_s": man["export_seconds"], "export_and_verify_s": round(total, 1),
                            "node_count": man["node_count"],
                            "onnx_mb": round((work / f"{preset}-{flavour}" / "model.onnx").stat().st_size / 1e6, 1),
                            "decode_tok_s": round(d["tok_s"], 1), "decode_ms_p50": round(d["ms_p50"], 2),
                            "decode_fraction_of_bw_limit": round(d["tok_s"] / limit, 2)}
            if family == "mamba":
                pre = {T: prefill_seconds(runner, T, vocab=model.config.vocab_size) for T in lengths}
                row[flavour]["prefill_tok_s"] = {T: round(T / s, 1) for T, s in pre.items()}
                row[flavour]["prefill_time_ratio_vs_256"] = {T: round(s / pre[lengths[0]], 2) for T, s in pre.items()}
            print(preset, flavour, json.dumps(row[flavour]))
            runner.close()
        d = decode_rate(LastOnly(model), tokens=n_tok, vocab=model.config.vocab_size)
        row["torch_eager_decode_tok_s"] = round(d["tok_s"], 1)
        hf = hf_decode(family, model.config, n_tok)
        row["hf_transformers_decode_tok_s"] = round(hf, 1) if hf else "not installed (pip install -e '.[hf]')"
        print(preset, "eager", row["torch_eager_decode_tok_s"], "hf", row["hf_transformers_decode_tok_s"],
              "bandwidth limit", row["bandwidth_limit_tok_s"])
        results["shapes"][preset] = row
    finish_report(results, args.json)


if __name__ == "__main__":
    main()
