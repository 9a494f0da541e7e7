"""Atomic writes: an artifact or checkpoint folder appears whole at its final path, or not at all."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from seqedge.errors import BadPathError

TEMP_PARTS = (".tmp-", ".old-")  # .NAME.tmp-PID-xxxx: a folder being written by process PID


def check_output_folder(out: Path | str, force: bool = False, inputs: tuple = ()) -> Path:
    """Refuse an output folder before any work starts: one that exists (without --force), the working directory
    or a folder above it, or the input itself or a folder above it (replacing it would delete the input)."""
    out = Path(out)
    target = out.resolve()
    if out.exists() and not force:
        raise BadPathError(f"output folder {out} already exists", "pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise BadPathError(f"output {out} exists and is not a folder", "choose another --out")
    if Path.cwd().resolve().is_relative_to(target):
        raise BadPathError(f"--out {out} is the working directory or a folder above it",
                           "write the output into a new folder, e.g. --out artifact")
    for given in inputs:
        if given is not None and Path(given).exists() and Path(given).resolve().is_relative_to(target):
            raise BadPathError(f"--out {out} holds the input {given}: replacing it would delete the input",
                               "choose another --out")
    return out


def clean_stale(parent: Path, name: str) -> list[Path]:
    """Remove the temporary folders an interrupted (killed) seqedge left for `name` in `parent`: their writer's
    process id is in the name, and that process is gone. Returns what was removed (logged)."""
    removed = []
    for p in parent.glob(f".{glob.escape(name)}.*-*"):
        rest = p.name[len(name) + 1:]
        part = next((t for t in TEMP_PARTS if rest.startswith(t)), None)
        pid = rest[len(part):].split("-")[0] if part else ""
        if not p.is_dir() or p.is_symlink() or not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(p, ignore_errors=True)
        logging.getLogger("seqedge").warning("removed %s, left by an interrupted seqedge (process %s)", p, pid)
        removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_dir(out: Path | str, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; on success rename it to `out`, on failure remove it.

    `out` must not exist unless `force` is set, in which case the old folder is replaced only after
    the new one is complete. The temporary folder's name carries this process's id, so the next run
    removes it when this process was killed before it could (clean_stale); SIGTERM/SIGHUP are turned
    into KeyboardInterrupt by the CLI, so they run the cleanup below.
    """
    out = check_output_folder(out, force)
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadPathError(f"cannot create {parent}: {e.strerror}", "choose a writable --out") from None
    clean_stale(parent, out.name)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=parent))
    except OSError as e:
        raise BadPathError(f"cannot write in {parent}: {e.strerror}", "choose a writable --out") from None
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_output_file(path: Path | str | None, what: str) -> Path | None:
    """An output file (--json, --csv, --plot) checked before any work: its folder exists and it is not a folder
    or a special file."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise BadPathError(f"{what} {path} is a folder", f"give a file name, e.g. {path / ('out.' + what.lstrip('-'))}")
    if path.exists() and not path.is_file():
        raise BadPathError(f"{what} {path} is not a regular file", "give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise BadPathError(f"the folder of {what} {path} does not exist", "create it first")
    if not os.access(parent, os.W_OK):
        raise BadPathError(f"the folder of {what} {path} is not writable", "choose another path")
    return path


def cache_dir(kind: str) -> Path:
    """seqedge's private cache for one kind of derived file ($SEQEDGE_CACHE or ~/.cache/seqedge, mode 0700)."""
    root = Path(os.environ.get("SEQEDGE_CACHE", Path.home() / ".cache" / "seqedge"))
    folder = root / kind
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


# seqedge's own packages that do not change what an export or a measurement produces (the command line, the
# sweep driver, the app packagers): left out of source_digest, so a change there keeps cached artifacts valid
NOT_IN_ARTIFACTS = ("cli", "sweep", "apps")


def source_digest() -> str:
    """sha256 of the installed seqedge's Python and C++ sources that make an artifact or a figure (all but
    NOT_IN_ARTIFACTS): what it exported before a change is stale."""
    import importlib.util

    digest = hashlib.sha256()
    for pkg in ("seqedge", "seqedge.exporters", "seqedge.runtimes"):
        root = Path(importlib.util.find_spec(pkg).origin).parent
        for f in sorted(root.rglob("*")):
            rel = f.relative_to(root).parts
            if pkg == "seqedge" and rel[0] in NOT_IN_ARTIFACTS:
                continue
            if f.suffix in (".py", ".cpp", ".h", ".txt") and "__pycache__" not in f.parts:
                digest.update(f"{f.relative_to(root)}\0".encode() + f.read_bytes())
    return digest.hexdigest()[:10]


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write a file through a temporary sibling and a rename: readers never see half of it."""
    path = Path(path)
    if not path.parent.is_dir():
        raise BadPathError(f"folder {path.parent} does not exist (for {path.name})", "create it or pick another path")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
