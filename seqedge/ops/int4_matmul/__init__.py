from seqedge.ops.int4_matmul.reference import int4_matmul_ref

__all__ = ["int4_matmul_ref"]
