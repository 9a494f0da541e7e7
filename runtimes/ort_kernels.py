"""seqedge's custom ops for onnxruntime: libseqedge_ort_kernels (runtimes/native/kernels/onnxruntime), the
same C++ scan as the ExecuTorch kernel, registered into a session when its graph uses the `seqedge` domain.

    opts = ort.SessionOptions()
    register_for(opts, opsets)       # opsets: the graph's {domain: version} (the manifest's "opset")
    register_for(opts, opsets, team_threads=2)   # the kernels on a team of 2 threads of their own
    options_for(path)                # SessionOptions for an ONNX file, registered when it needs them
    team_threads_for(path, threads)  # `threads` where the graph's work is all seqedge's kernels, else 0

A decode step of a fused int4 graph is ~160 nodes of seqedge's kernels. Split over onnxruntime's intra-op
pool, each node's round trip cost more than its share of the work (llama-135m's int4 products alone, 2
threads: 1.47-1.58 ms through the pool, 1.11-1.19 behind a spin barrier); on a team of the library's own
(native/kernels/onnxruntime/team.h), whose workers wait spinning between nodes, 1.38. A session whose
onnxruntime nodes are all light (LIGHT_OPS: shapes and elementwise arithmetic on one step's activations) runs
onnxruntime on one thread and seqedge's kernels on the team; any other node (a MatMul, an LSTM, onnxruntime's
own attention) keeps the session on onnxruntime's pool, which the kernels then share.

The library is built from seqedge's own sources into seqedge's private cache (seqedge/native.py) and its
sha256 is checked before onnxruntime loads it. A graph only decides *whether* it is registered (by naming the
domain), never *what* is loaded: nothing in an artifact names a library path.
"""

from __future__ import annotations

from pathlib import Path

from seqedge.errors import SeqedgeError

DOMAIN = "seqedge"
TARGET = "seqedge_ort_kernels"


def library() -> Path:
    """The verified library for this seqedge (built on first use; needs cmake and a C++ compiler)."""
    from seqedge.native import kernel_library, verified_library

    return verified_library(kernel_library(TARGET))


def problems() -> list[str]:
    """Why this machine cannot give onnxruntime seqedge's kernels (empty when it can)."""
    try:
        library()
    except SeqedgeError as e:
        return [f"seqedge's onnxruntime kernels are not available here ({e})"]
    return []


def needed(opsets) -> bool:
    return DOMAIN in set(opsets or ())


# the session config entry the library reads when it is registered (ort_kernels.cpp's kTeamThreadsKey)
TEAM_THREADS_KEY = "seqedge.team_threads"
# onnxruntime's ops (default domain, and com.microsoft's norms and block-quantized gather) a session on seqedge's
# team runs on one thread: none of them reads more than a token's row of weights, or a cache
LIGHT_OPS = frozenset({
    ("", op) for op in ("Add", "Sub", "Mul", "Div", "Neg", "Exp", "Sqrt", "Reciprocal", "Pow", "Sigmoid", "Softplus",
                        "Tanh", "Where", "Greater", "Less", "Equal", "Cast", "Shape", "Size", "Slice", "Squeeze",
                        "Unsqueeze", "Reshape", "Flatten", "Concat", "Split", "Expand", "Identity", "Constant",
                        "ConstantOfShape", "Range", "ReduceMean", "Gather", "SimplifiedLayerNormalization",
                        "LayerNormalization")
} | {("com.microsoft", op) for op in ("SkipSimplifiedLayerNormalization", "GatherBlockQuantized")})


def register_for(opts, opsets, team_threads: int = 0) -> None:
    """Register the library into `opts` when `opsets` (domain names) include seqedge's; with `team_threads`, its
    kernels run on a team of that many threads of its own and onnxruntime's nodes on one."""
    if needed(opsets):
        if team_threads:
            opts.intra_op_num_threads = 1
            opts.add_session_config_entry(TEAM_THREADS_KEY, str(team_threads))
        opts.register_custom_ops_library(str(library()))


def team_threads_for(path: Path, threads: int) -> int:
    """`threads` when the ONNX file at `path` runs seqedge's kernels and nothing of onnxruntime's but LIGHT_OPS
    (a subgraph's nodes are onnxruntime's Scan or Loop, never light), else 0."""
    import onnx

    try:
        nodes = {(n.domain, n.op_type) for n in onnx.load(str(path), load_external_data=False).graph.node}
    except Exception:  # noqa: BLE001 — an unreadable graph is onnxruntime's to report, when it loads it
        return 0
    light = all(domain == DOMAIN or (domain, op) in LIGHT_OPS for domain, op in nodes)
    return threads if needed({domain for domain, _ in nodes}) and light else 0


def graph_domains(path: Path) -> set[str]:
    import onnx

    return {d.domain for d in onnx.load(str(path), load_external_data=False).opset_import}


def options_for(path: Path, opts=None):
    """SessionOptions (`opts` or new ones) for the ONNX file `path`, with seqedge's kernels when it uses them."""
    import onnxruntime as ort

    opts = opts or ort.SessionOptions()
    register_for(opts, graph_domains(path))
    return opts
