from seqedge.ops.ssd_scan.chunked import ssd_scan_chunked
from seqedge.ops.ssd_scan.op import ssd_scan
from seqedge.ops.ssd_scan.reference import ssd_scan_ref

__all__ = ["ssd_scan", "ssd_scan_chunked", "ssd_scan_ref"]
