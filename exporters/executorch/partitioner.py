"""XNNPACK's partitioner with its decomposition question answered before the decomposition, so ExecuTorch decomposes
each method once instead of twice.

`to_edge_transform_and_lower` (exir/program/_program.py) asks a partitioner which ops to keep whole (XNNPACK:
linear, hardswish, max_pool2d, prelu, upsample_bilinear2d and torchao's quantize/dequantize ops) and whether a
per-node check comes with them. With a check it decomposes the method twice around it: everything but those ops,
then, with the nodes the check accepts marked, everything again (the EDGE_DO_NOT_DECOMP path). Without one it
decomposes once, keeping those ops. Every decomposition re-traces the method with fake tensors — with a dynamic
length, one of the lowering's costliest steps. When each node of those ops already passes XNNPACK's check before
any decomposition, the second decomposition has nothing left to do: `PrecheckedXnnpackPartitioner` then answers
without the check and the program comes out the same, byte for byte (tests/test_executorch_export.py). When a node
fails it (a linear over a computed weight), it answers exactly as XNNPACK does.

    edge = to_edge_transform_and_lower(programs, partitioner=[PrecheckedXnnpackPartitioner()])

It is a `StepXnnpackPartitioner` (step_partitions.py): `PrecheckedXnnpackPartitioner(step=True)` for a decode method.
"""

from __future__ import annotations

from executorch.exir.graph_module import get_control_flow_submodules
from executorch.exir.program._program import _remove_invalid_ops_for_not_decompose

from seqedge.exporters.executorch.step_partitions import StepXnnpackPartitioner, aten


def kept_nodes(program, ops) -> list:
    """The nodes of `program` (its control-flow bodies included) that call one of `ops`, as ATen or edge ops."""
    modules = [program.graph_module] + [m for _, m, _ in get_control_flow_submodules(program.graph_module)]
    return [n for m in modules for n in m.graph.nodes if n.op == "call_function" and aten(n.target) in ops]


class PrecheckedXnnpackPartitioner(StepXnnpackPartitioner):
    """`StepXnnpackPartitioner` whose `ops_to_not_decompose` drops the per-node check when every node passes it."""

    def ops_to_not_decompose(self, program):
        ops, check = super().ops_to_not_decompose(program)
        if check is None:
            return ops, check
        ops = _remove_invalid_ops_for_not_decompose(ops)  # what ExecuTorch's checked path keeps
        if all(check(n) for n in kept_nodes(program, set(ops))):
            return ops, None
        return ops, check
