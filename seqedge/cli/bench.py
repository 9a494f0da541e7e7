"""`seqedge bench TARGET… --device NAME`: measured on the host, projected for the device, measured on an
attached device; a thin wrapper over seqedge.bench.run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from seqedge.cli.app import app
from seqedge.diagnostics import stage
from seqedge.errors import BadInputError
from seqedge.fsutil import check_output_file

console = Console()


def _lengths(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise BadInputError(f"--prompt-lengths {text!r} is not a comma-separated list of integers",
                            "e.g. --prompt-lengths 64,256,1024") from None
    if not out:
        raise BadInputError("--prompt-lengths is empty", "e.g. --prompt-lengths 64,256,1024")
    return out


@app.command("bench")
def bench_cmd(
    targets: Annotated[Optional[list[str]], typer.Argument(
        help="Artifact folder, checkpoint folder, family/preset (e.g. mamba/small, llama-135m) or a config.json "
        "(projections only). Several with --compare.")] = None,
    device: Annotated[str, typer.Option("--device", help="Device profile: a shipped name, `host`, or a .toml.")] = "host",
    quant: Annotated[Optional[str], typer.Option("--quant", help="Recipe to project (and to export with, for "
                                                 "checkpoints/presets); default: the device selection's.")] = None,
    runtime: Annotated[Optional[str], typer.Option("--runtime", help="Only consider this runtime "
                                                   "(onnxruntime, executorch).")] = None,
    prompt_lengths: Annotated[str, typer.Option("--prompt-lengths", help="Prompt lengths and decode contexts, "
                                                "comma-separated.")] = "64,256,1024",
    decode_tokens: Annotated[int, typer.Option("--decode-tokens", help="Decode steps timed per context.")] = 128,
    threads: Annotated[int, typer.Option("--threads", help="Threads used when measuring (on this machine, and on "
                                         "an --adb device); projections use the profile's own.")] = 2,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write every record as JSON.")] = None,
    csv_out: Annotated[Optional[Path], typer.Option("--csv", help="Write every record as CSV.")] = None,
    plot_out: Annotated[Optional[Path], typer.Option("--plot", help="Draw decode ms/token and prefill tok/s "
                                                     "against length (PNG).")] = None,
    adb: Annotated[Optional[str], typer.Option("--adb", help="Also measure on this adb device serial.")] = None,
    runner: Annotated[Optional[Path], typer.Option("--runner", help="seqedge_runner (build-runner): with --adb, "
                                                   "built for the device; alone, timed on this host beside the "
                                                   "Python runtime.")] = None,
    compare: Annotated[bool, typer.Option("--compare", help="Bench several TARGETs side by side.")] = False,
    explain: Annotated[bool, typer.Option("--explain", help="Print the terms of every projection and the "
                                          "calibration error on the published points.")] = False,
    no_host: Annotated[bool, typer.Option("--no-host", help="Skip measuring through the Python runtime on this machine.")] = False,
    peers: Annotated[bool, typer.Option("--peers", help="Also time llama.cpp (F16/Q8_0/Q4_0) on the same shape in "
                                        "this run (built by benchmarks/peers.py).")] = False,
) -> None:
    """How fast is a model on a device: measured here, projected there, measured there when attached."""
    from seqedge.bench.report import busy_notes, plot, table, write_csv, write_json
    from seqedge.bench.run import BenchPlan, bench

    targets = targets or []
    for what, path in (("--json", json_out), ("--csv", csv_out), ("--plot", plot_out)):
        check_output_file(path, what)  # before the benchmark runs, not after
    if len(targets) > 1 and not compare:
        raise BadInputError(f"{len(targets)} TARGETs given without --compare", "add --compare to bench them side "
                            "by side")
    plan = BenchPlan(targets, device, quant, runtime, _lengths(prompt_lengths), decode_tokens, threads, adb, runner,
                     host=not no_host, peers=peers)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=True) as progress:
        task = progress.add_task("benchmarking…", total=None)
        with stage("benchmark", ", ".join(targets)):
            result = bench(plan, on_step=lambda s: progress.update(task, description=s))
    title = (f"{', '.join(targets)} · {result.profile.display_name} · "
             + "; ".join(f"{t.target.name}: {t.candidate.runtime}/{t.candidate.backend} {t.recipe}"
                         for t in result.targets))
    console.print(table(result.records, title))
    console.print("[dim]measured-host: timed on this machine in a child process · projected: calibrated roofline "
                  "for the device, not a measurement · measured-device: timed by the native runner (on the device over "
                  "adb, or here with --runner alone) · "
                  "measured-peer: a peer timed on this machine in the same run[/]")
    for line in busy_notes(result.records):
        console.print(f"[yellow]{line}[/]")
    for t in result.targets:
        _pairs(f"host check for {t.target.name} (projection for this machine vs the measurement):",
               [(c, ("projected", c.projected), ("measured", c.measured), ("error", c.error)) for c in t.checks])
        _pairs(f"native runner vs the Python runtime for {t.target.name} (same prompt tokens, this host):",
               [(c, ("Python", c.python), ("runner", c.runner), ("difference", c.difference)) for c in t.runner_checks])
    if explain:
        from seqedge.bench.roofline import calibration, calibration_errors

        for line in result.explain():
            console.print(line, markup=False)
        for cal in calibration().values():
            console.print(f"calibration {cal.cls}: bandwidth × {cal.bandwidth_efficiency:.3f}, compute × "
                          f"{cal.compute_efficiency:.3f} — {cal.source}", markup=False)
        console.print("published points: in-sample error (fit on all) and leave-one-out error (fit without the "
                      "point — the out-of-sample check):")
        for r in calibration_errors():
            loo = "   n/a" if r["loo_error"] is None else f"{r['loo_error']:+.1%}"
            console.print(f"  {r['id']:<14} {r['metric']:<14} published {r['published']:>9,.2f}  projected "
                          f"{r['projected']:>9,.2f}  in-sample {r['error']:+.1%}  leave-one-out {loo}"
                          + ("" if r["calibrated"] else "  (class uncalibrated)") + f"  ({r['bound']}-bound)",
                          markup=False)
    if json_out:
        write_json(json_out, result.to_json())
    if csv_out:
        write_csv(csv_out, result.records)
    if plot_out:
        plot(plot_out, result.records, title)
    for label, path in (("json", json_out), ("csv", csv_out), ("plot", plot_out)):
        if path:
            console.print(f"wrote {label}: {path}")


def _pairs(title: str, rows: list) -> None:
    """One figure two ways per line: (check, (label, value), (label, value), (label, relative difference))."""
    if rows:
        console.print(title)
    for c, (la, a), (lb, b), (ld, d) in rows:
        console.print(f"  {c.metric:<14} at {c.at:>5}: {la} {a:>9,.1f}  {lb} {b:>9,.1f}  {ld} {d:+.1%}"
                      + (f"  (busy: {c.busy})" if c.busy else ""), markup=False)
