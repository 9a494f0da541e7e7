"""Quantization recipes for ONNX artifacts, with onnxruntime's own quantization tools.

Each function rewrites the exported fp32 graph file in place (the artifact folder is still the export's
temp folder, so a failure leaves nothing behind), loading it once and saving it once: the rewrites around
onnxruntime's quantizers (transposes folded, a tied head shared, experts to QMoE) work on the loaded graph (a
130M-parameter fp32 graph is 0.5 GB; each extra save of it cost seconds of the export):

    fp16         weight matrices stored as float16 (+ a Cast each, folded at load): half the size
    int8         quantize_dynamic: MatMul (per output channel), Gather (the embedding) and LSTM to int8,
                 activations quantized at run time (DynamicQuantizeLinear + MatMulInteger)
    int4         MatMulNBitsQuantizer: MatMul -> MatMulNBits (symmetric int4 blocks along K) and Gather ->
                 GatherBlockQuantized; computed with int8 activations (accuracy_level 4: onnxruntime's
                 int8 dot-product kernels, ~1.3x faster decode here) unless the export's accuracy gate
                 fails with them, then in fp32 (level 0; `set_int4_compute`, onnx/export.py). For an x86-64
                 CPU, with seqedge's kernels available, blocks of 32 then run on seqedge's own int4 kernel
                 (`use_int4_kernel`: the same codes and the same int8 compute, float16 scales; 0.5625
                 bytes a weight against MatMulNBits' 0.75 — decode streams the weights), stored in groups of
                 16 rows where N allows (`_group_rows`: 16 rows per vpdpbusd, no horizontal sums)
    int4-head8   int4, the output head in 8-bit MatMulNBits blocks (int8 compute; onnxruntime's own kernel)
    int8-static  quantize_static (QDQ, per channel) with activation ranges from calibration text run
                 through the fp32 graph with the state carried, chunk by chunk
    w8a16, w8a8  QDQ in the encodings Qualcomm's HTP takes (onnxruntime's QNN quantization config: int8
                 symmetric weights per tensor — QNN has no per-channel MatMul —, uint16 / uint8 asymmetric
                 activations, 16-bit Sigmoid scales fixed as QNN requires), calibrated the same way

A mixture of experts (`com.microsoft.MoE`, exporters/onnx/lowerings.py) becomes `QMoE` under int8 (per row)
and int4 (blocks of the group size, the MatMulNBits compute): the same codes seqedge's ExecuTorch kernel
reads (ops/moe_ffn). int8-static leaves it float (QDQ has no MoE form).

A tied embedding/output head is quantized once (int8, int4): the embedding lookup reads the head's
quantized weight (`share_tied`). What stays float is found by reading the quantized graph back
(report.py), not assumed.
"""

from __future__ import annotations

import contextlib
import logging
import types
from pathlib import Path

import numpy as np

from seqedge.runtimes.ort_kernels import DOMAIN, graph_domains, register_for


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
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _quiet()
    model = onnx.load(str(path))
    tied = fold_transposes(model)
    tmp = path.with_suffix(".q.onnx")
    quantize_dynamic(model, str(tmp), op_types_to_quantize=["MatMul", "Gather", "LSTM"], per_channel=True,
                     reduce_range=True, weight_type=QuantType.QInt8, extra_options={"EnableSubgraph": True})
    model = onnx.load(str(tmp))  # the int8 graph: a quarter of the float one
    share_tied(model, tied, bits=8)
    quantize_experts(model, bits=8, block=None)
    onnx.save(model, str(path))
    tmp.unlink()


def int4(path: Path, ctx, head_bits: int = 4) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    _quiet()
    model = onnx.load(str(path))
    tied = fold_transposes(model)
    head = [] if head_bits == 4 else [_head_matmul(model.graph)]
    q = MatMulNBitsQuantizer(model, bits=4, block_size=ctx.group_size, is_symmetric=True, nodes_to_exclude=head,
                             accuracy_level=INT4_COMPUTE["int8"], op_types_to_quantize=("MatMul", "Gather"))
    q.process()
    model = q.model.model
    if head:  # the head alone, in blocks of the same size (MatMulNBits has no per-channel form for every width)
        others = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in head]
        q = MatMulNBitsQuantizer(model, bits=head_bits, block_size=ctx.group_size, is_symmetric=True,
                                 nodes_to_exclude=others, accuracy_level=INT4_COMPUTE["int8"],
                                 op_types_to_quantize=("MatMul",))
        q.process()
        model = q.model.model
    share_tied(model, tied, bits=4)  # a head kept at 8 bits is not shared: the table stays 4-bit, stored apart
    quantize_experts(model, bits=4, block=ctx.group_size, accuracy_level=INT4_COMPUTE["int8"])
    if ctx.int4_kernel:
        use_int4_kernel(model)
    onnx.save(model, str(path))


def int4_head8(path: Path, ctx) -> None:
    int4(path, ctx, head_bits=8)


def _head_matmul(graph) -> str:
    """The MatMul that computes the logits: the producer of the graph's first output, through a bias Add, a
    Reshape or a Cast."""
    from seqedge.errors import UnsupportedError

    producer = {o: n for n in graph.node for o in n.output}
    node = producer.get(graph.output[0].name)
    while node is not None and node.op_type in ("Add", "Reshape", "Cast"):
        node = producer.get(node.input[0])
    if node is None or node.op_type != "MatMul" or not node.name:
        raise UnsupportedError(f"int4-head8 found no MatMul computing {graph.output[0].name!r} in this graph",
                               "use --quant int4 (the head at 4 bits too)")
    return node.name


INT4_COMPUTE = {"int8": 4, "fp32": 0}  # MatMulNBits accuracy_level: what the activations are computed in
INT4_KERNEL = "Int4MatMul"  # seqedge's int4 op (domain seqedge): int8 compute
INT4_SWIGLU = "Int4MatMulSwiGLU"  # the same with a gate/up projection's SwiGLU after it
INT4_NORM = "Int4MatMulSkipRmsNorm"  # the same with the residual add + RMSNorm after it
INT4_CONV = "Int4MatMulConv"  # the same split into x | z, x through Mamba's CausalConv1d
INT4_SCAN = "Int4MambaScan"  # MambaScan whose step is an int4 product (Mamba's dt_proj) computed inside
INT4_KERNELS = (INT4_KERNEL, INT4_SWIGLU, INT4_NORM, INT4_CONV)  # the ones whose codes are inputs 1 and 2
INT4_PRODUCTS = (*INT4_KERNELS, INT4_SCAN)  # every seqedge node holding an int4 product
CONV = "CausalConv1d"  # seqedge's channels-last convolution + SiLU (exporters/onnx/kernels.py)
SCAN = "MambaScan"  # seqedge's Mamba-1 scan with its softplus step and silu(z) gate


def int4_codes(node) -> str:
    """The codes input of a seqedge int4 product node (INT4_PRODUCTS): input 1, or 2 for Int4MambaScan."""
    return node.input[2 if node.op_type == INT4_SCAN else 1]


def grouped_codes(init) -> bool:
    """An initializer of int4 codes in groups of 16 rows, (N/16, ceil(K/32), 256) (ops/int4_matmul `grouped`)."""
    from seqedge.ops.int4_matmul.reference import GROUP

    return len(init.dims) == 3 and init.dims[2] == GROUP * 16


def int4_compute(graph) -> str | None:
    """The compute of a loaded graph's int4 nodes ("int8" or "fp32"), None without any."""
    from onnx import helper

    levels = {helper.get_attribute_value(a) for n in graph.node if n.op_type == "MatMulNBits"
              for a in n.attribute if a.name == "accuracy_level"}
    levels |= {INT4_COMPUTE["int8"] for n in graph.node if n.op_type in INT4_PRODUCTS and n.domain == DOMAIN}
    by_level = {v: k for k, v in INT4_COMPUTE.items()}
    return by_level.get(levels.pop()) if len(levels) == 1 else None


def set_int4_compute(path: Path, compute: str) -> None:
    """Rewrite every MatMulNBits (and QMoE) node to compute in `compute` (the weights stay as they are);
    for fp32, seqedge's int4 nodes go back to MatMulNBits."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    if compute != "int8":
        _back_to_matmulnbits(model.graph)
        if not any(n.domain == DOMAIN for n in model.graph.node):
            kept = [o for o in model.opset_import if o.domain != DOMAIN]
            del model.opset_import[:]
            model.opset_import.extend(kept)
    for node in model.graph.node:
        if node.op_type in ("MatMulNBits", "QMoE"):
            kept = [a for a in node.attribute if a.name != "accuracy_level"]
            del node.attribute[:]
            node.attribute.extend([*kept, helper.make_attribute("accuracy_level", INT4_COMPUTE[compute])])
    onnx.save(model, str(path))


# --- seqedge's int4 kernel (runtimes/native/kernels/int4_matmul_core.h, ops/int4_matmul) -------------------


def use_int4_kernel(model) -> None:
    """MatMulNBits nodes of 4 bits in blocks of 32, int8 compute and no zero points -> seqedge.Int4MatMul on
    the same codes, their scales stored as float16 (a node whose scales float16 cannot hold stays as it is). A
    GatherBlockQuantized reading the same scales (a tied embedding) reads them as float16 and is cast back.
    (The export counts the nodes in its manifest's `fusions`, from the graph it ships.)"""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    halved: set[str] = set()
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "MatMulNBits" or len([i for i in node.input if i]) != 3 or attrs.get("bits") != 4
                or attrs.get("block_size") != 32 or attrs.get("accuracy_level") != INT4_COMPUTE["int8"]
                or node.input[1] not in inits or node.input[2] not in inits):
            continue
        K, N = attrs["K"], attrs["N"]
        blocks = -(-K // 32)  # a partial last block is zero-padded, in both
        codes, scales = inits[node.input[1]], inits[node.input[2]]
        if list(codes.dims) != [N, blocks, 16]:
            continue
        if node.input[2] not in halved:
            arr = numpy_helper.to_array(scales).astype(np.float32)
            small = (arr != 0) & (np.abs(arr) < np.finfo(np.float16).tiny)  # below float16's normals: bits lost
            if arr.size != N * blocks or small.any() or np.abs(arr).max() > np.finfo(np.float16).max:
                continue
            scales.CopyFrom(numpy_helper.from_array(arr.reshape(N, blocks).astype(np.float16), node.input[2]))
            halved.add(node.input[2])
        node.op_type, node.domain = INT4_KERNEL, DOMAIN
        del node.attribute[:]
        node.attribute.append(helper.make_attribute("K", K))  # says the padding; the kernel reads A's K
    if halved:
        _cast_half_gathers(graph, halved)
        _fuse_swiglu(graph)
        _fold_bias_and_split(graph)
        _fold_skip_norm(graph)
        _group_rows(graph)
        _fold_conv(graph)
        _fold_step_into_scan(graph)
        if not any(o.domain == DOMAIN for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid(DOMAIN, 1))


def _users_and_outputs(graph) -> tuple[dict[str, list], set[str]]:
    """The nodes reading each value (a node once per input naming it), and the graph's output names."""
    users: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    return users, {o.name for o in graph.output}


def _ranks(graph) -> dict[str, int]:
    """The rank of each value the graph records a shape for."""
    return {v.name: len(v.type.tensor_type.shape.dim) for v in graph.value_info if v.type.tensor_type.HasField("shape")}


def _fuse_swiglu(graph) -> None:
    """Int4MatMul -> Split(last axis, 2) -> Mul(gate, Sigmoid(gate)) * up, every intermediate used only there (a
    fused gate/up projection, exporters/projections.py), -> one Int4MatMulSwiGLU: three fewer nodes a layer and
    the product never written out."""
    producer = {o: n for n in graph.node for o in n.output}
    users, outputs = _users_and_outputs(graph)
    ranks = _ranks(graph)
    dropped = set()

    def only(name, *nodes):
        return {id(u) for u in users.get(name, [])} == {id(n) for n in nodes} and name not in outputs

    for mul in list(graph.node):
        if mul.op_type != "Mul" or len(mul.input) != 2:
            continue
        for silu_name, up in (mul.input, mul.input[::-1]):
            silu, split = producer.get(silu_name), producer.get(up)
            if silu is None or split is None or silu.op_type != "Mul" or split.op_type != "Split":
                continue
            if len(split.output) != 2 or split.output[1] != up or len([i for i in split.input if i]) != 1:
                continue
            gate = split.output[0]
            sig = next((producer.get(i) for i in silu.input if producer.get(i) is not None
                        and producer[i].op_type == "Sigmoid"), None)
            mm = producer.get(split.input[0])
            if (sig is None or sorted(silu.input) != sorted([gate, sig.output[0]]) or sig.input[0] != gate
                    or mm is None or mm.op_type != INT4_KERNEL or not _splits_last_axis(split, ranks)):
                continue
            if not (only(gate, sig, silu) and only(sig.output[0], silu) and only(silu.output[0], mul)
                    and only(up, mul) and only(mm.output[0], split)):
                continue
            mm.op_type = INT4_SWIGLU
            mm.output[0] = mul.output[0]
            dropped |= {id(split), id(sig), id(silu), id(mul)}
            break
    if dropped:
        kept = [n for n in graph.node if id(n) not in dropped]
        del graph.node[:]
        graph.node.extend(kept)


def _fold_bias_and_split(graph) -> None:
    """Int4MatMul -> Add(a constant (N) bias) and Int4MatMul -> Split(last axis, 2 or 3 parts), the product used
    nowhere else, -> the Int4MatMul with the bias as its 4th input and the split's sizes as its 5th, writing the
    split's outputs itself (Mamba: dt_proj's bias, in_proj's x | z, x_proj's dt | B | C; three fewer nodes a layer,
    whose dispatch cost more than their arithmetic at decode). _unfold_bias_and_split undoes it."""
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in graph.initializer}
    ranks = _ranks(graph)
    users, outputs = _users_and_outputs(graph)
    dropped, made = set(), {}
    for mm in graph.node:
        if mm.op_type != INT4_KERNEL or mm.domain != DOMAIN or len(mm.input) != 3 or mm.input[1] not in inits:
            continue
        N = inits[mm.input[1]].dims[0]
        after = users.get(mm.output[0], [])
        if len(after) == 1 and after[0].op_type == "Add" and after[0].domain == "" and mm.output[0] not in outputs:
            add = after[0]
            bias = next((i for i in add.input if i != mm.output[0]), None)
            b = inits.get(bias)
            if b is not None and list(b.dims) == [N] and b.data_type == TensorProto.FLOAT and len(add.input) == 2:
                mm.input.append(bias)
                mm.output[0] = add.output[0]
                dropped.add(id(add))
                after = users.get(add.output[0], [])
        if len(after) != 1 or after[0].op_type != "Split" or after[0].domain != "" or mm.output[0] in outputs:
            continue
        split = after[0]
        sizes = _split_sizes(split, N, ranks, inits)
        if sizes is None:
            continue
        if len(split.input) > 1 and split.input[1]:
            name = split.input[1]
        else:
            name = made.get(tuple(sizes))
            if name is None:
                name = made[tuple(sizes)] = f"seqedge_split_{'_'.join(map(str, sizes))}"
                graph.initializer.append(numpy_helper.from_array(np.array(sizes, dtype=np.int64), name))
        if len(mm.input) == 3:
            mm.input.append("")
        mm.input.append(name)
        del mm.output[:]
        mm.output.extend(split.output)
        dropped.add(id(split))
    if dropped:
        kept = [n for n in graph.node if id(n) not in dropped]
        del graph.node[:]
        graph.node.extend(kept)


SKIP_NORM = ("com.microsoft", "SkipSimplifiedLayerNormalization")


def _fold_skip_norm(graph) -> None:
    """Int4MatMul -> SkipSimplifiedLayerNormalization (the residual add and RMSNorm after a projection: o_proj and
    down_proj in a Llama layer, out_proj in Mamba's), the product used nowhere else, the norm's gamma a constant and
    its mean and inverse-deviation outputs unused, -> one Int4MatMulSkipRmsNorm at the norm's place: one node fewer
    per norm. _unfold_skip_norm undoes it."""
    from onnx import TensorProto, helper, numpy_helper

    inits = {i.name: i for i in graph.initializer}
    users, outputs = _users_and_outputs(graph)
    producer = {o: n for n in graph.node for o in n.output}
    replaced, dropped, made = {}, set(), {}
    for sln in graph.node:
        if (sln.domain, sln.op_type) != SKIP_NORM or len([i for i in sln.input if i]) != 3 or len(sln.input) != 3:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in sln.attribute}
        gamma = inits.get(sln.input[2])
        stats_used = any(o and (users.get(o) or o in outputs) for o in list(sln.output)[1:3])
        if "epsilon" not in attrs or gamma is None or gamma.data_type != TensorProto.FLOAT or stats_used:
            continue
        for k in (0, 1):
            mm = producer.get(sln.input[k])
            if (mm is None or mm.op_type != INT4_KERNEL or mm.domain != DOMAIN or len(mm.input) != 3
                    or len(mm.output) != 1 or id(mm) in dropped or mm.output[0] in outputs
                    or len(users.get(mm.output[0], [])) != 1 or mm.input[1] not in inits
                    or list(gamma.dims) != [inits[mm.input[1]].dims[0]]):
                continue
            eps = float(attrs["epsilon"])
            name = made.get(eps)
            if name is None:
                name = made[eps] = f"seqedge_epsilon_{len(made)}"
                graph.initializer.append(numpy_helper.from_array(np.array([eps], dtype=np.float32), name))
            total = sln.output[3] if len(sln.output) > 3 and sln.output[3] else f"{sln.output[0]}_sum"
            replaced[id(sln)] = helper.make_node(INT4_NORM, [*mm.input, sln.input[1 - k], sln.input[2], name],
                                                 [sln.output[0], total], name=mm.name, domain=DOMAIN)
            replaced[id(sln)].attribute.extend(mm.attribute)  # K
            dropped.add(id(mm))
            break
    if replaced:
        nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in dropped]
        del graph.node[:]
        graph.node.extend(nodes)


def _unfold_skip_norm(graph) -> None:
    """Int4MatMulSkipRmsNorm -> Int4MatMul, SkipSimplifiedLayerNormalization (what _fold_skip_norm took in)."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in graph.initializer}
    nodes = []
    for node in graph.node:
        if node.op_type != INT4_NORM or node.domain != DOMAIN:
            nodes.append(node)
            continue
        a, codes, scales, skip, gamma, eps = node.input
        product = f"{node.name or node.output[0]}_product"
        mm = helper.make_node(INT4_KERNEL, [a, codes, scales], [product], name=node.name, domain=DOMAIN)
        mm.attribute.extend(node.attribute)
        nodes += [mm,
                  helper.make_node(SKIP_NORM[1], [product, skip, gamma], [node.output[0], "", "", node.output[1]],
                                   domain=SKIP_NORM[0],
                                   epsilon=float(numpy_helper.to_array(inits[eps]).reshape(-1)[0]))]
    del graph.node[:]
    graph.node.extend(nodes)


def _split_sizes(split, N: int, ranks: dict[str, int], inits) -> list[int] | None:
    """The sizes a Split of 2 or 3 outputs cuts the last axis of an (..., N) product into, or None (another axis,
    sizes not known from the graph)."""
    from onnx import helper, numpy_helper

    attrs = {a.name: helper.get_attribute_value(a) for a in split.attribute}
    axis, parts = attrs.get("axis", 0), len(split.output)
    rank = ranks.get(split.input[0])
    if parts not in (2, 3) or "split" in attrs or not (axis == -1 or (rank is not None and axis == rank - 1)):
        return None
    if len(split.input) > 1 and split.input[1]:
        if split.input[1] not in inits:
            return None
        sizes = [int(v) for v in numpy_helper.to_array(inits[split.input[1]]).reshape(-1)]
    elif attrs.get("num_outputs") == parts:
        chunk = -(-N // parts)  # ONNX's rule: equal parts, the last one smaller
        sizes = [chunk] * (parts - 1) + [N - chunk * (parts - 1)]
    else:
        return None
    return sizes if len(sizes) == parts and all(v > 0 for v in sizes) and sum(sizes) == N else None


def _unfold_bias_and_split(graph) -> None:
    """Int4MatMul with a bias or split outputs -> Int4MatMul, Add, Split (what _fold_bias_and_split took in)."""
    from onnx import helper

    nodes = []
    for node in graph.node:
        if node.op_type != INT4_KERNEL or node.domain != DOMAIN or (len(node.input) <= 3 and len(node.output) == 1):
            nodes.append(node)
            continue
        extra, outs, p = list(node.input[3:]), list(node.output), node.name or node.output[0]
        bias, split = (extra + ["", ""])[:2]
        del node.input[3:]
        del node.output[:]
        node.output.append(f"{p}_product")
        nodes.append(node)
        y = node.output[0]
        if bias:
            nodes.append(helper.make_node("Add", [y, bias], [f"{p}_biased" if split else outs[0]]))
            y = nodes[-1].output[0]
        if split:
            nodes.append(helper.make_node("Split", [y, split], outs, axis=-1))
        elif not bias:
            nodes[-1].output[0] = outs[0]
    del graph.node[:]
    graph.node.extend(nodes)


def _splits_last_axis(split, ranks: dict[str, int]) -> bool:
    """The Split halves its input's last axis: axis -1, or the input's rank - 1 where the graph records the
    rank (the exporter writes axis 2 for (batch, T, features))."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in split.attribute}
    if attrs.get("num_outputs") != 2 or "split" in attrs:
        return False
    axis = attrs.get("axis", 0)
    return axis == -1 or (split.input[0] in ranks and axis == ranks[split.input[0]] - 1)


def _cast_half_gathers(graph, halved: set[str]) -> None:
    """GatherBlockQuantized nodes whose scales are now float16 (directly or through a Reshape) give float16:
    cast their output back to float."""
    import onnx
    from onnx import helper

    reshaped = {n.output[0] for n in graph.node if n.op_type == "Reshape" and n.input[0] in halved}
    nodes = []
    for node in graph.node:
        nodes.append(node)
        if node.op_type == "GatherBlockQuantized" and node.input[2] in halved | reshaped:
            out = node.output[0]
            node.output[0] = f"{out}_fp16"
            nodes.append(helper.make_node("Cast", [f"{out}_fp16"], [out], name=f"{node.name}_to_float",
                                          to=onnx.TensorProto.FLOAT))
    del graph.node[:]
    graph.node.extend(nodes)


def _unfuse_swiglu(graph) -> None:
    """Int4MatMulSwiGLU -> Int4MatMul, Split, Sigmoid, Mul, Mul (what _fuse_swiglu took in)."""
    from onnx import helper

    nodes = []
    for node in graph.node:
        if node.op_type != INT4_SWIGLU or node.domain != DOMAIN:
            nodes.append(node)
            continue
        out, p = node.output[0], f"{node.name or node.output[0]}_glu"
        node.op_type, node.output[0] = INT4_KERNEL, f"{p}_product"
        nodes += [node,
                  helper.make_node("Split", [f"{p}_product"], [f"{p}_gate", f"{p}_up"], axis=-1, num_outputs=2),
                  helper.make_node("Sigmoid", [f"{p}_gate"], [f"{p}_sigmoid"]),
                  helper.make_node("Mul", [f"{p}_gate", f"{p}_sigmoid"], [f"{p}_silu"]),
                  helper.make_node("Mul", [f"{p}_silu", f"{p}_up"], [out])]
    del graph.node[:]
    graph.node.extend(nodes)


INT4_GATHER = "Int4Gather"  # a tied embedding's lookup of its head's int4 codes (domain seqedge), either layout


def _group_rows(graph) -> None:
    """The codes and scales of seqedge's int4 nodes in groups of 16 rows (ops/int4_matmul group_rows: the kernel
    multiplies 16 rows per instruction, with no horizontal sums), where N is a multiple of 16 (32 for a SwiGLU's
    halves, 16 for each split output) and nothing but seqedge's int4 nodes reads them. A tied embedding's
    GatherBlockQuantized (+ Cast) becomes seqedge.Int4Gather, which reads the grouped codes; a plain product of N
    rows not a multiple of 16 (mamba-130m's 50,280-wide head) is padded with zero rows to whole groups and its
    output sliced back to N. _ungroup_rows undoes it."""
    import torch
    from onnx import helper, numpy_helper

    from seqedge.ops.int4_matmul import group_rows

    _gathers_read_codes(graph)
    inits = {i.name: i for i in graph.initializer}
    users, _ = _users_and_outputs(graph)

    def padded(node) -> bool:  # a plain product (the head) that may take zero rows past N, or a lookup
        return node.op_type == INT4_GATHER or (node.op_type == INT4_KERNEL and len(node.input) == 3
                                               and len(node.output) == 1)

    def groupable(node) -> bool:
        if node.op_type not in (*INT4_KERNELS, INT4_GATHER) or node.domain != DOMAIN:
            return False
        name = node.input[0 if node.op_type == INT4_GATHER else 1]
        dims = list(inits[name].dims) if name in inits else []
        if len(dims) != 3 or dims[2] != 16 or (dims[0] % (32 if node.op_type == INT4_SWIGLU else 16)
                                               and not padded(node)):
            return False
        split = node.input[4] if node.op_type == INT4_KERNEL and len(node.input) > 4 else ""
        return not split or (split in inits and all(
            int(v) % 16 == 0 for v in numpy_helper.to_array(inits[split]).reshape(-1)))

    def operands(node) -> tuple[str, str]:
        return (node.input[0], node.input[1]) if node.op_type == INT4_GATHER else (node.input[1], node.input[2])

    done: set[str] = set()
    padded_rows: dict[str, int] = {}  # output of a product given zero rows -> its N
    for node in graph.node:
        if not groupable(node) or operands(node)[0] in done:
            continue
        codes, scales = (inits[n] for n in operands(node))
        readers = [u for name in (codes.name, scales.name) for u in users.get(name, [])]
        if not all(groupable(u) and operands(u) == (codes.name, scales.name) for u in readers):
            continue
        c = torch.from_numpy(numpy_helper.to_array(codes).copy())  # (N, nb, 16)
        sc = torch.from_numpy(numpy_helper.to_array(scales).copy())  # (N, nb) float16
        N = c.shape[0]
        if N % 16:  # zero rows to whole groups (zero scales: their products are 0), the output sliced back
            c = torch.cat([c, c.new_zeros(-N % 16, *c.shape[1:])])
            sc = torch.cat([sc, sc.new_zeros(-N % 16, *sc.shape[1:])])
            padded_rows.update({u.output[0]: N for u in readers if u.op_type == INT4_KERNEL})
        c, sc = group_rows(c, sc)
        codes.CopyFrom(numpy_helper.from_array(c.numpy(), codes.name))
        scales.CopyFrom(numpy_helper.from_array(sc.numpy(), scales.name))
        done.add(codes.name)
    if padded_rows:  # each padded product's output sliced back to its N
        nodes = []
        for n in graph.node:
            nodes.append(n)
            N = padded_rows.get(n.output[0]) if n.op_type == INT4_KERNEL and n.domain == DOMAIN else None
            if N is not None:
                bounds = [_int64_constant(graph, inits, name, v)
                          for name, v in (("seqedge_zero", 0), (f"seqedge_rows_{N}", N), ("seqedge_last_axis", -1))]
                out = n.output[0]
                n.output[0] = f"{out}_padded"
                nodes.append(helper.make_node("Slice", [n.output[0], *bounds], [out], name=f"{n.name or out}_rows"))
        del graph.node[:]
        graph.node.extend(nodes)
    _drop_unused_initializers(graph)


def _fold_conv(graph) -> None:
    """Int4MatMul split into two outputs (Mamba's in_proj: x | z), its codes in groups of 16 rows, whose first
    output only a CausalConv1d reads, and that CausalConv1d -> one Int4MatMulConv at the product's place (its
    convolution's weight and bias are constants, its state a graph input: all there before the product): one node
    fewer per layer, and a decode step's convolution runs on the threads that computed each 16 channels of x, with no
    pool dispatch of its own. _unfold_conv undoes it."""
    inits = {i.name: i for i in graph.initializer}
    users, outputs = _users_and_outputs(graph)
    fused, dropped, nodes = {}, set(), list(graph.node)
    for mm in nodes:
        if (mm.op_type != INT4_KERNEL or mm.domain != DOMAIN or len(mm.input) != 5 or len(mm.output) != 2
                or mm.input[1] not in inits or not grouped_codes(inits[mm.input[1]]) or mm.output[0] in outputs):
            continue
        readers = users.get(mm.output[0], [])
        conv = readers[0] if len(readers) == 1 else None
        if (conv is None or conv.op_type != CONV or conv.domain != DOMAIN or list(conv.input[:1]) != [mm.output[0]]
                or len(conv.input) != 4 or len(conv.output) != 2 or not all(conv.input[1:3])
                or not all(i in inits for i in conv.input[1:3])):
            continue
        fused[id(mm)] = [_seqedge_node(INT4_CONV, [*mm.input, *conv.input[1:]],
                                       [conv.output[0], mm.output[1], conv.output[1]], name=mm.name,
                                       attributes=mm.attribute)]
        dropped.add(id(conv))
    _rewrite(graph, nodes, fused, dropped)


def _unfold_conv(graph) -> None:
    """Int4MatMulConv -> Int4MatMul (split into x | z), CausalConv1d (what _fold_conv took in)."""
    def unfolded(node) -> list:
        x = f"{node.name or node.output[0]}_x"
        return [_seqedge_node(INT4_KERNEL, list(node.input[:5]), [x, node.output[1]], name=node.name,
                              attributes=node.attribute),
                _seqedge_node(CONV, [x, *node.input[5:]], [node.output[0], node.output[2]], name=f"{node.name}_conv")]

    nodes = list(graph.node)
    _rewrite(graph, nodes, {id(n): unfolded(n) for n in nodes if n.op_type == INT4_CONV and n.domain == DOMAIN})


def _fold_step_into_scan(graph) -> None:
    """Int4MatMul of one output (Mamba's dt_proj, with its bias or without), codes in groups of 16 rows, read only
    as a MambaScan's step (its input 1) -> that MambaScan as one Int4MambaScan computing the product itself: one node
    fewer per layer, and a decode step's product runs on the thread that scans the same 16 channels. The node takes
    the scan's place (the product's inputs are all there before it). _unfold_step_from_scan undoes it."""
    inits = {i.name: i for i in graph.initializer}
    users, outputs = _users_and_outputs(graph)
    producer = {o: n for n in graph.node for o in n.output}
    fused, dropped, nodes = {}, set(), list(graph.node)
    for scan in nodes:
        if scan.op_type != SCAN or scan.domain != DOMAIN or len(scan.input) != 8:
            continue
        mm = producer.get(scan.input[1])
        if (mm is None or mm.op_type != INT4_KERNEL or mm.domain != DOMAIN or len(mm.input) not in (3, 4)
                or len(mm.output) != 1 or mm.output[0] in outputs
                or [id(u) for u in users.get(mm.output[0], [])] != [id(scan)]
                or mm.input[1] not in inits or not grouped_codes(inits[mm.input[1]])):
            continue
        bias = mm.input[3] if len(mm.input) == 4 else ""
        fused[id(scan)] = [_seqedge_node(INT4_SCAN, [scan.input[0], *mm.input[:3], bias, *scan.input[2:]],
                                         list(scan.output), name=scan.name, attributes=mm.attribute)]
        dropped.add(id(mm))
    _rewrite(graph, nodes, fused, dropped)


def _unfold_step_from_scan(graph) -> None:
    """Int4MambaScan -> Int4MatMul (the step), MambaScan (what _fold_step_into_scan took in)."""
    def unfolded(node) -> list:
        u, dt, codes, scales, bias, *rest = node.input
        step = f"{node.name or node.output[0]}_step"
        return [_seqedge_node(INT4_KERNEL, [dt, codes, scales, *([bias] if bias else [])], [step],
                              name=f"{node.name}_step", attributes=node.attribute),
                _seqedge_node(SCAN, [u, step, *rest], list(node.output), name=node.name)]

    nodes = list(graph.node)
    _rewrite(graph, nodes, {id(n): unfolded(n) for n in nodes if n.op_type == INT4_SCAN and n.domain == DOMAIN})


def _rewrite(graph, nodes: list, replaced: dict[int, list], dropped: set[int] = frozenset()) -> None:
    """The graph's `nodes` (a list held while their ids are keys: a protobuf wrapper's id may be reused once it is
    freed), each whose id `replaced` holds -> its nodes there, in its place; those `dropped` names removed."""
    if replaced or dropped:
        kept = [m for n in nodes if id(n) not in dropped for m in replaced.get(id(n), [n])]
        del graph.node[:]
        graph.node.extend(kept)


def _seqedge_node(op: str, inputs: list[str], outputs: list[str], name: str, attributes=()) -> object:
    """A node of seqedge's domain, with `attributes` (another node's) copied."""
    from onnx import helper

    node = helper.make_node(op, inputs, outputs, name=name, domain=DOMAIN)
    node.attribute.extend(attributes)
    return node


def _int64_constant(graph, inits: dict, name: str, value: int) -> str:
    """`name`, a one-element int64 initializer holding `value`, added to the graph unless it is there already."""
    from onnx import numpy_helper

    if name not in inits:
        inits[name] = numpy_helper.from_array(np.array([value], dtype=np.int64), name)
        graph.initializer.append(inits[name])
    return name


def _gathers_read_codes(graph) -> None:
    """A tied embedding's lookup of its head's int4 codes — GatherBlockQuantized(Reshape(codes), indices,
    Reshape(scales)) -> Cast to float (share_tied, _cast_half_gathers) — as one seqedge.Int4Gather(codes, scales,
    indices), which reads the codes in either layout (GatherBlockQuantized reads rows only). Only where the table
    is as wide as the codes' blocks (K a multiple of 32)."""
    from onnx import TensorProto, helper

    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    users, _ = _users_and_outputs(graph)
    replaced, dropped = {}, set()
    for gq in graph.node:
        if gq.op_type != "GatherBlockQuantized" or len(gq.input) != 3:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in gq.attribute}
        data, scales = producer.get(gq.input[0]), producer.get(gq.input[2])
        after = users.get(gq.output[0], [])
        if (data is None or scales is None or data.op_type != "Reshape" or scales.op_type != "Reshape"
                or attrs.get("bits") != 4 or attrs.get("block_size") != 32 or attrs.get("gather_axis", 0) != 0
                or attrs.get("quantize_axis") != 1 or len(after) != 1 or after[0].op_type != "Cast"):
            continue
        codes, halves = inits.get(data.input[0]), inits.get(scales.input[0])
        cast = after[0]
        to = next((helper.get_attribute_value(a) for a in cast.attribute if a.name == "to"), None)
        if (codes is None or halves is None or list(codes.dims[2:]) != [16] or len(codes.dims) != 3
                or halves.data_type != TensorProto.FLOAT16 or to != TensorProto.FLOAT):
            continue
        replaced[id(gq)] = helper.make_node(INT4_GATHER, [codes.name, halves.name, gq.input[1]], list(cast.output),
                                            name=gq.name, domain=DOMAIN)
        dropped.add(id(cast))
        dropped |= {id(n) for n in (data, scales) if len(users.get(n.output[0], [])) == 1}
    if replaced:
        nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in dropped]
        del graph.node[:]
        graph.node.extend(nodes)


def _ungroup_rows(graph) -> None:
    """seqedge's int4 codes and scales in groups of 16 rows back to rows (MatMulNBits' layout; a padded product
    keeps its zero rows and its Slice), and each Int4Gather back to GatherBlockQuantized + Cast."""
    import torch
    from onnx import TensorProto, helper, numpy_helper

    from seqedge.ops.int4_matmul import ungroup_rows

    inits = {i.name: i for i in graph.initializer}
    pairs = {(n.input[1], n.input[2]) for n in graph.node if n.op_type in INT4_KERNELS and n.domain == DOMAIN}
    pairs |= {(n.input[0], n.input[1]) for n in graph.node if n.op_type == INT4_GATHER and n.domain == DOMAIN}
    for name, scale_name in pairs:
        codes, scales = inits.get(name), inits.get(scale_name)
        if codes is None or scales is None or not grouped_codes(codes):
            continue
        c, sc = ungroup_rows(torch.from_numpy(numpy_helper.to_array(codes).copy()),
                             torch.from_numpy(numpy_helper.to_array(scales).copy()))
        codes.CopyFrom(numpy_helper.from_array(c.numpy(), codes.name))
        scales.CopyFrom(numpy_helper.from_array(sc.numpy(), scales.name))
    nodes = []
    for node in graph.node:
        if node.op_type != INT4_GATHER or node.domain != DOMAIN:
            nodes.append(node)
            continue
        codes, scale_name, indices = node.input
        N, nb, _ = inits[codes].dims
        p, out = node.name or node.output[0], node.output[0]
        graph.initializer.extend([numpy_helper.from_array(np.array([N, nb * 16], dtype=np.int64), f"{p}_data_shape"),
                                  numpy_helper.from_array(np.array([N, nb], dtype=np.int64), f"{p}_scales_shape")])
        nodes += [helper.make_node("Reshape", [codes, f"{p}_data_shape"], [f"{p}_data"]),
                  helper.make_node("Reshape", [scale_name, f"{p}_scales_shape"], [f"{p}_scales"]),
                  helper.make_node("GatherBlockQuantized", [f"{p}_data", indices, f"{p}_scales"], [f"{out}_fp16"],
                                   name=node.name, domain="com.microsoft", block_size=32, gather_axis=0,
                                   quantize_axis=1, bits=4),
                  helper.make_node("Cast", [f"{out}_fp16"], [out], name=f"{p}_to_float", to=TensorProto.FLOAT)]
    del graph.node[:]
    graph.node.extend(nodes)


def _back_to_matmulnbits(graph) -> None:
    """seqedge.Int4MatMul -> MatMulNBits (the same codes; the scales as float, a second copy when a
    tied embedding still reads the float16 ones)."""
    from onnx import helper, numpy_helper

    _unfold_step_from_scan(graph)
    _unfold_conv(graph)
    _ungroup_rows(graph)
    _unfuse_swiglu(graph)
    _unfold_skip_norm(graph)
    _unfold_bias_and_split(graph)
    inits = {i.name: i for i in graph.initializer}
    made: set[str] = set()
    for node in graph.node:
        if node.op_type != INT4_KERNEL or node.domain != DOMAIN:
            continue
        N, blocks, _ = inits[node.input[1]].dims
        K = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "K"), blocks * 32)
        name = f"{node.input[2]}_fp32"
        if name not in made:
            graph.initializer.append(numpy_helper.from_array(
                numpy_helper.to_array(inits[node.input[2]]).astype(np.float32), name))
            made.add(name)
        node.input[2] = name
        node.op_type, node.domain = "MatMulNBits", "com.microsoft"
        del node.attribute[:]
        node.attribute.extend([helper.make_attribute("K", K), helper.make_attribute("N", N),
                               helper.make_attribute("bits", 4), helper.make_attribute("block_size", 32)])
    _drop_unused_initializers(graph)


def quantize_experts(model, bits: int, block: int | None, accuracy_level: int = 0) -> None:
    """Every `com.microsoft.MoE` node of the loaded graph `model` to `QMoE` with `bits`-bit expert weights: per
    row (block None) or in blocks of `block` along the input — where onnxruntime takes that block (a power of
    two >= 16 dividing both widths); otherwise the node stays float and the report lists its weights."""
    import torch
    from onnx import helper, numpy_helper

    from seqedge.ops.moe_ffn import quantize_experts as codes_of

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    changed = False
    for node in list(graph.node):
        if node.op_type != "MoE" or node.domain != "com.microsoft" or not {node.input[2], node.input[4]} <= set(inits):
            continue
        w13, w2 = (numpy_helper.to_array(inits[node.input[i]]) for i in (2, 4))  # (E, 2I, C), (E, C, I)
        C, inner = w13.shape[2], w2.shape[2]
        if block is not None and not (block >= 16 and block & (block - 1) == 0 and C % block == 0 and inner % block == 0):
            continue
        quantized = []
        for name, w in ((node.input[2], w13), (node.input[4], w2)):
            codes, scales = codes_of(torch.from_numpy(w.copy()), bits, block or w.shape[2])
            scales = scales.numpy() if block else scales.numpy()[..., 0]  # per row: (E, N)
            graph.initializer.extend([numpy_helper.from_array(codes.numpy(), f"{name}_Q{bits}"),
                                      numpy_helper.from_array(scales, f"{name}_Q{bits}_scales")])
            quantized += [f"{name}_Q{bits}", f"{name}_Q{bits}_scales"]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attrs.update(expert_weight_bits=bits, accuracy_level=accuracy_level, **({"block_size": block} if block else {}))
        out = node.output[0]
        renormalised = attrs.get("normalize_routing_weights", 0) == 1
        qmoe = helper.make_node(
            "QMoE", [node.input[0], node.input[1], quantized[0], quantized[1], "", quantized[2], quantized[3]],
            [out if renormalised else f"{out}_renormalised"], name=node.name, domain="com.microsoft", **attrs)
        _replace(graph, node, qmoe, *([] if renormalised else _undo_renormalisation(graph, node, attrs["k"], C)))
        changed = True
    if changed:
        _drop_unused_initializers(graph)


def _undo_renormalisation(graph, node, k: int, C: int) -> list:
    """onnxruntime 1.32's CPU QMoE renormalises the k chosen routing weights even at
    normalize_routing_weights=0 (its float MoE does not; measured against the reference): for a model that
    does not renormalise (OLMoE), scale each token's output back by the sum of its k chosen probabilities."""
    from onnx import helper, numpy_helper

    x, logits, out = node.input[0], node.input[1], node.output[0]
    p = f"{node.name}_unnorm"
    graph.initializer.extend([numpy_helper.from_array(np.array([k], np.int64), f"{p}_k"),
                              numpy_helper.from_array(np.array([-1], np.int64), f"{p}_last"),
                              numpy_helper.from_array(np.array([-1, C], np.int64), f"{p}_rows")])
    return [
        helper.make_node("Softmax", [logits], [f"{p}_probs"], axis=-1),  # (tokens, E)
        helper.make_node("TopK", [f"{p}_probs", f"{p}_k"], [f"{p}_top", f"{p}_idx"], axis=-1),  # (tokens, k)
        helper.make_node("ReduceSum", [f"{p}_top", f"{p}_last"], [f"{p}_sum"], keepdims=1),  # (tokens, 1)
        helper.make_node("Reshape", [f"{out}_renormalised", f"{p}_rows"], [f"{p}_y"]),  # (tokens, C)
        helper.make_node("Mul", [f"{p}_y", f"{p}_sum"], [f"{p}_scaled"]),
        helper.make_node("Shape", [x], [f"{p}_shape"]),
        helper.make_node("Reshape", [f"{p}_scaled", f"{p}_shape"], [out]),  # like x
    ]


def _reader(feeds: list[dict[str, np.ndarray]]):
    """onnxruntime's calibration reader over prepared feeds."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    return Reader()


def int8_static(path: Path, ctx) -> None:
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    _quiet()
    model = onnx.load(str(path))
    nodes = len(model.graph.node)
    fold_transposes(model)
    if len(model.graph.node) != nodes:  # a Transpose was folded: the calibration sessions read the file
        onnx.save(model, str(path))
    tmp = path.with_suffix(".q.onnx")
    domains = graph_domains(path)  # the graph's op domains: seqedge's kernels are registered when it uses them
    with _calibrator_sessions_for(domains):
        quantize_static(str(path), str(tmp), _reader(_calibration_feeds(path, ctx, domains)), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul", "Gemm"], per_channel=True, reduce_range=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        extra_options={"EnableSubgraph": True})
    tmp.replace(path)


def qnn_qdq(path: Path, ctx, feeds: list[dict[str, np.ndarray]] | None = None) -> None:
    """The QNN HTP recipes (w8a16, w8a8). `feeds`: calibration inputs for a graph whose inputs are not the
    dynamic interface (a static artifact's chunk and step graphs, exporters/onnx/static.py)."""
    from onnxruntime.quantization import QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config, qnn_preprocess_model

    _quiet()
    activations = {"w8a16": QuantType.QUInt16, "w8a8": QuantType.QUInt8}[ctx.recipe.name]
    domains = graph_domains(path)
    if feeds is None:
        feeds = _calibration_feeds(path, ctx, domains)
    pre, tmp = path.with_suffix(".pre.onnx"), path.with_suffix(".q.onnx")
    source = pre if qnn_preprocess_model(str(path), str(pre)) else path
    config = get_qnn_qdq_config(str(source), _reader(feeds), activation_type=activations, weight_type=QuantType.QInt8)
    quantize(str(source), str(tmp), config)
    tmp.replace(path)
    pre.unlink(missing_ok=True)


@contextlib.contextmanager
def _calibrator_sessions_for(domains: set[str]):
    """onnxruntime's calibrator opens its own session on the graph (calibrate.py: `onnxruntime.SessionOptions()`)
    with no way to register a custom-op library: while it runs, its module sees an onnxruntime whose
    SessionOptions come with seqedge's kernels when the graph's `domains` include theirs."""
    from onnxruntime.quantization import calibrate

    real = calibrate.onnxruntime
    view = types.SimpleNamespace(**{k: getattr(real, k) for k in dir(real) if not k.startswith("__")})

    def session_options():
        opts = real.SessionOptions()
        register_for(opts, domains)
        return opts

    view.SessionOptions = session_options
    calibrate.onnxruntime = view
    try:
        yield
    finally:
        calibrate.onnxruntime = real


def _calibration_feeds(path: Path, ctx, domains: set[str], chunk: int = 64) -> list[dict[str, np.ndarray]]:
    """Feeds for the graph over the calibration bytes: chunks of `chunk` tokens with the state carried,
    so activation ranges are seen at real positions of real text."""
    import onnxruntime as ort

    from seqedge.runtimes.onnxruntime import ORT_TYPES

    opts = ort.SessionOptions()
    register_for(opts, domains)
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    # each in the graph's type (a cache may be float16: fusions.half_attention_caches)
    graph_types = {i.name: ORT_TYPES.get(i.type) for i in sess.get_inputs()}
    state = {name: np.asarray(t.numpy(), dtype=graph_types.get(name)) for name, t in ctx.init_state.items()}
    names = list(state)
    feeds = []
    data = np.frombuffer(ctx.calibration, dtype=np.uint8).astype(np.int64)
    for start in range(0, len(data), chunk):
        feed = {"tokens": data[None, start:start + chunk], **state}
        feeds.append(feed)
        outs = sess.run(None, feed)
        state = dict(zip(names, outs[1:]))
    return feeds


def fold_transposes(model) -> list[tuple[str, str]]:
    """Replace `Transpose(initializer)` in the loaded graph `model` with the transposed initializer, so a tied
    output head becomes a plain MatMul weight the quantizers can take (the dynamo exporter leaves that
    Transpose in the graph). Returns the tied pairs found: (embedding table read by a Gather, the head's
    transposed weight)."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    gathered = {n.input[0] for n in graph.node if n.op_type == "Gather"}
    keep, tied = [], []
    for node in graph.node:
        if node.op_type == "Transpose" and len(node.input) == 1 and node.input[0] in inits:
            arr = numpy_helper.to_array(inits[node.input[0]])
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(np.transpose(arr, perm)),
                                                             node.output[0]))
            if node.input[0] in gathered and arr.ndim == 2:
                tied.append((node.input[0], node.output[0]))
        else:
            keep.append(node)
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)
    return tied


# --- one copy of a tied embedding / output head --------------------------------------------------------
# The quantizers quantize the embedding (Gather) and the head (MatMul) of a tied model separately: two
# copies of the largest matrix. These rewrites make the embedding lookup read the head's quantized
# weight instead; the values are the same (per-row groups of W = per-column groups of W^T).


def share_tied(model, tied: list[tuple[str, str]], bits: int) -> None:
    """The loaded quantized graph `model` with each tied pair's embedding reading the head's weights."""
    changed = any(_share_int4(model.graph, table, head) if bits == 4 else _share_int8(model.graph, table, head)
                  for table, head in tied)
    if changed:
        _drop_unused_initializers(model.graph)


def _share_int4(graph, table: str, head: str) -> bool:
    """GatherBlockQuantized(table_Q4 int4) -> GatherBlockQuantized(Reshape(head_Q4 uint8), bits=4): the
    MatMulNBits weight (N = vocab, K blocks) is the same packed bytes, zero point 8."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in graph.initializer}
    mm = next((n for n in graph.node if n.op_type == "MatMulNBits" and n.input[1] == f"{head}_Q4"), None)
    gq = next((n for n in graph.node if n.op_type == "GatherBlockQuantized" and n.input[0] == f"{table}_Q4"), None)
    if mm is None or gq is None or len(gq.input) > 3 or len(mm.input) > 3:
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in mm.attribute}
    gattrs = {a.name: helper.get_attribute_value(a) for a in gq.attribute}
    packed = numpy_helper.to_array(inits[mm.input[1]])  # (N, K/block, block/2) uint8
    q = numpy_helper.to_array(inits[gq.input[0]]).astype(np.int16)  # (V, D) int4 values
    unpacked = np.stack([packed & 0xF, packed >> 4], axis=-1).reshape(packed.shape[0], -1).astype(np.int16) - 8
    if attrs.get("block_size") != gattrs.get("block_size") or unpacked.shape != q.shape:
        return False
    scales_mm, scales_gq = (numpy_helper.to_array(inits[n]).reshape(-1) for n in (mm.input[2], gq.input[2]))
    differ = unpacked != q  # the two quantizers round a few exact ties differently: one level, a few in 1e6
    if (not np.allclose(scales_mm, scales_gq, rtol=1e-6, atol=0) or differ.mean() > 1e-4
            or np.abs(unpacked - q).max() > 1):
        return False
    V, D = q.shape
    p = f"{head}_as_table"
    graph.initializer.extend([numpy_helper.from_array(np.array([V, D // 2], dtype=np.int64), f"{p}_data_shape"),
                              numpy_helper.from_array(np.array([V, D // attrs["block_size"]], dtype=np.int64),
                                                      f"{p}_scales_shape")])
    _replace(graph, gq,
             helper.make_node("Reshape", [mm.input[1], f"{p}_data_shape"], [f"{p}_data"]),  # (V, D/2) uint8
             helper.make_node("Reshape", [mm.input[2], f"{p}_scales_shape"], [f"{p}_scales"]),  # (V, D/block)
             helper.make_node("GatherBlockQuantized", [f"{p}_data", gq.input[1], f"{p}_scales"], list(gq.output),
                              name=gq.name, domain="com.microsoft", block_size=attrs["block_size"],
                              gather_axis=gattrs.get("gather_axis", 0), quantize_axis=1, bits=4))
    return True


def _share_int8(graph, table: str, head: str) -> bool:
    """Gather(table_quantized) + DequantizeLinear -> rows of the head's int8 weight (columns of W^T,
    per-channel scale, zero point 0): Gather(axis=1), Transpose, Cast, x scale."""
    from onnx import TensorProto, helper, numpy_helper

    inits = {i.name: i for i in graph.initializer}
    w, scale, zp = f"{head}_quantized", f"{head}_scale", f"{head}_zero_point"
    gather = next((n for n in graph.node if n.op_type == "Gather" and n.input[0] == f"{table}_quantized"), None)
    if gather is None or w not in inits or scale not in inits:
        return False
    deq = next((n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] == gather.output[0]), None)
    if deq is None or (zp in inits and numpy_helper.to_array(inits[zp]).any()):
        return False
    if numpy_helper.to_array(inits[scale]).ndim != 1:  # per-channel only
        return False
    ids, out = gather.input[1], deq.output[0]
    p = f"{head}_as_table"
    nodes = [
        helper.make_node("Gather", [w, ids], [f"{p}_cols"], axis=1),  # (D, *ids)
        helper.make_node("Cast", [f"{p}_cols"], [f"{p}_cols_f"], to=TensorProto.FLOAT),
        helper.make_node("Gather", [scale, ids], [f"{p}_scale"], axis=0),  # (*ids)
        helper.make_node("Mul", [f"{p}_cols_f", f"{p}_scale"], [f"{p}_rows_t"]),  # (D, *ids)
        helper.make_node("Transpose", [f"{p}_rows_t"], [out], perm=[1, 2, 0]),  # (B, T, D)
    ]
    graph.node.remove(deq)
    _replace(graph, gather, *nodes)
    return True


def _replace(graph, old, *new) -> None:
    nodes = list(graph.node)
    i = nodes.index(old)
    nodes[i:i + 1] = list(new)
    del graph.node[:]
    graph.node.extend(_toposort(nodes, {i.name for i in graph.input} | {i.name for i in graph.initializer}))


def _toposort(nodes, available: set[str]):
    done, out, pending = set(available) | {""}, [], list(nodes)
    while pending:
        rest = []
        for n in pending:
            if all(i in done for i in n.input):
                out.append(n)
                done.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):  # inputs produced inside subgraphs or outer scope: keep order
            out += rest
            break
        pending = rest
    return out


def _drop_unused_initializers(graph) -> None:
    used = {i for n in graph.node for i in n.input}
    for n in graph.node:  # names read inside subgraphs (Scan bodies) count too
        for a in n.attribute:
            for g in ([a.g] if a.g is not None and a.g.node else []) + list(a.graphs):
                used |= {i for sn in g.node for i in sn.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


IMPLEMENTS = {"fp32": None, "fp16": fp16, "int8": int8, "int4": int4, "int4-head8": int4_head8,
              "int8-static": int8_static, "w8a16": qnn_qdq, "w8a8": qnn_qdq}
