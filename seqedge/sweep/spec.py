"""A sweep file: the matrix `seqedge sweep` expands into tasks.

    # sweep.toml
    targets = ["runs/mamba-small", "transformer/small", "hf/SmolLM2-135M", "configs/mamba-1.4b.json"]
    recipes = ["fp32", "int8", "int4", { recipe = "int4", group_size = 128 }]
    formats = ["onnx", "executorch"]
    devices = ["pixel8", "raspberry-pi5", "galaxy-s24"]
    prompt_lengths = [64, 256, 1024]   # prefill lengths, and the decode contexts
    decode_tokens = 64
    threads = 2                        # threads of each export and measurement task
    measure = true                     # time each artifact on the node that runs the task (measured-host)

    [adb.pixel8]                       # a phone on some node: measured-device tasks for this profile
    serial = "39041FDJH00123"
    runner = "/opt/seqedge/arm64/seqedge_runner"   # on that node (seqedge build-runner)

A target is a checkpoint folder, a Hugging Face folder, `family/preset` (random weights, seed 0) or a
`config.json` alone (projections only: there are no weights to export). Every (target, recipe, format) with
weights is exported and verified; every artifact is measured here (when `measure`) and projected for every
device. The file is untrusted input: read capped, every key and value checked before any task starts.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from seqedge.errors import BadInputError, CorruptFileError, check_range
from seqedge.untrusted import read_capped

MAX_TASKS = 10_000
KEYS = {"name", "targets", "recipes", "formats", "devices", "prompt_lengths", "decode_tokens", "threads", "measure",
        "adb", "seed"}
RECIPE_KEYS = {"recipe", "group_size", "max_bpb_increase"}


@dataclass(frozen=True)
class Recipe:
    name: str  # a seqedge.quant recipe (checked by the export task: a bad one fails its tasks, not the sweep)
    group_size: int | None = None
    max_bpb_increase: float | None = None

    @property
    def label(self) -> str:
        extra = [f"g{self.group_size}"] if self.group_size else []
        extra += [f"bpb+{self.max_bpb_increase:g}"] if self.max_bpb_increase is not None else []
        return "-".join([self.name, *extra])


@dataclass(frozen=True)
class SweepTarget:
    spec: str  # as the file spells it
    kind: str  # checkpoint | hf | preset | config
    path: str | None = None  # resolved folder or file
    family: str | None = None
    preset: str | None = None

    @property
    def name(self) -> str:
        return self.spec if self.kind == "preset" else Path(self.path).name if self.kind != "config" \
            else f"{Path(self.path).parent.name}/{Path(self.path).name}"

    @property
    def has_weights(self) -> bool:
        return self.kind != "config"


@dataclass(frozen=True)
class AdbDevice:
    serial: str
    runner: str


@dataclass
class Sweep:
    name: str
    targets: list[SweepTarget]
    recipes: list[Recipe]
    formats: list[str]
    devices: list[str]
    prompt_lengths: list[int] = field(default_factory=lambda: [64, 256])
    decode_tokens: int = 32
    threads: int = 2
    measure: bool = True
    seed: int = 0
    adb: dict[str, AdbDevice] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]


def _list(d: dict, key: str, kind: type, where: str, default=None) -> list:
    value = d.get(key, default)
    if value is None:
        raise BadInputError(f"{where}: `{key}` is missing", f"e.g. {key} = [...] (see `seqedge sweep --help`)")
    if not isinstance(value, list) or not value:
        raise BadInputError(f"{where}: `{key}` must be a non-empty list", f"e.g. {key} = [...]")
    for v in value:
        if not isinstance(v, kind) or isinstance(v, bool):
            raise BadInputError(f"{where}: `{key}` holds {v!r}, not a {kind.__name__ if isinstance(kind, type) else 'value'}",
                                f"write {key} as a list")
    if len(set(map(repr, value))) != len(value):
        raise BadInputError(f"{where}: `{key}` lists an entry twice", "list each once")
    return value


def _recipe(v: str | dict, where: str) -> Recipe:
    if isinstance(v, str):
        return Recipe(v)
    unknown = set(v) - RECIPE_KEYS
    if unknown or not isinstance(v.get("recipe"), str):
        raise BadInputError(f"{where}: recipe table {v!r} needs `recipe` and takes only {sorted(RECIPE_KEYS)}",
                            'e.g. { recipe = "int4", group_size = 64 }')
    group, bpb = v.get("group_size"), v.get("max_bpb_increase")
    if group is not None and (not isinstance(group, int) or isinstance(group, bool)):
        raise BadInputError(f"{where}: group_size {group!r} is not an integer", "e.g. group_size = 64")
    if bpb is not None and (not isinstance(bpb, (int, float)) or isinstance(bpb, bool)):
        raise BadInputError(f"{where}: max_bpb_increase {bpb!r} is not a number", "e.g. max_bpb_increase = 0.05")
    return Recipe(v["recipe"], group, float(bpb) if bpb is not None else None)


def _target(spec: str, base: Path, where: str) -> SweepTarget:
    from seqedge.models import FAMILIES

    path = (base / spec).resolve() if not Path(spec).is_absolute() else Path(spec)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BadInputError(f"{where}: target folder {spec} has no config.json",
                                "a target is a checkpoint or Hugging Face folder, family/preset, or a config.json")
        d = json.loads(read_capped(path / "config.json", "model config"))
        return SweepTarget(spec, "hf" if "family" not in d and "model_type" in d else "checkpoint", str(path))
    if path.is_file():
        if path.suffix != ".json":
            raise BadInputError(f"{where}: target file {spec} is not a config.json", "pass a folder or a config.json")
        return SweepTarget(spec, "config", str(path))
    family, _, preset = spec.partition("/")
    if family in FAMILIES.names() and preset:
        FAMILIES[family].config(preset)  # an unknown preset is refused here, listing the presets
        return SweepTarget(spec, "preset", family=family, preset=preset)
    raise BadInputError(f"{where}: target {spec!r} is neither a folder, a config.json nor family/preset",
                        f"families: {', '.join(FAMILIES.names())} (e.g. mamba/small)")


def load_sweep(path: Path | str) -> Sweep:
    """Read and check a sweep file; paths in it are relative to the file's folder."""
    from seqedge.exporters import FORMATS
    from seqedge.profiles import load_profile

    path = Path(path)
    where = str(path)
    try:
        d = tomllib.loads(read_capped(path, "sweep file").decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"sweep file {path} is not valid TOML ({e})", "fix the file") from None
    unknown = set(d) - KEYS
    if unknown:
        raise BadInputError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}", f"valid: {', '.join(sorted(KEYS))}")
    base = path.resolve().parent
    targets = [_target(t, base, where) for t in _list(d, "targets", str, where)]
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise BadInputError(f"{where}: two targets are named {twice!r} (records are keyed by the folder's name)",
                            "rename one of the folders")
    recipes = [_recipe(r, where) for r in _list(d, "recipes", (str, dict), where, ["fp32"])]
    formats = _list(d, "formats", str, where, ["onnx"])
    for f in formats:
        FORMATS[f]  # unknown formats are refused, listing the valid ones
    devices = _list(d, "devices", str, where)
    for dev in devices:
        load_profile(dev)  # a device profile that does not exist or does not parse is refused now
    lengths = _list(d, "prompt_lengths", int, where, [64, 256])
    for n in lengths:
        check_range("prompt_lengths", n, 1, 1 << 20, "e.g. prompt_lengths = [64, 256]")
    sweep = Sweep(str(d.get("name", path.stem)), targets, recipes, formats, devices, lengths)
    for key, lo, hi in (("decode_tokens", 1, 1 << 20), ("threads", 1, 256), ("seed", 0, 2**31 - 1)):
        if key in d:
            if not isinstance(d[key], int) or isinstance(d[key], bool):
                raise BadInputError(f"{where}: `{key}` must be an integer", f"e.g. {key} = {getattr(sweep, key)}")
            check_range(key, d[key], lo, hi)
            setattr(sweep, key, d[key])
    if "measure" in d:
        if not isinstance(d["measure"], bool):
            raise BadInputError(f"{where}: `measure` must be true or false", "e.g. measure = true")
        sweep.measure = d["measure"]
    for dev, v in (d.get("adb") or {}).items():
        if dev not in devices or not isinstance(v, dict) or set(v) != {"serial", "runner"} \
                or not all(isinstance(x, str) and x for x in v.values()):
            raise BadInputError(f"{where}: [adb.{dev}] must name one of `devices` and give serial and runner",
                                '[adb.pixel8] serial = "SERIAL", runner = "/path/seqedge_runner"')
        sweep.adb[dev] = AdbDevice(v["serial"], v["runner"])
    tasks = len(targets) * len(recipes) * len(formats) * (2 + len(devices))
    if tasks > MAX_TASKS:
        raise BadInputError(f"{where}: the matrix has {tasks:,} tasks, more than {MAX_TASKS:,}", "split the sweep")
    return sweep
