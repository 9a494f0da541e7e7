"""Timing an artifact on this machine (kind `measured-host`), in a child process that does nothing else.

    records = measure_host(artifact, "art", prompt_lengths=[64, 256], contexts=[64, 256], decode_tokens=64,
                           text=held_out_bytes, threads=2, inputs={"format": "onnx"}, on_step=print)

The child (`seqedge.bench.child`) loads the artifact through its runtime adapter and returns raw samples:
prefill — one warm-up, then `repeats` timed prefills of a prompt of held-out bytes from a fresh state (time
to first token: the prefill returns the first new token's logits); decode — after a prefill of `context`
tokens and two warm-up steps, `decode_tokens` single steps with the state carried, each timed. Reported:
p50 and p90 of those samples, decode tokens/s as steps over their total time, the child's peak resident
memory (and the part above its Python + torch baseline), and with every figure the load average, the
clock and the CPU other processes used while it ran. A figure taken while the machine was busy (other
processes using half a core or more; the load average above the threads used where that is unknown) is
flagged `busy`.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from seqedge.bench.records import Record
from seqedge.errors import BadInputError, InternalError


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


def prefill_times(runner, tokens: torch.Tensor, repeats: int = 3) -> list[float]:
    """Wall seconds of `repeats` prefills of `tokens` (1, T), each from a fresh state, after one warm-up."""
    out = []
    with torch.no_grad():
        for i in range(repeats + 1):
            state = runner.init_state(1)
            t0 = time.perf_counter()
            runner.prefill(tokens, state)
            if i:
                out.append(time.perf_counter() - t0)
    return out


def prefill_seconds(runner, tokens: torch.Tensor, repeats: int = 2) -> float:
    """Best wall time of a prefill of `tokens` (1, T) (the benchmarks' in-process helper)."""
    return min(prefill_times(runner, tokens, repeats))


def p90(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(0.9 * (len(s) - 1)))]


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 1e6


def busy(state: dict, threads: int) -> str | None:
    """Why a figure's machine was busy, or None. The direct signal is the CPU other processes used while it
    ran (/proc/stat minus the child's own time): half a core or more. The load average is the fallback where
    that is missing — it lags by a minute and counts this benchmark's own export, so it is recorded, not
    trusted, when the direct figure exists."""
    others = state.get("others_busy_cores")
    if others is not None:
        return f"other processes used {others:.2f} cores while it ran" if others >= 0.5 else None
    load = max((x for x in (state.get("loadavg_1m_before"), state.get("loadavg_1m_after")) if x is not None),
               default=None)
    return f"load average {load:.2f} > {threads} threads" if load is not None and load > threads else None


def run_child(artifact: Path, threads: int, prompt_lengths: list[int], contexts: list[int], decode_tokens: int,
              text: bytes, repeats: int = 3) -> dict:
    """Run `seqedge.bench.child` on the artifact; its raw samples and memory, or the user's error."""
    request = {"artifact": str(Path(artifact).resolve()), "threads": threads, "prompt_lengths": prompt_lengths,
               "contexts": contexts, "decode_tokens": decode_tokens, "repeats": repeats, "text_hex": text.hex()}
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="seqedge-bench-") as f:
        json.dump(request, f)
        f.flush()
        proc = subprocess.run([sys.executable, "-m", "seqedge.bench.child", f.name], capture_output=True, text=True)
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    try:
        result = json.loads(last)
    except json.JSONDecodeError:
        result = None
    if proc.returncode == 2 and isinstance(result, dict) and "error" in result:
        raise BadInputError(result["error"], result["hint"])
    if proc.returncode != 0 or not isinstance(result, dict):
        raise InternalError(f"the benchmark process for {Path(artifact).name} failed (exit {proc.returncode}): "
                            f"{(proc.stderr.strip().splitlines() or ['no output'])[-1]}",
                            stage="benchmark")
    return result


def measure_host(artifact: Path, target: str, prompt_lengths: list[int], contexts: list[int], decode_tokens: int,
                 text: bytes, threads: int, inputs: dict, on_step: Callable[[str], None] | None = None,
                 repeats: int = 3) -> list[Record]:
    step = on_step or (lambda _: None)
    step("timing in a child process")
    raw = run_child(artifact, threads, prompt_lengths, contexts, decode_tokens, text, repeats)
    inputs = {**inputs, "runtime": raw["runtime"], "threads": threads, "machine": "host"}
    how = f"timed in a child process (pid {raw['pid']}) that only loads and runs the artifact"
    out = []

    def rec(metric, value, unit, at, provenance):
        out.append(Record(target, "measured-host", metric, value, unit, at, provenance))

    for m in raw["prefill"]:
        s, P = m["seconds"], m["tokens"]
        at = {**inputs, "prompt_tokens": P, "samples": len(s), "machine_state": m["state"],
              "busy": busy(m["state"], threads)}
        prov = f"{how}: {len(s)} prefills after one warm-up, median"
        rec("prefill_tok_s", round(P / statistics.median(s), 2), "tok/s", at, prov)
        rec("ttft_ms", round(1e3 * statistics.median(s), 3), "ms", at, prov)
        rec("ttft_ms_p90", round(1e3 * p90(s), 3), "ms", at, f"{how}: {len(s)} prefills after one warm-up, p90")
    for m in raw["decode"]:
        s, c = m["seconds"], m["context"]
        at = {**inputs, "context": c, "samples": len(s), "machine_state": m["state"],
              "busy": busy(m["state"], threads)}
        prov = f"{how}: {len(s)} decode steps after a {c}-token prefill and 2 warm-up steps"
        rec("decode_tok_s", round(len(s) / sum(s), 2), "tok/s", at, prov + ", steps / total time")
        rec("decode_ms_p50", round(1e3 * statistics.median(s), 3), "ms", at, prov + ", median step")
        rec("decode_ms_p90", round(1e3 * p90(s), 3), "ms", at, prov + ", 90th percentile step")
    mem = raw["memory"]
    at = {**inputs, **mem}
    rec("peak_rss_mb", mem["peak_mb"], "MB", at,
        "peak resident memory of the benchmark child process: Python, torch, the runtime and the artifact (no "
        "export, no parent process)")
    rec("runtime_rss_mb", round(mem["peak_mb"] - mem["baseline_mb"], 1), "MB", at,
        f"the child's peak above its Python + torch baseline ({mem['baseline_mb']:.0f} MB): the runtime library, "
        "its session or program, the weights, the state and working buffers")
    return out
