"""onnxruntime adapter: runs an ONNX artifact's stateful graph on the CPU execution provider (or the
provider a device profile asks for, when this build has it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from seqedge.errors import CorruptFileError, UnsupportedError
from seqedge.runtimes.base import ArtifactRunner

INSTALL = "pip install onnxruntime>=1.31"


class OnnxRuntimeAdapter(ArtifactRunner):
    name = "onnxruntime"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import onnxruntime
        except ImportError:
            return False, f"onnxruntime is not installed ({INSTALL})"
        return True, f"onnxruntime {onnxruntime.__version__}"

    def load(self, artifact: Path, threads: int = 2, manifest: dict[str, Any] | None = None,
             backend: str = "cpu") -> None:
        import onnxruntime as ort

        from seqedge.select import ORT_PROVIDERS

        self.manifest = manifest
        provider = ORT_PROVIDERS.get(backend, backend)
        if provider not in ort.get_available_providers():
            raise UnsupportedError(f"execution provider {provider} (backend {backend!r}) is not in this onnxruntime "
                                   f"build", f"available: {', '.join(ort.get_available_providers())}; install the "
                                   "onnxruntime package built for it (e.g. onnxruntime-gpu for CUDA)")
        self.provider = provider
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        path = Path(artifact) / manifest["graphs"]["prefill"]
        try:
            providers = [provider] + (["CPUExecutionProvider"] if provider != "CPUExecutionProvider" else [])
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
            first = str(e).strip().splitlines()[0][:200]
            raise CorruptFileError(f"onnxruntime cannot load {path} ({first})", "re-export the artifact") from None
        self.output_names = [o.name for o in self.session.get_outputs()]

    def prefill(self, tokens: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        feeds = {"tokens": np.ascontiguousarray(tokens.numpy(), dtype=np.int64)}
        feeds.update({n: state[n].numpy() for n in self.state_names})
        logits, *new = self.session.run(self.output_names, feeds)
        return torch.from_numpy(logits), {n: torch.from_numpy(v) for n, v in zip(self.state_names, new)}

    def close(self) -> None:
        self.session = None
