"""The accuracy gate's torch-side references, computed in a forked process while the export lowers.

An export with verification measures bits/byte on held-out text three ways: the artifact in its runtime, the fp32
model, and the model on the recipe's reference grid (quant/report.py: `accuracy`). The last two need only the model
and the text. Each is one forward over about 1,000 tokens, compute-bound: on 2 cores, 3.7 s apiece for mamba-130m,
plus 2-4 s to put the weights on the grid. Most of an ExecuTorch lowering runs on one core (tracing, in Python). So
`ahead_references()` forks, before the lowering, a process that computes them on one thread
(`accuracy_references`): the bits, summed, and the fp32 model's top-1 at each position. `AheadReferences.get(ids)`
collects them for the report. They are used only for the same tokens. A worker that failed, died or read other
tokens leaves the report to compute them here, as it does without this.

    with ahead_references(model, plan, quant) as ahead:   # before lowering
        ...
        finish(..., ahead=ahead)                          # accuracy_report(..., ahead=ahead)

No worker is forked without verification, with `--jobs 1` (an export run from one of several threads) or without
`os.fork`: `get` then returns None.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import signal
from collections.abc import Iterator


def compute(model, quant, tokenizer_dir) -> dict:
    """What the worker sends back: `accuracy_references` on the tokens `accuracy_report` will read."""
    from seqedge.quant.reference import baseline_model
    from seqedge.quant.report import accuracy_references, eval_ids
    from seqedge.tokenizer import load_tokenizer, tokenizer_files

    tokenizer = load_tokenizer(tokenizer_dir if tokenizer_dir is not None and tokenizer_files(tokenizer_dir) else None)
    ids = eval_ids(quant, tokenizer, getattr(model, "max_seq_len", None))
    grid = quant.recipe.parity.baseline
    grid_model = baseline_model(model, grid)
    return accuracy_references(model, ids, (grid, grid_model) if grid_model is not None else None)


class AheadReferences:
    """A forked worker running `compute`, or none (`pid` None)."""

    def __init__(self, pid: int | None = None, read_fd: int | None = None):
        self.pid, self.read_fd, self.refs = pid, read_fd, None

    def get(self, ids: list[int]) -> dict | None:
        """The worker's references if it finished and read `ids`, else None. Waits for it."""
        if self.pid is not None:
            from seqedge.exporters.executorch.parallel_preprocess import read_all

            data = read_all(self.read_fd)
            _, status = os.waitpid(self.pid, 0)
            self._closed()
            if os.waitstatus_to_exitcode(status) == 0:
                self.refs = pickle.loads(data)[0]  # noqa: S301  our own child's result
        return self.refs if self.refs is not None and self.refs["ids"] == list(ids) else None

    def _closed(self) -> None:
        os.close(self.read_fd)
        self.pid = self.read_fd = None

    def close(self) -> None:
        """Stop and reap a worker whose result was not collected."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            self._closed()


@contextlib.contextmanager
def ahead_references(model, plan, quant) -> Iterator[AheadReferences]:
    """A worker computing the accuracy references of `model` under `quant` (see the module's docstring); stopped
    when the block ends, however it ends."""
    import torch

    from seqedge.exporters.executorch.parallel_preprocess import processes, worker

    ahead = AheadReferences()
    if plan.verify and processes(plan.jobs) >= 2 and isinstance(model, torch.nn.Module):
        read_fd, write_fd = os.pipe()
        gc.freeze()  # the worker's garbage collector then leaves this process's objects (and their pages) alone
        try:
            pid = os.fork()
            if pid == 0:
                os.close(read_fd)
                worker(write_fd, lambda _: compute(model, quant, plan.tokenizer_dir), [None])
            ahead = AheadReferences(pid, read_fd)
        except OSError:  # no process to spare (memory, process limit): the report computes them itself
            os.close(read_fd)
        finally:
            gc.unfreeze()
            os.close(write_fd)
    try:
        yield ahead
    finally:
        ahead.close()
