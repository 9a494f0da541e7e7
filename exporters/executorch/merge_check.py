"""XNNPACK's partition-merge cycle check with set operations instead of a Python loop over every downstream node.

XNNPACK's partitioner (through ExecuTorch 1.5.1's `GroupBasedPartitioner._merge_partitions`) tries every pair of
candidate partitions of a method and asks `_can_merge_partitions` whether merging them would create a cycle: does a
node outside the pair, used by the pair, lead back into it? It answers with `any(n in combined for n in
downstream)` over each outside user's whole transitive downstream set — for llama-135m int4 about 100,000 pairs and
156 million generator steps, ~12 s of a two-minute lowering. `set.isdisjoint` asks the same question in C,
walking the smaller set. The answer — the same booleans, pair by pair, and the same final `validate_partition` on
the live graph — is unchanged, so the partitions are (tests/test_executorch_export.py: byte-identical program).

    with merge_check():
        edge = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()])
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def merge_check() -> Iterator[None]:
    """While active, `GroupBasedPartitioner._can_merge_partitions` answers through set operations."""
    from executorch.exir.backend.canonical_partitioners.group_partitioner import GroupBasedPartitioner
    from torch.fx.passes.utils.fuser_utils import validate_partition

    original = GroupBasedPartitioner.__dict__["_can_merge_partitions"]

    def can_merge_partitions(self, p1, p2, partitions_by_id) -> bool:
        combined = partitions_by_id[p1].nodes.keys() | partitions_by_id[p2].nodes.keys()  # a set
        for node in combined:
            for user in node.users:  # a user outside the pair whose downstream nodes reach back in: a cycle
                if user not in combined and not combined.isdisjoint(self.dependency_viewer.downstreams_of(user)):
                    return False
        return validate_partition(list(combined))  # ExecuTorch's safety net, a BFS on the live graph

    GroupBasedPartitioner._can_merge_partitions = can_merge_partitions
    try:
        yield
    finally:
        GroupBasedPartitioner._can_merge_partitions = original
