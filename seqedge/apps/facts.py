"""What the generated app code needs to know about one artifact, read from its (untrusted, checked) manifest.

    facts = AppFacts.of(Path("art"))   # read_manifest checks the schema and every file's sha256 first
    facts.state, facts.eos_ids, facts.program ...

Only ExecuTorch artifacts go into apps here (the ONNX route on devices is onnxruntime's own mobile packages).
Generated code embeds these facts; nothing in it is copied by hand, and every string that reaches a source
file goes through `kotlin_string` / `swift_string`, so a manifest value never becomes code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from seqedge.errors import UnsupportedError


@dataclass(frozen=True)
class StateSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]  # batch 1


@dataclass(frozen=True)
class AppFacts:
    folder: Path
    family: str
    quant: str
    program: str  # the .pte file inside the artifact
    methods: tuple[str, ...]  # prefill, decode
    state: tuple[StateSpec, ...]  # carried between calls by the engine (inputs/outputs 1..n of decode)
    held_state: tuple[str, ...]  # held inside the program (attention KV caches)
    tokenizer: str  # "bytes" | "hf"
    eos_ids: tuple[int, ...]
    chat: bool  # the exporter pre-rendered a chat template
    vocab_size: int
    max_prefill_len: int
    files: tuple[str, ...]  # manifest.json and what it lists: what the app bundles
    executorch_version: str
    manifest_sha256: str
    native_kernels: tuple[str, ...] = ()  # seqedge's kernels the program calls (the package compiles them all)

    @classmethod
    def of(cls, folder: Path | str) -> AppFacts:
        from seqedge.exporters.artifact import MANIFEST, read_manifest
        from seqedge.fsutil import sha256_file

        folder = Path(folder)
        m = read_manifest(folder)
        if m.get("format") != "executorch":
            raise UnsupportedError(f"{folder} is a {m.get('format')} artifact; app packages embed ExecuTorch programs",
                                   "export it again with --format executorch (for ONNX on phones use onnxruntime's "
                                   "mobile packages with the .onnx file)")
        graphs = m["graphs"]
        tok = m.get("tokenizer") or {"kind": "bytes"}
        requires = str(m.get("requires", ""))
        version = requires.split("executorch==", 1)[1].split()[0] if "executorch==" in requires else _installed()
        return cls(
            folder=folder, family=m["family"], quant=(m.get("quant") or {}).get("recipe", "fp32"),
            program=graphs["prefill"].split("#")[0], methods=tuple(k for k in ("prefill", "decode") if k in graphs),
            state=tuple(StateSpec(s["name"], s["dtype"], tuple(1 if d == "batch" else int(d) for d in s["shape"]))
                        for s in m["state"]),
            held_state=tuple(str(h.get("name")) if isinstance(h, dict) else str(h) for h in m.get("held_state") or ()),
            tokenizer=tok["kind"], eos_ids=tuple(int(i) for i in tok.get("eos_ids") or ()), chat=bool(tok.get("chat")),
            vocab_size=int(m["outputs"][0]["shape"][-1]), max_prefill_len=int(m.get("max_prefill_len") or 1),
            files=(MANIFEST, *sorted(m["files"])), executorch_version=version,
            manifest_sha256=sha256_file(folder / MANIFEST), native_kernels=tuple(m.get("native_kernels") or ()))


def _installed() -> str:
    from seqedge.native import executorch_version

    return executorch_version()


def kotlin_string(s: str) -> str:
    """A Kotlin string literal: JSON's escapes (\\uXXXX for the rest) and `$` escaped (it starts a template)."""
    return json.dumps(s, ensure_ascii=True).replace("$", "\\$")


def swift_string(s: str) -> str:
    """A Swift string literal: \\\\, \\", and every other non-printable or non-ASCII character as \\u{X}."""
    out = []
    for ch in s:
        if ch in '\\"':
            out.append("\\" + ch)
        elif 0x20 <= ord(ch) < 0x7F:
            out.append(ch)
        else:
            out.append(f"\\u{{{ord(ch):x}}}")
    return '"' + "".join(out) + '"'
