"""Build seqedge's native code (runtimes/native) with cmake against an ExecuTorch wheel.

    lib = kernel_library()                                    # libseqedge_kernels.so for this process, cached
    lib = kernel_library("seqedge_ort_kernels")               # the onnxruntime custom ops (runtimes/ort_kernels.py)
    runner = build_runner(out_dir)                            # seqedge_runner + libraries (seqedge build-runner)
    runner = build_runner(out_dir, target="aarch64-linux-gnu")  # the same, cross-compiled for arm64 Linux

A runner is a bundle: the program, seqedge's kernel libraries, the engine's JNI bridge where a JDK is here,
and the ExecuTorch libraries they need, all loading from their own folder ($ORIGIN). Targets are data
(TARGETS): the host builds against the installed executorch wheel; a cross target against that target's
executorch wheel (`pip download`ed once into the cache, or --executorch-wheel), with the toolchain file
runtimes/native/toolchains ships; every library of the wheel is checked to be built for the target before
anything is configured. Needs cmake >= 3.28 (a dependency) and the target's C++17 compiler; a missing one is
an error naming the install command. The runner tokenizes real models (tokenizer.json) when pytorch-tokenizers'
C++ source is in the cache (`make fetch-tokenizers`) or SEQEDGE_TOKENIZERS_SOURCE names it. Builds live in the
cache, keyed by seqedge, ExecuTorch, the target and the native sources, so a second build only relinks.
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
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from seqedge import __version__
from seqedge.bench.device import ELF_MACHINES, elf_machine
from seqedge.errors import BadPathError, SeqedgeError, UnsupportedError
from seqedge.fsutil import sha256_file
from seqedge.registry import Registry

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


@dataclass(frozen=True)
class Target:
    """Where a runner bundle runs. A cross target names its compiler, its toolchain file, the pip platform of
    its ExecuTorch wheel, its ELF machine and how this machine runs its programs (an emulator)."""

    name: str
    elf_machine: int  # e_machine of its programs (62 x86-64, 183 aarch64)
    compiler: str  # the C++ compiler cmake uses
    install: str  # the command that installs the compiler
    toolchain: str | None = None  # runtimes/native/toolchains/<file>; None: this machine
    wheel_platform: str | None = None  # pip --platform of ExecuTorch's wheel; None: the installed one
    emulator: tuple[str, ...] = ()  # prefix that runs its programs on this machine (qemu-user, with its -L sysroot)


TARGETS: Registry[Target] = Registry("runner target")
TARGETS.add("host", Target("host", ELF_MACHINES.get(os.uname().machine, 0), "c++",
                           "apt-get install g++"))
# Pinning the emulated CPU keeps XNNPACK's kernel choice (and so the bits) fixed: `-cpu max` picks other kernels.
TARGETS.add("aarch64-linux-gnu", Target(
    "aarch64-linux-gnu", 183, "aarch64-linux-gnu-g++",
    "apt-get install g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user",
    toolchain="aarch64-linux-gnu.cmake", wheel_platform="manylinux_2_28_aarch64",
    emulator=("qemu-aarch64", "-cpu", "cortex-a53", "-L", "/usr/aarch64-linux-gnu")))


def executorch_root() -> Path:
    import executorch

    return Path(list(executorch.__path__)[0])


def executorch_version() -> str:
    import executorch.version

    return executorch.version.__version__.split("+")[0]


def target_executorch(target: Target, wheel: Path | None = None, say: Callable[[str], None] = print) -> Path:
    """The ExecuTorch package root (lib/, include/, share/cmake) to build `target` against: the installed one
    for the host; for a cross target, `wheel` or the cached download of this ExecuTorch version for its
    platform, unpacked once. Every library in it must be built for the target."""
    if target.wheel_platform is None and wheel is None:
        root = executorch_root()
    else:
        if wheel is None:
            wheel = _download_wheel(target, say)
        wheel = Path(wheel)
        if not zipfile.is_zipfile(wheel):
            raise BadPathError(f"{wheel} is not a wheel (zip) file", "pass the executorch .whl for the target")
        root = _unpacked(wheel)
    libs = sorted((root / "lib").glob("lib*.so")) if (root / "lib").is_dir() else []
    if not libs or not (root / "lib" / "cmake" / "executorch" / "executorch-config.cmake").is_file():
        raise BadPathError(f"{root} has no ExecuTorch libraries and CMake package (lib/, lib/cmake/executorch)",
                           "pass an executorch wheel from PyPI (1.5 or newer ships them)")
    for lib in libs:
        got = elf_machine(lib)
        if got != target.elf_machine:
            raise BadPathError(f"{lib} is built for {_machine_name(got)}, not for {target.name}",
                               f"pass the executorch wheel for {target.wheel_platform or 'this machine'}")
    return root


def _download_wheel(target: Target, say: Callable[[str], None]) -> Path:
    version = executorch_version()
    folder = CACHE / "wheels" / f"executorch-{version}-{target.wheel_platform}"
    found = sorted(folder.glob("executorch-*.whl")) if folder.is_dir() else []
    if found:
        return found[0]
    say(f"downloading ExecuTorch {version}'s {target.wheel_platform} wheel with pip (once; cached in {folder})")
    folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".download-") as tmp:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", f"executorch=={version}", "--no-deps",
                               "--only-binary=:all:", "--platform", target.wheel_platform, "--python-version",
                               f"{sys.version_info.major}.{sys.version_info.minor}", "-d", tmp],
                              capture_output=True, text=True)
        got = sorted(Path(tmp).glob("executorch-*.whl"))
        if proc.returncode != 0 or not got:
            raise UnsupportedError(f"pip could not download executorch=={version} for {target.wheel_platform}: "
                                   f"{(proc.stderr.strip().splitlines() or ['no wheel'])[-1][:160]}",
                                   "download it elsewhere and pass --executorch-wheel PATH")
        folder.mkdir(mode=0o700, exist_ok=True)
        os.replace(got[0], folder / got[0].name)
    return folder / got[0].name


def _unpacked(wheel: Path) -> Path:
    """The wheel's executorch/{lib,include,share} unpacked into the cache (once per wheel content). Only
    members under those folders, with plain relative names, are extracted."""
    root = CACHE / "wheels" / f"{wheel.stem}-{sha256_file(wheel)[:12]}"
    if (root / ".complete").is_file():
        return root / "executorch"
    root.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent, prefix=".unpack-") as tmp, zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            parts = Path(info.filename).parts
            if (len(parts) < 2 or parts[0] != "executorch" or parts[1] not in ("lib", "include", "share")
                    or info.filename.startswith("/") or ".." in parts):
                continue
            z.extract(info, tmp)
        (Path(tmp) / ".complete").touch()
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
        Path(tmp).mkdir()  # TemporaryDirectory removes its own name on exit
    return root / "executorch"


def _machine_name(machine: int | None) -> str:
    return {62: "x86-64", 183: "aarch64", 40: "32-bit Arm", 3: "x86"}.get(machine, f"ELF machine {machine}")


def elf_needed(path: Path) -> list[str]:
    """DT_NEEDED of a 64-bit little-endian ELF file (the libraries it asks the loader for)."""
    import struct

    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return []
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    out = []
    for _name, kind, _flags, _addr, offset, size, link, *_ in sections:
        if kind != 6:  # SHT_DYNAMIC
            continue
        strtab = sections[link][4]
        for i in range(0, size, 16):
            tag, val = struct.unpack_from("<qQ", data, offset + i)
            if tag == 0:
                break
            if tag == 1:  # DT_NEEDED
                end = data.index(b"\0", strtab + val)
                out.append(data[strtab + val:end].decode())
    return out


def tokenizers_source() -> Path | None:
    """pytorch-tokenizers' source tree for the runner's C++ tokenizer, or None when it is not here."""
    path = Path(os.environ.get("SEQEDGE_TOKENIZERS_SOURCE") or TOKENIZERS_SOURCE)
    return path if (path / "CMakeLists.txt").is_file() else None


def build_native(build_dir: Path, targets: tuple[str, ...] = (), options: tuple[str, ...] = (),
                 target: Target | None = None, executorch: Path | None = None) -> Path:
    target = target or TARGETS["host"]
    cmake = _tool("cmake", "pip install 'cmake>=3.28'")
    if target.toolchain is None:
        compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
        if not compiler:
            raise UnsupportedError("no C++ compiler found (c++, g++ or clang++)", f"install one: {target.install}")
        where = [f"-DCMAKE_CXX_COMPILER={compiler}"]
    else:
        if not shutil.which(target.compiler):
            raise UnsupportedError(f"{target.compiler} is not installed, and building for {target.name} needs it",
                                   target.install)
        where = [f"-DCMAKE_TOOLCHAIN_FILE={_source_dir() / 'toolchains' / target.toolchain}"]
    root = executorch or executorch_root()
    args = [cmake, "-S", str(_source_dir()), "-B", str(build_dir), f"-Dexecutorch_DIR={root / 'lib' / 'cmake' / 'executorch'}",
            *where, "-DCMAKE_BUILD_TYPE=Release", *options]
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


# What build_runner writes (and the ExecuTorch libraries they need, found from their DT_NEEDED entries)
RUNNER_FILES = ("seqedge_runner", "libseqedge.so", "libseqedge_kernels.so", "libseqedge_llm_kernels.so")
JNI_LIBRARY = "libseqedge_jni.so"


def build_runner(out: Path, tokenizers: bool | None = None, target: str = "host", executorch_wheel: Path | None = None,
                 say: Callable[[str], None] = print) -> Path:
    """Build the runner bundle into `out`: seqedge_runner, seqedge's kernel libraries, libseqedge_jni.so where a
    JDK is here (host), and the ExecuTorch libraries they load, all found through $ORIGIN.
    tokenizers: True needs the C++ tokenizer, False leaves it out, None takes it when its source is here
    (the first build with it compiles re2/abseil/sentencepiece/PCRE2: minutes; later ones are cached)."""
    spec = TARGETS[target]
    source = tokenizers_source() if tokenizers is not False else None
    if tokenizers and source is None:
        raise UnsupportedError(f"the runner's C++ tokenizer needs pytorch-tokenizers' source, which is not in "
                               f"{TOKENIZERS_SOURCE}", FETCH_TOKENIZERS)
    et = target_executorch(spec, executorch_wheel, say)
    # one build folder per seqedge + ExecuTorch + target + source location (ninja rebuilds what changed, and
    # cmake refuses a build folder configured from another source tree), so a change to the runner does not
    # recompile the tokenizer's dependencies
    where = hashlib.sha256(f"{_source_dir()}|{source or ''}|{et}".encode()).hexdigest()[:8]
    build = CACHE / f"{_key(sources=False)}-runner-{spec.name}{'-tok' if source else ''}-{where}"
    with _locked(build):
        build_native(build, options=(f"-DSEQEDGE_TOKENIZERS_SOURCE={source or ''}", "-DSEQEDGE_BUNDLE=ON"),
                     target=spec, executorch=et)
        files = [build / name for name in RUNNER_FILES] + ([build / JNI_LIBRARY] if (build / JNI_LIBRARY).is_file() else [])
        for f in files:
            if (got := elf_machine(f)) != spec.elf_machine:
                raise BuildError(f"{f} came out built for {_machine_name(got)}, not {spec.name}",
                                 "check the compiler the toolchain file names")
        files += _needed_from(files, et / "lib")
        out.mkdir(parents=True, exist_ok=True)
        for f in files:
            tmp = out / f".{f.name}.tmp"
            shutil.copy2(f, tmp)
            os.replace(tmp, out / f.name)
    return out / RUNNER_FILES[0]


def _needed_from(files: list[Path], lib_dir: Path) -> list[Path]:
    """The libraries in lib_dir that `files` load, directly or through each other."""
    found: dict[str, Path] = {}
    todo = list(files)
    while todo:
        for name in elf_needed(todo.pop()):
            if name not in found and (lib_dir / name).is_file():
                found[name] = lib_dir / name
                todo.append(lib_dir / name)
    return sorted(found.values())


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


# The kernel libraries, built together into one folder per seqedge + ExecuTorch + kernel sources: ExecuTorch's
# (seqedge_kernels), onnxruntime's custom ops (seqedge_ort_kernels) and eager PyTorch's (seqedge_eager_kernels).
# Together, so a folder is configured by cmake once: another checkout of the same sources shares the folder,
# and cmake refuses to configure a folder again from a different source path.
KERNEL_TARGETS = ("seqedge_kernels", "seqedge_ort_kernels", "seqedge_eager_kernels")


def kernel_library(target: str = "seqedge_kernels") -> Path:
    """Path of lib<target>.so (one of KERNEL_TARGETS) for this seqedge + ExecuTorch, building the kernel
    libraries on first use. Each library's sha256 is recorded when it is built (`.sha256` beside it) and
    checked before it is loaded."""
    build = CACHE / _key()
    libs = [build / f"lib{t}.so" for t in KERNEL_TARGETS]
    lib = build / f"lib{target}.so"
    done = lambda: all(p.is_file() and _digest_file(p).is_file() for p in libs)  # noqa: E731
    if not done():
        with _locked(build):
            if not done():
                if (build / "CMakeCache.txt").is_file():  # configured from another source path: start afresh
                    shutil.rmtree(build / "CMakeFiles", ignore_errors=True)
                    (build / "CMakeCache.txt").unlink()
                build_native(build, targets=KERNEL_TARGETS)
                for p in libs:
                    _digest_file(p).write_text(sha256_file(p) + "\n")
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
