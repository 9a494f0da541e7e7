"""`seqedge generate`: generate text from a checkpoint, a user model, or an exported artifact."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from seqedge.cli.app import app
from seqedge.cli.options import Checkpoint, MaxSeqLen, Seed, UserModel
from seqedge.diagnostics import stage
from seqedge.errors import MAX_THREADS, check_range
from seqedge.generate import generate_ids
from seqedge.loading import load_runnable, tokenizer_source
from seqedge.tokenizer import load_tokenizer


@app.command("generate")
def generate_cmd(
    target: Annotated[Path | None, typer.Argument(help="Checkpoint folder (seqedge's or Hugging Face's) or exported "
                                                  "artifact folder.")] = None,
    prompt: Annotated[str, typer.Option(help="Prompt text (tokenized with the model's tokenizer; bytes for "
                                        "byte-level models).")] = "def ",
    chat: Annotated[bool, typer.Option("--chat", help="Send the prompt as a user turn through the model's chat "
                                       "template and print the reply.")] = False,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate (fewer when the model ends with EOS).")] = 128,
    temperature: Annotated[float, typer.Option(help="0 = greedy; > 0 samples.")] = 0.0,
    max_seq_len: MaxSeqLen = None,
    user_model: UserModel = None,
    checkpoint: Checkpoint = None,
    threads: Annotated[int, typer.Option(help="Threads for an artifact's runtime.")] = 2,
    seed: Seed = 0,
) -> None:
    """Generate text (greedy by default) and print it: the prompt and its continuation (with --chat, the reply).
    Byte-level models print raw bytes."""
    check_range("--threads", threads, 1, MAX_THREADS)
    check_range("--max-new-tokens", max_new_tokens, 0, 1 << 20, "e.g. --max-new-tokens 64")
    check_range("--temperature", temperature, 0.0, 100.0, "0 is greedy; e.g. --temperature 0.8")
    with stage("generation", str(target or user_model)):
        model = load_runnable(target, user_model=user_model, checkpoint=checkpoint, threads=threads,
                              max_seq_len=max_seq_len)
        tok = load_tokenizer(tokenizer_source(target))
        ids = tok.chat(prompt) if chat else tok.encode(prompt)
        out = generate_ids(model, ids, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                           eos_ids=tok.eos_ids)
    sys.stdout.flush()
    head = b"" if chat else prompt.encode()
    sys.stdout.buffer.write(head + tok.decode_bytes(out) + b"\n")  # byte-level: the model's tokens are bytes
    sys.stdout.buffer.flush()
