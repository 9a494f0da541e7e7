"""Static-shape artifacts for NPUs (exporters/onnx/static.py): the models' padded prefill chunk, the two fixed
graphs in real onnxruntime sessions, and Qualcomm's HTP through onnxruntime-qnn's x86-64 emulator."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from seqedge.errors import UnsupportedError
from seqedge.exporters import ExportPlan, export
from seqedge.models import build_model
from seqedge.runtimes import open_artifact
from seqedge.runtimes import qnn as htp

STATIC = ["transformer", "mamba"]
CHUNK = 16
S24 = {"htp_arch": 75, "soc_model": 57}  # the galaxy-s24 profile's SoC


def _model(family: str, **kw):
    torch.manual_seed(0)
    return build_model(family, "tiny", **kw).eval()


@pytest.mark.parametrize("family", STATIC)
@pytest.mark.parametrize("length", [1, 7, CHUNK])
def test_a_padded_chunk_is_the_prefill_of_its_real_tokens(family, length):
    model = _model(family)
    tokens = torch.randint(0, 256, (1, 5 + CHUNK))
    with torch.no_grad():
        _, state = model.prefill(tokens[:, :5], model.init_state(1))  # not at position 0
        want, want_state = model.prefill(tokens[:, 5:5 + length], {k: v.clone() for k, v in state.items()},
                                         last_only=True)
        padded = torch.cat([tokens[:, 5:5 + length], torch.full((1, CHUNK - length), 7)], dim=1)  # (1, CHUNK)
        got, got_state = model.prefill_padded(padded, torch.tensor([length]), state)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for name, t in want_state.items():
        if family == "transformer" and name != "pos":  # the cache: only slots < pos are ever read
            t, u = t[:, :, :5 + length], got_state[name][:, :, :5 + length]
        else:
            u = got_state[name]
        torch.testing.assert_close(u, t, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def fp32_artifacts(tmp_path_factory):
    out = {}
    for family in STATIC:
        folder = tmp_path_factory.mktemp(family) / "art"
        export(_model(family), ExportPlan(out=folder, static_chunk=CHUNK))
        out[family] = folder
    return out


@pytest.mark.parametrize("family", STATIC)
def test_static_graphs_have_fixed_shapes_and_no_control_flow(fp32_artifacts, family):
    folder = fp32_artifacts[family]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["static"] == {"chunk": CHUNK, "batch": 1} and manifest["parity"]["passed"]
    for graph, tokens in (("prefill.onnx", [1, CHUNK]), ("decode.onnx", [1, 1])):
        g = onnx.load(str(folder / graph)).graph
        dims = {v.name: [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]
                for v in [*g.input, *g.output]}
        assert dims["tokens"] == tokens and dims["logits"][:2] == [1, 1]
        assert all(isinstance(d, int) and d > 0 for shape in dims.values() for d in shape), dims
        assert not {n.op_type for n in g.node} & {"Scan", "Loop", "If"}


@pytest.mark.parametrize("family", STATIC)
@pytest.mark.parametrize("prompt", [1, CHUNK, 2 * CHUNK + 5])
def test_the_static_runtime_matches_the_model_over_chunks_and_steps(fp32_artifacts, family, prompt):
    model = _model(family)
    runner = open_artifact(fp32_artifacts[family])
    tokens = torch.randint(0, 256, (1, prompt + 8))
    try:
        state = runner.init_state(1)
        logits, state = runner.prefill(tokens[:, :prompt], state)
        got = [logits[0, -1]]
        for t in range(prompt, prompt + 8):
            logits, state = runner.step(tokens[:, t:t + 1], state)
            got.append(logits[0, -1])
    finally:
        runner.close()
    with torch.no_grad():
        want = model.forward(tokens)[0, prompt - 1:]  # (9, V)
    torch.testing.assert_close(torch.stack(got), want, atol=2e-4, rtol=1e-4)


def test_a_chunk_that_would_run_past_the_cache_goes_token_by_token(tmp_path):
    model = _model("transformer", max_seq_len=40)
    export(model, ExportPlan(out=tmp_path / "art", static_chunk=CHUNK, verify_steps=8, prompt_bytes=16))
    runner = open_artifact(tmp_path / "art")
    tokens = torch.randint(0, 256, (1, 38))
    try:
        logits, state = runner.prefill(tokens, runner.init_state(1))  # chunks at 0, 16; 32 + 16 > 40: steps
    finally:
        runner.close()
    assert int(state["pos"]) == 38
    with torch.no_grad():
        torch.testing.assert_close(logits[0, -1], model.forward(tokens)[0, -1], atol=2e-4, rtol=1e-4)


def test_families_without_a_padded_chunk_are_refused_by_name(tmp_path):
    with pytest.raises(UnsupportedError, match="mamba2 models have no padded prefill chunk"):
        export(_model("mamba2"), ExportPlan(out=tmp_path / "art", static_chunk=CHUNK))
    assert not (tmp_path / "art").exists()


# --- Qualcomm HTP (onnxruntime-qnn, emulated on x86-64) ---------------------------------------------------


@pytest.fixture(scope="module")
def htp_artifacts(tmp_path_factory):
    out = {}
    for family in STATIC:
        folder = tmp_path_factory.mktemp(f"{family}-htp") / "art"
        plan = ExportPlan(out=folder, static_chunk=CHUNK, quant="w8a16", qnn=S24, verify_steps=16, prompt_bytes=24,
                          eval_bytes=128)  # the emulator takes tens of ms a step
        out[family] = (folder, export(_model(family), plan))
    return out


@pytest.mark.parametrize("family", STATIC)
def test_the_htp_takes_every_node_but_the_float_io_conversions(htp_artifacts, family):
    folder, manifest = htp_artifacts[family]
    for graph, g in manifest["qnn"]["graphs"].items():
        model = onnx.load(str(folder / graph)).graph
        assert g["htp_nodes"] > 10 * g["cpu_nodes"]  # (counted after onnxruntime's optimizer: not the file's nodes)
        inputs, outputs = {i.name for i in model.input}, {o.name for o in model.output}
        boundary = sum(n.op_type == "QuantizeLinear" and n.input[0] in inputs
                       or n.op_type == "DequantizeLinear" and n.output[0] in outputs for n in model.node)
        assert g["cpu_nodes"] == boundary
        assert {c["op"] for c in g["cpu"]} == {"QuantizeLinear", "DequantizeLinear"}
        assert all("graph input" in c["why"] or "graph output" in c["why"] for c in g["cpu"])


@pytest.mark.parametrize("family", STATIC)
def test_context_binaries_are_compiled_for_the_soc(htp_artifacts, family):
    folder, manifest = htp_artifacts[family]
    listed = manifest["files"]
    for g in manifest["qnn"]["graphs"].values():
        (binary, size), = g["context_binaries"].items()
        assert g["context_model"] in listed and binary in listed and size == (folder / binary).stat().st_size > 0
        nodes = onnx.load(str(folder / g["context_model"])).graph.node  # the HTP's partition, and the CPU's Q/DQ
        contexts = [n for n in nodes if n.op_type == "EPContext"]
        assert len(contexts) == 1 and len(nodes) == 1 + g["cpu_nodes"]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in contexts[0].attribute}
        assert attrs["embed_mode"] == 0 and attrs["ep_cache_context"].decode() == binary  # beside it, by name
    ran = {graph: g["context_run_on_emulator"] for graph, g in manifest["qnn"]["graphs"].items()}
    assert set(ran.values()) == {"ran"}, ran


@pytest.mark.parametrize("family", STATIC)
def test_the_emulator_run_is_checked_beside_cpu_qdq(htp_artifacts, family):
    _, manifest = htp_artifacts[family]
    e = manifest["qnn"]["emulator"]
    assert e["parity"]["passed"] and e["parity"]["mean_kl"] <= 0.05 and e["eval_tokens"] > 0
    assert manifest["quant"]["recipe"] == "w8a16" and manifest["parity"]["passed"]  # the CPU-QDQ run
    assert {"bpb_fp32", "bpb_htp", "bpb_cpu_qdq", "max_abs_diff_htp_vs_cpu_qdq"} <= set(e)


def test_a_dynamic_graph_gets_no_node_on_the_htp(tmp_path):
    """What the emulator does with a dynamic dimension: every node to the CPU, no error — so coverage is
    what tells an artifact ran on the HTP, never the session's provider list."""
    from onnx import TensorProto, helper, numpy_helper

    for dim, on_htp in (("N", 0), (4, 1)):
        graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [dim, 8])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [dim, 8])],
                                  [numpy_helper.from_array(np.eye(8, dtype=np.float32), "w")])
        path = tmp_path / f"{dim}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), str(path))
        placed = htp.coverage(path, 2, **S24)
        assert len(placed["htp"]) == on_htp and len(placed["cpu"]) == 1 - on_htp


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "seqedge", *map(str, args)], capture_output=True, text=True, timeout=600)


def test_export_for_the_npu_of_a_profile(tmp_path):
    out = tmp_path / "s24"
    r = run_cli("export", "--family", "mamba", "--preset", "tiny", "--device", "galaxy-s24", "--unit", "npu",
                "--static-chunk", str(CHUNK), "--out", str(out))
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"]["backend"] == "qnn" and manifest["quant"]["recipe"] == "w8a16"
    assert (manifest["qnn"]["htp_arch"], manifest["qnn"]["soc_model"]) == (75, 57)
    assert "on the HTP" in r.stdout and "HTP emulator" in r.stdout
    bad = run_cli("export", "--family", "mamba", "--preset", "tiny", "--device", "galaxy-s24", "--unit", "npu",
                  "--quant", "int4", "--out", str(tmp_path / "bad"))
    err = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(err) == 2 and "--quant w8a16" in err[1]
    assert not (tmp_path / "bad").exists()


def test_rmsnorm_divides_instead_of_multiplying_by_a_reciprocal(fp32_artifacts, tmp_path):
    """Qualcomm's HTP computes a 16-bit quantized Reciprocal wrongly (static.py: divide_instead_of_reciprocal);
    the static graphs hold none, and the rewrite leaves the fp32 graph's outputs as they were."""
    import onnxruntime as ort

    from seqedge.exporters.onnx.static import divide_instead_of_reciprocal

    for folder in fp32_artifacts.values():
        for graph in ("prefill.onnx", "decode.onnx"):
            assert "Reciprocal" not in {n.op_type for n in onnx.load(str(folder / graph)).graph.node}
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Mul", ["x", "x"], ["sq"]), helper.make_node("ReduceMean", ["sq"], ["m"], axes=[-1]),
             helper.make_node("Sqrt", ["m"], ["s"]), helper.make_node("Reciprocal", ["s"], ["r"]),
             helper.make_node("Mul", ["x", "r"], ["y"]), helper.make_node("Mul", ["r", "w"], ["z"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "z")],
                              [numpy_helper.from_array(np.full((2, 1), 3.0, np.float32), "w")])
    path = tmp_path / "norm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    before = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert divide_instead_of_reciprocal(path) == 1
    assert [n.op_type for n in onnx.load(str(path)).graph.node] == ["Mul", "ReduceMean", "Sqrt", "Div", "Div"]
    after = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for a, b in zip(before, after):
        np.testing.assert_allclose(a, b, rtol=1e-6)
