"""`seqedge train`: train a byte-level model on local text and save a checkpoint folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from seqedge.checkpoint import save_checkpoint
from seqedge.cli.app import app
from seqedge.cli.options import Force, Seed
from seqedge.data import load_corpus
from seqedge.fsutil import check_output_folder
from seqedge.models import DEFAULT_FAMILY, FAMILIES
from seqedge.train import TrainPlan, train

console = Console()


@app.command("train")
def train_cmd(
    out: Annotated[Path, typer.Option("--out", help="Checkpoint folder to write (must not exist).")],
    family: Annotated[str, typer.Option(help=f"Model family: {', '.join(FAMILIES.names())}.")] = DEFAULT_FAMILY,
    preset: Annotated[str, typer.Option(help="Size preset of the family (tiny, small, ...).")] = "small",
    data: Annotated[list[Path] | None, typer.Option("--data", help="Text files or folders (repeatable); "
                    "default: the Python standard library's .py files.")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps (default 300 when --minutes is not given).")] = None,
    minutes: Annotated[float | None, typer.Option(help="Wall-clock training budget in minutes.")] = None,
    batch_size: Annotated[int, typer.Option(help="Sequences per step.")] = 16,
    seq_len: Annotated[int, typer.Option(help="Bytes per sequence.")] = 256,
    seed: Seed = 0,
    force: Force = False,
) -> None:
    """Train a byte-level language model on local text; writes config.json, model.safetensors, train_report.json."""
    plan = TrainPlan(family=family, preset=preset, data=list(data or []), steps=steps, minutes=minutes,
                     seed=seed, batch_size=batch_size, seq_len=seq_len)
    plan.validate()
    FAMILIES[family].config(preset)  # fail on a bad name before reading the corpus
    check_output_folder(out, force, inputs=tuple(plan.data))  # fail before training, not after
    corpus = load_corpus(plan.data)  # corpus errors before the progress bar starts
    console.print(f"corpus: {corpus.describe()}")
    columns = [TextColumn("[bold]train[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.3f} bits/byte · {task.fields[tps]:,.0f} tok/s"), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"{family}/{preset}", total=steps or (None if minutes else 300), loss=0.0, tps=0.0)

        def on_step(step, total, loss, tps):
            progress.update(task, completed=step, loss=loss / 0.6931471805599453, tps=tps)

        model, report = train(plan, corpus=corpus, on_step=on_step)
    save_checkpoint(model, out, report, force=force)
    console.print(f"held-out bits per byte: [bold]{report['held_out_bits_per_byte']:.3f}[/] "
                  f"after {report['steps']} steps in {report['seconds']:.0f} s "
                  f"({report['parameters'] / 1e6:.2f} M parameters) → {out}")
    console.print_json(json.dumps(report))
