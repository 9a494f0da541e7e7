from seqedge.ops.int4_matmul.op import int4_matmul, int4_matmul_eager, int4_matmul_swiglu
from seqedge.ops.int4_matmul.reference import (
                                               group_rows,
                                               int4_blocks,
                                               int4_gather_ref,
                                               int4_mamba_scan_ref,
                                               int4_matmul_conv_ref,
                                               int4_matmul_ref,
                                               int4_matmul_skip_rms_norm_ref,
                                               int4_matmul_swiglu_ref,
                                               ungroup_rows,
)

__all__ = ["group_rows", "int4_blocks", "int4_gather_ref", "int4_mamba_scan_ref", "int4_matmul", "int4_matmul_conv_ref", "int4_matmul_eager",
           "int4_matmul_ref", "int4_matmul_skip_rms_norm_ref", "int4_matmul_swiglu", "int4_matmul_swiglu_ref",
           "ungroup_rows"]
