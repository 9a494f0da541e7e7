"""Parity of an exported artifact against the PyTorch model: prefill, then N decode steps.

Both sides see the same tokens: the artifact reads a prompt of held-out text, then is fed the text's next
tokens through its decode path, one step at a time with the state carried from the prefill on (so a state bug
shows up within steps), and the PyTorch reference then reads the whole text in one forward (every position's
logits), so each step's logits are comparable; `token_agreement` is the share of steps where the two greedy
choices agree. The path is the text, not the artifact's own greedy choices: every artifact of a model is
measured on the same positions, so the KL of two recipes (or group sizes), and of the reference grid the
quantized gate compares with, are comparable and do not depend on where one artifact's greedy walk wandered
(a 4-bit SmolLM2 walked into a loop on which llama.cpp's grid moved 0.19 nats where another walk gave 0.34).
The model's own step is checked against its prefill on the first SELF_CHECK_STEPS steps (a user's module whose
step and prefill disagree would decode differently from the artifact, which is traced from prefill).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from seqedge.diagnostics import stage
from seqedge.errors import BadInputError, ParityError

FP32_TOLERANCE = 1e-3


@dataclass
class Parity:
    prefill_max_abs_diff: float
    max_abs_diff: float
    token_agreement: float
    steps: int
    per_step_max_abs_diff: list[float]
    tolerance: float
    min_token_agreement: float | None
    prompt_bytes: int
    mean_kl: float = 0.0  # KL(reference ‖ artifact) of the next-token distributions, nats, mean over all steps
    max_kl: float = 0.0
    max_mean_kl: float | None = None
    baseline: str | None = None  # a reference grid on the same weights (quant/reference.py), and its mean KL
    baseline_mean_kl: float | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict:
        """Standard JSON (runners in C++, Kotlin, Swift read it): an ungated tolerance is null, not Infinity."""
        out = {**asdict(self), "passed": self.passed}
        if out["tolerance"] == float("inf"):
            out["tolerance"] = None
        return out

    def summary(self) -> str:
        return (f"prefill max |Δ| {self.prefill_max_abs_diff:.2e}, decode max |Δ| {self.max_abs_diff:.2e} over "
                f"{self.steps} steps, token agreement {self.token_agreement:.1%}, mean KL {self.mean_kl:.2e}")


def _kl(ref: torch.Tensor, art: torch.Tensor) -> float:
    """KL(ref ‖ art) in nats of the softmax distributions of two logit vectors."""
    p, q = torch.log_softmax(ref.double(), -1), torch.log_softmax(art.double(), -1)
    return max(0.0, (p.exp() * (p - q)).sum().item())


SELF_CHECK_STEPS = 4  # decode steps on which the model's own step is checked against its prefill


def reference_rows(reference, base, path: torch.Tensor, prompt_len: int, steps: int) -> dict:
    """The torch side of `check_parity` on `path` (1, prompt_len + steps): the reference's logits at the prompt's
    last position and each step's (steps + 1, V), its own step's largest difference from its prefill on the first
    SELF_CHECK_STEPS steps, and `base`'s logits at the same positions (None without a base). It needs no
    artifact: ahead_references.py computes it while the export lowers."""
    last = slice(prompt_len - 1, None)  # the prompt's last position and each step's
    with torch.no_grad():
        ref_rows = reference.prefill(path, reference.init_state(1))[0][0, last]  # (steps + 1, V)
        # the model's own step must give what its prefill gives (the artifact is traced from prefill): checked
        # on the walk's first steps
        own = []
        _, ref_state = reference.prefill(path[:, :prompt_len], reference.init_state(1), last_only=True)
        for i in range(min(steps, SELF_CHECK_STEPS)):
            ref_logits, ref_state = reference.step(path[:, prompt_len + i : prompt_len + i + 1], ref_state)
            own.append((ref_logits[0, -1] - ref_rows[i + 1]).abs().max().item())
        base_rows = base.prefill(path, base.init_state(1))[0][0, last] if base is not None else None
    return {"path": path[0].tolist(), "ref_rows": ref_rows, "own": own, "base_rows": base_rows}


def check_parity(reference, artifact, prompt: list[int], steps: int = 64, tolerance: float = FP32_TOLERANCE,
                 min_token_agreement: float | None = 1.0, max_mean_kl: float | None = None,
                 baseline: tuple[str, torch.nn.Module | None, float] | None = None,
                 continuation: list[int] | None = None, refs: dict | None = None) -> Parity:
    """`continuation`: the tokens fed after the prompt, one per step (the text's own; missing ones are the
    artifact's greedy choices). `baseline`: (grid name, the reference model on that grid, factor): it reads
    the same tokens, and the KL gate becomes max(max_mean_kl, factor x its mean KL). `refs`: `reference_rows` of
    this walk, computed before (the baseline's model is then not needed)."""
    tokens = torch.tensor([list(prompt)], dtype=torch.long)  # (1, P)
    fed = list(continuation or [])[:steps]
    with torch.no_grad():
        # the artifact steps through the tokens one at a time (its decode path is what is checked); the
        # reference (and the baseline) then read every position of the same tokens in one forward each
        art_logits, art_state = artifact.prefill(tokens, artifact.init_state(1))
        art_rows, walked = [art_logits[0, -1]], []
        for i in range(steps):
            walked.append(fed[i] if i < len(fed) else art_rows[-1].argmax().item())
            art_logits, art_state = artifact.step(torch.tensor([[walked[-1]]]), art_state)
            art_rows.append(art_logits[0, -1])
        path = torch.cat([tokens, torch.tensor([walked], dtype=torch.long)], dim=1)  # (1, P + steps)
        art_rows = torch.stack(art_rows)  # (steps + 1, V)
    if refs is not None and (refs["path"] != path[0].tolist() or (refs["base_rows"] is None) != (baseline is None)):
        raise ValueError("check_parity: the references given were computed on another walk or baseline")
    refs = refs or reference_rows(reference, baseline[1] if baseline else None, path, tokens.shape[1], steps)
    ref_rows, own, base_rows = refs["ref_rows"], refs["own"], refs["base_rows"]
    with torch.no_grad():
        base_kls = [_kl(r, b) for r, b in zip(ref_rows, base_rows)] if base_rows is not None else None
        prefill_diff = (ref_rows[0] - art_rows[0]).abs().max().item()
        kls = [_kl(r, a) for r, a in zip(ref_rows, art_rows)]
        diffs = [(r - a).abs().max().item() for r, a in zip(ref_rows[1:], art_rows[1:])]
        agree = int((ref_rows[:-1].argmax(-1) == art_rows[:-1].argmax(-1)).sum().item()) if steps else 0
    base_kl = round(sum(base_kls) / len(base_kls), 8) if base_rows is not None else None
    if base_kl is not None and max_mean_kl is not None:
        max_mean_kl = round(max(max_mean_kl, baseline[2] * base_kl), 8)
    parity = Parity(prefill_diff, max(diffs, default=prefill_diff), agree / steps if steps else 1.0, steps,
                    [round(d, 8) for d in diffs], tolerance, min_token_agreement, len(prompt),
                    round(sum(kls) / len(kls), 8), round(max(kls), 8), max_mean_kl,
                    baseline[0] if baseline else None, base_kl)
    for i, d in enumerate(own):
        if d > FP32_TOLERANCE:
            parity.failures.append(f"decode step {i} logits: the model's own step differs from its prefill by "
                                   f"{d:.3g} (> {FP32_TOLERANCE:g}); the artifact follows its prefill")
    if prefill_diff > tolerance:
        parity.failures.append(f"prefill logits: max abs diff {prefill_diff:.3g} > {tolerance:g}")
    for i, d in enumerate(diffs):
        if d > tolerance:
            parity.failures.append(f"decode step {i} logits: max abs diff {d:.3g} > {tolerance:g}")
    if min_token_agreement is not None and parity.token_agreement < min_token_agreement:
        parity.failures.append(f"greedy tokens: agreement {parity.token_agreement:.1%} < {min_token_agreement:.0%}")
    if max_mean_kl is not None and parity.mean_kl > max_mean_kl:
        against = f" ({baseline[2]:g} x {base_kl:.3g} of {baseline[0]} on the same weights)" if base_kl else ""
        parity.failures.append(f"next-token distributions: mean KL {parity.mean_kl:.3g} nats > {max_mean_kl:g}{against}")
    return parity


def require(parity: Parity, what: str) -> None:
    if not parity.passed:
        shown = parity.failures[:5] + ([f"... {len(parity.failures) - 5} more"] if len(parity.failures) > 5 else [])
        raise ParityError(f"{what} disagrees with PyTorch: " + "; ".join(shown), parity.failures,
                          "try --ops portable, or report the model and these figures")


def parity_tokens(tokenizer, steps: int, prompt_bytes: int, max_prefill: int | None = None,
                  cache: int | None = None) -> tuple[list[int], list[int]]:
    """The prompt and the continuation `verify_artifact` feeds: held-out text, the prompt within the program's
    longest prefill and, with a KV cache of `cache` positions, prompt + steps within it."""
    from seqedge.data import held_out_tokens

    prompt_bytes = min(prompt_bytes, max_prefill or prompt_bytes)  # within the program
    if cache:  # prompt + decode steps within the KV cache
        if steps >= cache:
            raise BadInputError(f"--steps {steps} does not fit the artifact's {cache}-position cache",
                                f"use --steps {cache // 2} or fewer")
        prompt_bytes = max(1, min(prompt_bytes, cache - steps))
    text = held_out_tokens(tokenizer, prompt_bytes + steps)  # the artifact's tokenizer: real text
    return text[:prompt_bytes], text[prompt_bytes:]


def verify_artifact(folder, model, steps: int = 64, prompt_bytes: int = 64, threads: int = 2,
                    runtime: str | None = None, runner=None, shown_as=None, grid=None, ahead=None) -> dict:
    """Run the artifact in its runtime against the fp32 `model` on held-out text, with the tolerance of
    the artifact's quantization recipe; raise ParityError on failure. `grid`: a function giving the recipe's
    baseline model, when the caller builds it once for several gates (quant/reference.py); `ahead`: the torch
    side computed while the export lowered (ahead_references.py), used for the same walk."""
    from seqedge.exporters.plan import held_cache_type
    from seqedge.quant.recipe import parity_rule
    from seqedge.quant.reference import baseline_model
    from seqedge.runtimes import open_artifact
    from seqedge.tokenizer import load_tokenizer

    own = runner is None
    with stage("verification", str(folder)):
        runner = runner or open_artifact(folder, threads=threads, runtime=runtime, check_files=False)
        rule = parity_rule(runner.manifest.get("quant", {}).get("recipe", "fp32"),
                           held_cache_type(runner.manifest) == "float16")
        try:
            prompt, continuation = parity_tokens(load_tokenizer(folder), steps, prompt_bytes,
                                                 getattr(runner, "max_prefill", None), runner.manifest.get("max_seq_len"))
            refs = ahead.parity(prompt + continuation[:steps]) if ahead is not None and len(continuation) >= steps \
                else None  # a walk of the text's own tokens only: the references were computed before the artifact
            if refs is not None:
                baseline = (rule.baseline, None, rule.baseline_factor) if refs["base_rows"] is not None else None
            else:
                grid_model = grid() if grid is not None else baseline_model(model, rule.baseline)
                baseline = (rule.baseline, grid_model, rule.baseline_factor) if grid_model is not None else None
            parity = check_parity(model, runner, prompt, steps=steps,
                                  tolerance=rule.tolerance if rule.tolerance is not None else float("inf"),
                                  min_token_agreement=rule.min_token_agreement, max_mean_kl=rule.max_mean_kl,
                                  baseline=baseline, continuation=continuation, refs=refs)
        finally:
            if own:
                runner.close()
    require(parity, f"the {runner.manifest['format']} artifact at {shown_as or folder}")  # shown_as: not a temp folder
    return {**parity.to_json(), "rule": rule.note}
