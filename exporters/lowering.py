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
    uses: tuple = ()  # what it needs of the target runtime (ONNX: ContribUse contracts), checked before use

    @property
    def target(self):
        ns, name = self.op.split("::")
        return getattr(getattr(torch.ops, ns), name).default


class LoweringRegistry(Registry[Lowering]):
    def add_lowering(self, op: str, variant: str, kind: str, summary: str, fn: Callable | None = None,
                     uses: tuple = ()) -> None:
        self.add(f"{op}:{variant}", Lowering(op, variant, kind, fn, summary, uses))

    def for_variant(self, variant: str) -> list[Lowering]:
        return [lw for _, lw in self.items() if lw.variant == variant]


def trace(module, args, dynamic_shapes, lowerings: list[Lowering], rewrites: dict | None = None):
    """torch.export `module` with each `decomposition` lowering (and any extra torch-function rewrites)
    swapped in; returns the program and the lowerings whose op the model actually uses."""
    from seqedge.exporters.decompositions import Substitute

    decomp = {lw.target: lw.fn for lw in lowerings if lw.kind == "decomposition"}
    mode = Substitute({**(rewrites or {}), **decomp})
    with mode:
        ep = torch.export.export(module, args, dynamic_shapes=dynamic_shapes)
    in_graph = {n.target for n in ep.graph.nodes if n.op == "call_function"}
    return ep, [lw for lw in lowerings if lw.target in in_graph or lw.target in mode.seen]
