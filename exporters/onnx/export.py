"""ONNX exporter: a stateful graph `(tokens, *state) -> (logits, *new_state)` with dynamic length T.

One graph serves both entries: `prefill` (T >= 1) and `decode` (T = 1), said in the manifest.
seqedge's ops are lowered per flavour (lowerings.py); LSTM/GRU go through the TorchScript exporter,
which emits ONNX's own `LSTM`/`GRU` operators with dynamic T. The artifact is verified in
onnxruntime against the PyTorch model before the folder is renamed into place.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from seqedge.diagnostics import stage
from seqedge.errors import BadInputError
from seqedge.exporters.artifact import artifact_writer, base_manifest, finish
from seqedge.exporters.interface import Interface, StatefulGraph, example_inputs
from seqedge.exporters.lowering import Lowering, trace
from seqedge.exporters.onnx.fusions import ATTENTION_OPS, fuse
from seqedge.exporters.onnx.lowerings import FLAVOURS, resolve
from seqedge.exporters.plan import PREFILL_CHUNK, ExportPlan, int4_kernel_target, kv_cache_type
from seqedge.exporters.projections import fuse_projections
from seqedge.exporters.support import EXPORTABLE_LAYERS, check_supported
from seqedge.quant.onnx import (
    INT4_CONV,
    INT4_GATHER,
    INT4_KERNEL,
    INT4_NORM,
    INT4_PRODUCTS,
    INT4_SCAN,
    INT4_SWIGLU,
    grouped_codes,
    int4_codes,
    int4_compute,
)
from seqedge.quant.report import apply_onnx, onnx_weights
from seqedge.quant.report import prepare as prepare_quant
from seqedge.runtimes.ort_kernels import DOMAIN
from seqedge.runtimes.ort_kernels import needed as needs_seqedge_kernels

GRAPH = "model.onnx"
OPSET = 20


def _is_recurrent(model: nn.Module) -> bool:
    return any(isinstance(m, nn.RNNBase) for m in model.modules())


def export_graph(module, args, input_names, output_names, path: Path, lowerings: list[Lowering], dynamic_shapes,
                 subject: str | None = None, users_code: bool = False) -> list[Lowering]:
    """torch.export `module` with `lowerings` and write ONNX to `path`; returns the lowerings used."""
    translate = {lw.target: lw.fn for lw in lowerings if lw.kind == "translation"}
    hint = "try --ops portable" if any(lw.variant == "fused" for lw in lowerings) else ""
    with stage("torch.export", subject, hint, users_code):
        ep, used = trace(module, args, dynamic_shapes, lowerings)
    with stage("ONNX conversion", subject, hint):
        program = torch.onnx.export(ep, (), dynamo=True, custom_translation_table=translate, opset_version=OPSET,
                                    input_names=input_names, output_names=output_names, optimize=True, verbose=False)
        program.save(str(path))
    return used


def shared_buffer_state(graph) -> list[str]:
    """State inputs that an attention node (ATTENTION_OPS) reads as its cache and returns directly as the
    graph's `new.NAME`: input and output may share one buffer, which the kernel then updates in place
    instead of copying the whole cache (the runtime binds them so)."""
    inputs, outputs = {i.name for i in graph.input}, {o.name for o in graph.output}
    shared = []
    for node in graph.node:
        if (node.domain, node.op_type) in ATTENTION_OPS and len(node.input) > 4 and len(node.output) > 2:
            for past, present in ((node.input[3], node.output[1]), (node.input[4], node.output[2])):
                if past in inputs and present == f"new.{past}" and present in outputs:
                    shared.append(past)
    return shared


def state_as_graph_takes_it(state: list[dict], graph) -> list[dict]:
    """The manifest's state specs with each dtype the graph's input has (a fusion may retype a cache:
    fusions.half_attention_caches)."""
    types = {i.name: onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type).name for i in graph.input}
    return [{**s, "dtype": types.get(s["name"], s["dtype"])} for s in state]


def _export_torchscript(wrapper, args, names, path: Path, subject: str | None) -> None:
    with warnings.catch_warnings(), stage("ONNX conversion (TorchScript exporter)", subject):
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, args, str(path), dynamo=False, opset_version=17,
                          input_names=["tokens", *names], output_names=["logits", *(f"new.{n}" for n in names)],
                          dynamic_axes={"tokens": {1: "seq"}})


def export(model: nn.Module, plan: ExportPlan) -> dict:
    if plan.static_chunk:
        from seqedge.exporters.onnx.static import export_static

        return export_static(model, plan)
    if plan.ops not in FLAVOURS:
        raise BadInputError(f"unknown --ops {plan.ops!r}", f"valid: {', '.join(FLAVOURS)}")
    lowerings, fallbacks = resolve(plan.ops, unit=(plan.target or {}).get("unit", "cpu"))
    check_supported(model, EXPORTABLE_LAYERS, target="ONNX")
    model = model.eval()
    quant = prepare_quant(plan, model, "onnx")
    quant.int4_kernel = _int4_kernel(plan)
    interface = Interface.of(model)
    names = [s.name for s in interface.state]
    wrapper = StatefulGraph(fuse_projections(model), names)
    max_T = getattr(model, "max_seq_len", None) or 1 << 20
    args = example_inputs(model, T=plan.example_len)
    recurrent = _is_recurrent(model)

    with artifact_writer(plan.out, force=plan.force) as tmp:
        t0 = time.perf_counter()
        with torch.no_grad():
            if recurrent:
                _export_torchscript(wrapper, args, names, tmp / GRAPH, plan.subject)
                ops = [{"op": f"aten::{type(m).__name__.lower()}", "lowering": f"onnx {type(m).__name__}",
                        "kind": "native"} for m in model.modules() if isinstance(m, nn.RNNBase)][:1]
            else:
                T = torch.export.Dim("T", min=1, max=max_T)
                used = export_graph(wrapper, args, ["tokens", *names], ["logits", *(f"new.{n}" for n in names)],
                                    tmp / GRAPH, lowerings, {"tokens": {1: T}, "state": tuple(None for _ in names)},
                                    plan.subject, plan.users_code)
                ops = [{"op": lw.op, "lowering": lw.summary, "kind": lw.kind, "flavour": lw.variant} for lw in used]
                fallbacks = [w for w in fallbacks if any(w.startswith(f"{lw.op}:") for lw in used)]
            fusions = {}
            if not recurrent and plan.ops == "fused":
                with stage("ONNX fusions", plan.subject):
                    fusions = fuse(tmp / GRAPH, half_caches=kv_cache_type(plan) == "float16")
            with stage("ONNX quantization", plan.subject):
                apply_onnx(tmp / GRAPH, quant)
        export_seconds = time.perf_counter() - t0
        graph = onnx.load(str(tmp / GRAPH), load_external_data=False)
        int4 = [n for n in graph.graph.node if n.op_type in INT4_PRODUCTS and n.domain == DOMAIN]
        plain = [n for n in int4 if n.op_type in (INT4_KERNEL, INT4_CONV)]  # the ones that may carry a bias and split outputs
        fusions["int4_kernel"] = len(int4)
        fusions["int4_swiglu"] = sum(n.op_type == INT4_SWIGLU for n in int4)
        fusions["int4_bias"] = sum(len(n.input) > 3 and bool(n.input[3]) for n in plain) + sum(
            n.op_type == INT4_SCAN and bool(n.input[4]) for n in int4)
        fusions["int4_split"] = sum(len(n.output) > 1 for n in plain)
        fusions["int4_skip_norm"] = sum(n.op_type == INT4_NORM for n in int4)
        fusions["int4_conv"] = sum(n.op_type == INT4_CONV for n in int4)  # Mamba's in_proj + convolution
        fusions["int4_scan"] = sum(n.op_type == INT4_SCAN for n in int4)  # Mamba's dt_proj inside its scan
        grouped = {i.name for i in graph.graph.initializer if grouped_codes(i)}
        fusions["int4_grouped"] = sum(int4_codes(n) in grouped for n in int4)  # codes in groups of 16 rows
        fusions["int4_gather"] = sum(n.op_type == INT4_GATHER and n.domain == DOMAIN for n in graph.graph.node)
        opset = _opset(graph)
        weight_bytes, float_matrices = onnx_weights(tmp / GRAPH)
        base = base_manifest(model, plan, interface)
        manifest = {
            **base,
            "state": state_as_graph_takes_it(base["state"], graph.graph),
            "format": "onnx",
            "ops": ops,
            "flavour": "native" if recurrent else plan.ops,
            "graphs": {"prefill": GRAPH, "decode": GRAPH},
            "graph_note": "one graph with dynamic T serves prefill (T >= 1) and decode (T = 1); logits are for "
                          "the last position",
            "prefill_chunk": None if any(o["op"] == "seqedge::attention" for o in ops) else PREFILL_CHUNK,
            "opset": opset,
            "node_count": len(graph.graph.node),
            "in_place_state": shared_buffer_state(graph.graph),
            "fusions": {k: v for k, v in fusions.items() if v},
            "export_seconds": round(export_seconds, 2),
            "requires": _requires(opset, ops),
            "warnings": [] if recurrent else fallbacks,
        }
        manifest = _finish_int4_compute(tmp, model, manifest, plan, quant, weight_bytes, float_matrices,
                                        int4_compute(graph.graph))
    return manifest


def _opset(graph) -> dict[str, int]:
    """A loaded graph's opset imports, {domain: version} (the default domain as "ai.onnx")."""
    return {d.domain or "ai.onnx": d.version for d in graph.opset_import}


def _int4_kernel(plan: ExportPlan) -> bool:
    """int4 blocks of 32 run on seqedge's own kernel: in the fused flavour, for an AVX2 CPU target
    (int4_kernel_target), where seqedge's onnxruntime kernel library builds."""
    from seqedge.exporters.onnx.kernels import SEQEDGE_KERNELS

    return plan.ops == "fused" and int4_kernel_target(plan) and not SEQEDGE_KERNELS.problems()


def _requires(opset: dict[str, int], ops: list[dict]) -> str:
    """What runs the graph: onnxruntime (>= 1.31 for the contrib kernels), plus seqedge's own kernel library
    when a node is in its domain (the seqedge runtime registers it; runtimes/ort_kernels.py)."""
    ort = "onnxruntime>=1.31" if any(o.get("flavour") in ("fused", "contrib") for o in ops) else "onnxruntime"
    if needs_seqedge_kernels(opset):
        return f"{ort} with seqedge's kernel library (libseqedge_ort_kernels; seqedge registers it)"
    return ort


def _finish_int4_compute(tmp: Path, model, manifest: dict, plan: ExportPlan, quant, weight_bytes: int,
                         float_matrices: list, compute: str | None) -> dict:
    """Verify and gate (artifact.finish). An int4 graph computes with int8 activations first; where that fails
    the parity or accuracy gate, its MatMulNBits nodes are switched to fp32 compute and it is checked again."""
    from seqedge.errors import ParityError
    from seqedge.quant.onnx import set_int4_compute
    from seqedge.quant.report import AccuracyError

    if compute is None:
        return finish(tmp, model, manifest, plan, quant, weight_bytes, float_matrices)
    try:
        return finish(tmp, model, {**manifest, "int4_compute": compute}, plan, quant, weight_bytes, float_matrices)
    except (ParityError, AccuracyError) as e:
        if compute != "int8":
            raise
        with stage("ONNX int4 with fp32 compute", plan.subject):
            set_int4_compute(tmp / GRAPH, "fp32")
        note = f"int8 compute failed the gate ({e.message}); fp32 compute"
        fusions = {k: v for k, v in manifest["fusions"].items() if not k.startswith("int4_")}  # MatMulNBits again
        opset = _opset(onnx.load(str(tmp / GRAPH), load_external_data=False))
        manifest = {**manifest, "fusions": fusions, "opset": opset, "requires": _requires(opset, manifest["ops"]),
                    "int4_compute": "fp32", "int4_compute_note": note}
        return finish(tmp, model, manifest, plan, quant, *onnx_weights(tmp / GRAPH))
