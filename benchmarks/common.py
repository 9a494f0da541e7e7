"""Shared measuring helpers for the speed suite: machine load, copy bandwidth, timing."""

from __future__ import annotations

import os
import statistics

import torch

from seqedge.bench import measure
from seqedge.bench.bandwidth import copy_bandwidth_gbs  # noqa: F401  (re-exported)
from seqedge.bench.measure import decode_times


def loadavg() -> str:
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"


def weight_bytes(model: torch.nn.Module) -> int:
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel() * p.element_size()
    return n


def streamed_weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of weights read per decoded token: everything but the embedding table (one row is read),
    the output head counted once even when tied."""
    emb = next(m for m in model.modules() if isinstance(m, torch.nn.Embedding))
    return weight_bytes(model) - emb.weight.numel() * emb.weight.element_size() + (
        emb.weight.numel() * emb.weight.element_size() if getattr(model.config, "tie_word_embeddings", False) else 0)


def decode_rate(runner, prompt_len: int = 16, tokens: int = 64, warmup: int = 8, vocab: int = 256) -> dict:
    """Decode timing: prefill a random prompt, then `tokens` single-token steps, state carried."""
    times = decode_times(runner, prompt_len, tokens, warmup=warmup, prompt=torch.randint(0, vocab, (1, prompt_len)))
    return {"tok_s": len(times) / sum(times), "ms_p50": 1e3 * statistics.median(times),
            "ms_p90": 1e3 * sorted(times)[int(0.9 * len(times))]}


def prefill_seconds(runner, T: int, repeats: int = 2, vocab: int = 256) -> float:
    return measure.prefill_seconds(runner, torch.randint(0, vocab, (1, T)), repeats)


def threads() -> int:
    return int(os.environ.get("SEQEDGE_BENCH_THREADS", "2"))


class LastOnly:
    """A SequenceModel seen through the artifact interface: logits for the last position only."""

    def __init__(self, model):
        self.model = model
        self.max_seq_len = getattr(model, "max_seq_len", None)

    def init_state(self, batch=1):
        return self.model.init_state(batch)

    def prefill(self, tokens, state):
        return self.model.prefill(tokens, state, last_only=True)

    def step(self, token, state):
        return self.model.step(token, state)


def finish_report(results: dict, json_path) -> None:
    """Close a run's record (load at the end), print it, and write it where asked."""
    import json

    results["loadavg_end"] = loadavg()
    print(json.dumps(results, indent=2))
    if json_path:
        json_path.write_text(json.dumps(results, indent=2))
