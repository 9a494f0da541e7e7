"""onnxruntime adapter: runs an ONNX artifact's stateful graph on the CPU execution provider (or the
provider a device profile asks for, when this build has it).

State never goes through numpy copies between steps: the adapter owns the state buffers and binds them
(IO binding) as the graph's inputs and outputs. A state the exporter marked `in_place_state` (the KV
cache of the attention kernel, seqedge.Attention or GroupQueryAttention, whose input and output share one
buffer) is written into the buffer it was
read from; every other state alternates between two buffers (read one, write the other). The state a
call returns is therefore the adapter's own buffers, valid until the next call: pass it to the next call
(no copy) — a state from elsewhere (`init_state`, a copy) is copied in first.
"""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from seqedge.errors import CorruptFileError, UnsupportedError
from seqedge.runtimes.base import ArtifactRunner
from seqedge.runtimes.ort_kernels import register_for, team_threads_for

INSTALL = "pip install onnxruntime>=1.31"

ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
             "tensor(int32)": np.int32, "tensor(double)": np.float64}
ORT_DTYPE_NAMES = {k: np.dtype(v).name for k, v in ORT_TYPES.items()}  # the manifest's (torch's) dtype names


class _Buffers:
    """The state buffers of one batch size, two sets bound to the session once each: a call reads set `cur`
    and writes set `1 - cur` (a state the graph updates in place is one array in both sets). A decode step's
    tokens go into an array bound once (`step_tokens`), so it binds nothing. The state a call returns is the
    torch views of the set it wrote."""

    def __init__(self, adapter: OnnxRuntimeAdapter, batch: int):
        import onnxruntime as ort

        init = adapter.init_state(batch)
        make = lambda n: init[n].clone().numpy()  # noqa: E731  a numpy array the OrtValue reads in place
        first = {n: make(n) for n in adapter.state_names}
        second = {n: (first[n] if n in adapter.in_place else make(n)) for n in adapter.state_names}
        self.sets = (first, second)
        self.in_place = adapter.in_place
        self.views = tuple({n: torch.from_numpy(a) for n, a in arrays.items()} for arrays in self.sets)
        vocab = adapter.manifest["outputs"][0]["shape"][-1]
        self.logits = np.zeros((batch, 1, vocab), dtype=adapter.logits_dtype)  # (B, 1, V)
        values = {id(a): ort.OrtValue.ortvalue_from_numpy(a) for arrays in self.sets for a in arrays.values()}
        logits = ort.OrtValue.ortvalue_from_numpy(self.logits)
        self.bindings = []
        for reads, writes in (self.sets, self.sets[::-1]):
            binding = adapter.session.io_binding()
            for n in adapter.state_names:
                binding.bind_ortvalue_input(n, values[id(reads[n])])
                binding.bind_ortvalue_output(f"new.{n}", values[id(writes[n])])
            binding.bind_ortvalue_output("logits", logits)
            self.bindings.append(binding)
        self.cur = 0
        self.step_tokens = np.zeros((batch, 1), dtype=np.int64)  # (B, 1): a decode step's tokens, written in place
        self._step_value = ort.OrtValue.ortvalue_from_numpy(self.step_tokens)
        self._binds_step = [False, False]  # each binding's tokens are step_tokens (a prompt rebinds them)

    def bind_tokens(self, tokens: np.ndarray) -> None:
        """The tokens of the next call, into binding `cur`: a decode step's copied into step_tokens."""
        import onnxruntime as ort

        binding = self.bindings[self.cur]
        if tokens.shape == self.step_tokens.shape:
            self.step_tokens[...] = tokens
            if not self._binds_step[self.cur]:
                binding.bind_ortvalue_input("tokens", self._step_value)
                self._binds_step[self.cur] = True
        else:
            binding.bind_ortvalue_input("tokens", ort.OrtValue.ortvalue_from_numpy(tokens))
            self._binds_step[self.cur] = False

    def owns(self, state: dict[str, Tensor]) -> bool:
        """`state` is the state the last call returned (its tensors, not copies)."""
        views = self.views[self.cur]
        return all(map(operator.is_, map(state.get, views), views.values()))  # in C: a step's Python runs cold

    def take(self, state: dict[str, Tensor]) -> None:
        """Copy `state` into set `cur`. A cache updated in place (B, Hkv, S, D) is copied up to the state's
        position only: the attention kernel reads [0, pos + T) and writes [pos, pos + T) before reading it, so
        what the buffer holds past pos is never read. A fresh state (pos 0) then copies no cache at all, where
        llama-135m's 60 caches of 2,048 positions are 47 MB (~10 ms before the first token)."""
        pos = state.get("pos")
        upto = max(0, int(pos.reshape(-1)[0])) if pos is not None and pos.numel() == 1 else None
        for n, a in self.sets[self.cur].items():
            src = state[n]
            if n in self.in_place and upto is not None and a.ndim == 4:
                np.copyto(a[:, :, :upto], src[:, :, :upto].contiguous().numpy(), casting="same_kind")
            else:
                np.copyto(a, src.contiguous().numpy(), casting="same_kind")


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
        opts = self.options = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        path = self.path = Path(artifact) / manifest["graphs"]["prefill"]
        # seqedge's own kernels, when the graph uses them; on their own team of threads where they do all its work
        self.team_threads = team_threads_for(path, threads) if provider == "CPUExecutionProvider" else 0
        register_for(opts, manifest.get("opset"), self.team_threads)
        try:
            providers = [provider] + (["CPUExecutionProvider"] if provider != "CPUExecutionProvider" else [])
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
            first = str(e).strip().splitlines()[0][:200]
            raise CorruptFileError(f"onnxruntime cannot load {path} ({first})", "re-export the artifact") from None
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._prepare_binding(path)

    def _prepare_binding(self, path: Path) -> None:
        """Check the graph has seqedge's stateful interface and set up the state buffers it is bound to."""
        outputs = {o.name: o for o in self.session.get_outputs()}
        inputs = {i.name: i for i in self.session.get_inputs()}
        expected = ["logits", *(f"new.{n}" for n in self.state_names)]
        if [o for o in expected if o not in outputs] or set(inputs) != {"tokens", *self.state_names}:
            raise CorruptFileError(f"{path} does not have the inputs/outputs its manifest lists (inputs: "
                                   f"{', '.join(inputs)}; outputs: {', '.join(outputs)})"[:300], "re-export the artifact")
        for s in self.manifest["state"]:  # the state the adapter allocates is what the graph takes
            graph = inputs[s["name"]]
            dims_ok = len(graph.shape) == len(s["shape"]) and all(
                not isinstance(g, int) or not isinstance(m, int) or g == m for g, m in zip(graph.shape, s["shape"]))
            if not dims_ok or ORT_DTYPE_NAMES.get(graph.type) != s["dtype"]:
                raise CorruptFileError(f"{path}: state {s['name']} is {graph.type} {graph.shape} in the graph but "
                                       f"{s['dtype']} {s['shape']} in the manifest", "re-export the artifact")
        self.logits_dtype = ORT_TYPES.get(outputs["logits"].type, np.float32)
        self.in_place = set(self.manifest.get("in_place_state") or ()) & set(self.state_names)
        self.buffers: dict[int, _Buffers] = {}

    def prefill(self, tokens: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """A prompt longer than the manifest's `prefill_chunk` (models without attention) runs in pieces of it, the
        state carried from one to the next in the bound buffers."""
        batch, T = tokens.shape
        buf = self.buffers.get(batch) or self.buffers.setdefault(batch, _Buffers(self, batch))
        if not buf.owns(state):
            buf.take(state)
        chunk = (self.manifest.get("prefill_chunk") or T) if T > 1 else 1
        for start in range(0, T, chunk):
            buf.bind_tokens(np.ascontiguousarray(tokens[:, start:start + chunk].numpy(), dtype=np.int64))
            self.session.run_with_iobinding(buf.bindings[buf.cur])
            buf.cur = 1 - buf.cur
        return torch.from_numpy(buf.logits.copy()), dict(buf.views[buf.cur])

    def logits_each(self, tokens: Tensor) -> Tensor:
        """Every position's logits in chunks of EVAL_CHUNK tokens: a second session on the graph with its
        last-position Slice taken out (`every_position_graph`; the same weights and kernels, as prefill runs
        them), the state carried between chunks. Stepped token by token where the graph has no such Slice."""
        import onnxruntime as ort

        graph = every_position_graph(self.path)
        if graph is None:
            return super().logits_each(tokens)
        session = ort.InferenceSession(graph, self.options, providers=self.session.get_providers())
        names = [o.name for o in session.get_outputs()]
        state = {n: t.numpy() for n, t in self.init_state(1).items()}
        rows = []
        for start in range(0, tokens.shape[1], EVAL_CHUNK):
            chunk = np.ascontiguousarray(tokens[:, start:start + EVAL_CHUNK].numpy(), dtype=np.int64)
            out = dict(zip(names, session.run(None, {"tokens": chunk, **state})))
            rows.append(torch.from_numpy(out["logits"][0]))  # (chunk, V)
            state = {n: out[f"new.{n}"] for n in self.state_names}
        return torch.cat(rows)  # (T, V)

    def close(self) -> None:
        self.session, self.buffers = None, {}


EVAL_CHUNK = 256  # tokens per call when every position's logits are read (a (256, V) logits buffer)


def every_position_graph(path: Path) -> bytes | None:
    """The graph at `path` returning the logits of every position: the models pick the last position with one
    Slice (starts -1, axis 1) before the head, which is taken out. None when there is not exactly one, or the
    weights live outside the file."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        return None
    consts = {t.name: t for t in model.graph.initializer}
    consts.update({n.output[0]: a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute
                   if a.name == "value"})
    value = lambda name: numpy_helper.to_array(consts[name]).tolist() if name in consts else None  # noqa: E731
    last = [n for n in model.graph.node if n.op_type == "Slice" and len(n.input) >= 4
            and value(n.input[1]) == [-1] and value(n.input[3]) == [1]]
    outputs = {o.name for o in model.graph.output}
    if len(last) != 1 or last[0].output[0] in outputs:
        return None
    cut = last[0]
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == cut.output[0]:
                node.input[i] = cut.input[0]
    model.graph.node.remove(cut)
    logits = next(o for o in model.graph.output if o.name == "logits")
    if len(logits.type.tensor_type.shape.dim) == 3:
        logits.type.tensor_type.shape.dim[1].dim_param = "positions"  # no longer 1
    return model.SerializeToString()
