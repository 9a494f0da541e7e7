"""seqedge's exception types.

Every error a user can cause is a `SeqedgeError` with a one-line message that names the thing that
is wrong and a hint with the next step. The CLI (`seqedge/cli/app.py`) is the one place that turns
them into output; library callers get ordinary exceptions they can catch.
"""

from __future__ import annotations


class SeqedgeError(Exception):
    """Base class: `message` names the thing, `hint` says what to do next; the CLI exits with `exit_code`."""

    exit_code = 2

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UnknownNameError(SeqedgeError, KeyError):
    """A name that is not in a registry (family, preset, recipe, device...)."""


class BadInputError(SeqedgeError, ValueError):
    """A value the user gave that cannot be used (non-positive steps, empty corpus...)."""


class BadPathError(SeqedgeError, FileNotFoundError):
    """A path that is missing, unreadable or of the wrong kind."""


class CorruptFileError(SeqedgeError):
    """A file that exists but cannot be parsed (truncated checkpoint, corrupt graph, bad JSON)."""


class UnsupportedError(SeqedgeError):
    """A model, layer or op that the chosen path cannot handle."""


class ParityError(SeqedgeError):
    """An exported artifact disagrees with the PyTorch model; `failures` lists each failing output."""

    def __init__(self, message: str, failures: list[str], hint: str = ""):
        super().__init__(message, hint)
        self.failures = failures


class InternalError(SeqedgeError):
    """A failure inside seqedge or a library it drives (torch.export, the ONNX converter, ExecuTorch's
    lowering, a runtime session) that the user did not cause: seqedge's bug. Exit code 3; the full trace
    is in the log file `log` (see seqedge.diagnostics)."""

    exit_code = 3

    def __init__(self, message: str, hint: str = "", stage: str = "", log=None):
        super().__init__(message, hint)
        self.stage = stage
        self.log = log


MAX_THREADS = 256


def check_range(option: str, value, lo, hi, hint: str = "") -> None:
    """A numeric option or field within [lo, hi] (and finite): else a BadInputError naming it and the range."""
    ok = value is not None and not isinstance(value, bool) and lo <= value <= hi and value == value
    if not ok:
        raise BadInputError(f"{option} {value!r} is out of range: it must be in [{lo:g}, {hi:g}]",
                            hint or f"e.g. {option} {lo:g}")
