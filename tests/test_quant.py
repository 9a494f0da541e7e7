"""Quantization recipes × formats on trained tiny models: real quantized ONNX graphs and ExecuTorch
programs, their size and accuracy report, the gates (--strict, --max-bpb-increase) and bad inputs."""

import dataclasses
import functools
import json
import os

import pytest
import torch
from typer.testing import CliRunner

from seqedge.checkpoint import save_checkpoint
from seqedge.cli.app import app
from seqedge.errors import BadInputError, BadPathError, UnknownNameError, UnsupportedError
from seqedge.exporters import ExportPlan, export
from seqedge.exporters.artifact import read_manifest
from seqedge.host import host_isa
from seqedge.quant import RECIPES
from seqedge.quant.report import AccuracyError

# (format, recipe) pairs each format implements, and what each recipe must reach on a trained tiny model
MATRIX = [(f, "onnx", r) for f in ("transformer", "mamba") for r in ("fp16", "int8", "int4", "int8-static")] + [
    ("transformer", "executorch", "int4"), ("mamba", "executorch", "int8")]  # ExecuTorch lowering is slow: one each
MAX_SIZE_RATIO = {"fp16": 0.55, "int8": 0.40, "int4": 0.36, "int8-static": 0.45}  # tiny: norms/conv/SSM stay float
REPORT_KEYS = {"recipe", "weight_bytes_fp32", "weight_bytes", "bits_per_weight", "skipped", "bpb_fp32", "bpb",
               "bpb_increase", "top1_agreement"}


def _export(model, tmp_path, fmt, recipe, **kw):
    return export(model, ExportPlan(out=tmp_path / f"{fmt}-{recipe}", format=fmt, quant=recipe, max_len=128,
                                    verify_steps=32, eval_bytes=256, **kw))


@pytest.mark.parametrize("fam,fmt,recipe", MATRIX)
def test_recipe_shrinks_weights_within_its_accuracy_budget(trained_exports, fam, fmt, recipe):
    folder, m = trained_exports.get(fam, fmt, recipe)
    q = m["quant"]
    assert REPORT_KEYS <= set(q) and q["recipe"] == recipe
    assert q["weight_bytes"] < MAX_SIZE_RATIO[recipe] * q["weight_bytes_fp32"], q
    assert q["bits_per_weight"] == pytest.approx(8 * q["weight_bytes"] / m["parameters"], rel=1e-3)
    assert q["bpb_fp32"] < 7.0  # trained: well below 8 bits of a uniform guess
    assert q["bpb_increase"] <= RECIPES[recipe].max_bpb_increase and q["top1_agreement"] >= 0.9, q
    parity = m["parity"]
    assert parity["passed"] and parity["min_token_agreement"] == RECIPES[recipe].parity.min_token_agreement
    assert parity["rule"] == RECIPES[recipe].parity.note
    assert read_manifest(folder)["quant"] == q  # on disk as returned
    rule = RECIPES[recipe].parity
    if rule.baseline:  # int4 is judged against llama.cpp's Q4_0 grid on the same weights and tokens
        assert parity["baseline"] == rule.baseline and parity["baseline_mean_kl"] > 0
        assert parity["max_mean_kl"] == pytest.approx(max(rule.max_mean_kl, rule.baseline_factor * parity["baseline_mean_kl"]))
        assert q["baseline"] == rule.baseline and q["bpb_baseline"] > q["bpb_fp32"] * 0.99
    for s in q["skipped"]:
        assert s["layer"] and s["reason"]
    if fam == "mamba" and recipe != "fp16":  # the SSM's A is kept float on purpose, and said so
        assert any("A_log" in s["layer"] and "on purpose" in s["reason"] for s in q["skipped"]), q["skipped"]
    if fmt == "executorch":  # the embedding table is quantized too (ExecuTorch's quantized embedding kernels)
        assert not any("embed" in s["layer"] for s in q["skipped"]) and read_manifest(
            folder)["quantized_kernels"]
        # int4 on an AVX2 machine: the Linear layers run on seqedge's int4 kernel, outside XNNPACK
        kernel = recipe == "int4" and "avx2" in host_isa()
        assert ("seqedge::int4_matmul.out" in m["native_kernels"]) == kernel
        assert any(o["op"] == "seqedge.int4_matmul" for o in m["delegation"]["decode"]["not_delegated"]) == kernel


@pytest.mark.skipif("avx2" not in host_isa(), reason="seqedge's int4 kernel is the ExecuTorch recipe's on AVX2 CPUs")
def test_executorch_int4_mamba_scans_with_its_dt_proj_inside(trained_exports):
    """ExecuTorch's int4 Mamba: each layer's dt_proj product, softplus, scan and gate are one kernel
    (seqedge::int4_mamba_scan.out) in both methods, its state updated in place, and the program passes its parity
    check against the float model (the tiny model's padded size is not judged here)."""
    folder, m = trained_exports.get("mamba", "executorch", "int4")
    layers = m["config"]["num_hidden_layers"]
    assert "seqedge::int4_mamba_scan.out" in m["native_kernels"] and "seqedge::mamba_scan.out" not in m["native_kernels"]
    for method in ("prefill", "decode"):
        outside = {o["op"]: o["count"] for o in m["delegation"][method]["not_delegated"]}
        assert outside["seqedge.int4_mamba_scan"] == layers and "seqedge.selective_scan" not in outside, method
    assert m["parity"]["passed"] and set(m["in_place_state"]) == {s["name"] for s in m["state"]}


@pytest.mark.parametrize("fam", ["transformer", "mamba"])
def test_onnx_int4_computes_in_int8_and_says_so(trained, tmp_path, fam):
    """int4 runs with int8 activations when that passes the gates — on seqedge's int4 kernel (the fused
    flavour, for a CPU) —; the manifest's `int4_compute` is what the graph's nodes say, and the fp32-compute
    rewrite (back to MatMulNBits, accuracy_level 0) changes them and still runs."""
    import onnx
    import torch

    from seqedge.quant.onnx import INT4_PRODUCTS, int4_codes, int4_compute, set_int4_compute
    from seqedge.runtimes import open_artifact

    m = _export(trained[fam], tmp_path, "onnx", "int4")
    graph = tmp_path / "onnx-int4" / "model.onnx"
    assert m["int4_compute"] == int4_compute(onnx.load(str(graph)).graph) == "int8" and m["parity"]["passed"]
    nodes = onnx.load(str(graph)).graph.node
    kernel = [n for n in nodes if n.op_type in INT4_PRODUCTS and n.domain == "seqedge"]
    assert len(kernel) == m["fusions"]["int4_kernel"] and "MatMulNBits" not in {n.op_type for n in nodes}
    inits = {i.name: i for i in onnx.load(str(graph)).graph.initializer}  # codes in groups of 16 rows where N allows
    assert sum(inits[int4_codes(n)].dims[-1] == 256 for n in kernel) == m["fusions"]["int4_grouped"] > 0
    # a tied embedding reads its head's grouped codes through seqedge.Int4Gather (GatherBlockQuantized reads rows:
    # one stays only where it reads a table of its own)
    gathers = [n for n in nodes if n.op_type == "Int4Gather"]
    assert len(gathers) == m["fusions"].get("int4_gather", 0)
    assert all(inits[n.input[0]].dims[-1] == 256 for n in gathers)
    assert all(i in inits for n in nodes if n.op_type == "GatherBlockQuantized" for i in n.input[::2])
    if fam == "transformer":  # each layer's gate/up projection with its SwiGLU as one node
        assert m["fusions"]["int4_swiglu"] == m["config"]["num_hidden_layers"]
        # o_proj and down_proj with the residual add + RMSNorm after them (the last down_proj's add and the final
        # norm are two nodes in the exported graph, left as they are)
        assert m["fusions"]["int4_skip_norm"] == 2 * m["config"]["num_hidden_layers"] - 1
        assert not {"Split", "Sigmoid"} & {n.op_type for n in nodes}
    else:  # each layer's in_proj split into x | z and x_proj into dt | B | C, dt_proj's bias added, by the kernel
        layers = m["config"]["num_hidden_layers"]
        assert m["fusions"]["int4_split"] == 2 * layers and m["fusions"]["int4_bias"] == layers
        assert m["fusions"]["int4_skip_norm"] == layers - 1  # out_proj, the residual add and the next layer's norm
        # in_proj with the convolution after it, dt_proj inside the scan: no CausalConv1d or MambaScan left
        assert m["fusions"]["int4_conv"] == m["fusions"]["int4_scan"] == layers > 0
        assert not {"CausalConv1d", "MambaScan"} & {n.op_type for n in nodes}
        assert not {"Split", "Add"} & {n.op_type for n in nodes if any("mixer" in i for i in n.input)}
    tokens = torch.randint(0, 256, (1, 12))
    runner = open_artifact(tmp_path / "onnx-int4", threads=2)
    assert runner.team_threads == 2  # all of the graph's work is seqedge's kernels: they run on its own team
    int8_logits, _ = runner.prefill(tokens, runner.init_state(1))
    set_int4_compute(graph, "fp32")
    back = onnx.load(str(graph))
    assert int4_compute(back.graph) == "fp32" and not any(
        n.domain == "seqedge" for n in back.graph.node if n.op_type not in ("MambaScan", "CausalConv1d", "Attention"))
    assert [n.op_type for n in back.graph.node].count("MatMulNBits") == len(kernel)
    assert "seqedge" in {o.domain for o in back.opset_import}  # the scan, the convolution, attention still need it
    runner = open_artifact(tmp_path / "onnx-int4", check_files=False, threads=2)
    assert runner.team_threads == 0  # onnxruntime's MatMulNBits: the session's pool, shared with the kernels
    fp32_logits, _ = runner.prefill(tokens, runner.init_state(1))
    with torch.no_grad():
        ref, _ = trained[fam].prefill(tokens, trained[fam].init_state(1), last_only=True)
    assert not torch.equal(int8_logits, fp32_logits)  # a different kernel ran
    for got in (int8_logits, fp32_logits):  # both near the fp32 model (int4 weights)
        assert torch.nn.functional.cosine_similarity(got.flatten(), ref.flatten(), dim=0) > 0.95


@pytest.mark.parametrize("device, kernel", [("raspberry-pi5", False), ("rtx4090", False), (None, True)])
def test_int4_kernel_only_where_it_is_the_faster_one(trained, tmp_path, device, kernel):
    """seqedge's int4 kernel is put in for an AVX2 CPU (this machine, no profile); an arm64 profile (NEON:
    onnxruntime's MatMulNBits has the kernels there) and a GPU profile keep MatMulNBits."""
    import onnx

    from seqedge.profiles import load_profile

    target = None
    if device:
        unit = load_profile(device).units[0]
        target = {"device": device, "unit": unit.kind}
    m = _export(trained["transformer"], tmp_path, "onnx", "int4", target=target)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "onnx-int4" / "model.onnx")).graph.node}
    assert ("Int4MatMul" in ops) == kernel and ("MatMulNBits" in ops) == (not kernel)
    assert ("int4_kernel" in m["fusions"]) == kernel
    # attention is seqedge's kernel wherever the graph runs on a CPU (arm64 too); a GPU keeps GroupQueryAttention
    assert ("seqedge" in m["opset"]) == (target is None or target["unit"] == "cpu") == ("Attention" in ops)


def test_onnx_int4_head8_keeps_only_the_head_at_8_bits(trained, tmp_path):
    """int4-head8: the node computing the logits is an 8-bit MatMulNBits with int8 compute; every other matrix is
    int4 as under int4 (on seqedge's kernel here); the artifact is larger, and closer to the fp32 model."""
    import onnx
    from onnx import helper

    m4 = _export(trained["transformer"], tmp_path, "onnx", "int4")
    m8 = _export(trained["transformer"], tmp_path, "onnx", "int4-head8")
    graph = onnx.load(str(tmp_path / "onnx-int4-head8" / "model.onnx")).graph
    head = next(n for n in graph.node if graph.output[0].name in n.output)
    attrs = {a.name: helper.get_attribute_value(a) for a in head.attribute}
    assert head.op_type == "MatMulNBits" and attrs["bits"] == 8 and attrs["accuracy_level"] == 4
    assert [n.op_type for n in graph.node].count("MatMulNBits") == 1
    assert m8["fusions"]["int4_kernel"] == m4["fusions"]["int4_kernel"] - 1 and m8["int4_compute"] == "int8"
    assert m8["quant"]["weight_bytes"] > m4["quant"]["weight_bytes"]
    assert [s["layer"] for s in m8["quant"]["skipped"]] == [s["layer"] for s in m4["quant"]["skipped"]]
    assert m8["parity"]["passed"] and m8["parity"]["mean_kl"] < m4["parity"]["mean_kl"]


@pytest.mark.parametrize("recipe, head_dtype", [("int4", torch.int4), ("int4-head8", torch.int8)])
def test_executorch_4bit_recipes_differ_in_the_output_head_only(trained, recipe, head_dtype):
    """int4 is ExecuTorch's 8da4w on every Linear; int4-head8 keeps the head at 8 bits per output channel."""
    from types import SimpleNamespace

    from seqedge.quant.executorch import IMPLEMENTS

    model = trained["transformer"]
    q = IMPLEMENTS[recipe](model, SimpleNamespace(group_size=32, int4_kernel=False))
    dtypes = {name: m.weight.target_dtype for name, m in q.named_modules() if isinstance(m, torch.nn.Linear)}
    assert dtypes.pop("lm_head") == head_dtype
    assert dtypes and set(dtypes.values()) == {torch.int4}
    assert q.lm_head.weight.block_size[1] == (32 if head_dtype == torch.int4 else q.lm_head.in_features)
    assert isinstance(model.lm_head.weight, torch.nn.Parameter)  # the caller's model is left as it was


@pytest.mark.parametrize("family", ["transformer", "mamba"])
@pytest.mark.parametrize("recipe", ["int4", "int4-head8"])
def test_executorch_int4_on_seqedges_kernel_holds_q4_0_codes(trained, recipe, family):
    """For an AVX2 target (ctx.int4_kernel) the int4 recipes' Linear layers in groups of 32 become Int4Linear:
    seqedge's kernel op on Q4_0's codes, computing what its reference does (int4-head8's head stays 8da8w in
    XNNPACK); a layer whose input is not a multiple of 32 wide (tiny Mamba's dt_proj, 6) has its last block
    zero-padded; in groups of 64 XNNPACK's 8da4w stays."""
    from types import SimpleNamespace

    from seqedge.ops import int4_mamba_scan_ref, int4_matmul_ref
    from seqedge.ops.int4_matmul.reference import unpack_codes
    from seqedge.quant.executorch import IMPLEMENTS, Int4Linear
    from seqedge.quant.reference import q4_0
    from tests.test_ops import mamba_scan_inputs

    model = trained[family]
    q = IMPLEMENTS[recipe](model, SimpleNamespace(group_size=32, int4_kernel=True))
    kernel = {name: m for name, m in q.named_modules() if isinstance(m, Int4Linear)}
    linears = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(kernel) == set(linears) - ({"lm_head"} if recipe == "int4-head8" else set())
    assert family != "mamba" or any(m.in_features % 32 for m in linears.values())  # a padded block is tested
    if recipe == "int4-head8":
        assert q.lm_head.weight.target_dtype == torch.int8
    grouped = 0
    for name, layer in kernel.items():
        w = linears[name].weight.detach()
        grouped += layer.codes.shape[-1] == 256  # in groups of 16 rows: every layer of 16 rows or more
        assert (layer.codes.shape[-1] == 256) == (w.shape[0] >= 16), name
        assert (layer.tail_codes is not None) == (w.shape[0] > 16 and w.shape[0] % 16 > 0), name  # the rest: rows
        codes, scales = layer.rows()
        got = (unpack_codes(codes) * scales[..., None].float()).flatten(1)  # (N, K rounded up to 32)
        padded = torch.nn.functional.pad(w, (0, -w.shape[1] % 32))
        assert torch.equal(got, q4_0(padded)) and not got[:, w.shape[1]:].any(), name
        x = torch.randn(2, 5, w.shape[1])
        want = int4_matmul_ref(x, codes, scales) + (0 if linears[name].bias is None else linears[name].bias)
        assert torch.allclose(layer(x), want, rtol=1e-4, atol=1e-4), name
        if name.endswith("dt_proj"):  # Mamba's step: the product inside the scan (models/mamba.py, ExecuTorch's)
            u, _, A, B, C, D, state, z = mamba_scan_inputs(5, D=w.shape[0])
            dt = torch.randn(2, 5, w.shape[1])
            got = layer.mamba_scan(dt, u, A, B, C, D, state, z)
            want = int4_mamba_scan_ref(u, dt, codes, scales, linears[name].bias.detach(), A, B, C, D, state, z)
            for g, v in zip(got, want):
                assert torch.allclose(g, v, rtol=1e-4, atol=1e-4), name
    assert grouped > 0
    wide = IMPLEMENTS[recipe](model, SimpleNamespace(group_size=64, int4_kernel=True))
    assert not any(isinstance(m, Int4Linear) for m in wide.modules())


def test_fp32_reports_accuracy_with_nothing_skipped(trained, tmp_path):
    q = _export(trained["transformer"], tmp_path, "onnx", "fp32")["quant"]
    assert q["skipped"] == [] and abs(q["bpb_increase"]) < 1e-3 and q["top1_agreement"] == 1.0
    assert q["weight_bytes"] == pytest.approx(q["weight_bytes_fp32"], rel=0.01)


def test_lstm_int8_quantizes_the_recurrent_op(trained, tmp_path):
    q = _export(trained["lstm"], tmp_path, "onnx", "int8")["quant"]
    assert q["weight_bytes"] < 0.4 * q["weight_bytes_fp32"] and not q["skipped"]


def test_group_size_changes_size_and_is_validated(trained, tmp_path):
    small = _export(trained["transformer"], tmp_path / "g32", "onnx", "int4", group_size=32)["quant"]
    large = _export(trained["transformer"], tmp_path / "g64", "onnx", "int4", group_size=64)["quant"]
    assert small["group_size"] == 32 and large["group_size"] == 64
    assert large["weight_bytes"] < small["weight_bytes"]  # fewer scales


def test_strict_and_accuracy_gates_fail_cleanly(trained, tmp_path):
    with pytest.raises(AccuracyError, match=r"--strict: recipe int4 left \d+ weight matrices in float: .*conv1d.* more"):
        _export(trained["mamba"], tmp_path, "onnx", "int4", strict=True)
    with pytest.raises(AccuracyError, match=r"raised held-out bits/byte by .* above the allowed 0\.00%"):
        _export(trained["transformer"], tmp_path, "onnx", "int4", max_bpb_increase=0.0, group_size=64)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_bad_inputs(trained, tmp_path):
    model = trained["transformer"]
    with pytest.raises(UnknownNameError, match="unknown quantization recipe 'int3'") as e:
        _export(model, tmp_path, "onnx", "int3")
    assert "int4" in e.value.hint and "int8-static" in e.value.hint
    with pytest.raises(UnsupportedError, match="'fp16' is not available for --format executorch") as e:
        _export(model, tmp_path, "executorch", "fp16")
    assert "onnx" in e.value.hint
    with pytest.raises(BadInputError, match="--group-size 48 is not allowed for int4"):
        _export(model, tmp_path, "onnx", "int4", group_size=48)
    with pytest.raises(BadInputError, match="--group-size applies to group-wise recipes only"):
        _export(model, tmp_path, "onnx", "int8", group_size=32)
    with pytest.raises(BadInputError, match="--group-size 128 divides no layer of this model"):
        _export(model, tmp_path, "onnx", "int4", group_size=128)
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(BadInputError, match="calibration file .*empty.txt is empty"):
        _export(model, tmp_path, "onnx", "int8-static", calibration=tmp_path / "empty.txt")
    with pytest.raises(BadPathError, match="calibration file .*nope.txt does not exist"):
        _export(model, tmp_path, "onnx", "int8-static", calibration=tmp_path / "nope.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt"]


def test_cli_quant_export_and_messages(trained, tmp_path):
    cli = CliRunner()
    ckpt = save_checkpoint(trained["lstm"], tmp_path / "ck")
    r = cli.invoke(app, ["export", str(ckpt), "--quant", "int8", "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert "quant int8:" in r.output and "bits/weight" in r.output
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["quant"]["recipe"] == "int8"
    r = cli.invoke(app, ["export", "--family", "gru", "--preset", "tiny", "--quant", "q5", "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "unknown quantization recipe 'q5'" in r.output and "valid: fp32" in r.output
    r = cli.invoke(app, ["export", "--family", "gru", "--preset", "tiny", "--format", "executorch", "--quant",
                         "int8-static", "--out", str(tmp_path / "c")])
    assert r.exit_code == 2 and "formats that do int8-static: onnx" in r.output
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


class _Broken(torch.nn.Module):
    def forward(self, tokens):
        raise RuntimeError("a forward that fails in the worker")


@pytest.mark.parametrize("fam", ["transformer", "mamba"])
def test_references_computed_ahead_by_a_worker_are_the_ones_computed_here(trained, tmp_path, fam):
    """exporters/ahead_references.py: a forked worker computes `accuracy_references` (fp32 and Q4_0-grid bits, the
    fp32 top-1) on the tokens accuracy_report reads, and `reference_rows` (fp32 and grid logits, the model's own
    step against its prefill) on the walk verify_artifact takes. They match those computed here, are refused for
    other tokens, and a worker that fails gives none; without verification no worker is forked."""
    from seqedge.exporters.ahead_references import ahead_references
    from seqedge.exporters.verify import parity_tokens, reference_rows
    from seqedge.quant.reference import baseline_model
    from seqedge.quant.report import accuracy_references, eval_ids, prepare
    from seqedge.tokenizer import load_tokenizer

    model = trained[fam]
    plan = ExportPlan(out=tmp_path / "x", format="executorch", quant="int4", eval_bytes=256, jobs=2, verify_steps=8)
    quant = prepare(plan, model, "executorch")
    cache = getattr(model, "max_seq_len", None)
    ids = eval_ids(quant, load_tokenizer(None), cache)
    grid = quant.recipe.parity.baseline
    grid_model = baseline_model(model, grid)
    here = accuracy_references(model, ids, (grid, grid_model))
    prompt, continuation = parity_tokens(load_tokenizer(None), 8, plan.prompt_bytes, 32, cache)
    path = prompt + continuation
    rows = reference_rows(model, grid_model, torch.tensor([path]), len(prompt), 8)
    with ahead_references(model, plan, quant, max_prefill=32) as ahead:
        assert ahead.pid is not None and ahead.pid != os.getpid()
        got, walk = ahead.accuracy(ids), ahead.parity(path)
    assert got["ids"] == ids and got["baseline"] == grid and torch.equal(got["top1"], here["top1"])
    assert got["bits_fp32"] == pytest.approx(here["bits_fp32"], rel=1e-5)
    assert got["bits_baseline"] == pytest.approx(here["bits_baseline"], rel=1e-5) != got["bits_fp32"]
    assert len(prompt) == 32 and walk["path"] == path and len(walk["own"]) == len(rows["own"]) > 0
    for key in ("ref_rows", "base_rows"):
        assert walk[key].shape == rows[key].shape and walk[key].shape[0] == 9
        assert torch.allclose(walk[key], rows[key], atol=1e-4)
    assert not torch.equal(walk["ref_rows"], walk["base_rows"])
    with ahead_references(model, plan, quant, max_prefill=32) as ahead:
        assert ahead.accuracy(ids[:-1]) is None and ahead.parity(path[1:]) is None
    with ahead_references(_Broken(), plan, quant) as ahead:
        assert ahead.pid is not None and ahead.accuracy(ids) is None and ahead.parity(path) is None
    with ahead_references(model, dataclasses.replace(plan, verify=False), quant) as ahead:
        assert ahead.pid is None and ahead.accuracy(ids) is None


def _int4_weights(g, N, K) -> list:
    """Initializers B (random int4 codes, (N, K/32, 16)) and S (float16 scales) of an (N, K) seqedge.Int4MatMul."""
    from onnx import numpy_helper

    return [numpy_helper.from_array(torch.randint(0, 256, (N, K // 32, 16), generator=g, dtype=torch.uint8).numpy(),
                                    "B"),
            numpy_helper.from_array((torch.rand(N, K // 32, generator=g) * 0.05).half().numpy(), "S")]


def _with_opsets(graph):
    """A model of `graph` importing the standard, seqedge and com.microsoft domains."""
    from onnx import helper

    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("seqedge", 1),
                                                   helper.make_opsetid("com.microsoft", 1)])


def _outputs(tmp_path, model, feeds) -> list:
    """`model`'s outputs in an onnxruntime session with seqedge's kernels, fed the arrays its inputs name."""
    import onnx
    import onnxruntime as ort

    from seqedge.runtimes.ort_kernels import options_for

    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    sess = ort.InferenceSession(str(path), options_for(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})


@pytest.mark.parametrize("case", ["split3", "halves", "bias", "bias+split", "other axis", "bias not constant"])
def test_bias_and_split_after_an_int4_projection_fold_into_it(tmp_path, case):
    """Int4MatMul -> Add(constant bias) -> Split(last axis) is one Int4MatMul writing the split's outputs (sizes
    from the split input, or equal parts), and the graph gives what it gave before; a split of another axis or
    an Add of a computed tensor stays. Undoing it (fp32 compute) gives the nodes back."""
    import numpy as np
    import torch
    from onnx import TensorProto, helper, numpy_helper

    from seqedge.quant.onnx import _back_to_matmulnbits, _fold_bias_and_split

    g = torch.Generator().manual_seed(0)
    N, K = 24, 64
    inits = [*_int4_weights(g, N, K),
             numpy_helper.from_array(torch.randn(N, generator=g).numpy() * 5, "bias"),
             numpy_helper.from_array(np.array([4, 12, 8], dtype=np.int64), "sizes")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, K])]
    nodes = [helper.make_node("Int4MatMul", ["x", "B", "S"], ["y"], domain="seqedge", K=K)]
    y, outs = "y", ["y"]
    if "bias" in case:
        other = "bias" if case != "bias not constant" else "b_in"
        inputs += [helper.make_tensor_value_info("b_in", TensorProto.FLOAT, [N])] if other == "b_in" else []
        nodes.append(helper.make_node("Add", [y, other], ["yb"]))
        y, outs = "yb", ["yb"]
    if "split" in case or case in ("halves", "other axis"):
        outs = ["p0", "p1", "p2"] if "split" in case else ["p0", "p1"]
        nodes.append(helper.make_node("Split", [y, "sizes"], outs, axis=2) if len(outs) == 3 else
                     helper.make_node("Split", [y], outs, axis=2 if case == "halves" else 1, num_outputs=2))
    graph = helper.make_graph(nodes, "fold", inputs, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                                                      for o in outs], inits,
                              value_info=[helper.make_tensor_value_info(v, TensorProto.FLOAT, [2, 4, N])
                                          for v in ("y", "yb")])
    model = _with_opsets(graph)
    feeds = {"x": torch.randn(2, 4, K, generator=g).numpy(), "b_in": torch.randn(N, generator=g).numpy()}

    run = functools.partial(_outputs, tmp_path, feeds=feeds)

    before = run(model)
    ops = [n.op_type for n in nodes]
    _fold_bias_and_split(model.graph)
    folded = case not in ("other axis", "bias not constant")
    assert [n.op_type for n in model.graph.node] == (["Int4MatMul"] if folded else ops)
    assert all(np.abs(a - b).max() <= 1e-5 * np.abs(b).max() for a, b in zip(run(model), before))
    _back_to_matmulnbits(model.graph)  # MatMulNBits with fp32 compute: near, not equal (no int8 activations)
    assert [n.op_type for n in model.graph.node] == ["MatMulNBits", *ops[1:]]
    assert all(np.abs(a - b).max() <= 0.05 * np.abs(b).max() for a, b in zip(run(model), before))


@pytest.mark.parametrize("case", ["sum used", "sum unused", "product second", "stats used", "product used twice"])
def test_residual_norm_after_an_int4_projection_folds_into_it(tmp_path, case):
    """Int4MatMul -> SkipSimplifiedLayerNormalization (either input) is one Int4MatMulSkipRmsNorm giving the norm's
    output and residual sum, the same numbers as before; a norm whose mean / inverse deviation is read, or a product
    read elsewhere too, stays. Undoing it (fp32 compute) gives the nodes back."""
    import numpy as np
    import torch
    from onnx import TensorProto, helper, numpy_helper

    from seqedge.quant.onnx import _back_to_matmulnbits, _fold_skip_norm

    g = torch.Generator().manual_seed(0)
    N, K = 48, 64
    inits = [*_int4_weights(g, N, K),
             numpy_helper.from_array(torch.randn(N, generator=g).numpy(), "gamma")]
    pair = ["skip", "y"] if case == "product second" else ["y", "skip"]
    stats = ["", "inv"] if case == "stats used" else ["", ""]
    outs = ["normed"] + (["sum"] if case != "sum unused" else []) + (["inv"] if case == "stats used" else []) + (
        ["y"] if case == "product used twice" else [])
    nodes = [helper.make_node("Int4MatMul", ["x", "B", "S"], ["y"], domain="seqedge", K=K),
             helper.make_node("SkipSimplifiedLayerNormalization", [*pair, "gamma"],
                              ["normed", *stats, "sum" if case != "sum unused" else ""], domain="com.microsoft",
                              epsilon=1e-5)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, K]),
              helper.make_tensor_value_info("skip", TensorProto.FLOAT, [2, 4, N])]
    graph = helper.make_graph(nodes, "norm", inputs, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                                                      for o in outs], inits)
    model = _with_opsets(graph)
    feeds = {"x": torch.randn(2, 4, K, generator=g).numpy(), "skip": torch.randn(2, 4, N, generator=g).numpy()}

    run = functools.partial(_outputs, tmp_path, feeds=feeds)

    before = run(model)
    _fold_skip_norm(model.graph)
    folded = case in ("sum used", "sum unused", "product second")
    ops = ["Int4MatMul", "SkipSimplifiedLayerNormalization"]
    assert [n.op_type for n in model.graph.node] == (["Int4MatMulSkipRmsNorm"] if folded else ops)
    assert all(np.abs(a - b).max() <= 1e-4 * np.abs(b).max() for a, b in zip(run(model), before))
    _back_to_matmulnbits(model.graph)  # MatMulNBits with fp32 compute: near, not equal (no int8 activations)
    assert [n.op_type for n in model.graph.node] == ["MatMulNBits", ops[1]]
    assert all(np.abs(a - b).max() <= 0.05 * np.abs(b).max() for a, b in zip(run(model), before))


@pytest.mark.parametrize("axis, fused", [(-1, True), (2, True), (1, False)])
def test_swiglu_after_an_int4_projection_becomes_one_node(tmp_path, axis, fused):
    """Int4MatMul -> Split -> silu(gate) * up is one Int4MatMulSwiGLU when the Split halves the last axis (and
    only then), and the graph gives what it gave before; undoing it (fp32 compute) gives it back again."""
    import numpy as np
    import torch
    from onnx import TensorProto, helper

    from seqedge.quant.onnx import _back_to_matmulnbits, _fuse_swiglu

    g = torch.Generator().manual_seed(0)
    N, K = 8, 64
    inits = _int4_weights(g, N, K)
    nodes = [helper.make_node("Int4MatMul", ["x", "B", "S"], ["y"], domain="seqedge", K=K),
             helper.make_node("Split", ["y"], ["gate", "up"], axis=axis, num_outputs=2),
             helper.make_node("Sigmoid", ["gate"], ["sig"]), helper.make_node("Mul", ["gate", "sig"], ["silu"]),
             helper.make_node("Mul", ["silu", "up"], ["out"])]
    graph = helper.make_graph(nodes, "glu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, K])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits,
                              value_info=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, N])])
    model = _with_opsets(graph)
    x = {"x": torch.randn(2, 4, K, generator=g).numpy()}

    run = lambda m: _outputs(tmp_path, m, x)[0]  # noqa: E731

    before = run(model)
    _fuse_swiglu(model.graph)
    assert [n.op_type for n in model.graph.node] == (["Int4MatMulSwiGLU"] if fused else [n.op_type for n in nodes])
    assert np.abs(run(model) - before).max() <= 1e-5 * np.abs(before).max()
    _back_to_matmulnbits(model.graph)  # MatMulNBits with fp32 compute: near, not equal (no int8 activations)
    assert [n.op_type for n in model.graph.node] == ["MatMulNBits", "Split", "Sigmoid", "Mul", "Mul"]
    assert np.abs(run(model) - before).max() <= 0.05 * np.abs(before).max()
