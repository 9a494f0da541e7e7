from seqedge.ops.rms_norm.op import rms_norm
from seqedge.ops.rms_norm.reference import rms_norm_ref

__all__ = ["rms_norm", "rms_norm_ref"]
