"""Internal failures and library noise: where they go.

seqedge drives large libraries (torch.export, the ONNX converter, ExecuTorch's lowering, runtime
sessions). When one of them fails on a valid input, that is seqedge's bug, not the user's, and the
user gets one line naming the stage, the model and the op or node when known, a hint, and the path
of a log file holding the full trace; the CLI exits with code 3 (2 stays for errors a user caused).

    with stage("ONNX conversion", subject="mamba/tiny", hint="try --ops portable"):
        torch.onnx.export(...)          # anything but a SeqedgeError becomes an InternalError

The CLI opens one log per command (`open_log`): library warnings and log records go to that file
(created on first write, under ~/.cache/seqedge/logs or $SEQEDGE_LOG_DIR), not to the terminal;
SEQEDGE_DEBUG=1 leaves them on the terminal and shows tracebacks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path

from seqedge.errors import InternalError, SeqedgeError, UnsupportedError

DEBUG_VAR = "SEQEDGE_DEBUG"
KEEP_LOGS = 50

# how libraries name the op or node that failed, most specific first
_WHERE = (
    re.compile(r"\b((?:seqedge|llama|quantized_decomposed|torchao)::\w+)"),
    re.compile(r"\b(com\.microsoft\.\w+)"),
    re.compile(r"Node \(([^)]+)\)\s*Op \(([^)]+)\)"),  # onnxruntime: "Node (name) Op (Type) ..."
    re.compile(r"\bop(?:erator)?[ :]+'?((?:aten|prims)(?:::|\.)\w+)"),
)


def debug() -> bool:
    return bool(os.environ.get(DEBUG_VAR))


def log_dir() -> Path:
    return Path(os.environ.get("SEQEDGE_LOG_DIR") or Path.home() / ".cache" / "seqedge" / "logs")


class _LazyFileHandler(logging.FileHandler):
    """A file handler whose file (and folder, private to the user) appears only when a record arrives."""

    def _open(self):
        Path(self.baseFilename).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return super()._open()


_LOG_NAME = f"seqedge-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


def log_path() -> Path:
    """This process's log file (written only when something is logged)."""
    return log_dir() / _LOG_NAME


_quiet = False  # set by open_log: the CLI owns this process's logging


def open_log(command: str) -> None:
    """Send library warnings and log records of this process to its log file (unless SEQEDGE_DEBUG is set)."""
    if debug():
        return
    handler = _LazyFileHandler(log_path(), delay=True, encoding="utf-8")
    handler.setFormatter(logging.Formatter(f"%(asctime)s {command} %(name)s %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    global _quiet
    _quiet = True
    quiet_libraries()
    _prune()


def quiet_libraries() -> None:
    """Detach the terminal handlers libraries install on their own loggers when imported (torch's, for one),
    so their records reach the log file through the root logger instead. Called again by every `stage`,
    since seqedge imports its heavy libraries lazily."""
    if not _quiet:
        return
    for lg in list(logging.root.manager.loggerDict.values()):
        if isinstance(lg, logging.Logger) and lg.handlers:
            lg.handlers = [h for h in lg.handlers if isinstance(h, logging.FileHandler)
                           or not isinstance(h, logging.StreamHandler)]
            lg.propagate = True


def _prune() -> None:
    with contextlib.suppress(OSError):
        logs = sorted(log_dir().glob("seqedge-*.log"), key=lambda p: p.stat().st_mtime)
        for old in logs[:-KEEP_LOGS]:
            old.unlink(missing_ok=True)


class _StderrToLog:
    """What libraries print straight to sys.stderr inside a stage (torch.export prints a partial graph when it
    fails) goes to the log file."""

    def __init__(self, stage_name: str):
        self.stage_name = stage_name

    def write(self, text: str) -> int:
        if text.strip():
            logging.getLogger("stderr").warning("[%s] %s", self.stage_name, text.rstrip())
        return len(text)

    def flush(self) -> None:
        pass


def where(exc: BaseException) -> str | None:
    """The op or node an exception names (in its message or its causes), if any."""
    seen, text = set(), []
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text.append(str(e))
        e = e.__cause__ or e.__context__
    joined = "\n".join(text)
    for pattern in _WHERE:
        m = pattern.search(joined)
        if m:
            return " ".join(g for g in m.groups() if g)
    return None


def write_trace(exc: BaseException, what: str) -> Path | None:
    """Append `exc`'s full traceback to the log; returns the log's path (None if it cannot be written)."""
    path = log_path()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {what}\n")
            f.write("".join(traceback.format_exception(exc)))
    except OSError:
        return None
    return path


def internal_error(stage_name: str, exc: BaseException, subject: str | None = None, hint: str = "") -> InternalError:
    """One line for a failure inside seqedge or a library it drives; the trace goes to the log."""
    first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    at = where(exc)
    message = (f"{stage_name} failed" + (f" for {subject}" if subject else "") + (f" at {at}" if at else "")
               + f": {type(exc).__name__}" + (f": {first[:240]}" if first else ""))
    log = write_trace(exc, message)
    hints = [h for h in (hint, f"{DEBUG_VAR}=1 shows the traceback",
                         f"full trace in {log}" if log else None,
                         "this is a seqedge bug: please report it with the log") if h]
    return InternalError(message, "; ".join(hints), stage=stage_name, log=log)


# Fault injection for the tests of this reporting path (and for anyone checking what a failure looks like):
# SEQEDGE_FAIL_STAGE="ONNX conversion" makes that stage raise as if the library inside it had failed.
FAIL_STAGE_VAR = "SEQEDGE_FAIL_STAGE"


_clock: list[dict] | None = None  # the stages timed by an open `stage_clock`
_depth = 0


@contextlib.contextmanager
def stage_clock() -> Iterator[list[dict]]:
    """Collect the wall time of every stage run inside the block, in start order:
    [{"stage", "seconds", "depth"}] (depth: how many stages enclose it). `export --verbose` prints them."""
    global _clock
    outer, _clock = _clock, []
    try:
        yield _clock
    finally:
        _clock = outer


@contextlib.contextmanager
def stage(name: str, subject: str | None = None, hint: str = "", users_code: bool = False) -> Iterator[None]:
    """Run a block as one named stage: an exception that is not a SeqedgeError becomes an InternalError
    (exit 3), or, when `users_code` says the failing code is the user's own model, an UnsupportedError
    (exit 2) with the same one line and log. Timed when a `stage_clock` is open."""
    global _depth
    quiet_libraries()
    entry = {"stage": name, "seconds": 0.0, "depth": _depth}
    if _clock is not None:
        _clock.append(entry)
    t0 = time.perf_counter()
    _depth += 1
    try:
        with contextlib.redirect_stderr(_StderrToLog(name)) if _quiet else contextlib.nullcontext():
            if os.environ.get(FAIL_STAGE_VAR) == name:
                raise RuntimeError(f"injected failure ({FAIL_STAGE_VAR}={name})")
            yield
    except SeqedgeError:
        raise
    except Exception as e:
        if debug():
            raise
        err = internal_error(name, e, subject, hint)
        if users_code:
            hint = (f"the model's own code failed in {name}: make it traceable (no data-dependent Python control "
                    "flow, no unsupported ops); " + err.hint.split("; this is a seqedge bug")[0])
            raise UnsupportedError(err.message, hint) from e
        raise err from e
    finally:
        _depth -= 1
        entry["seconds"] = round(time.perf_counter() - t0, 3)
