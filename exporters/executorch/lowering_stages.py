"""The steps of ExecuTorch's lowering as seqedge stages: what each costs in `seqedge export --verbose`, and which one
a failure happened in.

`to_edge_transform_and_lower` is one call; within `lowering_stages()` its steps run as nested stages
(seqedge.diagnostics.stage, with the lowering's subject and hint):

    edge dialect (edge passes)                      per method: the ATen-to-edge passes, after functionalising and
                                                    decomposing where export.py did not already (method_worker.py)
    partitioning and delegation                     XNNPACK's partitioner, each partition cut into a submodule
      XNNPACK preprocess (P partitions, J processes)  XNNPACK's passes and serialisation, per partition

    with stage("ExecuTorch lowering", subject), lowering_stages(subject, hint, jobs):
        edge = to_edge_transform_and_lower(programs, partitioner=[...])
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

from seqedge.diagnostics import stage

BACKEND_NAMES = {"XnnpackBackend": "XNNPACK"}  # ExecuTorch's backend ids, as stages name them


def _staged(function, name, subject: str, hint: str):
    @functools.wraps(function)
    def run(*args, **kwargs):
        with stage(name(*args) if callable(name) else name, subject, hint):
            return function(*args, **kwargs)

    return run


@contextlib.contextmanager
def lowering_stages(subject: str, hint: str = "", jobs: int = 1) -> Iterator[None]:
    """While active, ExecuTorch's edge conversion, delegation and backend preprocessing each run as a stage."""
    from executorch.exir.backend import backend_api
    from executorch.exir.program import _program

    def preprocess_name(backend_id, method_to_submodules_nodes, *_):
        partitions = sum(len(nodes) for nodes in method_to_submodules_nodes.values())
        processes = max(1, min(jobs, partitions))
        backend = BACKEND_NAMES.get(backend_id, backend_id)
        return f"{backend} preprocess ({partitions} partitions, {processes} processes)"

    patches = [
        (_program, "_gen_edge_manager_for_partitioners", "edge dialect (edge passes)"),
        (_program.EdgeProgramManager, "to_backend", "partitioning and delegation"),
        (backend_api, "lower_all_submodules_to_backend", preprocess_name),
    ]
    originals = [(owner, attr, owner.__dict__[attr]) for owner, attr, _ in patches]
    for owner, attr, name in patches:
        setattr(owner, attr, _staged(owner.__dict__[attr], name, subject, hint))
    try:
        yield
    finally:
        for owner, attr, original in originals:
            setattr(owner, attr, original)
