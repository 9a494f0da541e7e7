"""The families and presets beside the four first ones: S4D (its two prefill forms), the Elman RNN's two
nonlinearities, multi-query attention through every attention lowering, and the byte-level MambaByte shape.
The family-wide protocol and export matrices (test_models, test_onnx_export, test_executorch_export) cover
every registered family's `tiny` preset; here are the variants those do not reach."""

import onnx
import pytest
import torch

from seqedge.bench.shape import ModelShape, kv_itemsize
from seqedge.errors import CorruptFileError
from seqedge.exporters import ExportPlan, export
from seqedge.models import FAMILIES, build_model, config_from_dict
from seqedge.models.s4 import s4d_convolution
from seqedge.models.transformer import moe_ref
from seqedge.runtimes import open_artifact


@pytest.mark.parametrize("T", [1, 5, 300])
def test_s4d_convolution_equals_the_scan(T):
    """The FFT convolution (what PyTorch runs for T > 1) and the scan (what every artifact runs, and decode)
    give the same outputs and the same carried state, from a non-zero state; the model runs the convolution
    eagerly and the scan only under torch.export."""
    torch.manual_seed(T)
    layer = build_model("s4", "tiny").layers[0].s4
    with torch.no_grad():
        layer.C.normal_()
        layer.B.uniform_(0.5, 1.5)
    u, state = torch.randn(2, T, 96), torch.randn(2, 96, 16)
    with torch.no_grad():
        y_scan, s_scan = layer.scan(u, state)
        y_conv, s_conv = s4d_convolution(layer, u, state)
    scale = y_scan.abs().max().item()
    assert (y_scan - y_conv).abs().max().item() <= 1e-4 * max(1.0, scale)
    assert (s_scan - s_conv).abs().max().item() <= 1e-4 * max(1.0, s_scan.abs().max().item())
    graph = torch.export.export(layer, (u, state)).graph_module.code
    assert "selective_scan" in graph and "fft" not in graph


def test_s4d_prefill_gradient_reaches_every_parameter():
    model = build_model("s4", "tiny").train()
    loss = model(torch.randint(0, 256, (2, 33))).logsumexp(-1).mean()
    loss.backward()
    s4 = model.layers[1].s4
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in (s4.log_dt, s4.log_A_real, s4.B, s4.C, s4.D))


@pytest.mark.parametrize("config, needle", [
    ({"family": "rnn", "nonlinearity": "sigmoid"}, "nonlinearity must be 'tanh' or 'relu'"),
    ({"family": "s4", "dt_min": 0.5, "dt_max": 0.1}, "dt_min (0.5) must be below dt_max (0.1)"),
    ({"family": "s4", "state_size": 0}, "state_size must be an integer"),
])
def test_family_configs_refuse_bad_values(config, needle):
    with pytest.raises(CorruptFileError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        config_from_dict(config)


def test_moe_dense_masked_form_equals_the_per_token_reference():
    """Every expert weighted by its routing weight (zero when not chosen) equals running each token's k chosen
    experts only, with and without renormalised weights, and no token's output mixes more than k experts."""
    torch.manual_seed(0)
    for renormalise in (True, False):
        model = build_model("transformer", "tiny-moe", norm_topk_prob=renormalise).eval()
        moe = model.model.layers[1].block_sparse_moe
        x = torch.randn(2, 7, 64)
        with torch.no_grad():
            assert (moe(x) - moe_ref(moe, x)).abs().max().item() <= 1e-6
            weights, chosen = moe.routing(x)
        assert chosen.shape == (2, 7, 2) and (chosen[..., 0] != chosen[..., 1]).all()
        assert torch.allclose(weights.sum(-1), torch.ones(2, 7)) == renormalise


def test_moe_projection_reads_the_chosen_experts_like_a_dense_model_of_that_width():
    """OLMoE-1B-7B (64 experts of width 1024, 8 chosen): a decoded token reads what a dense model whose
    feed-forward is 8 × 1024 wide reads (plus the router), not the 6.9 B parameters' worth."""
    moe_cfg = FAMILIES["transformer"].presets["olmoe-1b-7b"]
    moe = ModelShape.of_config({"family": "transformer", **moe_cfg})
    dense_cfg = {k: v for k, v in moe_cfg.items() if k not in ("num_local_experts", "num_experts_per_tok",
                                                                "norm_topk_prob")}
    dense = ModelShape.of_config({"family": "transformer", **dense_cfg, "intermediate_size": 8 * 1024})
    router = 16 * 2048 * 64
    assert 6.5e9 < moe.parameters < 7.2e9 and moe.parameters - moe.experts_inactive == dense.parameters + router
    for bits in (4.5, 8.0, 32.0):
        assert moe.decode_bytes(bits, context=512) == pytest.approx(dense.decode_bytes(bits, context=512)
                                                                    + router * bits / 8)
    assert moe.decode_flops(512) == pytest.approx(dense.decode_flops(512) + 2 * router)


# (family, preset) variants x (format, ops) the family matrices do not reach (they export every family's `tiny`,
# mamba2's with n_groups 2, in both formats with 64-step parity): parity and the structure each promises
VARIANTS = [
    ("transformer", "tiny-mqa", "onnx", "fused"),
    ("transformer", "tiny-mqa", "onnx", "portable"),
    ("transformer", "tiny-mqa", "executorch", "fused"),
    ("transformer", "tiny-moe", "onnx", "fused"),
    ("transformer", "tiny-moe", "onnx", "portable"),
    ("transformer", "tiny-moe", "executorch", "fused"),
    ("rnn", "tiny-relu", "onnx", "fused"),
]


@pytest.mark.parametrize("fmt, ops, quant, kv_cache, want", [
    ("onnx", "fused", "fp32", "float16", "float16"), ("executorch", "fused", "fp32", "float16", "float16"),
    ("onnx", "portable", "fp32", "float16", "float32"),  # no seqedge kernel holds them: float32 as the graph computes
    ("executorch", "fused", "fp32", None, "float32"), ("onnx", "fused", "fp32", None, "float32"),  # the defaults:
    ("executorch", "fused", "int8", None, "float16"), ("onnx", "fused", "int8", None, "float16"),  # by the recipe
    ("onnx", "fused", "int8", "float32", "float32"),
])
def test_kv_cache_type_is_what_the_plan_asks_where_seqedge_holds_the_caches(fmt, ops, quant, kv_cache, want, tmp_path):
    """ExportPlan.kv_cache (--kv-cache), else float32 for fp32 weights and float16 for a quantized recipe: the
    attention caches' type in the manifest (`state` in onnxruntime, where the graph's inputs and outputs say the
    same; `held_state` in ExecuTorch); the artifact runs from it, agrees with the PyTorch model over a prompt and
    decode steps, and greedy decoding is unchanged. fp32 weights with float16 caches are gated on KL, not on
    fp32's logit tolerance."""
    torch.manual_seed(0)
    model = build_model("transformer", "tiny").eval()
    m = export(model, ExportPlan(out=tmp_path / "a", format=fmt, ops=ops, quant=quant, kv_cache=kv_cache, max_len=64,
                                 verify_steps=32))
    caches = [s for s in m["state"] + m.get("held_state", []) if s["name"].startswith(("k.", "v."))]
    assert len(caches) == 2 * model.config.num_hidden_layers and {s["dtype"] for s in caches} == {want}, caches
    assert kv_itemsize(m) == torch.empty(0, dtype=getattr(torch, want)).element_size()  # what bench projects
    if fmt == "onnx":
        graph = onnx.load(str(tmp_path / "a" / "model.onnx")).graph
        types = {v.name.removeprefix("new."): v.type.tensor_type.elem_type for v in [*graph.input, *graph.output]
                 if v.name.removeprefix("new.") in {s["name"] for s in caches}}
        assert set(types.values()) == {onnx.helper.np_dtype_to_tensor_dtype(torch.empty(0, dtype=getattr(torch, want)).numpy().dtype)}
    if fmt == "executorch":  # keys and values rounded into float16 caches by seqedge's kernel, listed as it is called
        from executorch.exir._serialize._program import deserialize_pte_binary

        program = deserialize_pte_binary((tmp_path / "a" / "model.pte").read_bytes())
        for plan in getattr(program, "program", program).execution_plan:
            called = {op.name for op in plan.operators}
            assert ("seqedge::to_half" in called) == (want == "float16"), (plan.name, called)
        assert ("seqedge::to_half.out" in m["native_kernels"]) == (want == "float16")
    assert m["parity"]["passed"]
    if quant == "fp32":
        assert m["parity"]["token_agreement"] == 1.0
        assert m["parity"]["max_abs_diff"] < (1e-3 if want == "float16" else 1e-4), m["parity"]
        assert (m["parity"]["tolerance"] is None) == (want == "float16"), m["parity"]  # KL-gated, or exact


@pytest.mark.parametrize("family, preset, fmt, ops", VARIANTS)
def test_variant_presets_export_with_parity(family, preset, fmt, ops, tmp_path):
    torch.manual_seed(0)
    model = build_model(family, preset).eval()
    m = export(model, ExportPlan(out=tmp_path / "a", format=fmt, ops=ops, max_len=64, verify_steps=32))
    assert m["parity"]["passed"] and m["parity"]["steps"] == 32 and m["parity"]["token_agreement"] == 1.0
    if family == "transformer":  # the config's KV heads (MQA: one) in every layer's cache, passed in or held
        caches = [s for s in m["state"] + m.get("held_state", []) if s["name"].startswith(("k.", "v."))]
        heads = [s["shape"][2] if "layout" in s else s["shape"][1] for s in caches]  # held: (batch, seq, kv_heads, hd)
        assert len(caches) == 2 * model.config.num_hidden_layers, caches
        assert set(heads) == {model.config.num_key_value_heads} and (preset != "tiny-mqa" or heads[0] == 1), caches
    runner = open_artifact(tmp_path / "a")
    state = runner.init_state(1)
    tokens = torch.randint(0, 256, (1, 20))
    with torch.no_grad():
        ref, _ = model.prefill(tokens, model.init_state(1), last_only=True)
        got, _ = runner.prefill(tokens, state)
    assert (ref - got).abs().max().item() < 1e-3
    runner.close()
    if preset == "tiny-moe":  # one top-k node per layer reads the chosen experts: onnxruntime's MoE, seqedge's kernel
        if fmt == "executorch":
            assert "seqedge::moe_ffn.out" in m["native_kernels"], m["native_kernels"]
        else:
            kinds = [n.op_type for n in onnx.load(str(tmp_path / "a" / "model.onnx")).graph.node if "MoE" in n.op_type]
            assert kinds == (["MoE"] * model.config.num_hidden_layers if ops == "fused" else []), kinds
    if fmt == "onnx":
        nodes = onnx.load(str(tmp_path / "a" / "model.onnx")).graph.node
        if (family, ops) == ("transformer", "fused"):  # seqedge's attention kernel in every layer, on its caches
            attention = [list(n.input[3:5]) for n in nodes if (n.domain, n.op_type) == ("seqedge", "Attention")]
            assert attention == [[f"k.{i}", f"v.{i}"] for i in range(model.config.num_hidden_layers)], attention
        if family == "rnn":
            acts = [list(a.strings) for n in nodes if n.op_type == "RNN" for a in n.attribute if a.name == "activations"]
            assert acts and all(a == [b"Relu"] for a in acts), acts


@pytest.mark.parametrize("quant", ["int8", "int4"])
def test_moe_onnx_quantizes_the_experts_into_qmoe(quant, tmp_path):
    """int8/int4 ONNX exports of a mixture store the experts as QMoE codes (no expert weight left float), pass
    their gates, and come out smaller than the float-expert graph would."""
    torch.manual_seed(0)
    model = build_model("transformer", "tiny-moe").eval()
    m = export(model, ExportPlan(out=tmp_path / "a", format="onnx", quant=quant, max_len=64, verify_steps=16))
    nodes = onnx.load(str(tmp_path / "a" / "model.onnx")).graph.node
    qmoe = [n for n in nodes if n.op_type == "QMoE"]
    assert len(qmoe) == model.config.num_hidden_layers and not [n for n in nodes if n.op_type == "MoE"]
    assert {a.i for n in qmoe for a in n.attribute if a.name == "expert_weight_bits"} == {int(quant[3:])}
    assert not [s for s in m["quant"]["skipped"] if "experts" in s["layer"]], m["quant"]["skipped"]
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    assert m["parity"]["passed"] and m["quant"]["weight_bytes"] < m["quant"]["weight_bytes_fp32"] - 3 * experts


def test_mambabyte_shape_is_the_papers_353m_byte_model():
    shape = ModelShape.of_config({"family": "mamba", **FAMILIES["mamba"].presets["mambabyte-353m"]})
    assert shape.vocab == 256 and 340e6 <= shape.parameters <= 365e6, shape.parameters
    assert shape.scan_flops > 0 and shape.kv_heads == 0
