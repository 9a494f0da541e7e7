"""What an export should produce: one dataclass shared by every format."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ExportPlan:
    out: Path
    format: str = "onnx"
    ops: str = "fused"  # ONNX lowering flavour: fused | portable
    backend: str = "xnnpack"  # ExecuTorch: xnnpack | portable
    max_len: int | None = None  # ExecuTorch: longest prefill (default: the model's max_seq_len, else 4096)
    quant: str = "fp32"
    force: bool = False
    verify: bool = True
    verify_steps: int = 64
    prompt_bytes: int = 64
    threads: int = 2
    example_len: int = 5  # T of the example input traced with a dynamic length
    source: dict[str, Any] = field(default_factory=dict)  # how to rebuild the PyTorch reference
    target: dict[str, Any] | None = None  # the device profile's selection this export follows
