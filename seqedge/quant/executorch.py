"""Quantization recipes for ExecuTorch programs, with torchao (the quantizer ExecuTorch's XNNPACK
backend is built for). Each function quantizes a copy of the model before it is traced:

    int8        Int8DynamicActivationIntxWeightConfig(int8 weights per output channel): "8da8w"
    int4        Int8DynamicActivationIntxWeightConfig(int4 weights, PerGroup(G)) on every Linear: "8da4w",
                ExecuTorch's own LLM default (and what seqedge's ONNX int4 does)
    int4-head8  the same, with the output head 8da8w: ExecuTorch's "8da4w_output_8da8w", close to what
                llama.cpp's Q4_0 files do (their head is Q6_K, or Q8_0 when its width is not a multiple of 256)

Each takes `nn.Linear` layers (the projections, the MLP, the output head, a mixture's router); XNNPACK then runs
them with 8-bit dynamic activations. For an x86-64 target with AVX2 (`ctx.int4_kernel`, decided by the exporter)
the int4 recipes' Linear layers in groups of 32 become `Int4Linear` instead: seqedge's int4 kernel
(`seqedge::int4_matmul`, the one onnxruntime's int4 graphs run), the same Q4_0-style codes with int8 activations
per block of 32. There XNNPACK's 8da4w was the slower kernel (a Zen 3 without VNNI, 2 threads: llama-135m
prefill at T = 256 438 tok/s against 888 in onnxruntime on seqedge's kernel, decode streaming 0.39-0.47 of the
read bandwidth against 0.57-0.67); on arm64 XNNPACK's NEON kernels stay. A mixture's packed experts (models/transformer.py PackedExperts) become
block codes for seqedge's MoE kernel (`seqedge::moe_ffn_q`: int8 per row, int4 in the recipe's groups; float
activations), so decode still reads only the chosen experts.

The output head is what separates the two 4-bit recipes: it is the largest matrix a token reads (mamba-130m:
38.6M of 130M weights) and what 4 bits cost a real model most. On SmolLM2-135M, 8da4w everywhere moves the
next-token distributions by 0.39 nats (mean KL), with an 8-bit head by 0.26 (the eager torchao model on
held-out prose), for 14 MB more; on mamba-130m's shapes the 8-bit head is a fifth of the decode step (5.1 ->
4.1 ms a token with a 4-bit one, 2 threads). Both stay within the int4 gate (recipe.py).

The embedding table becomes `QuantizedEmbedding` (ExecuTorch's `quantized_decomposed::embedding_byte` /
`embedding_4bit` kernels: int8 per row, or int4 in the same groups), so a tied table is stored twice but small.
A Linear whose input width is not a multiple of the group size stays float and is reported (report.py reads
what stayed float back from the model).

fp16 and int8-static are not implemented for ExecuTorch yet (the ONNX format has both).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def _linear_filter(group: int | None, only=None, skip=()):
    def keep(module: nn.Module, fqn: str) -> bool:
        return (isinstance(module, nn.Linear) and (group is None or module.in_features % group == 0)
                and (only is None or fqn in only) and fqn not in skip)

    return keep


def _quantize(model: nn.Module, weight_dtype, granularity, group: int | None, head=None,
              kernel: bool = False) -> nn.Module:
    """8-bit dynamic activations and `weight_dtype` weights on every Linear (`kernel`: Int4Linear layers
    instead); `head`: (dtype, granularity) for the output head instead."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_

    model = copy.deepcopy(model)
    _untie(model)
    heads = _output_heads(model) if head else set()
    with torch.no_grad():
        if kernel:
            _kernel_linears(model, skip=heads)
        else:
            quantize_(model, Int8DynamicActivationIntxWeightConfig(weight_dtype=weight_dtype,
                                                                   weight_granularity=granularity),
                      filter_fn=_linear_filter(group, skip=heads))
        if heads:
            quantize_(model, Int8DynamicActivationIntxWeightConfig(weight_dtype=head[0], weight_granularity=head[1]),
                      filter_fn=_linear_filter(None, only=heads))
    return model


def _output_heads(model: nn.Module) -> set[str]:
    """The Linear that produces logits: a direct child of the model as wide as the vocabulary (the
    embedding table's rows); a body layer of the same width (a byte model's MLP) is not one."""
    vocab = {m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)}
    return {name for name, m in model.named_children() if isinstance(m, nn.Linear) and m.out_features in vocab}


def _untie(model: nn.Module) -> None:
    """Give a tied output head its own weight: the head is quantized, the embedding table is not."""
    seen: dict[int, str] = {}
    for name, module in model.named_modules():
        w = getattr(module, "weight", None)
        if isinstance(w, nn.Parameter):
            if id(w) in seen and isinstance(module, nn.Linear):
                module.weight = nn.Parameter(w.detach().clone())
            seen.setdefault(id(w), name)


class QuantizedEmbedding(nn.Module):
    """An embedding table stored as symmetric int8 per row (bits 8) or packed int4 in groups (bits 4),
    looked up by ExecuTorch's quantized embedding kernels (libexecutorch_kernels_quantized)."""

    def __init__(self, table: torch.Tensor, bits: int, group: int | None):
        super().__init__()
        V, D = table.shape
        self.bits = bits
        group = D if bits == 8 or not group or D % group else group
        qmax = 127 if bits == 8 else 7
        w = table.detach().float().reshape(V, D // group, group)  # (V, groups, g)
        scales = (w.abs().amax(-1) / qmax).clamp(min=1e-10)  # (V, groups)
        q = torch.round(w / scales[..., None]).clamp(-qmax - 1, qmax).to(torch.int8).reshape(V, D)
        if bits == 4:  # two values a byte, the even one in the high nibble, stored with +8
            u = (q + 8).to(torch.uint8)
            q = (u[:, 0::2] << 4) | u[:, 1::2]  # (V, D/2)
        self.register_buffer("weight", q)
        self.register_buffer("scales", scales.squeeze(-1) if scales.shape[1] == 1 else scales)

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        if self.bits == 8:
            return torch.ops.quantized_decomposed.embedding_byte.dtype(self.weight, self.scales, None, -128, 127,
                                                                       indices, dtype=torch.float32)
        return torch.ops.quantized_decomposed.embedding_4bit.dtype(self.weight, self.scales, None, -8, 7, indices,
                                                                   dtype=torch.float32)


def quantized_embedding_kernels() -> None:
    """Register the quantized embedding ops with torch (export) and their kernels with ExecuTorch."""
    import executorch.exir.passes._quant_patterns_and_replacements  # noqa: F401  (the ops' export impls)
    import executorch.kernels.quantized  # noqa: F401  (its library also registers the runtime kernels)


def _quantize_embeddings(model: nn.Module, bits: int, group: int | None) -> None:
    quantized_embedding_kernels()
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Embedding):
                setattr(module, child_name, QuantizedEmbedding(child.weight, bits, group))


def quantize_experts(model: nn.Module, bits: int, group: int | None) -> None:
    """Every packed mixture of experts to `bits`-bit block codes: per row (group None) or in groups of `group`
    along the input where it divides both widths (else the experts stay float, and the report says so)."""
    from seqedge.models.transformer import PackedExperts

    for module in model.modules():
        if isinstance(module, PackedExperts) and not module.bits:
            width, inner = module.w13.shape[2], module.w2.shape[2]
            if group is None:
                module.quantize(bits, width, inner)
            elif width % group == 0 and inner % group == 0:
                module.quantize(bits, group, group)


def int8(model: nn.Module, ctx) -> nn.Module:
    from torchao.quantization.granularity import PerAxis

    model = _quantize(model, torch.int8, PerAxis(0), None)
    _quantize_embeddings(model, 8, None)
    quantize_experts(model, 8, None)
    return model


class Int4Linear(nn.Module):
    """A Linear layer as seqedge's int4 codes (ops/int4_matmul: blocks of 32 along the input, a float16 scale
    each), run by `seqedge::int4_matmul`; a bias stays float. The rows are stored in groups of 16 (group_rows: the
    kernel multiplies 16 rows per instruction, with no horizontal sums); where N is not a multiple of 16, the last
    N % 16 rows stay rows, a second product whose outputs follow (mamba-130m's 50,280-wide head: 30 % of the bytes
    a token reads)."""

    def __init__(self, linear: nn.Linear):
        from seqedge.ops.int4_matmul import group_rows, int4_blocks

        super().__init__()
        codes, scales = int4_blocks(linear.weight)  # (N, K/32, 16), (N, K/32)
        whole = codes.shape[0] // 16 * 16
        tail = (codes[whole:].contiguous(), scales[whole:].contiguous()) if whole and whole < len(codes) else None
        if whole:
            codes, scales = group_rows(codes[:whole], scales[:whole])
        self.register_buffer("codes", codes)  # (N/16, K/32, 256) uint8 in groups, or (N, K/32, 16) when N < 16
        self.register_buffer("scales", scales)  # (N/16, K/32, 16) float16, or (N, K/32)
        self.register_buffer("tail_codes", None if tail is None else tail[0])  # (N % 16, K/32, 16) or None
        self.register_buffer("tail_scales", None if tail is None else tail[1])  # (N % 16, K/32)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float().clone(), False)

    def rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The codes (N, K/32, 16) and scales (N, K/32) of every row, in rows."""
        from seqedge.ops.int4_matmul import ungroup_rows

        codes, scales = ungroup_rows(self.codes, self.scales)
        if self.tail_codes is None:
            return codes, scales
        return torch.cat([codes, self.tail_codes]), torch.cat([scales, self.tail_scales])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.seqedge.int4_matmul(x, self.codes, self.scales)  # (..., N // 16 * 16)
        if self.tail_codes is not None:
            y = torch.cat([y, torch.ops.seqedge.int4_matmul(x, self.tail_codes, self.tail_scales)], -1)  # (..., N)
        return y if self.bias is None else y + self.bias

    def mamba_scan(self, dt, u, A, B, C, D, state, z) -> tuple[torch.Tensor, torch.Tensor]:
        """Mamba's scan (softplus step, silu(z) gate) whose step is this layer's output, Mamba's dt_proj
        (models/mamba.py): one `seqedge::int4_mamba_scan`, the product inside the scan's kernel, where the layer is
        whole groups of 16 rows with a bias (else the product, then `seqedge::mamba_scan`)."""
        if self.bias is None or self.tail_codes is not None or self.codes.shape[-1] != 256:
            return torch.ops.seqedge.mamba_scan(u, self(dt), A, B, C, D, state, z)
        return torch.ops.seqedge.int4_mamba_scan(u, dt, self.codes, self.scales, self.bias, A, B, C, D, state, z)

    def swiglu(self, x: torch.Tensor) -> torch.Tensor:
        """silu(gate) * up of this layer's output halves, a fused gate/up projection's (models/transformer.py MLP):
        one `seqedge::int4_matmul_swiglu`, where a bias (or halves not in whole groups of 16 rows) leaves nothing to
        fuse."""
        whole = self.codes.shape[-1] != 256 or self.codes.shape[0] % 2 == 0  # the halves in whole groups of 16 rows
        if self.bias is not None or self.tail_codes is not None or not whole:
            gate, up = self(x).chunk(2, dim=-1)  # (..., N/2) each
            return torch.nn.functional.silu(gate) * up
        return torch.ops.seqedge.int4_matmul_swiglu(x, self.codes, self.scales)  # (..., N/2)


KERNEL_BLOCK = 32  # the only group size seqedge's int4 kernel takes


def _kernel_linears(model: nn.Module, skip=()) -> None:
    """Every Linear not in `skip` to Int4Linear, in place; an input width that is not a multiple of 32 has its last
    block zero-padded, as onnxruntime's MatMulNBits has (Mamba's dt_proj, 48 wide in mamba-130m: left float it was
    24 x 1536 x 48 float32 weights, 7 MB of a step's ~80 MB read through XNNPACK)."""
    keep = _linear_filter(None, skip=skip)
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if keep(child, f"{name}.{child_name}" if name else child_name):
                setattr(module, child_name, Int4Linear(child))


def int4(model: nn.Module, ctx, head=None) -> nn.Module:
    from torchao.quantization.granularity import PerGroup

    kernel = ctx.int4_kernel and ctx.group_size == KERNEL_BLOCK
    model = _quantize(model, torch.int4, PerGroup(ctx.group_size), ctx.group_size, head=head, kernel=kernel)
    _quantize_embeddings(model, 4, ctx.group_size)
    quantize_experts(model, 4, ctx.group_size)
    return model


def int4_head8(model: nn.Module, ctx) -> nn.Module:
    from torchao.quantization.granularity import PerAxis

    return int4(model, ctx, head=(torch.int8, PerAxis(0)))


IMPLEMENTS = {"fp32": None, "int8": int8, "int4": int4, "int4-head8": int4_head8}
