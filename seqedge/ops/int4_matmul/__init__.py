from seqedge.ops.int4_matmul.reference import int4_matmul_ref, int4_matmul_swiglu_ref

__all__ = ["int4_matmul_ref", "int4_matmul_swiglu_ref"]
