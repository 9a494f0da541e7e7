"""Apply a recipe during an export, then measure and gate what it cost.

    ctx = prepare(plan, model, "onnx")          # validates recipe × format × group size × calibration
    apply_onnx(path, ctx) / apply_executorch(model, ctx)
    report = size_report(model, ctx, weight_bytes, float_matrices)   # manifest["quant"], then with the
    report.update(accuracy_report(model, ctx, runner, tokenizer))     # artifact running: bpb, agreement
    gate(report, ctx)                           # --strict, --max-bpb-increase

The report: `recipe`, `group_size`, `weight_bytes_fp32` (the model's parameters and float tables such as
RoPE's in fp32),
`weight_bytes` (the weights as stored in the artifact), `bits_per_weight`, `skipped` ({layer, reason}
for every weight matrix left in float, read back from the artifact), and accuracy against the fp32
PyTorch model on held-out bytes: `bpb_fp32`, `bpb`, `bpb_increase` (relative), `top1_agreement`
(share of positions whose most likely next byte is the same), with `eval_bytes`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from seqedge.errors import BadInputError, BadPathError, SeqedgeError
from seqedge.quant.recipe import RECIPES, Recipe


class AccuracyError(SeqedgeError):
    """A quantized artifact lost more accuracy than allowed, or skipped layers under --strict."""


@dataclass
class QuantContext:
    recipe: Recipe
    format: str
    group_size: int | None
    max_bpb_increase: float | None
    strict: bool
    eval_bytes: int
    calibration: bytes | None = None
    calibration_source: str | None = None
    init_state: dict[str, torch.Tensor] = field(default_factory=dict)
    explicit_gate: bool = False  # --max-bpb-increase given: it is the gate, whatever the baseline loses
    int4_kernel: bool = False  # int4: blocks of 32 run on seqedge's int4 kernel (an AVX2 CPU target, library here)


def prepare(plan, model, format: str) -> QuantContext:
    recipe = RECIPES[plan.quant]
    group = recipe.check(format, plan.group_size)
    if plan.max_bpb_increase is not None and plan.max_bpb_increase < 0:
        raise BadInputError(f"--max-bpb-increase must be >= 0, got {plan.max_bpb_increase}", "e.g. 0.05 for 5%")
    ctx = QuantContext(recipe, format, group, plan.max_bpb_increase if plan.max_bpb_increase is not None
                       else recipe.max_bpb_increase, plan.strict, plan.eval_bytes,
                       explicit_gate=plan.max_bpb_increase is not None)
    if group is not None:
        widths = sorted({m.in_features for m in model.modules() if isinstance(m, torch.nn.Linear)})
        if widths and not any(w % group == 0 for w in widths):
            raise BadInputError(f"--group-size {group} divides no layer of this model (input widths "
                                f"{', '.join(map(str, widths))})",
                                f"use one of {', '.join(str(g) for g in recipe.group_sizes if any(w % g == 0 for w in widths)) or 'another recipe'}")
    if recipe.calibrated:
        data, source = _calibration(plan.calibration)
        cache = getattr(model, "max_seq_len", None)  # a fixed KV cache bounds one calibration sequence
        ctx.calibration = data[:cache] if cache else data
        ctx.calibration_source = source + (f", first {len(ctx.calibration)} used (the cache)" if len(ctx.calibration)
                                           < len(data) else "")
        ctx.init_state = model.init_state(1)
    return ctx


def _calibration(path) -> tuple[bytes, str]:
    if path is None:
        from seqedge.data import held_out_prompt

        return held_out_prompt(2048), "held-out corpus (2048 bytes)"
    path = Path(path)
    if not path.is_file():
        raise BadPathError(f"calibration file {path} does not exist", "pass --calibration TEXT_FILE, or omit it "
                           "to calibrate on the held-out corpus")
    data = path.read_bytes()[:8192]
    if not data:
        raise BadInputError(f"calibration file {path} is empty", "give it some sample text (a few KB)")
    return data, f"{path} ({len(data)} bytes)"


def apply_onnx(path: Path, ctx: QuantContext) -> None:
    from seqedge.quant import onnx as impl

    fn = impl.IMPLEMENTS[ctx.recipe.name]
    if fn is not None:
        fn(path, ctx)


def apply_executorch(model, ctx: QuantContext):
    from seqedge.quant import executorch as impl

    fn = impl.IMPLEMENTS[ctx.recipe.name]
    return model if fn is None else fn(model, ctx)


# --- what stayed float ---------------------------------------------------------------------------------

MIN_MATRIX = 256  # smaller float matrices (none in the zoo) are not worth a line; vectors (biases, norms) stay
# float in every recipe and are not listed


PACKED_4BIT = (21, 22)  # onnx.TensorProto.UINT4 / INT4: two values a byte on disk
QUANT_PARAMS = re.compile(r"_(scales?|zero_points?)(_|$)")  # the quantizers' own scale tensors


def onnx_weights(path: Path) -> tuple[int, list[tuple[str, tuple[int, ...]]]]:
    """(bytes of every initializer, float matrices left) of an ONNX file, subgraphs included."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    total, floats = 0, []

    def walk(g):
        nonlocal total
        for init in g.initializer:
            arr = numpy_helper.to_array(init)
            total += arr.size // 2 if init.data_type in PACKED_4BIT else arr.nbytes  # numpy unpacks int4
            if (arr.dtype.name in ("float32", "float64") and sum(d > 1 for d in arr.shape) >= 2
                    and arr.size >= MIN_MATRIX and not QUANT_PARAMS.search(init.name)):
                floats.append((init.name, tuple(arr.shape)))
        for node in g.node:
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    walk(attr.g)
                for sub in attr.graphs:
                    walk(sub)

    walk(graph)
    return total, floats


def pte_weight_bytes(buffer: bytes) -> int:
    """Bytes of weights in an ExecuTorch program: the constant buffer (tensors outside delegates) and the
    named data the delegates keep their (packed, deduplicated across methods) weights in."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    pte = deserialize_pte_binary(buffer)
    named = pte.named_data
    return sum(len(b.storage) for b in pte.program.constant_buffer) + (sum(len(b) for b in named.buffers)
                                                                        if named is not None else 0)


def module_float_matrices(model) -> list[tuple[str, tuple[int, ...]]]:
    out = []
    for name, p in model.named_parameters(remove_duplicate=True):
        if (type(p.data) is torch.Tensor and p.is_floating_point() and sum(d > 1 for d in p.shape) >= 2
                and p.numel() >= MIN_MATRIX):
            out.append((name, tuple(p.shape)))
    return out


def _parameter_name(name: str, shape: tuple[int, ...], params: dict[str, tuple[int, ...]]) -> str:
    """The PyTorch parameter an artifact's weight came from: its own name, or (for a constant the
    exporter folded or renamed) the parameter of that shape with its layer index as `*`."""
    for candidate in (name, name.removeprefix("model.")):  # ONNX names carry the export wrapper's prefix
        if candidate in params:
            return candidate
    squeezed = tuple(d for d in shape if d != 1)
    for pname, pshape in params.items():
        if pshape == shape or tuple(d for d in pshape if d != 1) in (squeezed, squeezed[::-1]):
            generic = re.sub(r"[.]\d+[.]", ".*.", pname)
            return f"{generic} (graph constant {name!r})"
    return name


def why_float(name: str, shape: tuple[int, ...], ctx: QuantContext) -> str:
    """The reason a weight matrix stayed float under this recipe and format."""
    if ctx.recipe.name == "fp16":
        return "kept float32: the op that uses it has no float16 kernel in onnxruntime's CPU provider"
    if re.search(r"A_log|log_A_real|log_dt|\.s4\.[BC]$|(^|\.)D$|dt_proj\.bias", name):
        return "SSM parameter kept in float on purpose (exp(Δ·A) decay and skip term are precision-sensitive)"
    if "conv" in name:
        return "depthwise causal convolution: not a MatMul/Linear, kept float"
    if re.search(r"experts\.w(13|2)$", name):
        if ctx.recipe.name in ("int8", "int4", "int4-head8"):
            return (f"mixture-of-experts weights: the expert widths are not multiples of the group size "
                    f"{ctx.group_size} (int4 expert blocks must divide both)")
        return f"mixture-of-experts weights: the {ctx.recipe.name} recipe has no top-k expert form (int8/int4 have)"
    if "embed" in name or name.endswith("wte.weight"):
        return "embedding table: the quantizer did not take this lookup"
    if ctx.group_size and len(shape) == 2 and min(shape) % ctx.group_size and max(shape) % ctx.group_size:
        return f"input width {min(shape)} is not a multiple of group size {ctx.group_size}"
    if re.search(r"weight_hh|weight_ih|\bW\b|\bR\b|lstm|gru|rnn|layers\.\d+\.(weight|bias)", name, re.I):
        return "recurrent (RNN/LSTM/GRU) weights inside the native RNN / scan op: not quantized by this recipe"
    return f"not quantized by the {ctx.format} {ctx.recipe.name} quantizer (op not supported there)"


# --- accuracy ------------------------------------------------------------------------------------------


def _bits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none") / math.log(2)


def accuracy_references(model, ids: list[int], baseline: tuple[str, torch.nn.Module] | None = None) -> dict[str, Any]:
    """The torch side of `accuracy` on the held-out tokens `ids`: the fp32 model's bits over ids[1:] (summed) and its
    top-1 at each position, and the baseline's bits (summed). `baseline`: (grid name, the fp32 model on that grid:
    quant/reference.py). Each model reads every position in one forward."""
    tokens = torch.tensor([ids], dtype=torch.long)  # (1, N)
    targets = tokens[0, 1:]
    refs: dict[str, Any] = {"ids": list(ids)}
    with torch.no_grad():
        if baseline is not None:
            refs["baseline"] = baseline[0]
            refs["bits_baseline"] = _bits(baseline[1].forward(tokens)[0, :-1], targets).sum().item()
        ref = model.forward(tokens)[0, :-1]  # (N-1, V)
    refs["bits_fp32"] = _bits(ref, targets).sum().item()
    refs["top1"] = ref.argmax(-1)  # (N-1,)
    return refs


def accuracy(model, runner, ids: list[int], tokenizer, baseline: tuple[str, torch.nn.Module] | None = None,
             refs: dict[str, Any] | None = None) -> dict[str, float]:
    """bits/byte of the fp32 model and of the artifact on the held-out tokens `ids`, and their top-1
    agreement. Every position's logits come from the real runtime (`runner.logits_each`: in chunks where the
    runtime can return them all, else one token at a time with the state carried). Bits are per byte of the
    predicted text, so vocabularies compare. `baseline`: (grid name, the fp32 model on that grid:
    quant/reference.py), evaluated on the same tokens. `refs`: `accuracy_references(model, ids, baseline)` when
    they were computed already (exporters/ahead_references.py)."""
    refs = refs if refs is not None else accuracy_references(model, ids, baseline)
    tokens = torch.tensor([ids], dtype=torch.long)  # (1, N)
    with torch.no_grad():
        got = runner.logits_each(tokens[:, :-1])  # (N-1, V)
    targets = tokens[0, 1:]
    n_bytes = max(1, len(tokenizer.decode_bytes(targets.tolist())))
    bpb_fp32, bpb = refs["bits_fp32"] / n_bytes, _bits(got, targets).sum().item() / n_bytes
    base = {}
    if "bits_baseline" in refs:
        bpb_baseline = refs["bits_baseline"] / n_bytes
        base = {"baseline": refs["baseline"], "bpb_baseline": round(bpb_baseline, 4),
                "bpb_increase_baseline": round((round(bpb_baseline, 4) - bpb_fp32) / bpb_fp32, 5)}
    return {"bpb_fp32": round(bpb_fp32, 4), "bpb": round(bpb, 4),
            "bpb_increase": round((bpb - bpb_fp32) / bpb_fp32, 5),
            "top1_agreement": round((refs["top1"] == got.argmax(-1)).float().mean().item(), 4), **base}


def size_report(model, ctx: QuantContext, weight_bytes: int,
                float_matrices: list[tuple[str, tuple[int, ...]]]) -> dict[str, Any]:
    params = list({id(p): p for p in model.parameters()}.values())
    pshapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    tables = [b for b in model.buffers() if b.is_floating_point()]  # stored beside the weights (RoPE tables)
    fp32_bytes = sum(t.numel() * 4 for t in (*params, *tables))
    n = sum(p.numel() for p in params)
    return {
        "recipe": ctx.recipe.name,
        "summary": ctx.recipe.summary,
        "group_size": ctx.group_size,
        "calibration": ctx.calibration_source,
        "weight_bytes_fp32": fp32_bytes,
        "weight_bytes": weight_bytes,
        "size_ratio": round(weight_bytes / fp32_bytes, 4),
        "bits_per_weight": round(8 * weight_bytes / n, 3),
        "skipped": [{"layer": (layer := _parameter_name(name, shape, pshapes)), "shape": list(shape),
                     "reason": why_float(layer, shape, ctx)}
                    for name, shape in float_matrices] if ctx.recipe.name != "fp32" else [],
        "max_bpb_increase": ctx.max_bpb_increase,
        "parity_rule": ctx.recipe.parity.note,
        "accuracy": "not measured (exported with --no-verify)",
    }


def eval_ids(ctx: QuantContext, tokenizer, max_seq_len: int | None) -> list[int]:
    """The held-out tokens `accuracy_report` reads: ctx.eval_bytes of them, within a KV cache of max_seq_len."""
    from seqedge.data import held_out_tokens

    return held_out_tokens(tokenizer, min(ctx.eval_bytes, (max_seq_len or ctx.eval_bytes + 1) - 1))


def accuracy_report(model, ctx: QuantContext, runner, tokenizer, grid=None, ahead=None) -> dict[str, Any]:
    """`grid`: a function giving the recipe's baseline model, when the caller builds it once for several gates
    (quant/reference.py); `ahead`: the torch references computed while the export lowered
    (exporters/ahead_references.py), used if they read the same tokens."""
    from seqedge.quant.reference import baseline_model

    ids = eval_ids(ctx, tokenizer, runner.max_seq_len)
    refs = ahead.accuracy(ids) if ahead is not None else None
    baseline = None
    if refs is None:
        name = ctx.recipe.parity.baseline
        grid_model = grid() if grid is not None else baseline_model(model, name)
        baseline = (name, grid_model) if grid_model is not None else None
    return {**accuracy(model, runner, ids, tokenizer, baseline, refs), "eval_tokens": len(ids),
            "eval_bytes": len(tokenizer.decode_bytes(ids)),
            "accuracy": "held-out code" if tokenizer.kind == "bytes" else "English prose (Python's pydoc topics)"}


def gate(report: dict[str, Any], ctx: QuantContext) -> None:
    if ctx.strict and report["skipped"]:
        shown = "; ".join(f"{s['layer']} ({s['reason']})" for s in report["skipped"][:4])
        more = f" and {len(report['skipped']) - 4} more" if len(report["skipped"]) > 4 else ""
        raise AccuracyError(f"--strict: recipe {ctx.recipe.name} left {len(report['skipped'])} weight matrices "
                            f"in float: {shown}{more}", "drop --strict to accept them, or choose another --group-size")
    limit, why = ctx.max_bpb_increase, ""
    factor = ctx.recipe.parity.baseline_factor
    if limit is not None and not ctx.explicit_gate and "bpb_increase_baseline" in report and factor:
        # the recipe's default follows the model: no more than `factor` x what the reference grid loses on it
        if factor * report["bpb_increase_baseline"] > limit:
            limit = round(factor * report["bpb_increase_baseline"], 5)
            why = f" ({factor:g} x the {report['bpb_increase_baseline']:.2%} of {report['baseline']} on the same weights)"
        report["max_bpb_increase"] = limit
    if limit is not None and "bpb_increase" in report and report["bpb_increase"] > limit:
        raise AccuracyError(f"recipe {ctx.recipe.name} raised held-out bits/byte by {report['bpb_increase']:.2%} "
                            f"({report['bpb_fp32']} -> {report['bpb']}), above the allowed {limit:.2%}{why}",
                            "raise --max-bpb-increase, use a smaller --group-size, or a wider recipe (int8)")
