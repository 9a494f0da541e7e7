"""Timing an artifact on this machine through its runtime adapter (kind `measured-host`).

    records = measure_host(runner, "art", prompt_lengths=[64, 256], contexts=[64, 256], decode_tokens=64,
                           text=held_out_bytes, inputs={"runtime": "onnxruntime"}, on_step=print)

Prefill: a prompt of held-out bytes, warm-up then the best of `repeats`; time to first token is that
prefill (it returns the first new token's logits). Decode: after a prefill of `context` tokens, one warm-up
step then `decode_tokens` single steps with the state carried: tokens/s, p50 and p90 ms per token. Peak
resident memory is this process's (Python, the runtime and the artifact), from getrusage.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from seqedge.bench.records import Record


def decode_times(runner, context: int, tokens: int, warmup: int = 2, prompt: torch.Tensor | None = None) -> list[float]:
    """Seconds per decode step after a prefill of `context` tokens, state carried."""
    with torch.no_grad():
        state = runner.init_state(1)
        if context:
            prompt = prompt if prompt is not None else torch.randint(0, 256, (1, context))
            _, state = runner.prefill(prompt[:, :context], state)
        tok = torch.tensor([[1]])
        for _ in range(warmup):
            _, state = runner.step(tok, state)
        times = []
        for _ in range(tokens):
            t0 = time.perf_counter()
            _, state = runner.step(tok, state)
            times.append(time.perf_counter() - t0)
    return times


def prefill_seconds(runner, tokens: torch.Tensor, repeats: int = 2) -> float:
    """Best wall time of a prefill of `tokens` (1, T) from a fresh state, after one warm-up."""
    best = float("inf")
    with torch.no_grad():
        for i in range(repeats + 1):
            state = runner.init_state(1)
            t0 = time.perf_counter()
            runner.prefill(tokens, state)
            if i:
                best = min(best, time.perf_counter() - t0)
    return best


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 1024 / 1024


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 1e6


def measure_host(runner, target: str, prompt_lengths: list[int], contexts: list[int], decode_tokens: int,
                 text: bytes, inputs: dict, on_step: Callable[[str], None] | None = None,
                 repeats: int = 2) -> list[Record]:
    step = on_step or (lambda _: None)
    prompt = torch.tensor([list(text)], dtype=torch.long)  # (1, max length)
    out = []
    for P in prompt_lengths:
        step(f"prefill {P}")
        s = prefill_seconds(runner, prompt[:, :P], repeats)
        at = {**inputs, "prompt_tokens": P, "repeats": repeats}
        out.append(Record(target, "measured-host", "prefill_tok_s", round(P / s, 2), "tok/s", at))
        out.append(Record(target, "measured-host", "ttft_ms", round(1e3 * s, 3), "ms", at))
    for c in contexts:
        step(f"decode at {c}")
        times = decode_times(runner, c, decode_tokens, prompt=prompt)
        at = {**inputs, "context": c, "steps": len(times)}
        ms = sorted(1e3 * t for t in times)
        out.append(Record(target, "measured-host", "decode_tok_s", round(len(times) / sum(times), 2), "tok/s", at))
        out.append(Record(target, "measured-host", "decode_ms_p50", round(statistics.median(ms), 3), "ms", at))
        out.append(Record(target, "measured-host", "decode_ms_p90", round(ms[int(0.9 * (len(ms) - 1))], 3), "ms", at))
    out.append(Record(target, "measured-host", "peak_rss_mb", round(peak_rss_mb(), 1), "MB",
                      {**inputs, "scope": "this process: Python, the runtime and the artifact"}))
    return out
