"""What every scan op registers beside its kernel: the fake (shapes for torch.export) and the autograd hooks.

    register_scan(op, backward)   # backward(inputs, grad_y, grad_state) -> one gradient per input

A scan op takes the input first and the carried state last and returns (y shaped like the input, the new
state shaped like the state); its backward saves nothing but the inputs and recomputes what it needs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def register_scan(op, backward: Callable) -> None:
    def fake(x, *rest):
        return torch.empty_like(x), torch.empty_like(rest[-1])

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    op.register_fake(fake)
    op.register_autograd(lambda ctx, grad_y, grad_state: backward(ctx.saved_tensors, grad_y, grad_state),
                         setup_context=setup_context)
