"""Reference int4 matmul: what onnxruntime's `seqedge.Int4MatMul` (and `Int4MatMulSwiGLU`, `Int4MatMulSkipRmsNorm`,
`Int4MatMulConv`, `Int4MambaScan`) and ExecuTorch's `seqedge::int4_matmul` compute (runtimes/native/kernels/int4_matmul_core.h), int4 weights in blocks of 32 along K with a float16 scale each, times activations that are
quantized to int8 per block of 32 as they arrive (llama.cpp's Q4_0 x Q8_0; onnxruntime's MatMulNBits int8
compute with half the scale bytes).

Shapes (M = rows of activations, N = output features, K = input features, a multiple of 32):
    a       (..., K)          float32 (a K that is not a multiple of 32: the last block zero-padded)
    codes   (N, K/32, 16)     uint8: byte j of block b holds w[n, 32b + 2j] (low nibble) and w[n, 32b + 2j + 1]
                              (high), each as w + 8 (MatMulNBits' symmetric codes, zero point 8)
    scales  (N, K/32)         float16: w = (code - 8) * scale
returns
    y       (..., N)          sum over blocks of scale_w * scale_a * (integer dot product of the block's codes)

The same codes may come in groups of 16 rows (`group_rows`; an exporter stores a weight so when N is a multiple of
16): codes (N/16, K/32, 256), 32-bit lane n of bytes [64j, 64j + 64) of a group's block holding bytes 4j .. 4j + 3
of row 16g + n's block, and scales (N/16, K/32, 16). The kernels then multiply 16 rows with one instruction and
need no horizontal sums (int4_matmul_core.h); every function here takes either layout.

`int4_blocks(w)` makes (codes, scales) from float weights (N, K) as llama.cpp's Q4_0 does (ggml-quants.c
`quantize_row_q4_0_ref`, quant/reference.py q4_0): per block, the weight of largest magnitude m gives the scale
d = m / -8 (stored as float16), and the codes are min(15, trunc(w / d + 8.5)).
"""

from __future__ import annotations

import torch
from torch import Tensor

BLOCK = 32


def quantize_activations(a: Tensor) -> tuple[Tensor, Tensor]:
    """a (M, K) -> codes (M, K/32, 32) int8 values as float and scales (M, K/32): symmetric, max |a| -> 127,
    rounded half to even."""
    blocks = a.reshape(a.shape[0], -1, BLOCK)  # (M, K/32, 32)
    amax = blocks.abs().amax(-1)  # (M, K/32)
    inv = torch.where(amax > 0, 127.0 / amax, torch.zeros_like(amax))
    return torch.round(blocks * inv[..., None]), amax / 127.0


def unpack_codes(codes: Tensor) -> Tensor:
    """(N, K/32, 16) uint8 -> (N, K/32, 32) signed int4 values (as float), in K order."""
    lo, hi = (codes & 15).float() - 8, (codes >> 4).float() - 8  # (N, K/32, 16) each
    return torch.stack([lo, hi], -1).flatten(-2)  # positions 2j, 2j + 1


def int4_blocks(w: Tensor) -> tuple[Tensor, Tensor]:
    """`w` (N, K) float -> codes (N, ceil(K/32), 16) uint8 and scales (N, ceil(K/32)) float16; a K that is not a
    multiple of 32 is zero-padded (zeros are code 8 exactly, so the padding adds nothing to a product)."""
    N, K = w.shape
    x = torch.nn.functional.pad(w.detach().float(), (0, -K % BLOCK)).reshape(N, -1, BLOCK)  # (N, K/32, 32)
    m = x.gather(-1, x.abs().argmax(-1, keepdim=True))  # (N, K/32, 1) the signed weight of largest magnitude
    d = m / -8
    inv = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
    q = x.mul(inv).add_(8.5).trunc_().clamp_(max=15).to(torch.uint8)  # (N, K/32, 32) codes 0..15
    codes = q[..., 0::2] | (q[..., 1::2] << 4)  # (N, K/32, 16) positions 2j low, 2j + 1 high
    return codes.contiguous(), d.squeeze(-1).half()


GROUP = 16  # rows side by side in the grouped layout


def grouped(codes: Tensor) -> bool:
    """The codes are in groups of 16 rows (N/16, K/32, 256), not rows (N, K/32, 16)."""
    return codes.shape[-1] == GROUP * 16


def group_rows(codes: Tensor, scales: Tensor) -> tuple[Tensor, Tensor]:
    """Rows (N, K/32, 16), (N, K/32) -> groups of 16 rows (N/16, K/32, 256), (N/16, K/32, 16); N % 16 == 0."""
    N, nb, _ = codes.shape
    c = codes.reshape(N // GROUP, GROUP, nb, 4, 4)  # (G, row, block, j, byte)
    return (c.permute(0, 2, 3, 1, 4).reshape(N // GROUP, nb, GROUP * 16).contiguous(),  # (G, block, j, row, byte)
            scales.reshape(N // GROUP, GROUP, nb).transpose(1, 2).contiguous())  # (G, block, row)


def ungroup_rows(codes: Tensor, scales: Tensor) -> tuple[Tensor, Tensor]:
    """group_rows undone: codes and scales as rows, either layout taken."""
    if not grouped(codes):
        return codes, scales
    G, nb, _ = codes.shape
    c = codes.reshape(G, nb, 4, GROUP, 4).permute(0, 3, 1, 2, 4)  # (G, row, block, j, byte)
    return c.reshape(G * GROUP, nb, 16).contiguous(), scales.transpose(1, 2).reshape(G * GROUP, nb).contiguous()


def rows_of(codes: Tensor) -> int:
    """N, the weight's output features, from its codes in either layout."""
    return codes.shape[0] * (GROUP if grouped(codes) else 1)


def int4_matmul_ref(a: Tensor, codes: Tensor, scales: Tensor, bias: Tensor | None = None) -> Tensor:
    """y (..., N), plus `bias` (N) when given. (onnxruntime's seqedge.Int4MatMul may also split y along its last
    axis into 2 or 3 outputs: `y.split(sizes, -1)`.)"""
    codes, scales = ungroup_rows(codes, scales)
    lead, K = a.shape[:-1], codes.shape[1] * BLOCK
    a = torch.nn.functional.pad(a, (0, K - a.shape[-1]))  # (..., K)
    qa, da = quantize_activations(a.reshape(-1, K).float())  # (M, K/32, 32), (M, K/32)
    qw = unpack_codes(codes)  # (N, K/32, 32)
    dots = torch.einsum("mbj,nbj->mnb", qa.double(), qw.double())  # (M, N, K/32) exact integers
    y = (dots * da.double()[:, None, :] * scales.double()[None]).sum(-1)  # (M, N)
    y = y.float().reshape(*lead, codes.shape[0])
    return y if bias is None else y + bias


def int4_gather_ref(codes: Tensor, scales: Tensor, indices: Tensor) -> Tensor:
    """onnxruntime's seqedge.Int4Gather: rows `indices` (any shape) of the weight, dequantized, (..., K/32 * 32) —
    a tied embedding reading its output head's codes."""
    codes, scales = ungroup_rows(codes, scales)
    w = (unpack_codes(codes) * scales[..., None].float()).flatten(1)  # (N, K/32 * 32)
    return w[indices]


def int4_matmul_swiglu_ref(a: Tensor, codes: Tensor, scales: Tensor) -> Tensor:
    """seqedge.Int4MatMulSwiGLU: the product's two halves (gate, up) of a fused gate/up projection as
    silu(gate) * up, (..., N/2)."""
    gate, up = int4_matmul_ref(a, codes, scales).chunk(2, dim=-1)  # (..., N/2) each
    return torch.nn.functional.silu(gate) * up


def int4_matmul_conv_ref(a: Tensor, codes: Tensor, scales: Tensor, bias: Tensor | None, split: list[int],
                         weight: Tensor, conv_bias: Tensor, state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """seqedge.Int4MatMulConv: the product (+ bias) of a (Bt, T, K) split into x | z by `split`'s two sizes, x
    through Mamba's causal convolution + SiLU, channels last (causal_conv1d_ref on x transposed; weight (D, 1, K),
    conv_bias (D), state (Bt, D, K-1)). Returns (y (Bt, T, D), z, state_out)."""
    from seqedge.ops.causal_conv1d.reference import causal_conv1d_ref

    x, z = int4_matmul_ref(a, codes, scales, bias).split(split, -1)  # (Bt, T, D), (Bt, T, N - D)
    y, state_out = causal_conv1d_ref(x.transpose(1, 2), weight, conv_bias, state)  # (Bt, D, T)
    return y.transpose(1, 2), z, state_out


def int4_mamba_scan_ref(u: Tensor, dt: Tensor, codes: Tensor, scales: Tensor, dt_bias: Tensor | None, A: Tensor,
                        B: Tensor, C: Tensor, D: Tensor, state: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    """seqedge.Int4MambaScan: Mamba's scan (mamba_scan_ref: softplus step, silu(z) gate) whose step, before its
    softplus, is the int4 product of dt (Bt, T, R) (+ dt_bias (D)): Mamba's dt_proj. Returns (y, state)."""
    from seqedge.ops.selective_scan import mamba_scan_ref

    return mamba_scan_ref(u, int4_matmul_ref(dt, codes, scales, dt_bias), A, B, C, D, state, z)


def int4_matmul_skip_rms_norm_ref(a: Tensor, codes: Tensor, scales: Tensor, skip: Tensor, gamma: Tensor,
                                  eps: float) -> tuple[Tensor, Tensor]:
    """seqedge.Int4MatMulSkipRmsNorm: the product plus the residual `skip` (..., N), and that sum RMS-normalised
    over its last axis times `gamma` (N) (onnxruntime's SkipSimplifiedLayerNormalization after the projection).
    Returns (normed, sum)."""
    total = int4_matmul_ref(a, codes, scales) + skip  # (..., N)
    normed = total * torch.rsqrt(total.pow(2).mean(-1, keepdim=True) + eps) * gamma
    return normed, total
