"""ExecuTorch lowerings of seqedge's ops, registered per op and per method (`prefill`, `decode`).

A lowering is a torch decomposition swapped in while the method is traced (`decomposition`), or the
op kept as one node that runs a seqedge C++ kernel (`native`, see native_ops.py). The choice for
`seqedge::selective_scan` was measured (benchmarks/executorch_speed.py and the closing note of issue 4):
a `scan` over time lowers in time that grows with layers (~20 s per layer pair for a tiny model, the
higher-order op's body is re-traced by every pass) and runs the recurrence step by step in the
interpreter; the C++ kernel is one node, lowers in constant time and is linear in T. Decode (T = 1) runs
the same kernel: as elementwise ops and a bmm in XNNPACK the step was ~10 % slower per token on mamba-130m
int4 (140-146 vs 155-159 tok/s, 2 threads; the step's ops are too small to pay for the delegate calls). `seqedge::attention` runs on
ExecuTorch's LLM kernels over caches the program holds (held_state.py): a cache passed in and out of
every call, or written by a one-hot matmul, made llama-135m decode 6× slower than onnxruntime. Both methods
attend with seqedge's own kernel (`seqedge::cached_sdpa`): ExecuTorch's `llama::custom_sdpa` at one
query row cost 1.2–1.9 ms per llama-135m layer at 256–1024 cached positions (decode 49.5 → 22.8 tok/s), and
for a prompt it is, inside Python, the wheel's build on libtorch's MKL, while the runner and the apps had
another; seqedge's tiles are one code for all of them.
"""

from __future__ import annotations

from seqedge.exporters.decompositions import (
    attention_cached_sdpa,
    conv_tail_slice,
    ssd_selective_scan_kernel,
    ssd_single_step,
)
from seqedge.exporters.lowering import Lowering, LoweringRegistry

METHODS = ("prefill", "decode")
STEP = "decode"  # the method that runs one token at a time


LOWERINGS = LoweringRegistry("ExecuTorch lowering")
register = LOWERINGS.add_lowering


def lowerings_for(method: str) -> list[Lowering]:
    return LOWERINGS.for_variant(method)


register("seqedge::selective_scan", "prefill", "native",
         "seqedge C++ kernel seqedge::selective_scan.out (runtimes/native/kernels), linear in T")
register("seqedge::selective_scan", "decode", "native",
         "seqedge C++ kernel seqedge::selective_scan.out at T = 1 (one node per layer; measured 10 % faster than the "
         "step as elementwise ops + a bmm in XNNPACK on mamba-130m int4)")
for _method in METHODS:
    register("seqedge::mamba_scan", _method, "native",
             "seqedge C++ kernel seqedge::mamba_scan.out: the scan with Mamba's softplus step and silu(z) gate inside "
             "(onnxruntime's seqedge.MambaScan; apart, a decode step's softplus and gate were two XNNPACK calls a layer)")
    register("seqedge::int4_mamba_scan", _method, "native",
             "seqedge C++ kernel seqedge::int4_mamba_scan.out: seqedge::mamba_scan.out whose step is the int4 dt_proj, "
             "computed inside (onnxruntime's seqedge.Int4MambaScan; a step's product and scan block by block)")
register("seqedge::ssd_scan", "prefill", "decomposition",
         "seqedge::selective_scan per group of heads (the C++ scan kernel, linear in T); the chunked SSD form does "
         "not export with a dynamic T here (torch.export cannot prove its chunk reshape divides)",
         ssd_selective_scan_kernel)
register("seqedge::ssd_scan", "decode", "decomposition",
         "one recurrence step as elementwise ops and a matmul per head (delegated to XNNPACK)", ssd_single_step)
register("seqedge::causal_conv1d", "prefill", "decomposition", "cat + depthwise conv1d + x·sigmoid(x) + slice",
         conv_tail_slice)
register("seqedge::causal_conv1d", "decode", "native",
         "seqedge C++ kernel seqedge::causal_conv1d.out: one step, each channel's window shifted where it lies "
         "(as a decomposition it was a delegate call of ~11 XNNPACK ops, ~30 us of each mamba-130m layer's ~200)")
for _method in METHODS:
    register("seqedge::moe_ffn", _method, "native",
             "seqedge C++ kernel seqedge::moe_ffn.out: per token only the k chosen experts' rows are read")
    register("seqedge::moe_ffn_q", _method, "native",
             "seqedge C++ kernel seqedge::moe_ffn_q.out: the k chosen experts' int8/int4 block codes, read per token")
for _method in METHODS:
    register("seqedge::int4_matmul", _method, "native",
             "seqedge C++ kernel seqedge::int4_matmul.out: int4 blocks of 32 times int8 activations, the kernel "
             "onnxruntime's int4 graphs run (where the int4 recipe put it in place of XNNPACK's 8da4w)")
for _method in METHODS:
    register("seqedge::int4_matmul_swiglu", _method, "native",
             "seqedge C++ kernel seqedge::int4_matmul_swiglu.out: a fused gate/up projection's int4 product and its "
             "SwiGLU as the rows come (the split, sigmoid and products were a delegate call of their own per layer)")
for _method in METHODS:
    register("seqedge::rms_norm", _method, "native",
             "seqedge C++ kernel seqedge::rms_norm.out: RMSNorm with its weight, rows over the threadpool (as XNNPACK "
             "ops a step's norm was a delegate call of ~4-5 us, 61 a llama-135m token; a prompt's mean of squares a "
             "global average pool: 31 ms of a 1,024-token llama-135m prompt, the kernel 3 ms)")
register("seqedge::attention", "prefill", "decomposition",
         "seqedge::rope (seqedge C++ kernel) on q and k, llama::update_cache in place into program-held caches "
         "(shared by both methods) + seqedge::cached_sdpa "
         "over [0, pos + T) (seqedge C++ kernel, in tiles of 8 positions x the query heads sharing a kv head; the "
         "same code as the runner's and the apps'; inside Python as fast as the wheel's llama::custom_sdpa on MKL: "
         "llama-135m int4 prefill 1,040-1,280 vs 910-1,310 tok/s at T = 256, 590-690 vs 600-700 at T = 1024)", attention_cached_sdpa)
register("seqedge::attention", "decode", "decomposition",
         "seqedge::rope on q and k, llama::update_cache in place into the program-held caches + "
         "seqedge::cached_sdpa over [0, pos + 1) (seqedge C++ kernels: each cached row read once for the query "
         "heads sharing it)", attention_cached_sdpa)
