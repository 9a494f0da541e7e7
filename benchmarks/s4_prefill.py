"""S4D prefill: the layer through `seqedge::selective_scan` (what every exporter emits) vs as one FFT
convolution (`s4d_convolution`, eager only), at several lengths, on this host's CPU.

    .venv/bin/python benchmarks/s4_prefill.py [--preset small] [--lengths 256,1024,4096] [--threads 2]

Prints ms per layer call and tokens/s per layer for each form, the largest difference between the two
outputs, and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from seqedge.models import build_model
from seqedge.models.s4 import s4d_convolution


def best_of(fn, rounds: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--lengths", default="256,1024,4096")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model("s4", args.preset).eval()
    layer, H, N = model.layers[0].s4, model.config.hidden_size, model.config.state_size
    print(f"s4 {args.preset}: H={H} N={N}, {args.threads} threads, load {os.getloadavg()[0]:.2f}")
    print(f"{'T':>6} {'scan ms':>9} {'conv ms':>9} {'scan tok/s':>11} {'conv tok/s':>11} {'max |diff|':>11}")
    for T in (int(t) for t in args.lengths.split(",")):
        u, state = torch.randn(1, T, H), torch.randn(1, H, N)
        with torch.no_grad():
            scan = best_of(lambda u=u, state=state: layer.scan(u, state), args.rounds)
            conv = best_of(lambda u=u, state=state: s4d_convolution(layer, u, state), args.rounds)
            diff = (layer.scan(u, state)[0] - s4d_convolution(layer, u, state)[0]).abs().max().item()
        print(f"{T:>6} {scan * 1e3:>9.2f} {conv * 1e3:>9.2f} {T / scan:>11.0f} {T / conv:>11.0f} {diff:>11.2e}")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
