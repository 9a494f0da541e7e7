"""Build seqedge's native code (runtimes/native) with cmake against the installed ExecuTorch wheel.

    lib = kernel_library()          # libseqedge_kernels.so, built once and cached
    runner = build_runner(out_dir)  # kernels + the seqedge_runner program (seqedge build-runner), cached

Needs cmake >= 3.28 (the `cmake` package from PyPI is a dependency) and a C++17 compiler; a missing one
is a clear error naming the tool. Nothing is downloaded: the runner tokenizes real models (tokenizer.json)
when pytorch-tokenizers' C++ source is in the cache (`make fetch-tokenizers`) or SEQEDGE_TOKENIZERS_SOURCE
names it; without it the runner runs byte-level models only and says so for the others. Builds live in
the cache, keyed by seqedge, ExecuTorch and the native sources, so a second build only relinks.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from seqedge import __version__
from seqedge.errors import SeqedgeError, UnsupportedError
from seqedge.fsutil import sha256_file

CACHE = Path(os.environ.get("SEQEDGE_CACHE", Path.home() / ".cache" / "seqedge")) / "native"
# pytorch-tokenizers 1.0.1's sdist, unpacked by `make fetch-tokenizers` (its wheels carry no C++ sources)
TOKENIZERS_SOURCE = CACHE.parent / "src" / "pytorch_tokenizers-1.0.1"
FETCH_TOKENIZERS = "make fetch-tokenizers (or set SEQEDGE_TOKENIZERS_SOURCE to an unpacked pytorch-tokenizers 1.0.1 sdist)"


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


def tokenizers_source() -> Path | None:
    """pytorch-tokenizers' source tree for the runner's C++ tokenizer, or None when it is not here."""
    path = Path(os.environ.get("SEQEDGE_TOKENIZERS_SOURCE") or TOKENIZERS_SOURCE)
    return path if (path / "CMakeLists.txt").is_file() else None


def build_native(build_dir: Path, targets: tuple[str, ...] = (), options: tuple[str, ...] = ()) -> Path:
    cmake = _tool("cmake", "pip install 'cmake>=3.28'")
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if not compiler:
        raise UnsupportedError("no C++ compiler found (c++, g++ or clang++)", "install one: apt-get install g++")
    args = [cmake, "-S", str(_source_dir()), "-B", str(build_dir), f"-DCMAKE_PREFIX_PATH={executorch_root()}",
            f"-DCMAKE_CXX_COMPILER={compiler}", "-DCMAKE_BUILD_TYPE=Release", *options]
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


def build_runner(out: Path, tokenizers: bool | None = None) -> Path:
    """Build the runner and its kernel libraries into `out` (the runner finds the libraries next to it).
    tokenizers: True needs the C++ tokenizer, False leaves it out, None takes it when its source is here
    (the first build with it compiles re2/abseil/sentencepiece/PCRE2: minutes; later ones are cached)."""
    source = tokenizers_source() if tokenizers is not False else None
    if tokenizers and source is None:
        raise UnsupportedError(f"the runner's C++ tokenizer needs pytorch-tokenizers' source, which is not in "
                               f"{TOKENIZERS_SOURCE}", FETCH_TOKENIZERS)
    # one build folder per seqedge + ExecuTorch + source location (ninja rebuilds what changed, and cmake
    # refuses a build folder configured from another source tree), so a change to the runner does not
    # recompile the tokenizer's dependencies
    where = hashlib.sha256(f"{_source_dir()}|{source or ''}".encode()).hexdigest()[:8]
    build = CACHE / f"{_key(sources=False)}-runner{'-tok' if source else ''}-{where}"
    with _locked(build):
        build_native(build, options=(f"-DSEQEDGE_TOKENIZERS_SOURCE={source or ''}",))
        out.mkdir(parents=True, exist_ok=True)
        for name in RUNNER_FILES:
            shutil.copy2(build / name, out / name)
    return out / RUNNER_FILES[0]


@functools.cache
def _key(sources: bool = True) -> str:
    """seqedge, ExecuTorch (and the kernels' sources): a build of another combination lives elsewhere.
    Computed once per process: a process never loads two kernel libraries (ExecuTorch aborts on a kernel
    registered twice), even when the sources change while it runs."""
    import executorch.version

    digest = hashlib.sha256()
    src = _source_dir()
    for f in sorted([src / "CMakeLists.txt", *(src / "kernels").rglob("*")]) if sources else ():
        if f.is_file() and f.suffix in (".cpp", ".h", ".txt"):
            digest.update(f.read_bytes())
    return f"{__version__}-{executorch.version.__version__}" + (f"-{digest.hexdigest()[:12]}" if sources else "")


@contextlib.contextmanager
def _locked(build: Path):
    """One build per folder at a time (two processes sharing the cache wait for each other)."""
    import fcntl

    CACHE.mkdir(mode=0o700, parents=True, exist_ok=True)
    build.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(build / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def kernel_library() -> Path:
    """Path of libseqedge_kernels.so for this seqedge + ExecuTorch, building it on first use. The library's
    sha256 is recorded when it is built (`.sha256` beside it) and checked before it is loaded."""
    build = CACHE / _key()
    lib = build / "libseqedge_kernels.so"
    if not lib.is_file() or not _digest_file(lib).is_file():
        with _locked(build):
            if not lib.is_file() or not _digest_file(lib).is_file():
                build_native(build, targets=("seqedge_kernels",))
                _digest_file(lib).write_text(sha256_file(lib) + "\n")
    return lib


def _digest_file(lib: Path) -> Path:
    return lib.with_name(lib.name + ".sha256")


def check_private(path: Path) -> None:
    """Refuse to load code from a folder someone else could have written: every folder from the cache root
    down to `path` must belong to this user and not be writable by group or others."""
    root = CACHE.parent
    for folder in [path.parent, *path.parent.parents]:
        st = folder.stat()
        if st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UnsupportedError(f"seqedge's native cache {folder} is writable by others (mode "
                                   f"{stat.S_IMODE(st.st_mode):o}, owner {st.st_uid}): its libraries are not loaded",
                                   f"remove it (rm -rf {root}) and let seqedge rebuild it, or chmod go-w it")
        if folder == root:
            break


def verified_library(lib: Path) -> Path:
    """`lib`, after checking the cache is private and the file is what this user's build produced."""
    check_private(lib)
    digest = _digest_file(lib)
    recorded = digest.read_text().strip() if digest.is_file() else ""
    if sha256_file(lib) != recorded:
        raise UnsupportedError(f"the kernel library {lib} does not match the sha256 recorded when it was built: "
                               "it is not loaded", f"remove {lib.parent} and let seqedge rebuild it")
    return lib


_loaded: set[str] = set()


def load_kernels() -> Path:
    """Load the kernel library into this process, registering seqedge's kernels with ExecuTorch."""
    import ctypes

    lib = kernel_library()
    if str(lib) not in _loaded:
        import executorch.runtime  # noqa: F401  (the runtime library must be loaded first)

        ctypes.CDLL(str(verified_library(lib)), mode=ctypes.RTLD_GLOBAL)
        _loaded.add(str(lib))
    return lib
