"""Into apps: the runner bundle cross-compiled for arm64 Linux and run under qemu-aarch64 (text byte-identical to
the x86-64 runner, teacher-forced logits compared), `seqedge package` for android / ios / linux-arm64 (generated
from the manifest), the generated Kotlin class + JNI bridge compiled and run on this machine's JVM, and
`seqedge bench --adb` against the arm64 bundle through a stand-in adb that runs it under qemu.

Needs Debian's g++-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user, and kotlinc (npm's kotlin-compiler);
.ci/run installs them. Without them these tests skip, unless SEQEDGE_REQUIRE_APP_TOOLS=1 (CI) makes that a failure.
"""

import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from seqedge.apps import PackagePlan, package
from seqedge.apps.facts import AppFacts, kotlin_string, swift_string
from seqedge.bench.device import elf_machine
from seqedge.bench.run import BenchPlan, bench
from seqedge.cli.app import app
from seqedge.errors import BadPathError, SeqedgeError, UnknownNameError, UnsupportedError
from seqedge.exporters import ExportPlan, export
from seqedge.exporters.artifact import read_manifest
from seqedge.models import build_model
from seqedge.native import CACHE, TARGETS, build_runner, elf_needed

ARM = TARGETS["aarch64-linux-gnu"]
REQUIRED = os.environ.get("SEQEDGE_REQUIRE_APP_TOOLS") == "1"
FAKE_ADB = Path(__file__).with_name("fake_adb.py")
PROMPT = "The quick brown fox jumps over the lazy dog. def main(argv): return 0  # done"  # 76 steps of teacher forcing


def kotlinc() -> str | None:
    if os.environ.get("SEQEDGE_KOTLINC"):
        return os.environ["SEQEDGE_KOTLINC"]
    if shutil.which("kotlinc"):
        return shutil.which("kotlinc")
    npm = shutil.which("npm")
    root = subprocess.run([npm, "root", "-g"], capture_output=True, text=True).stdout.strip() if npm else ""
    found = Path(root) / "kotlin-compiler" / "bin" / "kotlinc"
    return str(found) if root and found.is_file() else None


def need(ok: bool, what: str):
    if not ok:
        if REQUIRED:
            pytest.fail(f"{what} is not installed and SEQEDGE_REQUIRE_APP_TOOLS=1 (.ci/run installs it)")
        pytest.skip(f"{what} is not installed")


# What needs the arm64 bundle (ExecuTorch cross-compiled: 5-8 minutes on a fresh 2-core machine) runs with the
# slow tests (`make test-slow`, which .ci/run runs after the suite), keeping `make test` within its budget.
ARM64 = pytest.mark.slow


@pytest.fixture(scope="module")
def arm_runner(tmp_path_factory) -> Path:
    need(shutil.which(ARM.compiler) is not None and shutil.which(ARM.emulator[0]) is not None,
         f"the aarch64 cross toolchain or qemu ({ARM.install})")
    return build_runner(tmp_path_factory.mktemp("arm64"), tokenizers=False, target=ARM.name)


class AppArtifacts:
    """A Transformer, a Mamba and an LSTM as ExecuTorch programs, each built when a test first asks: `FAMILY-fp32`
    (seeded random weights) and `FAMILY-int4` (trained briefly, so greedy text is varied)."""

    def __init__(self, pte_artifacts, trained_exports):
        self.pte, self.trained = pte_artifacts, trained_exports

    def __getitem__(self, name: str) -> Path:
        fam, kind = name.rsplit("-", 1)
        if kind == "fp32":
            return self.pte[fam][0]
        # the Transformer's is test_quant's verified export; the others only need the program
        return self.trained.get(fam, "executorch", kind, verify=fam == "transformer")[0]


@pytest.fixture(scope="module")
def artifacts(pte_artifacts, trained_exports) -> AppArtifacts:
    return AppArtifacts(pte_artifacts, trained_exports)


def run(runner: Path, *args, emulate=False) -> subprocess.CompletedProcess:
    argv = [*ARM.emulator, str(runner), *map(str, args)] if emulate else [str(runner), *map(str, args)]
    proc = subprocess.run(argv, capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-500:]
    return proc


def scores(runner: Path, artifact: Path, out: Path, emulate: bool) -> np.ndarray:
    run(runner, artifact, "--prompt", PROMPT, "--score-file", out, emulate=emulate)
    vocab = read_manifest(artifact)["outputs"][0]["shape"][-1]
    return np.fromfile(out, dtype="<f4").reshape(-1, vocab)


@ARM64
def test_the_bundle_is_arm64_and_loads_from_its_own_folder(arm_runner, native_runner):
    for bundle, machine in ((arm_runner.parent, ARM.elf_machine), (native_runner.parent, TARGETS["host"].elf_machine)):
        names = {p.name for p in bundle.iterdir()}
        assert {"seqedge_runner", "libseqedge.so", "libseqedge_kernels.so", "libexecutorch.so"} <= names
        for f in bundle.iterdir():
            assert elf_machine(f) == machine, f
            for lib in elf_needed(f):  # everything not from the C/C++ runtime is in the bundle
                assert lib in names or lib.startswith(("libc.so", "libm.so", "libstdc++", "libgcc_s", "ld-linux",
                                                       "libpthread", "libdl")), (f.name, lib)
            dyn = subprocess.run(["readelf", "-d", str(f)], capture_output=True, text=True).stdout
            assert str(Path.home()) not in dyn and "/tmp" not in dyn, (f.name, dyn)  # no build-machine paths


@ARM64
@pytest.mark.parametrize("name", ["transformer-fp32", "mamba-fp32", "lstm-fp32",
                                  "transformer-int4", "mamba-int4", "lstm-int4"])
def test_arm64_runner_under_qemu_matches_the_x86_runner(arm_runner, native_runner, artifacts, tmp_path, name):
    art = artifacts[name]
    args = (art, "--prompt", "def main(", "--max-new-tokens", "48")
    x86, arm = run(native_runner, *args), run(arm_runner, *args, emulate=True)
    assert arm.stdout == x86.stdout and len(x86.stdout) > len("def main(") + 40
    a, b = scores(native_runner, art, tmp_path / "x86.f32", False), scores(arm_runner, art, tmp_path / "arm.f32", True)
    assert a.shape == b.shape and a.shape[0] >= 32
    diff = np.abs(a - b).max(axis=1)
    assert (a.argmax(1) == b.argmax(1)).all()
    print(f"{name}: {len(diff)} steps, max |x86 - arm64| {diff.max():.2e}, steps within 1e-5: "
          f"{int((diff <= 1e-5).sum())}, logit range {float(a.max() - a.min()):.2f}")  # for the closing note (-s)
    if name.endswith("fp32"):
        assert diff.max() <= 1e-5, diff.max()
    else:
        # int4 = int8 dynamic activations: XNNPACK's NEON and AVX-512 float kernels differ by ~1e-7, which now
        # and then moves an activation across an int8 rounding boundary (one quantum); recurrent state and the
        # KV cache carry it on. Bounded by a few quanta of the logit range.
        assert diff.max() <= 0.02 * (a.max() - a.min()), diff


@pytest.mark.parametrize("target", ["android", "ios", pytest.param("linux-arm64", marks=ARM64)])
def test_package_is_generated_from_the_manifest(artifacts, request, tmp_path, target):
    arm_runner = request.getfixturevalue("arm_runner") if target == "linux-arm64" else None
    art = artifacts["mamba-fp32"]
    r = CliRunner().invoke(app, ["package", str(art), "--target", target, "--out", str(tmp_path / "pkg")])
    assert r.exit_code == 0, r.output
    pkg, facts = tmp_path / "pkg", AppFacts.of(art)
    assert sorted(p.name for p in (pkg / "model").iterdir()) == sorted(facts.files)
    assert read_manifest(pkg / "model") == read_manifest(art)  # hash-checked copy
    readme = (pkg / "README.md").read_text()
    assert facts.executorch_version in readme and "## Steps" in readme
    manifest = read_manifest(art)
    if target == "android":
        info = (pkg / "seqedge/src/main/kotlin/dev/seqedge/ModelInfo.kt").read_text()
        for s in manifest["state"]:
            assert kotlin_string(s["name"]) in info
        assert f'MAX_PREFILL_LEN = {manifest["max_prefill_len"]}' in info
        gradle = (pkg / "seqedge/build.gradle.kts").read_text()
        assert f'org.pytorch:executorch-android:{facts.executorch_version}' in gradle
        assert (pkg / "seqedge/src/main/cpp/executorch/include/executorch/extension/module/module.h").is_file()
        assert "source only, not built here" in readme
    elif target == "ios":
        info = (pkg / "Seqedge/Sources/Seqedge/ModelInfo.swift").read_text()
        assert all(swift_string(s["name"]) in info for s in manifest["state"])
        assert f'branch: "swiftpm-{facts.executorch_version}"' in (pkg / "Seqedge/Package.swift").read_text()
        assert "Source only, not built here" in readme
    else:
        bundle = pkg / "bin"
        assert sorted(p.name for p in bundle.iterdir()) == sorted(p.name for p in arm_runner.parent.iterdir())
        out = run(bundle / "seqedge_runner", pkg / "model", "--prompt", "def ", "--max-new-tokens", "8", emulate=True)
        assert out.stdout.startswith(b"def ")


def test_string_literals_never_become_code():
    nasty = 'a"b\\c${x}\n\u00e9\U0001F600'
    kotlin = kotlin_string(nasty)
    assert json.loads(kotlin.replace("\\$", "$")) == nasty and not re.search(r"(?<!\\)\$", kotlin)  # every $ escaped
    swift = swift_string(nasty)
    assert swift == '"a\\"b\\\\c${x}\\u{a}\\u{e9}\\u{1f600}"'


@pytest.mark.parametrize("target", ["android", "ios"])
def test_packaged_sources_include_only_what_they_carry(artifacts, target, tmp_path):
    """The C++ a package hands the app's build: every quoted #include names a file the package carries (the
    kernels' shared headers included), or ExecuTorch's headers it also carries."""
    pkg = tmp_path / "pkg"
    said = []
    package(PackagePlan(artifact=artifacts["transformer-int4"], target=target, out=pkg), say=said.append)
    # exported here (x86-64 with AVX2: seqedge's int4 kernel), the package says how to get the phone's kernels
    here = "seqedge::int4_matmul.out" in read_manifest(artifacts["transformer-int4"])["native_kernels"]
    assert any("exported for an x86-64 CPU" in s and "--device" in s for s in said) == here
    carried = {p.name for p in pkg.rglob("*") if p.is_file()}
    sources = [p for p in pkg.rglob("*") if p.suffix in (".cpp", ".h", ".mm") and "executorch" not in p.parts]
    assert any(p.name == "cached_sdpa.cpp" for p in sources)
    missing = {(p.name, inc) for p in sources
               for inc in re.findall(r'^#include "([^"]+)"', p.read_text(errors="replace"), re.M)
               if Path(inc).name not in carried}
    assert not missing, missing
    kernels = {p.name for p in sources if p.parent.name == "kernels" and p.suffix == ".cpp"}
    assert {"rnn_scan.cpp", "moe_ffn.cpp", "int4_matmul.cpp"} <= kernels  # every seqedge kernel a program may name
    cmake = next(pkg.rglob("CMakeLists.txt"), None)
    if cmake is not None:  # the NDK build compiles every kernel source the package carries
        assert all(f"kernels/{k}" in cmake.read_text() for k in kernels), kernels


def test_kotlin_wrapper_and_jni_bridge_run_on_the_jvm(artifacts, native_runner, tmp_path):
    compiler, java = kotlinc(), shutil.which("java")
    need(compiler is not None and java is not None, "kotlinc (npm install -g kotlin-compiler) or a JDK")
    assert (native_runner.parent / "libseqedge_jni.so").is_file()  # built with the runner where a JDK is here
    stdlib = Path(compiler).resolve().parents[1] / "lib" / "kotlin-stdlib.jar"
    pkg = tmp_path / "pkg"
    package(PackagePlan(artifact=artifacts["transformer-int4"], target="android", out=pkg), say=lambda _: None)
    kt = sorted((pkg / "seqedge/src/main/kotlin/dev/seqedge").glob("*.kt"))
    jar = tmp_path / "app.jar"
    subprocess.run([compiler, *map(str, kt), str(Path(__file__).with_name("kotlin") / "Main.kt"), "-d", str(jar),
                    "-nowarn"], check=True, capture_output=True, timeout=600)
    cmd = [java, f"-Djava.library.path={native_runner.parent}", "-cp", f"{jar}:{stdlib}", "MainKt"]
    art = artifacts["transformer-int4"]
    proc = subprocess.run([*cmd, str(art), "def main(", "48"], capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-800:]
    expect = run(native_runner, art, "--prompt", "def main(", "--max-new-tokens", "48").stdout
    assert proc.stdout == expect.decode("utf-8", errors="replace").encode()
    checks = dict(line.split(": ", 1) for line in proc.stderr.decode().splitlines() if ": " in line and not line.startswith("I "))
    assert checks["streamed-equals-result"] == "true" and checks["second-run-equal"] == "true"
    assert checks["prefill-then-decode"] == "true" and checks["closed-raises"] == "this SeqedgeModel is closed"
    assert "cannot read" in checks["missing-raises"] and "does-not-exist/manifest.json" in checks["missing-raises"]
    # the code generated for one artifact refuses another whose interface differs (a Mamba's state)
    proc = subprocess.run([*cmd, str(artifacts["mamba-fp32"]), "x", "4"], capture_output=True, timeout=300)
    assert proc.returncode != 0 and b"not the artifact this code was generated for" in proc.stderr


@ARM64
def test_bench_adb_drives_the_arm64_bundle_under_qemu(artifacts, arm_runner, native_runner, tmp_path, monkeypatch):
    root = tmp_path / "device"
    root.mkdir()
    monkeypatch.setenv("SEQEDGE_ADB", str(FAKE_ADB))
    monkeypatch.setenv("FAKE_ADB_ROOT", str(root))
    monkeypatch.setenv("FAKE_ADB_SERIALS", "arm64-emulated")
    monkeypatch.setenv("FAKE_ADB_ARCH", "aarch64")
    monkeypatch.setenv("FAKE_ADB_EMULATOR", " ".join(ARM.emulator))
    art = artifacts["lstm-int4"]
    res = bench(BenchPlan([str(art)], device="pixel8", runtime="executorch", prompt_lengths=[8, 32], decode_tokens=8,
                          adb="arm64-emulated", runner=arm_runner, host=False))
    dev = [r for r in res.records if r.kind == "measured-device"]
    assert {(r.metric, r.at) for r in dev} >= {("prefill_tok_s", 8), ("decode_tok_s", 32)}
    assert all(r.value > 0 and r.inputs["transport"] == "adb:arm64-emulated" for r in dev)
    pushed = (root / "seqedge" / "bin")
    assert {p.name for p in pushed.iterdir()} == {p.name for p in arm_runner.parent.iterdir()}
    with pytest.raises(BadPathError, match="built for x86_64, not for the device's aarch64"):
        bench(BenchPlan([str(art)], device="pixel8", runtime="executorch", prompt_lengths=[8], adb="arm64-emulated",
                        runner=native_runner, host=False))


def test_bad_inputs(artifacts, tmp_path):
    torch.manual_seed(0)
    onnx_artifact = tmp_path / "onnx"
    export(build_model("gru", "tiny").eval(), ExportPlan(out=onnx_artifact, format="onnx", max_len=32, verify=False))
    with pytest.raises(UnknownNameError, match="unknown app target 'windows'"):
        package(PackagePlan(artifact=artifacts["lstm-fp32"], target="windows", out=tmp_path / "w"))
    with pytest.raises(UnsupportedError, match="app packages embed ExecuTorch programs"):
        package(PackagePlan(artifact=onnx_artifact, target="android", out=tmp_path / "o"))
    assert not (tmp_path / "o").exists()
    tampered = tmp_path / "tampered"
    shutil.copytree(artifacts["lstm-fp32"], tampered)
    with open(tampered / "model.pte", "ab") as f:
        f.write(b"\0")
    with pytest.raises(SeqedgeError, match="sha256"):
        package(PackagePlan(artifact=tampered, target="ios", out=tmp_path / "t"))
    assert not (tmp_path / "t").exists() and not list(tmp_path.glob(".t.*"))
    with pytest.raises(UnknownNameError, match="unknown runner target 'riscv64'"):
        build_runner(tmp_path / "r", target="riscv64")
    # a wheel for another machine is refused before cmake runs: its libraries are checked first
    import executorch

    x86 = Path(executorch.__path__[0])
    wheel = tmp_path / "executorch-1.5.1-cp311-cp311-manylinux_2_28_aarch64.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(x86 / "lib" / "libexecutorch.so", "executorch/lib/libexecutorch.so")
        z.write(x86 / "lib" / "cmake" / "executorch" / "executorch-config.cmake",
                "executorch/lib/cmake/executorch/executorch-config.cmake")
        z.writestr("../escape.txt", "no")  # never extracted: outside executorch/{lib,include,share}
    with pytest.raises(BadPathError, match="is built for x86-64, not for aarch64-linux-gnu"):
        build_runner(tmp_path / "r", target=ARM.name, executorch_wheel=wheel)
    assert not (tmp_path / "r").exists() and not list(CACHE.rglob("escape.txt"))
    r = CliRunner().invoke(app, ["build-runner", "--out", str(tmp_path / "r"), "--target", ARM.name,
                                 "--executorch-wheel", str(tmp_path)])
    assert r.exit_code == 2 and "is not a wheel" in r.output
