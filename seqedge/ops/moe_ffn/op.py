"""`seqedge::moe_ffn` and `seqedge::moe_ffn_q` — a top-k mixture of SwiGLU experts as one op (see reference.py).

Exported, it is the node that reads only the chosen experts' weights: onnxruntime's `com.microsoft.MoE` /
`QMoE` (exporters/onnx/lowerings.py, quant/onnx.py) and seqedge's C++ kernel in ExecuTorch
(runtimes/native/kernels/moe_ffn.cpp). Eagerly it computes the dense masked form (vectorised; equal to the
per-token reference). Models train on their own expert Linears and call the op only in the packed form the
exporters build (`SparseMoE.fuse_projections`). Not differentiable: it is an inference op.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqedge.ops.moe_ffn.reference import dequantize, moe_ffn_dense


@torch.library.custom_op("seqedge::moe_ffn", mutates_args=())
def moe_ffn(x: Tensor, logits: Tensor, w13: Tensor, w2: Tensor, top_k: int, renormalise: bool) -> Tensor:
    return moe_ffn_dense(x, logits, w13, w2, top_k, renormalise)


@moe_ffn.register_fake
def _(x, logits, w13, w2, top_k, renormalise):
    return torch.empty_like(x)


@torch.library.custom_op("seqedge::moe_ffn_q", mutates_args=())
def moe_ffn_q(x: Tensor, logits: Tensor, w13_codes: Tensor, w13_scales: Tensor, w2_codes: Tensor, w2_scales: Tensor,
              top_k: int, renormalise: bool, bits: int) -> Tensor:
    """Each weight's block size follows from its shapes (reference.block_of)."""
    return moe_ffn_dense(x, logits, dequantize(w13_codes, w13_scales, bits), dequantize(w2_codes, w2_scales, bits),
                         top_k, renormalise)


@moe_ffn_q.register_fake
def _(x, logits, w13_codes, w13_scales, w2_codes, w2_scales, top_k, renormalise, bits):
    return torch.empty_like(x)
