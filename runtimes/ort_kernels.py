"""seqedge's custom ops for onnxruntime: libseqedge_ort_kernels (runtimes/native/kernels/onnxruntime), the
same C++ scan as the ExecuTorch kernel, registered into a session when its graph uses the `seqedge` domain.

    opts = ort.SessionOptions()
    register_for(opts, opsets)       # opsets: the graph's {domain: version} (the manifest's "opset")
    options_for(path)                # SessionOptions for an ONNX file, registered when it needs them

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


def register_for(opts, opsets) -> None:
    """Register the library into `opts` when `opsets` (domain names) include seqedge's."""
    if needed(opsets):
        opts.register_custom_ops_library(str(library()))


def graph_domains(path: Path) -> set[str]:
    import onnx

    return {d.domain for d in onnx.load(str(path), load_external_data=False).opset_import}


def options_for(path: Path, opts=None):
    """SessionOptions (`opts` or new ones) for the ONNX file `path`, with seqedge's kernels when it uses them."""
    import onnxruntime as ort

    opts = opts or ort.SessionOptions()
    register_for(opts, graph_domains(path))
    return opts
