"""The schema layer: what a manifest.json may hold, checked before any of it is used.

    check_manifest(manifest, "artifact/manifest.json")   # types, ranges, names, consistency; raises CorruptFileError
    state_bytes(manifest)                                 # what its state specs allocate at batch 1

Specs are small combinators (`Str`, `Int`, `ListOf`, `Obj`...) that name the failing key
(`state[3].dtype`) and what it must be. Model configs are checked by their dataclass fields
(seqedge.models.base), device profiles by theirs (seqedge.profiles): every untrusted file passes one
of the three before anything is built from it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from seqedge.errors import CorruptFileError
from seqedge.untrusted import safe_name

MAX_DIM = 1 << 24  # one tensor dimension (vocabularies reach ~256k; caches ~1M positions)
MAX_ITEMS = 100_000  # entries of any list or table
# the dtypes a state tensor may have (torch names): anything else is refused before getattr(torch, ...)
STATE_DTYPES = {"float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int8": 1, "uint8": 1, "bool": 1}
INT4_KERNEL = "seqedge::int4_matmul.out"  # the ExecuTorch int4 recipes' linear layers on AVX2 targets
# seqedge's ExecuTorch kernels a program may call (exporters/executorch/native_ops.py lowers to exactly these)
NATIVE_KERNELS = ("seqedge::selective_scan.out", "seqedge::mamba_scan.out", "seqedge::int4_mamba_scan.out",
                  "seqedge::causal_conv1d.out",
                  "seqedge::cached_sdpa.out", "seqedge::rope.out", "seqedge::rnn_scan.out", "seqedge::moe_ffn.out",
                  "seqedge::moe_ffn_q.out", INT4_KERNEL, "seqedge::int4_matmul_swiglu.out", "seqedge::rms_norm.out",
                  "seqedge::to_half.out")


class Invalid(Exception):
    def __init__(self, key: str, expected: str, got: Any = None):
        super().__init__(f"{key}: must be {expected}" + ("" if got is None else f", got {_show(got)}"))


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


class Spec:
    def check(self, value: Any, key: str) -> None: ...


@dataclass
class Anything(Spec):
    def check(self, value, key):
        pass


@dataclass
class Str(Spec):
    choices: tuple[str, ...] | None = None
    pattern: str | None = None
    max_len: int = 4096

    def check(self, value, key):
        if not isinstance(value, str) or len(value) > self.max_len:
            raise Invalid(key, f"a string of at most {self.max_len} characters", value)
        if self.choices is not None and value not in self.choices:
            raise Invalid(key, f"one of {', '.join(self.choices)}", value)
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise Invalid(key, f"a string matching {self.pattern}", value)


@dataclass
class Int(Spec):
    lo: int = 0
    hi: int = MAX_DIM

    def check(self, value, key):
        if isinstance(value, bool) or not isinstance(value, int) or not self.lo <= value <= self.hi:
            raise Invalid(key, f"an integer in [{self.lo}, {self.hi}]", value)


@dataclass
class Num(Spec):
    lo: float = -math.inf
    hi: float = math.inf

    def check(self, value, key):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not self.lo <= value <= self.hi:
            raise Invalid(key, f"a finite number in [{self.lo:g}, {self.hi:g}]", value)


@dataclass
class Bool(Spec):
    def check(self, value, key):
        if not isinstance(value, bool):
            raise Invalid(key, "true or false", value)


@dataclass
class Nullable(Spec):
    inner: Spec

    def check(self, value, key):
        if value is not None:
            self.inner.check(value, key)


@dataclass
class OneOf(Spec):
    options: tuple[Spec, ...]
    expected: str

    def check(self, value, key):
        for s in self.options:
            try:
                s.check(value, key)
                return
            except Invalid:
                continue
        raise Invalid(key, self.expected, value)


@dataclass
class ListOf(Spec):
    item: Spec = field(default_factory=Anything)
    min_len: int = 0
    max_len: int = MAX_ITEMS

    def check(self, value, key):
        if not isinstance(value, list) or not self.min_len <= len(value) <= self.max_len:
            raise Invalid(key, f"a list of {self.min_len} to {self.max_len} items", value)
        for i, v in enumerate(value):
            self.item.check(v, f"{key}[{i}]")


@dataclass
class TableOf(Spec):
    value: Spec = field(default_factory=Anything)
    max_len: int = MAX_ITEMS

    def check(self, value, key):
        if not isinstance(value, dict) or len(value) > self.max_len:
            raise Invalid(key, f"an object of at most {self.max_len} entries", value)
        for k, v in value.items():
            self.value.check(v, f"{key}.{k}")


@dataclass
class Obj(Spec):
    required: dict[str, Spec]
    optional: dict[str, Spec] = field(default_factory=dict)

    def check(self, value, key):
        if not isinstance(value, dict):
            raise Invalid(key, "an object", value)
        for k, spec in self.required.items():
            if k not in value:
                raise Invalid(f"{key}.{k}" if key else k, "present")
            spec.check(value[k], f"{key}.{k}" if key else k)
        for k, spec in self.optional.items():
            if k in value:
                spec.check(value[k], f"{key}.{k}" if key else k)


class FileName(Spec):
    def check(self, value, key):
        try:
            safe_name(value, key)
            ok = "/" not in value
        except CorruptFileError:
            ok = False
        if not ok:
            raise Invalid(key, "the name of a file in the artifact folder (no '/', no '..')", value)


NAME = Str(pattern=r"[A-Za-z0-9_.:/\-]{1,256}", max_len=256)
# a dimension: a size, or the name of a dynamic one ("batch", "seq"; optimum's graphs spell expressions)
DIM = OneOf((Int(1, MAX_DIM), Str(pattern=r"[A-Za-z_][A-Za-z0-9_ +*-]{0,127}")), "a positive integer or a dimension name")
TENSOR = Obj({"name": NAME, "dtype": Str(pattern=r"[a-z0-9]{1,16}"), "shape": ListOf(DIM, 0, 8)})
STATE = Obj({"name": NAME, "dtype": Str(choices=tuple(STATE_DTYPES)), "shape": ListOf(DIM, 0, 8)})
SHA256 = Str(pattern=r"[0-9a-f]{64}")
# what `inspect` and selection read of the records an exporter wrote
OP = Obj({"op": Str(max_len=128), "lowering": Str()})
PARITY = Obj({"max_abs_diff": Num(0), "token_agreement": Num(0, 1), "steps": Int(0)},
             {"prefill_max_abs_diff": Num(0), "mean_kl": Num(0), "baseline_mean_kl": Nullable(Num(0))})
DELEGATION = TableOf(Obj({"delegated_nodes": Int(0, 1 << 30), "total_nodes": Int(0, 1 << 30),
                          "delegated_share": Num(0, 1),
                          "not_delegated": ListOf(Obj({"op": Str(max_len=256), "count": Int(0, 1 << 30)}))}))

MANIFEST = Obj(
    required={
        "format": Str(choices=("onnx", "executorch")),
        "family": Str(max_len=64),
        "config": TableOf(),
        "quant": Obj({"recipe": Str(max_len=64)}),
        "ops": ListOf(OP),
        "inputs": ListOf(TENSOR, 1, 4096),
        "outputs": ListOf(TENSOR, 1, 4096),
        "state": ListOf(STATE, 0, 4096),
        "files": TableOf(SHA256, 10_000),
        "parity": Nullable(PARITY),
        "seqedge_version": Str(max_len=64),
    },
    optional={
        "graphs": Obj({"prefill": Str(max_len=300)}, {"decode": Str(max_len=300)}),
        "max_seq_len": Nullable(Int(1, MAX_DIM)),
        "max_prefill_len": Nullable(Int(1, MAX_DIM)),
        "prefill_chunk": Nullable(Int(2, MAX_DIM)),
        "native_kernels": ListOf(Str(choices=NATIVE_KERNELS)),
        "llm_kernels": ListOf(Str(max_len=128)),
        "quantized_kernels": Bool(),
        "in_place_state": ListOf(NAME),
        "tokenizer": Nullable(Obj({"kind": Str(choices=("bytes", "hf"))}, {"file": Str(max_len=255)})),
        "source": Nullable(TableOf()),
        "target": Nullable(TableOf()),
        "via": Str(max_len=32),
        "backend": Nullable(Str(max_len=32)),
        "parameters": Nullable(Int(0, 1 << 50)),
        "delegation": Nullable(DELEGATION),
        "warnings": Nullable(ListOf(Str())),
        "node_count": Int(0, 1 << 30),
        "program_bytes": Int(0, 1 << 50),
        "export_seconds": Num(0),
        "static": Obj({"chunk": Int(1, 1 << 16), "batch": Int(1, 1)}),
        "runner_contract": Int(1, 1 << 16),
    },
)


def _graph_file(ref: str) -> str:
    return ref.split("#")[0]  # ExecuTorch: "model.pte#prefill" names a method of one program


def check_manifest(manifest: Any, where: str) -> dict[str, Any]:
    """Types and ranges of every key seqedge reads, then consistency: the graphs and the tokenizer are listed
    files, state names are unique, and the logits' last dimension is a vocabulary size."""
    try:
        MANIFEST.check(manifest, "")
        for name in manifest["files"]:
            FileName().check(name, f"files.{name}")
        listed = set(manifest["files"])
        refs = {f"graphs.{k}": _graph_file(v) for k, v in (manifest.get("graphs") or {}).items()}
        if manifest.get("via") != "optimum" and "graphs" not in manifest:
            raise Invalid("graphs", "present")
        tok = manifest.get("tokenizer") or {}
        if tok.get("kind") == "hf":
            refs["tokenizer.file"] = tok.get("file", "tokenizer.json")
        for key, ref in refs.items():
            FileName().check(ref, key)
            if ref not in listed:
                raise Invalid(key, "a file the manifest's `files` lists (and so hash-checks)", ref)
        for i, s in enumerate(manifest["state"]):  # seqedge's state is allocated whole: sizes and the batch only
            if manifest.get("via") != "optimum":  # (optimum's grows from empty along its named dimensions)
                ListOf(OneOf((Int(1, MAX_DIM), Str(choices=("batch",))), 'a positive integer or "batch"')).check(
                    s["shape"], f"state[{i}].shape")
        names = [s["name"] for s in manifest["state"]]
        if len(set(names)) != len(names):
            raise Invalid("state", "a list of distinct names", sorted(n for n in names if names.count(n) > 1)[:3])
        vocab = manifest["outputs"][0]["shape"][-1:] or [None]
        Int(1, MAX_DIM).check(vocab[0], "outputs[0].shape[-1] (the vocabulary)")
    except Invalid as e:
        raise CorruptFileError(f"manifest {where} is invalid: {e}", "re-export the artifact") from None
    return manifest


def state_bytes(manifest: dict[str, Any], batch: int = 1) -> int:
    """Bytes the manifest's state specs allocate (after check_manifest)."""
    total = 0
    for s in manifest["state"]:
        dims = [batch if d == "batch" else d if isinstance(d, int) else 0 for d in s["shape"]]  # named: grows from 0
        total += math.prod(dims) * STATE_DTYPES[s["dtype"]]
    return total
