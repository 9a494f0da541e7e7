"""Train a byte-level language model on local text.

    plan = TrainPlan(family="transformer", preset="small", minutes=3)
    model, report = train(plan)             # report: steps, seconds, final loss, held-out bits per byte

Random windows of the training bytes, AdamW with warm-up and cosine decay; the schedule follows
whichever budget (steps or minutes) runs out first. Bits per byte = mean cross-entropy / ln 2 on fixed,
evenly spaced windows of the held-out bytes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from seqedge.data import Corpus, load_corpus
from seqedge.errors import BadInputError, check_range
from seqedge.models import DEFAULT_FAMILY, SequenceModel, build_model


@dataclass
class TrainPlan:
    family: str = DEFAULT_FAMILY
    preset: str = "small"
    data: list[Path] = field(default_factory=list)  # empty: the Python standard library
    steps: int | None = None  # None with minutes None: DEFAULT_STEPS
    minutes: float | None = None
    seed: int = 0
    batch_size: int = 16
    seq_len: int = 256
    lr: float = 3e-3
    weight_decay: float = 0.1
    warmup_steps: int = 30
    eval_windows: int = 48

    def validate(self) -> None:
        if self.steps is not None and self.steps <= 0:
            raise BadInputError(f"--steps must be positive, got {self.steps}", "e.g. --steps 500")
        if self.minutes is not None and self.minutes <= 0:
            raise BadInputError(f"--minutes must be positive, got {self.minutes}", "e.g. --minutes 3")
        if self.steps is not None:
            check_range("--steps", self.steps, 1, 10**9, "e.g. --steps 500")
        if self.minutes is not None:
            check_range("--minutes", self.minutes, 1e-3, 1e6, "e.g. --minutes 3")
        check_range("--batch-size", self.batch_size, 1, 4096, "e.g. --batch-size 16")
        check_range("--seq-len", self.seq_len, 2, 1 << 16, "e.g. --seq-len 256")


DEFAULT_STEPS = 300
Progress = Callable[[int, int | None, float, float], None]  # (step, total, loss, tokens/s)


def bits_per_byte(model: SequenceModel, data: np.ndarray, windows: int = 48, seq_len: int = 256) -> float:
    """Mean next-byte cross-entropy in bits on `windows` evenly spaced windows of `data`."""
    n = min(seq_len + 1, len(data))
    starts = np.linspace(0, len(data) - n, num=max(1, windows)).astype(np.int64)
    batch = torch.from_numpy(np.stack([data[s : s + n] for s in starts]).astype(np.int64))  # (W, n)
    model.eval()
    with torch.no_grad():
        losses = [F.cross_entropy(model(b[:, :-1]).flatten(0, 1), b[:, 1:].flatten()) for b in batch.split(16)]
    return float(torch.stack(losses).mean()) / math.log(2)


def _lr(plan: TrainPlan, progress: float, step: int) -> float:
    warm = min(1.0, (step + 1) / plan.warmup_steps)
    return plan.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def train(plan: TrainPlan, corpus: Corpus | None = None, on_step: Progress | None = None,
          model: SequenceModel | None = None) -> tuple[SequenceModel, dict]:
    plan.validate()
    torch.manual_seed(plan.seed)
    rng = np.random.default_rng(plan.seed)
    corpus = corpus if corpus is not None else load_corpus(plan.data)
    model = model if model is not None else build_model(plan.family, plan.preset)
    if len(corpus.train) <= plan.seq_len + 1:
        raise BadInputError(f"the training text ({len(corpus.train)} bytes) is shorter than one window "
                            f"({plan.seq_len + 1})", "pass more text with --data")
    steps = plan.steps if plan.steps is not None else (None if plan.minutes else DEFAULT_STEPS)
    budget_s = plan.minutes * 60 if plan.minutes else None

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": plan.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=plan.lr, betas=(0.9, 0.95))
    model.train()
    t0 = time.perf_counter()
    step, loss_ema = 0, None
    while True:
        elapsed = time.perf_counter() - t0
        progress = max(step / steps if steps else 0.0, elapsed / budget_s if budget_s else 0.0)
        if progress >= 1.0:
            break
        starts = rng.integers(0, len(corpus.train) - plan.seq_len - 1, size=plan.batch_size)
        batch = torch.from_numpy(np.stack([corpus.train[s : s + plan.seq_len + 1] for s in starts]).astype(np.int64))
        for g in opt.param_groups:
            g["lr"] = _lr(plan, progress, step)
        logits = model(batch[:, :-1])  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        loss_ema = loss.item() if loss_ema is None else 0.9 * loss_ema + 0.1 * loss.item()
        if on_step:
            seconds = time.perf_counter() - t0
            on_step(step, steps, loss_ema, step * plan.batch_size * plan.seq_len / seconds)
    seconds = time.perf_counter() - t0
    bpb = bits_per_byte(model, corpus.held_out, plan.eval_windows, plan.seq_len)
    model.eval()
    report = {
        "family": model.config.family,
        "preset": plan.preset,
        "parameters": model.num_parameters(),
        "steps": step,
        "seconds": round(seconds, 2),
        "tokens_seen": step * plan.batch_size * plan.seq_len,
        "final_train_loss": round(loss_ema / math.log(2), 4) if loss_ema is not None else None,
        "final_train_loss_unit": "bits per byte (EMA)",
        "held_out_bits_per_byte": round(bpb, 4),
        "seed": plan.seed,
        "corpus": corpus.describe(),
    }
    return model, report
