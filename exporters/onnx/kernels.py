"""onnxscript handles for seqedge's own onnxruntime ops (domain `seqedge`, runtimes/ort_kernels.py), and
what a lowering that emits them needs: the library, built for this machine.

Each op's schema is declared here (inputs, outputs, float32) — the C++ kernel checks the same at run time.
"""

from __future__ import annotations

from onnx.defs import OpSchema
from onnxscript.values import Op, Opset

from seqedge.runtimes.ort_kernels import DOMAIN, problems

SEQEDGE = Opset(DOMAIN, 1)


class KernelsUse:
    """What a lowering onto seqedge's kernels needs: the library builds and verifies here."""

    op = "seqedge kernels"

    def problems(self, schemas=None) -> list[str]:  # `schemas` (onnxruntime's contrib registry) does not apply
        return problems()


SEQEDGE_KERNELS = KernelsUse()


def _op(name: str, inputs: tuple[str, ...], outputs: tuple[str, ...], int64: tuple[str, ...] = ()) -> Op:
    """Float32 operands, but for those named in `int64`."""
    param = lambda n: OpSchema.FormalParameter(n, "I" if n in int64 else "T", "")  # noqa: E731
    types = [("T", ["tensor(float)"], "")] + ([("I", ["tensor(int64)"], "")] if int64 else [])
    schema = OpSchema(name, DOMAIN, 1, inputs=[param(i) for i in inputs], outputs=[param(o) for o in outputs],
                      type_constraints=types)
    return Op(SEQEDGE, name, schema)


# y (Bt, T, D), state_out (Bt, D, N) = SelectiveScan(u, delta (Bt, T, D), A (D, N), B, C (Bt, T, N), D (D), state)
SELECTIVE_SCAN = _op("SelectiveScan", ("u", "delta", "A", "B", "C", "D", "state"), ("y", "state_out"))
# the same with Mamba's block around it: step softplus(delta), output gated by silu(z) (Bt, T, D) — mamba_scan_ref
MAMBA_SCAN = _op("MambaScan", ("u", "delta", "A", "B", "C", "D", "state", "z"), ("y", "state_out"))
# y (Bt, T, D), state_out (Bt, D, K-1) = CausalConv1d(x (Bt, T, D), weight (D, 1, K), bias (D), state): Mamba's
# convolution + SiLU, channels last (causal_conv1d_ref on the transposed x and y)
CAUSAL_CONV1D = _op("CausalConv1d", ("x", "weight", "bias", "state"), ("y", "state_out"))
# out (Bt, T, H*hd), k_cache_out, v_cache_out (Bt, Hkv, S, hd) = Attention(q (Bt, T, H*hd), k, v (Bt, T, Hkv*hd),
# k_cache, v_cache, pos (1,) int64, cos, sin (S, hd/2)): seqedge::attention (attention_ref), the caches updated in
# place when the runtime binds each output to its input's buffer; k and v may be absent with q packed (q, k, v
# side by side along the last axis: fusions.pack_attention_qkv)
ATTENTION = _op("Attention", ("q", "k", "v", "k_cache", "v_cache", "pos", "cos", "sin"),
                ("out", "k_cache_out", "v_cache_out"), int64=("pos",))
