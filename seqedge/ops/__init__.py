"""seqedge's custom operators. Importing this package registers them with torch.library.

Each op is a folder: `op.py` (custom_op + fake), `reference.py` (the sequential ground truth) and a
fast eager implementation. Lowerings live with the exporters, keyed by op name.
"""

from seqedge.ops.attention import (
    attention,
    attention_ref,
    attention_sdpa,
    cached_sdpa,
    cached_sdpa_ref,
    rope,
    rope_at_ref,
    to_half,
    to_half_ref,
)
from seqedge.ops.causal_conv1d import causal_conv1d, causal_conv1d_eager, causal_conv1d_ref
from seqedge.ops.int4_matmul import (
    int4_blocks,
    int4_mamba_scan_ref,
    int4_matmul,
    int4_matmul_conv_ref,
    int4_matmul_ref,
    int4_matmul_skip_rms_norm_ref,
    int4_matmul_swiglu_ref,
)
from seqedge.ops.moe_ffn import moe_ffn, moe_ffn_dense, moe_ffn_q, moe_ffn_q_ref, moe_ffn_ref
from seqedge.ops.rms_norm import rms_norm, rms_norm_ref
from seqedge.ops.rnn_scan import CELLS, rnn_scan, rnn_scan_ref
from seqedge.ops.selective_scan import (
    int4_mamba_scan,
    mamba_scan,
    mamba_scan_ref,
    selective_scan,
    selective_scan_chunked,
    selective_scan_ref,
)
from seqedge.ops.ssd_scan import ssd_scan, ssd_scan_chunked, ssd_scan_ref

OP_NAMES = ("seqedge::selective_scan", "seqedge::ssd_scan", "seqedge::attention", "seqedge::causal_conv1d",
            "seqedge::moe_ffn")  # what models call (moe_ffn in the packed form the exporters build)
# `seqedge::moe_ffn_q` is moe_ffn with quantized experts (the int8/int4 recipes put it in place);
# `seqedge::cached_sdpa`, `seqedge::rope` and `seqedge::to_half` are not model ops: ExecuTorch's lowering of attention emits them (C++
# kernels);
# nor is `seqedge::rnn_scan`: ExecuTorch's RNN/LSTM/GRU layers (exporters/executorch/rnn.py) run on it;
# nor is `seqedge::mamba_scan`: ExecuTorch's copy of a Mamba block calls it for softplus, scan and gate
# (`seqedge::int4_mamba_scan` with its int4 dt_proj inside);
# nor is `seqedge::rms_norm`: ExecuTorch's methods trace RMSNorm as it (exporters/decompositions.py);
# nor is `seqedge::int4_matmul`: ExecuTorch's int4 recipe puts it in place of Linear layers (quant/executorch.py);
# `int4_matmul_ref` / `int4_matmul_swiglu_ref` / `int4_matmul_skip_rms_norm_ref`: it, and onnxruntime's
# seqedge.Int4MatMul(SwiGLU, SkipRmsNorm) (the int4 recipe's kernels there), `int4_matmul_conv_ref` its
# Int4MatMulConv (Mamba's in_proj and convolution), `int4_mamba_scan_ref` its Int4MambaScan (dt_proj in the scan); `int4_gather_ref`: onnxruntime's
# seqedge.Int4Gather, a tied embedding reading its head's codes (ops/int4_matmul, with group_rows / ungroup_rows)

__all__ = [
    "CELLS",
    "OP_NAMES",
    "attention",
    "attention_ref",
    "attention_sdpa",
    "cached_sdpa",
    "cached_sdpa_ref",
    "causal_conv1d",
    "causal_conv1d_eager",
    "causal_conv1d_ref",
    "int4_blocks",
    "int4_mamba_scan",
    "int4_mamba_scan_ref",
    "int4_matmul",
    "int4_matmul_conv_ref",
    "int4_matmul_ref",
    "int4_matmul_skip_rms_norm_ref",
    "int4_matmul_swiglu_ref",
    "mamba_scan",
    "mamba_scan_ref",
    "moe_ffn",
    "moe_ffn_dense",
    "moe_ffn_q",
    "moe_ffn_q_ref",
    "moe_ffn_ref",
    "rms_norm",
    "rms_norm_ref",
    "rnn_scan",
    "rnn_scan_ref",
    "rope",
    "rope_at_ref",
    "selective_scan",
    "selective_scan_chunked",
    "selective_scan_ref",
    "ssd_scan",
    "ssd_scan_chunked",
    "ssd_scan_ref",
    "to_half",
    "to_half_ref",
]
