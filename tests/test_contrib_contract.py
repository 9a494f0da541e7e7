"""Every fused ONNX lowering against the installed onnxruntime's own operator registry.

A new onnxruntime may rename, add or retype an input, attribute or output of a contrib op (1.32 gave
CausalConvWithState a third output). These tests fail naming the op, the field and the version when the
installed onnxruntime breaks a lowering's contract; the exporter then falls back to the portable lowering
with a warning in the manifest instead of crashing (checked end to end below).
"""

import dataclasses
import json

import onnx
import pytest
import torch

from seqedge.exporters import ExportPlan, export
from seqedge.exporters.onnx import contrib, kernels
from seqedge.exporters.onnx.contrib import ort_schemas, ort_version
from seqedge.exporters.onnx.lowerings import CAUSAL_CONV, LINEAR_ATTENTION, LOWERINGS, resolve
from seqedge.models import build_model

FUSED = LOWERINGS.for_variant("fused") + LOWERINGS.for_variant("contrib")


def test_every_fused_lowering_states_its_contract():
    for lw in FUSED:
        if lw.kind == "translation":
            assert lw.uses, f"{lw.op}: fused translation without a contract (ContribUse or SEQEDGE_KERNELS)"


@pytest.mark.parametrize("use", [u for lw in FUSED for u in lw.uses], ids=lambda u: u.op)
def test_contract_holds_on_installed_onnxruntime(use):
    problems = use.problems()
    assert not problems, f"onnxruntime {ort_version()}: " + "; ".join(problems)


@pytest.mark.parametrize("change, needle", [
    (lambda u: dataclasses.replace(u, op="NoSuchOp"), "com.microsoft.NoSuchOp is not registered"),
    (lambda u: dataclasses.replace(u, outputs=u.outputs + (("state_out", "float"),)), "output 2"),
    (lambda u: dataclasses.replace(u, inputs=(("past_state", "float"),) + u.inputs[1:]), "input 0 is 'input', not 'past_state'"),
    (lambda u: dataclasses.replace(u, inputs=u.inputs[:1]), "input 1 (weight) is required but not passed"),
    (lambda u: dataclasses.replace(u, inputs=(("input", "int64"),) + u.inputs[1:]), "does not accept tensor(int64)"),
    (lambda u: dataclasses.replace(u, attributes=(("activation", "INT"),)), "attribute 'activation' is STRING, not INT"),
    (lambda u: dataclasses.replace(u, attributes=(("no_such_attr", "INT"),)), "attribute 'no_such_attr' is not declared"),
])
def test_contract_check_names_the_broken_field(change, needle):
    """The checker against the real registry, with contracts that do not hold: each names its field."""
    problems = change(CAUSAL_CONV).problems()
    assert any(needle in p for p in problems), problems
    assert all(p.startswith("com.microsoft.") for p in problems)


def test_required_attribute_left_unset_is_named():
    problems = dataclasses.replace(LINEAR_ATTENTION, attributes=(("update_rule", "STRING"),)).problems()
    assert {"com.microsoft.LinearAttention: attribute 'q_num_heads' is required but not set",
            "com.microsoft.LinearAttention: attribute 'kv_num_heads' is required but not set"} <= set(problems)


def test_nodes_have_exactly_the_outputs_the_lowering_reads(tmp_path):
    """The emitted node asks for the contract's outputs only, whatever onnxruntime declares beyond them."""
    from tests.test_onnx_export import _run_op_graph

    nodes = {}
    for op in ("seqedge::ssd_scan", "seqedge::causal_conv1d"):  # LinearAttention, CausalConvWithState: contrib forms
        _run_op_graph(op, "contrib", tmp_path, lengths=[3])
        nodes.update({n.op_type: n for n in onnx.load(str(tmp_path / "op.onnx")).graph.node if n.domain == "com.microsoft"})
    for use in (CAUSAL_CONV, LINEAR_ATTENTION):
        assert len(nodes[use.op].output) == len(use.outputs), nodes[use.op]


def test_resolve_falls_back_per_op_with_a_warning():
    without_moe = {k: v for k, v in ort_schemas().items() if k != "MoE"}
    chosen, warnings = resolve("fused", without_moe)
    by_op = {lw.op: lw.variant for lw in chosen}
    assert by_op == {"seqedge::selective_scan": "fused", "seqedge::ssd_scan": "fused",
                     "seqedge::causal_conv1d": "fused", "seqedge::attention": "fused", "seqedge::moe_ffn": "portable"}
    assert len(warnings) == 1 and warnings[0].startswith("seqedge::moe_ffn:")
    assert "MoE is not registered" in warnings[0] and ort_version() in warnings[0]


def test_export_with_a_broken_contract_falls_back_and_records_it(tmp_path, monkeypatch):
    """A machine without seqedge's kernels and an onnxruntime without CausalConvWithState: the Mamba-2 export
    still succeeds (its scan on LinearAttention, its convolution portable; real onnxruntime parity) and the
    manifest says what happened, once per op."""
    schemas = {k: v for k, v in ort_schemas().items() if k != "CausalConvWithState"}  # the registry view seqedge reads
    monkeypatch.setattr(contrib, "ort_schemas", lambda: schemas)
    monkeypatch.setattr(kernels, "problems", lambda: ["seqedge's onnxruntime kernels are not available here (no c++)"])
    torch.manual_seed(0)
    manifest = export(build_model("mamba2", "tiny").eval(), ExportPlan(out=tmp_path / "a", verify_steps=8))
    flavours = {o["op"]: o["flavour"] for o in manifest["ops"]}
    assert flavours == {"seqedge::ssd_scan": "contrib", "seqedge::causal_conv1d": "portable"}
    conv = [w for w in manifest["warnings"] if w.startswith("seqedge::causal_conv1d:")]
    assert len(conv) == 1 and "CausalConvWithState" in conv[0] and "no c++" in conv[0]
    assert "seqedge" not in manifest["opset"]
    assert manifest["parity"]["passed"]
    on_disk = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert on_disk["warnings"] == manifest["warnings"]


@pytest.mark.parametrize("linear_attention", [True, False])
def test_without_seqedge_kernels_the_scan_takes_the_next_lowering(monkeypatch, linear_attention):
    """A machine that cannot build seqedge's onnxruntime kernels (no compiler): the Mamba-1 scan takes
    onnxruntime's LinearAttention, or the portable Scan when that contract fails too — each said once."""
    monkeypatch.setattr(kernels, "problems", lambda: ["seqedge's onnxruntime kernels are not available here (no c++)"])
    schemas = ort_schemas() if linear_attention else {k: v for k, v in ort_schemas().items() if k != "LinearAttention"}
    chosen, warnings = resolve("fused", schemas)
    scan = next(lw for lw in chosen if lw.op == "seqedge::selective_scan")
    assert scan.variant == ("contrib" if linear_attention else "portable")
    mine = [w for w in warnings if w.startswith("seqedge::selective_scan:")]
    assert len(mine) == 1 and "no c++" in mine[0] and f"used the {scan.variant} lowering" in mine[0]
    assert ("LinearAttention is not registered" in mine[0]) == (not linear_attention)
