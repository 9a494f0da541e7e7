"""Static-shape ONNX artifacts for NPUs: a fixed prefill chunk and a fixed decode step, state as explicit I/O.

    prefill.onnx   (tokens (1, C), length (1,), *state) -> (logits (1, 1, V), *new_state)
    decode.onnx    (tokens (1, 1), *state)              -> (logits (1, 1, V), *new_state)

NPU compilers (Qualcomm's HTP, Apple's Neural Engine) take no dynamic dimension and no control flow: every
shape is fixed at export, the batch is 1, and the scans are written out over the chunk's T (the `static`
lowerings). A prompt runs as chunks of C tokens; the last chunk is padded and `length` says how many of its
tokens are real (the model's `prefill_padded`: the padding leaves the state as it was). The runtime
(runtimes/onnxruntime_static.py) feeds the chunks and takes single tokens through the decode graph.

For a device profile whose NPU option is `onnxruntime/qnn` the plan carries the SoC (`htp_arch`,
`soc_model`): both graphs are then compiled for it into EPContext models with their context binaries
(`prefill.htp.onnx` + `prefill.htp_qnn.bin`, the same for decode), and the manifest records which nodes the HTP took and which it left to the CPU.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from seqedge.diagnostics import stage
from seqedge.errors import ParityError, UnsupportedError
from seqedge.exporters.artifact import artifact_writer, base_manifest, finish, write_manifest
from seqedge.exporters.interface import Interface
from seqedge.exporters.onnx.export import export_graph
from seqedge.exporters.onnx.lowerings import static_lowerings
from seqedge.exporters.plan import ExportPlan
from seqedge.exporters.projections import fuse_projections
from seqedge.exporters.support import EXPORTABLE_LAYERS, check_supported
from seqedge.models import TensorSpec
from seqedge.quant.report import apply_onnx, onnx_weights
from seqedge.quant.report import prepare as prepare_quant

PREFILL, DECODE = "prefill.onnx", "decode.onnx"
QNN_RECIPES = ("w8a16", "w8a8")  # quant/onnx.py: qnn_qdq takes the static graphs' own calibration feeds


class PaddedChunk(nn.Module):
    def __init__(self, model: nn.Module, state_names: list[str]):
        super().__init__()
        self.model, self.state_names = model, state_names

    def forward(self, tokens: Tensor, length: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        logits, new = self.model.prefill_padded(tokens, length, dict(zip(self.state_names, state)))
        return (logits, *(new[n] for n in self.state_names))


class Step(nn.Module):
    def __init__(self, model: nn.Module, state_names: list[str]):
        super().__init__()
        self.model, self.state_names = model, state_names

    def forward(self, tokens: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        logits, new = self.model.prefill(tokens, dict(zip(self.state_names, state)), last_only=True)
        return (logits, *(new[n] for n in self.state_names))


def check_static(model: nn.Module, chunk: int) -> None:
    """Refuse, by name, what a static artifact cannot express."""
    family = getattr(getattr(model, "config", None), "family", type(model).__name__)
    try:
        with torch.no_grad():
            model.prefill_padded(torch.zeros(1, 2, dtype=torch.long), torch.tensor([1]), model.init_state(1))
    except NotImplementedError:
        raise UnsupportedError(f"{family} models have no padded prefill chunk, so no static-shape artifact",
                               "static artifacts cover the transformer and mamba families; export without "
                               "--static-chunk") from None
    cache = getattr(model, "max_seq_len", None)
    if cache is not None and chunk > cache:
        raise UnsupportedError(f"--static-chunk {chunk} is longer than the model's cache ({cache} positions)",
                               f"use --static-chunk {min(128, cache)} or less")


def static_interface(model: nn.Module, chunk: int) -> Interface:
    dynamic = Interface.of(model)  # (one probe call of the model)
    state = [TensorSpec(s.name, s.dtype, tuple(1 if d == "batch" else d for d in s.shape)) for s in dynamic.state]
    vocab = dynamic.outputs[0].shape[-1]
    inputs = [TensorSpec("tokens", "int64", (1, chunk)), TensorSpec("length", "int64", (1,)), *state]
    outputs = [TensorSpec("logits", "float32", (1, 1, vocab)), *(TensorSpec(f"new.{s.name}", s.dtype, s.shape)
                                                                  for s in state)]
    return Interface(inputs, outputs, state)


def divide_instead_of_reciprocal(path: Path) -> int:
    """Mul(x, Reciprocal(s)) -> Div(x, s) (RMSNorm's x * rsqrt(v) exports as Sqrt, Reciprocal, Mul). Qualcomm's HTP
    computes a 16-bit quantized Reciprocal wrongly: on onnxruntime-qnn 2.7's emulator an RMSNorm of 0.03-scale
    inputs came out 2.44 off in values up to 2.53 (CPU-QDQ of the same graph: exact), Div(x, Sqrt(v)) 0.0007
    off — and a trained small transformer's logits 6 off. Returns the Reciprocals replaced."""
    from collections import defaultdict

    model = onnx.load(str(path))
    graph = model.graph
    users = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            users[name].append(node)
    outputs = {o.name for o in graph.output}
    replaced = []
    for node in graph.node:
        out = node.output[0] if node.op_type == "Reciprocal" else None
        if out is None or out in outputs or not users[out] or any(u.op_type != "Mul" or list(u.input).count(out) != 1
                                                                   for u in users[out]):
            continue
        for mul in users[out]:
            x = mul.input[1] if mul.input[0] == out else mul.input[0]
            mul.op_type = "Div"
            del mul.input[:]
            mul.input.extend([x, node.input[0]])
        replaced.append(node)
    for node in replaced:
        graph.node.remove(node)
    if replaced:
        onnx.save(model, str(path))
    return len(replaced)


def calibration_feeds(prefill: Path, decode: Path, ctx, chunk: int, steps: int = 128) -> tuple[list, list]:
    """Calibration inputs for both graphs: the calibration text as padded chunks (the last one short) with
    the state carried, then `steps` single tokens through the decode graph from where the chunks ended."""
    import onnxruntime as ort

    data = np.frombuffer(ctx.calibration, dtype=np.uint8).astype(np.int64)
    state = {n: t.numpy() for n, t in ctx.init_state.items()}
    names = list(state)
    chunk_session = ort.InferenceSession(str(prefill), providers=["CPUExecutionProvider"])
    text, tail = data[:max(len(data) - steps, 1)], data[max(len(data) - steps, 1):]
    prefill_feeds = []
    for start in range(0, len(text), chunk):
        piece = text[start:start + chunk]
        tokens = np.zeros((1, chunk), np.int64)
        tokens[0, :len(piece)] = piece
        feed = {"tokens": tokens, "length": np.array([len(piece)], np.int64), **state}
        prefill_feeds.append(feed)
        state = dict(zip(names, chunk_session.run(None, feed)[1:]))
    step_session = ort.InferenceSession(str(decode), providers=["CPUExecutionProvider"])
    decode_feeds = []
    for token in tail:
        feed = {"tokens": np.array([[token]], np.int64), **state}
        decode_feeds.append(feed)
        state = dict(zip(names, step_session.run(None, feed)[1:]))
    return prefill_feeds, decode_feeds


def export_static(model: nn.Module, plan: ExportPlan) -> dict:
    from seqedge.quant.onnx import qnn_qdq

    chunk = plan.static_chunk
    if plan.qnn:  # before minutes of work: the HTP's compiler is onnxruntime-qnn's
        from seqedge.runtimes.qnn import qnn_module

        qnn_module()
        if plan.quant not in QNN_RECIPES:
            raise UnsupportedError(f"the HTP takes QDQ graphs in its own encodings, not {plan.quant}",
                                   f"pass --quant {' or --quant '.join(QNN_RECIPES)}")
    check_supported(model, EXPORTABLE_LAYERS, target="ONNX")
    model = model.eval()
    check_static(model, chunk)
    quant = prepare_quant(plan, model, "onnx")
    interface = static_interface(model, chunk)
    names = [s.name for s in interface.state]
    fused = fuse_projections(model)
    state = list(model.init_state(1).values())
    lowerings = static_lowerings()
    outputs = ["logits", *(f"new.{n}" for n in names)]

    with artifact_writer(plan.out, force=plan.force) as tmp:
        t0 = time.perf_counter()
        with torch.no_grad():
            tokens = torch.arange(chunk)[None] % 256  # (1, C)
            used = export_graph(PaddedChunk(fused, names), (tokens, torch.tensor([chunk]), *state),
                                ["tokens", "length", *names], outputs, tmp / PREFILL, lowerings, None, plan.subject,
                                plan.users_code)
            used += export_graph(Step(fused, names), (tokens[:, :1], *state), ["tokens", *names], outputs,
                                 tmp / DECODE, lowerings, None, plan.subject, plan.users_code)
        for graph in (PREFILL, DECODE):
            divide_instead_of_reciprocal(tmp / graph)
        with stage("ONNX quantization", plan.subject):
            if quant.recipe.name in QNN_RECIPES:
                with stage("calibration feeds for both graphs", plan.subject):
                    feeds = calibration_feeds(tmp / PREFILL, tmp / DECODE, quant, chunk)
                for graph, graph_feeds in zip((PREFILL, DECODE), feeds):
                    qnn_qdq(tmp / graph, quant, graph_feeds)
            else:
                for graph in (PREFILL, DECODE):
                    apply_onnx(tmp / graph, quant)
        prefill = onnx.load(str(tmp / PREFILL), load_external_data=False)
        ops = {lw.op: {"op": lw.op, "lowering": lw.summary, "kind": lw.kind, "flavour": lw.variant} for lw in used}
        manifest = {
            **base_manifest(model, plan, interface),
            "format": "onnx",
            "ops": list(ops.values()),
            "flavour": "static",
            "graphs": {"prefill": PREFILL, "decode": DECODE},
            "graph_note": f"static shapes for NPUs: {PREFILL} takes a chunk of {chunk} tokens (padded; `length` "
                          f"real), {DECODE} one token; batch 1; logits are for the last real position",
            "static": {"chunk": chunk, "batch": 1},
            "opset": {d.domain or "ai.onnx": d.version for d in prefill.opset_import},
            "node_count": len(prefill.graph.node),
            "requires": "onnxruntime (any execution provider: standard ops, static shapes)",
        }
        if plan.qnn:
            with stage("QNN HTP: coverage and context binaries", plan.subject):
                manifest["qnn"] = compile_for_htp(tmp, plan.qnn, plan.threads)
        manifest["export_seconds"] = round(time.perf_counter() - t0, 2)
        weight_bytes, float_matrices = onnx_weights(tmp / PREFILL)
        # verified on the CPU provider (the CPU-QDQ form); the HTP's own run follows
        manifest = finish(tmp, model, manifest, plan, quant, weight_bytes, float_matrices, backend="cpu")
        if plan.qnn and plan.verify:
            with stage("verification on the HTP emulator", plan.subject):
                manifest["qnn"]["emulator"] = check_on_htp(tmp, model, manifest, plan)
            manifest = write_manifest(tmp, manifest)
    return manifest


def check_on_htp(folder: Path, model: nn.Module, manifest: dict, plan: ExportPlan) -> dict:
    """The graphs on onnxruntime-qnn's HTP (emulated on x86-64) against the fp32 model under the recipe's
    rule — the export fails if they do not pass —, their bits/byte beside the CPU-QDQ run's (finish measured
    that one), and how far the HTP's logits are from the CPU provider's on the same QDQ graphs: a gap there
    is the emulator's or the HTP's, not quantization's. The emulator is slow (tens of ms a step), so its
    bits/byte use the first 256 held-out tokens at most (the plan's eval_bytes), and the CPU-QDQ form is
    measured again on the same ones."""
    from seqedge.data import held_out_tokens
    from seqedge.exporters.verify import verify_artifact
    from seqedge.quant.report import accuracy
    from seqedge.runtimes import open_artifact
    from seqedge.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(folder)
    htp = open_artifact(folder, threads=plan.threads, manifest=manifest, backend="qnn")
    cpu = open_artifact(folder, threads=plan.threads, manifest=manifest, backend="cpu")
    try:
        try:
            parity = verify_artifact(folder, model, plan.verify_steps, plan.prompt_bytes, runner=htp, shown_as=plan.out)
        except ParityError as e:  # the CPU-QDQ form passed (finish): this is the HTP's own gap
            raise ParityError(f"on the HTP emulator (onnxruntime-qnn, the CPU-QDQ form passed): {e.message}", e.failures,
                              "try --quant w8a16 (16-bit activations), or export for the CPU") from None
        ids = held_out_tokens(tokenizer, min(256, plan.eval_bytes))
        on_htp, on_cpu = accuracy(model, htp, ids, tokenizer), accuracy(model, cpu, ids, tokenizer)
        prompt = torch.tensor([ids[:plan.prompt_bytes]])
        gap = (htp.prefill(prompt, htp.init_state(1))[0] - cpu.prefill(prompt, cpu.init_state(1))[0]).abs().max()
    finally:
        htp.close()
        cpu.close()
    return {"parity": {k: parity[k] for k in ("mean_kl", "token_agreement", "max_abs_diff", "passed", "rule")},
            "eval_tokens": len(ids), "bpb_fp32": on_htp["bpb_fp32"], "bpb_htp": on_htp["bpb"],
            "bpb_cpu_qdq": on_cpu["bpb"], "top1_agreement_htp": on_htp["top1_agreement"],
            "max_abs_diff_htp_vs_cpu_qdq": round(float(gap), 5)}


def compile_for_htp(folder: Path, soc: dict, threads: int) -> dict:
    """Each graph's HTP coverage on the emulator, and its EPContext model + context binary for the SoC."""
    from collections import Counter

    from seqedge.runtimes import qnn

    report = {"soc_model": soc["soc_model"], "htp_arch": soc["htp_arch"], "graphs": {}}
    for graph in (PREFILL, DECODE):
        placed = qnn.coverage(folder / graph, threads, soc["htp_arch"], soc["soc_model"])
        context = folder / graph.replace(".onnx", ".htp.onnx")
        written = qnn.compile_context(folder / graph, context, soc["htp_arch"], soc["soc_model"])
        report["graphs"][graph] = {
            "htp_nodes": len(placed["htp"]), "cpu_nodes": len(placed["cpu"]),
            "cpu": [{"op": op, "why": why, "count": n} for (op, why), n in Counter(placed["cpu"]).most_common()],
            "context_model": context.name,
            "context_binaries": {p.name: p.stat().st_size for p in written if p.suffix == ".bin"},
            # the compiled context loaded back and run once on the emulator (a phone loads it so)
            "context_run_on_emulator": qnn.run_context_once(context, soc["htp_arch"], soc["soc_model"]) or "ran",
        }
    return report
