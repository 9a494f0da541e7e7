from seqedge.ops.int4_matmul.op import int4_matmul, int4_matmul_eager, int4_matmul_swiglu
from seqedge.ops.int4_matmul.reference import (
                                               int4_blocks,
                                               int4_matmul_ref,
                                               int4_matmul_skip_rms_norm_ref,
                                               int4_matmul_swiglu_ref,
)

__all__ = ["int4_blocks", "int4_matmul", "int4_matmul_eager", "int4_matmul_ref", "int4_matmul_skip_rms_norm_ref",
           "int4_matmul_swiglu", "int4_matmul_swiglu_ref"]
