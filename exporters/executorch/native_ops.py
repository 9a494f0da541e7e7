"""`.out` overloads of seqedge ops that run as seqedge C++ kernels inside ExecuTorch.

ExecuTorch calls an op's out variant at run time; the kernel lives in runtimes/native/kernels and is
registered by loading libseqedge_kernels.so (seqedge.native.load_kernels). The Python implementation
here is what export-time tracing and shape propagation use.
"""

from __future__ import annotations

import torch

import seqedge.ops  # noqa: F401  (defines the functional ops)

_lib = torch.library.Library("seqedge", "FRAGMENT")
_lib.define("selective_scan.out(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor D, Tensor state, *, "
            "Tensor(a!) y, Tensor(b!) state_out) -> (Tensor(a!), Tensor(b!))")


def _selective_scan_out(u, delta, A, B, C, D, state, *, y, state_out):
    y_, s_ = torch.ops.seqedge.selective_scan.default(u, delta, A, B, C, D, state)
    y.resize_(y_.shape).copy_(y_)
    state_out.resize_(s_.shape).copy_(s_)
    return y, state_out


_lib.impl("selective_scan.out", _selective_scan_out, "CompositeExplicitAutograd")

_lib.define("mamba_scan.out(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor D, Tensor state, Tensor z, *, "
            "Tensor(a!) y, Tensor(b!) state_out) -> (Tensor(a!), Tensor(b!))")


def _mamba_scan_out(u, delta, A, B, C, D, state, z, *, y, state_out):
    y_, s_ = torch.ops.seqedge.mamba_scan.default(u, delta, A, B, C, D, state, z)
    y.resize_(y_.shape).copy_(y_)
    state_out.resize_(s_.shape).copy_(s_)
    return y, state_out


_lib.impl("mamba_scan.out", _mamba_scan_out, "CompositeExplicitAutograd")

_lib.define("int4_mamba_scan.out(Tensor u, Tensor dt, Tensor dt_codes, Tensor dt_scales, Tensor dt_bias, Tensor A, "
            "Tensor B, Tensor C, Tensor D, Tensor state, Tensor z, *, Tensor(a!) y, Tensor(b!) state_out) -> "
            "(Tensor(a!), Tensor(b!))")


def _int4_mamba_scan_out(u, dt, dt_codes, dt_scales, dt_bias, A, B, C, D, state, z, *, y, state_out):
    y_, s_ = torch.ops.seqedge.int4_mamba_scan.default(u, dt, dt_codes, dt_scales, dt_bias, A, B, C, D, state, z)
    y.resize_(y_.shape).copy_(y_)
    state_out.resize_(s_.shape).copy_(s_)
    return y, state_out


_lib.impl("int4_mamba_scan.out", _int4_mamba_scan_out, "CompositeExplicitAutograd")

_lib.define("causal_conv1d.out(Tensor x, Tensor weight, Tensor bias, Tensor state, *, Tensor(a!) y, "
            "Tensor(b!) state_out) -> (Tensor(a!), Tensor(b!))")


def _causal_conv1d_out(x, weight, bias, state, *, y, state_out):
    y_, s_ = torch.ops.seqedge.causal_conv1d.default(x, weight, bias, state)
    y.resize_(y_.shape).copy_(y_)
    state_out.resize_(s_.shape).copy_(s_)
    return y, state_out


_lib.impl("causal_conv1d.out", _causal_conv1d_out, "CompositeExplicitAutograd")

_lib.define("rnn_scan.out(Tensor gx, Tensor w_hh, Tensor b_hh, Tensor h0, Tensor c0, SymInt cell, *, Tensor(a!) y, "
            "Tensor(b!) h_out, Tensor(c!) c_out) -> (Tensor(a!), Tensor(b!), Tensor(c!))")


def _rnn_scan_out(gx, w_hh, b_hh, h0, c0, cell, *, y, h_out, c_out):
    y_, h_, c_ = torch.ops.seqedge.rnn_scan.default(gx, w_hh, b_hh, h0, c0, cell)
    for dst, src in ((y, y_), (h_out, h_), (c_out, c_)):
        dst.resize_(src.shape).copy_(src)
    return y, h_out, c_out


_lib.impl("rnn_scan.out", _rnn_scan_out, "CompositeExplicitAutograd")


def _one_output(name: str, params: str) -> None:
    """`seqedge::<name>.out(<params>, *, Tensor(a!) out)`: the functional op's one result, written into `out`."""
    _lib.define(f"{name}.out({params}, *, Tensor(a!) out) -> Tensor(a!)")
    op = getattr(torch.ops.seqedge, name).default

    def out_variant(*args, out):
        y = op(*args)
        out.resize_(y.shape).copy_(y)
        return out

    _lib.impl(f"{name}.out", out_variant, "CompositeExplicitAutograd")


for _name, _params in (
        ("cached_sdpa", "Tensor q, Tensor k_cache, Tensor v_cache, SymInt start_pos"),
        ("rope", "Tensor x, Tensor pos, Tensor cos, Tensor sin"),
        ("moe_ffn", "Tensor x, Tensor logits, Tensor w13, Tensor w2, SymInt top_k, bool renormalise"),
        ("moe_ffn_q", "Tensor x, Tensor logits, Tensor w13_codes, Tensor w13_scales, Tensor w2_codes, Tensor w2_scales, "
                      "SymInt top_k, bool renormalise, SymInt bits"),
        ("int4_matmul", "Tensor a, Tensor codes, Tensor scales"),
        ("int4_matmul_swiglu", "Tensor a, Tensor codes, Tensor scales"),
        ("rms_norm", "Tensor x, Tensor weight, float eps"),
        ("to_half", "Tensor x")):
    _one_output(_name, _params)


def llm_kernels() -> None:
    """Register ExecuTorch's LLM ops (`llama::update_cache`, `llama::custom_sdpa`) with torch; their
    runtime kernels come with the executorch wheel (pybindings) and with seqedge's runner."""
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401


def kernels_here() -> bool:
    """Whether seqedge's ExecuTorch kernel library builds (or is built) on this machine."""
    from seqedge.errors import SeqedgeError
    from seqedge.native import kernel_library

    try:
        kernel_library()
    except SeqedgeError:
        return False
    return True


def one_blas_thread_per_pool_thread() -> int:
    """Make every thread of ExecuTorch's threadpool ask OpenMP (and MKL) for one thread, as torch's own threads
    are while an artifact runs (runtimes/base.py). The wheel's `llama::custom_sdpa` multiplies through
    libtorch's MKL from the pool's workers, where the thread count is still the process default: each gemm
    opened an OpenMP team that spun beside the pool (llama-135m int4 prefill, T = 256, 2 cores: ~480 tok/s, and
    ~1,100-1,300 so). The setting is per thread, so seqedge's kernel library runs it on each pool thread
    (kernels/pool_threads.cpp). Returns the threads reached; 0 where there is nothing to set (no kernel library,
    no OpenMP in torch)."""
    import ctypes
    from pathlib import Path

    import torch

    from seqedge.errors import SeqedgeError
    from seqedge.native import load_kernels

    try:
        load_kernels()
    except SeqedgeError:  # no compiler here: nothing to run it with (the programs still run, slower)
        return 0
    setters = []
    # MKL's C entry point (its lower-case names are the Fortran ones, which take a pointer)
    for pattern, symbol in (("libgomp*.so*", "omp_set_num_threads"), ("libtorch_cpu.*", "MKL_Set_Num_Threads_Local")):
        for path in sorted((Path(torch.__file__).parent / "lib").glob(pattern)):
            try:
                setters.append(getattr(ctypes.CDLL(str(path)), symbol))
                break
            except (OSError, AttributeError):  # not this build's threading library, or no MKL in it
                continue
    return min((on_each_pool_thread(f, 1) for f in setters), default=0)


def on_each_pool_thread(fn, arg: int) -> int:
    """Call the C function `fn(int)` (a ctypes function) once on every thread of ExecuTorch's threadpool, this one
    included (kernels/pool_threads.cpp); returns the threads reached."""
    import ctypes

    from seqedge.native import load_kernels

    run = ctypes.CDLL(str(load_kernels())).seqedge_on_each_pool_thread
    run.argtypes, run.restype = [ctypes.c_void_p, ctypes.c_int], ctypes.c_int64
    return run(ctypes.cast(fn, ctypes.c_void_p), arg)
