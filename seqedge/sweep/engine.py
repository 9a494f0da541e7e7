"""The sweep driver: the task matrix on Ray, results in one content-addressed folder.

    result = run_sweep(load_sweep("sweep.toml"), Path("runs/sweep"), ray_address=None, on_event=print)

Ray does the scheduling: a local Ray runtime on this machine by default (`ray.init` with this machine's cores),
or an existing cluster with `ray_address`. Tasks ask for what they use — an export its threads, a host
measurement every core of a node (so it runs alone on an idle node and nothing else is measured beside it), a
device measurement the custom resource `adb:SERIAL` that the node with the phone advertises (`ray start
--resources '{"adb:SERIAL": 1}'`; a local runtime advertises the phones `adb devices` lists). The driver only
submits a task once its export is in the folder, writes each outcome as it arrives, and never stops on a failure.

The folder:

    OUT/sweep.json            the sweep as run; state.json: running | finished, and each run's counts
    OUT/artifacts/KEY/        every artifact, named by its export task's key (written whole, or not at all)
    OUT/tasks/KEY.json        every task's outcome: done (records) or failed (the one-line error)
    OUT/records.json|csv, OUT/summary.md, OUT/plots/*.png   (results.py)

A task whose key has a `done` outcome (and, for an export, its artifact) is not run again: a second run of an
unchanged sweep runs nothing, and a changed one only what changed. `resume` finishes a sweep whose driver was
killed (state.json still says running); without it such a folder is refused.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqedge.errors import BadInputError, BadPathError, SeqedgeError
from seqedge.fsutil import atomic_dir, atomic_write_bytes
from seqedge.sweep.spec import Sweep
from seqedge.sweep.tasks import Task, pack, plan_tasks, run_task, unpack

RAY_INSTALL = 'pip install "seqedge[sweep]"  (or: pip install "ray>=2.60,<2.61")'
STATES = ("planned", "queued", "running", "done", "cached", "failed", "skipped")  # what on_event reports


def _ray():
    try:
        import ray
    except ImportError:
        raise BadInputError("seqedge sweep runs its tasks on Ray, which is not installed", RAY_INSTALL) from None
    return ray


@dataclass
class SweepResult:
    sweep: Sweep
    out: Path
    tasks: list[Task]
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> outcome
    ran: list[str] = field(default_factory=list)  # keys run by this invocation
    cached: list[str] = field(default_factory=list)  # keys whose outcome an earlier run left in the folder
    summary: list[dict[str, Any]] = field(default_factory=list)  # results.summary_rows, once the sweep is written
    seconds: float = 0.0

    def status(self, key: str) -> str:
        return self.outcomes.get(key, {}).get("status", "skipped")

    @property
    def failures(self) -> list[tuple[Task, str]]:
        return [(t, self.outcomes[t.key]["error"]) for t in self.tasks
                if self.outcomes.get(t.key, {}).get("status") == "failed"]


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=1, default=str).encode())


def _claim(out: Path, sweep: Sweep, resume: bool) -> dict:
    """Check OUT before any work: a folder of another kind, or an unfinished sweep without `resume`, is refused."""
    state = _read_json(out / "state.json") if out.exists() else None
    if out.exists() and not out.is_dir():
        raise BadPathError(f"--out {out} is not a folder", "choose another --out")
    if out.exists() and any(out.iterdir()) and state is None:
        raise BadPathError(f"--out {out} exists and is not a sweep folder", "choose a new or a sweep's folder")
    if resume:
        if state is None:
            raise BadInputError(f"nothing to resume in {out}: no sweep was started there", "run without --resume")
        if state.get("sweep") != sweep.digest:
            raise BadInputError(f"{out} holds another sweep ({state.get('name')}); --resume finishes the same one",
                                "pass the same sweep file, or a new --out")
    elif state and state.get("status") == "running" and _alive_driver(state):
        raise BadInputError(f"{out} is being written by another seqedge sweep (pid {state.get('pid')})",
                            "wait for it, or choose another --out")
    elif state and state.get("status") == "running":
        raise BadInputError(f"{out} holds an unfinished sweep (started {state.get('started')}; its driver stopped)",
                            "pass --resume to finish it, or choose another --out")
    return state or {}


def _alive_driver(state: dict) -> bool:
    pid = state.get("pid")
    if state.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return pid != os.getpid()


def attached_adb_devices() -> list[str]:
    """Serials `adb devices` lists as ready on this machine (none without adb)."""
    adb = shutil.which("adb")
    if not adb:
        return []
    try:
        proc = subprocess.run([adb, "devices"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.split()[0] for line in proc.stdout.splitlines()[1:] if line.strip().endswith("\tdevice")]


def _start_ray(address: str | None):
    """Connect to `address`, or start a local Ray runtime on this machine's cores; True when we started it."""
    if address and "RAY_AUTH_MODE" not in os.environ and (
            os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
            or (Path.home() / ".ray" / "auth_token").is_file()):
        # a cluster `ray start` began checks a token: send the one this machine holds (Ray reads the mode when
        # imported, so before that); RAY_AUTH_MODE set by the user wins
        os.environ["RAY_AUTH_MODE"] = "token"
    ray = _ray()
    if ray.is_initialized():
        return False
    common = dict(include_dashboard=False, log_to_driver=False, configure_logging=True, logging_level="ERROR")
    try:
        if address:
            ray.init(address=address, **common)
            return True
        resources = {f"adb:{s}": 1 for s in attached_adb_devices()}
        ray.init(num_cpus=os.cpu_count() or 1, resources=resources, **common)
    except ConnectionError as e:
        raise BadInputError(f"cannot reach the Ray cluster at {address}: {' '.join(str(e).split())[:200]}",
                            "check --ray HOST:PORT (`ray status` on the head node prints it) and that this machine "
                            "has the cluster's token (RAY_AUTH_TOKEN or ~/.ray/auth_token)") from None
    return True


def _cluster_cpus(ray) -> int:
    """Cores of the smallest alive node: a host measurement asks for that many, so it runs alone there."""
    cpus = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    return int(min(c for c in cpus if c > 0)) if any(cpus) else 1


def _resources(task: Task, bench_cpus: int) -> dict[str, Any]:
    threads = task.options.get("threads", 1)
    if task.kind == "export":
        return {"num_cpus": threads}
    if task.kind == "measure":
        return {"num_cpus": max(bench_cpus, 1)}
    if task.kind == "device":
        return {"num_cpus": 1, "resources": {f"adb:{task.options['serial']}": 1}}
    return {"num_cpus": 1}


def _done(out: Path, task: Task) -> dict | None:
    outcome = _read_json(out / "tasks" / f"{task.key}.json")
    if not outcome or outcome.get("status") != "done":
        return None
    if task.kind == "export" and not (out / "artifacts" / task.key / "manifest.json").is_file():
        return None
    return outcome


def _store_artifact(out: Path, key: str, files: dict[str, bytes]) -> None:
    """The exported files, written whole under OUT/artifacts/KEY and checked as any artifact is."""
    from seqedge.exporters.artifact import read_manifest

    with atomic_dir(out / "artifacts" / key, force=True) as tmp:
        read_manifest(unpack(files, tmp))  # every file listed, hashed, inside the folder


def run_sweep(sweep: Sweep, out: Path, ray_address: str | None = None, resume: bool = False,
              on_event: Callable[[Task, str, str], None] | None = None) -> SweepResult:
    """Run every task of `sweep` not already done in `out`; on_event(task, state, detail) reports progress."""
    from seqedge.sweep.results import write_results

    event = on_event or (lambda *_: None)
    out = Path(out)
    state = _claim(out, sweep, resume)
    tasks = plan_tasks(sweep)
    result = SweepResult(sweep, out, tasks)
    for t in tasks:
        event(t, "planned", "")
    t0 = time.perf_counter()
    for sub in ("artifacts", "tasks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    runs = state.get("runs", [])
    state = {"name": sweep.name, "sweep": sweep.digest, "status": "running", "pid": os.getpid(),
             "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": runs}
    _write_json(out / "sweep.json", sweep.to_json())
    _write_json(out / "state.json", state)

    children: dict[str, list[Task]] = {}
    for t in tasks:
        if t.parent:
            children.setdefault(t.parent, []).append(t)
    roots = [t for t in tasks if not t.parent]

    started_ray = _start_ray(ray_address)
    ray = _ray()
    try:
        bench_cpus = _cluster_cpus(ray)
        available = ray.cluster_resources()
        remote = ray.remote(_execute)
        monitor = _monitor_class(ray).remote()
        pending: dict[Any, tuple[Task, Any]] = {}  # object ref -> (task, the artifact's object ref)

        def submit(task: Task, files_ref=None) -> None:
            """files_ref: a function giving the object ref of the parent's artifact (read and put on first use, so
            a sweep whose children are all cached never loads its artifacts)."""
            cached = _done(out, task)
            if cached is not None:
                result.outcomes[task.key] = cached
                result.cached.append(task.key)
                event(task, "cached", "")
                if task.kind == "export":
                    ref = functools.cache(lambda key=task.key: ray.put(pack(out / "artifacts" / key)))
                    for child in children.get(task.key, []):
                        submit(child, ref)
                return
            res = _resources(task, bench_cpus)
            missing = [r for r in res.get("resources", {}) if r not in available]
            if missing:
                outcome = {"status": "failed", "error": f"no Ray node advertises {missing[0]}: attach the phone to a "
                           f"node started with --resources '{{\"{missing[0]}\": 1}}'"}
                _finish(task, outcome)
                return
            config = Path(task.target.path).read_bytes() if task.target.kind == "config" else None
            ref = remote.options(**res, max_retries=0, name=task.label[:100]).remote(
                task, files_ref() if files_ref else None, config, monitor)
            pending[ref] = (task, files_ref)
            event(task, "queued", "")

        def _finish(task: Task, outcome: dict) -> None:
            result.outcomes[task.key] = outcome
            result.ran.append(task.key)
            _write_json(out / "tasks" / f"{task.key}.json", {**task.describe(), **outcome})
            event(task, outcome["status"], outcome.get("error", ""))

        for t in roots:
            submit(t)
        seen_running: set[str] = set()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for key in ray.get(monitor.running.remote()):
                if key not in seen_running:
                    seen_running.add(key)
                    task = next((t for t, _ in pending.values() if t.key == key), None)
                    if task:
                        event(task, "running", "")
            for ref in ready:
                task, _ = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as e:  # the worker died (out of memory, killed): that task fails, the rest go on
                    outcome = {"status": "failed", "error": f"Ray lost the task: {type(e).__name__}: "
                                                            + " ".join(str(e).split())[:200]}
                files = outcome.pop("files", None)
                if task.kind == "export" and outcome["status"] == "done":
                    try:
                        _store_artifact(out, task.key, files)
                    except SeqedgeError as e:
                        outcome = {**outcome, "status": "failed", "error": f"the artifact could not be stored: {e}"}
                _finish(task, outcome)
                if task.kind == "export":
                    if outcome["status"] == "done":
                        ref_files = functools.cache(lambda files=files: ray.put(files))
                        for child in children.get(task.key, []):
                            submit(child, ref_files)
                    else:
                        for child in children.get(task.key, []):
                            event(child, "skipped", f"its export failed: {outcome['error']}")
    finally:
        if started_ray:
            ray.shutdown()
    result.seconds = time.perf_counter() - t0
    result.summary = write_results(sweep, result)["summary"]
    runs.append({"finished": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(result.seconds, 1),
                 "tasks": len(tasks), "ran": len(result.ran), "cached": len(result.cached),
                 "failed": len(result.failures)})
    _write_json(out / "state.json", {**state, "status": "finished", "runs": runs})
    return result


def _execute(task: Task, files, config, monitor) -> dict[str, Any]:
    """The body of every Ray task."""
    monitor.started.remote(task.key)
    return run_task(task, files, config)


def _monitor_class(ray):
    """A tiny actor the tasks tell when they start, so the progress view can say running, not just queued."""

    @ray.remote(num_cpus=0)
    class Monitor:
        def __init__(self):
            self.keys: list[str] = []

        def started(self, key: str) -> None:
            self.keys.append(key)

        def running(self) -> list[str]:
            keys, self.keys = self.keys, []
            return keys

    return Monitor
