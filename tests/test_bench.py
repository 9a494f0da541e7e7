"""`seqedge bench`: the calibrated projection (against every published point), projections from a config
alone, host measurements of real artifacts, the adb path driven through a stand-in `adb` that really runs
the native runner, outputs (JSON/CSV/PNG) and bad inputs."""

import csv
import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from seqedge.bench.records import KINDS
from seqedge.bench.roofline import calibration, calibration_errors, hardware, project, published
from seqedge.bench.run import BenchPlan, _clock_ratio, bench
from seqedge.bench.shape import ModelShape, weight_bits
from seqedge.checkpoint import save_checkpoint
from seqedge.cli.app import app
from seqedge.errors import BadInputError, SeqedgeError, UnknownNameError, UnsupportedError
from seqedge.exporters import ExportPlan, export
from seqedge.models import FAMILIES, build_model
from seqedge.profiles import ProfileError, load_profile

SHARED_CONFIGS = Path(__file__).resolve().parents[1] / "seqedge" / "bench" / "data" / "configs"
FAKE_ADB = Path(__file__).with_name("fake_adb.py")


def test_calibration_error_on_every_published_point_is_within_35_percent():
    rows = calibration_errors()
    points = published()["points"]
    assert {r["id"] for r in rows} == {p["id"] for p in points}
    assert len(rows) == len(points) + sum(1 for p in points if p.get("prefill_tok_s"))
    for r in rows:
        assert abs(r["error"]) <= 0.35, r


def test_roofline_terms_follow_the_model():
    cal = calibration()["cpu"]
    hw = hardware(load_profile("pixel8"), "cpu")
    llama, mamba = (ModelShape.of_config({"family": f, **FAMILIES[f].presets[p]})
                    for f, p in (("transformer", "llama-135m"), ("mamba", "mamba-130m")))
    with torch.device("meta"):
        assert llama.parameters == build_model("transformer", "llama-135m").num_parameters()
    dec = {c: project(llama, "decode", 32, "fp32", hw, cal, context=c) for c in (128, 2048)}
    scan = {c: project(mamba, "decode", 32, "fp32", hw, cal, context=c) for c in (128, 2048)}
    assert dec[2048].seconds > 1.05 * dec[128].seconds  # attention reads a growing KV cache
    assert scan[2048].seconds == pytest.approx(scan[128].seconds)  # a scan's state does not grow
    assert dec[128].bound == "memory" and project(llama, "prefill", 32, "fp32", hw, cal, tokens=512).bound == "compute"
    q4 = project(llama, "decode", weight_bits("int4", 32), "int4", hw, cal, context=128)
    assert 3.0 < q4.tok_s / dec[128].tok_s < 6.4  # 32 -> 5 bits per weight, embedding row and norms aside


def test_projection_from_a_config_alone():
    res = bench(BenchPlan([str(SHARED_CONFIGS / "llama-3.2-1b.json")], device="galaxy-s24", quant="int4",
                          prompt_lengths=[128, 1024, 4096]))
    assert {r.kind for r in res.records} == {"projected"}
    decode = sorted((r.at, r.value) for r in res.records if r.metric == "decode_tok_s")
    assert [c for c, _ in decode] == [128, 1024, 4096]
    assert decode[0][1] > decode[-1][1] > 10  # slower with context, still tens of tok/s for a 1B int4 model
    text = "\n".join(res.explain())
    assert "memory-bound" in text and "compute-bound" in text and "calibration: published" in text


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("b") / "tiny-tf"
    export(build_model("transformer", "tiny").eval(), ExportPlan(out=out, verify_steps=8, eval_bytes=64))
    return out


def test_artifact_is_measured_on_host_and_projected_for_the_device(onnx_artifact, tmp_path):
    cli = CliRunner()
    r = cli.invoke(app, ["bench", str(onnx_artifact), "--device", "pixel8", "--prompt-lengths", "8,32",
                         "--decode-tokens", "8", "--json", str(tmp_path / "b.json"), "--csv", str(tmp_path / "b.csv"),
                         "--plot", str(tmp_path / "b.png")])
    assert r.exit_code == 0, r.output
    assert "measured-host" in r.output and "projected" in r.output and "decode tok/s" in r.output
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["device"] == "pixel8" and data["targets"][0]["runtime"] == "onnxruntime"
    kinds = {rec["kind"] for rec in data["records"]}
    assert kinds == {"measured-host", "projected"}
    for rec in data["records"]:
        assert set(rec) == {"target", "kind", "metric", "value", "unit", "inputs"} and rec["kind"] in KINDS
        assert rec["value"] > 0
    host = {(rec["metric"], rec["inputs"].get("prompt_tokens", rec["inputs"].get("context"))): rec["value"]
            for rec in data["records"] if rec["kind"] == "measured-host"}
    assert {("prefill_tok_s", 8), ("prefill_tok_s", 32), ("decode_tok_s", 8), ("decode_ms_p90", 32),
            ("ttft_ms", 8), ("peak_rss_mb", None), ("size_mb", None)} <= set(host)
    assert host[("decode_ms_p90", 32)] >= host[("decode_ms_p50", 32)]
    rows = list(csv.DictReader((tmp_path / "b.csv").open()))
    assert len(rows) == len(data["records"]) and {row["kind"] for row in rows} == kinds
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_is_exported_as_the_device_selects(tmp_path):
    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model("mamba", "tiny"), tmp_path / "ck")
    res = bench(BenchPlan([str(ckpt)], device="raspberry-pi5", runtime="onnxruntime", prompt_lengths=[16],
                          decode_tokens=4))
    t = res.targets[0]
    assert t.candidate.runtime == "onnxruntime" and t.host_ratio is not None and t.host_overhead_ms >= 0
    projected = [r for r in res.records if r.kind == "projected" and r.metric == "decode_ms_p50"]
    assert projected and all(r.inputs["overhead_ms"] == t.overhead_ms for r in projected)
    assert t.overhead_ms == pytest.approx(t.host_overhead_ms * _clock_ratio(load_profile("raspberry-pi5")), abs=1e-3)
    host = [r for r in res.records if r.kind == "measured-host"]
    assert host and all(r.inputs["quant"] == t.recipe for r in host if "quant" in r.inputs)
    assert not list(tmp_path.glob("seqedge-bench-*"))


def test_compare_targets_side_by_side(tmp_path):
    cli = CliRunner()
    r = cli.invoke(app, ["bench", "mamba-130m", "llama-135m", "--compare", "--no-host", "--device", "raspberry-pi5",
                         "--prompt-lengths", "128,1024,4096", "--plot", str(tmp_path / "c.png")])
    assert r.exit_code == 0, r.output
    assert "mamba/mamba-130m" in r.output and "transformer/llama-135m" in r.output
    assert (tmp_path / "c.png").stat().st_size > 10_000


def test_adb_path_through_a_stand_in_device(native_runner, tmp_path, monkeypatch):
    torch.manual_seed(0)
    art = tmp_path / "pte"
    export(build_model("gru", "tiny").eval(), ExportPlan(out=art, format="executorch", max_len=64, verify_steps=4,
                                                          eval_bytes=32))
    root = tmp_path / "device"
    root.mkdir()
    monkeypatch.setenv("SEQEDGE_ADB", str(FAKE_ADB))
    monkeypatch.setenv("FAKE_ADB_ROOT", str(root))
    monkeypatch.setenv("FAKE_ADB_SERIALS", "emulator-5554")
    res = bench(BenchPlan([str(art)], device="pixel8", runtime="executorch", prompt_lengths=[8, 32], decode_tokens=8,
                          adb="emulator-5554", runner=native_runner, host=False))
    dev = [r for r in res.records if r.kind == "measured-device"]
    assert {(r.metric, r.at) for r in dev} >= {("prefill_tok_s", 8), ("decode_tok_s", 32), ("ttft_ms", 32)}
    assert all(r.value > 0 and r.inputs["transport"] == "adb:emulator-5554" for r in dev)
    calls = (root / "calls.log").read_text()
    assert "push" in calls and "--prompt-file" in calls and (root / "seqedge" / "bin" / "seqedge_runner").is_file()
    with pytest.raises(SeqedgeError, match="no device 'R58N' attached over adb"):
        bench(BenchPlan([str(art)], device="pixel8", runtime="executorch", prompt_lengths=[8], adb="R58N",
                        runner=native_runner, host=False))
    monkeypatch.delenv("SEQEDGE_ADB")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(UnsupportedError, match="adb is not installed"):
        bench(BenchPlan([str(art)], device="pixel8", runtime="executorch", prompt_lengths=[8], adb="x",
                        runner=native_runner, host=False))


def test_bad_inputs(onnx_artifact, tmp_path):
    with pytest.raises(UnknownNameError, match="unknown device 'pixel9'") as e:
        bench(BenchPlan(["llama-135m"], device="pixel9", host=False))
    assert "pixel8" in e.value.hint and "raspberry-pi5" in e.value.hint
    bad = tmp_path / "bad.toml"
    bad.write_text((Path(load_profile("pixel8").path)).read_text().replace("memory_bandwidth_gbs", "#"))
    with pytest.raises(ProfileError, match="memory_bandwidth_gbs"):
        bench(BenchPlan(["llama-135m"], device=str(bad), host=False))
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    (tmp_path / "empty").mkdir()
    for target in (tmp_path / "notes.txt", tmp_path / "other.json", tmp_path / "empty", "mamba/huge"):
        with pytest.raises(BadInputError, match="TARGET .* is (not a benchmark target|a JSON file but not a model)"):
            bench(BenchPlan([str(target)], device="pixel8", host=False))
    with pytest.raises(BadInputError, match=r"prompt length 4096 \(\+10 decode tokens\) exceeds tiny-tf's maximum 512"):
        bench(BenchPlan([str(onnx_artifact)], device="pixel8", prompt_lengths=[64, 4096], decode_tokens=8))
    r = CliRunner().invoke(app, ["bench", "llama-135m", "mamba-130m", "--device", "pixel8"])
    assert r.exit_code == 2 and "without --compare" in r.output
    r = CliRunner().invoke(app, ["bench", "llama-135m", "--device", "pixel8", "--prompt-lengths", "a,b"])
    assert r.exit_code == 2 and "not a comma-separated list" in r.output
    assert not os.listdir(tmp_path / "empty")
