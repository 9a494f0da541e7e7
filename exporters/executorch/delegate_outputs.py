"""A delegate call's outputs on fake tensors taken from what its partition already recorded, instead of re-running it.

After XNNPACK takes its partitions, ExecuTorch still re-traces each whole method with fake tensors, more than once
(`to_executorch`'s `SpecPropPass` among them). Each re-trace meets every `executorch_call_delegate` node, and
torch's fake implementation of that call unlifts the partition's original program (`ExportedProgram.module()`, a
code generation) and runs it again node by node — only to learn the output shapes, which the partition's output
nodes already hold in their metadata (`meta["val"]`, fake tensors of the same fake mode). mamba-130m int4: ~250
calls, ~8 s of a lowering. Within `known_delegate_outputs()` such a call returns fresh fake tensors with those
shapes, strides and dtypes. A call outside a fake mode, or whose recorded outputs belong to another fake mode (another
shape environment), or whose program returns anything but user outputs, runs as before. The program is
byte-identical (tests/test_executorch_export.py).

    with known_delegate_outputs():
        edge = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()])
        program = edge.to_executorch()
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator


def recorded_outputs(program, mode) -> list | None:
    """The fake values `program`'s output node records, when all of them are user outputs of fake mode `mode`."""
    from torch.export.graph_signature import OutputKind

    if any(spec.kind != OutputKind.USER_OUTPUT for spec in program.graph_signature.output_specs):
        return None
    values = [getattr(node, "meta", {}).get("val") for node in program.graph_module.graph.output_node().args[0]]
    if not values or any(getattr(v, "fake_mode", None) is not mode for v in values):
        return None
    return values


@contextlib.contextmanager
def known_delegate_outputs() -> Iterator[None]:
    """While active, a delegate call on fake tensors returns new fake tensors shaped as its recorded outputs."""
    import torch.utils._pytree as pytree
    from torch._guards import detect_fake_mode

    # the module, not the operator its package exports under the same name
    module = importlib.import_module("torch._higher_order_ops.executorch_call_delegate")
    original = module.call_delegate_cpu

    def call_delegate_cpu(lowered_module, *args):
        mode = detect_fake_mode(args)
        program = lowered_module.original_module
        values = recorded_outputs(program, mode) if mode is not None else None
        if values is None:
            return original(lowered_module, *args)
        flat = [v.new_empty_strided(v.shape, v.stride()) for v in values]  # in v's fake mode
        spec = program.call_spec.out_spec
        return pytree.tree_unflatten(flat, spec) if spec is not None else tuple(flat)

    module.call_delegate_cpu = call_delegate_cpu
    try:
        yield
    finally:
        module.call_delegate_cpu = original
