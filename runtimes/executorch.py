"""ExecuTorch adapter: runs a `.pte` artifact's `prefill` / `decode` methods through the Python
runtime (pybindings), with seqedge's C++ kernels loaded when the program needs them.

A program whose outputs are not memory-planned (exporters/executorch/export.py) writes them into storage the
pybindings hold per method, outside the arena its inputs are copied into; the adapter returns the state there
without a copy (the logits are copied). As with the onnxruntime adapter, the state a call returns is valid until
the next call of the same method: pass it to that call. Outputs in the arena (older programs) are copied out,
since the next call's inputs may be planned over them."""

from __future__ import annotations

import contextlib
import io
import operator
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from seqedge.errors import BadInputError, CorruptFileError, UnsupportedError
from seqedge.runtimes.base import ArtifactRunner

INSTALL = "pip install executorch==1.5.1"
# What a runner must know to run the programs seqedge's exporter writes, carried in the manifest as
# `runner_contract` (seqedge_engine.cpp's kRunnerContract; a runner that knows less refuses the program by name):
# 2 = a method's outputs may be outside its memory plan, given memory by the runner; 3 = seqedge::int4_matmul's
# codes may come in groups of 16 rows (int4_matmul_core.h).
RUNNER_CONTRACT = 3


@contextlib.contextmanager
def _native_stderr_silenced():
    """ExecuTorch logs a failed load to stderr (fd 2, or Python's sys.stderr through the bindings);
    seqedge reports the failure itself, in one line."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null, contextlib.redirect_stderr(io.StringIO()):
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


SCALAR_TYPES = {"uint8": 0, "int8": 1, "int32": 3, "int64": 4, "float16": 5, "float32": 6, "bool": 11, "bfloat16": 15}


class ExecuTorchAdapter(ArtifactRunner):
    name = "executorch"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import executorch.runtime  # noqa: F401
            import executorch.version
        except ImportError:
            return False, f"executorch is not installed ({INSTALL})"
        return True, f"executorch {executorch.version.__version__}"

    def load(self, artifact: Path, threads: int = 2, manifest: dict[str, Any] | None = None,
             backend: str | None = None) -> None:
        from executorch.runtime import Runtime

        if backend and backend != manifest.get("backend"):
            raise UnsupportedError(f"this program was lowered for {manifest.get('backend')}, not {backend}",
                                   f"re-export with --backend {backend}")
        if manifest.get("runner_contract", 1) > RUNNER_CONTRACT:
            raise UnsupportedError(f"{artifact} needs a newer seqedge (its runner_contract is "
                                   f"{manifest['runner_contract']}, this one's {RUNNER_CONTRACT})",
                                   "upgrade seqedge, or export the model with this one")
        self.manifest = manifest
        _set_threads(threads)
        if manifest.get("quantized_kernels"):
            from seqedge.quant.executorch import quantized_embedding_kernels

            quantized_embedding_kernels()
        if manifest.get("llm_kernels"):
            from seqedge.exporters.executorch.native_ops import llm_kernels

            llm_kernels()
        if manifest.get("native_kernels"):
            from seqedge.native import load_kernels

            load_kernels()
        if "llama::custom_sdpa.out" in (manifest.get("llm_kernels") or ()):  # programs exported before seqedge's
            # tiles attended prompts with the wheel's custom_sdpa, which calls MKL from the pool's threads
            from seqedge.exporters.executorch.native_ops import one_blas_thread_per_pool_thread

            one_blas_thread_per_pool_thread()
        path = Path(artifact) / manifest["graphs"]["prefill"].split("#")[0]
        try:
            with _native_stderr_silenced():
                program = Runtime.get().load_program(str(path))
        except Exception as e:  # executorch raises RuntimeError/ValueError with an error code
            raise CorruptFileError(f"ExecuTorch cannot load {path} ({str(e).strip().splitlines()[0][:160]})",
                                   "the file is truncated or not a .pte program; re-export the artifact") from None
        self.methods = {}
        for method in ("prefill", "decode"):
            if method not in program.method_names:
                raise CorruptFileError(f"{path} has no method {method!r} (has {', '.join(sorted(program.method_names))})",
                                       "re-export it with seqedge export --format executorch")
            try:
                with _native_stderr_silenced():
                    self.methods[method] = program.load_method(method)
            except Exception as e:
                raise CorruptFileError(f"ExecuTorch cannot load method {method!r} of {path} ({str(e)[:160]})",
                                       "a kernel may be missing: run `seqedge build-runner` or re-export") from None
        self.program = program
        in_place = set(manifest.get("in_place_state") or ())
        self.methods = {m: _StateInPlace(method, program.metadata(m), self.state_names, in_place)
                        if _outputs_outside_the_arena(program.metadata(m)) else method
                        for m, method in self.methods.items()}
        self.max_prefill = manifest.get("max_prefill_len")
        self.prefill_chunk = manifest.get("prefill_chunk")  # longer prompts run in pieces of this many tokens
        self._check_interface(path)
        self.torch_moves_data_only()

    def _check_interface(self, path: Path) -> None:
        """The state the manifest describes is what each method takes: count, shapes and dtypes (a manifest is
        untrusted; a mismatch would otherwise surface as a runtime failure mid-generation)."""
        for method in ("prefill", "decode"):
            meta = self.program.metadata(method)
            if meta.num_inputs() != 1 + len(self.state_names):
                raise CorruptFileError(f"{path} method {method!r} takes {meta.num_inputs()} inputs, but the manifest "
                                       f"lists tokens + {len(self.state_names)} state tensors", "re-export the artifact")
            for i, s in enumerate(self.manifest["state"], start=1):
                t = meta.input_tensor_meta(i)
                sizes = list(t.sizes())
                want = [1 if d == "batch" else d for d in s["shape"]]
                if sizes != want or SCALAR_TYPES.get(s["dtype"]) != int(t.dtype()):
                    raise CorruptFileError(f"{path}: state {s['name']} is {sizes} (dtype {int(t.dtype())}) in method "
                                           f"{method!r} but {s['dtype']} {s['shape']} in the manifest",
                                           "re-export the artifact")

    def prefill(self, tokens: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        T = tokens.shape[1]
        if T == 0:
            raise BadInputError("prefill needs at least one token", "pass a non-empty prompt")
        if T == 1 and isinstance(self.methods["decode"], _StateInPlace):  # a decode loop: nothing bound again
            done = self.methods["decode"].step(tokens, state)
            if done is not None:
                return done
        tokens = tokens.to(torch.long)
        chunk = min(self.prefill_chunk or T, self.max_prefill or T)  # beyond the program's longest, or its chunk
        for start in range(0, T, chunk):
            piece = tokens[:, start:start + chunk]
            method = self.methods["decode" if piece.shape[1] == 1 else "prefill"]
            outs = method.execute([piece.contiguous(), *(state[n].contiguous() for n in self.state_names)])
            logits, state = outs[0], dict(zip(self.state_names, outs[1:]))
        return logits, state

    def close(self) -> None:
        self.methods, self.program = {}, None
        self.restore_torch_threads()


class _StateInPlace:
    """A method whose outputs are outside its arena: the state is returned in the storage the pybindings keep
    for them (valid until this method's next call), the logits copied (the caller keeps them).

    Where the inputs are outside the arena too, ExecuTorch reads the state where the caller holds it: passing
    the storage back makes a state's input and output one buffer. A state the manifest lists in
    `in_place_state` is safe so (exporters/executorch/state_in_place.py); when the method has any other state,
    a state found in this method's storage (other than an in-place one at its own place) is copied into a buffer
    of the adapter's first (a Transformer's `pos`, read after `pos + T` is written). A method whose states are
    all in place checks nothing: the runtime passes each state back by name, at its own place.

    A decode loop passes back, call after call, the very tensors the last call returned. Then nothing needs
    binding again: the method's inputs already are the storage (and the staging buffers), so such a step (`step`)
    writes its token into the token buffer bound before, copies what must be staged, runs `execute` alone and reads
    the logits from the output storage it returned last time, and the state it was given is the new state. The
    pybindings' `set_inputs` and `get_outputs` convert every tensor each call (mamba-130m: 49 each way, ~110 us of
    a ~2.2 ms step); and with the weights streamed between two steps, each step's Python runs from cold caches,
    where 49 `contiguous()` calls and a dict of the outputs cost ~2 % of the step."""

    def __init__(self, method, meta, state_names: list[str], in_place: set[str]):
        self.method = method
        shared = meta.num_inputs() > 1 and not meta.input_tensor_meta(1).is_memory_planned()
        self.copied = [shared and n not in in_place for n in state_names]  # by state: copied out of the storage
        self.checks = any(self.copied)  # else a step does no per-state work here
        self.staging: dict[int, Tensor] = {}
        # binding again is skipped only where inputs are aliased, not copied into the arena
        self.rebinds = not shared or meta.input_tensor_meta(0).is_memory_planned()
        self.names = state_names
        self.staged = [k for k, copied in enumerate(self.copied) if copied]
        self.token: Tensor | None = None  # the token buffer the method's input 0 is bound to
        self.outs: list[Tensor] = []  # the last call's outputs: views of the method's output storage (its states')
        self.bound = False  # the method's inputs are the token buffer, the staging buffers and the storage

    def step(self, token: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]] | None:
        """A decode step from `state` when it holds the tensors the last call returned and the inputs are bound
        (None otherwise: the caller takes `execute`)."""
        if not self.bound or token.shape != self.token.shape or not all(
                map(operator.is_, map(state.get, self.names), self.outs[1:])):
            return None
        self.token.copy_(token)
        for k in self.staged:  # each staging buffer is the method's input 1 + k already
            self.staging[k].copy_(self.outs[1 + k])
        self.method._method.execute()
        return self.outs[0].clone(), state

    def execute(self, inputs: list[Tensor]) -> list[Tensor]:
        if not self.rebinds and inputs[0].shape == (1, 1):  # a decode step's token goes through our buffer
            if self.token is None:
                self.token = torch.empty_like(inputs[0])
            inputs[0] = self.token.copy_(inputs[0])
        if self.checks and self.outs:
            storage = [o.data_ptr() for o in self.outs[1:]]  # where the last call wrote each state
            ours = set(storage)
            for k, t in enumerate(inputs[1:]):
                if t.data_ptr() in ours and (self.copied[k] or t.data_ptr() != storage[k]):
                    buf = self.staging.get(k)
                    if buf is None or buf.shape != t.shape:
                        buf = self.staging[k] = torch.empty_like(t)
                    inputs[1 + k] = buf.copy_(t)
        outs = self.method._method(inputs, clone_outputs=False)  # executorch.runtime.Method.execute always clones
        for t in outs[1:]:  # the storage is the method's: it stays alive while the state does (a closed runner too)
            t._seqedge_storage_owner = self.method
        # bound for the next call when every input was ours: the token buffer, a staged state in its staging
        # buffer, any other state in the storage it is written back to
        self.outs = outs
        self.bound = inputs[0] is self.token and all(
            (self.staging.get(k) is t) if self.copied[k] else t.data_ptr() == o.data_ptr()
            for k, (t, o) in enumerate(zip(inputs[1:], outs[1:])))
        return [outs[0].clone(), *outs[1:]]


def _outputs_outside_the_arena(meta) -> bool:
    return meta.num_outputs() > 0 and not any(meta.output_tensor_meta(i).is_memory_planned()
                                              for i in range(meta.num_outputs()))


def _set_threads(threads: int) -> None:
    """ExecuTorch's CPU threadpool (XNNPACK and the optimized kernels) is one per process, sized to the cores
    at start; resize it to `threads` (safe here: nothing else runs on it while a program loads)."""
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count, _unsafe_reset_threadpool

    if threads > 0 and _threadpool_get_thread_count() != threads:
        with _native_stderr_silenced():  # it logs the reset
            _unsafe_reset_threadpool(threads)
