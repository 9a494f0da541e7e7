"""Device profiles: TOML data files validated by one frozen-dataclass schema.

    profile = load_profile("pixel8")               # a shipped file, by name
    profile = load_profile("path/to/board.toml")   # a user's own file
    profile = load_profile("host")                 # built at run time from this machine (cached)
    profile_names()                                # CLI choices come from the files, never a list in code

A profile lists compute units (CPU clusters, GPU, NPU), each with peak throughput per dtype, the
memory bandwidth it sees, and the runtimes/backends available on it in order of preference with
their constraints. Any error names the file, the key and what was expected.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from seqedge.errors import BadPathError, SeqedgeError, UnknownNameError
from seqedge.untrusted import read_capped

DTYPES = ("fp32", "fp16", "bf16", "int16", "int8", "int4")
UNIT_KINDS = ("cpu", "gpu", "npu")
# runtime -> the artifact format it runs; the only runtimes a profile may name
RUNTIME_FORMATS = {"onnxruntime": "onnx", "executorch": "executorch", "torch": "checkpoint"}
# runtime -> backends (onnxruntime execution providers, ExecuTorch delegates) a profile may name
RUNTIME_BACKENDS = {
    "onnxruntime": ("cpu", "cuda", "tensorrt", "coreml", "qnn", "nnapi", "xnnpack"),
    "executorch": ("xnnpack", "portable", "vulkan", "mps", "coreml", "qnn"),
    "torch": ("cpu", "cuda"),
}
MAX_COUNT = 1 << 20  # cores, counts
MAX_FIGURE = 1e9  # GB, GB/s, GFLOP/s, GHz: far above any device
KNOWN_OPS = ("seqedge::selective_scan", "seqedge::ssd_scan", "seqedge::attention", "seqedge::causal_conv1d", "rnn", "lstm",
             "gru")


class ProfileError(SeqedgeError):
    """A profile file that does not fit the schema: names the file, the key and what was expected."""


@dataclass(frozen=True)
class RuntimeOption:
    runtime: str  # onnxruntime | executorch | torch
    backend: str  # execution provider or delegate: cpu, xnnpack, cuda, tensorrt, coreml, qnn, nnapi, portable
    dtypes: tuple[str, ...]  # weight dtypes it runs well
    activation_dtypes: tuple[str, ...] = ("fp32",)
    static_shapes: bool = False
    ops: tuple[str, ...] = KNOWN_OPS  # seqedge ops (and RNN kinds) it can run
    efficiency: float = 0.6  # estimated share of peak bandwidth/compute reached
    note: str = ""
    # Qualcomm HTP (backend qnn): the SoC a context binary is compiled for (onnxruntime-qnn's provider
    # options of the same names; 0: not given)
    htp_arch: int = 0
    soc_model: int = 0


@dataclass(frozen=True)
class ComputeUnit:
    name: str
    kind: str  # cpu | gpu | npu
    bandwidth_gbs: float  # memory bandwidth this unit can draw, GB/s
    peak: dict[str, float]  # dtype -> GFLOP/s (GOP/s for ints)
    runtimes: tuple[RuntimeOption, ...]
    cores: int = 0
    core: str = ""
    ghz: float = 0.0


@dataclass(frozen=True)
class Profile:
    name: str
    display_name: str
    kind: str  # phone | board | desktop | host
    soc: str
    memory_gb: float
    memory_bandwidth_gbs: float
    isa: tuple[str, ...]
    units: tuple[ComputeUnit, ...]
    sources: tuple[str, ...] = ()
    path: str = ""
    # A last-level cache that a step's bytes stay in between steps when they fit (roofline.CACHE_SHARE of it),
    # read at `cache_bandwidth_gbs` (copy bandwidth over a buffer that fits) instead of memory's: a server CPU's
    # 300 MB L3 holds a 130M-class model's weights. 0: not counted (a phone's system cache is a few MB).
    cache_mb: float = 0.0
    cache_bandwidth_gbs: float = 0.0

    @property
    def cpu_units(self) -> list[ComputeUnit]:
        return [u for u in self.units if u.kind == "cpu"]

    def default_threads(self) -> int:
        """Big + mid cores: the little cluster slows a memory-bound decode down more than it helps.
        A profile with one CPU unit uses all its cores."""
        fast = [u for u in self.cpu_units if u.name in ("cpu-big", "cpu-mid")]
        return max(1, sum(u.cores for u in (fast or self.cpu_units)))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- loading and validation --------------------------------------------------------------------------


def _fail(path: str, key: str, expected: str, got: Any = None) -> ProfileError:
    shown = "" if got is None else f", got {got!r}"[:80]
    return ProfileError(f"device profile {path}: key '{key}' must be {expected}{shown}",
                        "fix the file (see device_profiles/*.toml for examples)")


def _coerce(value: Any, tp: Any, path: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is str:
        if not isinstance(value, str):
            raise _fail(path, key, "a string", value)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(path, key, "true or false", value)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
            raise _fail(path, key, f"an integer in [0, {MAX_COUNT}]", value)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_FIGURE:
            raise _fail(path, key, f"a number in [0, {MAX_FIGURE:g}]", value)
        return float(value)
    if origin is tuple:
        (inner, _) = typing.get_args(tp)
        if not isinstance(value, list):
            raise _fail(path, key, "a list", value)
        return tuple(_coerce(v, inner, path, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(path, key, "a table of dtype = number", value)
        return {k: _coerce(v, float, path, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, key)
    raise TypeError(tp)


def _build(cls, data: Any, path: str, prefix: str = ""):
    if not isinstance(data, dict):
        raise _fail(path, prefix or "<top>", "a table", data)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "path"}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise _fail(path, f"{prefix}.{unknown[0]}" if prefix else unknown[0], f"one of {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise _fail(path, key, "present (it is required)")
            continue
        kwargs[name] = _coerce(data[name], hints[name], path, key)
    obj = cls(**kwargs)
    _check(obj, path, prefix)
    return obj


def _check(obj, path: str, prefix: str) -> None:
    def key(k):
        return f"{prefix}.{k}" if prefix else k

    if isinstance(obj, RuntimeOption):
        if obj.runtime not in RUNTIME_FORMATS:
            raise _fail(path, key("runtime"), f"one of {', '.join(RUNTIME_FORMATS)}", obj.runtime)
        if obj.backend not in RUNTIME_BACKENDS[obj.runtime]:
            raise _fail(path, key("backend"), f"one of {', '.join(RUNTIME_BACKENDS[obj.runtime])} for "
                        f"{obj.runtime}", obj.backend)
        for d in obj.dtypes + obj.activation_dtypes:
            if d not in DTYPES:
                raise _fail(path, key("dtypes"), f"dtypes from {', '.join(DTYPES)}", d)
        for op in obj.ops:
            if op not in KNOWN_OPS:
                raise _fail(path, key("ops"), f"ops from {', '.join(KNOWN_OPS)}", op)
        if not 0 < obj.efficiency <= 1:
            raise _fail(path, key("efficiency"), "in (0, 1]", obj.efficiency)
    if isinstance(obj, ComputeUnit):
        if obj.kind not in UNIT_KINDS:
            raise _fail(path, key("kind"), f"one of {', '.join(UNIT_KINDS)}", obj.kind)
        if obj.bandwidth_gbs <= 0:
            raise _fail(path, key("bandwidth_gbs"), "a positive number", obj.bandwidth_gbs)
        for d, v in obj.peak.items():
            if d not in DTYPES:
                raise _fail(path, key(f"peak.{d}"), f"a dtype from {', '.join(DTYPES)}")
            if v <= 0:  # a projection divides by it
                raise _fail(path, key(f"peak.{d}"), "a positive number (GFLOP/s or GOP/s)", v)
        if not obj.runtimes:
            raise _fail(path, key("runtimes"), "a non-empty list of runtime tables")
    if isinstance(obj, Profile):
        for k in ("memory_bandwidth_gbs", "memory_gb"):
            if getattr(obj, k) <= 0:
                raise _fail(path, k, "a positive number", getattr(obj, k))
        if not obj.units:
            raise _fail(path, "units", "a non-empty list of compute units")
        if obj.cache_mb < 0 or obj.cache_bandwidth_gbs < 0 or (obj.cache_mb > 0) != (obj.cache_bandwidth_gbs > 0):
            raise _fail(path, "cache_mb", "0, or positive together with a positive cache_bandwidth_gbs",
                        (obj.cache_mb, obj.cache_bandwidth_gbs))


def parse_profile(data: Any, path: str) -> Profile:
    profile = _build(Profile, data, path)
    return dataclasses.replace(profile, path=path)


def _shipped() -> dict[str, Any]:
    folder = resources.files("seqedge.device_profiles")
    return {p.name.removesuffix(".toml"): p for p in folder.iterdir() if p.name.endswith(".toml")}


def profile_names() -> list[str]:
    return sorted([*_shipped(), "host"])


def load_profile(name_or_path: str | Path) -> Profile:
    text_path = str(name_or_path)
    if text_path == "host":
        from seqedge.host import host_profile

        return host_profile()
    shipped = _shipped()
    if text_path in shipped:
        source = shipped[text_path]
    elif text_path.endswith(".toml") or "/" in text_path:
        source = Path(text_path)
        if not source.exists():
            raise BadPathError(f"device profile {source} does not exist", "pass a .toml file or a shipped name")
    else:
        raise UnknownNameError(f"unknown device {text_path!r}", f"valid: {', '.join(profile_names())}, or a path "
                               "to your own .toml")
    try:
        raw = source.read_bytes() if source in shipped.values() else read_capped(source, "device profile")
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ProfileError(f"device profile {source} is not valid TOML ({str(e)[:120]})", "fix the syntax") from None
    return parse_profile(data, str(source))
