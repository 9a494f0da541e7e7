"""`seqedge build-runner` and `seqedge package`: native builds and the folders app developers take."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from seqedge.cli.app import app
from seqedge.cli.options import Force

console = Console(highlight=False)

ExecutorchWheel = Annotated[Path | None, typer.Option(
    "--executorch-wheel", help="Cross targets: the target's executorch wheel (default: pip download the installed "
    "version's wheel for the target once, cached).")]


def _say(line: str) -> None:
    console.print(escape(line))


@app.command("build-runner")
def build_runner_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder for seqedge_runner, libseqedge.so and the libraries "
                                      "they load (found next to them: $ORIGIN).")],
    target: Annotated[str, typer.Option("--target", help="host, or a cross target: aarch64-linux-gnu.")] = "host",
    executorch_wheel: ExecutorchWheel = None,
    tokenizers: Annotated[bool | None, typer.Option(
        "--tokenizers/--no-tokenizers", help="Link the C++ HF tokenizer (real models' tokenizer.json); default: "
        "when its source is present (make fetch-tokenizers).", show_default=False)] = None,
) -> None:
    """Build the native runner bundle (C++, ExecuTorch Module API) with cmake, for this machine or cross-compiled."""
    from seqedge.native import FETCH_TOKENIZERS, TARGETS, build_runner, tokenizers_source

    spec = TARGETS[target]  # an unknown target fails here, naming the valid ones
    with_tok = tokenizers if tokenizers is not None else tokenizers_source() is not None
    with console.status(f"building runtimes/native for {spec.name} with cmake…" +
                        (" (first build with the tokenizer: minutes)" if with_tok else "")):
        runner = build_runner(out, tokenizers=tokenizers, target=target, executorch_wheel=executorch_wheel, say=_say)
    size = sum(p.stat().st_size for p in runner.parent.iterdir() if p.is_file())
    console.print(f"built {escape(str(runner))} for {spec.name} ({size / 1e6:.1f} MB with its libraries): "
                  "seqedge_runner ARTIFACT --prompt TEXT [--chat] --max-new-tokens N")
    if spec.emulator:
        console.print(f"run it here under emulation: {escape(' '.join(spec.emulator))} {escape(str(runner))} ARTIFACT ...")
    if not with_tok:
        console.print(f"byte-level models only (no C++ tokenizer); for models with a tokenizer.json: {FETCH_TOKENIZERS}")


@app.command("package")
def package_cmd(
    artifact: Annotated[Path, typer.Argument(help="An ExecuTorch artifact folder (seqedge export --format executorch).")],
    target: Annotated[str, typer.Option("--target", help="android, ios or linux-arm64.")],
    out: Annotated[Path, typer.Option("--out", help="The folder to write (the app developer's drop-in).")],
    force: Force = False,
    executorch_wheel: ExecutorchWheel = None,
) -> None:
    """Write the folder an app developer drops into an Android, iOS or arm64 Linux project."""
    from seqedge.apps import APP_TARGETS, PackagePlan, package

    spec = APP_TARGETS[target]
    with console.status(f"packaging {escape(str(artifact))} for {spec.name}…"):
        folder = package(PackagePlan(artifact=artifact, target=target, out=out, force=force,
                                     executorch_wheel=executorch_wheel), say=_say)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    console.print(f"wrote {escape(str(folder))} ({size / 1e6:.1f} MB): {spec.summary}; the steps are in "
                  f"{escape(str(folder / 'README.md'))}")
