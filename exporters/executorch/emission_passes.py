"""Program emission without the re-trace that cannot change a method.

`to_executorch` runs LegalizePortableDimOrderPass over each method before SpecPropPass: a whole-graph re-trace
(ExportPass) that puts a contiguous dim-order copy in front of the few portable ops that need one (its
`_target_ops`: the average pools, expand_copy, mean.dim, sum.dim_IntList). SpecPropPass re-traces the method again
right after it, to bring every node's metadata up to date. In a method that holds none of those ops the first
re-trace only reproduces the graph, so within `dim_order_legalized_only_where_needed()` it is skipped there
(llama-135m: two ~1 s re-traces of its lowered methods); a method with one of them goes through it as before.

    with dim_order_legalized_only_where_needed():
        program = edge.to_executorch(config)

tests/test_executorch_export.py checks that the program is byte-identical with and without it, and that a method
holding a target op is still legalised.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


def holds_any(graph_module, targets) -> bool:
    """Whether `graph_module` or a graph module under it (control-flow bodies) calls one of `targets`."""
    from torch.fx import GraphModule

    return any(node.op == "call_function" and node.target in targets
               for module in graph_module.modules() if isinstance(module, GraphModule)
               for node in module.graph.nodes)


@contextlib.contextmanager
def dim_order_legalized_only_where_needed() -> Iterator[None]:
    """While active, LegalizePortableDimOrderPass returns a method that holds none of its target ops unchanged."""
    from executorch.exir.pass_base import ExportPass
    from executorch.exir.passes.legalize_portable_dim_order_pass import LegalizePortableDimOrderPass
    from torch.fx.passes.infra.pass_base import PassResult

    targets = getattr(LegalizePortableDimOrderPass, "_target_ops", None)
    if not targets or "call" in vars(LegalizePortableDimOrderPass):  # a newer ExecuTorch changed the pass
        yield
        return

    def call(self, graph_module):
        if not holds_any(graph_module, targets):
            return PassResult(graph_module, False)
        return ExportPass.call(self, graph_module)

    LegalizePortableDimOrderPass.call = call
    try:
        yield
    finally:
        del LegalizePortableDimOrderPass.call
