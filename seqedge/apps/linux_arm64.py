"""`seqedge package --target linux-arm64`: the runner bundle cross-compiled for 64-bit Arm Linux (a board, a
phone's Linux shell), the artifact, and the engine's header for C++ apps.

    pkg/
      README.md
      model/                          the artifact
      bin/seqedge_runner              + libseqedge.so (the engine), seqedge's kernels, ExecuTorch's libraries ($ORIGIN)
      include/seqedge_engine.h        the C++ API libseqedge.so exports

Built here with Debian's aarch64 cross compiler against ExecuTorch's manylinux aarch64 wheel and checked
under qemu-aarch64 by seqedge's tests (greedy text byte-identical to the x86-64 runner, teacher-forced logits
compared). Needs glibc >= 2.34 on the device (Debian 12's cross toolchain).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from seqedge.apps.base import AppTarget, native_sources
from seqedge.apps.facts import AppFacts

CROSS = "aarch64-linux-gnu"


def readme(f: AppFacts, files: list[Path]) -> str:
    size = sum(p.stat().st_size for p in files)
    chat = ' --chat' if f.chat else ''
    return f"""# seqedge for arm64 Linux: {f.family} ({f.quant}), ExecuTorch {f.executorch_version}

## Steps
1. Copy this folder to the device (`scp -r`, `adb push`); it needs glibc >= 2.34 and nothing else.
2. Run it: `./bin/seqedge_runner model --prompt "def main("{chat} --max-new-tokens 64 --threads 4`
   (`--timing` prints prefill/decode timings as one JSON line on stderr).
3. Or embed it in a C++ program: include `include/seqedge_engine.h`, link `bin/libseqedge.so`
   (`-Lbin -lseqedge -Wl,-rpath,'$ORIGIN'`), and `seqedge::Engine engine("model"); engine.generate(...)`.

## What is in here, and what was checked
- `bin/`: {len(files)} files, {size / 1e6:.1f} MB: the runner, libseqedge.so (the engine), seqedge's kernel libraries
  and the ExecuTorch {f.executorch_version} libraries they load, all found through `$ORIGIN`.
  **Built here** with the `{CROSS}` cross compiler; seqedge's tests run this build under
  `qemu-aarch64 -cpu cortex-a53` and compare it with the x86-64 runner. Emulation says nothing about speed:
  measure on the device (`seqedge bench ARTIFACT --adb SERIAL --runner bin/seqedge_runner`).
- `model/`: the artifact ({", ".join(f.files)}); tokenizer: {f.tokenizer}.
"""


def write(facts: AppFacts, plan, out: Path, say: Callable[[str], None]) -> None:
    from seqedge.native import build_runner

    # the C++ tokenizer only where the model has a tokenizer.json (its first cross build takes minutes)
    tokenizers = plan.tokenizers if plan.tokenizers is not None else facts.tokenizer == "hf"
    runner = build_runner(out / "bin", tokenizers=tokenizers, target=CROSS, executorch_wheel=plan.executorch_wheel,
                          say=say)
    (out / "include").mkdir()
    shutil.copy2(native_sources() / "engine" / "seqedge_engine.h", out / "include" / "seqedge_engine.h")
    (out / "README.md").write_text(readme(facts, sorted(runner.parent.iterdir())))


TARGET = AppTarget("linux-arm64", "the runner bundle cross-compiled for arm64 Linux, checked under qemu", write)
