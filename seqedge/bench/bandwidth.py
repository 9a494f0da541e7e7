"""Measured memory bandwidth of this machine: a copy of a buffer far larger than the caches.

Reported as copy bandwidth (bytes read + bytes written per second), the STREAM "copy" convention. A
decode step that streams W bytes of weights cannot run faster than copy_bandwidth / W tokens per
second on this machine (reading alone is about as fast as this figure here, not twice as fast).
"""

from __future__ import annotations

import time

import torch


def copy_bandwidth_gbs(mib: int = 1024, repeats: int = 4, threads: int | None = None) -> float:
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        src = torch.ones(mib * (1 << 20) // 4)
        dst = torch.empty_like(src)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            dst.copy_(src)
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    return 2 * src.numel() * 4 / best / 1e9
