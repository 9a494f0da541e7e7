"""The gates' torch-side references, computed in a forked process while the export lowers.

An export with verification measures bits/byte on held-out text three ways: the artifact in its runtime, the fp32
model, and the model on the recipe's reference grid (quant/report.py: `accuracy`). The last two need only the model
and the text. Each is one forward over about 1,000 tokens, compute-bound: on 2 cores, 3.7 s apiece for mamba-130m,
plus 2-4 s to put the weights on the grid. The parity check's torch side (exporters/verify.py: `reference_rows`,
the fp32 and grid logits along the prompt and its continuation) needs no artifact either when the walk is the
text's own tokens. Most of an ExecuTorch lowering runs on one core (tracing, in Python). So `ahead_references()`
forks, before the lowering, a process that computes both on one thread: `accuracy_references` (the bits, summed,
and the fp32 model's top-1 at each position) and `reference_rows`. `AheadReferences.accuracy(ids)` and
`.parity(path)` collect them for the gates, which then need no grid model of their own. They are used only for the
same tokens. A worker that failed, died or read other tokens leaves the gates to compute them here, as they do
without this.

    with ahead_references(model, plan, quant, max_prefill) as ahead:   # before lowering
        ...
        finish(..., ahead=ahead)        # verify_artifact(..., ahead=ahead), accuracy_report(..., ahead=ahead)

No worker is forked without verification, with `--jobs 1` (an export run from one of several threads) or without
`os.fork`: `accuracy` and `parity` then return None.
"""

from __future__ import annotations

import contextlib

from seqedge.exporters.executorch.parallel_preprocess import Forked, forked, processes


def compute(model, quant, plan, max_prefill: int | None) -> dict:
    """What the worker sends back: `accuracy_references` on the tokens `accuracy_report` will read, and
    `reference_rows` on the walk `verify_artifact` will take."""
    import os

    import torch

    from seqedge.errors import BadInputError
    from seqedge.exporters.verify import parity_tokens, reference_rows
    from seqedge.quant.reference import baseline_model
    from seqedge.quant.report import accuracy_references, eval_ids
    from seqedge.tokenizer import load_tokenizer, tokenizer_files

    with contextlib.suppress(OSError):  # needed last (verification): the lowering's workers go first
        os.nice(10)

    source = plan.tokenizer_dir  # what copy_tokenizer puts in the artifact
    tokenizer = load_tokenizer(source if source is not None and tokenizer_files(source) else None)
    cache = getattr(model, "max_seq_len", None)
    grid = quant.recipe.parity.baseline
    grid_model = baseline_model(model, grid)
    refs = {"accuracy": accuracy_references(model, eval_ids(quant, tokenizer, cache),
                                            (grid, grid_model) if grid_model is not None else None)}
    try:  # steps that do not fit the cache: verify_artifact says so to the user
        prompt, continuation = parity_tokens(tokenizer, plan.verify_steps, plan.prompt_bytes, max_prefill, cache)
    except BadInputError:
        return refs
    path = torch.tensor([prompt + continuation[:plan.verify_steps]], dtype=torch.long)  # (1, P + steps)
    refs["parity"] = reference_rows(model, grid_model, path, len(prompt), plan.verify_steps)
    return refs


class AheadReferences(Forked):
    """A forked worker running `compute`, or none (`pid` None)."""

    def accuracy(self, ids: list[int]) -> dict | None:
        """The worker's `accuracy_references` if it read `ids`, else None."""
        refs = (self.result() or {}).get("accuracy")
        return refs if refs is not None and refs["ids"] == list(ids) else None

    def parity(self, path: list[int]) -> dict | None:
        """The worker's `reference_rows` if it walked `path`, else None."""
        refs = (self.result() or {}).get("parity")
        return refs if refs is not None and refs["path"] == list(path) else None


def ahead_references(model, plan, quant, max_prefill: int | None = None):
    """A worker computing the references of `model` under `quant` for a program whose longest prefill is
    `max_prefill` (see the module's docstring), as a context manager: stopped when the block ends, however it ends."""
    import torch

    when = plan.verify and processes(plan.jobs) >= 2 and isinstance(model, torch.nn.Module)
    return forked(AheadReferences, lambda: compute(model, quant, plan, max_prefill), when)
