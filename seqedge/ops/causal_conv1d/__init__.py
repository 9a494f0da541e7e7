from seqedge.ops.causal_conv1d.op import causal_conv1d, causal_conv1d_eager
from seqedge.ops.causal_conv1d.reference import causal_conv1d_ref

__all__ = ["causal_conv1d", "causal_conv1d_eager", "causal_conv1d_ref"]
