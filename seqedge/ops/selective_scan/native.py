"""The selective scan in eager PyTorch on seqedge's C++ kernel: libseqedge_eager_kernels (runtimes/native/
kernels/eager), the scan source the ExecuTorch and onnxruntime kernels compile, called through ctypes on
contiguous float32 CPU tensors. The eager op (training's forward, the fp32 references of parity checks and
accuracy reports) uses it when the library is here, and the Python recurrence (sequential.py) otherwise:
stepping (Bt, T, D, N) tensors in Python cost 0.16 s per mamba-130m layer at T = 1,024.

    out = scan_native(u, delta, A, B, C, D, state)   # (y, state) or None when it does not apply

The library is built on first use into seqedge's private cache (seqedge/native.py) and checked by sha256;
where it cannot be built (no compiler) the op keeps the Python path, said once in the log.
"""

from __future__ import annotations

import ctypes
import functools
import logging

import torch
from torch import Tensor

from seqedge.errors import SeqedgeError

log = logging.getLogger(__name__)
TARGET = "seqedge_eager_kernels"


@functools.cache
def _library():
    from seqedge.native import kernel_library, verified_library

    try:
        lib = ctypes.CDLL(str(verified_library(kernel_library(TARGET))))
    except SeqedgeError as e:
        log.info("the eager selective scan steps in Python: %s", e)
        return None
    f = lib.seqedge_selective_scan_f32
    f.argtypes = [ctypes.c_void_p] * 9 + [ctypes.c_int64] * 4 + [ctypes.c_int]
    f.restype = ctypes.c_int
    return f


def scan_native(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
                state: Tensor) -> tuple[Tensor, Tensor] | None:
    operands = (u, delta, A, B, C, D, state)
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in operands) or u.dim() != 3 or A.dim() != 2:
        return None
    Bt, T, Dm = u.shape
    N = A.shape[1]
    shapes = [tuple(t.shape) for t in operands]
    if shapes != [(Bt, T, Dm), (Bt, T, Dm), (Dm, N), (Bt, T, N), (Bt, T, N), (Dm,), (Bt, Dm, N)]:
        return None  # broadcast or unusual operands: the Python path handles (or refuses) them
    fn = _library()
    if fn is None:
        return None
    u, delta, A, B, C, D, state = (t.contiguous() for t in operands)
    y, state_out = torch.empty_like(u), torch.empty_like(state)  # (Bt, T, D), (Bt, D, N)
    threads = torch.get_num_threads() if T * Dm >= 4096 else 1  # a thread costs more than a short scan
    rc = fn(*(t.data_ptr() for t in (u, delta, A, B, C, D, state, y, state_out)), Bt, T, Dm, N, threads)
    if rc != 0:
        raise ValueError(f"seqedge_selective_scan_f32 refused shapes u {tuple(u.shape)}, A {tuple(A.shape)}")
    return y, state_out
