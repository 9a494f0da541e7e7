from seqedge.ops.moe_ffn.op import moe_ffn, moe_ffn_q
from seqedge.ops.moe_ffn.reference import (
    dequantize_experts,
    moe_ffn_dense,
    moe_ffn_q_ref,
    moe_ffn_ref,
    quantize_experts,
)

__all__ = ["dequantize_experts", "moe_ffn", "moe_ffn_dense", "moe_ffn_q", "moe_ffn_q_ref", "moe_ffn_ref",
           "quantize_experts"]
