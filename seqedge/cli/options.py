"""Option aliases shared by several commands (HF CLI style)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

UserModel = Annotated[str | None, typer.Option("--model", help="Your own model: package.module:factory "
                      "returning an nn.Module with init_state/prefill/step (weights from --checkpoint).")]
Checkpoint = Annotated[Path | None, typer.Option("--checkpoint", help="Weights for --model: .safetensors, "
                       "or a .pt state dict (loaded with weights_only=True).")]
Force = Annotated[bool, typer.Option("--force", help="Replace the output folder if it exists.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed.")]
MaxSeqLen = Annotated[int | None, typer.Option("--max-seq-len", help="Hugging Face folders: KV-cache length in "
                      "positions (default: max_position_embeddings, at most 2048).")]
