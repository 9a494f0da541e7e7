"""What an export should produce: one dataclass shared by every format."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KV_CACHE_TYPES = ("float16", "float32")  # ExportPlan.kv_cache
# A model without attention prefills long prompts in pieces of this many tokens, the state carried (the manifest's
# `prefill_chunk`; every runtime honours it): a layer's activations then stay in cache. mamba-130m int4, 2 threads:
# ExecuTorch at T = 4096 1,095-1,151 tok/s in one call, 1,400 in pieces of 1,024, 1,624-1,740 in pieces of 256;
# onnxruntime (6 alternated pairs in one process) T = 1,024 3,403 -> 3,716 tok/s and T = 4,096 3,012 -> 3,725, so
# time(4,096) / time(1,024) 4.52 -> 3.99 (in one call the convolution took 6.6x and the int4 products 4.5x the time
# for 4x the tokens). Attention models are left whole: llama-135m int4 (ExecuTorch) at T = 1,024 went 440-448 ->
# 363-400 tok/s in pieces of 128-512.
PREFILL_CHUNK = 256


@dataclass
class ExportPlan:
    out: Path
    format: str = "onnx"
    ops: str = "fused"  # ONNX lowering flavour: fused | portable
    backend: str = "xnnpack"  # ExecuTorch: xnnpack | portable
    kv_cache: str | None = None  # attention KV caches where seqedge's kernels hold them: float16 | float32
    # (default: kv_cache_type, by the recipe)
    max_len: int | None = None  # ExecuTorch: longest prefill (default: the model's max_seq_len, else 4096)
    jobs: int | None = None  # ExecuTorch: processes lowering XNNPACK partitions (default: the cores, at most 8)
    quant: str = "fp32"  # a seqedge.quant recipe
    group_size: int | None = None  # group-wise recipes (int4): 32 / 64 / 128
    calibration: Path | None = None  # int8-static: sample text (default: the held-out corpus)
    strict: bool = False  # any weight matrix left in float is an error
    max_bpb_increase: float | None = None  # relative; default per recipe (int8 1%, int4 5%)
    eval_bytes: int = 1024  # held-out bytes for the accuracy report
    force: bool = False
    verify: bool = True
    verify_steps: int = 64
    prompt_bytes: int = 64
    threads: int = 2
    example_len: int = 5  # T of the example input traced with a dynamic length
    static_chunk: int | None = None  # ONNX: static-shape graphs for NPUs, prefill chunks of this many tokens
    qnn: dict[str, int] | None = None  # static ONNX: {"htp_arch", "soc_model"} to compile the HTP context for
    source: dict[str, Any] = field(default_factory=dict)  # how to rebuild the PyTorch reference
    target: dict[str, Any] | None = None  # the device profile's selection this export follows
    tokenizer_dir: Path | None = None  # a folder with tokenizer.json (+ configs) to ship with the artifact

    @property
    def subject(self) -> str:
        """The model, as messages name it: family/preset, the checkpoint's path, or the user's factory."""
        s = self.source or {}
        named = {"preset": f"{s.get('family')}/{s.get('preset')}", "checkpoint": s.get("path"), "user": s.get("model")}
        return named.get(s.get("kind")) or "the model"

    @property
    def users_code(self) -> bool:
        """The model is the user's own factory: a failure tracing it is the model's, not seqedge's."""
        return (self.source or {}).get("kind") == "user"


def int4_kernel_target(plan: ExportPlan) -> bool:
    """An int4 export whose target (the profile's unit, else this machine) is a CPU with AVX2: where seqedge's
    int4 kernel (runtimes/native/kernels/int4_matmul_core.h) is the faster one. On arm64 onnxruntime's MatMulNBits
    and XNNPACK have NEON kernels, and a GPU has its own."""
    from seqedge.host import host_isa
    from seqedge.profiles import load_profile
    from seqedge.quant.recipe import RECIPES

    target = plan.target or {}
    if RECIPES[plan.quant].weight_bits != 4 or target.get("unit", "cpu") != "cpu":
        return False
    isa = load_profile(target["device"]).isa if target.get("device") else host_isa()
    return "avx2" in isa


def kv_cache_type(plan: ExportPlan) -> str:
    """The attention caches' type where seqedge's kernels hold them: the plan's; else float32 for an fp32 export
    (the exact reference, gated on logits within 1e-3) and float16 for a quantized one (llama.cpp's default).
    float16 halves the caches' memory and the bytes a decode step streams; the attention kernel widens the rows
    it reads in registers (F16C, NEON), which costs less than those bytes (llama-135m's attention at 1,024
    positions, 30 layers, 2 threads: onnxruntime 68-74 -> 47 us a layer, ExecuTorch 83 -> 44)."""
    return plan.kv_cache or default_kv_cache(plan.quant)


def default_kv_cache(quant: str) -> str:
    """kv_cache_type's default for a recipe: float32 for fp32, float16 for a quantized one."""
    return "float32" if quant == "fp32" else "float16"


def held_cache_type(manifest: dict) -> str | None:
    """The attention caches' type an artifact's manifest says (its `state`, or the state its program holds,
    `held_state`: the `k.*` and `v.*` tensors): float16 when every one is, float32 otherwise; None without any."""
    caches = [s for s in (manifest.get("state") or []) + (manifest.get("held_state") or [])
              if isinstance(s, dict) and str(s.get("name", "")).startswith(("k.", "v."))]
    if not caches:
        return None
    return "float16" if all(s.get("dtype") == "float16" for s in caches) else "float32"
