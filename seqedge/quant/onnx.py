"""Quantization recipes for ONNX artifacts, with onnxruntime's own quantization tools.

Each function rewrites the exported fp32 graph file in place (the artifact folder is still the export's
temp folder, so a failure leaves nothing behind):

    fp16         weight matrices stored as float16 (+ a Cast each, folded at load): half the size
    int8         quantize_dynamic: MatMul (per output channel), Gather (the embedding) and LSTM to int8,
                 activations quantized at run time (DynamicQuantizeLinear + MatMulInteger)
    int4         MatMulNBitsQuantizer: MatMul -> MatMulNBits (symmetric int4 blocks along K, accuracy
                 level 0 = fp32 compute; level 4 drifts, see GOTCHAS) and Gather -> GatherBlockQuantized
    int8-static  quantize_static (QDQ, per channel) with activation ranges from calibration text run
                 through the fp32 graph with the state carried, chunk by chunk

What stays float is found by reading the quantized graph back (report.py), not assumed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np


def _quiet():
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    for name in ("onnxruntime.quantization", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)


def fp16(path: Path, ctx) -> None:
    """Weight matrices stored as float16, each widened by a Cast node that onnxruntime folds at load:
    half the file and download; compute stays float32 (the CPU provider's contrib ops have no float16
    kernels). The CUDA provider runs float16 compute: export for it with a GPU profile."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    casts = []
    for init in graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32 and arr.ndim >= 2:
            half = init.name + ".fp16"
            casts.append(helper.make_node("Cast", [half], [init.name], to=onnx.TensorProto.FLOAT,
                                          name=f"cast_{init.name}"))
            init.CopyFrom(numpy_helper.from_array(arr.astype(np.float16), half))
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.save(model, str(path))


def int8(path: Path, ctx) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _quiet()
    tmp = path.with_suffix(".q.onnx")
    quantize_dynamic(str(path), str(tmp), op_types_to_quantize=["MatMul", "Gather", "LSTM"], per_channel=True,
                     weight_type=QuantType.QInt8, extra_options={"EnableSubgraph": True})
    tmp.replace(path)


def int4(path: Path, ctx) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    _quiet()
    q = MatMulNBitsQuantizer(onnx.load(str(path)), bits=4, block_size=ctx.group_size, is_symmetric=True,
                             accuracy_level=0, op_types_to_quantize=("MatMul", "Gather"))
    q.process()
    onnx.save(q.model.model, str(path))


def int8_static(path: Path, ctx) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self, feeds):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    _quiet()
    tmp = path.with_suffix(".q.onnx")
    quantize_static(str(path), str(tmp), Reader(_calibration_feeds(path, ctx)), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["MatMul", "Gemm"], per_channel=True, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, extra_options={"EnableSubgraph": True})
    tmp.replace(path)


def _calibration_feeds(path: Path, ctx, chunk: int = 64) -> list[dict[str, np.ndarray]]:
    """Feeds for the graph over the calibration bytes: chunks of `chunk` tokens with the state carried,
    so activation ranges are seen at real positions of real text."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    state = {name: t.numpy() for name, t in ctx.init_state.items()}
    names = list(state)
    feeds = []
    data = np.frombuffer(ctx.calibration, dtype=np.uint8).astype(np.int64)
    for start in range(0, len(data), chunk):
        feed = {"tokens": data[None, start:start + chunk], **state}
        feeds.append(feed)
        outs = sess.run(None, feed)
        state = dict(zip(names, outs[1:]))
    return feeds


def fold_transposes(path: Path) -> None:
    """Replace `Transpose(initializer)` with the transposed initializer, so a tied output head becomes a
    plain MatMul weight the quantizers can take (the dynamo exporter leaves that Transpose in the graph)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    keep = []
    for node in graph.node:
        if node.op_type == "Transpose" and len(node.input) == 1 and node.input[0] in inits:
            arr = numpy_helper.to_array(inits[node.input[0]])
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(np.transpose(arr, perm)),
                                                             node.output[0]))
        else:
            keep.append(node)
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)
        onnx.save(model, str(path))


IMPLEMENTS = {"fp32": None, "fp16": fp16, "int8": int8, "int4": int4, "int8-static": int8_static}
