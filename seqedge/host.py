"""The `host` device profile, built at run time from this machine.

Cores from the scheduler's affinity, ISA flags from the OS (/proc/cpuinfo), memory from /proc/meminfo,
a measured copy bandwidth, and the last-level cache (its size from /sys/devices/system/cpu, a copy bandwidth
over a buffer that fits in it: the roofline reads a step's bytes at that rate where they fit). The figures
are cached in ~/.cache/seqedge/host.json (keyed by CPU model and core count; delete the file to re-measure)
only when no other process used half a core or more while they were measured (bench/measure.py:busy), so a
calibration taken on a busy machine is not kept for later runs.
Peak compute is an ESTIMATE from the vector width the flags show.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from seqedge.profiles import ComputeUnit, Profile, RuntimeOption

CACHE = Path(os.environ.get("SEQEDGE_CACHE", Path.home() / ".cache" / "seqedge")) / "host.json"
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
             "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "neon", "asimd", "asimddp", "i8mm", "sve", "sve2")


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            k, _, v = line.partition(":")
            info.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    return info


def _memory_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return 0.0


def _flops_per_cycle(isa: set[str]) -> int:
    """fp32 flop per cycle per core: 2 FMA pipes x vector lanes x 2 (ESTIMATE)."""
    if "avx512f" in isa:
        return 64
    if "avx2" in isa and "fma" in isa:
        return 32
    if isa & {"neon", "asimd"}:
        return 16
    return 8


def last_level_cache_mb(root: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> float:
    """The size of CPU 0's highest-level data or unified cache in MB (0 where the OS does not say)."""
    unit = {"K": 2**10, "M": 2**20, "G": 2**30}  # sysfs writes "307200K"
    best = (0, 0.0)
    for index in root.glob("index*"):
        try:
            if (index / "type").read_text().strip() not in ("Data", "Unified"):
                continue
            level, size = int((index / "level").read_text()), (index / "size").read_text().strip()
            nbytes = float(size[:-1]) * unit[size[-1]] if size[-1:] in unit else float(size)
        except (OSError, ValueError):
            continue
        best = max(best, (level, nbytes / 2**20))
    return round(best[1], 2)


def _measured_bandwidth(key: str, threads: int) -> dict[str, float]:
    """{"copy_bandwidth_gbs", "cache_mb", "cache_copy_bandwidth_gbs"}: memory's copy bandwidth (1 GiB), the
    last-level cache's size, and the copy bandwidth over a buffer that fits in roofline.CACHE_SHARE of it."""
    try:
        cached = json.loads(CACHE.read_text())
        if cached.get("key") == key:
            return {k: float(cached[k]) for k in ("copy_bandwidth_gbs", "cache_mb", "cache_copy_bandwidth_gbs")}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    from seqedge.bench.bandwidth import copy_bandwidth_gbs
    from seqedge.bench.child import MachineState
    from seqedge.bench.measure import busy
    from seqedge.bench.roofline import CACHE_SHARE

    cache_mb = last_level_cache_mb()
    with MachineState() as state:
        out = {"copy_bandwidth_gbs": round(copy_bandwidth_gbs(threads=threads), 2), "cache_mb": cache_mb,
               "cache_copy_bandwidth_gbs": 0.0}
        mib = min(64, int(cache_mb * CACHE_SHARE / 2))  # source and destination both in the cache's share
        if mib >= 1:
            out["cache_copy_bandwidth_gbs"] = round(copy_bandwidth_gbs(mib=mib, repeats=8, threads=threads), 2)
    if not out["cache_copy_bandwidth_gbs"]:
        out["cache_mb"] = 0.0  # too small to measure apart from the core's own caches: not counted
    if busy(state.to_json(), threads):  # a figure taken while other processes ran is used once, never kept
        return out
    try:
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        tmp = CACHE.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, **out}))
        tmp.replace(CACHE)
    except OSError:
        pass  # a read-only home: measure again next time
    return out


def host_isa(info: dict[str, str] | None = None) -> tuple[str, ...]:
    """This CPU's vector features among ISA_FLAGS (/proc/cpuinfo), else its machine name."""
    info = _cpuinfo() if info is None else info
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return tuple(f for f in ISA_FLAGS if f in flags) or (platform.machine(),)


def host_profile() -> Profile:
    info = _cpuinfo()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    isa = host_isa(info)
    model = info.get("model name") or info.get("Hardware") or platform.processor() or platform.machine()
    ghz = round(float(info.get("cpu MHz", 0) or 0) / 1000, 2) or 2.0
    measured = _measured_bandwidth(f"{model}|{cores}", cores)
    bw = measured["copy_bandwidth_gbs"]
    fp32 = round(cores * ghz * _flops_per_cycle(set(isa)), 1)
    peak = {"fp32": fp32, "int8": fp32 * 4}
    if set(isa) & {"avx512_bf16", "amx_bf16"}:
        peak["bf16"] = fp32 * 2
    from seqedge.bench.roofline import calibration

    cpu = calibration()["cpu"]
    fitted = (f"efficiency: the cpu class's bandwidth efficiency fitted on {len(cpu.decode_points)} published "
              "on-device points (not measured here)")
    runtimes = (
        RuntimeOption("onnxruntime", "cpu", ("fp32", "int8", "int4"), efficiency=cpu.bandwidth_efficiency, note=fitted),
        RuntimeOption("executorch", "xnnpack", ("fp32", "fp16", "int8", "int4"), ("fp32", "int8"),
                      efficiency=cpu.bandwidth_efficiency, note=fitted),
        RuntimeOption("torch", "cpu", ("fp32",), efficiency=0.5, note="PyTorch eager: the reference (efficiency "
                      "0.5 is an ESTIMATE)"),
    )
    unit = ComputeUnit("cpu", "cpu", bw, peak, runtimes, cores=cores, core=model, ghz=ghz)
    return Profile(name="host", display_name=f"this machine ({model})", kind="host", soc=model,
                   memory_gb=_memory_gb(), memory_bandwidth_gbs=bw, isa=isa, units=(unit,),
                   cache_mb=measured["cache_mb"], cache_bandwidth_gbs=measured["cache_copy_bandwidth_gbs"],
                   sources=("measured at run time: /proc/cpuinfo, /proc/meminfo, /sys/devices/system/cpu (the "
                            "last-level cache), copy bandwidth over 1 GiB and over a buffer in that cache",
                            "peak compute: ESTIMATE from vector width"), path=str(CACHE))
