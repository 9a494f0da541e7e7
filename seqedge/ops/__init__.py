"""seqedge's custom operators. Importing this package registers them with torch.library.

Each op is a folder: `op.py` (custom_op + fake), `reference.py` (the sequential ground truth) and a
fast eager implementation. Lowerings live with the exporters, keyed by op name.
"""

from seqedge.ops.attention import attention, attention_ref, attention_sdpa
from seqedge.ops.selective_scan import selective_scan, selective_scan_chunked, selective_scan_ref

OP_NAMES = ("seqedge::selective_scan", "seqedge::attention")

__all__ = [
    "OP_NAMES",
    "attention",
    "attention_ref",
    "attention_sdpa",
    "selective_scan",
    "selective_scan_chunked",
    "selective_scan_ref",
]
