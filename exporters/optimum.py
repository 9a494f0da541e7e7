"""Architectures seqedge has no family for, through optimum-onnx, wrapped into a seqedge artifact.

    manifest = export_via_optimum(Path("gpt2-folder"), ExportPlan(out=Path("art"), quant="int8"))

optimum's `main_export` (task `text-generation-with-past`) writes one ONNX graph with a growing KV cache:
inputs `input_ids`, `attention_mask`, `position_ids` and `past_key_values.{i}.key|value`, outputs
`logits` and `present.{i}.key|value`. seqedge keeps that graph as it is and gives it the same artifact
as its own exports: the tokenizer, the quantization recipes (onnxruntime's), a manifest naming the
`past_key_values.*` as state (`via: optimum`), and the same parity and accuracy checks — against
transformers' own model (`TransformersReference`), since seqedge has no model of its own for it.
The `onnxruntime-optimum` runtime adapter (runtimes/optimum.py) runs it.

Needs the `hf` extra (optimum, optimum-onnx, transformers). optimum-executorch pins transformers 5.0.0rc1
and cannot share an environment with optimum-onnx: `--via optimum` is ONNX only.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from seqedge.diagnostics import stage
from seqedge.errors import UnsupportedError
from seqedge.exporters.artifact import artifact_writer, finish
from seqedge.exporters.plan import ExportPlan

INSTALL = "pip install -e '.[hf]' (optimum, optimum-onnx, transformers)"
GRAPH = "model.onnx"
TASK = "text-generation-with-past"


def available() -> tuple[bool, str]:
    try:
        import optimum.exporters.onnx  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False, f"optimum-onnx is not installed ({INSTALL})"
    return True, "optimum-onnx"


class TransformersReference(nn.Module):
    """A transformers causal LM behind seqedge's prefill/step protocol (state: its KV cache as tensors named
    like the optimum graph's inputs), for parity and accuracy checks of `--via optimum` artifacts."""

    def __init__(self, folder: Path):
        super().__init__()
        from transformers import AutoModelForCausalLM

        self.hf = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, local_files_only=True).eval()
        self.config = self.hf.config
        self.layers = self.config.num_hidden_layers

    @property
    def max_seq_len(self) -> int | None:
        return getattr(self.config, "max_position_embeddings", None) or getattr(self.config, "n_positions", None)

    def init_state(self, batch: int = 1) -> dict[str, Tensor]:
        return {}

    def forward(self, tokens: Tensor) -> Tensor:
        return self.hf(tokens).logits  # (B, T, V)

    def prefill(self, tokens: Tensor, state: dict, last_only: bool = False):
        from transformers import DynamicCache

        cache = state.get("cache") or DynamicCache()
        past = cache.get_seq_length()
        out = self.hf(tokens, past_key_values=cache, use_cache=True,
                      position_ids=torch.arange(past, past + tokens.shape[1]).unsqueeze(0))
        logits = out.logits[:, -1:] if last_only else out.logits
        return logits, {"cache": out.past_key_values}

    def step(self, token: Tensor, state: dict):
        return self.prefill(token, state)


def _interface(path: Path) -> dict:
    """inputs/outputs/state of the optimum graph, from its own signature (dynamic dims named)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    spec = lambda v: {"name": v.name, "dtype": v.type.removeprefix("tensor(").removesuffix(")").replace(  # noqa: E731
        "float", "float32"), "shape": [d if isinstance(d, int) else "batch" if d == "batch_size" else str(d)
                                      for d in v.shape]}
    inputs = [spec(i) for i in sess.get_inputs()]
    outputs = [spec(o) for o in sess.get_outputs()]
    state = [s for s in inputs if s["name"].startswith("past_key_values.")]
    return {"inputs": inputs, "outputs": outputs, "state": state}


def export_via_optimum(folder: Path, plan: ExportPlan) -> dict:
    ok, why = available()
    if not ok:
        raise UnsupportedError(f"exporting {folder} through optimum needs optimum-onnx ({why})", INSTALL)
    if plan.format != "onnx":
        raise UnsupportedError(f"--via optimum exports ONNX only, not {plan.format}",
                               "optimum-executorch needs transformers 5.0.0rc1, which cannot share an environment "
                               "with optimum-onnx; use --format onnx")
    if plan.quant == "int8-static":
        raise UnsupportedError("--via optimum takes fp32, fp16, int8 and int4", "choose another --quant")
    from optimum.exporters.onnx import main_export

    from seqedge.quant.report import apply_onnx, onnx_weights
    from seqedge.quant.report import prepare as prepare_quant

    with stage("loading the transformers model", str(folder)):
        reference = TransformersReference(folder)
    quant = prepare_quant(plan, reference, "onnx")
    with artifact_writer(plan.out, force=plan.force) as tmp:
        t0 = time.perf_counter()
        with stage("optimum export", str(folder)):
            main_export(str(folder), output=tmp / "optimum", task=TASK, local_files_only=True, do_validation=False,
                        device="cpu")
        for f in (tmp / "optimum").iterdir():  # the graph (and its external data), not optimum's config copies
            if f.name.startswith("model.onnx"):
                f.rename(tmp / f.name)
        shutil.rmtree(tmp / "optimum")
        with stage("ONNX quantization", str(folder)):
            apply_onnx(tmp / GRAPH, quant)
        export_seconds = time.perf_counter() - t0
        weight_bytes, float_matrices = onnx_weights(tmp / GRAPH)
        import onnx

        nodes = len(onnx.load(str(tmp / GRAPH), load_external_data=False).graph.node)
        manifest = {
            "family": reference.config.model_type, "config": reference.config.to_dict(), "quant": {"recipe": plan.quant},
            **_interface(tmp / GRAPH), "max_seq_len": reference.max_seq_len,
            "parameters": sum(p.numel() for p in reference.parameters()), "source": plan.source,
            "target": plan.target, "parity": None, "format": "onnx", "via": "optimum", "flavour": "optimum",
            "ops": [{"op": reference.config.model_type, "lowering": f"optimum-onnx main_export ({TASK})",
                     "kind": "optimum"}],
            "graphs": {"prefill": GRAPH, "decode": GRAPH},
            "graph_note": "optimum's decoder graph: the KV cache grows (past_key_values.* in, present.* out); "
                          "input_ids, attention_mask and position_ids as optimum defines them",
            "node_count": nodes, "export_seconds": round(export_seconds, 2), "requires": "onnxruntime", "warnings": [],
        }
        manifest = finish(tmp, reference, manifest, plan, quant, weight_bytes, float_matrices)
    return manifest
