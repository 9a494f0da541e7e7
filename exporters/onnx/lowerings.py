"""ONNX lowerings of seqedge's ops, registered per op and per flavour.

A lowering is either a `translation` (an onnxscript function that emits ONNX nodes for the op, passed
to the exporter's custom_translation_table) or a `decomposition` (a torch function of export-friendly
ops that replaces the op before translation). Flavours:

- `fused`: the fastest kernels onnxruntime can run: seqedge's own (the same C++ source as the ExecuTorch
  kernels, in libseqedge_ort_kernels that the runtime registers — kernels.py): `seqedge.SelectiveScan` for
  the Mamba-1 scan and the Mamba-2 scan (one per group of heads), `seqedge.CausalConv1d` for Mamba's
  convolution, `seqedge.Attention` for cached attention; and onnxruntime's contrib kernels (onnxruntime >=
  1.31, CPU): MoE for a mixture of experts (top-k: only the chosen experts run; QMoE once quantized,
  quant/onnx.py).
- `portable`: standard ONNX ops only; node count independent of sequence length (the scan is an
  ONNX `Scan` over time, never an unrolled loop).
- `static`: the graphs of static-shape artifacts for NPUs (exporters/onnx/static.py): `portable`, except
  that the scans are written out step by step over the chunk's fixed T (no Scan: NPU compilers take no
  control flow) and attention is arithmetic only (no Where / -inf, which QDQ leaves float). Not a `--ops`
  choice: `--static-chunk` selects it.

A fused lowering states what it needs of the runtime (`ContribUse` for a contrib op, `SEQEDGE_KERNELS` for
seqedge's library); `resolve("fused")` checks each and, for an op whose needs fail, takes the next lowering
of FALLBACKS (`contrib`: the contrib-op form of an op seqedge has its own kernel for, then `portable`), with
a warning the manifest records — a new onnxruntime release or a machine without a compiler never breaks
an export.
"""

from __future__ import annotations

from onnxscript import FLOAT, INT64
from onnxscript import opset20 as op

from seqedge.exporters.decompositions import (
    attention_blended,
    attention_masked,
    conv_concat,
    scan_over_time,
    scan_unrolled,
    ssd_over_time,
    ssd_selective_scan_kernel,
    ssd_unrolled,
)
from seqedge.exporters.lowering import Lowering, LoweringRegistry
from seqedge.exporters.onnx.contrib import ContribUse, ort_version
from seqedge.exporters.onnx.kernels import ATTENTION, CAUSAL_CONV1D, SELECTIVE_SCAN, SEQEDGE_KERNELS
from seqedge.ops.moe_ffn import moe_ffn_dense

FLAVOURS = ("fused", "portable")
FALLBACKS = ("contrib", "portable")  # what replaces a fused lowering whose needs fail, in order


LOWERINGS = LoweringRegistry("ONNX lowering")


def lowering(op_name: str, flavour: str, kind: str, summary: str, uses: tuple[ContribUse, ...] = ()):
    def deco(fn):
        LOWERINGS.add_lowering(op_name, flavour, kind, summary, fn, uses)
        return fn

    return deco


def static_lowerings() -> list[Lowering]:
    """The `static` flavour: each op's `static` lowering where it has one, else its `portable` one."""
    chosen = {lw.op: lw for lw in LOWERINGS.for_variant("portable")}
    chosen.update({lw.op: lw for lw in LOWERINGS.for_variant("static")})
    return list(chosen.values())


def resolve(flavour: str, schemas: dict | None = None, unit: str = "cpu") -> tuple[list[Lowering], list[str]]:
    """The lowerings of `flavour`, each op's fused lowering replaced by its portable one where the installed
    onnxruntime (or `schemas`) breaks its contract; returns them and one warning per replacement. For a target
    whose graph runs on another unit than the CPU (a GPU), an op whose fused lowering is one of seqedge's kernels
    (CPU kernels) takes its contrib lowering where onnxruntime's GPU provider has that op (`gpu_first`)."""
    chosen, warnings = [], []
    for lw in LOWERINGS.for_variant(flavour):
        lw = gpu_first(lw, schemas) if unit != "cpu" else lw
        problems = [p for use in lw.uses for p in use.problems(schemas)]
        for fallback in FALLBACKS if problems else ():
            if f"{lw.op}:{fallback}" not in LOWERINGS:
                continue
            lw = LOWERINGS[f"{lw.op}:{fallback}"]
            failed = [p for use in lw.uses for p in use.problems(schemas)]
            if not failed:
                break
            problems += failed
        if problems:
            warnings.append(f"{lw.op}: the fused lowering does not fit onnxruntime {ort_version()} "
                            f"({'; '.join(problems)}); used the {lw.variant} lowering ({lw.summary})")
        chosen.append(lw)
    return chosen, warnings


def gpu_first(lw: Lowering, schemas: dict | None = None) -> Lowering:
    """`lw`, or for a fused lowering onto seqedge's kernels (registered for onnxruntime's CPU provider only: on a
    GPU session every such node runs on the CPU, its operands copied across) the op's contrib lowering, when
    each contrib op it emits has a GPU kernel and its contract holds."""
    contrib = LOWERINGS[f"{lw.op}:contrib"] if f"{lw.op}:contrib" in LOWERINGS else None
    if SEQEDGE_KERNELS not in lw.uses or contrib is None or not all(getattr(u, "gpu", False) for u in contrib.uses):
        return lw
    return lw if any(use.problems(schemas) for use in contrib.uses) else contrib


# ---------------------------------------------------------------------------------------------------
# seqedge::selective_scan(u, delta, A, B, C, D, state) -> (y, state)

LINEAR_ATTENTION = ContribUse(
    "LinearAttention",
    inputs=(("query", "float"), ("key", "float"), ("value", "float"), ("past_state", "float"), ("decay", "float")),
    attributes=(("q_num_heads", "INT"), ("kv_num_heads", "INT"), ("update_rule", "STRING"), ("scale", "FLOAT")),
    outputs=(("output", "float"), ("present_state", "float")))


@lowering("seqedge::selective_scan", "fused", "translation",
          "seqedge.SelectiveScan (seqedge's C++ scan in libseqedge_ort_kernels, the ExecuTorch kernel's source)",
          uses=(SEQEDGE_KERNELS,))
def scan_seqedge_kernel(u: FLOAT, delta: FLOAT, A: FLOAT, B: FLOAT, C: FLOAT, D: FLOAT,
                        state: FLOAT) -> tuple[FLOAT, FLOAT]:
    y, new_state = SELECTIVE_SCAN(u, delta, A, B, C, D, state)
    return y, new_state


@lowering("seqedge::selective_scan", "contrib", "translation",
          "com.microsoft.LinearAttention(update_rule=gated, heads=d_inner, d_k=d_state, d_v=1)", uses=(LINEAR_ATTENTION,))
def scan_linear_attention(u: FLOAT, delta: FLOAT, A: FLOAT, B: FLOAT, C: FLOAT, D: FLOAT,
                          state: FLOAT) -> tuple[FLOAT, FLOAT]:
    """One head per channel: decay g = Δ·A per key dim, key = B, query = C, value = Δ·u, scale 1."""
    Dm, N = A.shape[0], A.shape[1]
    bt = op.Shape(u, start=0, end=1)
    t = op.Shape(u, start=1, end=2)
    packed = op.Concat(bt, t, op.Constant(value_ints=[Dm * N]), axis=0)  # (Bt, T, D*N)
    full = op.Concat(bt, t, op.Constant(value_ints=[Dm, N]), axis=0)  # (Bt, T, D, N)
    decay = op.Reshape(op.Mul(op.Unsqueeze(delta, [3]), A), packed)  # (Bt, T, D*N)
    key = op.Reshape(op.Expand(op.Unsqueeze(B, [2]), full), packed)  # (Bt, T, D*N)
    query = op.Reshape(op.Expand(op.Unsqueeze(C, [2]), full), packed)  # (Bt, T, D*N)
    value = op.Mul(delta, u)  # (Bt, T, D)
    y, h = LINEAR_ATTENTION(query, key, value, op.Unsqueeze(state, [3]), decay,
                            q_num_heads=Dm, kv_num_heads=Dm, update_rule="gated", scale=1.0)
    return op.Add(y, op.Mul(u, D)), op.Squeeze(h, [3])


lowering("seqedge::selective_scan", "portable", "decomposition", "ONNX Scan over time (standard ops)")(scan_over_time)
lowering("seqedge::selective_scan", "static", "decomposition",
         "unrolled over the chunk's fixed T: Exp/Mul/Add and one MatMul per step")(scan_unrolled)


# ---------------------------------------------------------------------------------------------------
# seqedge::ssd_scan(x, dt, A, B, C, D, state) -> (y, state)


lowering("seqedge::ssd_scan", "fused", "decomposition",
         "seqedge.SelectiveScan per group of heads (Δ and A broadcast over a head's channels: seqedge's C++ scan, "
         "linear in T)", uses=(SEQEDGE_KERNELS,))(ssd_selective_scan_kernel)


@lowering("seqedge::ssd_scan", "contrib", "translation",
          "com.microsoft.LinearAttention(update_rule=gated, heads, d_k=state_size, d_v=head_dim, one decay per "
          "head)", uses=(LINEAR_ATTENTION,))
def ssd_linear_attention(x: FLOAT, dt: FLOAT, A: FLOAT, B: FLOAT, C: FLOAT, D: FLOAT,
                         state: FLOAT) -> tuple[FLOAT, FLOAT]:
    """One linear-attention head per Mamba-2 head: key = its group's B, query = its group's C, value = Δ·x,
    a scalar log-decay Δ·A per head, scale 1; the state is the kernel's (d_k, d_v) = (N, P) transposed."""
    H, P, G, N = x.shape[2], x.shape[3], B.shape[2], B.shape[3]
    bt = op.Shape(x, start=0, end=1)
    t = op.Shape(x, start=1, end=2)
    per_head = op.Concat(bt, t, op.Constant(value_ints=[G, H // G, N]), axis=0)  # (Bt, T, G, H/G, N)
    packed_k = op.Concat(bt, t, op.Constant(value_ints=[H * N]), axis=0)  # (Bt, T, H*N)
    key = op.Reshape(op.Expand(op.Unsqueeze(B, [3]), per_head), packed_k)  # (Bt, T, H*N)
    query = op.Reshape(op.Expand(op.Unsqueeze(C, [3]), per_head), packed_k)  # (Bt, T, H*N)
    value = op.Reshape(op.Mul(op.Unsqueeze(dt, [3]), x), op.Concat(bt, t, op.Constant(value_ints=[H * P]), axis=0))
    decay = op.Mul(dt, A)  # (Bt, T, H): one log-decay per head
    y, s = LINEAR_ATTENTION(query, key, value, op.Transpose(state, perm=[0, 1, 3, 2]), decay,
                            q_num_heads=H, kv_num_heads=H, update_rule="gated", scale=1.0)
    y = op.Reshape(y, op.Shape(x))  # (Bt, T, H, P)
    return op.Add(y, op.Mul(x, op.Unsqueeze(D, [1]))), op.Transpose(s, perm=[0, 1, 3, 2])


lowering("seqedge::ssd_scan", "portable", "decomposition",
         "ONNX Scan over time per group of heads (standard ops)")(ssd_over_time)
lowering("seqedge::ssd_scan", "static", "decomposition",
         "unrolled over the chunk's fixed T per group of heads")(ssd_unrolled)


# ---------------------------------------------------------------------------------------------------
# seqedge::causal_conv1d(x, weight, bias, state) -> (y, state)


CAUSAL_CONV = ContribUse(
    "CausalConvWithState",
    inputs=(("input", "float"), ("weight", "float"), ("bias", "float"), ("past_state", "float")),
    attributes=(("activation", "STRING"),),
    outputs=(("output", "float"), ("present_state", "float")))


@lowering("seqedge::causal_conv1d", "fused", "translation",
          "seqedge.CausalConv1d (seqedge's C++ convolution + SiLU, channels last: the transposes on either side "
          "cancel the model's)", uses=(SEQEDGE_KERNELS,))
def conv_seqedge_kernel(x: FLOAT, weight: FLOAT, bias: FLOAT, state: FLOAT) -> tuple[FLOAT, FLOAT]:
    """The op takes x channels first (Bt, D, T), as the model transposed it; the kernel wants it channels last."""
    y, new_state = CAUSAL_CONV1D(op.Transpose(x, perm=[0, 2, 1]), weight, bias, state)  # (Bt, T, D)
    return op.Transpose(y, perm=[0, 2, 1]), new_state


@lowering("seqedge::causal_conv1d", "contrib", "translation", "com.microsoft.CausalConvWithState(activation=silu)",
          uses=(CAUSAL_CONV,))
def conv_with_state(x: FLOAT, weight: FLOAT, bias: FLOAT, state: FLOAT) -> tuple[FLOAT, FLOAT]:
    y, new_state = CAUSAL_CONV(x, weight, bias, state, activation="silu")
    return y, new_state


lowering("seqedge::causal_conv1d", "portable", "decomposition",
         "Concat + depthwise Conv + Sigmoid/Mul + Slice")(conv_concat)


# ---------------------------------------------------------------------------------------------------
# seqedge::moe_ffn(x, logits, w13, w2, top_k, renormalise) -> y

MOE = ContribUse(
    "MoE",
    inputs=(("input", "float"), ("router_probs", "float"), ("fc1_experts_weights", "float"),
            ("fc1_experts_bias", "float"), ("fc2_experts_weights", "float")),
    attributes=(("k", "INT"), ("activation_type", "STRING"), ("swiglu_fusion", "INT"),
                ("normalize_routing_weights", "INT"), ("activation_alpha", "FLOAT"), ("activation_beta", "FLOAT")),
    outputs=(("output", "float"),))


@lowering("seqedge::moe_ffn", "fused", "translation",
          "com.microsoft.MoE(activation_type=swiglu, swiglu_fusion=1): softmax routing, top-k, only the chosen "
          "experts run (QMoE with int8/int4 block weights once quantized)", uses=(MOE,))
def moe_contrib(x: FLOAT, logits: FLOAT, w13: FLOAT, w2: FLOAT, top_k: int, renormalise: bool) -> FLOAT:
    """The router's logits are MoE's `router_probs` (it applies the softmax); w13's interleaved gate/up rows are
    its fused-SwiGLU fc1 (onnxruntime's CPU kernel takes only that layout); silu(g)·u is swiglu with alpha 1,
    beta 0 and no clamp. x may be (Bt, T, C) (rows are tokens); the logits must be (Bt·T, E)."""
    E = w13.shape[0]
    y = MOE(x, op.Reshape(logits, op.Constant(value_ints=[-1, E])), w13, None, w2, k=top_k, activation_type="swiglu", swiglu_fusion=1,
            normalize_routing_weights=int(renormalise), activation_alpha=1.0, activation_beta=0.0)
    return y


lowering("seqedge::moe_ffn", "portable", "decomposition",
         "the dense masked form (every expert on every token, unchosen ones weighted 0: Einsum, TopK, "
         "ScatterElements)")(moe_ffn_dense)


# ---------------------------------------------------------------------------------------------------
# seqedge::attention(q, k, v, k_cache, v_cache, pos, cos, sin) -> (out, k_cache, v_cache)

GROUP_QUERY_ATTENTION = ContribUse(
    "GroupQueryAttention",
    inputs=(("query", "float"), ("key", "float"), ("value", "float"), ("past_key", "float"), ("past_value", "float"),
            ("seqlens_k", "int32"), ("total_sequence_length", "int32"), ("cos_cache", "float"), ("sin_cache", "float")),
    attributes=(("num_heads", "INT"), ("kv_num_heads", "INT"), ("do_rotary", "INT"), ("rotary_interleaved", "INT")),
    outputs=(("output", "float"), ("present_key", "float"), ("present_value", "float")), gpu=True)


@lowering("seqedge::attention", "fused", "translation",
          "seqedge.Attention (seqedge's C++ attention in libseqedge_ort_kernels, the ExecuTorch kernel's tiles for a "
          "prompt and its key-streaming step for decode; RoPE inside, the caches updated in place)",
          uses=(SEQEDGE_KERNELS,))
def attention_seqedge_kernel(q: FLOAT, k: FLOAT, v: FLOAT, k_cache: FLOAT, v_cache: FLOAT, pos: INT64, cos: FLOAT,
                             sin: FLOAT) -> tuple[FLOAT, FLOAT, FLOAT]:
    out, k_new, v_new = ATTENTION(q, k, v, k_cache, v_cache, pos, cos, sin)
    return out, k_new, v_new


@lowering("seqedge::attention", "contrib", "translation",
          "com.microsoft.GroupQueryAttention rotating q/k itself (do_rotary, the model's RoPE tables) over the "
          "fixed-size cache (past/present share the buffer; onnxruntime takes a prefill after earlier tokens at "
          "batch 1 only)", uses=(GROUP_QUERY_ATTENTION,))
def attention_gqa(q: FLOAT, k: FLOAT, v: FLOAT, k_cache: FLOAT, v_cache: FLOAT, pos: INT64, cos: FLOAT,
                  sin: FLOAT) -> tuple[FLOAT, FLOAT, FLOAT]:
    """q/k/v arrive as the projections give them, (Bt, T, heads*hd): GroupQueryAttention's own layout. The
    kernel rotates only head sizes that are multiples of 16; others are rotated by gathered table rows first."""
    Hkv, hd = k_cache.shape[1], k_cache.shape[3]
    H = q.shape[2] // hd
    bt = op.Shape(q, start=0, end=1)
    t = op.Shape(q, start=1, end=2)
    total = op.Add(pos, t)  # (1,) tokens valid after this call
    seqlens_k = op.Cast(op.Expand(op.Sub(total, op.Constant(value_ints=[1])), bt), to=6)  # (Bt,) int32
    total_len = op.Cast(op.Squeeze(total, [0]), to=6)  # () int32
    if hd % 16 == 0:
        out, k_new, v_new = GROUP_QUERY_ATTENTION(
            q, k, v, k_cache, v_cache, seqlens_k, total_len, cos, sin,
            num_heads=H, kv_num_heads=Hkv, do_rotary=1, rotary_interleaved=0)
        return out, k_new, v_new
    positions = op.Add(pos, op.Range(op.Constant(value_int=0), op.Squeeze(t, [0]), op.Constant(value_int=1)))  # (T,)
    c, s = op.Gather(cos, positions, axis=0), op.Gather(sin, positions, axis=0)  # (T, hd/2)
    c, s = op.Unsqueeze(op.Concat(c, c, axis=-1), [1]), op.Unsqueeze(op.Concat(s, s, axis=-1), [1])  # (T, 1, hd)

    def rotate(x, heads):  # (Bt, T, heads*hd)
        x4 = op.Reshape(x, op.Concat(bt, t, op.Constant(value_ints=[heads, hd]), axis=0))  # (Bt, T, heads, hd)
        x1, x2 = op.Split(x4, num_outputs=2, axis=-1)
        return op.Reshape(op.Add(op.Mul(x4, c), op.Mul(op.Concat(op.Neg(x2), x1, axis=-1), s)), op.Shape(x))

    out, k_new, v_new = GROUP_QUERY_ATTENTION(
        rotate(q, H), rotate(k, Hkv), v, k_cache, v_cache, seqlens_k, total_len, None, None,
        num_heads=H, kv_num_heads=Hkv)
    return out, k_new, v_new


lowering("seqedge::attention", "portable", "decomposition",
         "RoPE by gathered table rows + masked write into the fixed cache (Where/Gather) + causal MatMul/Softmax "
         "over all positions")(attention_masked)
lowering("seqedge::attention", "static", "decomposition",
         "the portable form in arithmetic only (blended cache write, additive -100 mask: no Where, no -inf) for "
         "quantized NPU graphs")(attention_blended)
