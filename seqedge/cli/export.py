"""`seqedge export`, `seqedge verify`, `seqedge inspect`: artifacts and their manifests."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from seqedge.cli.app import app
from seqedge.cli.options import Checkpoint, Force, MaxSeqLen, Seed, UserModel
from seqedge.diagnostics import stage_clock
from seqedge.errors import MAX_THREADS, BadInputError, UnsupportedError, check_range
from seqedge.exporters import FORMATS, ExportPlan, export
from seqedge.exporters.artifact import read_manifest
from seqedge.exporters.plan import KV_CACHE_TYPES
from seqedge.exporters.verify import verify_artifact
from seqedge.fsutil import check_output_folder
from seqedge.ingest.hf import has_family
from seqedge.loading import load_exportable, load_model, model_from_source, model_source, tokenizer_source
from seqedge.quant import RECIPES

console = Console()


@app.command("export")
def export_cmd(
    target: Annotated[Optional[Path], typer.Argument(help="Checkpoint folder (or use --family/--preset).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Artifact folder to write.")] = Path("artifact"),
    fmt: Annotated[Optional[str], typer.Option("--format", help=f"Artifact format: {', '.join(FORMATS.names())} "
                                               "(default: onnx, or what --device selects).")] = None,
    ops: Annotated[Optional[str], typer.Option("--ops", help="ONNX lowerings: fused (onnxruntime>=1.31 contrib "
                                               "kernels) or portable (standard ONNX ops).")] = None,
    backend: Annotated[str, typer.Option("--backend", help="ExecuTorch: xnnpack (delegate) or portable "
                                         "(ExecuTorch's CPU kernels only).")] = "xnnpack",
    kv_cache: Annotated[Optional[str], typer.Option("--kv-cache", help="Attention KV caches where seqedge's "
                                                    "kernels hold them (ExecuTorch; ONNX fused on a CPU): float16 "
                                                    "(half their memory and the bytes a step reads; the default of "
                                                    "quantized recipes, as llama.cpp) or float32 (unrounded; the "
                                                    "default of fp32).")] = None,
    max_len: Annotated[Optional[int], typer.Option("--max-len", help="ExecuTorch: longest prefill the program "
                                                   "takes (default: the model's max_seq_len, else 4096).")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="Device profile (name, `host` or .toml): "
                                                  "format/quant/lowerings follow its top runtime choice unless "
                                                  "given explicitly.")] = None,
    unit: Annotated[Optional[str], typer.Option("--unit", help="With --device: take the best option on this compute "
                                                "unit (cpu, gpu, npu) instead of the best overall.")] = None,
    static_chunk: Annotated[Optional[int], typer.Option("--static-chunk", help="ONNX: static-shape graphs for NPUs "
                                                        "(prefill chunks of this many tokens + a decode step; "
                                                        "--device with an NPU sets 128).")] = None,
    quant: Annotated[Optional[str], typer.Option("--quant", help=f"Quantization recipe: {', '.join(RECIPES.names())} "
                                                 "(default fp32, or what --device selects).")] = None,
    group_size: Annotated[Optional[int], typer.Option("--group-size", help="int4 group size: 32 (default), 64 "
                                                      "or 128.")] = None,
    calibration: Annotated[Optional[Path], typer.Option("--calibration", help="int8-static: sample text file "
                                                        "(default: the held-out corpus).")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Fail if the recipe leaves any weight matrix in "
                                         "float.")] = False,
    max_bpb_increase: Annotated[Optional[float], typer.Option("--max-bpb-increase", help="Fail if held-out "
                                                              "bits/byte rises more than this (relative; default "
                                                              "int8 0.01, int4 0.05).")] = None,
    family: Annotated[Optional[str], typer.Option(help="Export a freshly initialised model of this family.")] = None,
    preset: Annotated[Optional[str], typer.Option(help="Preset for --family (default tiny).")] = None,
    max_seq_len: MaxSeqLen = None,
    user_model: UserModel = None,
    checkpoint: Checkpoint = None,
    via: Annotated[str, typer.Option("--via", help="Hugging Face folders: seqedge (its own families and fused "
                                     "ops), optimum (optimum-onnx's graph, ONNX only), or auto (seqedge when it has "
                                     "a family for the architecture, else optimum).")] = "auto",
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip the parity check (not recommended).")] = False,
    threads: Annotated[int, typer.Option(help="Threads for the verification run.")] = 2,
    jobs: Annotated[Optional[int], typer.Option("--jobs", help="ExecuTorch: processes that lower the XNNPACK "
                                                "partitions in parallel (default: this machine's cores, at most "
                                                "8; 1: all in this process).")] = None,
    seed: Seed = 0,
    force: Force = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Print what each stage of the export cost "
                                          "(seconds).")] = False,
) -> None:
    """Export a model to an artifact folder (graph + manifest.json), verified against PyTorch."""
    if target is None and not family and not user_model:
        raise BadInputError("nothing to export", "pass a checkpoint folder, --family F --preset P, or --model")
    if via not in VIAS:
        raise BadInputError(f"unknown --via {via!r}", f"valid: {', '.join(VIAS)}")
    if kv_cache is not None and kv_cache not in KV_CACHE_TYPES:
        raise BadInputError(f"unknown --kv-cache {kv_cache!r}", f"valid: {', '.join(KV_CACHE_TYPES)}")
    check_range("--threads", threads, 1, MAX_THREADS)
    if jobs is not None:
        check_range("--jobs", jobs, 1, MAX_THREADS, "e.g. --jobs 2")
    if max_len is not None:
        check_range("--max-len", max_len, 2, 1 << 20, "e.g. --max-len 1024")
    if max_seq_len is not None:
        check_range("--max-seq-len", max_seq_len, 2, 1 << 20, "e.g. --max-seq-len 1024")
    if max_bpb_increase is not None:
        check_range("--max-bpb-increase", max_bpb_increase, 0.0, 10.0, "e.g. --max-bpb-increase 0.05")
    if static_chunk is not None:
        check_range("--static-chunk", static_chunk, 2, 4096, "e.g. --static-chunk 128")
    if unit is not None and not device:
        raise BadInputError("--unit picks among a device's options", "pass --device too (e.g. --device galaxy-s24 --unit npu)")
    check_output_folder(out, force, inputs=(target, checkpoint, calibration))  # before minutes of work
    if via == "optimum" or (via == "auto" and target is not None and has_family(target) is False):
        return _export_via_optimum(target, via, out, fmt, quant, group_size, max_bpb_increase, device, no_verify,
                                   threads, force)
    t0 = time.perf_counter()
    model = load_exportable(target, user_model, checkpoint, family, preset, seed, max_seq_len)
    loaded = time.perf_counter() - t0
    target_info, soc = None, None
    if device:
        choice = choose_runtime(device, model, unit)
        fmt, quant = fmt or choice.format, quant or choice.quant
        if choice.static_chunk:
            static_chunk, soc = static_chunk or choice.static_chunk, choice.soc
        else:
            ops = ops or choice.ops_flavour
        target_info = {"device": device, **choice.to_json()}
        console.print(f"[bold]{device}[/]: {choice.reason}")
    fmt, ops, quant = fmt or "onnx", ops or "fused", quant or "fp32"
    if static_chunk and fmt != "onnx":
        raise BadInputError(f"--static-chunk makes ONNX graphs, not {fmt}", "pass --format onnx")
    FORMATS[fmt]
    plan = ExportPlan(out=out, format=fmt, ops=ops, backend=backend, kv_cache=kv_cache, max_len=max_len, force=force,
                      quant=quant,
                      group_size=group_size, calibration=calibration, strict=strict, max_bpb_increase=max_bpb_increase,
                      verify=not no_verify, threads=threads, jobs=jobs,
                      source=model_source(target, user_model, checkpoint, family, preset, seed, max_seq_len),
                      target=target_info, tokenizer_dir=tokenizer_source(target), static_chunk=static_chunk,
                      qnn=soc)
    with console.status(f"exporting to {fmt} ({quant}) and verifying…"), stage_clock() as stages:
        manifest = export(model, plan)
    _report(out, manifest)
    if verbose:
        _print_stages([{"stage": "loading the model", "seconds": round(loaded, 3), "depth": 0}, *stages],
                      time.perf_counter() - t0)


def _print_stages(stages: list[dict], total: float) -> None:
    table = Table("stage", "seconds", box=None, pad_edge=False)
    for s in stages:
        table.add_row("  " * s["depth"] + s["stage"], f"{s['seconds']:.2f}")
    table.add_row("[bold]total[/]", f"[bold]{total:.2f}[/]")
    console.print(table)


def _report_htp(qnn: dict) -> None:
    for graph, g in qnn["graphs"].items():
        cpu = "; ".join(f"{c['count']} {c['op']} ({c['why']})" for c in g["cpu"]) or "none"
        size = sum(g["context_binaries"].values()) / 1e6
        console.print(f"HTP (htp_arch {qnn['htp_arch']}, soc_model {qnn['soc_model']}) {graph}: {g['htp_nodes']} nodes "
                      f"on the HTP, on the CPU: {cpu} · context binary {size:.2f} MB")
    if "emulator" in qnn:
        e = qnn["emulator"]
        console.print(f"on the HTP emulator: mean KL {e['parity']['mean_kl']:.2e} nats, bits/byte {e['bpb_htp']} "
                      f"(CPU-QDQ {e['bpb_cpu_qdq']}, fp32 {e['bpb_fp32']}; {e['eval_tokens']} tokens) · max |Δ| "
                      f"HTP vs CPU-QDQ {e['max_abs_diff_htp_vs_cpu_qdq']:.2e}")


def _report(out: Path, manifest: dict) -> None:
    if "qnn" in manifest:
        _report_htp(manifest["qnn"])
    parity, q = manifest["parity"], manifest["quant"]
    size = f"{manifest['node_count']} nodes" if "node_count" in manifest else f"{manifest['program_bytes'] / 1e6:.1f} MB"
    console.print(f"[bold green]exported[/] {out} · {size} · {manifest['export_seconds']} s")
    if "bpb" in q:
        console.print(f"quant {q['recipe']}: {q['weight_bytes'] / 1e6:.2f} MB ({q['size_ratio']:.2f}× fp32, "
                      f"{q['bits_per_weight']:.2f} bits/weight) · held-out bits/byte {q['bpb_fp32']} → {q['bpb']} "
                      f"({q['bpb_increase']:+.2%}"
                      + (f"; {q['baseline']} on the same weights {q['bpb_increase_baseline']:+.2%}" if "baseline" in q else "")
                      + f") · top-1 agreement {q['top1_agreement']:.1%}"
                      + (f" · {len(q['skipped'])} matrices left float (see manifest)" if q["skipped"] else ""))
    if parity:
        console.print(f"parity: prefill max |Δ| {parity['prefill_max_abs_diff']:.2e}, decode max |Δ| "
                      f"{parity['max_abs_diff']:.2e} over {parity['steps']} steps, "
                      f"token agreement {parity['token_agreement']:.1%}, mean KL {parity['mean_kl']:.2e} nats"
                      + (f" ({parity['baseline']} on the same weights: {parity['baseline_mean_kl']:.2e})"
                         if parity.get("baseline_mean_kl") is not None else ""))


VIAS = ("auto", "seqedge", "optimum")


def _export_via_optimum(target, via, out, fmt, quant, group_size, max_bpb_increase, device, no_verify, threads, force):
    from seqedge.exporters.optimum import export_via_optimum

    if target is None or has_family(target) is None:
        raise BadInputError(f"--via {via} takes a Hugging Face folder", "pass the folder holding config.json")
    if device:
        raise BadInputError("--device selection needs a seqedge family", "pass --format onnx and --quant instead")
    plan = ExportPlan(out=out, format=fmt or "onnx", quant=quant or "fp32", group_size=group_size,
                      max_bpb_increase=max_bpb_increase, verify=not no_verify, threads=threads, force=force,
                      source={"kind": "transformers", "path": str(Path(target).resolve())},
                      tokenizer_dir=tokenizer_source(target))
    with console.status(f"exporting through optimum-onnx ({plan.quant}) and verifying…"):
        manifest = export_via_optimum(Path(target), plan)
    _report(out, manifest)


@app.command("verify")
def verify_cmd(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder.")],
    against: Annotated[Optional[Path], typer.Option(help="Checkpoint to compare with (default: the manifest's "
                                                   "source).")] = None,
    steps: Annotated[int, typer.Option(help="Greedy decode steps after the prefill (0: the prefill only).")] = 64,
    threads: Annotated[int, typer.Option(help="Runtime threads.")] = 2,
    user_model: Annotated[Optional[str], typer.Option("--model", help="Your model factory package.module:factory "
                                                      "(an artifact's own record of it is never imported).")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="With --model: its weights.")] = None,
) -> None:
    """Re-run the parity check of an artifact against its PyTorch model."""
    check_range("--steps", steps, 0, 1 << 16, "e.g. --steps 64 (0: the prefill only)")
    check_range("--threads", threads, 1, MAX_THREADS)
    manifest = read_manifest(artifact)
    if user_model:
        model = load_model(user_model=user_model, checkpoint=checkpoint)
    else:
        model = load_model(against) if against else model_from_source(manifest.get("source") or {})
    parity = verify_artifact(artifact, model, steps=steps, threads=threads)
    table = Table(title=f"parity of {artifact} ({manifest['format']})")
    for col in ("output", "max abs diff", "tolerance", "ok"):
        table.add_column(col)
    gated = lambda v, fmt: f"≤ {v:{fmt}}" if v is not None else "reported"  # noqa: E731
    table.add_row("logits (prefill)", f"{parity['prefill_max_abs_diff']:.2e}", gated(parity["tolerance"], "g"), "✓")
    table.add_row(f"logits ({steps} decode steps)", f"{parity['max_abs_diff']:.2e}", gated(parity["tolerance"], "g"), "✓")
    table.add_row("greedy tokens", f"{parity['token_agreement']:.1%} agree", "reported" if parity[
        "min_token_agreement"] is None else f"≥ {parity['min_token_agreement']:.0%}", "✓")
    table.add_row("mean KL (nats/token)", f"{parity.get('mean_kl', 0):.2e}", gated(parity.get("max_mean_kl"), "g"), "✓")
    if parity.get("baseline_mean_kl") is not None:
        table.add_row(f"  {parity['baseline']} grid, same weights", f"{parity['baseline_mean_kl']:.2e}", "reference", "")
    console.print(table)


@app.command("inspect")
def inspect_cmd(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Show an artifact's manifest: format, ops and lowerings, interface, state, files, parity."""
    manifest = read_manifest(artifact)
    if as_json:
        typer.echo(json.dumps(manifest, indent=2))
        return
    table = Table(title=str(artifact), show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key in ("format", "family", "flavour", "backend", "seqedge_version", "requires", "max_seq_len",
                "max_prefill_len", "node_count", "program_bytes", "export_seconds", "graph_note"):
        if key in manifest:
            table.add_row(key, str(manifest[key]))
    table.add_row("quant", json.dumps(manifest["quant"]))
    table.add_row("ops", "\n".join(f"{o['op']} → {o['lowering']}" for o in manifest["ops"]) or "-")
    for key in ("inputs", "outputs"):
        table.add_row(key, "\n".join(f"{s['name']} {s['dtype']} {s['shape']}" for s in manifest[key][:6])
                      + (f"\n… {len(manifest[key]) - 6} more" if len(manifest[key]) > 6 else ""))
    for method, d in (manifest.get("delegation") or {}).items():
        outside = ", ".join(f"{x['op']}×{x['count']}" for x in d["not_delegated"][:6])
        table.add_row(f"delegation ({method})", f"{d['delegated_nodes']}/{d['total_nodes']} nodes in "
                      f"{manifest.get('backend')} ({d['delegated_share']:.0%}); outside: {outside or '-'}")
    if manifest.get("target"):
        table.add_row("target", f"{manifest['target'].get('device')}: {manifest['target'].get('reason', '')}")
    tok = manifest.get("tokenizer") or {"kind": "bytes"}
    table.add_row("tokenizer", "bytes (byte-level model)" if tok.get("kind") == "bytes" else
                  f"{tok.get('file')} · {tok.get('vocab_size')} tokens · EOS {tok.get('eos_ids')} · chat template "
                  f"{'yes' if tok.get('chat_template') else 'no'}")
    if manifest.get("warnings"):
        table.add_row("warnings", "\n".join(manifest["warnings"]))
    table.add_row("files", "\n".join(f"{n} {d[:12]}…" for n, d in manifest["files"].items()))
    parity = manifest.get("parity")
    table.add_row("parity", "not verified" if not parity else
                  f"max |Δ| {parity['max_abs_diff']:.2e}, tokens {parity['token_agreement']:.1%} over {parity['steps']} steps")
    console.print(table)


def choose_runtime(device: str, model, unit: str | None = None):
    from seqedge.profiles import load_profile
    from seqedge.select import ModelFacts, select

    sel = select(load_profile(device), ModelFacts.of_model(model))
    candidates = [c for c in sel.candidates if unit is None or c.unit == unit]
    if not candidates:
        rejected = [r for r in sel.rejected if unit is None or r.unit == unit]
        reasons = "; ".join(f"{r.unit} {r.runtime}/{r.backend}: {r.reason}" for r in rejected[:4])
        where = f"the {unit} of {device}" if unit else device
        raise UnsupportedError(f"no runtime on {where} can run this model ({reasons or 'no such unit'})",
                               f"see `seqedge select --device {device}`")
    return candidates[0]
