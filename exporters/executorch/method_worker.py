"""One method traced and decomposed in a forked process while this process does the other.

An ExecuTorch export traces its two methods (torch.export) and decomposes each (one_decomposition.py), one after
the other, on one core: llama-135m 10 + 5 s of tracing and ~20 + ~12 s of decomposition. The methods are
independent until the lowering joins them. So `method_worker()` forks, before prefill is traced, a process that
traces decode, decomposes it as `one_decomposition.decompose` does, and sends the program back serialised with
`torch.export.save` (the format torch.export defines for programs; the program after it is byte for byte the same,
tests/test_executorch_export.py). Meanwhile this process traces and decomposes prefill, and then loads decode's
program. A worker that fails or dies, or whose program is not decomposed in one go (`DECOMPOSED` unset: several
partitioners, or none), leaves this process to trace the method itself, so an error in the user's model surfaces
here with its own message.

    with method_worker(lambda: trace("decode"), partitioners, jobs) as decode:
        prefill = decompose(trace("prefill"), partitioners)
        decode.get() or decompose(trace("decode"), partitioners)   # (program, what trace returned beside it)

No worker is forked with `jobs` 1 or without `os.fork`; `get` then returns None.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from seqedge.exporters.executorch.one_decomposition import DECOMPOSED, decompose
from seqedge.exporters.executorch.parallel_preprocess import Forked, forked


def traced_and_decomposed(trace: Callable, partitioners: list) -> tuple[bytes, object] | None:
    """In the worker: `trace()` -> (program, extra), the program decomposed and saved; None where it is not
    decomposed in one go (the lowering then goes ExecuTorch's way, here)."""
    import torch

    program, extra = trace()
    program = decompose(program, partitioners)
    if not getattr(program, DECOMPOSED, False):
        return None
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue(), extra


class MethodWorker(Forked):
    """A forked worker running `traced_and_decomposed`, or none (`pid` None)."""

    def get(self):
        """(the decomposed program, what `trace` returned beside it), or None. Waits for the worker."""
        done = self.result()
        if done is None:
            return None
        import torch

        saved, extra = done
        program = torch.export.load(io.BytesIO(saved))
        setattr(program, DECOMPOSED, True)
        return program, extra


def method_worker(trace: Callable, partitioners: list, jobs: int):
    """A worker tracing and decomposing one method (see the module's docstring), as a context manager: stopped when
    the block ends, however it ends."""
    return forked(MethodWorker, lambda: traced_and_decomposed(trace, partitioners), jobs >= 2 and len(partitioners) == 1)
