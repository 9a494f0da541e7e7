"""Cutting a method into XNNPACK partitions without regenerating its Python code once per partition.

ExecuTorch 1.5.1 moves each partition's nodes into a submodule (`create_submodule_from_nodes`) and then puts the
whole method's graph back in topological order (`legalize_graph`), which assigns the sorted graph to the
GraphModule — and that assignment regenerates and compiles the module's Python code (`recompile`). Nothing reads
that code until every partition is cut, so a method with P partitions and N nodes pays P code generations of N
nodes (mamba-130m: 123 partitions, about two thirds of the 26 s `legalize_graph` took in a profile). Within
`deferred_recompile()` the sort is ExecuTorch's own, unchanged; the code is generated once, when the last
partition of the method is cut. The program is byte-identical (tests/test_executorch_export.py).

    with deferred_recompile():
        edge = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()])
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def deferred_recompile() -> Iterator[None]:
    """While active, the graph a partition cut re-sorts is recompiled once per method, after the last cut."""
    from executorch.exir import lowered_backend_module as lbm
    from executorch.exir.backend import backend_api

    original_legalize, original_create = lbm.legalize_graph, backend_api._create_partitions_in_graph_module
    stale = []  # graph modules whose code is behind their graph

    def legalize_graph(gm):
        gm.__dict__["recompile"] = lambda: stale.append(gm)  # the graph setter's recompile, noted for later
        try:
            return original_legalize(gm)
        finally:
            del gm.__dict__["recompile"]

    def create_partitions_in_graph_module(tagged_graph_module, *args, **kwargs):
        try:
            return original_create(tagged_graph_module, *args, **kwargs)
        finally:
            for gm in dict.fromkeys(stale):  # each once, in order
                gm.recompile()
            stale.clear()

    lbm.legalize_graph, backend_api._create_partitions_in_graph_module = legalize_graph, create_partitions_in_graph_module
    try:
        yield
    finally:
        lbm.legalize_graph, backend_api._create_partitions_in_graph_module = original_legalize, original_create
