"""Parallel projections joined into one matmul before export.

A Llama layer multiplies the same normalised input by q_proj, k_proj and v_proj, and by gate_proj and up_proj:
five matmuls where two do, and under dynamic int8 activations (ExecuTorch's 8da4w, onnxruntime's int4 with int8
compute) five quantizations of the same vector. Modules that can join theirs define `fuse_projections()`
(models/transformer.py); this gives the exporters a model where they have, and leaves the caller's model —
the parity reference — as it is:

    exported = fuse_projections(model)   # shares every other parameter with `model`

The weights are the rows of the originals stacked, so per-row quantization (int8 channels, int4 groups along
the input) gives the same values; only the float accumulation order of the matmul changes.

`freeze_constants(model)` is the same kind of copy with what a module computes from its parameters alone held
as a constant (ExecuTorch, which does not fold constants, otherwise recomputes it every call), and
`gate_scans(model)` one with Mamba's softplus, scan and gate as one op.
"""

from __future__ import annotations

import copy

from torch import nn


def _structure_copy(module: nn.Module) -> nn.Module:
    """A copy of the module tree whose submodule dicts are its own but whose tensors are `module`'s."""
    new = copy.copy(module)
    new._parameters = dict(module._parameters)
    new._buffers = dict(module._buffers)
    new._modules = {name: None if child is None else _structure_copy(child) for name, child in module._modules.items()}
    return new


def fuse_projections(model: nn.Module) -> nn.Module:
    """`model` with each fusable module's parallel projections joined; `model` itself when it has none."""
    return _rewritten(model, "fuse_projections")


def freeze_constants(model: nn.Module) -> nn.Module:
    """`model` with what modules compute from parameters alone made constants, where they define
    `freeze_constants()` (Mamba's A = -exp(A_log), models/mamba.py), for a runtime that does not fold constants
    (ExecuTorch); `model` itself when none does. The caller's model keeps its parameters."""
    return _rewritten(model, "freeze_constants")


def gate_scans(model: nn.Module) -> nn.Module:
    """`model` with Mamba's softplus, scan and gate as one op where a module defines `gate_in_scan()`
    (models/mamba.py), for a runtime that runs the three as one kernel (ExecuTorch's `seqedge::mamba_scan.out`);
    `model` itself when none does."""
    return _rewritten(model, "gate_in_scan")


def _rewritten(model: nn.Module, method: str) -> nn.Module:
    """A structure copy of `model` in which every module defining `method` has called it; `model` itself when
    none defines it."""
    if not any(hasattr(m, method) for m in model.modules()):
        return model
    copy_ = _structure_copy(model)
    for module in copy_.modules():
        if hasattr(module, method):
            getattr(module, method)()
    return copy_
