"""Cutting a method into XNNPACK partitions without copying its graph and regenerating its Python code once per
partition.

ExecuTorch 1.5.1 moves each partition's nodes into a submodule (`create_submodule_from_nodes`) and then puts the
whole method's graph back in topological order (torch.fx's `legalize_graph`). That sort copies every node into a
new graph and assigns it to the GraphModule — and the assignment regenerates and compiles the module's Python code
(`recompile`). A method with P partitions and N nodes pays P copies and P code generations of N nodes (llama-135m:
183 partitions of ~4,000-node methods, 730,000 node copies). Within `deferred_recompile()` the order is the one
`legalize_graph` computes — the same queue, the same priorities — but the nodes are moved within their graph and
the graph's names registered afresh, as a copy would have them; nothing reads the module's code until every
partition is cut, so it is generated once, when the last partition of the method is cut. The program is
byte-identical (tests/test_executorch_export.py).

    with deferred_recompile():
        edge = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()])
"""

from __future__ import annotations

import collections
import contextlib
import operator
from collections.abc import Iterator

import torch

# torch.fx.passes.tools_common.legalize_graph's PRIORITIZED_OPS: runtime assertions sort before data-dependent ops
PRIORITIZED_OPS = (operator.add, operator.mul, operator.sub, operator.floordiv, operator.truediv, operator.mod,
                   operator.le, operator.lt, operator.ge, operator.gt, operator.eq, operator.ne,
                   torch.ops.aten.sym_constrain_range.default, torch.ops.aten.sym_constrain_range_for_size.default,
                   torch.ops.aten._assert_async.msg, torch.ops.aten.scalar_tensor.default,
                   torch.ops.aten._assert_scalar.default)


def sorted_nodes(graph) -> list:
    """`graph`'s nodes in the order torch.fx's `legalize_graph` copies them: Kahn's queue over the current order,
    prioritised ops to its front."""
    indeg = dict.fromkeys(graph.nodes, 0)
    for node in graph.nodes:
        for user in node.users:
            indeg[user] += 1
    queue = collections.deque(node for node in graph.nodes if indeg[node] == 0)
    order = []
    while queue:
        node = queue.popleft()
        order.append(node)
        for user in node.users:
            indeg[user] -= 1
            if indeg[user] == 0:
                if user.op == "call_function" and user.target in PRIORITIZED_OPS:
                    queue.appendleft(user)
                else:
                    queue.append(user)
    if len(order) < len(indeg):
        raise RuntimeError(f"Input graph has cycles, unable to add {[n for n in indeg if indeg[n] != 0]}")
    return order


@contextlib.contextmanager
def deferred_recompile() -> Iterator[None]:
    """While active, the graph a partition cut re-sorts is recompiled once per method, after the last cut."""
    from executorch.exir import lowered_backend_module as lbm
    from executorch.exir.backend import backend_api
    from torch.fx.graph import _Namespace

    original_legalize, original_create = lbm.legalize_graph, backend_api._create_partitions_in_graph_module
    stale = []  # graph modules whose code is behind their graph

    def legalize_graph(gm):
        graph = gm.graph
        names = _Namespace()  # what a copy of the graph would hold: the names of its nodes, registered in order
        for node in sorted_nodes(graph):
            graph._root.prepend(node)  # to the end: the nodes end up in the sorted order
            names.create_name(node.name, None)
        graph._graph_namespace = names
        stale.append(gm)  # its code is behind its graph
        return gm

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
