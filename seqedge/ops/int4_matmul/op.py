"""`seqedge::int4_matmul` — an int4 linear layer as one op: y (..., N) = a (..., K) @ dequant(codes, scales)^T,
the activations quantized to int8 per block of 32 (see reference.py for the format).

The ExecuTorch int4 recipe puts it in place of a Linear where seqedge's kernel is the faster one
(quant/executorch.py Int4Linear); ExecuTorch runs it as the C++ kernel `seqedge::int4_matmul.out`
(runtimes/native/kernels/int4_matmul.cpp, exporters/executorch/native_ops.py). Eagerly it computes the same
products in float32 on the dequantized operands, a slice of weight rows at a time; not differentiable.

`seqedge::int4_matmul_swiglu` is the same product of a fused gate/up projection followed by its SwiGLU,
silu(gate) * up of the two halves, (..., N/2) (int4_matmul_swiglu_ref): ExecuTorch's kernel computes it as the
rows come (`seqedge::int4_matmul_swiglu.out`, onnxruntime's seqedge.Int4MatMulSwiGLU), where the split, the
sigmoid and the products were a delegate call of their own each layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from seqedge.ops.int4_matmul.reference import BLOCK, quantize_activations, rows_of, ungroup_rows, unpack_codes

ROWS = 4096  # weight rows dequantized at a time (a 49k-row output head would be ~110 MB of floats at once)


def int4_matmul_eager(a: Tensor, codes: Tensor, scales: Tensor) -> Tensor:
    codes, scales = ungroup_rows(codes, scales)  # (N, K/32, 16), (N, K/32)
    lead, K = a.shape[:-1], codes.shape[1] * BLOCK
    x = torch.nn.functional.pad(a.float(), (0, K - a.shape[-1])).reshape(-1, K)  # (M, K)
    qa, da = quantize_activations(x)  # (M, K/32, 32), (M, K/32)
    x = (qa * da[..., None]).reshape(-1, K)  # (M, K) the activations as the kernel sees them
    y = torch.cat([x @ (unpack_codes(codes[r:r + ROWS]) * scales[r:r + ROWS, :, None].float()).reshape(-1, K).T
                   for r in range(0, codes.shape[0], ROWS)], dim=-1)  # (M, N)
    return y.reshape(*lead, codes.shape[0])


@torch.library.custom_op("seqedge::int4_matmul", mutates_args=())
def int4_matmul(a: Tensor, codes: Tensor, scales: Tensor) -> Tensor:
    return int4_matmul_eager(a, codes, scales)


@int4_matmul.register_fake
def _(a, codes, scales):
    return a.new_empty(*a.shape[:-1], rows_of(codes))


@torch.library.custom_op("seqedge::int4_matmul_swiglu", mutates_args=())
def int4_matmul_swiglu(a: Tensor, codes: Tensor, scales: Tensor) -> Tensor:
    gate, up = int4_matmul_eager(a, codes, scales).chunk(2, dim=-1)  # (..., N/2) each
    return F.silu(gate) * up


@int4_matmul_swiglu.register_fake
def _(a, codes, scales):
    return a.new_empty(*a.shape[:-1], rows_of(codes) // 2)
