"""Reference mixture-of-experts feed-forward: the readable, per-token ground truth of `seqedge::moe_ffn` — a
router picks k of E SwiGLU experts for each token and the token's output is their weighted sum (Mixtral,
Qwen-MoE and OLMoE routing).

Shapes (B = batch, T = time, C = model width, E = experts, I = expert width, k = experts per token):
    x       (B, T, C)    the normalised input
    logits  (B, T, E)    the router's logits (the gate Linear, outside the op: it is quantized like any Linear)
    w13     (E, 2I, C)   each expert's gate and up rows interleaved: row 2i is gate row i, row 2i+1 up row i
                         (onnxruntime MoE's `swiglu_fusion=1` layout, so the exported weight is this tensor)
    w2      (E, C, I)    each expert's down projection
    top_k   int          k
    renormalise bool     the k chosen probabilities rescaled to sum to 1 (Mixtral, Qwen-MoE) or not (OLMoE)
returns
    y       (B, T, C)

    p = softmax(logits);  chosen = the k largest p;  y = Σ_{e ∈ chosen} p_e · w2_e (silu(g_e) ⊙ u_e),
    g_e, u_e = the even / odd rows of w13_e x

Quantized experts (`seqedge::moe_ffn_q`) store each weight row in blocks of `block` values along the input:

    codes   (E, N, K·bits/8) uint8   q + 2^(bits-1), two 4-bit values a byte (the even one in the low nibble)
    scales  (E, N, K/block)  float   w = (q - 2^(bits-1)) · scale, symmetric, q in [-2^(bits-1), 2^(bits-1) - 1]

— onnxruntime QMoE's raw layout (`weights_prepacked=0`), so one set of bytes serves both formats.
`moe_ffn_dense` is the same function in the dense masked form (every expert on every token, unchosen ones
weighted 0): standard ops only, what the portable ONNX lowering and the eager op compute.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def routing(logits: Tensor, top_k: int, renormalise: bool) -> tuple[Tensor, Tensor]:
    """The k chosen experts' weights and indices, each (..., k)."""
    probs = F.softmax(logits.float(), dim=-1)  # (..., E)
    weights, chosen = probs.topk(top_k, dim=-1)  # (..., k)
    if renormalise:
        weights = weights / weights.sum(-1, keepdim=True)
    return weights, chosen


def expert(x: Tensor, w13: Tensor, w2: Tensor) -> Tensor:
    """One SwiGLU expert on rows x (..., C): w2 (silu(gate) ⊙ up)."""
    h = x @ w13.T  # (..., 2I)
    return (F.silu(h[..., 0::2]) * h[..., 1::2]) @ w2.T  # (..., C)


def moe_ffn_ref(x: Tensor, logits: Tensor, w13: Tensor, w2: Tensor, top_k: int, renormalise: bool) -> Tensor:
    weights, chosen = routing(logits, top_k, renormalise)  # (B, T, k)
    y = torch.zeros_like(x)  # (B, T, C)
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            for w, e in zip(weights[b, t].tolist(), chosen[b, t].tolist()):
                y[b, t] += w * expert(x[b, t], w13[e], w2[e])
    return y


def moe_ffn_dense(x: Tensor, logits: Tensor, w13: Tensor, w2: Tensor, top_k: int, renormalise: bool) -> Tensor:
    weights, chosen = routing(logits, top_k, renormalise)  # (B, T, k)
    dense = torch.zeros_like(logits, dtype=x.dtype).scatter(-1, chosen, weights.to(x.dtype))  # (B, T, E)
    h = torch.einsum("btc,enc->bten", x, w13)  # (B, T, E, 2I)
    a = F.silu(h[..., 0::2]) * h[..., 1::2]  # (B, T, E, I)
    out = torch.einsum("btei,eci->btec", a, w2)  # (B, T, E, C)
    return (out * dense.unsqueeze(-1)).sum(2)  # (B, T, C)


# --- quantized experts ---------------------------------------------------------------------------------

BITS = (4, 8)


def quantize_experts(w: Tensor, bits: int, block: int) -> tuple[Tensor, Tensor]:
    """`w` (E, N, K) to (codes uint8 (E, N, K·bits/8), scales float32 (E, N, K/block)); K a multiple of block."""
    E, N, K = w.shape
    qmax = 2 ** (bits - 1) - 1
    g = w.detach().float().reshape(E, N, K // block, block)  # (E, N, K/block, block)
    scales = (g.abs().amax(-1) / qmax).clamp(min=1e-12)  # (E, N, K/block)
    q = torch.round(g / scales[..., None]).clamp(-qmax - 1, qmax).reshape(E, N, K).to(torch.int16) + (qmax + 1)
    codes = q.to(torch.uint8)  # (E, N, K)
    if bits == 4:
        codes = codes[..., 0::2] | (codes[..., 1::2] << 4)  # (E, N, K/2)
    return codes.contiguous(), scales.contiguous()


def dequantize_experts(codes: Tensor, scales: Tensor, bits: int, block: int) -> Tensor:
    """The float weights (E, N, K) that `codes`, `scales` stand for."""
    q = codes.to(torch.int16)
    if bits == 4:
        q = torch.stack([q & 0xF, q >> 4], dim=-1).flatten(-2)  # (E, N, K)
    E, N, K = q.shape
    w = (q - 2 ** (bits - 1)).float().reshape(E, N, K // block, block) * scales[..., None]
    return w.reshape(E, N, K)


def block_of(codes: Tensor, scales: Tensor, bits: int) -> int:
    """The block size a (codes, scales) pair was quantized with: K / blocks per row."""
    return codes.shape[-1] * 8 // bits // scales.shape[-1]


def dequantize(codes: Tensor, scales: Tensor, bits: int) -> Tensor:
    return dequantize_experts(codes, scales, bits, block_of(codes, scales, bits))


def moe_ffn_q_ref(x: Tensor, logits: Tensor, w13_codes: Tensor, w13_scales: Tensor, w2_codes: Tensor,
                  w2_scales: Tensor, top_k: int, renormalise: bool, bits: int) -> Tensor:
    """moe_ffn_ref on the dequantized experts."""
    return moe_ffn_ref(x, logits, dequantize(w13_codes, w13_scales, bits), dequantize(w2_codes, w2_scales, bits),
                       top_k, renormalise)
