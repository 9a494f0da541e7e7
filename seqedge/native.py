"""Build seqedge's native code (runtimes/native) with cmake against the installed ExecuTorch wheel.

    lib = kernel_library()          # libseqedge_kernels.so, built once and cached
    build_native(out_dir)           # kernels + the seqedge_runner program (seqedge build-runner)

Needs cmake >= 3.28 (the `cmake` package from PyPI is a dependency) and a C++17 compiler; a missing one
is a clear error naming the tool. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from seqedge import __version__
from seqedge.errors import SeqedgeError, UnsupportedError

CACHE = Path(os.environ.get("SEQEDGE_CACHE", Path.home() / ".cache" / "seqedge")) / "native"


class BuildError(SeqedgeError):
    """cmake or the compiler failed: the message carries the end of their output."""


def _source_dir() -> Path:
    """runtimes/native, shipped as package data of seqedge.runtimes (editable or wheel install alike)."""
    import seqedge.runtimes

    return Path(seqedge.runtimes.__file__).resolve().parent / "native"


def _tool(name: str, hint: str) -> str:
    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if not found:
        raise UnsupportedError(f"{name} is not installed, and seqedge needs it to build its native code", hint)
    return found


def executorch_root() -> Path:
    import executorch

    return Path(list(executorch.__path__)[0])


def build_native(build_dir: Path, targets: tuple[str, ...] = ()) -> Path:
    cmake = _tool("cmake", "pip install 'cmake>=3.28'")
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if not compiler:
        raise UnsupportedError("no C++ compiler found (c++, g++ or clang++)", "install one: apt-get install g++")
    args = [cmake, "-S", str(_source_dir()), "-B", str(build_dir), f"-DCMAKE_PREFIX_PATH={executorch_root()}",
            f"-DCMAKE_CXX_COMPILER={compiler}", "-DCMAKE_BUILD_TYPE=Release"]
    ninja = shutil.which("ninja", path=str(Path(sys.executable).parent))
    if ninja:
        args += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
    for step in (args, [cmake, "--build", str(build_dir), "--parallel", "2"] +
                 (["--target", *targets] if targets else [])):
        proc = subprocess.run(step, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-8:]
            raise BuildError(f"building runtimes/native failed: {' | '.join(tail)}", "see the compiler output above")
    return build_dir


RUNNER_FILES = ("seqedge_runner", "libseqedge_kernels.so", "libseqedge_llm_kernels.so")


def build_runner(out: Path) -> Path:
    """Build the runner and its kernel libraries into `out` (the runner finds the libraries next to it)."""
    import tempfile

    with tempfile.TemporaryDirectory() as build:
        build_native(Path(build))
        out.mkdir(parents=True, exist_ok=True)
        for name in RUNNER_FILES:
            shutil.copy2(Path(build) / name, out / name)
    return out / RUNNER_FILES[0]


def kernel_library() -> Path:
    """Path of libseqedge_kernels.so for this seqedge + ExecuTorch, building it on first use."""
    import executorch.version

    src = _source_dir()
    digest = hashlib.sha256()
    for f in sorted(src.rglob("*")):
        if f.is_file() and f.suffix in (".cpp", ".h", ".txt"):
            digest.update(f.read_bytes())
    key = f"{__version__}-{executorch.version.__version__}-{digest.hexdigest()[:12]}"
    lib = CACHE / key / "libseqedge_kernels.so"
    if not lib.is_file():
        build_native(CACHE / key, targets=("seqedge_kernels",))
    return lib


_loaded: set[str] = set()


def load_kernels() -> Path:
    """Load the kernel library into this process, registering seqedge's kernels with ExecuTorch."""
    import ctypes

    lib = kernel_library()
    if str(lib) not in _loaded:
        import executorch.runtime  # noqa: F401  (the runtime library must be loaded first)

        ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
        _loaded.add(str(lib))
    return lib
