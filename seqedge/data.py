"""Local byte corpora: the default is the `.py` files of this machine's Python standard library.

Files are split deterministically into train and held-out by a hash of their path (about 1 in 10
held out), so the held-out bits per byte measure text the model never saw. No network, no downloads.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqedge.errors import BadInputError, BadPathError
from seqedge.untrusted import read_capped_prefix

HELD_OUT_EVERY = 10
MAX_FILE_BYTES = 2_000_000


@dataclass
class Corpus:
    train: np.ndarray  # (n_train,) uint8
    held_out: np.ndarray  # (n_held,) uint8
    sources: list[str]

    def describe(self) -> str:
        return f"{len(self.train):,} train bytes, {len(self.held_out):,} held-out bytes from {', '.join(self.sources)}"


def default_corpus_files() -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts)


def _default_files() -> list[tuple[Path, str]]:
    """(path, path relative to the stdlib) — the relative path decides the split."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [(p, p.relative_to(stdlib).as_posix()) for p in default_corpus_files()]


def _is_held_out(rel: str) -> bool:
    return int(hashlib.sha1(rel.encode()).hexdigest(), 16) % HELD_OUT_EVERY == 0


def _text_files(path: Path) -> list[Path]:
    """Regular files only: a FIFO or a device among the inputs would hang or never end."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise BadPathError(f"corpus path {path} is not a file or a folder", "pass text files or folders with --data")
    return sorted(p for p in path.rglob("*") if p.is_file())


def _read_text_bytes(path: Path) -> bytes | None:
    """At most MAX_FILE_BYTES of the file, read as that many (not the whole file then cut); None for binaries."""
    try:
        data = read_capped_prefix(path, MAX_FILE_BYTES)
    except (OSError, BadPathError):
        return None
    return None if b"\x00" in data[:8192] else data  # skip binaries


def load_corpus(paths: list[Path | str] | None = None) -> Corpus:
    """Read text from `paths` (files or folders; default: the stdlib) and split it by file."""
    if not paths:
        files = _default_files()
        sources = ["the Python standard library (.py files)"]
    else:
        files = []
        for raw in paths:
            p = Path(raw)
            if not p.exists():
                raise BadPathError(f"corpus path {p} does not exist", "pass existing files or folders with --data")
            files += [(f, f.as_posix()) for f in _text_files(p)]
        sources = [str(p) for p in paths]
    train, held = [], []
    for path, rel in files:
        data = _read_text_bytes(path)
        if data:
            (held if _is_held_out(rel) else train).append(data)
    if not train and not held:
        raise BadInputError(f"the corpus {', '.join(sources)} holds no readable text", "pass text files with --data")
    if not train or not held:  # one file, or an unlucky split: hold out the last tenth of the bytes
        blob = b"\n".join(train + held)
        if len(blob) < 2048:
            raise BadInputError(
                f"the corpus {', '.join(sources)} is too small ({len(blob)} bytes)", "pass at least 2 KB of text"
            )
        cut = len(blob) - len(blob) // HELD_OUT_EVERY
        train, held = [blob[:cut]], [blob[cut:]]
    return Corpus(
        np.frombuffer(b"\n".join(train), dtype=np.uint8).copy(),
        np.frombuffer(b"\n".join(held), dtype=np.uint8).copy(),
        sources,
    )


def held_out_prompt(n: int = 64) -> bytes:
    """`n` bytes of held-out stdlib text (from the start of a line), for parity checks and benchmarks:
    the same bytes as `load_corpus().held_out` holds there, reading only the held-out files it needs."""
    parts: list[bytes] = []
    for path, rel in _default_files():
        if _is_held_out(rel) and (data := _read_text_bytes(path)):
            parts.append(data)
            if sum(map(len, parts)) + len(parts) > (1 << 16) + n:
                break
    held = b"\n".join(parts)
    start = held[: 1 << 16].index(b"\n") + 1
    return held[start : start + n]


def english_text(n_chars: int) -> str:
    """English prose every machine has: the reference topics of Python's documentation (pydoc_data), in a
    fixed order. Models with a real vocabulary are evaluated on it; byte-level models on held-out code."""
    from pydoc_data.topics import topics

    out, total = [], 0
    for key in sorted(topics):
        out.append(topics[key])
        total += len(topics[key])
        if total >= n_chars:
            break
    return "\n\n".join(out)[:n_chars]


def held_out_tokens(tokenizer, n: int) -> list[int]:
    """`n` evaluation tokens under `tokenizer`: byte-level models get held-out stdlib code (the same ids as
    `held_out_prompt(n)`), models with a real vocabulary English prose (`english_text`)."""
    if tokenizer.kind == "bytes":
        return list(held_out_prompt(n))
    return tokenizer.encode(english_text(8 * n + 64))[:n]
