"""`seqedge sweep SWEEP.toml`: models × recipes × formats × devices as Ray tasks; a thin wrapper over
seqedge.sweep (the matrix: sweep/spec.py; the driver: sweep/engine.py; the results: sweep/results.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from seqedge.cli.app import app

console = Console()
FINAL = ("done", "cached", "failed", "skipped")


@app.command("sweep")
def sweep_cmd(
    spec: Annotated[Path, typer.Argument(help="Sweep file (TOML): targets, recipes, formats, devices, "
                                         "prompt_lengths (see seqedge/sweep/spec.py).")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Results folder (default runs/sweep-NAME): "
                                                "artifacts by content, every task's outcome, records.json/csv, "
                                                "summary.md, plots/.")] = None,
    ray_address: Annotated[Optional[str], typer.Option("--ray", help="Run on this Ray cluster (HOST:PORT); "
                                                       "default: a local Ray runtime on this machine's cores.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Finish the sweep in --out whose driver was stopped: "
                                         "only what is missing runs.")] = False,
) -> None:
    """Export, verify and benchmark a matrix of models × recipes × formats × devices, on Ray."""
    from seqedge.sweep.engine import STATES, run_sweep
    from seqedge.sweep.spec import load_sweep

    sweep = load_sweep(spec)
    out = out or Path("runs") / f"sweep-{sweep.name}"
    counts: Counter = Counter()
    state: dict[str, str] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        bar = progress.add_task("starting Ray…", total=None)

        def on_event(task, status: str, detail: str) -> None:
            old = state.get(task.key)
            if old:
                counts[old] -= 1
            state[task.key] = status
            counts[status] += 1
            if status == "failed":
                progress.console.print(f"[red]✗[/] {escape(task.label)}: {escape(detail)}")
            progress.update(bar, completed=sum(counts[s] for s in FINAL), total=len(state),
                            description=" · ".join(f"{s} {counts[s]}" for s in STATES if counts[s]))

        result = run_sweep(sweep, out, ray_address, resume, on_event=on_event)
    _print_summary(result, out)
    if result.failures:
        raise typer.Exit(1)


def _print_summary(result, out: Path) -> None:
    from seqedge.sweep.results import DIGITS, fmt

    table = Table(title=f"sweep {result.sweep.name}: best per device", title_justify="left")
    for col in ("device", "target", "selected", "decode tok/s", "fastest here", "decode tok/s", "MB", "bits/byte"):
        table.add_column(col, overflow="fold")
    rows = result.summary
    for r in rows:
        table.add_row(*(fmt(r.get(k), DIGITS.get(k, 1)) for k in ("device", "target", "choice", "choice_decode_tok_s",
                                                                  "fastest", "fastest_decode_tok_s",
                                                                  "fastest_weight_mb", "fastest_bpb")))
    console.print(table)
    console.print(f"decode tok/s: projected at context {max(result.sweep.prompt_lengths)}; why each choice:")
    for r in rows:
        console.print(f"  {escape(r['device'])} · {escape(r['target'])}: {escape(r.get('reason') or '')}")
    console.print(f"{len(result.tasks)} tasks: {len(result.ran)} run now, {len(result.cached)} done earlier (cached), "
                  f"{len(result.failures)} failed · {result.seconds:.1f} s")
    for task, error in result.failures:
        console.print(f"[red]failed[/] {escape(task.label)}: {escape(error)}")
    console.print(f"results: {out}/summary.md, records.json, records.csv, plots/")
