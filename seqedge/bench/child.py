"""The process that times an artifact: it loads the artifact through its runtime adapter and runs it, nothing
else, so its peak memory is the runtime's (plus Python and torch), never an export's or a parent's.

    python -m seqedge.bench.child REQUEST.json      # prints one JSON line: the raw samples

REQUEST: {"artifact", "threads", "prompt_lengths", "contexts", "decode_tokens", "repeats", "text_hex"}.
Every measurement carries the machine's state around it: the 1-minute load average before and after, the
CPU clock (mean of /proc/cpuinfo "cpu MHz"), and `others_busy_cores`, the CPU time other processes used
during it (busy jiffies from /proc/stat minus this process's own CPU time, per wall second, over at least
MIN_WINDOW seconds). A failure the
user caused prints {"error", "hint"} and exits 2.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path


def loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cpu_mhz() -> float | None:
    try:
        mhz = [float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
               if line.startswith("cpu MHz")]
    except (OSError, ValueError, IndexError):
        return None
    return round(sum(mhz) / len(mhz), 1) if mhz else None


def _busy_seconds() -> float | None:
    """CPU seconds all processes have spent busy (everything but idle and iowait) since boot."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    except (OSError, ValueError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# /proc/stat counts in clock ticks (10 ms): over a tiny model's 64 decode steps (~30 ms) two busy cores beside
# the measurement read as 0.0 in one CI run. A shorter measurement is followed by a wait (this process idle)
# until the window is this long, so other processes' time is counted over enough ticks.
MIN_WINDOW = 0.5


class MachineState:
    """The machine around one measurement: `with MachineState() as m: ...; m.to_json()`."""

    def __enter__(self):
        self.load_before, self.mhz, self.start = loadavg(), cpu_mhz(), time.time()
        self.busy0, self.own0, self.t0 = _busy_seconds(), _own_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t0
        if wall < MIN_WINDOW:  # the machine around it, over a window /proc/stat's ticks can count
            time.sleep(MIN_WINDOW - wall)
            wall = time.perf_counter() - self.t0
        busy1, own1 = _busy_seconds(), _own_seconds()
        self.others = None
        if self.busy0 is not None and busy1 is not None and wall > 0:
            self.others = round(max(0.0, (busy1 - self.busy0) - (own1 - self.own0)) / wall, 2)
        self.load_after = loadavg()

    def to_json(self) -> dict:
        return {"loadavg_1m_before": self.load_before, "loadavg_1m_after": self.load_after,
                "others_busy_cores": self.others, "cpu_mhz": self.mhz,
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.start))}


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _rss_mb() -> float:
    """Current resident set of this process, MB (VmRSS), or the peak where /proc is missing."""
    return _status_mb("VmRSS") or _peak_mb()


def _peak_mb() -> float:
    """Peak resident set of this process since exec (VmHWM). Not getrusage's ru_maxrss: Linux carries the
    parent's peak into a child across fork + exec, so a child of a big parent would report the parent's."""
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 1024 / 1024


def run(request: dict) -> dict:
    import torch

    from seqedge.bench.measure import decode_times, prefill_times
    from seqedge.runtimes import open_artifact

    torch.set_num_threads(request["threads"])
    baseline = _rss_mb()  # Python + torch + seqedge, before the artifact
    # this machine's CPU: an artifact made for an accelerator is measured on the CPU here and projected for the
    # accelerator (a static NPU artifact's target is the HTP, whose x86-64 emulator says nothing of its speed)
    from seqedge.exporters.artifact import read_manifest

    manifest = read_manifest(request["artifact"], check_files=False)  # read once, handed to the adapter
    runner = open_artifact(request["artifact"], threads=request["threads"], manifest=manifest,
                           **({"backend": "cpu"} if manifest.get("static") else {}))
    loaded = _rss_mb()
    prompt = torch.tensor([list(bytes.fromhex(request["text_hex"]))], dtype=torch.long)  # (1, max length)
    out: dict = {"runtime": runner.name, "pid": os.getpid(), "prefill": [], "decode": []}
    try:
        for P in request["prompt_lengths"]:
            with MachineState() as m:
                samples = prefill_times(runner, prompt[:, :P], request["repeats"])
            out["prefill"].append({"tokens": P, "seconds": samples, "state": m.to_json()})
        for c in request["contexts"]:
            with MachineState() as m:
                samples = decode_times(runner, c, request["decode_tokens"], prompt=prompt)
            out["decode"].append({"context": c, "seconds": samples, "state": m.to_json()})
    finally:
        runner.close()
    out["memory"] = {"baseline_mb": round(baseline, 1), "after_load_mb": round(loaded, 1),
                     "peak_mb": round(_peak_mb(), 1)}
    return out


def main() -> None:
    from seqedge.errors import SeqedgeError

    request = json.loads(Path(sys.argv[1]).read_text())
    try:
        result = run(request)
    except SeqedgeError as e:
        print(json.dumps({"error": e.message, "hint": e.hint}))
        sys.exit(2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
