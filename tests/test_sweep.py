"""seqedge sweep: the matrix runs as real Ray tasks (a local Ray runtime the command starts, and a `ray start`
cluster), real exports, measurements and projections; the results folder, the content-addressed skip, --resume
after the driver is killed, and failing tasks reported without stopping the others."""

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seqedge.errors import BadInputError, SeqedgeError
from seqedge.exporters.artifact import read_manifest
from seqedge.sweep.spec import load_sweep

pytest.importorskip("ray")


def seqedge(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "seqedge", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def write_spec(folder: Path, text: str) -> Path:
    path = folder / "sweep.toml"
    path.write_text(text)
    return path


MATRIX = """
name = "matrix"
targets = ["transformer/tiny", "mamba/tiny"]
recipes = ["fp32", "int8", { recipe = "int4", group_size = 48 }]   # the last one is bad: its exports fail
formats = ["onnx"]
devices = ["pixel8", "raspberry-pi5"]
prompt_lengths = [16, 32]
decode_tokens = 4
"""


def test_sweep_runs_the_matrix_reports_failures_and_skips_what_is_done(tmp_path):
    spec = write_spec(tmp_path, MATRIX)
    out = tmp_path / "out"
    r = seqedge("sweep", spec, "--out", out)
    assert r.returncode == 1, r.stdout + r.stderr  # some tasks failed; the others finished
    assert "Traceback" not in r.stdout + r.stderr
    payload = json.loads((out / "records.json").read_text())
    tasks = payload["tasks"]
    by = lambda **kw: [t for t in tasks if all(t[k] == v for k, v in kw.items())]  # noqa: E731

    # the bad recipe: its two exports failed with the exporter's own one-line reason, their children were
    # skipped, and nothing else stopped
    failed = by(status="failed")
    assert {(t["kind"], t["recipe"]) for t in failed} == {("export", "int4-g48")} and len(failed) == 2
    assert all("group-size 48" in t["error"] for t in failed)
    assert all(t["status"] == "skipped" for t in tasks if t["recipe"] == "int4-g48" and t["kind"] != "export")
    assert "int4-g48" in r.stdout and "failed" in r.stdout
    good = [t for t in tasks if t["recipe"] != "int4-g48"]
    assert good and all(t["status"] == "done" for t in good)

    # every good export is an artifact in the folder, named by its task's key, and checks out as any artifact
    exports = by(kind="export", status="done")
    assert len(exports) == 4
    for t in exports:
        manifest = read_manifest(out / "artifacts" / t["key"])
        assert manifest["format"] == "onnx" and manifest["quant"]["recipe"] == t["recipe"]
        assert manifest["parity"]["steps"] > 0  # verified

    # records: measured here and projected per device, for every artifact, tagged with the sweep's coordinates
    recs = payload["records"]
    for t in exports:
        mine = [x for x in recs if x["artifact"] == t["key"]]
        assert {x["kind"] for x in mine} == {"measured-host", "projected"}
        assert {x["device"] for x in mine if x["kind"] == "projected"} == {"pixel8", "raspberry-pi5"}
        assert {x["inputs"]["context"] for x in mine if x["metric"] == "decode_tok_s"} == {16, 32}
        assert all(x["value"] > 0 for x in mine if x["metric"] == "decode_tok_s")
    # int8 is smaller than fp32 on both devices' projections, for both models
    for target in ("transformer/tiny", "mamba/tiny"):
        size = {x["recipe"]: x["value"] for x in recs if x["target"] == target and x["metric"] == "size_mb"
                and x["device"] == "pixel8"}
        assert size["int8"] < size["fp32"]
    csv_rows = (out / "records.csv").read_text().splitlines()
    assert csv_rows[0].startswith("kind,") and len(csv_rows) == len(recs) + 1

    # the summary: per device and target, select's choice and its reason, and the sweep's fastest artifact
    summary = payload["summary"]
    assert {(s["device"], s["target"]) for s in summary} == {(d, t) for d in ("pixel8", "raspberry-pi5")
                                                             for t in ("transformer/tiny", "mamba/tiny")}
    for s in summary:
        assert s["reason"] and s["choice"] != "none" and s["fastest"].startswith("onnx ")
    md = (out / "summary.md").read_text()
    assert "| pixel8 | mamba/tiny |" in md and "## Failed tasks" in md
    for name in ("pixel8", "raspberry-pi5", "host", "size_vs_accuracy"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a second run of the unchanged sweep runs nothing that is done: only the failed exports are tried again
    mtimes = {t["key"]: (out / "artifacts" / t["key"] / "manifest.json").stat().st_mtime_ns for t in exports}
    r2 = seqedge("sweep", spec, "--out", out)
    assert r2.returncode == 1
    run = json.loads((out / "state.json").read_text())["runs"][-1]
    assert (run["ran"], run["cached"], run["failed"]) == (2, len(good), 2), run
    assert all((out / "artifacts" / k / "manifest.json").stat().st_mtime_ns == m for k, m in mtimes.items())
    assert "done earlier (cached)" in r2.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_cluster(tmp_path):
    """A one-node Ray cluster started the way a user starts one (`ray start --head`), stopped afterwards."""
    ray = shutil.which("ray", path=str(Path(sys.executable).parent))
    port = _free_port()
    r = subprocess.run([ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus",
                        "2", "--include-dashboard=false", "--disable-usage-stats"], capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120)


def test_sweep_resumes_after_its_driver_is_killed_on_a_ray_cluster(tmp_path, ray_cluster):
    spec = write_spec(tmp_path, """
targets = ["mamba/tiny"]
recipes = ["fp32", "int8"]
devices = ["pixel8"]
prompt_lengths = [16]
decode_tokens = 4
measure = false
[adb.pixel8]                 # no node advertises this phone: its task fails at once instead of waiting forever
serial = "NOSUCHPHONE"
runner = "/nonexistent/seqedge_runner"
""")
    out = tmp_path / "out"
    driver = subprocess.Popen([sys.executable, "-m", "seqedge", "sweep", spec, "--out", out, "--ray", ray_cluster],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list((out / "artifacts").glob("[!.]*/manifest.json")):
        assert driver.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    first = [p.parent for p in (out / "artifacts").glob("[!.]*/manifest.json")]
    assert len(first) == 1, first
    before = {p.name for p in (out / "tasks").glob("*.json")}
    mtime = (first[0] / "manifest.json").stat().st_mtime_ns

    # the folder holds an unfinished sweep: refused without --resume, in one line
    r = seqedge("sweep", spec, "--out", out, "--ray", ray_cluster)
    assert r.returncode == 2 and "unfinished sweep" in r.stderr and "--resume" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr

    r = seqedge("sweep", spec, "--out", out, "--ray", ray_cluster, "--resume")
    assert r.returncode == 1, r.stdout + r.stderr  # the phone's task failed; the rest finished
    payload = json.loads((out / "records.json").read_text())
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "finished"
    tasks = {t["key"]: t for t in payload["tasks"]}
    assert len(tasks) == 2 * 3  # per recipe: export, projection, device measurement
    run = state["runs"][-1]
    assert run["cached"] == len({k for k in tasks if f"{k}.json" in before and tasks[k]["status"] == "done"}) >= 1
    assert run["ran"] == len(tasks) - run["cached"]
    assert (first[0] / "manifest.json").stat().st_mtime_ns == mtime  # the artifact made before the kill was kept
    device = [t for t in tasks.values() if t["kind"] == "device"]
    assert len(device) == 2 and all("adb:NOSUCHPHONE" in t["error"] for t in device)
    assert all(t["status"] == "done" for t in tasks.values() if t["kind"] != "device")


@pytest.mark.parametrize("text, needle", [
    ('targets = ["mamba/tiny"]\ndevices = ["pixel8"]\nrecipes = ["fp32"]\nbogus = 1', "unknown key(s) bogus"),
    ('targets = ["mamba/nosuch"]\ndevices = ["pixel8"]', "nosuch"),
    ('targets = ["nothing/here"]\ndevices = ["pixel8"]', "neither a folder"),
    ('targets = ["mamba/tiny"]\ndevices = ["nophone"]', "nophone"),
    ('targets = ["mamba/tiny"]\ndevices = ["pixel8"]\nformats = ["tflite"]', "tflite"),
    ('targets = ["mamba/tiny", "mamba/tiny"]\ndevices = ["pixel8"]', "twice"),
    ('targets = ["mamba/tiny"]\ndevices = ["pixel8"]\nrecipes = [{ recipe = "int4", group = 4 }]', "recipe table"),
    ('targets = ["mamba/tiny"]\ndevices = ["pixel8"]\nprompt_lengths = [0]', "prompt_lengths"),
    ('targets = ["mamba/tiny"]\ndevices = ["pixel8"]\n[adb.galaxy-s24]\nserial = "X"\nrunner = "r"', "adb.galaxy-s24"),
    ('targets = "mamba/tiny"', "non-empty list"),
    ('targets = [', "not valid TOML"),
])
def test_a_bad_sweep_file_is_refused_before_anything_runs(tmp_path, text, needle):
    spec = write_spec(tmp_path, text)
    with pytest.raises(SeqedgeError) as e:
        load_sweep(spec)
    assert needle in str(e.value)


def test_the_command_names_a_bad_sweep_file_in_one_line(tmp_path):
    spec = write_spec(tmp_path, 'targets = ["mamba/tiny"]\ndevices = ["pixel8"]\nthreads = "two"')
    r = seqedge("sweep", spec, "--out", tmp_path / "out")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "threads" in r.stderr
    assert not (tmp_path / "out").exists()


def test_sweep_names_the_install_command_when_ray_is_missing(monkeypatch):
    from seqedge.sweep import engine

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as without the package
    with pytest.raises(BadInputError) as e:
        engine._ray()
    assert "pip install" in e.value.hint and "seqedge[sweep]" in e.value.hint


def test_paths_in_a_sweep_file_are_relative_to_it(tmp_path, tiny_checkpoints, monkeypatch):
    folder = tmp_path / "models"
    shutil.copytree(tiny_checkpoints["lstm"], folder / "lstm")
    spec = write_spec(tmp_path, 'targets = ["models/lstm"]\ndevices = ["pixel8"]')
    monkeypatch.chdir("/")
    sweep = load_sweep(spec)
    assert sweep.targets[0].kind == "checkpoint" and sweep.targets[0].path == str(folder / "lstm")
