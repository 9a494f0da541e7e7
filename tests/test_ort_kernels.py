"""seqedge's onnxruntime kernel library (libseqedge_ort_kernels, runtimes/ort_kernels.py) in real sessions:
each op (SelectiveScan, MambaScan, CausalConv1d, Int4MatMul, Attention) against its reference at every x86-64 feature level and
thread count, and the kernels' own checks of what an untrusted graph feeds them. Every onnxruntime API slot the library declares
(ort_abi.h) is exercised here: registration, inputs, shapes, outputs, the thread pool and error statuses."""

import os
import platform
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from seqedge.ops import (
    causal_conv1d_ref,
    int4_mamba_scan_ref,
    int4_matmul_conv_ref,
    int4_matmul_ref,
    int4_matmul_skip_rms_norm_ref,
    int4_matmul_swiglu_ref,
    mamba_scan_ref,
    selective_scan_ref,
)
from seqedge.ops.attention.reference import attention_ref
from seqedge.ops.int4_matmul import group_rows, int4_gather_ref
from seqedge.runtimes.ort_kernels import DOMAIN, graph_domains, library, register_for
from tests.conftest import best_kernel_isa

NAMES = ("u", "delta", "A", "B", "C", "D", "state")
RANKS = {"u": 3, "delta": 3, "A": 2, "B": 3, "C": 3, "D": 1, "state": 3, "z": 3, "x": 3, "weight": 3, "bias": 1}
OPS = {"SelectiveScan": NAMES, "MambaScan": (*NAMES, "z"), "CausalConv1d": ("x", "weight", "bias", "state")}


def scan_graph(path, ranks=RANKS, op="SelectiveScan"):
    """One node of `op`, every dimension symbolic (so onnxruntime checks nothing and the kernel must)."""
    names = OPS[op]
    node = helper.make_node(op, list(names), ["y", "state_out"], domain=DOMAIN)
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [f"{n}{i}" for i in range(ranks[n])]) for n in names]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "state_out")]
    model = helper.make_model(helper.make_graph([node], "scan", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid(DOMAIN, 1)])
    path.write_bytes(model.SerializeToString())
    return path


def operands(Bt, T, D, N, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"u": torch.randn(Bt, T, D, generator=g), "delta": torch.rand(Bt, T, D, generator=g) * 0.5 + 1e-3,
            "A": -torch.rand(D, N, generator=g) * 4, "B": torch.randn(Bt, T, N, generator=g),
            "C": torch.randn(Bt, T, N, generator=g), "D": torch.randn(D, generator=g),
            "state": torch.randn(Bt, D, N, generator=g)}


# where a kernel's items run: onnxruntime's intra-op pool of n threads, or seqedge's own team of n (team.h;
# 3 on a 2-core machine: items that do not split evenly, a worker that is late)
THREADINGS = [("pool", 1), ("pool", 2), ("team", 2), ("team", 3)]


def session(path, threads=("pool", 2)):
    how, n = threads
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = n
    register_for(opts, graph_domains(path), team_threads=n if how == "team" else 0)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("threads", THREADINGS)
@pytest.mark.parametrize("Bt,T,D,N", [(1, 1, 16, 16), (2, 1, 40, 32), (2, 1, 40, 24), (2, 1, 33, 4), (2, 37, 40, 16),
                                      (1, 300, 33, 4), (2, 600, 40, 16), (3, 5, 7, 64), (2, 3, 1, 1)])
def test_selective_scan_matches_its_reference(tmp_path, Bt, T, D, N, threads):
    """Channel counts that are and are not multiples of the kernel's 16-lane blocks; one step with states in
    vectors of 16 (whole blocks, N a multiple of 16: two vectors a channel at 32, over two batch rows), of 8,
    and one by one (N not a multiple of 8); long T (run in chunks of 256 steps, the state
    carried between them: 300 and 600 steps, two batch rows), a large state, one channel of one state; the state
    comes back as the reference carries it."""
    sess = session(scan_graph(tmp_path / "scan.onnx"), threads)
    x = operands(Bt, T, D, N, seed=T + D)
    y, h = sess.run(None, {n: x[n].numpy() for n in NAMES})
    y_ref, h_ref = selective_scan_ref(*(x[n] for n in NAMES))
    assert y.shape == (Bt, T, D) and h.shape == (Bt, D, N)
    assert np.abs(y - y_ref.numpy()).max() <= 1e-4 * max(1.0, y_ref.abs().max().item())
    assert np.abs(h - h_ref.numpy()).max() <= 1e-4 * max(1.0, h_ref.abs().max().item())


def mamba_operands(Bt, T, D, N, seed=0):
    """MambaScan's operands: delta before its softplus (both signs, and past torch's threshold of 20), z both signs."""
    x = operands(Bt, T, D, N, seed)
    g = torch.Generator().manual_seed(seed + 1)
    return {**x, "delta": torch.randn(Bt, T, D, generator=g) * 4 - 2 + (torch.rand(Bt, T, D, generator=g) > 0.95) * 22,
            "z": torch.randn(Bt, T, D, generator=g) * 3}


def conv_operands(Bt, T, D, K, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(Bt, T, D, generator=g) * 2, "weight": torch.randn(D, 1, K, generator=g),
            "bias": torch.randn(D, generator=g), "state": torch.randn(Bt, D, K - 1, generator=g)}


def conv_ref_channels_last(x, weight, bias, state):
    y, s = causal_conv1d_ref(x.transpose(1, 2), weight, bias, state)  # the reference is channels first
    return y.transpose(1, 2), s


FUSED_CASES = {  # op: (operands(Bt, T, D, size, seed), reference)
    "MambaScan": (mamba_operands, mamba_scan_ref),
    "CausalConv1d": (conv_operands, conv_ref_channels_last),
}


@pytest.mark.parametrize("threads", THREADINGS)
@pytest.mark.parametrize("Bt,T,D,size", [(1, 1, 16, 16), (2, 1, 40, 32), (2, 1, 40, 4), (2, 37, 40, 4), (1, 300, 33, 4), (2, 600, 40, 4),
                                        (3, 2, 7, 3), (2, 3, 1, 1)])
@pytest.mark.parametrize("op", FUSED_CASES)
def test_mamba_block_op_matches_its_reference(tmp_path, op, Bt, T, D, size, threads):
    """The ops Mamba's block fuses into: MambaScan (softplus step, silu(z) gate; size = N) and the channels-last
    CausalConv1d (size = K; T shorter than the window included): partial 16-lane blocks, one step (the
    decode paths) with a full and a partial block over two batch rows, long T (the scan in chunks of 256 steps: 300
    and 600, two batch rows)."""
    make, reference = FUSED_CASES[op]
    sess = session(scan_graph(tmp_path / "op.onnx", op=op), threads)
    x = make(Bt, T, D, size, seed=T + D)
    y, h = sess.run(None, {n: x[n].numpy() for n in OPS[op]})
    y_ref, h_ref = reference(*(x[n] for n in OPS[op]))
    assert y.shape == tuple(y_ref.shape) and h.shape == tuple(h_ref.shape)
    for got, want in ((y, y_ref.numpy()), (h, h_ref.numpy())):  # h is empty for a width-1 convolution
        assert np.abs(got - want).max(initial=0) <= 1e-4 * max(1.0, np.abs(want).max(initial=0))


def int4_graph(path, matmulnbits=None, op="Int4MatMul", bias=False, outputs=1, grouped=False):
    """One seqedge.Int4MatMul node, B and scales fed as inputs with symbolic shapes (the kernel checks them;
    `grouped`: scales of rank 3, the layout in groups of 16 rows);
    `bias`: a bias input too; `outputs` > 1: that many outputs, and the split input giving their sizes;
    `matmulnbits` (operands): onnxruntime's own int8-compute int4 kernel on the same codes and (float) scales,
    held as initializers as an int4 graph holds them (with B an input, onnxruntime computes in fp32)."""
    inputs = [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["bt", "t", "k"])]
    inits = []
    names = [f"Y{j}" if j else "Y" for j in range(outputs)]
    if matmulnbits is not None:
        codes, scales = matmulnbits["B"].numpy(), matmulnbits["scales"].float().numpy()
        node = helper.make_node("MatMulNBits", ["A", "B", "scales"], ["Y"], domain="com.microsoft",
                                K=matmulnbits["A"].shape[-1], N=codes.shape[0], bits=4, block_size=32, accuracy_level=4)
        inits = [numpy_helper.from_array(codes, "B"), numpy_helper.from_array(scales, "scales")]
    else:
        extra = (["bias"] if bias else [""] if outputs > 1 else []) + (["split"] if outputs > 1 else [])
        node = helper.make_node(op, ["A", "B", "scales", *extra], names, domain=DOMAIN)
        inputs += [helper.make_tensor_value_info("B", TensorProto.UINT8, ["n", "blocks", "bytes"]),
                   helper.make_tensor_value_info("scales", TensorProto.FLOAT16,
                                                 ["n", "blocks", "lanes"] if grouped else ["n", "blocks"])]
        inputs += [helper.make_tensor_value_info("bias", TensorProto.FLOAT, ["nb"])] if bias else []
        inputs += [helper.make_tensor_value_info("split", TensorProto.INT64, ["parts"])] if outputs > 1 else []
    model = helper.make_model(helper.make_graph([node], "int4", inputs, [helper.make_tensor_value_info(
        n, TensorProto.FLOAT, None) for n in names], inits), opset_imports=[helper.make_opsetid("", 20),
                                                             helper.make_opsetid(DOMAIN, 1),
                                                             helper.make_opsetid("com.microsoft", 1)])
    path.write_bytes(model.SerializeToString())
    return path


def int4_operands(Bt, T, K, N, seed=0):
    """Random codes (the padding of a partial last block too: it must not count) and float16 scales."""
    g = torch.Generator().manual_seed(seed)
    blocks = -(-K // 32)
    return {"A": torch.randn(Bt, T, K, generator=g) * 3, "B": torch.randint(0, 256, (N, blocks, 16), generator=g,
                                                                          dtype=torch.uint8),
            "scales": (torch.rand(N, blocks, generator=g) * 0.05 + 1e-3).half()}


# (Bt, T, K, N); from 16 rows (Bt * T) on, prompts take the prompt kernel (items of 32 output rows, each packed);
# fewer go 8, then 4 rows at a time, then row by row (13: 8 + 4 + 1). On AVX2 without VNNI the prompt kernel
# takes 4 rows on (3 activation rows a pass: 13 = 3 x 4 + 1), fewer go row by row.
INT4_CASES = [(1, 1, 576, 40), (2, 3, 96, 17), (1, 37, 128, 5), (1, 2, 48, 9), (1, 1, 1024, 64), (3, 5, 32, 1),
              (1, 4, 544, 70), (2, 9, 48, 50), (1, 20, 1536, 33), (1, 13, 576, 40)]


@pytest.mark.parametrize("threads", THREADINGS)
@pytest.mark.parametrize("Bt,T,K,N", INT4_CASES)
def test_int4_matmul_matches_its_reference(tmp_path, Bt, T, K, N, threads):
    """Decode (one row) and prompts, short (row by row) and long (the prompt kernel); K in whole 128-wide chunks, a
    partial chunk (1 to 3 blocks) and a partial block (48); rows in groups of four and not, over items of 16 rows
    (32 in the prompt kernel, whose second group may be partial or empty)."""
    sess = session(int4_graph(tmp_path / "int4.onnx"), threads)
    x = int4_operands(Bt, T, K, N, seed=K + N)
    (y,) = sess.run(None, {n: v.numpy() for n, v in x.items()})
    want = int4_matmul_ref(x["A"], x["B"], x["scales"]).numpy()
    assert y.shape == (Bt, T, N)
    assert np.abs(y - want).max() <= 1e-5 * max(1.0, np.abs(want).max())


@pytest.mark.parametrize("threads", THREADINGS)
@pytest.mark.parametrize("Bt,T,K,sizes,bias", [
    (1, 1, 96, (40,), True), (1, 1, 1536, (48, 16, 16), False), (1, 1, 1536, (48, 16, 16), True),
    (1, 1, 768, (64, 64), False), (2, 3, 96, (5, 12, 23), True), (2, 3, 96, (5, 12, 23), False),
    (1, 37, 128, (70, 33), False), (1, 37, 128, (70, 33), True), (1, 20, 48, (1, 31, 17), True), (1, 40, 96, (17,), True)])
def test_int4_bias_and_split_matches_its_reference(tmp_path, Bt, T, K, sizes, bias, threads):
    """The Add and the Split the graph rewrite folds into the product (Mamba's dt_proj bias, in_proj's x | z and
    x_proj's dt | B | C): each output the reference's slice of the product (plus the bias), at one row and at
    prompts (the prompt kernel's 32-row items too), sizes that are and are not whole items, rows of B started
    at any offset."""
    N = sum(sizes)
    sess = session(int4_graph(tmp_path / "int4.onnx", bias=bias, outputs=len(sizes)), threads)
    x = int4_operands(Bt, T, K, N, seed=K + N)
    b = torch.randn(N, generator=torch.Generator().manual_seed(N)) * 10
    feeds = {n: v.numpy() for n, v in x.items()} | ({"bias": b.numpy()} if bias else {})
    feeds |= {"split": np.array(sizes, dtype=np.int64)} if len(sizes) > 1 else {}
    got = sess.run(None, feeds)
    want = int4_matmul_ref(x["A"], x["B"], x["scales"], b if bias else None).split(sizes, -1)
    assert [y.shape for y in got] == [tuple(w.shape) for w in want] == [(Bt, T, n) for n in sizes]
    for y, w in zip(got, want):
        assert np.abs(y - w.numpy()).max() <= 1e-5 * max(1.0, w.abs().max().item())


NORM_INPUTS = ("A", "B", "scales", "skip", "gamma", "epsilon")


def int4_norm_graph(path, grouped=False):
    """One seqedge.Int4MatMulSkipRmsNorm node, every operand an input with symbolic dims (`grouped`: scales of rank
    3)."""
    dims = {"A": ["bt", "t", "k"], "B": ["n", "blocks", "bytes"], "skip": ["bt", "t", "n2"],
            "scales": ["n", "blocks", "lanes"] if grouped else ["n", "blocks"],
            "gamma": ["n3"], "epsilon": [1]}
    types = {"B": TensorProto.UINT8, "scales": TensorProto.FLOAT16}
    node = helper.make_node("Int4MatMulSkipRmsNorm", list(NORM_INPUTS), ["normed", "sum"], domain=DOMAIN)
    model = helper.make_model(helper.make_graph(
        [node], "int4norm", [helper.make_tensor_value_info(n, types.get(n, TensorProto.FLOAT), dims[n]) for n in NORM_INPUTS],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("normed", "sum")]),
        opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid(DOMAIN, 1)])
    path.write_bytes(model.SerializeToString())
    return path


def int4_norm_operands(Bt, T, K, N, seed=0):
    g = torch.Generator().manual_seed(seed + 1)
    return {**int4_operands(Bt, T, K, N, seed), "skip": torch.randn(Bt, T, N, generator=g) * 4,
            "gamma": torch.randn(N, generator=g), "epsilon": torch.tensor([1e-5])}


@pytest.mark.parametrize("threads", THREADINGS)
@pytest.mark.parametrize("Bt,T,K,N", [(1, 1, 576, 576), (1, 1, 1536, 768), (2, 3, 96, 40), (1, 37, 128, 70),
                                       (1, 16, 96, 33)])
def test_int4_skip_rms_norm_matches_its_reference(tmp_path, Bt, T, K, N, threads):
    """A projection with the residual add and RMSNorm after it (onnxruntime's SkipSimplifiedLayerNormalization) as
    one node: the sum and the normalised sum, at one row (decode: the norm on the calling thread) and at prompts
    (rows split over the pool from 16 on), widths that are and are not multiples of the vector lanes."""
    sess = session(int4_norm_graph(tmp_path / "norm.onnx"), threads)
    x = int4_norm_operands(Bt, T, K, N, seed=K + N)
    normed, total = sess.run(None, {n: v.numpy() for n, v in x.items()})
    want_normed, want_total = int4_matmul_skip_rms_norm_ref(*(x[n] for n in NORM_INPUTS[:5]), eps=1e-5)
    assert normed.shape == total.shape == (Bt, T, N)
    assert np.abs(total - want_total.numpy()).max() <= 1e-5 * want_total.abs().max().item()
    assert np.abs(normed - want_normed.numpy()).max() <= 1e-4 * want_normed.abs().max().item()


@pytest.mark.parametrize("threads", THREADINGS)
@pytest.mark.parametrize("Bt,T,K,N", [(1, 1, 576, 40), (2, 3, 96, 18), (1, 37, 128, 70), (2, 8, 80, 64),
                                       (1, 11, 96, 34)])
def test_int4_swiglu_matches_its_reference(tmp_path, Bt, T, K, N, threads):
    """The fused gate/up projection's form: silu of the first half of the product times the second; halves that
    are and are not whole items of 16 rows."""
    sess = session(int4_graph(tmp_path / "glu.onnx", op="Int4MatMulSwiGLU"), threads)
    x = int4_operands(Bt, T, K, N, seed=K + N)
    (y,) = sess.run(None, {n: v.numpy() for n, v in x.items()})
    want = int4_matmul_swiglu_ref(x["A"], x["B"], x["scales"]).numpy()
    assert y.shape == (Bt, T, N // 2)
    assert np.abs(y - want).max() <= 1e-5 * max(1.0, np.abs(want).max())


# (Bt, T, K, split sizes): one row (decode: the one-row kernel), rows in tiles of 6 and 2 and a last single row, long
# prompts; K in whole chunks, a partial chunk and a partial block; every output's rows whole groups of 16 (N whole
# groups of 32: a SwiGLU's halves).
GROUPED_CASES = [(1, 1, 576, (48, 16, 32)), (2, 3, 96, (64,)), (1, 37, 128, (32, 64)), (1, 2, 48, (32,)),
                 (1, 1, 1536, (768, 768)), (1, 13, 544, (96,)), (2, 20, 768, (16, 48))]


@pytest.mark.parametrize("threads", THREADINGS)
@pytest.mark.parametrize("Bt,T,K,sizes", GROUPED_CASES)
@pytest.mark.parametrize("op", ["Int4MatMul", "Int4MatMulSwiGLU", "Int4MatMulSkipRmsNorm"])
def test_int4_grouped_layout_matches_its_reference(tmp_path, op, Bt, T, K, sizes, threads):
    """The same codes and scales in groups of 16 rows (group_rows; what the exporters store where N allows): the
    product (with a bias and split outputs where there are several sizes), its SwiGLU and its residual add + RMSNorm
    against the references, which take the grouped layout too, and the rows layout's own results."""
    N = sum(sizes)
    if op == "Int4MatMulSkipRmsNorm":
        x = int4_norm_operands(Bt, T, K, N, seed=K + N)
        sess = session(int4_norm_graph(tmp_path / "norm.onnx", grouped=True), threads)
    else:
        x = int4_operands(Bt, T, K, N, seed=K + N)
        extra = {"bias": len(sizes) > 1, "outputs": len(sizes)} if op == "Int4MatMul" else {}
        sess = session(int4_graph(tmp_path / "int4.onnx", op=op, grouped=True, **extra), threads)
    rows = dict(x)
    x["B"], x["scales"] = group_rows(x["B"], x["scales"])
    b = torch.randn(N, generator=torch.Generator().manual_seed(N)) * 10
    feeds = {n: v.numpy() for n, v in x.items()}
    if op == "Int4MatMulSkipRmsNorm":
        want = int4_matmul_skip_rms_norm_ref(*(x[n] for n in NORM_INPUTS[:5]), eps=1e-5)
        assert torch.equal(want[0], int4_matmul_skip_rms_norm_ref(*(rows[n] for n in NORM_INPUTS[:5]), eps=1e-5)[0])
    elif op == "Int4MatMulSwiGLU":
        want = [int4_matmul_swiglu_ref(x["A"], x["B"], x["scales"])]
    else:
        want = int4_matmul_ref(x["A"], x["B"], x["scales"], b if len(sizes) > 1 else None).split(sizes, -1)
        feeds |= {"bias": b.numpy(), "split": np.array(sizes, dtype=np.int64)} if len(sizes) > 1 else {}
    got = sess.run(None, feeds)
    assert [y.shape for y in got] == [tuple(w.shape) for w in want]
    for y, w in zip(got, want):
        assert np.abs(y - w.numpy()).max() <= 1e-4 * max(1.0, w.abs().max().item())


def test_int4_grouped_operands_are_checked(tmp_path):
    """Codes in groups of 16 rows bring their own shape rules: scales (N/16, ceil(K/32), 16), split outputs and
    SwiGLU halves of whole groups."""
    x = int4_operands(1, 2, 96, 32)
    codes, scales = group_rows(x["B"], x["scales"])
    plain = session(int4_graph(tmp_path / "plain.onnx", grouped=True))
    for B, sc, needle in ((codes, scales[:, :-1], "scales must be (N/16, ceil(K/32), 16) float16 for B's groups"),
                          (codes, scales[:1], "scales must be (N/16, ceil(K/32), 16) float16 for B's groups"),
                          (codes[:, :, :128], scales, "B must be (N, ceil(K/32), 16) or (N/16, ceil(K/32), 256)")):
        with pytest.raises(Exception) as e:
            plain.run(None, {"A": x["A"].numpy(), "B": B.numpy(), "scales": sc.numpy()})
        assert f"seqedge.Int4MatMul: {needle}" in str(e.value)
    split = session(int4_graph(tmp_path / "split.onnx", bias=True, outputs=2, grouped=True))
    with pytest.raises(Exception, match="split's sizes must be multiples of 16 when B is in groups of 16 rows"):
        split.run(None, {"A": x["A"].numpy(), "B": codes.numpy(), "scales": scales.numpy(),
                         "bias": np.zeros(32, np.float32), "split": np.array([8, 24], dtype=np.int64)})
    glu = session(int4_graph(tmp_path / "glu.onnx", op="Int4MatMulSwiGLU", grouped=True))
    y = int4_operands(1, 2, 96, 48)
    with pytest.raises(Exception, match=r"N \(rows of B\) must be a multiple of 32 in groups"):
        glu.run(None, {"A": y["A"].numpy(), **dict(zip(("B", "scales"), (t.numpy() for t in group_rows(y["B"], y["scales"]))))})


CONV_INPUTS = ("A", "B", "scales", "bias", "split", "weight", "conv_bias", "state")


def int4_conv_graph(path, bias=True, grouped=True):
    """One seqedge.Int4MatMulConv node, every operand an input with symbolic dims, A of any rank (`bias`: the
    product's bias given, else left out; `grouped`: scales of rank 3)."""
    ranks = {"A": 3, "B": 3, "scales": 3 if grouped else 2, "bias": 1, "split": 1, "weight": 3, "conv_bias": 1, "state": 3}
    types = {"B": TensorProto.UINT8, "scales": TensorProto.FLOAT16, "split": TensorProto.INT64}
    names = [n for n in CONV_INPUTS if bias or n != "bias"]
    node = helper.make_node("Int4MatMulConv", [n if n in names else "" for n in CONV_INPUTS], ["y", "z", "state_out"],
                            domain=DOMAIN)
    inputs = [helper.make_tensor_value_info(n, types.get(n, TensorProto.FLOAT),
                                            None if n == "A" else [f"{n}{i}" for i in range(ranks[n])]) for n in names]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "z", "state_out")]
    model = helper.make_model(helper.make_graph([node], "conv", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid(DOMAIN, 1)])
    path.write_bytes(model.SerializeToString())
    return path


def int4_conv_operands(Bt, T, K, D, Z, width, grouped, seed=0):
    x = int4_operands(Bt, T, K, D + Z, seed)
    if grouped:
        x["B"], x["scales"] = group_rows(x["B"], x["scales"])
    c = conv_operands(Bt, T, D, width, seed)
    g = torch.Generator().manual_seed(seed + 2)
    return {**x, "bias": torch.randn(D + Z, generator=g), "split": torch.tensor([D, Z]), "weight": c["weight"],
            "conv_bias": c["bias"], "state": c["state"]}


# (Bt, T, K, D, Z, width, grouped): a decode step (each 16 channels convolved after their item), over two batch rows,
# a prompt (x whole, then convolved) shorter and longer than the window, rows layout and a width-1 convolution
CONV_CASES = [(1, 1, 768, 64, 64, 4, True), (2, 1, 96, 32, 16, 4, True), (1, 37, 128, 48, 32, 4, True),
              (2, 2, 48, 16, 32, 4, True), (1, 20, 544, 32, 32, 3, True), (1, 1, 96, 40, 24, 4, False),
              (2, 9, 64, 24, 8, 2, False), (1, 1, 64, 16, 16, 1, True)]


@pytest.mark.parametrize("threads", THREADINGS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("Bt,T,K,D,Z,width,grouped", CONV_CASES)
def test_int4_matmul_conv_matches_its_reference(tmp_path, Bt, T, K, D, Z, width, grouped, bias, threads):
    """Mamba's in_proj and convolution as one node: against the product split into x | z and the convolution's
    reference, and against the two nodes it replaces (Int4MatMul with split outputs, then CausalConv1d)."""
    x = int4_conv_operands(Bt, T, K, D, Z, width, grouped, seed=K + D + T)
    sess = session(int4_conv_graph(tmp_path / "conv.onnx", bias=bias, grouped=grouped), threads)
    feeds = {n: v.numpy() for n, v in x.items() if bias or n != "bias"}
    got = sess.run(None, feeds)
    want = int4_matmul_conv_ref(x["A"], x["B"], x["scales"], x["bias"] if bias else None, [D, Z], x["weight"],
                                x["conv_bias"], x["state"])
    assert [y.shape for y in got] == [tuple(w.shape) for w in want]
    for y, w in zip(got, want):  # the state is empty for a width-1 convolution
        assert np.abs(y - w.numpy()).max(initial=0) <= 1e-4 * max(1.0, w.abs().max().item() if w.numel() else 0)
    products = session(int4_graph(tmp_path / "int4.onnx", bias=True, outputs=2, grouped=grouped), threads)
    xs, z = products.run(None, {n: feeds[n] if n in feeds else np.zeros(D + Z, np.float32)
                                for n in ("A", "B", "scales", "bias", "split")})
    conv = session(scan_graph(tmp_path / "c.onnx", op="CausalConv1d"), threads)
    y, state = conv.run(None, {"x": xs, "weight": feeds["weight"], "bias": feeds["conv_bias"], "state": feeds["state"]})
    assert np.array_equal(got[0], y) and np.array_equal(got[1], z) and np.array_equal(got[2], state)


@pytest.mark.parametrize("change, needle", [
    (lambda x: {**x, "weight": torch.zeros(40, 1, 4)}, "weight must be (D, 1, K) and bias (D) for x's D"),
    (lambda x: {**x, "state": torch.zeros(2, 32, 4)}, "state must be (Bt, D, K-1)"),
    (lambda x: {**x, "conv_bias": torch.zeros(33)}, "weight must be (D, 1, K) and bias (D) for x's D"),
    (lambda x: {**x, "split": torch.tensor([32, 8, 8])}, "split must hold one size per output"),
    (lambda x: {**x, "split": torch.tensor([24, 24])}, "split's sizes must be multiples of 16"),
    (lambda x: {**x, "A": torch.zeros(2, 96)}, "A must be (Bt, T, K)"),
])
def test_int4_matmul_conv_operands_are_checked(tmp_path, change, needle):
    sess = session(int4_conv_graph(tmp_path / "conv.onnx"))
    x = change(int4_conv_operands(2, 3, 96, 32, 16, 4, True))
    with pytest.raises(Exception) as e:
        sess.run(None, {n: v.numpy() for n, v in x.items()})
    assert f"seqedge.Int4MatMulConv: {needle}" in str(e.value)


SCAN_INPUTS = ("u", "dt", "dt_codes", "dt_scales", "dt_bias", "A", "B", "C", "D", "state", "z")


def int4_scan_graph(path, bias=True, grouped=True):
    """One seqedge.Int4MambaScan node, every operand an input with symbolic dims, dt of any rank."""
    ranks = {"u": 3, "dt_codes": 3, "dt_scales": 3 if grouped else 2, "dt_bias": 1, "A": 2, "B": 3, "C": 3, "D": 1,
             "state": 3, "z": 3}
    types = {"dt_codes": TensorProto.UINT8, "dt_scales": TensorProto.FLOAT16}
    names = [n for n in SCAN_INPUTS if bias or n != "dt_bias"]
    node = helper.make_node("Int4MambaScan", [n if n in names else "" for n in SCAN_INPUTS], ["y", "state_out"],
                            domain=DOMAIN)
    inputs = [helper.make_tensor_value_info(n, types.get(n, TensorProto.FLOAT),
                                            None if n == "dt" else [f"{n}{i}" for i in range(ranks[n])]) for n in names]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "state_out")]
    model = helper.make_model(helper.make_graph([node], "scan", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid(DOMAIN, 1)])
    path.write_bytes(model.SerializeToString())
    return path


def int4_scan_operands(Bt, T, D, N, R, grouped, seed=0):
    x = mamba_operands(Bt, T, D, N, seed)
    p = int4_operands(Bt, T, R, D, seed)
    if grouped:
        p["B"], p["scales"] = group_rows(p["B"], p["scales"])
    g = torch.Generator().manual_seed(seed + 3)
    del x["delta"]
    return {**x, "dt": p["A"] * 0.3, "dt_codes": p["B"], "dt_scales": p["scales"],
            "dt_bias": torch.randn(D, generator=g) - 2}


# (Bt, T, D, N, R, grouped): decode steps (each 16 channels' product and scan on one thread) over one and two batch
# rows, prompts (the product whole, then the scan: 300 steps in chunks of time), rows layout, a partial block of
# channels (the product and the scan in two passes)
SCAN_CASES = [(1, 1, 64, 16, 48, True), (2, 1, 32, 16, 48, True), (1, 37, 48, 16, 48, True), (2, 300, 32, 4, 32, True),
              (1, 1, 32, 16, 40, False), (2, 5, 40, 8, 24, False)]


@pytest.mark.parametrize("threads", THREADINGS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("Bt,T,D,N,R,grouped", SCAN_CASES)
def test_int4_mamba_scan_matches_its_reference(tmp_path, Bt, T, D, N, R, grouped, bias, threads):
    """MambaScan with its step computed inside (Mamba's dt_proj): against its reference, and exactly against the
    two nodes it replaces (Int4MatMul, then MambaScan)."""
    x = int4_scan_operands(Bt, T, D, N, R, grouped, seed=T + D + R)
    sess = session(int4_scan_graph(tmp_path / "scan.onnx", bias=bias, grouped=grouped), threads)
    feeds = {n: v.numpy() for n, v in x.items() if bias or n != "dt_bias"}
    got = sess.run(None, feeds)
    want = int4_mamba_scan_ref(x["u"], x["dt"], x["dt_codes"], x["dt_scales"], x["dt_bias"] if bias else None,
                               *(x[n] for n in ("A", "B", "C", "D", "state", "z")))
    assert [y.shape for y in got] == [tuple(w.shape) for w in want]
    for y, w in zip(got, want):
        assert np.abs(y - w.numpy()).max() <= 1e-4 * max(1.0, w.abs().max().item())
    product = session(int4_graph(tmp_path / "int4.onnx", bias=bias, outputs=1, grouped=grouped), threads)
    step, = product.run(None, {"A": feeds["dt"], "B": feeds["dt_codes"], "scales": feeds["dt_scales"],
                               **({"bias": feeds["dt_bias"]} if bias else {})})
    scan = session(scan_graph(tmp_path / "m.onnx", op="MambaScan"), threads)
    y, h = scan.run(None, {**{n: feeds[n] for n in ("u", "A", "B", "C", "D", "state", "z")}, "delta": step})
    assert np.array_equal(got[0], y) and np.array_equal(got[1], h)


@pytest.mark.parametrize("change, needle", [
    (lambda x: {**x, "dt_bias": torch.zeros(33)}, "dt_bias must be (N), N the rows of dt_codes"),
    (lambda x: {**x, "dt": torch.zeros(2, 4, 48)}, "dt must be (Bt, T, R) and dt_codes hold D rows"),
    (lambda x: {**x, "u": torch.zeros(2, 3, 48), "z": torch.zeros(2, 3, 48)}, "dt must be (Bt, T, R) and dt_codes hold"),
    (lambda x: {**x, "z": torch.zeros(2, 3, 31)}, "z must have u's shape (Bt, T, D)"),
    (lambda x: {**x, "B": torch.zeros(2, 2, 16)}, "B and C must be (Bt, T, N)"),
    (lambda x: {**x, "dt_scales": x["dt_scales"][:1]}, "scales must be (N/16, ceil(K/32), 16) float16"),
])
def test_int4_mamba_scan_operands_are_checked(tmp_path, change, needle):
    sess = session(int4_scan_graph(tmp_path / "scan.onnx"))
    x = change(int4_scan_operands(2, 3, 32, 16, 48, True))
    with pytest.raises(Exception) as e:
        sess.run(None, {n: v.numpy() for n, v in x.items()})
    assert f"seqedge.Int4MambaScan: {needle}" in str(e.value)


def int4_gather_graph(path, grouped=False):
    """One seqedge.Int4Gather node, every operand an input with symbolic dims."""
    node = helper.make_node("Int4Gather", ["B", "scales", "indices"], ["Y"], domain=DOMAIN)
    inputs = [helper.make_tensor_value_info("B", TensorProto.UINT8, ["n", "blocks", "bytes"]),
              helper.make_tensor_value_info("scales", TensorProto.FLOAT16,
                                            ["n", "blocks", "lanes"] if grouped else ["n", "blocks"]),
              helper.make_tensor_value_info("indices", TensorProto.INT64, None)]
    model = helper.make_model(helper.make_graph([node], "gather", inputs, [helper.make_tensor_value_info(
        "Y", TensorProto.FLOAT, None)]), opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid(DOMAIN, 1)])
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("K,N,shape", [(96, 48, (1, 1)), (576, 64, (2, 5)), (48, 32, (7,)), (64, 16, (2, 3, 4))])
def test_int4_gather_matches_its_reference(tmp_path, K, N, shape, grouped):
    """A tied embedding's lookup of its head's codes: rows and groups of 16 rows, one token, a prompt, indices of
    rank 1 to 3, a partial last block (48: the row is 64 wide, its padding zero)."""
    x = int4_operands(1, 1, K, N, seed=K + N)
    codes, scales = group_rows(x["B"], x["scales"]) if grouped else (x["B"], x["scales"])
    idx = torch.randint(0, N, shape, generator=torch.Generator().manual_seed(N))
    (y,) = session(int4_gather_graph(tmp_path / "gather.onnx", grouped)).run(
        None, {"B": codes.numpy(), "scales": scales.numpy(), "indices": idx.numpy()})
    want = int4_gather_ref(codes, scales, idx)
    assert y.shape == tuple(want.shape) == (*shape, -(-K // 32) * 32)
    assert np.array_equal(y, want.numpy())  # (code - 8) * scale is exact in float32
    assert torch.equal(want, int4_gather_ref(x["B"], x["scales"], idx))  # the same rows in either layout


def test_int4_gather_indices_are_checked(tmp_path):
    x = int4_operands(1, 1, 96, 32)
    sess = session(int4_gather_graph(tmp_path / "gather.onnx"))
    for bad in ([[0, 32]], [[-1]]):
        with pytest.raises(Exception, match=r"seqedge.Int4Gather: indices must be in \[0, N\), N the rows of B"):
            sess.run(None, {"B": x["B"].numpy(), "scales": x["scales"].numpy(), "indices": np.array(bad, np.int64)})


@pytest.mark.parametrize("N,T", [(40, 1), (40, 9), (50, 20), (64, 3)])
def test_grouping_pads_a_product_to_whole_groups_and_goes_back(tmp_path, N, T):
    """quant/onnx.py's _group_rows on a product whose N is not a multiple of 16 (mamba-130m's 50,280-wide head):
    zero rows to whole groups, the output sliced back to N — the same numbers as the rows layout, which
    _back_to_matmulnbits restores (onnxruntime's fp32-compute MatMulNBits then runs it)."""
    from seqedge.quant.onnx import _back_to_matmulnbits, _group_rows

    x = int4_operands(1, T, 96, N, seed=N)
    node = helper.make_node("Int4MatMul", ["A", "B", "scales"], ["Y"], domain=DOMAIN, K=96)
    graph = helper.make_graph([node], "head", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [1, T, 96])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, T, N])],
                              [numpy_helper.from_array(x["B"].numpy(), "B"),
                               numpy_helper.from_array(x["scales"].numpy(), "scales")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid(DOMAIN, 1),
                                                    helper.make_opsetid("com.microsoft", 1)])
    _group_rows(model.graph)
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    assert inits["B"] == [-(-N // 16), 3, 256] and inits["scales"] == [-(-N // 16), 3, 16]
    assert [n.op_type for n in model.graph.node] == ["Int4MatMul"] + ["Slice"] * (N % 16 > 0)
    (tmp_path / "g.onnx").write_bytes(model.SerializeToString())
    (y,) = session(tmp_path / "g.onnx").run(None, {"A": x["A"].numpy()})
    want = int4_matmul_ref(x["A"], x["B"], x["scales"]).numpy()
    assert y.shape == (1, T, N) and np.abs(y - want).max() <= 1e-5 * np.abs(want).max()
    _back_to_matmulnbits(model.graph)
    assert {n.op_type for n in model.graph.node} <= {"MatMulNBits", "Slice"}
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    (back,) = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"A": x["A"].numpy()})
    exact = (x["A"] @ int4_gather_ref(x["B"], x["scales"], torch.arange(N)).T).numpy()  # fp32 compute
    assert back.shape == (1, T, N) and np.abs(back - exact).max() <= 1e-4 * np.abs(exact).max()


def test_grouping_pads_two_products_of_one_width(tmp_path):
    """Two padded products of the same N share the Slice's bounds (one initializer of each name: a graph with two
    is refused)."""
    from seqedge.quant.onnx import _group_rows

    xs = [int4_operands(1, 3, 96, 40, seed=s) for s in (1, 2)]
    nodes = [helper.make_node("Int4MatMul", ["A", f"B{k}", f"scales{k}"], [f"Y{k}"], domain=DOMAIN, K=96)
             for k in range(2)]
    inits = [numpy_helper.from_array(x[n].numpy(), f"{n}{k}") for k, x in enumerate(xs) for n in ("B", "scales")]
    graph = helper.make_graph(nodes, "heads", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [1, 3, 96])],
                              [helper.make_tensor_value_info(f"Y{k}", TensorProto.FLOAT, [1, 3, 40]) for k in range(2)],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid(DOMAIN, 1)])
    _group_rows(model.graph)
    names = [i.name for i in model.graph.initializer]
    assert len(names) == len(set(names)) and [n.op_type for n in model.graph.node].count("Slice") == 2
    (tmp_path / "g.onnx").write_bytes(model.SerializeToString())
    got = session(tmp_path / "g.onnx").run(None, {"A": xs[0]["A"].numpy()})
    for y, x in zip(got, xs):
        want = int4_matmul_ref(xs[0]["A"], x["B"], x["scales"]).numpy()
        assert y.shape == (1, 3, 40) and np.abs(y - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize("Bt,T,K,N", [(1, 1, 576, 40), (2, 7, 48, 24)])
def test_int4_matmul_agrees_with_onnxruntime_matmulnbits(tmp_path, Bt, T, K, N):
    """The graph rewrite (quant/onnx.py use_int4_kernel) hands the kernel MatMulNBits' own codes: on the same
    codes and scales, onnxruntime's int8-compute MatMulNBits gives the same numbers."""
    x = int4_operands(Bt, T, K, N, seed=1)
    if K % 32:
        x["B"][:, -1, (K % 32) // 2:] = 0x88  # MatMulNBits' padding: zero codes
    (ours,) = session(int4_graph(tmp_path / "a.onnx")).run(None, {n: v.numpy() for n, v in x.items()})
    (theirs,) = session(int4_graph(tmp_path / "b.onnx", matmulnbits=x)).run(None, {"A": x["A"].numpy()})
    assert np.abs(ours - theirs).max() <= 1e-5 * np.abs(theirs).max()


ATTENTION_INPUTS = ("q", "k", "v", "k_cache", "v_cache", "pos", "cos", "sin")


def attention_graph(path, packed=False, cache=TensorProto.FLOAT):
    """One seqedge.Attention node, every operand an input with symbolic dims; `packed`: k and v absent, q holding
    q, k, v side by side (as fusions.pack_attention_qkv hands it over); the caches of type `cache` (in and out)."""
    dims = {"q": ["b", "t", "qw"], "k": ["b", "t", "kw"], "v": ["b", "t", "kw"], "k_cache": ["b", "h", "s", "d"],
            "v_cache": ["b", "h", "s", "d"], "pos": [1], "cos": ["r", "half"], "sin": ["r", "half"]}
    used = [n for n in ATTENTION_INPUTS if not (packed and n in ("k", "v"))]
    node = helper.make_node("Attention", [("" if n not in used else n) for n in ATTENTION_INPUTS],
                            ["out", "k_cache_out", "v_cache_out"], domain=DOMAIN)
    types = {"pos": TensorProto.INT64, "k_cache": cache, "v_cache": cache}
    inputs = [helper.make_tensor_value_info(n, types.get(n, TensorProto.FLOAT), dims[n]) for n in used]
    outputs = [helper.make_tensor_value_info(n, t, None)
               for n, t in zip(node.output, (TensorProto.FLOAT, cache, cache))]
    model = helper.make_model(helper.make_graph([node], "attention", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid(DOMAIN, 1)])
    path.write_bytes(model.SerializeToString())
    return path


def attention_operands(Bt, T, pos, H, Hkv, hd, S=320, seed=0, cache=torch.float32):
    g = torch.Generator().manual_seed(seed)
    inv = 1.0 / 10000.0 ** (torch.arange(0, hd, 2).float() / hd)
    angles = torch.arange(S).float()[:, None] * inv[None, :]  # (S, hd/2)
    return {"q": torch.randn(Bt, T, H * hd, generator=g), "k": torch.randn(Bt, T, Hkv * hd, generator=g),
            "v": torch.randn(Bt, T, Hkv * hd, generator=g),
            "k_cache": torch.randn(Bt, Hkv, S, hd, generator=g).to(cache),
            "v_cache": torch.randn(Bt, Hkv, S, hd, generator=g).to(cache), "pos": torch.tensor([pos]),
            "cos": angles.cos(), "sin": angles.sin()}


CACHE_TYPES = {"float32": (torch.float32, TensorProto.FLOAT), "float16": (torch.float16, TensorProto.FLOAT16)}


def attention_feeds(x, packed):
    feeds = {n: v.numpy() for n, v in x.items()}
    if packed:
        feeds["q"] = np.concatenate([feeds.pop("q"), feeds.pop("k"), feeds.pop("v")], axis=-1)
    return feeds


# (Bt, T, pos, H, Hkv, hd, packed): steps (T < 4: keys split into ranges per kv head, merged) from the first position
# and deep in the cache; prompts (tiles) from the start and after cached positions; head sizes compiled fixed (64,
# 128) and not (16, 40, a step's heads scored four at a time too; 20: not a multiple of 8, the scalar dot products);
# grouped (H / Hkv of 1, 2, 3, 4) and multi-query heads
ATTENTION_CASES = [(2, 1, 0, 4, 2, 64, False), (2, 1, 300, 6, 2, 64, True), (1, 2, 200, 9, 3, 128, False),
                   (1, 3, 257, 8, 8, 40, True), (2, 9, 40, 4, 1, 16, False), (1, 37, 250, 9, 3, 64, True),
                   (1, 70, 0, 4, 1, 128, False), (1, 1, 101, 4, 2, 20, True), (1, 1, 130, 10, 2, 40, False)]


@pytest.mark.parametrize("threads", THREADINGS)
@pytest.mark.parametrize("cache", CACHE_TYPES)
@pytest.mark.parametrize("Bt,T,pos,H,Hkv,hd,packed", ATTENTION_CASES)
def test_attention_matches_its_reference(tmp_path, Bt, T, pos, H, Hkv, hd, packed, cache, threads):
    """seqedge.Attention against attention_ref, with float32 and float16 caches (the reference rounds the new keys
    and values into a float16 cache and attends in float32, as the kernel does): the output, and the caches with
    the new positions written (what lies past pos + T is unspecified), from a plain run, where onnxruntime gives
    the outputs their own buffers."""
    dtype, proto = CACHE_TYPES[cache]
    sess = session(attention_graph(tmp_path / "attention.onnx", packed, proto), threads)
    x = attention_operands(Bt, T, pos, H, Hkv, hd, seed=T + pos, cache=dtype)
    got = sess.run(None, attention_feeds(x, packed))
    want = [w.numpy() for w in attention_ref(*x.values())]
    assert got[0].shape == (Bt, T, H * hd) and got[1].shape == got[2].shape == x["k_cache"].shape
    assert got[1].dtype == got[2].dtype == x["k_cache"].numpy().dtype
    assert np.abs(got[0] - want[0]).max() <= 1e-5 * max(1.0, np.abs(want[0]).max())
    rounding = 1e-6 if dtype == torch.float32 else 1e-3  # a rotated key may round to the next float16 either way
    for g, w in zip(got[1:], want[1:]):
        w = w.astype(np.float32)
        assert np.abs(g[:, :, : pos + T].astype(np.float32) - w[:, :, : pos + T]).max() <= rounding * np.abs(w).max()


@pytest.mark.parametrize("cache", CACHE_TYPES)
def test_attention_updates_the_caches_in_the_buffers_bound_to_them(tmp_path, cache):
    """Each cache output bound to its input's buffer (as the adapter binds an in-place state): the kernel writes
    the new positions there and leaves the others as they were; a step after a prompt, read from the same
    buffers, equals the reference over the whole sequence."""
    dtype, proto = CACHE_TYPES[cache]
    rounding = 1e-6 if dtype == torch.float32 else 1e-3
    sess = session(attention_graph(tmp_path / "attention.onnx", cache=proto))
    x = attention_operands(1, 12, 0, 6, 2, 64, S=40, cache=dtype)
    before = {n: x[n].clone() for n in ("k_cache", "v_cache")}
    caches = {n: ort.OrtValue.ortvalue_from_numpy(x[n].numpy().copy()) for n in ("k_cache", "v_cache")}
    binding = sess.io_binding()
    binding.bind_output("out")  # the first output bound: copy_outputs_to_cpu()[0]
    for n, value in caches.items():
        binding.bind_ortvalue_input(n, value)
        binding.bind_ortvalue_output(f"{n}_out", value)
    for name in ("q", "k", "v", "pos", "cos", "sin"):
        binding.bind_cpu_input(name, x[name].numpy())
    sess.run_with_iobinding(binding)
    _, k_ref, v_ref = attention_ref(*x.values())
    for n, ref in (("k_cache", k_ref), ("v_cache", v_ref)):
        held = caches[n].numpy()
        assert (np.abs(held[:, :, :12].astype(np.float32) - ref[:, :, :12].float().numpy()).max()
                <= rounding * ref.float().abs().max())
        assert np.array_equal(held[:, :, 12:], before[n][:, :, 12:].numpy())  # untouched past pos + T
    step = attention_operands(1, 1, 12, 6, 2, 64, S=40, seed=1, cache=dtype)
    for name in ("q", "k", "v", "pos"):
        binding.bind_cpu_input(name, step[name].numpy())
    binding.bind_output("out")  # a fresh one: the prompt's was (1, 12, H hd)
    sess.run_with_iobinding(binding)
    out = binding.copy_outputs_to_cpu()[0]
    want, *_ = attention_ref(step["q"], step["k"], step["v"], k_ref, v_ref, step["pos"], x["cos"], x["sin"])
    assert np.abs(out - want.numpy()).max() <= 1e-5 * max(1.0, want.abs().max().item())


@pytest.mark.parametrize("change, needle", [
    (lambda x: {**x, "pos": torch.tensor([312])}, "pos + T is past the cache (or the rotary tables): positions [312, 321) of 320"),
    (lambda x: {**x, "pos": torch.tensor([-1])}, "pos + T is past the cache"),
    (lambda x: {**x, "cos": x["cos"][:300], "sin": x["sin"][:300], "pos": torch.tensor([295])}, "pos + T is past"),
    (lambda x: {**x, "v_cache": x["v_cache"][:, :1]}, "k_cache and v_cache must have one shape (B, Hkv, S, D)"),
    (lambda x: {**x, "q": x["q"][..., :-64]}, "q must be (B, T, Hq D), Hq a multiple of the caches' Hkv"),
    (lambda x: {**x, "k": x["k"][:, :-1]}, "k and v must be (B, T, Hkv D)"),
    (lambda x: {**x, "sin": x["sin"][:, :-1]}, "cos and sin must be (positions, D / 2)"),
    (lambda x: {**x, "k_cache": x["k_cache"][..., :63], "v_cache": x["v_cache"][..., :63]}, "the caches must be (B, Hkv, S, D) for q's B, with an even D"),
])
def test_attention_shapes_an_untrusted_graph_feeds_are_refused(tmp_path, change, needle):
    sess = session(attention_graph(tmp_path / "attention.onnx"))
    x = change(attention_operands(1, 9, 10, 6, 2, 64))
    with pytest.raises(Exception) as e:
        sess.run(None, attention_feeds(x, False))
    assert f"seqedge.Attention: {needle}" in str(e.value)


INT4_GRAPHS = {"Int4MatMul": (int4_graph, int4_operands), "Int4MatMulSkipRmsNorm": (int4_norm_graph, int4_norm_operands)}


@pytest.mark.parametrize("op, change, needle", [
    ("Int4MatMul", lambda x: {**x, "B": x["B"][:, :-1]}, "B must be (N, ceil(K/32), 16) or (N/16, ceil(K/32), 256) for A's K"),
    ("Int4MatMul", lambda x: {**x, "B": x["B"][..., :8]}, "B must be (N, ceil(K/32), 16) or (N/16, ceil(K/32), 256) for A's K"),
    ("Int4MatMul", lambda x: {**x, "scales": x["scales"][:-1]}, "scales must be (N, ceil(K/32)) float16"),
    ("Int4MatMul", lambda x: {**x, "scales": x["scales"][:, :-1]}, "scales must be (N, ceil(K/32)) float16"),
    ("Int4MatMul", lambda x: {**x, "A": x["A"][..., :0]}, "K (the last dimension of A) must be positive"),
    ("Int4MatMulSkipRmsNorm", lambda x: {**x, "skip": x["skip"][..., :-1]}, "skip must have the product's shape"),
    ("Int4MatMulSkipRmsNorm", lambda x: {**x, "skip": x["skip"][:, :1]}, "skip must have the product's shape (..., N)"),
    ("Int4MatMulSkipRmsNorm", lambda x: {**x, "gamma": x["gamma"][:-1]}, "gamma must be (N), N the rows of B"),
    ("Int4MatMulSkipRmsNorm", lambda x: {**x, "scales": x["scales"][:-1]}, "scales must be (N, ceil(K/32)) float16"),
])
def test_int4_shapes_an_untrusted_graph_feeds_are_refused(tmp_path, op, change, needle):
    make_graph, make_operands = INT4_GRAPHS[op]
    sess = session(make_graph(tmp_path / "int4.onnx"))
    x = change(make_operands(1, 2, 96, 8))
    with pytest.raises(Exception) as e:
        sess.run(None, {n: v.numpy() for n, v in x.items()})
    assert f"seqedge.{op}: {needle}" in str(e.value)


def test_int4_bias_split_and_swiglu_operands_are_checked(tmp_path):
    split = session(int4_graph(tmp_path / "split.onnx", bias=True, outputs=2))
    feeds = {n: v.numpy() for n, v in int4_operands(1, 2, 96, 8).items()}
    for bias, sizes, needle in ((np.zeros(7, np.float32), [4, 4], "bias must be (N), N the rows of B"),
                                (np.zeros(8, np.float32), [4, 5], "split's sizes must be positive and sum to N"),
                                (np.zeros(8, np.float32), [-4, 12], "split's sizes must be positive and sum to N"),
                                (np.zeros(8, np.float32), [2, 2, 4], "split must hold one size per output")):
        with pytest.raises(Exception) as e:
            split.run(None, {**feeds, "bias": bias, "split": np.array(sizes, dtype=np.int64)})
        assert f"seqedge.Int4MatMul: {needle}" in str(e.value)
    glu = session(int4_graph(tmp_path / "glu.onnx", op="Int4MatMulSwiGLU"))
    with pytest.raises(Exception, match=r"seqedge.Int4MatMulSwiGLU: N \(rows of B\) must be even"):
        glu.run(None, {n: v.numpy() for n, v in int4_operands(1, 2, 96, 7).items()})


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the feature levels are x86-64's")
@pytest.mark.parametrize("isa", ["baseline", "v3"])
def test_every_isa_level_matches_the_reference(isa):
    """The kernels are built per x86-64 feature level and runs the CPU's best; SEQEDGE_KERNEL_ISA caps it, so the
    other builds run (in a fresh process: the level is read once) and must match too."""
    if isa == best_kernel_isa():
        pytest.skip(f"{isa} is this CPU's best level: the tests in this process ran it")
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "matches_its_reference"]
    listed = subprocess.run([*args, "--collect-only"], capture_output=True, text=True, timeout=120)
    cases = sum(1 for line in listed.stdout.splitlines() if "::" in line)
    r = subprocess.run(args, env={**os.environ, "SEQEDGE_KERNEL_ISA": isa}, capture_output=True, text=True, timeout=600)
    assert cases > 50 and r.returncode == 0 and f"{cases} passed" in r.stdout, r.stdout[-2000:]


@pytest.mark.parametrize("change, needle", [
    (lambda x: {**x, "B": torch.zeros(2, 9, 17)}, "B and C must be (Bt, T, N)"),
    (lambda x: {**x, "C": torch.zeros(2, 8, 16)}, "B and C must be (Bt, T, N)"),
    (lambda x: {**x, "delta": torch.zeros(2, 9, 41)}, "delta must have u's shape"),
    (lambda x: {**x, "A": torch.zeros(39, 16)}, "A must be (D, N) and D (D)"),
    (lambda x: {**x, "D": torch.zeros(41)}, "A must be (D, N) and D (D)"),
    (lambda x: {**x, "state": torch.zeros(1, 40, 16)}, "state must be (Bt, D, N)"),
    (lambda x: {**x, "A": torch.zeros(40, 300), "B": torch.zeros(2, 9, 300), "C": torch.zeros(2, 9, 300),
                "state": torch.zeros(2, 40, 300)}, "d_state is over 256"),
])
def test_shapes_an_untrusted_graph_feeds_are_refused(tmp_path, change, needle):
    """Every operand's shape is checked before any data is read: an error status naming the op, no crash."""
    sess = session(scan_graph(tmp_path / "scan.onnx"))
    x = change(operands(2, 9, 40, 16))
    with pytest.raises(Exception) as e:
        sess.run(None, {n: x[n].numpy() for n in NAMES})
    assert f"seqedge.SelectiveScan: {needle}" in str(e.value)


@pytest.mark.parametrize("op, change, needle", [
    ("MambaScan", lambda x: {**x, "z": torch.zeros(2, 9, 39)}, "z must have u's shape (Bt, T, D)"),
    ("MambaScan", lambda x: {**x, "B": torch.zeros(2, 8, 16)}, "B and C must be (Bt, T, N)"),
    ("CausalConv1d", lambda x: {**x, "weight": torch.zeros(40, 2, 4)}, "weight must be (D, 1, K) and bias (D)"),
    ("CausalConv1d", lambda x: {**x, "bias": torch.zeros(41)}, "weight must be (D, 1, K) and bias (D)"),
    ("CausalConv1d", lambda x: {**x, "state": torch.zeros(2, 40, 4)}, "state must be (Bt, D, K-1)"),
    ("CausalConv1d", lambda x: {**x, "weight": torch.zeros(40, 1, 65), "state": torch.zeros(2, 40, 64)},
     "the kernel width K must be 1 to 64"),
])
def test_shapes_the_fused_ops_are_fed_are_checked(tmp_path, op, change, needle):
    sess = session(scan_graph(tmp_path / "op.onnx", op=op))
    x = change(FUSED_CASES[op][0](2, 9, 40, 16 if op == "MambaScan" else 4))
    with pytest.raises(Exception) as e:
        sess.run(None, {n: x[n].numpy() for n in OPS[op]})
    assert f"seqedge.{op}: {needle}" in str(e.value)


def test_a_wrong_rank_is_refused(tmp_path):
    sess = session(scan_graph(tmp_path / "scan.onnx", {**RANKS, "u": 2}))
    x = operands(2, 9, 40, 16)
    with pytest.raises(Exception, match="seqedge.SelectiveScan: u, delta, B, C and state must be 3-D"):
        sess.run(None, {**{n: x[n].numpy() for n in NAMES}, "u": x["u"][0].numpy()})


def test_the_library_is_registered_only_for_graphs_in_its_domain(tmp_path):
    """A graph names seqedge's domain to get the library; nothing in it can name another file. Without the
    library onnxruntime refuses the graph (the kernel is not built into onnxruntime)."""
    path = scan_graph(tmp_path / "scan.onnx")
    assert DOMAIN in graph_domains(path)
    with pytest.raises(Exception, match="SelectiveScan"):
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    opts = ort.SessionOptions()
    register_for(opts, {"ai.onnx", "com.microsoft"})  # no seqedge domain: nothing registered
    with pytest.raises(Exception, match="SelectiveScan"):
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    assert library().name == "libseqedge_ort_kernels.so" and library().with_suffix(".so.sha256").is_file()


@pytest.mark.parametrize("value", ["abc", "0", "257", "-1", "2x", "12345678901234567890"])
def test_a_team_size_that_is_not_a_count_is_refused(value):
    """The library reads its team's size from the session's config entry (the entries are the caller's, not the
    graph's) and refuses anything but a count, naming the entry; a count registers."""
    from seqedge.runtimes.ort_kernels import TEAM_THREADS_KEY

    opts = ort.SessionOptions()
    opts.add_session_config_entry(TEAM_THREADS_KEY, value)
    with pytest.raises(Exception, match=TEAM_THREADS_KEY if len(value) < 16 else "buffer|size|large"):
        opts.register_custom_ops_library(str(library()))
    opts = ort.SessionOptions()
    opts.add_session_config_entry(TEAM_THREADS_KEY, "3")
    opts.register_custom_ops_library(str(library()))


@pytest.mark.parametrize("nodes, team", [
    ([(DOMAIN, "SelectiveScan")], True),
    ([(DOMAIN, "SelectiveScan"), ("", "Add"), ("", "Reshape"), ("com.microsoft", "SkipSimplifiedLayerNormalization")],
     True),
    ([(DOMAIN, "SelectiveScan"), ("", "MatMul")], False),
    ([(DOMAIN, "Int4MatMul"), ("com.microsoft", "MatMulNBits")], False),
    ([(DOMAIN, "Attention"), ("", "LSTM")], False),
    ([(DOMAIN, "MambaScan"), ("", "Scan")], False),  # a subgraph's nodes are onnxruntime's to thread
    ([("", "Add")], False),  # nothing of seqedge's: the library is not even registered
])
def test_a_graph_runs_on_the_team_only_where_its_work_is_all_seqedges(tmp_path, nodes, team):
    from seqedge.runtimes.ort_kernels import team_threads_for

    graph = helper.make_graph(
        [helper.make_node(op, ["x"], [f"y{i}"], domain=domain) for i, (domain, op) in enumerate(nodes)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None) for i in range(len(nodes))])
    path = tmp_path / "g.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]).SerializeToString())
    assert team_threads_for(path, 3) == (3 if team else 0)
    (tmp_path / "torn.onnx").write_bytes(path.read_bytes()[:40])  # unreadable: left to onnxruntime to report
    assert team_threads_for(tmp_path / "torn.onnx", 3) == 0


def test_sessions_sharing_a_team_from_two_threads_compute_what_one_does_alone(tmp_path):
    """Sessions of one team size share its threads; a call that finds the team busy with another session's
    node runs its own alone, on its caller's thread. Two sessions driven from two Python threads at once give,
    call after call, what each gives alone (a decode step of attention and an int4 product)."""
    import threading

    attention = session(attention_graph(tmp_path / "attention.onnx", True, TensorProto.FLOAT16), ("team", 2))
    product = session(int4_graph(tmp_path / "int4.onnx"), ("team", 2))
    att_feeds = attention_feeds(attention_operands(1, 1, 1024, 9, 3, 64, S=1100, cache=torch.float16), packed=True)
    int4_feeds = {n: v.numpy() for n, v in int4_operands(1, 1, 576, 1536).items()}
    alone = [attention.run(None, att_feeds)[0], product.run(None, int4_feeds)[0]]
    got, errors = [[], []], []

    def drive(i, sess, feeds):
        try:
            for _ in range(40):
                got[i].append(sess.run(None, feeds)[0])
        except Exception as e:  # noqa: BLE001 — reported below
            errors.append(e)

    workers = [threading.Thread(target=drive, args=(0, attention, att_feeds)),
               threading.Thread(target=drive, args=(1, product, int4_feeds))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors
    for i in (0, 1):
        assert len(got[i]) == 40 and all(np.array_equal(g, alone[i]) for g in got[i])
