"""Bytes of the lookup tables an artifact holds: tables a decode step reads one row of (an embedding), so they do
not count towards the bytes a step streams. A tied embedding an artifact keeps once, as its output head, is read
whole by the head and is not one; ExecuTorch programs keep the table apart from the head (quant/executorch.py),
so there it is.

    lookup_table_bytes(artifact_folder)   # 17_694_720 for llama-135m ExecuTorch int4, 0 for its ONNX export

Read from the artifact's own graph or program: the constants the embedding kernels take as their table and
scales (ExecuTorch), or the initializers that reach nothing but a Gather's table (ONNX), numel x element size.
"""

from __future__ import annotations

import math
from pathlib import Path

ET_ELEMENT_BYTES = {0: 1, 1: 1, 2: 2, 3: 4, 4: 8, 5: 2, 6: 4, 7: 8, 11: 1, 15: 2}  # ExecuTorch ScalarType -> bytes
ET_LOOKUPS = ("quantized_decomposed::embedding", "aten::embedding")  # (table, scales, ...) operands first

ONNX_LOOKUPS = {"Gather": (0,), "GatherBlockQuantized": (0, 2)}  # the inputs that are the table (and its scales)
ONNX_PASSTHROUGH = {"Reshape", "Cast", "Squeeze", "Unsqueeze", "Identity", "Transpose"}


def lookup_table_bytes(folder: Path) -> int:
    from seqedge.exporters.artifact import read_manifest

    folder = Path(folder)
    manifest = read_manifest(folder, check_files=False)  # untrusted: its graphs are files it lists, in the folder
    graph = folder / (manifest.get("graphs") or {}).get("prefill", "").split("#")[0]  # a program's "model.pte#prefill"
    if graph.suffix == ".pte":
        return _pte_lookup_bytes(graph.read_bytes())
    if graph.suffix == ".onnx":
        return _onnx_lookup_bytes(graph)
    return 0


def _pte_lookup_bytes(buffer: bytes) -> int:
    from executorch.exir._serialize._program import deserialize_pte_binary
    from executorch.exir.schema import KernelCall

    program = deserialize_pte_binary(buffer).program
    tables: dict[int, int] = {}  # constant buffer index -> bytes
    for plan in program.execution_plan:
        names = [op.name for op in plan.operators]
        for chain in plan.chains:
            for instruction in chain.instructions:
                call = instruction.instr_args
                if not isinstance(call, KernelCall) or not names[call.op_index].startswith(ET_LOOKUPS):
                    continue
                operands = call.args[:2] if names[call.op_index].startswith(ET_LOOKUPS[0]) else call.args[:1]
                for index in operands:
                    t = plan.values[index].val
                    if getattr(t, "data_buffer_idx", 0) > 0:  # a constant (0: none)
                        tables[t.data_buffer_idx] = math.prod(t.sizes) * ET_ELEMENT_BYTES.get(int(t.scalar_type), 4)
    return sum(tables.values())


def _onnx_lookup_bytes(path: Path) -> int:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    users: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            users.setdefault(name, []).append((node, i))

    def only_looked_up(name: str, depth: int = 0) -> bool:
        uses = users.get(name, [])
        if not uses or depth > 4:
            return False
        for node, i in uses:
            if node.op_type in ONNX_LOOKUPS and node.domain in ("", "com.microsoft"):
                if i not in ONNX_LOOKUPS[node.op_type]:
                    return False
            elif not (node.op_type in ONNX_PASSTHROUGH and i == 0 and all(only_looked_up(o, depth + 1) for o in node.output)):
                return False
        return True

    return sum(math.prod(init.dims) * onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
               for init in graph.initializer if only_looked_up(init.name))
