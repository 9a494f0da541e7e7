"""Where an int4 ONNX artifact's decode step goes: seqedge's int4 kernel alone on the artifact's own weights,
against the whole step, in one process, alternated round by round.

    .venv/bin/python benchmarks/int4_share.py ART [ART ...] [--threads 2] [--rounds 5] [--context 0]

For each artifact: a graph of only its `seqedge.Int4MatMul` / `Int4MatMulSwiGLU` nodes (an `Int4MatMulSkipRmsNorm`'s
or `Int4MatMulConv`'s product as an `Int4MatMul`; no bias, no split outputs), their codes and scales
as they are in the artifact, each fed one activation row (a decode step's), timed as one onnxruntime run (every
int4 weight read once); then the artifact's decode step through seqedge's runtime at `--context`. It prints
the kernel's rate as GB/s and as a share of the measured read bandwidth (peers.py's `read_bandwidth_gbs`), the
step's, and the share of the step the kernel takes: what the rest of the graph (norms, attention, the
runtime's own per-call work) leaves to gain. The int4 bytes are those the kernel streams (codes + float16
scales); the step also reads what is not int4 (norms, float layers, the KV cache).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import loadavg  # noqa: E402
from peers import read_bandwidth_gbs  # noqa: E402

INT4_OPS = ("Int4MatMul", "Int4MatMulSwiGLU", "Int4MatMulSkipRmsNorm", "Int4MatMulConv")


def kernel_graph(model_path: Path):
    """(serialized ONNX model, feeds, int4 bytes): the artifact's int4 nodes, each on its own activation row."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = onnx.load(str(model_path)).graph  # external data (beside the graph) loaded too
    inits = {t.name: t for t in g.initializer}
    nodes, inputs, outputs, used, feeds = [], [], [], {}, {}
    rng = np.random.default_rng(0)
    for i, n in enumerate(x for x in g.node if x.domain == "seqedge" and x.op_type in INT4_OPS):
        codes, scales = inits[n.input[1]], inits[n.input[2]]
        K = codes.dims[1] * 32  # whole blocks: the same bytes as the layer's own K
        op = "Int4MatMulSwiGLU" if n.op_type == "Int4MatMulSwiGLU" else "Int4MatMul"  # the product alone (no bias, split)
        nodes.append(helper.make_node(op, [f"a{i}", codes.name, scales.name], [f"y{i}"], domain="seqedge"))
        inputs.append(helper.make_tensor_value_info(f"a{i}", TensorProto.FLOAT, [1, 1, K]))
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None))
        feeds[f"a{i}"] = rng.standard_normal((1, 1, K)).astype(np.float32)
        used.update({codes.name: codes, scales.name: scales})  # a tensor two nodes share is read once
    if not nodes:
        raise SystemExit(f"{model_path}: no seqedge int4 nodes (export with --quant int4 for an AVX2 CPU)")
    graph = helper.make_graph(nodes, "int4_only", inputs, outputs, list(used.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("seqedge", 1)])
    return model.SerializeToString(), feeds, sum(numpy_helper.to_array(t).nbytes for t in used.values())


def kernel_seconds(model: bytes, feeds: dict, threads: int, reps: int) -> float:
    import onnxruntime as ort

    from seqedge.runtimes.ort_kernels import register_for

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    register_for(opts, {"seqedge"})
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    bind = sess.io_binding()
    for name, value in feeds.items():
        bind.bind_cpu_input(name, value)
    for out in sess.get_outputs():
        bind.bind_output(out.name)
    for _ in range(3):
        sess.run_with_iobinding(bind)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        sess.run_with_iobinding(bind)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def step_seconds(art: Path, threads: int, context: int, tokens: int) -> float:
    import torch

    from seqedge.bench.measure import decode_times
    from seqedge.runtimes import open_artifact

    torch.set_num_threads(threads)
    runner = open_artifact(str(art), threads=threads)
    try:
        return statistics.median(decode_times(runner, context, tokens))
    finally:
        runner.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", nargs="+", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--context", type=int, default=0)
    a = ap.parse_args()
    bandwidth = read_bandwidth_gbs(a.threads)
    print(f"read bandwidth {bandwidth:.1f} GB/s, {a.threads} threads, load {loadavg()} before")
    for art in a.artifacts:
        model, feeds, nbytes = kernel_graph(art / "model.onnx")
        kernel, step = [], []
        for _ in range(a.rounds):  # alternated: the machine's swings reach both alike
            kernel.append(kernel_seconds(model, feeds, a.threads, reps=20))
            step.append(step_seconds(art, a.threads, a.context, tokens=48))
        k, s = statistics.median(kernel), statistics.median(step)
        print(f"{art.name}: {len(feeds)} int4 nodes, {nbytes / 1e6:.1f} MB of codes + scales\n"
              f"  int4 kernel alone  {k * 1e3:6.2f} ms  {nbytes / k / 1e9:5.1f} GB/s  "
              f"{nbytes / k / 1e9 / bandwidth:.2f} of read bandwidth\n"
              f"  decode step (d={a.context}) {s * 1e3:6.2f} ms  {1 / s:6.1f} tok/s  int4 bytes at "
              f"{nbytes / s / 1e9 / bandwidth:.2f} of read bandwidth; the kernel is {k / s:.0%} of the step")
    print(f"load {loadavg()} after")


if __name__ == "__main__":
    main()
