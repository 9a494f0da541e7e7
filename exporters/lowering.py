"""A lowering of one seqedge op for one exporter variant (an ONNX flavour or an ExecuTorch method)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from seqedge.registry import Registry


@dataclass(frozen=True)
class Lowering:
    op: str  # "seqedge::selective_scan"
    variant: str  # ONNX: "fused" | "portable"; ExecuTorch: "prefill" | "decode"
    kind: str  # "translation" (onnxscript) | "decomposition" (torch) | "native" (seqedge C++ kernel)
    fn: Callable | None
    summary: str

    @property
    def target(self):
        ns, name = self.op.split("::")
        return getattr(getattr(torch.ops, ns), name).default


class LoweringRegistry(Registry[Lowering]):
    def add_lowering(self, op: str, variant: str, kind: str, summary: str, fn: Callable | None = None) -> None:
        self.add(f"{op}:{variant}", Lowering(op, variant, kind, fn, summary))

    def for_variant(self, variant: str) -> list[Lowering]:
        return [lw for _, lw in self.items() if lw.variant == variant]
