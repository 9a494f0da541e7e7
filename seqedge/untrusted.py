"""Reading files seqedge did not write: artifacts, checkpoints, configs and profiles are untrusted input.

    data = read_capped(path, "manifest", MAX_JSON_BYTES)   # a regular file, at most `limit` bytes
    path = member(folder, name, "artifact file")           # a relative name that stays inside `folder`
    check_memory(bytes_needed, "the KV cache of ...")      # refused beyond the machine's memory (or --max-memory)

Every check happens before anything is allocated, executed or parsed: a FIFO, a device, a folder or a symlink
leaving the folder is refused by kind, a file larger than its limit by size, and a name with `..`, an
absolute path or a NUL byte by its spelling. Errors are BadPathError/CorruptFileError (one line, exit 2).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from seqedge.errors import BadInputError, BadPathError, CorruptFileError

MAX_JSON_BYTES = 16 << 20  # manifest.json, config.json, a device profile: real ones are a few kB
MEMORY_ENV = "SEQEDGE_MAX_MEMORY"  # bytes (or 8G, 512M): the ceiling --max-memory sets for one command


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def regular_file(path: Path | str, what: str) -> os.stat_result:
    """The stat of `path`, which must exist and be a regular file (after following symlinks)."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise BadPathError(f"{what} {path} does not exist", "check the path") from None
    except (OSError, ValueError) as e:  # ValueError: an embedded NUL
        raise BadPathError(f"{what} {path} cannot be read ({getattr(e, 'strerror', None) or e})",
                           "check the path and its permissions") from None
    if not stat.S_ISREG(st.st_mode):
        raise BadPathError(f"{what} {path} is {_kind(st.st_mode)}, not a regular file", "pass a file")
    return st


def read_capped(path: Path | str, what: str, limit: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of a regular file no larger than `limit`; the size is checked before reading, and the read
    stops at `limit` + 1 bytes even if the file grows meanwhile."""
    st = regular_file(path, what)
    if st.st_size > limit:
        raise CorruptFileError(f"{what} {path} is {st.st_size:,} bytes, more than the {limit:,} allowed",
                               "this is not a file seqedge wrote; check it")
    data = _read_regular(path, what, limit + 1)
    if len(data) > limit:
        raise CorruptFileError(f"{what} {path} grew past the {limit:,} bytes allowed while read", "check it")
    return data


def read_capped_prefix(path: Path | str, limit: int) -> bytes:
    """The first `limit` bytes of a regular file (a corpus file may be larger; only the head is kept)."""
    regular_file(path, "file")
    return _read_regular(path, "file", limit)


def _read_regular(path: Path | str, what: str, n: int) -> bytes:
    """At most `n` bytes of a file already checked to be regular, re-checked on the open descriptor."""
    try:  # O_NONBLOCK: a file swapped for a FIFO after the stat does not hang the open
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        raise BadPathError(f"{what} {path} cannot be read ({e.strerror})", "check its permissions") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise BadPathError(f"{what} {path} changed into a special file while opened", "pass a regular file")
        return f.read(n)


def safe_name(name: object, what: str) -> str:
    """A relative file name as a manifest may spell it: no absolute path, no `..`, no NUL, no backslash."""
    if not isinstance(name, str) or not name or len(name) > 255:
        raise CorruptFileError(f"{what} name {name!r} is not a file name", "re-export the artifact")
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or "\0" in name or any(p in ("", ".", "..") for p in parts):
        raise CorruptFileError(f"{what} {name!r} is not a plain relative path inside the folder",
                               "an artifact names only files inside its own folder; re-export it")
    return name


def member(folder: Path, name: object, what: str) -> Path:
    """`folder / name`, refused when the name or a symlink on the way leads outside `folder`."""
    path = Path(folder) / safe_name(name, what)
    try:
        inside = path.resolve().is_relative_to(Path(folder).resolve())
    except (OSError, RuntimeError):  # a symlink loop
        inside = False
    if not inside:
        raise CorruptFileError(f"{what} {name!r} in {folder} leads outside the folder (a symlink)",
                               "an artifact's files must lie inside its folder; re-export it")
    return path


def parse_bytes(text: str, what: str) -> int:
    """`8G`, `512M`, `1000000` -> bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = str(text).strip().upper().removesuffix("B")
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        value = -1
    if not value > 0 or value == float("inf"):
        raise BadInputError(f"{what} {text!r} is not a size", "e.g. 8G, 512M or a number of bytes")
    return int(value)


def memory_limit() -> int:
    """The most memory one command may commit to a model, its state or a file: $SEQEDGE_MAX_MEMORY (set by
    --max-memory), else this machine's physical memory."""
    if os.environ.get(MEMORY_ENV):
        return parse_bytes(os.environ[MEMORY_ENV], "--max-memory")
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 1 << 40


def check_memory(needed: int | float, what: str) -> None:
    limit = memory_limit()
    if needed > limit:
        raise BadInputError(f"{what} needs {needed / 2**30:,.2f} GiB, more than the {limit / 2**30:,.2f} GiB allowed "
                            f"({'--max-memory' if os.environ.get(MEMORY_ENV) else 'this machine'})",
                            "check the file's sizes; raise --max-memory if it is really meant")
