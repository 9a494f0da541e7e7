"""Each method functionalised and decomposed in one re-trace instead of two.

`to_edge_transform_and_lower` (exir/program/_program.py: `_gen_edge_manager_for_partitioners`) turns each method's
ATen program into the edge dialect in two `run_decompositions` calls: `run_decompositions({})` to functionalise it,
then, with the ops the partitioner keeps whole taken out of the default table, `run_decompositions(table)`. Each call
re-traces the whole method with fake tensors; with a dynamic length that is the lowering's costliest step
(mamba-130m int4: 7.7 + 8.3 s for prefill, 4.6 + 4.6 s for decode). `run_decompositions(table)` functionalises as
well, so the first call only matters for what the partitioner is asked in between — which ops to keep, and whether
a per-node check comes with them. Within `one_decomposition()`, a method with one partitioner is decomposed once,
with the table of the ops that partitioner keeps, right after its pre-decomposition transform. Before
functionalising, torchao's int4/int8 weights are still tensor subclasses that XNNPACK's per-node check rejects, so
the partitioner is asked again on the decomposed program — the question ExecuTorch asks next. When it keeps the
same ops without a check (XNNPACK through `PrecheckedXnnpackPartitioner`), the program is marked: ExecuTorch's own
`run_decompositions({})` is a no-op on it and its `run_decompositions(table)` finds nothing left to decompose.
Otherwise the undecomposed program goes ExecuTorch's way (one re-trace wasted). The program is byte-identical
(tests/test_executorch_export.py).

    with one_decomposition():
        edge = to_edge_transform_and_lower(programs, partitioner=[PrecheckedXnnpackPartitioner()])
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

DECOMPOSED = "_seqedge_decomposed"  # set on a program this module decomposed: functionalising it again is a no-op


def decompose(program, partitioners: list, transform=None, run=None):
    """`program` after its partitioners' pre-decomposition transform, decomposed in one `run_decompositions` with
    the table of the ops its one partitioner keeps and marked DECOMPOSED; the transformed program, undecomposed,
    where that does not apply (several partitioners, or one that decomposes around a check or keeps other ops on
    the decomposed program). `transform`, `run`: ExecuTorch's and torch's own, where they are patched."""
    from executorch.exir.program import _program
    from torch.export import ExportedProgram

    transform = transform or _program._apply_pre_decomposition_transforms
    run = run or ExportedProgram.run_decompositions
    program = transform(program, partitioners)
    if len(partitioners) != 1:  # several: ExecuTorch decomposes once per partitioner, each with its own table
        return program
    ops, check = partitioners[0].ops_to_not_decompose(program)
    if check is not None:  # before functionalising, torchao's weights are still tensor subclasses and fail it
        ops = _program._remove_invalid_ops_for_not_decompose(ops)
    table = _program._default_decomposition_table()
    for op in ops:
        table.pop(op, None)
    decomposed = run(program, table)
    kept, check = partitioners[0].ops_to_not_decompose(decomposed)  # what ExecuTorch will be told
    if check is not None or set(kept) != set(ops):
        return program  # it decomposes around a check, or keeps other ops: ExecuTorch's way
    setattr(decomposed, DECOMPOSED, True)
    return decomposed


@contextlib.contextmanager
def one_decomposition() -> Iterator[None]:
    """While active, a method whose one partitioner answers without a check is decomposed in one
    `run_decompositions` (`decompose`); one decomposed already (method_worker.py) is taken as it is."""
    from executorch.exir.program import _program
    from torch.export import ExportedProgram

    original_transform, original_run = _program._apply_pre_decomposition_transforms, ExportedProgram.run_decompositions

    def transform_then_decompose(program, partitioners):
        if getattr(program, DECOMPOSED, False):
            return program
        return decompose(program, partitioners, original_transform, original_run)

    def run_decompositions(self, decomp_table=None, *args, **kwargs):
        if decomp_table == {} and not args and not kwargs and getattr(self, DECOMPOSED, False):
            return self  # already functional, and the table's ops already decomposed
        return original_run(self, decomp_table, *args, **kwargs)

    _program._apply_pre_decomposition_transforms = transform_then_decompose
    ExportedProgram.run_decompositions = run_decompositions
    try:
        yield
    finally:
        _program._apply_pre_decomposition_transforms = original_transform
        ExportedProgram.run_decompositions = original_run
