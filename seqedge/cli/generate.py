"""`seqedge generate`: generate text from a checkpoint, a user model, or an exported artifact."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from seqedge.cli.app import app
from seqedge.cli.options import Checkpoint, Seed, UserModel
from seqedge.diagnostics import stage
from seqedge.generate import generate
from seqedge.loading import load_runnable


@app.command("generate")
def generate_cmd(
    target: Annotated[Path | None, typer.Argument(help="Checkpoint folder or exported artifact folder.")] = None,
    prompt: Annotated[str, typer.Option(help="Prompt text (bytes are the tokens).")] = "def ",
    max_new_tokens: Annotated[int, typer.Option(help="Bytes to generate.")] = 128,
    temperature: Annotated[float, typer.Option(help="0 = greedy; > 0 samples.")] = 0.0,
    user_model: UserModel = None,
    checkpoint: Checkpoint = None,
    threads: Annotated[int, typer.Option(help="Threads for an artifact's runtime.")] = 2,
    seed: Seed = 0,
) -> None:
    """Generate text (greedy by default) and print it: prompt followed by the continuation, as raw bytes."""
    with stage("generation", str(target or user_model)):
        model = load_runnable(target, user_model=user_model, checkpoint=checkpoint, threads=threads)
        out = generate(model, prompt.encode(), max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    sys.stdout.flush()
    sys.stdout.buffer.write(prompt.encode() + out + b"\n")  # raw bytes: the model's tokens are bytes
    sys.stdout.buffer.flush()
