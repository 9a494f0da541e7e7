"""ExecuTorch's pass-manager check, once per state of a graph.

Every `_transform(program, pass)` checks the program before the pass and after it
(`ExportedProgramPassManager.check`: regenerate the module's Python code, lint the graph, run the verifiers), and
XNNPACK's `preprocess` runs one `_transform` per pass, per partition. The check before a pass repeats the one after
the pass before it, and the check after a pass that left the graph alone repeats the one before it: on mamba-130m,
1,668 checks for 834 passes over 123 partitions took ~5 of the 27.7 s of its XNNPACK preprocess on one core; 245 of
them check something new (preprocess 22.5 s).

Within `checks_once()` a check is skipped when what it reads is what the last check read, and that check passed:
the same graph module, the same graph signature, state-dict and constant names and verifiers, and every node the
same (identity, name, op, target, arguments, metadata value). Any other check runs as it did, and a check that
fails is never recorded. The program is byte-identical (tests/test_executorch_export.py).

    with checks_once():
        edge = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()])
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


def checked_state(program) -> tuple:
    """What `ExportedProgramPassManager.check` reads of `program`: its signature, names and verifiers (compared by
    equality), and its nodes with their metadata values (compared by identity: `same_state`)."""
    graph = program.graph_module.graph
    names = (program.graph_signature, tuple(program.state_dict), tuple(program.constants), tuple(program.verifiers))
    nodes = [(n, n.name, n.op, n.target, n.args, n.kwargs) for n in graph.nodes]
    values = [n.meta.get("val") for n in graph.nodes]
    return names, nodes, values


def same_state(a: tuple, b: tuple) -> bool:
    try:
        return a[0] == b[0] and a[1] == b[1] and all(x is y for x, y in zip(a[2], b[2], strict=True))
    except (RuntimeError, ValueError, TypeError):  # a tensor among the arguments: no answer, so check
        return False


@contextlib.contextmanager
def checks_once() -> Iterator[None]:
    """While active, `ExportedProgramPassManager.check` skips a program that the last check passed, with its graph
    module in the same state (`checked_state`)."""
    from executorch.exir.pass_manager import ExportedProgramPassManager

    original = ExportedProgramPassManager.check
    last: list = [None, None]  # the graph module the last check passed, and its state then

    def check(self, exported_program) -> None:
        module, state = exported_program.graph_module, checked_state(exported_program)
        if last[0] is module and same_state(last[1], state):
            return
        last[:] = None, None
        original(self, exported_program)
        last[:] = module, state

    ExportedProgramPassManager.check = check
    try:
        yield
    finally:
        ExportedProgramPassManager.check = original
