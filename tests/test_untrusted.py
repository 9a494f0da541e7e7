"""Every input is untrusted: artifacts, checkpoint configs, device profiles and CLI values.

Each attack the trust model (README "Security") answers, on real files, real runtimes and real
subprocesses; then hypothesis fuzzing of manifest.json, config.json, profile TOML and numeric options
(>= 500 generated cases each; `benchmarks/fuzz.py` runs more), asserting for every case: exit code 0 or
2, no traceback, no file opened outside the given folders (an audit hook sees every `open` and
`subprocess.Popen`), nothing written or half-written, and memory bounded.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from seqedge.checkpoint import save_checkpoint
from seqedge.cli.app import app
from seqedge.errors import UnsupportedError
from seqedge.exporters import ExportPlan, export
from seqedge.models import build_model
from seqedge.profiles import load_profile

EXAMPLES = int(os.environ.get("SEQEDGE_FUZZ_EXAMPLES", "300"))  # the suite's budget; benchmarks/fuzz.py runs 5000
REPORT = os.environ.get("SEQEDGE_FUZZ_REPORT")  # benchmarks/fuzz.py: where to write the outcome counts
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
OUTCOMES: dict[str, Counter] = {}
cli = CliRunner()
CACHE = Path(os.environ.get("SEQEDGE_CACHE", Path.home() / ".cache" / "seqedge"))


# --- what a command touched: an audit hook (sys.addaudithook) records opens and processes ---------------------

_events: list | None = None
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _hook(event, args):
    if _events is not None and event in ("open", "subprocess.Popen", "os.system", "os.posix_spawn", "ctypes.dlopen"):
        _events.append((event, args))


sys.addaudithook(_hook)  # stays for the process; inert unless a test is watching


@contextlib.contextmanager
def watching():
    global _events
    _events = []
    try:
        yield _events
    finally:
        _events = None


def _written(args) -> bool:
    path, mode, flags = (list(args) + [None, None, None])[:3]
    return bool((isinstance(mode, str) and any(c in mode for c in "wax+")) or
                (isinstance(flags, int) and flags & WRITE_FLAGS))


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in folder.rglob("*")}


def invoke(args: list, sandbox: Path, outside: Path, what: str, allow_writes: tuple[Path, ...] = ()) -> object:
    """Run one command in-process under the audit hook and check the trust model held; count the outcome."""
    before = snapshot(sandbox)
    with watching() as events:
        r = cli.invoke(app, [str(a) for a in args])
    out = OUTCOMES.setdefault(what, Counter())
    out["tried"] += 1
    crashed = r.exit_code not in (0, 2) or "Traceback" in r.output
    opened = [str(a[0]) for e, a in events if e == "open" and isinstance(a[0], (str, bytes, os.PathLike))]
    outside_reads = [p for p in opened if os.fsdecode(p).startswith(str(outside))]
    allowed = (*allow_writes, CACHE, "/dev/null")  # seqedge's private cache (host measurements, logs) is its own
    writes = [str(a[0]) for e, a in events if e == "open" and _written(a) and isinstance(a[0], (str, os.PathLike))
              and not any(os.fsdecode(a[0]).startswith(str(w)) for w in allowed)]
    spawned = [a for e, a in events if e != "open" and "ctypes" not in e and str(sandbox) in str(a)]
    changed = snapshot(sandbox) != before
    out["crashed"] += crashed
    out["read outside"] += bool(outside_reads)
    out["wrote"] += bool(writes) or changed
    out["ran something it named"] += bool(spawned)
    out["exit 0"] += r.exit_code == 0
    out["exit 2"] += r.exit_code == 2
    assert not crashed, (args, r.exit_code, r.output[-800:])
    assert not outside_reads, (args, outside_reads)
    assert not writes and not changed, (args, writes)
    assert not spawned, (args, spawned)
    if r.exit_code == 2:
        assert r.output.lstrip("\n").startswith("error: ") and r.output.count("\nhint: ") <= 1, r.output
    return r


@pytest.fixture(scope="module", autouse=True)
def _report():
    import functools

    import typer.testing

    # CliRunner rebuilds the click command from the typer app on every call (~20 ms); thousands of fuzz cases
    # share one (the app does not change)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(typer.testing, "_get_command", functools.cache(typer.testing._get_command))
        yield
    if REPORT:
        Path(REPORT).write_text(json.dumps({k: dict(v) for k, v in OUTCOMES.items()}, indent=2))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A sandbox holding a real tiny ONNX artifact and checkpoint, and beside it an `outside` folder with a
    secret nothing may read."""
    root = tmp_path_factory.mktemp("untrusted")
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret")
    sandbox = root / "sandbox"
    sandbox.mkdir()
    torch.manual_seed(0)
    model = build_model("transformer", "tiny").eval()
    export(model, ExportPlan(out=sandbox / "art", verify_steps=2, eval_bytes=32))
    save_checkpoint(model, sandbox / "ck")
    torch.manual_seed(0)
    export(build_model("gru", "tiny").eval(), ExportPlan(out=sandbox / "pte", format="executorch", max_len=32,
                                                          verify_steps=2, eval_bytes=32))
    return {"root": root, "outside": outside, "sandbox": sandbox, "art": sandbox / "art", "ck": sandbox / "ck",
            "pte": sandbox / "pte"}


def manifest_of(art: Path) -> dict:
    return json.loads((art / "manifest.json").read_text())


def copy_artifact(world, name: str, manifest: dict | None = None) -> Path:
    """A copy of the artifact (files hard-linked) with `manifest` as its manifest.json."""
    dst = world["sandbox"] / name
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir()
    for p in world["art"].iterdir():
        if p.name != "manifest.json":
            os.link(p, dst / p.name)
    (dst / "manifest.json").write_text(json.dumps(manifest if manifest is not None else manifest_of(world["art"])))
    return dst


def secret_digest(world) -> str:
    import hashlib

    return hashlib.sha256((world["outside"] / "secret").read_bytes()).hexdigest()


# --- an artifact never runs code -----------------------------------------------------------------------------


def test_manifest_source_is_never_imported(world):
    m = manifest_of(world["art"])
    art = copy_artifact(world, "user-source", {**m, "source": {"kind": "user", "model": "os:abort"}})
    r = invoke(["verify", art], world["sandbox"], world["outside"], "cases")
    assert r.exit_code == 2 and "does not import" in r.output and "--model os:abort" in r.output


def test_native_library_loads_only_with_its_recorded_digest(tmp_path, monkeypatch):
    import seqedge.native as native

    monkeypatch.setattr(native, "CACHE", tmp_path / "cache" / "native")
    lib = native.CACHE / "build" / "libseqedge_kernels.so"
    lib.parent.mkdir(parents=True, mode=0o700)
    (tmp_path / "cache").chmod(0o700)
    native.CACHE.chmod(0o700)
    lib.write_bytes(b"\x7fELF built by seqedge")
    native._digest_file(lib).write_text(native.sha256_file(lib) + "\n")
    assert native.verified_library(lib) == lib
    lib.write_bytes(b"\x7fELF planted by someone else")  # a library swapped in after the build
    with pytest.raises(UnsupportedError, match="does not match the sha256 recorded when it was built"):
        native.verified_library(lib)
    lib.write_bytes(b"\x7fELF built by seqedge")
    lib.parent.chmod(0o777)  # a cache folder others could write to
    with pytest.raises(UnsupportedError, match="writable by others"):
        native.verified_library(lib)


# --- paths stay inside the folder ----------------------------------------------------------------------------


@pytest.mark.parametrize("files,graphs,needle", [
    ({"../../outside/secret": None}, None, "files.../../outside/secret"),
    ({"/ABS/outside/secret": None}, None, "files./ABS/outside/secret"),
    ({}, {"prefill": "/ABS/outside/secret"}, "graphs.prefill"),
    (None, {"prefill": "../outside/secret"}, "graphs.prefill"),
])
def test_names_in_a_manifest_never_leave_the_folder(world, files, graphs, needle):
    m = manifest_of(world["art"])
    fix = lambda s: s.replace("/ABS/outside", str(world["outside"]))  # noqa: E731
    if files is not None:
        m["files"] = {fix(k): secret_digest(world) for k in files} | ({} if not files else m["files"])
    if graphs is not None:
        m["graphs"] = {k: fix(v) for k, v in graphs.items()}
    art = copy_artifact(world, "escape", m)
    for cmd in (["inspect", art], ["generate", art, "--max-new-tokens", "2"], ["verify", art, "--steps", "1"]):
        r = invoke(cmd, world["sandbox"], world["outside"], "cases")
        assert r.exit_code == 2 and fix(needle) in r.output, r.output


def test_an_absolute_name_tells_nothing_about_the_file(world):
    """A missing and an existing absolute path get the same answer: the name is refused before any stat."""
    m = manifest_of(world["art"])
    answers = []
    for target in (world["outside"] / "secret", world["outside"] / "nothing-here"):
        art = copy_artifact(world, "oracle", {**m, "files": {**m["files"], str(target): "0" * 64}})
        r = invoke(["inspect", art], world["sandbox"], world["outside"], "cases")
        answers.append(r.output.split(", got")[0].replace(str(target), "PATH"))  # the same refusal, by name
    assert answers[0] == answers[1], answers


def test_symlinks_and_unlisted_files_are_refused(world):
    art = copy_artifact(world, "linked")
    os.unlink(art / "model.onnx")
    os.symlink(world["outside"] / "secret", art / "model.onnx")  # listed name, but leads out of the folder
    r = invoke(["inspect", art], world["sandbox"], world["outside"], "cases")
    assert r.exit_code == 2 and "leads outside the folder" in r.output
    art = copy_artifact(world, "extra")
    (art / "tokenizer.json").write_text("{}")  # a file nobody hashed: never read, the artifact is refused
    r = invoke(["generate", art, "--max-new-tokens", "2"], world["sandbox"], world["outside"], "cases")
    assert r.exit_code == 2 and "'tokenizer.json', which its manifest does not list" in r.output


# --- resources are bounded before anything is read or allocated ----------------------------------------------


def _real_cli(*args, timeout=120, env=None):
    return subprocess.run([sys.executable, "-m", "seqedge", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_special_files_are_refused_by_kind_without_blocking(world, tmp_path):
    fifo_art = copy_artifact(world, "fifo")
    (fifo_art / "manifest.json").unlink()
    os.mkfifo(fifo_art / "manifest.json")  # opening it for reading would block for ever
    zero_art = copy_artifact(world, "zero")
    (zero_art / "manifest.json").unlink()
    os.symlink("/dev/zero", zero_art / "manifest.json")  # reading it would grow without end
    ck = tmp_path / "ck"
    shutil.copytree(world["ck"], ck)
    (ck / "config.json").unlink()
    os.mkfifo(ck / "config.json")
    fifo_data = tmp_path / "corpus.fifo"
    os.mkfifo(fifo_data)
    for args, needle in (
        (["inspect", fifo_art], "is a FIFO, not a regular file"),
        (["inspect", zero_art], "is a character device, not a regular file"),
        (["generate", ck], "is a FIFO, not a regular file"),
        (["train", "--data", fifo_data, "--out", tmp_path / "t", "--steps", "1"], "is not a file or a folder"),
        (["devices", "show", "/dev/zero"], "is a character device"),
    ):
        r = _real_cli(*args, timeout=60)  # a real process: a hang would be a timeout, not a passing test
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def test_sizes_are_refused_before_allocation(world, tmp_path):
    m = manifest_of(world["art"])
    m["state"][0]["shape"] = [1, 4096, 1 << 20, 64]  # 1 TiB of KV cache
    art = copy_artifact(world, "huge-state", m)
    r = invoke(["generate", art], world["sandbox"], world["outside"], "cases")
    assert r.exit_code == 2 and "GiB, more than the" in r.output and "its state" in r.output
    ck = tmp_path / "ck"
    shutil.copytree(world["ck"], ck)
    cfg = json.loads((ck / "config.json").read_text())
    for change, needle in (({"hidden_size": 10**9}, "hidden_size must be an integer in [1, 16777216]"),
                           ({"hidden_size": 1 << 16, "intermediate_size": 1 << 20}, "GiB, more than the")):
        (ck / "config.json").write_text(json.dumps({**cfg, **change}))
        r = invoke(["generate", ck], world["sandbox"], world["outside"], "cases")
        assert r.exit_code == 2 and needle in r.output, r.output
    small = invoke(["--max-memory", "1M", "generate", world["ck"]], world["sandbox"], world["outside"], "cases")
    assert small.exit_code == 2 and "(--max-memory)" in small.output  # the ceiling can be lowered


def test_select_and_projections_build_shapes_not_models(world):
    """A config whose fp32 weights would not fit this machine is still ranked and projected: shapes only."""
    cfg = json.loads((world["ck"] / "config.json").read_text())
    big = world["root"] / "big-config"
    big.mkdir(exist_ok=True)
    (big / "config.json").write_text(json.dumps({**cfg, "hidden_size": 16384, "intermediate_size": 65536,
                                                 "num_hidden_layers": 96, "num_attention_heads": 128,
                                                 "num_key_value_heads": 8, "vocab_size": 128256}))
    r = cli.invoke(app, ["--max-memory", "1G", "select", str(big), "--device", "host", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["candidates"]


# --- one line, exit 2, right answers -------------------------------------------------------------------------


@pytest.mark.parametrize("change,needle", [
    (lambda m: m.update(files=[]), "files: must be an object"),
    (lambda m: m.update(ops=None), "ops: must be a list"),
    (lambda m: m.pop("graphs"), "graphs: must be present"),
    (lambda m: m["state"][0].update(dtype="__class__"), "state[0].dtype: must be one of float32"),
    (lambda m: m["outputs"][0]["shape"].__setitem__(-1, 0), "outputs[0].shape[2]: must be a positive integer"),
    (lambda m: m.update(native_kernels=["../../evil.so"]), "native_kernels[0]"),
    (lambda m: m.update(max_seq_len=-1), "max_seq_len"),
])
def test_bad_manifests_are_one_line(world, change, needle):
    m = manifest_of(world["art"])
    change(m)
    art = copy_artifact(world, "bad", m)
    for cmd in (["inspect", art], ["generate", art], ["verify", art], ["bench", art, "--no-host"]):
        r = invoke(cmd, world["sandbox"], world["outside"], "cases")
        assert r.exit_code == 2 and needle in r.output, (cmd, r.output)


@pytest.mark.parametrize("change,needle", [
    ({"num_attention_heads": 0}, "num_attention_heads must be an integer in [1,"),
    ({"rope_theta": -1}, "rope_theta must be a positive finite number"),
    ({"hidden_size": "64"}, "hidden_size must be an integer"),
    ({"num_hidden_layers": 10**6}, "num_hidden_layers must be an integer in [1, 1024]"),
    ({"tie_word_embeddings": "yes"}, "tie_word_embeddings must be true or false"),
])
def test_bad_configs_are_one_line(world, tmp_path, change, needle):
    ck = tmp_path / "ck"
    shutil.copytree(world["ck"], ck)
    (ck / "config.json").write_text(json.dumps({**json.loads((ck / "config.json").read_text()), **change}))
    for cmd in (["generate", ck], ["select", ck], ["export", ck, "--out", tmp_path / "o"]):
        r = invoke(cmd, world["sandbox"], world["outside"], "cases", allow_writes=(tmp_path,))
        assert r.exit_code == 2 and needle in r.output, (cmd, r.output)
    assert not (tmp_path / "o").exists()


def test_profiles_and_output_paths_fail_before_work(world, tmp_path):
    text = Path(load_profile("pixel8").path).read_text()
    zero = tmp_path / "zero.toml"
    zero.write_text(re.sub(r"fp32 = [0-9.]+", "fp32 = 0", text, count=1))
    for args, needle in (
        (["bench", "transformer/tiny", "--device", zero, "--no-host"], "a positive number (GFLOP/s or GOP/s)"),
        (["bench", "transformer/tiny", "--device", "/bin/ls", "--no-host"], "is not valid TOML"),
        (["bench", "transformer/tiny", "--device", "pixel8", "--csv", tmp_path], "is a folder"),
        (["bench", "transformer/tiny", "--device", "pixel8", "--json", tmp_path / "no" / "r.json"], "does not exist"),
    ):
        r = invoke(args, world["sandbox"], world["outside"], "cases")
        assert r.exit_code == 2 and needle in r.output and "measured-host" not in r.output, (args, r.output)


def test_verify_with_zero_steps_checks_the_prefill(world):
    r = invoke(["verify", world["art"], "--steps", "0", "--against", world["ck"]], world["sandbox"], world["outside"],
               "cases")
    assert r.exit_code == 0 and "0 decode steps" in r.output, r.output


def test_missing_and_wrong_kind_paths_are_told_apart(world, tmp_path):
    (tmp_path / "a-file").write_text("x")
    r1 = invoke(["inspect", tmp_path / "nothing"], world["sandbox"], world["outside"], "cases")
    r2 = invoke(["inspect", tmp_path / "a-file"], world["sandbox"], world["outside"], "cases")
    assert "does not exist" in r1.output and "is not a folder" in r2.output


def test_usage_errors_are_one_line_too(world):
    for args in (["generate", world["art"], "--threads", "many"], ["no-such-command"], ["bench", "--nope"]):
        r = invoke(args, world["sandbox"], world["outside"], "cases")
        assert r.exit_code == 2 and r.output.count("\n") == 2 and "╭" not in r.output, r.output


# --- interruption ----------------------------------------------------------------------------------------------


def _wait_for(pattern_dir: Path, prefix: str, timeout: float = 120) -> Path:
    t0 = time.time()
    while time.time() - t0 < timeout:
        found = [p for p in pattern_dir.iterdir() if p.name.startswith(prefix)]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no {prefix}* in {pattern_dir}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_removes_the_temporary_folder(tmp_path, sig):
    # the child starts with every signal at its default: a suite started in the background (`cmd &` in a script)
    # hands its children SIGINT ignored, and a command that ignores Ctrl-C rightly finishes its work
    proc = subprocess.Popen([sys.executable, "-m", "seqedge", "export", "--family", "mamba", "--preset", "tiny",
                             "--out", str(tmp_path / "art")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL))
    _wait_for(tmp_path, ".art.tmp-")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err.decode(), err.decode()[-400:]
    assert list(tmp_path.iterdir()) == []  # no temporary folder, no half artifact


def test_a_killed_export_leaves_nothing_that_looks_complete_and_is_cleaned_next_time(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "seqedge", "export", "--family", "lstm", "--preset", "tiny",
                             "--out", str(tmp_path / "art")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tmp = _wait_for(tmp_path, ".art.tmp-")
    while not any(p.suffix == ".onnx" for p in tmp.iterdir()):  # the graph is written, verification runs
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert tmp.is_dir() and not (tmp / "manifest.json").exists()  # the manifest comes last, after parity
    r = _real_cli("export", "--family", "lstm", "--preset", "tiny", "--out", tmp_path / "art", "--no-verify")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]  # the stale folder of the dead process is gone


def test_out_may_not_replace_the_working_directory_or_the_input(world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(world["ck"], tmp_path / "models" / "ck")
    for out, needle in ((".", "is the working directory"), (tmp_path.parent, "is the working directory"),
                        (tmp_path / "models", "holds the input")):
        r = invoke(["export", tmp_path / "models" / "ck", "--out", out, "--force"], world["sandbox"],
                   world["outside"], "cases", allow_writes=(tmp_path,))
        assert r.exit_code == 2 and needle in r.output, r.output
    assert (tmp_path / "models" / "ck" / "config.json").is_file()


# --- fuzzing -------------------------------------------------------------------------------------------------

NASTY = ["", ".", "..", "../outside/secret", "/etc/passwd", "OUTSIDE/secret", "a/../../b", "model.onnx\x00",
         "__class__", "batch", "seq", "model.onnx", "manifest.json", "tokenizer.json", "x" * 300, "é", "NaN"]
scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.sampled_from([0, 1, -1, 2**31, 2**63, 10**9])
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12) | st.sampled_from(NASTY))
SHAPES = st.sampled_from([{}, [], [{}], {"x": 1}, [None], [[]], {"name": "x"}, [1, "batch"], [10**9] * 4])
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                      max_leaves=8)


def _paths(obj, prefix=()):
    """Every key path of a JSON value."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _at(obj, path):
    for k in path:
        obj = obj[k]
    return obj


@st.composite
def mutated(draw, base: dict, nasty_outside: str):
    """`base` with 1-3 of its values replaced (by any JSON value, a nasty name or a number at a boundary) or
    removed; sometimes the text is truncated instead."""
    obj = json.loads(json.dumps(base))
    donors = [_at(base, p) for p in _paths(base) if 0 < len(p) <= 3]
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(obj) if p]
        shallow = [p for p in paths if len(p) <= 2]  # half the time a top-level record: structure, not leaves
        path = draw(st.sampled_from(shallow if shallow and draw(st.booleans()) else paths))
        parent = obj
        for k in path[:-1]:
            parent = parent[k]
        if draw(st.integers(0, 5)) == 0 and isinstance(parent, dict):
            parent.pop(path[-1], None)
        else:
            # any JSON value, a structural oddity, or a value from elsewhere in the file (right type, wrong place)
            value = json.loads(json.dumps(draw(values | SHAPES | st.sampled_from(donors))))
            if isinstance(value, str):
                value = value.replace("OUTSIDE", nasty_outside)
            parent[path[-1]] = value
    text = json.dumps(obj, allow_nan=True)
    if draw(st.integers(0, 9)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    return text


def test_fuzzed_manifests(world):
    """An ONNX and an ExecuTorch artifact, each with fuzzed manifests, through inspect and generate."""
    arts = {"onnx": copy_artifact(world, "fuzz-onnx"), "executorch": world["sandbox"] / "fuzz-pte"}
    shutil.copytree(world["pte"], arts["executorch"])
    bases = {"onnx": manifest_of(world["art"]), "executorch": manifest_of(world["pte"])}

    @FUZZ
    @given(fmt=st.sampled_from(sorted(arts)), data=st.data())
    def case(fmt, data):
        text = data.draw(mutated(bases[fmt], str(world["outside"])))
        (arts[fmt] / "manifest.json").write_text(text)
        for cmd in (["inspect", arts[fmt]], ["generate", arts[fmt], "--max-new-tokens", "2", "--prompt", "ab"]):
            invoke(cmd, world["sandbox"], world["outside"], "manifest.json")

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    case()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 1 << 20  # KiB: under 1 GiB more at the peak
    seen = OUTCOMES["manifest.json"]
    assert seen["tried"] >= 2 * EXAMPLES and seen["exit 0"] and seen["exit 2"]  # some mutations are harmless


def test_fuzzed_configs(world, monkeypatch):
    base = json.loads((world["ck"] / "config.json").read_text())
    ck = world["sandbox"] / "fuzz-ck"
    shutil.copytree(world["ck"], ck, dirs_exist_ok=True)
    monkeypatch.setenv("SEQEDGE_MAX_MEMORY", "1G")  # bounded: whatever the config claims

    @FUZZ
    @given(text=mutated(base, str(world["outside"])))
    def case(text):
        (ck / "config.json").write_text(text)
        for cmd in (["select", ck, "--json"], ["generate", ck, "--max-new-tokens", "1", "--prompt", "a"]):
            invoke(cmd, world["sandbox"], world["outside"], "config.json")

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    case()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 2 << 20


def _toml(value) -> str:
    """TOML for a JSON-like value, all tables inline (None: dropped)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if -(2**63) <= value < 2**63 else json.dumps(str(value))
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value.encode("utf-8", "replace").decode("utf-8"))
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items() if v is not None) + "}"
    return '""'


def test_fuzzed_profiles(world):
    base = tomllib.loads(Path(load_profile("pixel8").path).read_text())
    path = world["sandbox"] / "fuzz.toml"

    @FUZZ
    @given(text=mutated(base, str(world["outside"])))
    def case(text):
        try:
            data = json.loads(text)
        except ValueError:
            body = text  # truncated JSON: not TOML either
        else:
            body = "\n".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in data.items() if v is not None) \
                if isinstance(data, dict) else _toml(data)
        path.write_text(body)
        for cmd in (["devices", "show", path, "--json"],  # selection projects with every peak and bandwidth
                    ["select", "--family", "transformer", "--preset", "tiny", "--device", path, "--json"]):
            invoke(cmd, world["sandbox"], world["outside"], "profile TOML")

    case()


OPTIONS = [  # (command before the option, option, command after): valid values stay cheap
    (["generate", "ART"], "--max-new-tokens", ["--prompt", "a"]),
    (["generate", "ART", "--max-new-tokens", "1"], "--threads", []),
    (["generate", "ART", "--max-new-tokens", "2"], "--temperature", []),
    (["bench", "transformer/tiny", "--no-host", "--device", "pixel8"], "--decode-tokens", []),
    (["bench", "transformer/tiny", "--no-host", "--device", "pixel8"], "--prompt-lengths", []),
    (["bench", "transformer/tiny", "--no-host", "--device", "pixel8"], "--threads", []),
    (["train", "--out", "CK"], "--steps", []),  # an existing --out: a valid value stops there, before training
    (["train", "--out", "CK"], "--minutes", []),
    (["train", "--out", "CK"], "--batch-size", []),
    (["train", "--out", "CK"], "--seq-len", []),
    (["export", "CK", "--out", "CK"], "--max-len", []),
    (["export", "CK", "--out", "CK"], "--threads", []),
    (["export", "CK", "--out", "CK"], "--jobs", []),
    (["export", "CK", "--out", "CK"], "--max-bpb-increase", []),
    (["export", "CK", "--out", "CK"], "--max-seq-len", []),
    (["verify", "ART", "--steps", "1"], "--threads", []),
]
numbers = (st.integers(-(2**70), 2**70) | st.sampled_from([0, 1, -1, 256, 257, 2**31, 2**63, 10**9])
           | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(["", "1e3", "0x10", "1,2", "-", "nan"]))


def test_fuzzed_numeric_options(world):
    @FUZZ
    @given(which=st.sampled_from(OPTIONS), value=numbers)
    def case(which, value):
        before, option, after = which
        sub = {"ART": str(world["art"]), "CK": str(world["ck"])}
        args = [sub.get(a, a) for a in before] + [option, str(value)] + after
        invoke(args, world["sandbox"], world["outside"], "numeric options")

    case()
