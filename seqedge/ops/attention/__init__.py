from seqedge.ops.attention.cached import cached_sdpa, cached_sdpa_ref
from seqedge.ops.attention.op import attention, attention_sdpa
from seqedge.ops.attention.reference import attention_ref
from seqedge.ops.attention.rope import rope, rope_at_ref
from seqedge.ops.attention.to_half import to_half, to_half_ref

__all__ = ["attention", "attention_ref", "attention_sdpa", "cached_sdpa", "cached_sdpa_ref", "rope", "rope_at_ref",
           "to_half", "to_half_ref"]
