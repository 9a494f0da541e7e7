"""onnxruntime adapter for static-shape artifacts (exporters/onnx/static.py): a prompt runs as chunks of the
artifact's fixed length through `prefill.onnx` — the last one padded, with `length` saying how many tokens
are real — and single tokens through `decode.onnx`.

backend `cpu` runs both graphs on onnxruntime's CPU provider; `qnn` on Qualcomm's HTP through
onnxruntime-qnn (on x86-64 its emulator), with the CPU behind it for the nodes the HTP does not take.
A chunk whose padding would run past the end of a fixed cache (pos + chunk > max_seq_len) is taken token
by token instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from seqedge.errors import CorruptFileError, UnsupportedError
from seqedge.runtimes.base import ArtifactRunner
from seqedge.runtimes.onnxruntime import OnnxRuntimeAdapter

BACKENDS = ("cpu", "qnn")


class StaticOnnxAdapter(ArtifactRunner):
    name = "onnxruntime-static"

    available = OnnxRuntimeAdapter.available

    def load(self, artifact: Path, threads: int = 2, manifest: dict[str, Any] | None = None,
             backend: str = "cpu") -> None:
        import onnxruntime as ort

        if backend not in BACKENDS:
            raise UnsupportedError(f"static artifacts run on the {'/'.join(BACKENDS)} backends, not {backend!r}",
                                   "pass --backend cpu, or qnn with onnxruntime-qnn installed")
        self.manifest = manifest
        self.chunk = manifest["static"]["chunk"]
        self.sessions = {}
        for entry in ("prefill", "decode"):
            path = Path(artifact) / manifest["graphs"][entry]
            try:
                if backend == "qnn":  # on the SoC the artifact was compiled for, when it was
                    from seqedge.runtimes.qnn import htp_session_options, soc_options

                    soc = manifest.get("qnn") or {}
                    session = ort.InferenceSession(str(path), htp_session_options(
                        threads, soc_options(soc.get("htp_arch"), soc.get("soc_model"))))
                    session.disable_fallback()  # an HTP that fails a run must say so, not rerun on the CPU
                else:
                    opts = ort.SessionOptions()
                    opts.intra_op_num_threads, opts.log_severity_level = threads, 3
                    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            except UnsupportedError:
                raise
            except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
                first = str(e).strip().splitlines()[0][:200]
                raise CorruptFileError(f"onnxruntime cannot load {path} ({first})", "re-export the artifact") from None
            wanted = {"tokens", *self.state_names} | ({"length"} if entry == "prefill" else set())
            got = {i.name for i in session.get_inputs()}
            if got != wanted:
                raise CorruptFileError(f"{path} takes {', '.join(sorted(got))[:200]}, not the static interface",
                                       "re-export the artifact")
            self.sessions[entry] = session

    def _run(self, entry: str, feed: dict[str, np.ndarray], state: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
        outs = self.sessions[entry].run(None, {**feed, **state})
        return outs[0], dict(zip(self.state_names, outs[1:]))

    def prefill(self, tokens: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        if tokens.shape[0] != 1:
            raise UnsupportedError(f"static artifacts take batch 1, not {tokens.shape[0]}", "run one sequence at a time")
        ids = tokens.numpy().astype(np.int64)[0]  # (T,)
        arrays = {n: t.contiguous().numpy() for n, t in state.items()}
        logits, start = None, 0
        while start < len(ids):
            piece = ids[start:start + self.chunk]
            if len(piece) > 1 and self._chunk_fits(arrays):
                padded = np.zeros((1, self.chunk), np.int64)
                padded[0, :len(piece)] = piece
                logits, arrays = self._run("prefill", {"tokens": padded, "length": np.array([len(piece)], np.int64)},
                                           arrays)
                start += len(piece)
            else:
                logits, arrays = self._run("decode", {"tokens": ids[None, start:start + 1]}, arrays)
                start += 1
        return torch.from_numpy(logits), {n: torch.from_numpy(a) for n, a in arrays.items()}

    def _chunk_fits(self, arrays: dict[str, np.ndarray]) -> bool:
        """A padded chunk writes cache slots pos .. pos + chunk - 1: they must exist."""
        if self.max_seq_len is None or "pos" not in arrays:
            return True
        return int(arrays["pos"].reshape(-1)[0]) + self.chunk <= self.max_seq_len

    def close(self) -> None:
        self.sessions = {}
