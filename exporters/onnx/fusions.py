"""Graph fusions for the `fused` flavour: RMSNorm as onnxruntime's (Skip)SimplifiedLayerNormalization,
Mamba's block around the scan as seqedge's `MambaScan`, and attention's length arithmetic and q/k/v split
taken out of every layer.

The exporter writes RMSNorm as seven standard nodes (Pow, ReduceMean, Add, Sqrt, Reciprocal, Mul, Mul) and
the residual add before it as one more; at decode time (T = 1) each node costs more in dispatch than in
arithmetic. onnxscript's onnxruntime fusion rules turn them into one `SimplifiedLayerNormalization` (the
first norm) or one `SkipSimplifiedLayerNormalization` (residual add + norm) per norm. Its pattern wants the
mean over axis -1; the exporter names the last axis by its positive index, so that is rewritten first.

    counts = fuse(path)   # rewrites the fp32 graph file in place (loaded and saved once for every fusion):
                          # {"rms_norm": n, "skip_rms_norm": m, "mamba_scan": k, "shared_lengths": s,
                          #  "packed_qkv": p, "half_caches": h}

Mamba's block computes Δ = softplus(dt) (the exporter writes Softplus, Greater and Where: torch's threshold) and
gates the scan's output by silu(z) (Sigmoid, Mul, Mul): five elementwise nodes per layer, whose dispatch costs
more than their arithmetic at T = 1 and whose Softplus is scalar in onnxruntime (12 % of a mamba-130m prefill).
Where a `seqedge.SelectiveScan` sits between exactly those patterns it becomes one `seqedge.MambaScan` (the
softplus and the gate inside the kernel, mamba_scan_ref).

Under GroupQueryAttention (the `contrib` lowering) each attention layer reads its call's length T with its
own `Shape(q)` (the lowering sees only its operands), then turns it into GroupQueryAttention's `seqlens_k`
and `total_sequence_length` (Add, Sub, Cast, Squeeze, Cast): six nodes per layer, all computing the same two
numbers (seqedge.Attention takes `pos` as it is). Shapes whose dims carry the same symbols are
equal (ONNX's rule for a dim_param), so every `Shape` over the same symbolic dims reads the first one's and
common-subexpression elimination leaves one chain for the whole graph. The fused q/k/v projection's output
is split in three only to be handed to the attention op, which takes it packed (key and value absent) when
the split is q, k, v in that order along the last axis (ATTENTION_OPS). llama-135m int4: 544 -> 345 nodes; a decode step
4-8 % faster in two interleaved runs (6.98 -> 6.40 and 5.11 -> 4.93 ms near depth 0; 9.06 -> 8.50 ms at
depth 1000), the logits bit-identical.

Run on the float graph before quantization (the fusions need the tensor types, which MatMulNBits hides).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# the ops the fusions emit, by (domain, name), as onnxruntime registers them
NORM_OPS = (("", "SimplifiedLayerNormalization"), ("com.microsoft", "SkipSimplifiedLayerNormalization"))
# attention ops taking (query, key, value, cache inputs 3 and 4, ...) and returning the caches as outputs 1 and 2,
# updated in place when each pair shares one buffer: onnxruntime's GroupQueryAttention (past/present_key,
# past/present_value) and seqedge's
ATTENTION_OPS = (("com.microsoft", "GroupQueryAttention"), ("seqedge", "Attention"))


def norms_available() -> bool:
    from onnxruntime.capi import _pybind_state

    have = {(s.domain, s.name) for s in _pybind_state.get_all_operator_schema()}
    return all(op in have for op in NORM_OPS)


def _mean_over_last_axis_as_minus_one(model) -> None:
    import onnx_ir as ir

    last = ir.Value(name="seqedge_axes_last", const_value=ir.tensor(np.array([-1], dtype=np.int64)))
    used = False
    for node in model.graph:
        if node.op_type != "ReduceMean" or len(node.inputs) < 2 or node.inputs[1] is None:
            continue
        axes, x = node.inputs[1].const_value, node.inputs[0]
        if axes is not None and x.shape is not None and axes.numpy().tolist() == [len(x.shape) - 1]:
            node.replace_input_with(1, last)
            used = True
    if used:
        model.graph.register_initializer(last)


def fuse(path: Path, half_caches: bool = False) -> dict[str, int]:
    """Every fusion on the graph file at `path` (the norms where this onnxruntime has their kernels; with
    `half_caches`, seqedge.Attention's caches in float16)."""
    import onnx_ir as ir

    model = ir.load(str(path))
    counts = {}
    if norms_available():
        model, counts = fuse_norms(model)
    counts["mamba_scan"] = fuse_mamba_scan(model)
    counts["shared_lengths"] = share_shapes(model)
    counts["packed_qkv"] = pack_attention_qkv(model)
    counts["half_caches"] = len(half_attention_caches(model)) if half_caches else 0
    if any(counts.values()):
        ir.save(model, str(path))
    return counts


def fuse_norms(model):
    from onnxscript.rewriter.ort_fusions._core import _pre_optimize
    from onnxscript.rewriter.ort_fusions.rms_normalization import fuse_rms_normalization
    from onnxscript.rewriter.ort_fusions.skip_normalization import fuse_skip_rms_normalization

    _mean_over_last_axis_as_minus_one(model)
    model = _pre_optimize(model)
    return model, {"rms_norm": fuse_rms_normalization(model), "skip_rms_norm": fuse_skip_rms_normalization(model)}


SOFTPLUS_THRESHOLD = 20.0  # torch's: softplus(x) = x above it (Greater's constant in the exported pattern)


def _producer(value, op_type: str):
    node = value.producer() if value is not None else None
    return node if node is not None and node.op_type == op_type and node.domain == "" else None


def _softplus_input(delta):
    """x where delta = Where(Greater(x, 20), x, Softplus(x)), else None."""
    where = _producer(delta, "Where")
    if where is None:
        return None
    greater, x, soft = _producer(where.inputs[0], "Greater"), where.inputs[1], _producer(where.inputs[2], "Softplus")
    if greater is None or soft is None or greater.inputs[0] is not x or soft.inputs[0] is not x:
        return None
    threshold = greater.inputs[1].const_value if greater.inputs[1] is not None else None
    ok = threshold is not None and threshold.numpy().size == 1 and float(threshold.numpy()) == SOFTPLUS_THRESHOLD
    return x if ok else None


def _gate(y):
    """(the Mul giving y · silu(z), z) when y's only use is that product, else None."""
    uses = list(y.uses())
    if len(uses) != 1 or y.is_graph_output() or uses[0][0].op_type != "Mul" or uses[0][0].domain != "":
        return None
    mul = uses[0][0]
    silu = _producer(mul.inputs[1 - uses[0][1]], "Mul")
    if silu is None:
        return None
    for z, sig in ((silu.inputs[0], silu.inputs[1]), (silu.inputs[1], silu.inputs[0])):
        sigmoid = _producer(sig, "Sigmoid")
        if sigmoid is not None and sigmoid.inputs[0] is z:
            return mul, z
    return None


def fuse_mamba_scan(model) -> int:
    import onnx_ir as ir
    from onnx_ir.passes.common import RemoveUnusedNodesPass

    from seqedge.runtimes.ort_kernels import DOMAIN

    fused = 0
    for scan in [n for n in model.graph if n.domain == DOMAIN and n.op_type == "SelectiveScan"]:
        x, gate = _softplus_input(scan.inputs[1]), _gate(scan.outputs[0])
        if x is None or gate is None:
            continue
        mul, z = gate
        inputs = [scan.inputs[0], x, *scan.inputs[2:], z]
        node = ir.Node(DOMAIN, "MambaScan", inputs, num_outputs=2, name=f"{scan.name}_mamba")
        model.graph.insert_before(scan, node)
        node.outputs[0].name, node.outputs[1].name = f"{scan.outputs[0].name}_gated", f"{scan.outputs[1].name}_mamba"
        for old, new in ((mul.outputs[0], node.outputs[0]), (scan.outputs[1], node.outputs[1])):
            new.type, new.shape = old.type, old.shape
            name, was_output = old.name, old.is_graph_output()
            old.replace_all_uses_with(new, replace_graph_outputs=True)
            if was_output:  # the graph's output keeps its name (new.ssm.i)
                old.name, new.name = f"{name}_unused", name
        fused += 1
    if fused:
        RemoveUnusedNodesPass()(model)  # in place
    return fused


def share_shapes(model) -> int:
    """Every `Shape` (start, end) over the same symbolic dims as an earlier one reads the earlier one's output;
    the arithmetic on it then appears once (common-subexpression elimination). Returns how many were shared."""
    from onnx_ir.passes.common import CommonSubexpressionEliminationPass, RemoveUnusedNodesPass

    first, shared = {}, 0
    for node in model.graph:
        x = node.inputs[0] if node.op_type == "Shape" and node.domain == "" and node.inputs else None
        if x is None or x.shape is None or node.outputs[0].is_graph_output():
            continue
        rank = len(x.shape)
        start, end = node.attributes.get_int("start", 0), node.attributes.get_int("end", rank)
        dims = list(x.shape)[slice(start, end)]
        if not dims or any(not isinstance(d, int) and d.value is None for d in dims):
            continue  # an unnamed dim is not known to equal anything
        key = tuple(d if isinstance(d, int) else str(d.value) for d in dims)
        if key not in first:
            first[key] = node.outputs[0]
        elif node.outputs[0].uses():
            node.outputs[0].replace_all_uses_with(first[key])
            shared += 1
    if shared:
        CommonSubexpressionEliminationPass()(model)  # in place; what onnxruntime does at load, done once here
        RemoveUnusedNodesPass()(model)
    return shared


def pack_attention_qkv(model) -> int:
    """Attention nodes (GroupQueryAttention, seqedge.Attention) whose query, key and value are, in that order,
    the three outputs of one Split along the last axis, used nowhere else, read the split's input packed
    instead (key and value absent)."""
    from onnx_ir.passes.common import RemoveUnusedNodesPass

    packed = 0
    for gqa in [n for n in model.graph if (n.domain, n.op_type) in ATTENTION_OPS]:
        q, k, v = gqa.inputs[:3]
        split = _producer(q, "Split")
        if split is None or k is None or v is None or list(split.outputs) != [q, k, v]:
            continue
        x = split.inputs[0]
        axis = split.attributes.get_int("axis", 0)
        last = x.shape is not None and axis in (-1, len(x.shape) - 1)
        if not last or any(len(o.uses()) != 1 or o.is_graph_output() for o in (q, k, v)):
            continue
        gqa.replace_input_with(0, x)
        gqa.replace_input_with(1, None)
        gqa.replace_input_with(2, None)
        packed += 1
    if packed:
        RemoveUnusedNodesPass()(model)
    return packed


def half_attention_caches(model) -> list[str]:
    """The graph's state inputs that only seqedge.Attention reads, as its cache, and returns as the graph's
    `new.NAME` (directly: nothing else reads either), retyped float16 in and out: the kernel keeps the cache in
    float16 (its keys and values rounded once, when written) and attends in float32, so a decode step streams
    half the cache bytes (llama-135m at 1,024 positions: 47 -> 24 MB a token; llama.cpp's default, f16). The
    manifest's state takes the graph's types (export.py). Returns the names retyped."""
    import onnx_ir as ir

    inputs = {v.name: v for v in model.graph.inputs}
    outputs = {v.name: v for v in model.graph.outputs}
    retyped = []
    for node in model.graph:
        if (node.domain, node.op_type) != ("seqedge", "Attention") or len(node.outputs) < 3:
            continue
        for past, present in ((node.inputs[3], node.outputs[1]), (node.inputs[4], node.outputs[2])):
            if (past is None or inputs.get(past.name) is not past or outputs.get(present.name) is not present
                    or present.name != f"new.{past.name}" or len(past.uses()) != 1 or len(present.uses()) != 0
                    or past.dtype != ir.DataType.FLOAT):
                continue
            past.dtype = present.dtype = ir.DataType.FLOAT16
            retyped.append(past.name)
    return retyped
