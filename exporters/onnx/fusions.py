"""Graph fusions for the `fused` flavour: RMSNorm as onnxruntime's (Skip)SimplifiedLayerNormalization.

The exporter writes RMSNorm as seven standard nodes (Pow, ReduceMean, Add, Sqrt, Reciprocal, Mul, Mul) and
the residual add before it as one more; at decode time (T = 1) each node costs more in dispatch than in
arithmetic. onnxscript's onnxruntime fusion rules turn them into one `SimplifiedLayerNormalization` (the
first norm) or one `SkipSimplifiedLayerNormalization` (residual add + norm) per norm. Its pattern wants the
mean over axis -1; the exporter names the last axis by its positive index, so that is rewritten first.

    counts = fuse_norms(path)      # rewrites the fp32 graph file in place; {"rms_norm": n, "skip_rms_norm": m}

Run on the float graph before quantization (the fusions need the tensor types, which MatMulNBits hides).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# the ops the fusions emit, by (domain, name), as onnxruntime registers them
NORM_OPS = (("", "SimplifiedLayerNormalization"), ("com.microsoft", "SkipSimplifiedLayerNormalization"))


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


def fuse_norms(path: Path) -> dict[str, int]:
    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions._core import _pre_optimize
    from onnxscript.rewriter.ort_fusions.rms_normalization import fuse_rms_normalization
    from onnxscript.rewriter.ort_fusions.skip_normalization import fuse_skip_rms_normalization

    model = ir.load(str(path))
    _mean_over_last_axis_as_minus_one(model)
    model = _pre_optimize(model)
    counts = {"rms_norm": fuse_rms_normalization(model), "skip_rms_norm": fuse_skip_rms_normalization(model)}
    if any(counts.values()):
        ir.save(model, str(path))
    return counts
