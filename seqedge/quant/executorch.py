"""Quantization recipes for ExecuTorch programs, with torchao (the quantizer ExecuTorch's XNNPACK
backend is built for). Each function quantizes a copy of the model before it is traced:

    int8   Int8DynamicActivationIntxWeightConfig(int8 weights per output channel): "8da8w"
    int4   Int8DynamicActivationIntxWeightConfig(int4 weights, PerGroup(G)): "8da4w"

Both take `nn.Linear` layers only (the projections, the MLP, the output head); XNNPACK then runs them
with 8-bit dynamic activations. A Linear whose input width is not a multiple of the group size stays
float and is reported (report.py reads what stayed float back from the model). The embedding table stays
float32 here: quantizing it needs ExecuTorch's quantized embedding kernels, which seqedge's runtimes do
not load; ONNX artifacts quantize it (GatherBlockQuantized / int8 Gather).

fp16 and int8-static are not implemented for ExecuTorch yet (the ONNX format has both).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def _linear_filter(group: int | None):
    def keep(module: nn.Module, fqn: str) -> bool:
        return isinstance(module, nn.Linear) and (group is None or module.in_features % group == 0)

    return keep


def _quantize(model: nn.Module, weight_dtype, granularity, group: int | None) -> nn.Module:
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_

    model = copy.deepcopy(model)
    _untie(model)
    with torch.no_grad():
        quantize_(model, Int8DynamicActivationIntxWeightConfig(weight_dtype=weight_dtype,
                                                               weight_granularity=granularity),
                  filter_fn=_linear_filter(group))
    return model


def _untie(model: nn.Module) -> None:
    """Give a tied output head its own weight: the head is quantized, the embedding table is not."""
    seen: dict[int, str] = {}
    for name, module in model.named_modules():
        w = getattr(module, "weight", None)
        if isinstance(w, nn.Parameter):
            if id(w) in seen and isinstance(module, nn.Linear):
                module.weight = nn.Parameter(w.detach().clone())
            seen.setdefault(id(w), name)


def int8(model: nn.Module, ctx) -> nn.Module:
    from torchao.quantization.granularity import PerAxis

    return _quantize(model, torch.int8, PerAxis(0), None)


def int4(model: nn.Module, ctx) -> nn.Module:
    from torchao.quantization.granularity import PerGroup

    return _quantize(model, torch.int4, PerGroup(ctx.group_size), ctx.group_size)


IMPLEMENTS = {"fp32": None, "int8": int8, "int4": int4}
