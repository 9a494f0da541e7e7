"""ExecuTorch's ATen-to-edge passes with each run of adjacent node-by-node passes done in one re-trace.

`to_edge_transform_and_lower` turns a method's ATen graph into the edge dialect with a list of passes
(exir/program/_program.py: `_generate_edge_program`). Seven of them are `ExportPass`es that only override
`call_operator` — each rewrites one node at a time (transpose to t_copy, views to view_copy, scalars to tensors,
SymInts to tensors, mixed dtypes, ATen to edge ops, memory formats to dim orders) — and each re-traces the whole
method with fake tensors, one of the lowering's costliest steps with a dynamic length. A class that inherits from
adjacent ones in order runs them as one chain per node: each pass's `super().call_operator` hands its result to
the next pass instead of the tracer, so one re-trace does what the run did, node for node. Passes that look at
the whole graph (removing no-ops, empty tensors, redundant copies and quantize pairs) stay where they were and
split the runs.

    with fused_edge_passes():
        edge = to_edge_transform_and_lower(programs, partitioner=[...])

`tests/test_executorch_export.py::test_skipping_inapplicable_xnnpack_passes_changes_nothing` checks that the
program is byte-identical with and without it.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator

from torch.fx.passes.infra.pass_base import PassBase, PassResult

# The passes known to work node by node (read in executorch 1.5.1): each overrides `call_operator` only, and
# ScalarToTensorPass also `call`, to report whether it changed something (nothing reads that here)
NODE_LOCAL = ("NormalizeTransposePass", "ReplaceBrokenOpsWithFunctionalOpsPass", "ScalarToTensorPass", "SymToTensorPass",
              "RemoveMixedTypeOperators", "OpReplacePass", "MemoryFormatOpsPass")


def node_local(p) -> bool:
    """One of NODE_LOCAL that, in the installed ExecuTorch, still overrides nothing but `call_operator` (and
    `__init__` without arguments, and `call`)."""
    from executorch.exir.pass_base import ExportPass

    cls = type(p)
    if cls.__name__ not in NODE_LOCAL or not isinstance(p, ExportPass):
        return False
    own = {name for c in cls.__mro__[:cls.__mro__.index(ExportPass)] for name, v in vars(c).items() if callable(v)}
    return "call_operator" in own and own <= {"call_operator", "call", "__init__"} \
        and not inspect.signature(cls).parameters


def fuse(passes: list) -> list:
    """`passes` with each run of adjacent `node_local` ones replaced by one pass that chains them in order."""
    out, run = [], []  # run: (the pass as listed, the pass itself)

    def flush():
        if len(run) > 1:  # the class's MRO is the run's order: each super().call_operator reaches the next pass
            kinds = tuple(type(q) for _, q in run)
            out.append(type("+".join(k.__name__ for k in kinds), kinds, {})())
        else:
            out.extend(listed for listed, _ in run)
        run.clear()

    for listed in passes:
        p = getattr(listed, "__wrapped__", listed)  # a pass manager lists some passes inside a PassResult wrapper
        if not node_local(p):
            flush()
            out.append(listed)
            continue
        if type(p) in {type(q) for _, q in run}:  # the same pass again: a class cannot inherit from it twice
            flush()
        run.append((listed, p))
    flush()
    return out


class _Done(PassBase):
    """Stands in for a pass `_generate_edge_program` appends after the others when a fused run has done it."""

    def call(self, graph_module):
        return PassResult(graph_module, False)


@contextlib.contextmanager
def fused_edge_passes() -> Iterator[None]:
    """While active, the edge-dialect conversion runs `fuse`d passes: the list ExecuTorch builds, plus the
    ATen-to-edge and memory-format passes it appends to it, with their adjacent node-by-node runs chained."""
    from executorch.exir.program import _program

    original = _program._get_aten_to_edge_passes, _program.OpReplacePass, _program.MemoryFormatOpsPass

    def aten_to_edge_passes(config):
        pre, post = original[0](config)
        tail = [original[1]()] + ([] if config._skip_dim_order else [original[2]()])
        return fuse([*pre, *tail]), post

    _program._get_aten_to_edge_passes, _program.OpReplacePass, _program.MemoryFormatOpsPass = \
        aten_to_edge_passes, _Done, _Done
    try:
        yield
    finally:
        _program._get_aten_to_edge_passes, _program.OpReplacePass, _program.MemoryFormatOpsPass = original
