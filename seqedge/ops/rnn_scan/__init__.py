from seqedge.ops.rnn_scan.op import rnn_scan
from seqedge.ops.rnn_scan.reference import CELLS, rnn_scan_ref

__all__ = ["CELLS", "rnn_scan", "rnn_scan_ref"]
