"""Atomic writes: an artifact or checkpoint folder appears whole at its final path, or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from seqedge.errors import BadPathError


@contextlib.contextmanager
def atomic_dir(out: Path | str, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; on success rename it to `out`, on failure remove it.

    `out` must not exist unless `force` is set, in which case the old folder is replaced only after
    the new one is complete.
    """
    out = Path(out)
    if out.exists() and not force:
        raise BadPathError(f"output folder {out} already exists", "pass --force to replace it")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadPathError(f"cannot create {parent}: {e.strerror}", "choose a writable --out") from None
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def cache_dir(kind: str) -> Path:
    """seqedge's private cache for one kind of derived file ($SEQEDGE_CACHE or ~/.cache/seqedge, mode 0700)."""
    root = Path(os.environ.get("SEQEDGE_CACHE", Path.home() / ".cache" / "seqedge"))
    folder = root / kind
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


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
