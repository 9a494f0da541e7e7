"""XNNPACK's per-partition `preprocess` on every core.

ExecuTorch lowers each XNNPACK partition on its own: `preprocess` gets a private copy of the partition's program
(`copy_exported_program_for_preprocess`), runs XNNPACK's passes on it (each a fake-tensor re-trace) and returns
bytes (`PreprocessResult`). The partitions of a model are therefore independent jobs, and they are most of a
lowering's time on a model with many layers (mamba-130m: 123 partitions, 43 s of 136 s, on one core).

Within `parallel_preprocess()`, ExecuTorch's `preprocess_multimethod` for XNNPACK forks workers (copy-on-write:
nothing is pickled on the way in). Worker w runs partitions w, w + n, w + 2n, ... and sends its results back
pickled through a pipe, while this process runs its own share. The results are the bytes one process would give
(tests/test_executorch_export.py: the program is byte-identical without the lowering shortcuts). A worker that
fails or dies sends nothing; its partitions are run here afterwards, so a real error surfaces with its own message.

    with parallel_preprocess(jobs=2):
        edge = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()])

`jobs` is `seqedge export --jobs` (ExportPlan.jobs); by default the cores this process may run on, at most
MAX_JOBS. 1, or no `os.fork` (Windows), runs everything here as ExecuTorch does — the choice for a program that
exports from one of several threads (a server): forking a multi-threaded process copies only the calling thread.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import signal
from collections.abc import Iterator

MAX_JOBS = 8  # the partitions of a 130M model (about 120) keep 8 workers busy; more mostly costs memory


def default_jobs() -> int:
    """The cores this process may run on, at most MAX_JOBS."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, MAX_JOBS))


def processes(jobs: int | None) -> int:
    """How many processes `parallel_preprocess(jobs)` lowers with: `jobs`, else default_jobs(); 1 without os.fork."""
    return (jobs or default_jobs()) if hasattr(os, "fork") else 1


def worker(write_fd: int, run, work: list) -> None:
    """In a forked child: run `work`, write the pickled results to `write_fd`, exit without returning (the parent's
    `finally` blocks, atexit handlers and open artifact folders are not the child's to run)."""
    code = 1
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)  # not the CLI's clean-up handlers: the parent cleans up
        import torch

        torch.set_num_threads(1)  # one worker per core; no OpenMP pool in a forked child
        data = pickle.dumps([run(job) for job in work], protocol=pickle.HIGHEST_PROTOCOL)
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(data)
        code = 0
    except BaseException:  # noqa: BLE001  the parent reruns this share and reports the error itself
        pass
    finally:
        os._exit(code)


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def fork_worker(run, work: list) -> tuple[int, int]:
    """A forked child running `worker(…, run, work)`: (its pid, the read end of its pipe)."""
    read_fd, write_fd = os.pipe()
    gc.freeze()  # the child's garbage collector then leaves the parent's objects (and their pages) alone
    try:
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            worker(write_fd, run, work)
    except OSError:
        os.close(read_fd)
        raise
    finally:
        gc.unfreeze()
        os.close(write_fd)
    return pid, read_fd


def collect(pid: int, read_fd: int) -> list | None:
    """A `fork_worker` child's results once it has exited, or None if it failed. Its pipe is closed and it is
    reaped: it is not to be `stop`ped after (its pid may be another process's by then)."""
    data = read_all(read_fd)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    return pickle.loads(data) if os.waitstatus_to_exitcode(status) == 0 else None  # noqa: S301  our own child's


def stop(pid: int, read_fd: int) -> None:
    """Close a `fork_worker` child's pipe and kill and reap it, if it is still there (not `collect`ed)."""
    os.close(read_fd)
    with contextlib.suppress(ChildProcessError, ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


class Forked:
    """A `fork_worker` child running one job, or none (`pid` None); its result is collected once."""

    def __init__(self, pid: int | None = None, read_fd: int | None = None):
        self.pid, self.read_fd, self.value = pid, read_fd, None

    def result(self):
        """The job's result (waits for the child the first time), or None if it failed or there is no child."""
        if self.pid is not None:
            done = collect(self.pid, self.read_fd)
            self.pid = self.read_fd = None  # collected: reaped, not to be stopped
            self.value = done[0] if done is not None else None
        return self.value

    def close(self) -> None:
        """Stop and reap the child, if its result was not collected."""
        if self.pid is not None:
            stop(self.pid, self.read_fd)
            self.pid = self.read_fd = None


@contextlib.contextmanager
def forked(kind: type[Forked], run, when: bool) -> Iterator[Forked]:
    """A `kind` over a child running `run()` when `when` and a process can be forked, else over none; the child is
    stopped when the block ends, however it ends."""
    job = kind()
    if when:
        with contextlib.suppress(OSError):  # no process to spare (memory, process limit): the caller does the work
            job = kind(*fork_worker(lambda _: run(), [None]))
    try:
        yield job
    finally:
        job.close()


def preprocess_all(run, jobs: list, workers: int) -> dict:
    """{job: run(job)} for every job, the jobs dealt round-robin over `workers` processes (this one included)."""
    if not jobs:
        return {}
    workers = min(workers, len(jobs))
    children = []  # (pid, read end, its jobs)
    results = {}
    try:
        for w in range(1, workers):
            children.append((*fork_worker(run, jobs[w::workers]), jobs[w::workers]))
        for job in jobs[0::workers]:
            results[job] = run(job)
        while children:
            pid, read_fd, mine = children[0]
            done = collect(pid, read_fd)
            children.pop(0)  # collected: reaped, not to be stopped
            if done is not None:
                results.update(zip(mine, done))
    finally:
        for pid, read_fd, _ in children:
            stop(pid, read_fd)
    for job in jobs:
        if job not in results:  # a worker failed: its share again here, where an error is reported
            results[job] = run(job)
    return results


@contextlib.contextmanager
def parallel_preprocess(jobs: int | None = None) -> Iterator[None]:
    """While active, XNNPACK's partitions are preprocessed by `jobs` processes (default_jobs() when None)."""
    from executorch.backends.xnnpack.xnnpack_preprocess import XnnpackBackend

    workers = processes(jobs)
    if workers < 2:
        yield
        return
    had_own = "preprocess_multimethod" in XnnpackBackend.__dict__
    original = XnnpackBackend.__dict__.get("preprocess_multimethod")

    def preprocess_multimethod(cls, edge_programs, compile_specs):
        jobs = [(method, i) for method, programs in edge_programs.items() for i in range(len(programs))]
        run = lambda job: cls.preprocess(edge_programs[job[0]][job[1]], compile_specs[job[0]][job[1]])  # noqa: E731
        results = preprocess_all(run, jobs, workers)
        return {method: [results[(method, i)] for i in range(len(programs))]
                for method, programs in edge_programs.items()}

    XnnpackBackend.preprocess_multimethod = classmethod(preprocess_multimethod)
    try:
        yield
    finally:
        if had_own:
            XnnpackBackend.preprocess_multimethod = original
        else:
            del XnnpackBackend.preprocess_multimethod
