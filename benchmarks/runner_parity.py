"""The native runner (what an app embeds) against the Python runtime (what `seqedge bench` measures) on the same
ExecuTorch artifacts, alternated context by context, so both sides of each pair run seconds apart.

    .venv/bin/python benchmarks/runner_parity.py ART [ART ...] --runner R/seqedge_runner [--contexts 0,256,1024]
                                                 [--rounds 6] [--decode 64] [--threads 2] [--json F]

peers.py times the runner once per round after (or before) the Python runtime has measured every context in one
child process, minutes apart on a machine whose speed swings ±15 % between rounds. Here each (round, artifact,
context) runs the two back to back, in alternating order (Python first in even pairs, the runner first in odd
ones), each as a fresh process: the Python side is `seqedge bench`'s own child (`seqedge.bench.measure.run_child`:
load, a prefill of the context, 2 warm-up steps, then `--decode` timed steps), the runner side is
`measure_device` on this host (`seqedge bench --runner`: the same prompt length in tokens, a warm-up prefill and
2 steps, then the timed steps). Printed per artifact and context: each side's decode tok/s (median over rounds)
and the median and interquartile range of the paired ratios runner / Python, with the load average of the run.
A context of 0 is a 1-token prompt on both sides, as in peers.py.

    .venv/bin/python benchmarks/runner_parity.py ART ... --runner R/seqedge_runner --lockstep [--turns 8]

--lockstep pairs the two turn by turn instead, both loaded once per (round, artifact): the runner as one
`seqedge_runner --prompts-from-stdin --timing` process, handed a prompt file per turn (its warm-up, prefills and
`--decode` timed steps, as above), and the Python runtime in this process through the same adapter and
`prefill_times` and `decode_times` the benchmark child uses, its turns alternating with the runner's (Python
first in even turns), `--turns` pairs per context. A turn also times the context's prefill on both sides (the
median of three from a fresh state, after a warm-up), so a context of 2 or more gives a prefill pair too. A turn
is ~0.1-1.5 s, so the machine's swings (±15 % between rounds here) fall on both sides of a pair alike; what a
fresh process brings (where its memory lands) is sampled once per round.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import loadavg  # noqa: E402


def python_decode(art: Path, context: int, decode: int, threads: int, text: bytes) -> float:
    from seqedge.bench.measure import run_child

    raw = run_child(art, threads, [], [context], decode, text)
    seconds = raw["decode"][0]["seconds"]
    return len(seconds) / sum(seconds), 1 / statistics.median(seconds)


def runner_decode(art: Path, runner: Path, context: int, decode: int, threads: int) -> float:
    from seqedge.bench.device import LocalTransport, measure_device, prompts_of_tokens

    transport = LocalTransport()
    try:
        records = measure_device(transport, runner, art, art.name, prompts_of_tokens(art, [context]), decode,
                                 threads, {})
    finally:
        transport.close()
    value = {r.metric: r.value for r in records}
    return value["decode_tok_s"], 1e3 / value["decode_ms_p50"]


class RunnerTurns:
    """One `seqedge_runner ART --prompts-from-stdin --timing` process: turn(prompt_file) runs one timed generation
    and returns its decode tok/s, 1 / median step and prefill tok/s, from the timing line it prints."""

    def __init__(self, runner: Path, art: Path, decode: int, threads: int):
        env = {**os.environ, "LD_LIBRARY_PATH": str(runner.resolve().parent)}
        self.proc = subprocess.Popen([str(runner), str(art), "--prompts-from-stdin", "--timing", "--max-new-tokens",
                                      str(decode + 1), "--threads", str(threads)], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)

    def turn(self, prompt_file: Path) -> tuple[float, float, float]:
        from seqedge.bench.device import TIMING_LINE

        self.proc.stdin.write(f"{prompt_file}\n")
        self.proc.stdin.flush()
        for line in self.proc.stderr:
            if line.startswith(TIMING_LINE):
                t = json.loads(line)
                return t["decode_tok_s"], 1e3 / t["decode_ms_p50"], t["prompt_tokens"] / t["prefill_ms"] * 1e3
        raise SystemExit(f"the runner ended (exit {self.proc.wait()}) before its timing line")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def python_turns(art: Path, threads: int):
    """The Python runtime in this process, as the benchmark child loads it: turn(context) -> (decode tok/s,
    1 / median step, prefill tok/s of the context)."""
    import torch

    from seqedge.bench.measure import decode_times, prefill_times
    from seqedge.runtimes import open_artifact

    torch.set_num_threads(threads)
    adapter = open_artifact(art, threads=threads)

    def turn(context: int, decode: int, prompt) -> tuple[float, float, float]:
        prefill = statistics.median(prefill_times(adapter, prompt[:, :context]))
        seconds = decode_times(adapter, context, decode, prompt=prompt)
        return len(seconds) / sum(seconds), 1 / statistics.median(seconds), context / prefill

    return adapter, turn


def lockstep(a, contexts: list[int], text: bytes, pairs: dict, loads: list) -> None:
    import torch

    from seqedge.bench.device import prompts_of_tokens

    prompt = torch.tensor([list(text)], dtype=torch.long)
    with tempfile.TemporaryDirectory(prefix="seqedge-parity-") as tmp:
        files = {}  # per artifact and context, the runner's prompt file (as many tokens as the Python side's)
        for art in a.artifacts:
            for c, body in prompts_of_tokens(art, contexts).items():
                files[art, c] = Path(tmp) / f"{art.name}-{c}.txt"
                files[art, c].write_bytes(body)
        for r in range(a.rounds):
            for art in a.artifacts:
                runner = RunnerTurns(a.runner, art, a.decode, a.threads)
                adapter, python = python_turns(art, a.threads)
                try:
                    for c in contexts:
                        for t in range(a.turns):
                            got = {}
                            for name in ("python", "runner") if t % 2 == 0 else ("runner", "python"):
                                got[name], got[f"{name}_p50"], got[f"{name}_prefill"] = (
                                    python(c, a.decode, prompt) if name == "python" else runner.turn(files[art, c]))
                            pairs.setdefault((art.name, c), []).append(got)
                        last = pairs[(art.name, c)][-a.turns:]
                        ratios = [g["runner"] / g["python"] for g in last]
                        print(f"round {r} {art.name} context {c}: {a.turns} turns, runner/python median "
                              f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}), python "
                              f"{statistics.median(g['python'] for g in last):.1f} tok/s  load {loadavg()}", flush=True)
                finally:
                    runner.close()
                    adapter.close()
            loads.append(loadavg())


def fresh(a, contexts: list[int], text: bytes, pairs: dict, loads: list) -> None:
    for r in range(a.rounds):
        for art in a.artifacts:
            for i, c in enumerate(contexts):
                sides = [("python", lambda art=art, c=c: python_decode(art, c, a.decode, a.threads, text)),
                         ("runner", lambda art=art, c=c: runner_decode(art, a.runner, c, a.decode, a.threads))]
                got = {}
                for name, fn in sides if (r + i) % 2 == 0 else sides[::-1]:
                    got[name], got[f"{name}_p50"] = fn()
                pairs.setdefault((art.name, c), []).append(got)
                print(f"round {r} {art.name} context {c}: python {got['python']:.1f} tok/s, runner "
                      f"{got['runner']:.1f} ({got['runner'] / got['python']:.3f}); median steps "
                      f"{got['runner_p50'] / got['python_p50']:.3f}  load {loadavg()}", flush=True)
        loads.append(loadavg())


def quartiles(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


def median_ci(xs: list[float]) -> tuple[float, float]:
    """A distribution-free ~95 % interval of the median: the order statistics (counted from 1) n/2 - 0.98·√n and
    1 + n/2 + 0.98·√n (the sign test's, by the normal approximation of Binomial(n, 1/2)); the whole range for fewer
    than 6 values."""
    ys, n = sorted(xs), len(xs)
    if n < 6:
        return ys[0], ys[-1]
    half = 0.98 * math.sqrt(n)
    return ys[max(0, math.floor(n / 2 - half) - 1)], ys[min(n - 1, math.ceil(1 + n / 2 + half) - 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", nargs="+", type=Path)
    ap.add_argument("--runner", type=Path, required=True, help="seqedge_runner (seqedge build-runner --out DIR)")
    ap.add_argument("--contexts", default="0,256,1024")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--lockstep", action="store_true", help="alternate turn by turn, both sides loaded once a round")
    ap.add_argument("--turns", type=int, default=8, help="--lockstep: pairs per context and round")
    a = ap.parse_args()
    from seqedge.data import held_out_prompt

    contexts = [max(1, int(c)) for c in a.contexts.split(",")]
    text = held_out_prompt(max(contexts) + a.decode + 8)
    loads = [loadavg()]
    pairs: dict[tuple[str, int], list[dict]] = {}  # per artifact and context, each pair's four figures
    if a.lockstep:
        lockstep(a, contexts, text, pairs, loads)
    else:
        fresh(a, contexts, text, pairs, loads)
    paired = f"{a.rounds} rounds of {a.turns} lockstep turns" if a.lockstep else f"{a.rounds} rounds"
    print(f"\ndecode tok/s (steps / their total time), {paired}, {a.threads} threads, load average "
          f"{min(loads)}-{max(loads)}; runner/python as the median of the pairs' ratios (IQR), and the same of the "
          "median steps, with a 95 % interval of the median of the ratios")
    print(f"{'artifact':56s} {'context':>7s} {'python':>8s} {'runner':>8s} {'runner/python':>14s} {'IQR':>13s} "
          f"{'95 % of median':>15s} {'median steps':>13s} {'pairs':>5s}{'  prefill runner/python (95 %)' * a.lockstep}")
    summary = []
    for (name, c), got in pairs.items():
        ratios = [g["runner"] / g["python"] for g in got]
        steps = [g["runner_p50"] / g["python_p50"] for g in got]
        lo, hi = quartiles(ratios)
        clo, chi = median_ci(ratios)
        row = {"artifact": name, "context": c, "python": statistics.median(g["python"] for g in got),
               "runner": statistics.median(g["runner"] for g in got), "ratio": statistics.median(ratios),
               "ratio_iqr": [lo, hi], "ratio_median_95": [clo, chi], "median_step_ratio": statistics.median(steps),
               "pairs": got}
        prefill = ""
        if a.lockstep and c > 1:  # a 1-token prefill is a decode step
            pre = [g["runner_prefill"] / g["python_prefill"] for g in got]
            row["prefill_ratio"], row["prefill_ratio_median_95"] = statistics.median(pre), list(median_ci(pre))
            prefill = f"  {row['prefill_ratio']:.3f} ({row['prefill_ratio_median_95'][0]:.3f}-" \
                      f"{row['prefill_ratio_median_95'][1]:.3f})"
        summary.append(row)
        print(f"{name:56s} {c:7d} {row['python']:8.1f} {row['runner']:8.1f} {row['ratio']:14.3f} "
              f"{lo:6.3f}-{hi:6.3f} {clo:7.3f}-{chi:7.3f} {row['median_step_ratio']:13.3f} {len(ratios):5d}{prefill}")
    if a.json:
        a.json.write_text(json.dumps({"threads": a.threads, "decode_tokens": a.decode, "load": loads,
                                      "lockstep_turns": a.turns if a.lockstep else None,
                                      "rows": summary}, indent=1))

if __name__ == "__main__":
    main()
