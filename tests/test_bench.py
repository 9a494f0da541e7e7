"""`seqedge bench`: the calibrated projection (every published point predicted by a fit that leaves it out),
projections from a config alone, host measurements of real artifacts in a child process, the projection for
this machine checked against a measurement on two shapes, projections independent of --threads, busy-machine
flags, the adb path driven through a stand-in `adb` that really runs the native runner, outputs
(JSON/CSV/PNG) and bad inputs."""

import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from seqedge.bench.overheads import runtime_overhead
from seqedge.bench.records import KINDS
from seqedge.bench.roofline import MIN_POINTS, calibration, calibration_errors, hardware, project, published
from seqedge.bench.run import BenchPlan, bench
from seqedge.bench.shape import ModelShape, weight_bits
from seqedge.checkpoint import save_checkpoint
from seqedge.cli.app import app
from seqedge.errors import BadInputError, BadPathError, SeqedgeError, UnknownNameError, UnsupportedError
from seqedge.exporters import ExportPlan, export
from seqedge.exporters.artifact import read_manifest
from seqedge.models import FAMILIES, build_model
from seqedge.profiles import ProfileError, load_profile

SHARED_CONFIGS = Path(__file__).resolve().parents[1] / "seqedge" / "bench" / "data" / "configs"
FAKE_ADB = Path(__file__).with_name("fake_adb.py")


def test_every_published_point_is_predicted_within_35_percent_by_a_fit_that_leaves_it_out():
    rows = calibration_errors()
    points = published()["points"]
    assert {r["id"] for r in rows} == {p["id"] for p in points}
    assert len(rows) == len(points) + sum(1 for p in points if p.get("prefill_tok_s"))
    cal = calibration()
    for r in rows:
        phase = "decode" if r["metric"] == "decode_tok_s" else "prefill"
        n = len(getattr(cal[r["class"]], f"{phase}_points"))
        assert r["calibrated"] == (n >= MIN_POINTS), r
        if r["calibrated"]:
            assert r["loo_error"] is not None and abs(r["loo_error"]) <= 0.35, r
        else:  # too few points: said so, never a 0 % error presented as a check
            assert "uncalibrated" in cal[r["class"]].source
    assert sum(r["calibrated"] for r in rows) >= 10  # the CPU and GPU decode fits rest on several points each


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


def test_a_step_that_fits_in_the_last_level_cache_reads_at_its_rate():
    """A profile's last-level cache (the host's: its size from sysfs and a copy over a buffer inside it) serves a
    step whose bytes fit in CACHE_SHARE of it: mamba-130m int4 (~80 MB) in a 300 MB cache is projected at the
    cache's rate; in a 32 MB one, and fp32 llama-135m (~540 MB) in either, at memory's."""
    import dataclasses

    from seqedge.bench.roofline import CACHE_SHARE

    cal, memory = calibration()["cpu"], hardware(load_profile("pixel8"), "cpu")
    small, large = (ModelShape.of_config({"family": f, **FAMILIES[f].presets[p]})
                    for f, p in (("mamba", "mamba-130m"), ("transformer", "llama-135m")))
    for cache_mb in (300.0, 32.0):
        hw = dataclasses.replace(memory, cache_mb=cache_mb, cache_bandwidth_gbs=3 * memory.bandwidth_gbs)
        q4, fp32 = (project(s, "decode", b, f, hw, cal, context=16)
                    for s, b, f in ((small, weight_bits("int4", 32), "int4"), (large, 32, "fp32")))
        plain = project(small, "decode", weight_bits("int4", 32), "int4", memory, cal, context=16)
        fits = q4.bytes <= CACHE_SHARE * cache_mb * 1e6
        assert fits == (cache_mb == 300.0) and fp32.bytes > CACHE_SHARE * cache_mb * 1e6
        assert q4.memory_s == pytest.approx(plain.memory_s / (3 if fits else 1))
        assert fp32.hardware["bandwidth_used"] == memory.bandwidth_gbs and "(memory)" in fp32.explain()
        assert ("300 MB last-level cache" in q4.explain()) == fits


def test_the_last_level_cache_is_read_from_sysfs(tmp_path):
    from seqedge.host import last_level_cache_mb

    for index, (kind, level, size) in enumerate([("Data", 1, "48K"), ("Instruction", 1, "32K"),
                                                 ("Unified", 2, "2048K"), ("Unified", 3, "300M"),
                                                 ("Instruction", 4, "1G")]):
        d = tmp_path / f"index{index}"
        d.mkdir()
        for name, value in (("type", kind), ("level", level), ("size", size)):
            (d / name).write_text(f"{value}\n")
    assert last_level_cache_mb(tmp_path) == 300.0
    (tmp_path / "index3" / "size").write_text("garbage\n")  # unreadable: the next level down
    assert last_level_cache_mb(tmp_path) == 2.0
    assert last_level_cache_mb(tmp_path / "missing") == 0.0


def test_projection_from_a_config_alone():
    res = bench(BenchPlan([str(SHARED_CONFIGS / "llama-3.2-1b.json")], device="galaxy-s24", quant="int4",
                          prompt_lengths=[128, 1024, 4096]))
    assert {r.kind for r in res.records} == {"projected"}
    decode = sorted((r.at, r.value) for r in res.records if r.metric == "decode_tok_s")
    assert [c for c, _ in decode] == [128, 1024, 4096]
    assert decode[0][1] > decode[-1][1] > 10  # slower with context, still tens of tok/s for a 1B int4 model
    text = "\n".join(res.explain())
    assert "memory-bound" in text and "compute-bound" in text and "decode: fitted on" in text
    projected = [r for r in res.records if r.metric == "decode_tok_s"]
    assert all("fitted on" in r.provenance and "per-call cost" in r.provenance for r in projected)


@pytest.mark.parametrize("quant, itemsize", [("fp32", 4), ("int4", 2)])
def test_projected_bytes_count_the_kv_caches_an_export_of_the_recipe_holds(quant, itemsize):
    """A quantized export keeps its KV caches in float16, an fp32 one in float32 (exporters/plan.py): the
    projection's bytes grow with context by that cache, not by a float32 one."""
    config = SHARED_CONFIGS / "llama-3.2-1b.json"
    res = bench(BenchPlan([str(config)], device="galaxy-s24", quant=quant, prompt_lengths=[128, 4096]))
    dec = {r.inputs["context"]: r.inputs for r in res.records if r.metric == "decode_tok_s"}
    shape = ModelShape.of_config(json.loads(config.read_text()))
    assert dec[128]["kv_itemsize"] == dec[4096]["kv_itemsize"] == itemsize
    assert dec[4096]["bytes"] - dec[128]["bytes"] == pytest.approx(shape.kv_bytes(4096 - 128, itemsize))


@pytest.mark.parametrize("fmt", ["executorch", "onnx"])
def test_lookup_tables_are_the_embedding_an_artifact_holds_apart_from_its_head(trained_exports, fmt):
    """A decode step reads one row of an embedding table, so the streaming limit leaves it out (peers.py): the
    bytes are read from the artifact's own program or graph. The tiny transformer's table is untied: ExecuTorch
    int4 holds it as 4-bit codes with a float32 scale per group (quant/executorch.py QuantizedEmbedding);
    onnxruntime as some form smaller than float32 and not nothing."""
    from seqedge.bench.lookup import lookup_table_bytes

    folder, manifest = trained_exports.get("transformer", fmt, "int4")
    cfg, group = manifest["config"], manifest["quant"]["group_size"]
    V, D = cfg["vocab_size"], cfg["hidden_size"]
    assert not cfg["tie_word_embeddings"]
    got = lookup_table_bytes(folder)
    if fmt == "executorch":
        assert got == V * D // 2 + V * (D // group) * 4
    else:
        assert 0 < got < V * D * 4
        assert got < sum(p.stat().st_size for p in folder.glob("*.onnx*"))


def test_a_tied_table_the_head_reads_whole_is_not_a_lookup_table(tmp_path):
    """The peers' shapes tie the embedding to the head: onnxruntime's int4 graph keeps one table, which the head
    streams every step (and the lookup reads through it), so nothing is left out."""
    from seqedge.bench.lookup import lookup_table_bytes

    torch.manual_seed(0)
    model = build_model("transformer", "tiny", tie_word_embeddings=True).eval()
    export(model, ExportPlan(out=tmp_path / "tied", format="onnx", quant="int4", max_len=64, verify=False))
    assert lookup_table_bytes(tmp_path / "tied") == 0


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
        assert set(rec) == {"target", "kind", "metric", "value", "unit", "inputs", "provenance"}
        assert rec["kind"] in KINDS and rec["value"] > 0 and rec["provenance"]
    host = {(rec["metric"], rec["inputs"].get("prompt_tokens", rec["inputs"].get("context"))): rec
            for rec in data["records"] if rec["kind"] == "measured-host"}
    assert {("prefill_tok_s", 8), ("prefill_tok_s", 32), ("decode_tok_s", 8), ("decode_ms_p90", 32),
            ("ttft_ms", 8), ("peak_rss_mb", None), ("runtime_rss_mb", None), ("size_mb", None)} <= set(host)
    p50, p90 = host[("decode_ms_p50", 32)], host[("decode_ms_p90", 32)]
    assert p90["value"] >= p50["value"] and p50["inputs"]["samples"] == 8
    state = p50["inputs"]["machine_state"]
    assert state["loadavg_1m_before"] >= 0 and state["cpu_mhz"] and state["others_busy_cores"] is not None
    peak = host[("peak_rss_mb", None)]
    assert "child process" in peak["provenance"] and peak["inputs"]["baseline_mb"] < peak["value"]
    assert not any(rec["metric"] == "decode_ms_p50" for rec in data["records"] if rec["kind"] == "projected")
    rows = list(csv.DictReader((tmp_path / "b.csv").open()))
    assert len(rows) == len(data["records"]) and {row["kind"] for row in rows} == kinds
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_is_exported_as_the_device_selects(tmp_path):
    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model("mamba", "tiny"), tmp_path / "ck")
    res = bench(BenchPlan([str(ckpt)], device="raspberry-pi5", runtime="onnxruntime", prompt_lengths=[16],
                          decode_tokens=4))
    t = res.targets[0]
    assert t.candidate.runtime == "onnxruntime"
    pi5 = load_profile("raspberry-pi5")
    assert t.overhead == runtime_overhead("onnxruntime", t.target.shape, pi5)  # a constant, not this run's gap
    projected = [r for r in res.records if r.kind == "projected" and r.metric == "decode_ms"]
    assert projected and all(r.inputs["overhead_ms"] == t.overhead.ms > 0 for r in projected)
    host = [r for r in res.records if r.kind == "measured-host"]
    assert host and all(r.inputs["quant"] == t.recipe for r in host if "quant" in r.inputs)
    assert not list(tmp_path.glob("seqedge-bench-*"))
    # the peak memory is the benchmark child's: the same whether TARGET was the checkpoint (exported in this
    # process first) or the artifact
    art = tmp_path / "art"
    torch.manual_seed(0)
    export(build_model("mamba", "tiny").eval(), ExportPlan(out=art, verify_steps=4, eval_bytes=32))
    again = bench(BenchPlan([str(art)], device="raspberry-pi5", runtime="onnxruntime", prompt_lengths=[16],
                            decode_tokens=4))
    peaks = [next(r.value for r in x.records if r.metric == "peak_rss_mb") for x in (res, again)]
    assert peaks[0] == pytest.approx(peaks[1], rel=0.15), peaks


def test_device_projection_does_not_depend_on_the_host_threads(onnx_artifact):
    runs = [bench(BenchPlan([str(onnx_artifact)], device="pixel8", prompt_lengths=[8, 32], decode_tokens=4,
                            threads=n)) for n in (1, 2)]
    projected = [[(r.metric, r.at, r.value, r.provenance) for r in res.records if r.kind == "projected"] for res in runs]
    assert projected[0] == projected[1] and len(projected[0]) >= 8
    measured = [{r.inputs["threads"] for r in res.records if r.kind == "measured-host" and r.metric != "size_mb"}
                for res in runs]
    assert measured == [{1}, {2}]
    with pytest.raises(BadInputError, match="--threads 0"):
        bench(BenchPlan([str(onnx_artifact)], device="pixel8", threads=0))


# shapes whose weights (~100 MB fp32) do not fit in a core's caches, unlike the reference shapes of the overhead
# constants (a last-level cache that holds them, 300 MB on a Xeon here, is the profile's cache tier)
CHECK_SHAPES = {"transformer": dict(hidden_size=512, num_hidden_layers=8, intermediate_size=1536,
                                    num_attention_heads=8, num_key_value_heads=4),
                "mamba": dict(hidden_size=768, num_hidden_layers=8)}


@pytest.mark.alone  # a test beside it would make every measurement busy
@pytest.mark.parametrize("family", sorted(CHECK_SHAPES))
def test_the_projection_for_this_machine_is_checked_against_a_measurement(family, tmp_path):
    torch.manual_seed(0)
    art = tmp_path / family
    export(build_model(family, "small", **CHECK_SHAPES[family]).eval(), ExportPlan(out=art, verify_steps=4,
                                                                                   eval_bytes=32))
    for _ in range(3):  # the projection assumes the cores are ours: a busy measurement checks nothing
        res = bench(BenchPlan([str(art)], device="host", prompt_lengths=[16, 128], decode_tokens=24))
        checks = {(c.metric, c.at): c for c in res.targets[0].checks}
        busy = [c.busy for c in checks.values() if c.metric == "decode_tok_s" and c.busy]
        if not busy:
            break
    else:
        pytest.skip(f"the machine stayed busy for three measurements ({busy[0]}): no check possible")
    assert set(checks) == {(m, n) for m in ("decode_tok_s", "prefill_tok_s") for n in (16, 128)}
    for n in (16, 128):  # decode streams every weight: the calibrated roofline + per-call cost must hold
        c = checks[("decode_tok_s", n)]
        # the host's bandwidth is a copy figure (bench/bandwidth.py), and a copy also reads every destination line
        # before writing it: streaming reads run ~1.5x faster than it says, so onnxruntime's decode (bound
        # buffers, no copies) measures up to ~2.2x the projection here. The figure is measured once and cached
        # (host.py), and some machines' memory runs in two speeds: one of the 2-core EPYCs this runs on reads ~48
        # or ~79 GB/s from one minute to the next (benchmarks/peers.py's probe), and with the cached figure from
        # the slow phase the fp32 transformer measured 2.8x (733 tok/s against 262) in the fast one. The bound
        # allows 3.3x
        assert c.measured > 0 and -0.7 <= c.error <= 1.0, (family, c)
    assert all(line.startswith(("  per-call", "  decode", "  prefill", "  host check", f"{art.name}"))
               for line in res.explain())
    assert sum("host check" in line for line in res.explain()) == 4


def test_a_busy_machine_is_flagged(onnx_artifact):
    burn = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        res = bench(BenchPlan([str(onnx_artifact)], device="host", prompt_lengths=[32], decode_tokens=64, threads=1))
    finally:
        for b in burn:
            b.kill()
    from seqedge.bench.report import busy_notes

    decode = next(r for r in res.records if r.kind == "measured-host" and r.metric == "decode_tok_s")
    assert decode.inputs["machine_state"]["others_busy_cores"] >= 0.5 and decode.inputs["busy"]
    assert any("measured while busy" in line for line in busy_notes(res.records))


def test_compare_targets_side_by_side(tmp_path):
    cli = CliRunner()
    r = cli.invoke(app, ["bench", "mamba-130m", "llama-135m", "--compare", "--no-host", "--device", "raspberry-pi5",
                         "--prompt-lengths", "128,1024,4096", "--plot", str(tmp_path / "c.png")])
    assert r.exit_code == 0, r.output
    assert "mamba/mamba-130m" in r.output and "transformer/llama-135m" in r.output
    assert (tmp_path / "c.png").stat().st_size > 10_000


def test_native_runner_is_timed_here_beside_the_python_runtime(native_runner, pte_artifacts):
    """--runner without --adb: the runner an app embeds, timed on this host at the same prompt tokens as the
    Python runtime, each figure paired with the Python one."""
    art = pte_artifacts["mamba"][0]
    before = set(Path(tempfile.gettempdir()).glob("seqedge-runner-*"))
    res = bench(BenchPlan([str(art)], device="host", prompt_lengths=[8, 32], decode_tokens=8, runner=native_runner))
    runner = [r for r in res.records if r.kind == "measured-device"]
    assert {(r.metric, r.inputs.get("prompt_tokens", r.inputs.get("context"))) for r in runner} >= {
        ("prefill_tok_s", 8), ("prefill_tok_s", 32), ("decode_tok_s", 8), ("decode_tok_s", 32),
        ("decode_ms_p50", 8), ("decode_ms_p50", 32)}  # the median step too, as the Python runtime's
    assert all(r.value > 0 and r.inputs["transport"] == "this host" for r in runner)
    assert all(r.unit == "ms" for r in runner if r.metric == "decode_ms_p50")
    checks = res.targets[0].runner_checks
    assert {(c.metric, c.at) for c in checks} == {(m, n) for m in ("prefill_tok_s", "decode_tok_s") for n in (8, 32)}
    python = {(r.metric, r.inputs.get("prompt_tokens", r.inputs.get("context"))): r.value for r in res.records
              if r.kind == "measured-host"}
    assert all(c.python == python[(c.metric, c.at)] and c.runner > 0 for c in checks)
    assert set(Path(tempfile.gettempdir()).glob("seqedge-runner-*")) == before  # its copies are removed
    r = CliRunner().invoke(app, ["bench", str(art), "--device", "host", "--prompt-lengths", "8", "--decode-tokens",
                                 "4", "--runner", str(native_runner)])
    assert r.exit_code == 0 and "native runner vs the Python runtime" in r.output, r.output


def test_prompts_hold_the_same_number_of_tokens_for_the_runner(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from seqedge.bench.device import prompts_of_tokens
    from seqedge.data import held_out_prompt
    from seqedge.tokenizer import load_tokenizer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator([held_out_prompt(20_000).decode()], trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(tmp_path / "tokenizer.json"))
    prompts = prompts_of_tokens(tmp_path, [1, 16, 200])
    counts = {P: len(load_tokenizer(tmp_path).encode(text.decode())) for P, text in prompts.items()}
    assert all(P - 1 <= n <= P for P, n in counts.items()) and len(prompts[200]) > 200  # BPE: more bytes than tokens
    assert prompts_of_tokens(Path(tmp_path / "none"), [5, 40]) == {5: held_out_prompt(5), 40: held_out_prompt(40)}


def test_adb_path_through_a_stand_in_device(native_runner, tmp_path, monkeypatch):
    torch.manual_seed(0)
    art = tmp_path / "x;touch PWN;#"  # a folder name that is shell syntax: it must never reach a shell as such
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
    assert not list(tmp_path.rglob("PWN")) and not Path("PWN").exists()
    pushed = sorted(line.removeprefix("push ").rsplit(" ", 1)[0] for line in calls.splitlines()
                    if line.startswith("push ") and str(art) in line)
    assert pushed == sorted(str(art / n) for n in ["manifest.json", *read_manifest(art)["files"]])  # listed only
    with pytest.raises(BadPathError, match="not an ELF program"):  # --runner must be a program for the device
        fake = tmp_path / "fake-runner"
        fake.write_text("#!/bin/sh\necho hi\n")
        fake.chmod(0o755)
        bench(BenchPlan([str(art)], device="pixel8", runtime="executorch", prompt_lengths=[8], adb="emulator-5554",
                        runner=fake, host=False))
    monkeypatch.setenv("FAKE_ADB_ARCH", "aarch64")  # a phone: the x86-64 runner is refused before it is pushed
    with pytest.raises(BadPathError, match="built for x86_64, not for the device's aarch64"):
        bench(BenchPlan([str(art)], device="pixel8", runtime="executorch", prompt_lengths=[8], adb="emulator-5554",
                        runner=native_runner, host=False))
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


def test_peers_are_refused_until_built_and_measured_in_the_same_run_when_built(tmp_path, monkeypatch):
    from seqedge.bench.peers import llama_bench, peer_models

    built = llama_bench() is not None and peer_models(ModelShape.of_config(
        {"family": "transformer", **FAMILIES["transformer"].presets["llama-135m"]})) is not None
    if built:  # benchmarks/peers.py has run on this machine: llama.cpp beside a projection of the same shape
        res = bench(BenchPlan(["llama-135m"], device="host", host=False, peers=True, prompt_lengths=[32],
                              decode_tokens=8))
        peer = [r for r in res.records if r.kind == "measured-peer"]
        assert {r.target for r in peer} >= {"llama.cpp Q4_0"} and all(r.value > 0 for r in peer)
        assert {(r.metric, r.at) for r in peer} == {("prefill_tok_s", 32), ("decode_tok_s", 32)}
    monkeypatch.setenv("SEQEDGE_CACHE", str(tmp_path))
    r = CliRunner().invoke(app, ["bench", "llama-135m", "--device", "host", "--no-host", "--peers"])
    assert r.exit_code == 2 and "--peers needs llama.cpp" in r.output and "benchmarks/peers.py" in r.output


@pytest.mark.parametrize("builds", [("build",), ("build", "build-no-amx")])
def test_the_llama_cpp_that_runs_here_is_timed_and_one_that_dies_says_of_what(tmp_path, monkeypatch, builds):
    """benchmarks/peers.py builds llama.cpp again without AMX where its native build died of SIGILL (a VM whose
    AMX kernels fault): `seqedge bench --peers` then runs that build, and a llama-bench killed by a signal is
    reported by the signal's name, not as a bare exit code."""
    from seqedge.bench.peers import llama_bench, llama_bench_rows

    monkeypatch.setenv("SEQEDGE_CACHE", str(tmp_path))
    for build in builds:
        exe = tmp_path / "peers" / "llama.cpp-0.3.36" / build / "bin" / "llama-bench"
        exe.parent.mkdir(parents=True)
        exe.write_text("#!/bin/sh\nkill -ILL $$\n")  # as the AMX build died: SIGILL before any output
        exe.chmod(0o755)
    assert llama_bench() == exe  # the last build made: the one without AMX where there are two
    with pytest.raises(SeqedgeError, match="llama-bench failed \\(killed by SIGILL\\).*builds llama.cpp again"):
        llama_bench_rows(exe, tmp_path / "model.gguf", 2, [16], [0], 4)
