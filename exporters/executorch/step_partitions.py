"""A step's XNNPACK partitions that only move numbers, left to ExecuTorch's CPU kernels.

XNNPACK's partitioner delegates every group of ops it supports, however little work the group does. In a decode
step (one token), a group of only adds, slices and reshapes works on a few hundred to a few thousand numbers, and
a delegate call costs more than that: llama-135m int4 (its matmuls, norms and attention seqedge's kernels) made
120 such calls a step, 1.3-2.3 us each, where ExecuTorch's CPU kernels take 0.3-0.6 us for an add or a slice and a
reshape is free (`et_view`). Left out, llama-135m's Python decode ran x1.04-1.06 at 0, 256 and 1,024 cached
positions and mamba-130m's (six such groups a layer, a residual add and slices among them; its gating and softplus
groups keep XNNPACK) x1.01-1.02, prefill unchanged (16 lockstep pairs each, the same exports otherwise). A prompt
keeps them: on T rows XNNPACK's kernels are the faster (left out of prefill too, llama-135m prefill ran x0.95-0.97).

    edge = to_edge_transform_and_lower(programs, partitioner={"prefill": [StepXnnpackPartitioner(step=False)],
                                                              "decode": [StepXnnpackPartitioner(step=True)]})

The nodes left out are marked (LEFT_OUT) with the reason, which the manifest's delegation summary reports.
"""

from __future__ import annotations

import torch
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.exir.dialects.edge._ops import EdgeOpOverload

# What a step's partition may hold and still be left to ExecuTorch's CPU kernels.
MOVES = {torch.ops.aten.add.Tensor, torch.ops.aten.slice_copy.Tensor, torch.ops.aten.view_copy.default}

# The node meta key naming why a node was left out of a partition (export.py's delegation summary reads it).
LEFT_OUT = "seqedge_left_out"
STEP_MOVE = "a step's add, slice or reshape of a few numbers: cheaper in ExecuTorch's CPU kernels than as an " \
            "XNNPACK call (exporters/executorch/step_partitions.py)"


def aten(target):
    """The ATen op behind an edge op (`target` itself otherwise)."""
    return target._op if isinstance(target, EdgeOpOverload) else target


def moves_only(partition) -> bool:
    """Whether every call of `partition` is one of MOVES (as an ATen or an edge op)."""
    return all(aten(n.target) in MOVES for n in partition.nodes if n.op == "call_function")


def without_lone_moves(partitions: list) -> list:
    """`partitions` less those of moves only, whose nodes are marked (LEFT_OUT)."""
    kept = []
    for partition in partitions:
        if not moves_only(partition):
            kept.append(partition)
            continue
        for node in partition.nodes:
            node.meta[LEFT_OUT] = STEP_MOVE
    return kept


class StepXnnpackPartitioner(XnnpackPartitioner):
    """`XnnpackPartitioner` that, for a step method (`step`), leaves out the partitions of moves only."""

    def __init__(self, step: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.step = step

    def generate_partitions(self, ep):
        partitions = super().generate_partitions(ep)
        return without_lone_moves(partitions) if self.step else partitions
