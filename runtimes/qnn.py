"""Qualcomm's HTP (Hexagon NPU) through onnxruntime-qnn: sessions on the HTP backend — the x86-64 wheel
emulates it on this machine —, which nodes it took, and context binaries compiled offline for a SoC.

    opts = htp_session_options()                         # QNNExecutionProvider first, the CPU behind it
    coverage("prefill.onnx")                             # {"htp": [...], "cpu": [...]} node op types
    compile_context("prefill.onnx", out, htp_arch=75, soc_model=57)   # EPContext model + *_qnn.bin

onnxruntime-qnn is a plugin execution provider for onnxruntime >= 1.24.2 (`seqedge[qnn]`), imported
lazily. onnxruntime reruns a session whose HTP run failed on the CPU alone unless told not to
(`disable_fallback`): every HTP session here is told. Its HTP takes only static shapes: a graph with a dynamic dimension gets no node on the HTP
(onnxruntime runs it all on the CPU without an error), so `coverage` is how a caller knows.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from seqedge.errors import UnsupportedError

INSTALL = 'pip install "seqedge[qnn]"  (onnxruntime-qnn, the HTP plugin for onnxruntime)'
EP = "QNNExecutionProvider"
_registered: list[str] = []


def qnn_module():
    try:
        import onnxruntime_qnn
    except ImportError:
        raise UnsupportedError("onnxruntime-qnn is not installed", INSTALL) from None
    return onnxruntime_qnn


def available() -> tuple[bool, str]:
    try:
        q = qnn_module()
    except UnsupportedError as e:
        return False, f"{e.message} ({e.hint})"
    return True, f"onnxruntime-qnn {q.__version__} (HTP emulated on x86-64)"


def _devices():
    import onnxruntime as ort

    q = qnn_module()
    if not _registered:
        ort.register_execution_provider_library(EP, q.get_library_path())
        _registered.append(EP)
    devices = [d for d in ort.get_ep_devices() if d.ep_name == EP]
    if not devices:
        raise UnsupportedError("onnxruntime-qnn registered no device", INSTALL)
    return devices


def htp_session_options(threads: int = 2, provider_options: dict[str, str] | None = None,
                        config: dict[str, str] | None = None):
    """SessionOptions that put QNN's HTP backend before the CPU provider (which runs what the HTP does not take)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    opts.add_provider_for_devices(_devices(), {"backend_path": qnn_module().get_qnn_htp_path(),
                                               **(provider_options or {})})
    for key, value in (config or {}).items():
        opts.add_session_config_entry(key, value)
    return opts


def soc_options(htp_arch: int | None, soc_model: int | None) -> dict[str, str]:
    """Provider options naming the SoC. Every session of a process should name the same one: after a session
    for one SoC, a session with the emulator's default failed to compose a graph that the first one took."""
    return {} if htp_arch is None else {"htp_arch": str(htp_arch), "soc_model": str(soc_model)}


REASON = re.compile(r"Node name: (\S+) Node index: \d+\s+REASON : ([^\n]+)")


def coverage(path: Path, threads: int = 2, htp_arch: int | None = None, soc_model: int | None = None) -> dict:
    """Where each node runs: {"htp": [op types], "cpu": [(op type, why)]}. The reasons are QNN's own
    validation messages, read from onnxruntime's verbose log (written to a temporary file for the call)."""
    import onnxruntime as ort

    opts = htp_session_options(threads, soc_options(htp_arch, soc_model),
                               config={"session.record_ep_graph_assignment_info": "1"})
    opts.log_severity_level = 0
    with tempfile.TemporaryFile("w+b") as log:
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)  # onnxruntime's logger writes to the process's stderr
        try:
            session = ort.InferenceSession(str(path), opts)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        log.seek(0)
        reasons = dict(REASON.findall(log.read().decode(errors="replace")))
    placed: dict[str, list] = {"htp": [], "cpu": []}
    for subgraph in session.get_provider_graph_assignment_info():
        for node in subgraph.get_nodes():
            if subgraph.ep_name == EP:
                placed["htp"].append(node.op_type)
            else:
                placed["cpu"].append((node.op_type, reasons.get(node.name, "not offered to the HTP by onnxruntime")))
    return placed


def compile_context(path: Path, out: Path, htp_arch: int, soc_model: int) -> list[Path]:
    """Compile `path` (a QDQ graph) for one SoC's HTP: writes `out` (an EPContext model) and the context
    binary beside it, which the phone's onnxruntime-qnn loads without compiling. Returns the files written."""
    import onnxruntime as ort

    before = set(out.parent.iterdir())
    opts = htp_session_options(provider_options=soc_options(htp_arch, soc_model),
                               config={"ep.context_enable": "1", "ep.context_file_path": str(out),
                                       "ep.context_embed_mode": "0"})
    ort.InferenceSession(str(path), opts)
    return sorted(set(out.parent.iterdir()) - before)


def run_context_once(context: Path, htp_arch: int, soc_model: int) -> str | None:
    """Load a compiled context model on the HTP backend and run it once on zero inputs: None when it ran to
    finite logits, else why not (the first line of the error)."""
    import numpy as np
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(context), htp_session_options(2, soc_options(htp_arch, soc_model)))
        session.disable_fallback()
        feed = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape],
                                 np.int64 if "int64" in i.type else np.float32) for i in session.get_inputs()}
        out = session.run(None, feed)[0]
    except Exception as e:  # onnxruntime's own error types
        return str(e).strip().splitlines()[0][:300]
    return None if np.isfinite(out).all() else "non-finite logits"
