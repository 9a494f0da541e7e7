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
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
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


def quartiles(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", nargs="+", type=Path)
    ap.add_argument("--runner", type=Path, required=True, help="seqedge_runner (seqedge build-runner --out DIR)")
    ap.add_argument("--contexts", default="0,256,1024")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    from seqedge.data import held_out_prompt

    contexts = [max(1, int(c)) for c in a.contexts.split(",")]
    text = held_out_prompt(max(contexts) + a.decode + 8)
    loads = [loadavg()]
    pairs: dict[tuple[str, int], list[dict]] = {}  # per artifact and context, a round's four figures
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
    print(f"\ndecode tok/s (steps / their total time), {a.rounds} rounds, {a.threads} threads, load average "
          f"{min(loads)}-{max(loads)}; runner/python as the median of the rounds' ratios (IQR), and the same of the "
          "median steps")
    print(f"{'artifact':56s} {'context':>7s} {'python':>8s} {'runner':>8s} {'runner/python':>14s} {'IQR':>13s} "
          f"{'median steps':>13s}")
    summary = []
    for (name, c), rounds in pairs.items():
        ratios = [g["runner"] / g["python"] for g in rounds]
        steps = [g["runner_p50"] / g["python_p50"] for g in rounds]
        lo, hi = quartiles(ratios)
        row = {"artifact": name, "context": c, "python": statistics.median(g["python"] for g in rounds),
               "runner": statistics.median(g["runner"] for g in rounds), "ratio": statistics.median(ratios),
               "ratio_iqr": [lo, hi], "median_step_ratio": statistics.median(steps), "rounds": rounds}
        summary.append(row)
        print(f"{name:56s} {c:7d} {row['python']:8.1f} {row['runner']:8.1f} {row['ratio']:14.3f} "
              f"{lo:6.3f}-{hi:6.3f} {row['median_step_ratio']:13.3f}")
    if a.json:
        a.json.write_text(json.dumps({"threads": a.threads, "decode_tokens": a.decode, "load": loads,
                                      "rows": summary}, indent=1))

if __name__ == "__main__":
    main()
