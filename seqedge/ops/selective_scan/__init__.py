from seqedge.ops.selective_scan.chunked import selective_scan_chunked
from seqedge.ops.selective_scan.gated import int4_mamba_scan, mamba_scan
from seqedge.ops.selective_scan.op import selective_scan
from seqedge.ops.selective_scan.reference import mamba_scan_ref, selective_scan_ref

__all__ = ["int4_mamba_scan", "mamba_scan", "mamba_scan_ref", "selective_scan", "selective_scan_chunked", "selective_scan_ref"]
