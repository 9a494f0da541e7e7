"""The families and presets beside the four first ones: S4D (its two prefill forms), the Elman RNN's two
nonlinearities, multi-query attention through every attention lowering, and the byte-level MambaByte shape.
The family-wide protocol and export matrices (test_models, test_onnx_export, test_executorch_export) cover
every registered family's `tiny` preset; here are the variants those do not reach."""

import onnx
import pytest
import torch

from seqedge.bench.shape import ModelShape
from seqedge.errors import CorruptFileError
from seqedge.exporters import ExportPlan, export
from seqedge.models import FAMILIES, build_model, config_from_dict
from seqedge.models.s4 import s4d_convolution
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


# (family, preset) variants x (format, ops): each must export with 64-step parity and the structure it promises
VARIANTS = [
    ("transformer", "tiny-mqa", "onnx", "fused"),
    ("transformer", "tiny-mqa", "onnx", "portable"),
    ("transformer", "tiny-mqa", "executorch", "fused"),
    ("mamba2", "tiny-groups", "onnx", "fused"),
    ("mamba2", "tiny-groups", "executorch", "fused"),
    ("rnn", "tiny-relu", "onnx", "fused"),
    ("rnn", "tiny-relu", "executorch", "fused"),
]


@pytest.mark.parametrize("family, preset, fmt, ops", VARIANTS)
def test_variant_presets_export_with_parity(family, preset, fmt, ops, tmp_path):
    torch.manual_seed(0)
    model = build_model(family, preset).eval()
    m = export(model, ExportPlan(out=tmp_path / "a", format=fmt, ops=ops, max_len=64, verify_steps=64))
    assert m["parity"]["passed"] and m["parity"]["steps"] == 64 and m["parity"]["token_agreement"] == 1.0
    if family == "transformer":  # one KV head in every layer's cache, passed in (ONNX) or held by the program
        caches = [s for s in m["state"] + m.get("held_state", []) if s["name"].startswith(("k.", "v."))]
        heads = [s["shape"][2] if "layout" in s else s["shape"][1] for s in caches]  # held: (batch, seq, kv_heads, hd)
        assert len(caches) == 2 * model.config.num_hidden_layers and set(heads) == {1}, caches
    runner = open_artifact(tmp_path / "a")
    state = runner.init_state(1)
    tokens = torch.randint(0, 256, (1, 20))
    with torch.no_grad():
        ref, _ = model.prefill(tokens, model.init_state(1), last_only=True)
        got, _ = runner.prefill(tokens, state)
    assert (ref - got).abs().max().item() < 1e-3
    runner.close()
    if fmt == "onnx":
        nodes = onnx.load(str(tmp_path / "a" / "model.onnx")).graph.node
        if (family, ops) == ("transformer", "fused"):
            gqa = [n for n in nodes if n.op_type == "GroupQueryAttention"]
            assert gqa and all({a.name: a.i for a in n.attribute}["kv_num_heads"] == 1 for n in gqa)
        if family == "rnn":
            acts = [list(a.strings) for n in nodes if n.op_type == "RNN" for a in n.attribute if a.name == "activations"]
            assert acts and all(a == [b"Relu"] for a in acts), acts


def test_mambabyte_shape_is_the_papers_353m_byte_model():
    shape = ModelShape.of_config({"family": "mamba", **FAMILIES["mamba"].presets["mambabyte-353m"]})
    assert shape.vocab == 256 and 340e6 <= shape.parameters <= 365e6, shape.parameters
    assert shape.scan_flops > 0 and shape.kv_heads == 0
