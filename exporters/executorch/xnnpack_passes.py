"""Lowering to XNNPACK without the passes that cannot apply.

XNNPACK's `preprocess` runs its whole pass list (17 passes) on every partition the partitioner hands it, and each
pass re-traces the partition with fake tensors. A transformer's custom attention and cache ops cut each layer into
several partitions, so a 30-layer model's two methods cost hundreds of partitions x 17 re-traces: most of the
ExecuTorch export time. A pass whose target ops a partition does not contain cannot change it (the upsampling and
SDPA pattern matchers, batch norm, PReLU, padding, conv1d, activation fusion): those are skipped for that
partition, the others run as before, in order.

    with relevant_xnnpack_passes():
        edge = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()])

`tests/test_executorch_export.py::test_skipping_inapplicable_xnnpack_passes_changes_nothing` checks that the
program is byte-identical with and without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

# pass class name -> substrings of edge op names; the pass runs only when one of them is in the partition
APPLIES_TO = {
    "ConvertToUpsampleBilinear2d": ("upsample", "index.Tensor", "_unsafe_index"),
    "ConvertToSDPAPass": ("softmax",),
    "FuseBatchNormPass": ("batch_norm",),
    "DecomposeBatchNorm": ("batch_norm",),
    "FuseActivationPass": ("relu", "hardtanh"),
    "InsertPadQDQPass": ("pad",),
    "Conv1dUnsqueezePass": ("convolution",),
    "PReLUReshapePass": ("prelu",),
    "DecomposeConcatenate": ("cat.default",),
}


def _ops(exported_program) -> set[str]:
    return {str(getattr(n.target, "__name__", n.target)) for n in exported_program.graph.nodes
            if n.op == "call_function"}


def needed(passes: list, ops: set[str]) -> list:
    """`passes` without those whose target ops are not among `ops`."""
    keep = []
    for p in passes:
        targets = APPLIES_TO.get(p.__name__)
        if targets is None or any(t in op for op in ops for t in targets):
            keep.append(p)
    return keep


@contextlib.contextmanager
def relevant_xnnpack_passes() -> Iterator[None]:
    """While active, XNNPACK's pass manager drops the passes `needed` rules out for the partition it gets."""
    from executorch.backends.xnnpack._passes import XNNPACKPassManager

    original = XNNPACKPassManager.__init__

    def __init__(self, exported_program, passes=None):
        original(self, exported_program, passes)
        self.passes = needed(self.passes, _ops(exported_program))

    XNNPACKPassManager.__init__ = __init__
    try:
        yield
    finally:
        XNNPACKPassManager.__init__ = original
