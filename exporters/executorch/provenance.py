"""Node provenance shared, not deep-copied, while a model is traced and lowered to ExecuTorch.

Every pass that re-traces a graph (torch.export's and ExecuTorch's decompositions, ExecuTorch's edge passes, each
XNNPACK pass on each partition) records where each new node came from: `torch.fx.traceback.NodeSource(node)`,
which deep-copies the node's whole provenance chain (`node.meta["from_node"]`) into the new record. The chain
grows by one record per pass, so an ExecuTorch lowering (dozens of passes) spends about a tenth of its time
copying records nobody changes. Within `shared_provenance()` a new record holds the earlier records themselves (a
new list of the same NodeSource objects): the same chain, the same debug handles ExecuTorch derives from it, the
same program bytes (tests/test_executorch_export.py). The ONNX exporter runs far fewer passes and goes without it
(no difference measured on mamba-130m).

    with shared_provenance():
        edge = to_edge_transform_and_lower(programs, partitioner=[...])
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def shared_provenance() -> Iterator[None]:
    """While active, `NodeSource(node)` takes `node`'s provenance chain by reference instead of deep-copying it."""
    from torch.fx.traceback import NodeSource

    original = NodeSource.__init__

    def __init__(self, node, pass_name="", action=None):
        chain = node.meta.get("from_node") if node is not None else None
        if chain is None:
            return original(self, node, pass_name, action)
        node.meta["from_node"] = []  # the original copies an empty chain (the key keeps its place in meta)
        try:
            original(self, node, pass_name, action)
        finally:
            node.meta["from_node"] = chain
        self.from_node = list(chain)

    NodeSource.__init__ = __init__
    try:
        yield
    finally:
        NodeSource.__init__ = original
