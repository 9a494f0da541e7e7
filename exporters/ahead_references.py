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
            from seqedge.exporters.executorch.parallel_preprocess import collect

            done = collect(self.pid, self.read_fd)
            self.close()
            self.refs = done[0] if done is not None else None
        return self.refs if self.refs is not None and self.refs["ids"] == list(ids) else None

    def close(self) -> None:
        """Stop and reap the worker, if there is one left."""
        if self.pid is not None:
            from seqedge.exporters.executorch.parallel_preprocess import stop

            stop(self.pid, self.read_fd)
            self.pid = self.read_fd = None


@contextlib.contextmanager
def ahead_references(model, plan, quant) -> Iterator[AheadReferences]:
    """A worker computing the accuracy references of `model` under `quant` (see the module's docstring); stopped
    when the block ends, however it ends."""
    import torch

    from seqedge.exporters.executorch.parallel_preprocess import fork_worker, processes

    ahead = AheadReferences()
    if plan.verify and processes(plan.jobs) >= 2 and isinstance(model, torch.nn.Module):
        with contextlib.suppress(OSError):  # no process to spare (memory, process limit): the report computes them
            ahead = AheadReferences(*fork_worker(lambda _: compute(model, quant, plan.tokenizer_dir), [None]))
    try:
        yield ahead
    finally:
        ahead.close()
