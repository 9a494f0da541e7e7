"""ExecuTorch: every lowering against its op's reference in real ExecuTorch programs, whole-model `.pte`
artifacts (two methods, parity, state carried, delegation report), the native C++ runner, bad inputs."""

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from seqedge.cli.app import app
from seqedge.errors import BadInputError, CorruptFileError, UnsupportedError
from seqedge.exporters import ExportPlan, export
from seqedge.exporters.artifact import read_manifest
from seqedge.exporters.decompositions import Substitute
from seqedge.exporters.executorch import native_ops
from seqedge.exporters.executorch.export import PAGE
from seqedge.exporters.executorch.lowerings import LOWERINGS
from seqedge.models import build_model
from seqedge.native import RUNNER_FILES
from seqedge.ops import CELLS, moe_ffn_q_ref, moe_ffn_ref, rnn_scan_ref
from seqedge.ops.attention.reference import rope_ref
from seqedge.ops.moe_ffn import quantize_experts
from seqedge.runtimes import open_artifact
from seqedge.schema import MANIFEST
from tests.conftest import FAMILY_NAMES, best_kernel_isa
from tests.test_onnx_export import OP_CASES, WithMHA
from tests.test_ops import moe_inputs

TOL = 1e-4


def rnn_inputs(T, Bt=2, H=40, cell=CELLS["lstm"], seed=0):
    """Operands of seqedge::rnn_scan."""
    g = torch.Generator().manual_seed(seed)
    G = {0: 1, 1: 1, 2: 4, 3: 3}[cell]
    return (torch.randn(Bt, T, G * H, generator=g), torch.randn(G * H, H, generator=g) / H ** 0.5,
            torch.randn(G * H, generator=g) * 0.1, torch.randn(Bt, H, generator=g), torch.randn(Bt, H, generator=g), cell)



class OneOp(torch.nn.Module):
    def __init__(self, op):
        super().__init__()
        self.op = op

    def forward(self, *args):
        return tuple(o * 1.0 for o in self.op(*args))  # a real node after the op: outputs are never inputs


class HeldCacheAttention(torch.nn.Module):
    """seqedge::attention with its caches held by the program, as the exporter lowers it (held_state.py);
    the caches come back as copies in the op's layout. (A program's mutable buffers start as zeros.)"""

    def __init__(self, k_cache, v_cache, cos, sin):
        super().__init__()
        self.register_buffer("k", torch.zeros_like(k_cache.transpose(1, 2)))  # (Bt, S, Hkv, hd)
        self.register_buffer("v", torch.zeros_like(v_cache.transpose(1, 2)))
        self.register_buffer("cos", cos)  # (S, hd/2)
        self.register_buffer("sin", sin)

    def forward(self, q, k, v, pos):
        out, kc, vc = torch.ops.seqedge.attention(q, k, v, self.k, self.v, pos, self.cos, self.sin)
        return out * 1.0, kc.transpose(1, 2) * 1.0, vc.transpose(1, 2) * 1.0


def _cache_rows_as_inputs(cache, span, cos, sin, unrotate):
    """Cache positions `span` (Bt, Hkv, n, hd) as the op's (Bt, n, Hkv*hd) input that writes them: keys
    rotated back (the op rotates them on the way in), values as they are."""
    rows = cache[:, :, span].transpose(1, 2)  # (Bt, n, Hkv, hd)
    if unrotate:
        rows = rope_ref(rows, cos, -sin, torch.arange(span.start, span.stop))
    return rows.reshape(rows.shape[0], rows.shape[1], -1).contiguous()


def _lower(module, args, dynamic_shapes, path):
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    ep = torch.export.export(module, args, dynamic_shapes=dynamic_shapes)
    edge = to_edge_transform_and_lower(ep, compile_config=EdgeCompileConfig(_check_ir_validity=False))
    path.write_bytes(edge.to_executorch().buffer)


@pytest.mark.parametrize("key", LOWERINGS.names())
def test_lowering_matches_reference(key, tmp_path):
    from executorch.runtime import Runtime

    from seqedge.native import load_kernels

    lw = LOWERINGS[key]
    op, ref, make, dyn = OP_CASES[lw.op]
    lengths = [1] if lw.variant == "decode" else [2, 7, 16]
    held = lw.op == "seqedge::attention"  # its caches are program buffers, seeded from one case
    ex = make(lengths[-1], pos=3) if held else make(lengths[-1])
    module = HeldCacheAttention(ex[3], ex[4], ex[6], ex[7]) if held else OneOp(op)
    inputs = (lambda a: (*a[:3], a[5])) if held else (lambda a: a)
    T = torch.export.Dim("T", min=2, max=ex[3].shape[2] if held else 64)  # held: T fits in the cache
    shapes = tuple({dyn[i]: T} if i in dyn else None for i in range(len(inputs(ex))))
    shapes = (dict(zip(("q", "k", "v", "pos"), shapes)) if held else {"args": shapes})
    if held:
        native_ops.llm_kernels()
    with Substitute({lw.target: lw.fn} if lw.kind == "decomposition" else {}):
        _lower(module, inputs(ex), shapes if lw.variant == "prefill" else None, tmp_path / "op.pte")
    load_kernels()
    method = Runtime.get().load_program(str(tmp_path / "op.pte")).load_method("forward")
    for T_ in lengths:
        args = (*make(T_, seed=T_, pos=3)[:3], *ex[3:]) if held else make(T_, seed=T_)
        if held:  # write the 3 cached positions through the program first (one call, or 3 decode steps)
            for p in ([0] if lw.variant == "prefill" else [0, 1, 2]):
                span = slice(p, 3 if lw.variant == "prefill" else p + 1)
                q = ex[0][:, : span.stop - span.start].contiguous()  # any query: only the cache write matters
                method.execute([q, _cache_rows_as_inputs(ex[3], span, ex[6], ex[7], True),
                                _cache_rows_as_inputs(ex[4], span, ex[6], ex[7], False), torch.tensor([p])])
        got, want = method.execute(list(inputs(args))), ref(*args)
        for k, (g, w) in enumerate(zip(got, want)):
            if lw.op == "seqedge::attention" and k > 0:  # cache slots past pos + T are unspecified
                g, w = g[:, :, : 3 + T_], w[:, :, : 3 + T_]
            diff = (g - w).abs().max().item()
            assert diff <= TOL * max(1.0, w.abs().max().item()), f"{key} T={T_} output {k}: {diff}"


def test_selective_scan_kernel_runs_a_long_prompt_in_chunks_of_time(tmp_path):
    """seqedge::selective_scan.out over more steps than its chunk of time (256, selective_scan_core.h): 600 and 300
    steps of two batch rows, the state carried from chunk to chunk, against the reference."""
    from executorch.runtime import Runtime

    from seqedge.native import load_kernels
    from seqedge.ops import selective_scan_ref
    from tests.test_ops import scan_inputs

    T = torch.export.Dim("T", min=2, max=700)
    ex = scan_inputs(8, D=40, N=16)
    _lower(OneOp(torch.ops.seqedge.selective_scan), ex, {"args": ({1: T}, {1: T}, None, {1: T}, {1: T}, None, None)},
           tmp_path / "scan.pte")
    load_kernels()
    method = Runtime.get().load_program(str(tmp_path / "scan.pte")).load_method("forward")
    for steps in (600, 300):
        x = scan_inputs(steps, D=40, N=16, seed=steps)
        for got, want in zip(method.execute(list(x)), selective_scan_ref(*x)):
            assert (got - want).abs().max().item() <= TOL * max(1.0, want.abs().max().item()), steps


@pytest.mark.parametrize("cell", sorted(CELLS.values()))
def test_rnn_scan_kernel_matches_reference(cell, tmp_path):
    """seqedge::rnn_scan.out for every cell (Elman tanh/ReLU, LSTM, GRU), one step and many, against the
    reference; H = 200 splits its units over the threadpool."""
    from executorch.runtime import Runtime

    from seqedge.native import load_kernels

    make = lambda T, seed=0: rnn_inputs(T, H=200, cell=cell, seed=seed)[:5]  # noqa: E731  the cell is a constant
    T = torch.export.Dim("T", min=2, max=64)
    op = OneOp(lambda *a: torch.ops.seqedge.rnn_scan(*a, cell))
    for name, lengths, shapes in (("decode", (1,), None), ("prefill", (2, 9, 33), {"args": ({1: T}, *[None] * 4)})):
        _lower(op, make(lengths[-1]), shapes, tmp_path / f"{name}.pte")
        load_kernels()
        method = Runtime.get().load_program(str(tmp_path / f"{name}.pte")).load_method("forward")
        for T_ in lengths:
            args = make(T_, seed=T_)
            for k, (g, w) in enumerate(zip(method.execute(list(args)), rnn_scan_ref(*args, cell))):
                assert (g - w).abs().max().item() <= TOL * max(1.0, w.abs().max().item()), (cell, T_, k)


def test_every_pool_thread_asks_openmp_for_one_thread():
    """The wheel's custom_sdpa calls libtorch's MKL from ExecuTorch's pool threads: after the runtime's setting,
    each pool thread (reached exactly once, the caller included) has one OpenMP thread."""
    import ctypes
    import glob
    import threading

    from seqedge.runtimes.executorch import _set_threads

    gomp = glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib", "libgomp*.so*"))
    if not gomp:
        pytest.skip("this torch build has no GNU OpenMP")
    omp = ctypes.CDLL(gomp[0])
    _set_threads(2)
    assert native_ops.one_blas_thread_per_pool_thread() == 2
    seen = []
    record = ctypes.CFUNCTYPE(None, ctypes.c_int)(lambda _: seen.append((threading.get_native_id(),
                                                                         omp.omp_get_max_threads())))
    assert native_ops.on_each_pool_thread(record, 0) == 2
    assert len({tid for tid, _ in seen}) == len(seen) == 2 and all(n == 1 for _, n in seen), seen


@pytest.mark.parametrize("bits", [0, 8, 4])
@pytest.mark.parametrize("renormalise", [True, False])
def test_moe_kernel_matches_reference(bits, renormalise, tmp_path, capfd):
    """seqedge::moe_ffn.out (float experts, bits 0) and moe_ffn_q.out (int8 per row, int4 in blocks of 32) against
    the references: one token (its rows split over the threadpool) and 2 x 9 tokens (split by token)."""
    from executorch.runtime import Runtime

    from seqedge.native import load_kernels

    def make(T, Bt=1, seed=0):
        x, logits, w13, w2 = moe_inputs(T, Bt=Bt, C=128, inner=96, E=8, seed=seed)
        if not bits:
            return x, logits, w13, w2
        block = 32 if bits == 4 else None
        return (x, logits, *quantize_experts(w13, bits, block or 128), *quantize_experts(w2, bits, block or 96))

    if bits:
        op = OneOp(lambda *a: (torch.ops.seqedge.moe_ffn_q(*a, 3, renormalise, bits),))
        ref = lambda *a: moe_ffn_q_ref(*a, 3, renormalise, bits)  # noqa: E731
    else:
        op = OneOp(lambda *a: (torch.ops.seqedge.moe_ffn(*a, 3, renormalise),))
        ref = lambda *a: moe_ffn_ref(*a, 3, renormalise)  # noqa: E731
    T = torch.export.Dim("T", min=1, max=64)
    rest = [None] * (len(make(1)) - 2)
    if bits == 4:  # the number of scale blocks left dynamic, so that a program cannot check it: the kernel must
        rest[1] = {2: torch.export.Dim("blocks", min=1, max=16)}
    _lower(op, make(4, Bt=2), {"args": ({1: T}, {1: T}, *rest)}, tmp_path / "moe.pte")
    load_kernels()
    method = Runtime.get().load_program(str(tmp_path / "moe.pte")).load_method("forward")
    for T_, Bt in ((1, 1), (9, 2)):
        args = make(T_, Bt, seed=T_)
        got, want = method.execute(list(args))[0], ref(*args)
        assert (got - want).abs().max().item() <= TOL * max(1.0, want.abs().max().item()), (T_, Bt)
    if bits == 4:  # scales that do not divide the codes' rows into blocks are refused by the kernel, not read past
        bad = list(make(1))
        bad[3] = torch.ones(*bad[3].shape[:2], 3)  # 3 blocks of a 128-wide row
        with pytest.raises(RuntimeError):
            method.execute(bad)
        assert "moe_ffn_q: the blocks must divide the row" in capfd.readouterr().err


class CachedSdpa(torch.nn.Module):
    def forward(self, q, k_cache, v_cache, pos):
        p = pos.reshape(-1)[0].item()
        torch._check(p >= 0)
        torch._check(p + q.shape[1] <= k_cache.shape[1])
        return torch.ops.seqedge.cached_sdpa(q, k_cache, v_cache, p) * 1.0


@pytest.mark.parametrize("cache", [torch.float32, torch.float16])
@pytest.mark.parametrize("heads,kv_heads,D", [(9, 3, 64), (8, 2, 64), (4, 4, 128), (6, 1, 48), (4, 2, 20)])
def test_cached_sdpa_kernel_matches_reference(heads, kv_heads, D, cache, tmp_path):
    """seqedge's C++ attention kernel in a real ExecuTorch program against its reference: decode at cache fills
    that split the keys into ranges across threads and that do not, with 3 query heads per kv head (read together
    for each value row where AVX-512 has the registers) and 4 (three, then one), and prompts (several query rows:
    the tiles, a partial last one, keys not a multiple of the block), for the head dims it compiles fixed (64,
    128) and any other (20: not a multiple of 8); float32 and float16 caches (attended in float32)."""
    from executorch.runtime import Runtime

    from seqedge.native import load_kernels
    from seqedge.ops import cached_sdpa_ref

    S = 1100
    torch.manual_seed(heads)
    k_cache, v_cache = torch.randn(1, S, kv_heads, D).to(cache), torch.randn(1, S, kv_heads, D).to(cache)  # (B, S, Hkv, D)
    q = torch.randn(1, 3, heads, D)  # an example of T > 1: the program takes T = 1 .. 40
    T = torch.export.Dim("T", min=1, max=40)
    _lower(CachedSdpa(), (q, k_cache, v_cache, torch.tensor([5])), {"q": {1: T}, "k_cache": None, "v_cache": None,
                                                                      "pos": None}, tmp_path / "sdpa.pte")
    load_kernels()
    method = Runtime.get().load_program(str(tmp_path / "sdpa.pte")).load_method("forward")
    for pos, rows in ((0, 1), (5, 1), (130, 1), (1000, 1), (300, 7), (0, 37), (61, 20)):  # prompts: in tiles
        q = torch.randn(1, rows, heads, D)
        got = method.execute([q, k_cache, v_cache, torch.tensor([pos])])[0]
        want = cached_sdpa_ref(q, k_cache, v_cache, pos)
        assert (got - want).abs().max().item() < 1e-4, (heads, kv_heads, pos, rows)


def test_frozen_constants_are_an_exports_copy_with_the_same_outputs():
    """freeze_constants: Mamba's A = -exp(A_log) held as a constant in a copy for the export (ExecuTorch does not
    fold it); the caller's model keeps its parameter, and both give the same logits and state."""
    from seqedge.exporters.projections import freeze_constants

    torch.manual_seed(0)
    model = build_model("mamba", "tiny").eval()
    frozen = freeze_constants(model)
    names, frozen_names = dict(model.named_parameters()), dict(frozen.named_parameters())
    assert any(n.endswith(".A_log") for n in names) and not any(n.endswith(".A_log") for n in frozen_names)
    assert sum(n.endswith("neg_exp_A_log") for n in frozen_names) == model.config.num_hidden_layers
    tokens = torch.randint(0, 256, (2, 9))
    with torch.no_grad():
        want, want_state = model.prefill(tokens, model.init_state(2))
        got, got_state = frozen.prefill(tokens, frozen.init_state(2))
    assert torch.equal(got, want) and all(torch.equal(got_state[n], want_state[n]) for n in want_state)


class Rope(torch.nn.Module):
    def forward(self, x, pos, cos, sin):
        return torch.ops.seqedge.rope(x, pos, cos, sin) * 1.0


@pytest.mark.parametrize("heads,D", [(9, 64), (2, 6)])
def test_rope_kernel_matches_reference(heads, D, tmp_path, capfd):
    """seqedge's RoPE kernel in a real ExecuTorch program against rope_at_ref: one and several tokens, from the
    first position, deep in the tables and running past their end (the last row taken), batch 2; a negative
    position is refused."""
    from executorch.runtime import Runtime

    from seqedge.native import load_kernels
    from seqedge.ops import rope_at_ref

    S = 50
    torch.manual_seed(D)
    angles = torch.arange(S).float()[:, None] * torch.rand(D // 2)[None, :]  # (S, D/2)
    cos, sin = angles.cos(), angles.sin()
    T = torch.export.Dim("T", min=1, max=40)
    _lower(Rope(), (torch.randn(2, 3, heads, D), torch.tensor([5]), cos, sin),
           {"x": {1: T}, "pos": None, "cos": None, "sin": None}, tmp_path / "rope.pte")
    load_kernels()
    method = Runtime.get().load_program(str(tmp_path / "rope.pte")).load_method("forward")
    for pos, rows in ((0, 1), (7, 1), (0, 13), (30, 9), (45, 12)):  # the last: positions 45..56 of a 50-row table
        x = torch.randn(2, rows, heads, D)
        got = method.execute([x, torch.tensor([pos]), cos, sin])[0]
        assert (got - rope_at_ref(x, torch.tensor([pos]), cos, sin)).abs().max().item() < 1e-5, (pos, rows)
    with pytest.raises(RuntimeError):
        method.execute([torch.randn(2, 1, heads, D), torch.tensor([-1]), cos, sin])
    assert "rope: pos must not be negative" in capfd.readouterr().err


class Norm(torch.nn.Module):
    def forward(self, x, weight):
        return torch.ops.seqedge.rms_norm(x, weight, 1e-5) * 1.0


@pytest.mark.parametrize("D", [576, 50])
def test_rms_norm_kernel_matches_reference(D, tmp_path, capfd):
    """seqedge's RMSNorm kernel in a real ExecuTorch program against rms_norm_ref: a decode step's row, a few rows
    and enough rows to be split over the threadpool, of a model's width and of one that is no multiple of the
    vector lanes; a weight of another width is refused."""
    from executorch.runtime import Runtime

    from seqedge.native import load_kernels
    from seqedge.ops import rms_norm_ref

    T, W = torch.export.Dim("T", min=1, max=64), torch.export.Dim("W", min=2, max=1024)  # W: the kernel checks it
    _lower(Norm(), (torch.randn(1, 3, D), torch.randn(D)), {"x": {1: T}, "weight": {0: W}}, tmp_path / "norm.pte")
    load_kernels()
    method = Runtime.get().load_program(str(tmp_path / "norm.pte")).load_method("forward")
    for rows in (1, 3, 40):
        x, w = torch.randn(1, rows, D) * 4, torch.randn(D)
        got, want = method.execute([x, w])[0], rms_norm_ref(x, w, 1e-5)
        assert (got - want).abs().max().item() < 1e-5 * max(1.0, want.abs().max().item()), rows
    with pytest.raises(RuntimeError):
        method.execute([torch.randn(1, 1, D), torch.randn(D + 1)])
    assert "rms_norm: the weight must have x's last dimension" in capfd.readouterr().err


class ToHalf(torch.nn.Module):
    def forward(self, x):
        return torch.ops.seqedge.to_half(x)


def test_to_half_kernel_matches_reference(tmp_path):
    """seqedge's float16 conversion in a real ExecuTorch program against torch's rounding, bit for bit: a decode
    step's keys, and a prompt's that the kernel splits over the threadpool (with a tail past its blocks); ties,
    subnormals, the largest half, overflow to infinity, NaN and signed zeros."""
    from executorch.runtime import Runtime

    from seqedge.native import load_kernels
    from seqedge.ops import to_half_ref

    T = torch.export.Dim("T", min=1, max=4096)
    _lower(ToHalf(), (torch.randn(1, 3, 192),), {"x": {1: T}}, tmp_path / "half.pte")
    load_kernels()
    method = Runtime.get().load_program(str(tmp_path / "half.pte")).load_method("forward")
    special = torch.tensor([1 + 2**-11, 1 + 3 * 2**-11, 2**-20, -(2**-25), 2**-24 * 1.5, 65504.0, 65520.0, 1e9,
                            -1e9, float("nan"), 0.0, -0.0, float("inf")])  # ties to even, subnormals, overflow
    for rows in (1, 3, 700):
        x = torch.randn(1, rows, 192) * 1000
        x.view(-1)[: special.numel()] = special
        got, want = method.execute([x])[0], to_half_ref(x)
        assert got.dtype == torch.float16 and torch.equal(got.view(torch.int16), want.view(torch.int16)), rows


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the feature levels are x86-64's")
@pytest.mark.parametrize("isa", ["baseline", "v3"])
def test_kernels_match_their_references_at_every_isa_level(isa):
    """The kernels are compiled per x86-64 feature level and run the CPU's best (vector_math.h); capping the level
    with SEQEDGE_KERNEL_ISA runs the other builds, which must match the references too (this process has run
    the best one above)."""
    if isa == best_kernel_isa():
        pytest.skip(f"{isa} is this CPU's best level: the tests in this process ran it")
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
            "cached_sdpa_kernel or rope_kernel or selective_scan:prefill or mamba_scan or causal_conv1d:decode or "
            "rnn_scan or "
            "moe_kernel or int4_matmul or rms_norm or to_half"]
    listed = subprocess.run([*args, "--collect-only"], capture_output=True, text=True, timeout=120)
    cases = sum(1 for line in listed.stdout.splitlines() if "::" in line)
    r = subprocess.run(args, env={**os.environ, "SEQEDGE_KERNEL_ISA": isa}, capture_output=True, text=True, timeout=900)
    assert cases > 30 and r.returncode == 0 and f"{cases} passed" in r.stdout, r.stdout[-2000:]


def test_skipping_inapplicable_xnnpack_passes_changes_nothing(pte_artifacts, tmp_path, monkeypatch):
    """xnnpack_passes.py skips, per partition, the XNNPACK passes whose ops it lacks, partitioner.py the second
    decomposition, one_decomposition.py the functionalising one before it, merge_check.py XNNPACK's merge loop
    over downstream nodes, delegate_outputs.py the re-runs of each delegate on fake tensors, provenance.py the
    copies of node provenance, edge_passes.py re-traces once per run of node-by-node edge passes,
    checked_once.py skips a pass manager's check of a graph it checked as it is, emission_passes.py the dim-order
    legalisation's re-trace of a method without its ops, parallel_preprocess.py lowers
    the partitions in forked workers (six here, three per process),
    deferred_recompile.py sorts a method in place and generates its code once after its partitions are cut: the
    program is byte-identical to one lowered in one process with every pass run and checked on its own,
    functionalised and then decomposed twice, every provenance chain copied, every delegate re-run and the graph
    copied and its code regenerated at every cut."""
    from executorch.backends.xnnpack._passes import XNNPACKPassManager

    import seqedge.exporters.executorch.export as et_export
    from seqedge.exporters.executorch.xnnpack_passes import APPLIES_TO, needed

    everything = XNNPACKPassManager.__new__(XNNPACKPassManager)
    XNNPACKPassManager.__init__(everything, None)
    assert len(needed(everything.passes, {"aten.addmm.default"})) == len(everything.passes) - len(APPLIES_TO)
    monkeypatch.setattr(et_export, "SKIP_INAPPLICABLE_PASSES", False)
    folder, model = pte_artifacts["gru"]
    export(model, ExportPlan(out=tmp_path / "all", format="executorch", max_len=128, verify=False))
    assert (tmp_path / "all" / "model.pte").read_bytes() == (folder / "model.pte").read_bytes()


def _edge_program(module):
    from executorch.exir import to_edge

    return to_edge(torch.export.export(module, (torch.randn(2, 4),))).exported_program()


class _WithConstant(torch.nn.Module):
    def forward(self, x):
        return x + torch.ones(4) * 2  # a node without inputs, and one over it: constant folding's work


@pytest.mark.parametrize("module,edited", [(torch.nn.Linear(4, 3), True), (torch.nn.ReLU(), False)])
def test_xnnpack_pass_retraces_only_after_an_edit(module, edited):
    """xnnpack_passes.py: ConvertToLinearPass turns a Linear's addmm back into a linear and re-traces the graph; in a
    graph without one, its edit finds nothing and the graph comes back as it went in, not re-traced."""
    from executorch.backends.xnnpack._passes.convert_to_linear import ConvertToLinearPass

    from seqedge.exporters.executorch.xnnpack_passes import relevant_xnnpack_passes, retrace_only_if_edited

    program = _edge_program(module)
    with relevant_xnnpack_passes():
        after = retrace_only_if_edited(ConvertToLinearPass)()(program.graph_module).graph_module
    assert (after is not program.graph_module) == edited
    assert any("aten.linear" in str(n.target) for n in after.graph.nodes) == edited


@pytest.mark.parametrize("module", [torch.nn.ReLU(), torch.nn.Linear(4, 3), _WithConstant()])
def test_constant_folding_is_skipped_only_where_nothing_folds(module):
    """xnnpack_passes.may_fold is true exactly where ExecuTorch's ConstPropPass changes the graph."""
    from executorch.exir.passes.const_prop_pass import ConstPropPass

    from seqedge.exporters.executorch.xnnpack_passes import may_fold

    program = _edge_program(module)
    before = [(n.op, str(n.target)) for n in program.graph.nodes]
    foldable = may_fold(program.graph)
    after = ConstPropPass()(program.graph_module).graph_module
    assert foldable == (before != [(n.op, str(n.target)) for n in after.graph.nodes])


class _Mean(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=1, keepdim=True)  # one of the portable ops the dim-order legalisation looks for


@pytest.mark.parametrize("module,legalised", [(torch.nn.ReLU(), False), (_Mean(), True)])
def test_dim_order_legalisation_retraces_only_a_method_holding_its_ops(module, legalised):
    """emission_passes.py: LegalizePortableDimOrderPass hands back a method without any of its target ops as it is,
    and re-traces one with such an op as it does without the shortcut (the same nodes)."""
    from executorch.exir.passes.legalize_portable_dim_order_pass import LegalizePortableDimOrderPass

    from seqedge.exporters.executorch.emission_passes import dim_order_legalized_only_where_needed

    gm = _edge_program(module).graph_module
    expected = LegalizePortableDimOrderPass()(gm).graph_module
    with dim_order_legalized_only_where_needed():
        got = LegalizePortableDimOrderPass()(gm).graph_module
    assert (got is not gm) == legalised
    assert [(n.op, str(n.target)) for n in got.graph.nodes] == [(n.op, str(n.target)) for n in expected.graph.nodes]
    assert "call" not in vars(LegalizePortableDimOrderPass)


def test_the_pass_manager_checks_a_program_again_only_after_a_change(monkeypatch):
    """checked_once.py: a check of the program the last check passed, in the same state, is skipped — the one after a
    pass that changed nothing and the one before the next pass; a changed target is checked, and a check that fails
    is not taken as passed."""
    from executorch.exir.dialects._ops import ops as exir_ops
    from executorch.exir.program._program import _transform
    from torch.fx.passes.infra.pass_base import PassResult

    from seqedge.exporters.executorch.checked_once import checks_once

    checks, validate = [], torch.export.ExportedProgram.validate
    monkeypatch.setattr(torch.export.ExportedProgram, "validate", lambda self: (checks.append(self), validate(self))[1])

    def nothing(gm):
        return PassResult(gm, False)

    def relu_to_sigmoid(gm):
        for n in gm.graph.nodes:
            if n.target == exir_ops.edge.aten.relu.default:
                n.target = exir_ops.edge.aten.sigmoid.default
        return PassResult(gm, True)

    def method_call(gm):
        node = next(n for n in gm.graph.nodes if n.op == "call_function")
        node.op, node.target = "call_method", "sigmoid"
        return PassResult(gm, True)

    program = _edge_program(torch.nn.ReLU())
    checks.clear()
    with checks_once():
        program = _transform(program, nothing)
        program = _transform(program, nothing)
        assert len(checks) == 1
        program = _transform(program, relu_to_sigmoid)
        assert len(checks) == 2
        with pytest.raises(Exception, match="call_method"):
            _transform(program, method_call)
        with pytest.raises(Exception, match="call_method"):
            _transform(program, nothing)
    program = _edge_program(torch.nn.ReLU())
    checks.clear()
    _transform(program, nothing)
    assert len(checks) == 2


def test_partitions_lowered_in_forked_workers_come_back_in_order_and_a_failed_share_runs_here():
    """parallel_preprocess.py's dealer with real forks: every job's own result, computed by all the workers (this
    process among them), the workers reaped; a job that fails in a worker is run again here, and an error here is
    raised with its own message."""
    from seqedge.exporters.executorch.parallel_preprocess import preprocess_all

    here = os.getpid()
    jobs = [("prefill", i) for i in range(5)] + [("decode", 0)]
    got = preprocess_all(lambda job: (job, os.getpid()), jobs, workers=3)
    assert {job: result[0] for job, result in got.items()} == {job: job for job in jobs}
    workers = {pid for _, pid in got.values()}
    assert len(workers) == 3 and got[jobs[0]][1] == here
    for pid in workers - {here}:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # exited and reaped

    def only_here(job):
        if os.getpid() != here:
            raise RuntimeError("a worker's failure")
        return job

    assert preprocess_all(only_here, jobs, workers=3) == {job: job for job in jobs}
    assert preprocess_all(only_here, [], workers=3) == {}  # a method XNNPACK took nothing from

    def broken(job):
        raise ValueError(f"partition {job} does not lower")

    with pytest.raises(ValueError, match="partition .* does not lower"):
        preprocess_all(broken, jobs, workers=3)


def _pass_order(passes: list, listed: list) -> list:
    """The pass classes `passes` (fused from `listed`) run, in order: a chain's classes in method-resolution order,
    a `Bridged` run's passes as listed (its fallback)."""
    from seqedge.exporters.executorch.edge_passes import NODE_LOCAL, Bridged, node_local

    order = []
    for p in passes:
        if isinstance(p, Bridged):
            order += _pass_order(p.fallback, listed)
        elif p in listed:
            order.append(type(getattr(p, "__wrapped__", p)))
        else:  # a chain: its classes in method-resolution order, then ExportPass
            chain = [c for c in type(p).__mro__[1:] if c.__name__ in NODE_LOCAL]
            assert len(chain) > 1 and all(node_local(c()) for c in chain)
            order += chain
    return order


def test_edge_passes_are_fused_only_where_each_works_node_by_node():
    """ExecuTorch's own ATen-to-edge pass list (the installed version): every pass edge_passes.py names is still
    node-local there (an upgrade that changes one fails here, before any program changes), each run of adjacent
    ones becomes one pass whose method order is the run's, a run goes on across the whole-graph passes it bridges
    (their node-by-node stand-in in their place, the passes as listed behind it), and every other pass stays, the
    same object, in place."""
    from executorch.exir import EdgeCompileConfig
    from executorch.exir.program import _program

    from seqedge.exporters.executorch.edge_passes import (
        BRIDGED,
        NODE_LOCAL,
        Bridged,
        bridge_pass,
        fuse,
        listed_passes,
        node_local,
    )

    pre, _ = _program._get_aten_to_edge_passes(EdgeCompileConfig())
    listed = listed_passes(pre, _program.OpReplacePass(), _program.MemoryFormatOpsPass())
    inner = [getattr(p, "__wrapped__", p) for p in listed]
    assert {type(p).__name__ for p in inner if node_local(p)} == set(NODE_LOCAL)
    assert type(inner[0]).__name__ == "ReplaceSymSizeOpPass" and type(inner[1]).__name__ == "ViewCopyPass"
    between = [type(p).__name__ for p in inner if not node_local(p)][1:]
    assert between == list(BRIDGED)  # all that stands between the runs: one re-trace for the whole list
    for bridge in (False, True):
        fused = fuse(listed, bridge=bridge)
        assert _pass_order(fused, listed) == [type(p) for p in inner]
        assert all(p in fused or any(p in b.fallback for b in fused if isinstance(b, Bridged))
                   for p, q in zip(listed, inner) if not node_local(q))
    bridged = [p for p in fuse(listed) if isinstance(p, Bridged)]
    assert len(fuse(listed)) == 2 and len(bridged) == 1  # ReplaceSymSizeOpPass, then one re-trace
    mro = [c for c in type(bridged[0].chain).__mro__[1:] if c.__name__ in NODE_LOCAL or c is bridge_pass()]
    assert mro == list(dict.fromkeys(bridge_pass() if type(q).__name__ in BRIDGED else type(q) for q in inner[1:]))


class _FullSliceAndCopy(torch.nn.Module):
    """A slice over the whole tensor (RemoveNoopPass's) and a copy to the same dtype (RemoveToCopyPass's)."""

    def forward(self, x):
        return x.narrow(1, 0, 4) * 2 + x.to(torch.float32, copy=True)


class _EmptyCatInput(torch.nn.Module):
    """A cat with an empty input (PruneEmptyTensorsPass's), which bridge_pass leaves to the passes as listed."""

    def forward(self, x):
        return torch.cat([x, x[:, :0]], 1) * 2


def _structure(gm) -> list:
    """`gm`'s nodes as (op, target, args with nodes as their positions): the graph, whatever its nodes are called."""
    at = {n: i for i, n in enumerate(gm.graph.nodes)}
    return [(n.op, str(n.target) if n.op != "placeholder" else "", torch.fx.node.map_arg(n.args, lambda a: at[a]))
            for n in gm.graph.nodes]


@pytest.mark.parametrize("module,bridged", [(_FullSliceAndCopy(), True), (_EmptyCatInput(), False)])
def test_edge_passes_in_one_retrace_give_the_graph_of_the_passes_as_listed(module, bridged):
    """edge_passes.py: the edge dialect from one re-trace (view copies, both runs and the whole-graph passes between
    them node by node) is the graph ExecuTorch's passes make one by one, the full slice and the same-type copy gone;
    a method with an empty cat input goes through the passes as listed and ends the same."""
    from executorch.exir import EdgeCompileConfig, to_edge
    from executorch.exir.program import _program

    from seqedge.exporters.executorch.edge_passes import Bridged, Unbridgeable, fuse, fused_edge_passes, listed_passes

    program = torch.export.export(module, (torch.randn(2, 4),))
    expected = to_edge(program).exported_program().graph_module
    with fused_edge_passes():
        got = to_edge(program).exported_program().graph_module
    assert _structure(got) == _structure(expected)

    pre, _ = _program._get_aten_to_edge_passes(EdgeCompileConfig())
    run = next(p for p in fuse(listed_passes(pre, _program.OpReplacePass())) if isinstance(p, Bridged))
    graph = program.run_decompositions(_program._default_decomposition_table()).graph_module
    ops = ("aten.slice.Tensor", "aten._to_copy.default") if bridged else ("aten.cat.default",)
    assert {str(n.target) for n in graph.graph.nodes} >= set(ops)  # what the whole-graph passes act on is there
    assert not {str(n.target) for n in expected.graph.nodes} & {"aten.slice_copy.Tensor", "aten._to_copy.default"}
    if bridged:
        run.chain(graph)
    else:
        with pytest.raises(Unbridgeable):
            run.chain(graph)


def _fails():
    raise RuntimeError("a trace that fails in the worker")


def test_a_method_traced_and_decomposed_in_a_worker_is_the_one_decomposed_here():
    """method_worker.py: a forked worker traces a method, decomposes it as one_decomposition.py does and sends it
    back through torch.export's serialisation: the same graph and weights as decomposed here, marked decomposed,
    with what the trace returned beside it. A trace that fails gives nothing (the export then traces here); with
    one job or no partitioner no worker is forked."""
    from seqedge.exporters.executorch.method_worker import method_worker
    from seqedge.exporters.executorch.one_decomposition import DECOMPOSED, decompose
    from seqedge.exporters.executorch.partitioner import PrecheckedXnnpackPartitioner

    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.SiLU(), torch.nn.Linear(8, 3)).eval()  # SiLU: decomposed

    def trace():
        return torch.export.export(module, (torch.randn(2, 4),), dynamic_shapes=({0: torch.export.Dim("B")},)), [1]

    partitioners = [PrecheckedXnnpackPartitioner()]
    here = decompose(trace()[0], partitioners)
    assert getattr(here, DECOMPOSED, False)
    with method_worker(trace, partitioners, jobs=2) as worker:
        assert worker.pid is not None and worker.pid != os.getpid()
        program, extra = worker.get()
    assert extra == [1] and getattr(program, DECOMPOSED, False)
    assert _structure(program.graph_module) == _structure(here.graph_module)
    assert [str(n.target) for n in here.graph.nodes if n.op == "call_function"] != \
        [str(n.target) for n in trace()[0].graph.nodes if n.op == "call_function"]  # decomposition did something
    assert program.state_dict.keys() == here.state_dict.keys()
    assert all(torch.equal(program.state_dict[k], here.state_dict[k]) for k in here.state_dict)
    x = torch.randn(5, 4)
    assert torch.allclose(program.module()(x), module(x))
    with method_worker(_fails, partitioners, jobs=2) as worker:
        assert worker.pid is not None and worker.get() is None
    for jobs, parts in ((1, partitioners), (2, [])):
        with method_worker(trace, parts, jobs=jobs) as worker:
            assert worker.pid is None and worker.get() is None


class ComputedWeight(torch.nn.Module):
    """Two linears: one over a parameter, which XNNPACK takes, one over a weight computed from an input, which it
    refuses."""

    def __init__(self, computed: bool):
        super().__init__()
        self.w, self.computed = torch.nn.Parameter(torch.randn(8, 8)), computed

    def forward(self, x, w):
        y = torch.nn.functional.linear(x, self.w)
        return y + torch.nn.functional.linear(x, w * 2) if self.computed else y


@pytest.mark.parametrize("computed", [False, True])
def test_prechecked_partitioner_drops_the_check_only_when_every_node_passes_it(computed):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    from seqedge.exporters.executorch.partitioner import PrecheckedXnnpackPartitioner, kept_nodes

    program = torch.export.export(ComputedWeight(computed), (torch.randn(2, 8), torch.randn(8, 8))).run_decompositions({})
    ops, check = XnnpackPartitioner().ops_to_not_decompose(program)
    verdicts = [check(n) for n in kept_nodes(program, set(ops))]
    assert verdicts == ([True, False] if computed else [True])
    kept, prechecked = PrecheckedXnnpackPartitioner().ops_to_not_decompose(program)
    assert (prechecked is None) == all(verdicts) and set(kept) <= set(ops)


def test_every_family_exports_a_two_method_program(pte_artifacts):
    for fam, (folder, _) in pte_artifacts.items():
        m = read_manifest(folder)
        assert set(MANIFEST.required) <= set(m) and m["format"] == "executorch" and m["backend"] == "xnnpack", fam
        assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.pte"]
        assert m["parity"]["passed"] and m["parity"]["token_agreement"] == 1.0 and m["parity"]["steps"] == 64
        for method in ("prefill", "decode"):
            d = m["delegation"][method]
            assert d["delegated_nodes"] > 0 and 0 < d["delegated_share"] <= 1
            assert all(x["why"] for x in d["not_delegated"])
            if m["held_state"]:  # pos is read once a method, not once a layer (decompositions.read_position)
                reads = sum(x["count"] for x in d["not_delegated"] if x["op"] == "aten._local_scalar_dense")
                assert reads == 1 < len(m["held_state"]) // 2, (fam, method)
    mamba = read_manifest(pte_artifacts["mamba"][0])
    # the scan with the block's softplus and gate (an export's copy of the mixers calls seqedge::mamba_scan)
    assert mamba["native_kernels"] == ["seqedge::causal_conv1d.out", "seqedge::mamba_scan.out",
                                       "seqedge::rms_norm.out"]
    lowered = {(o["op"], o["method"]): o["kind"] for o in mamba["ops"]}  # the convolution's step is the kernel's
    assert lowered[("seqedge::mamba_scan", "decode")] == lowered[("seqedge::mamba_scan", "prefill")] == "native"
    assert lowered[("seqedge::causal_conv1d", "decode")] == "native"
    assert lowered[("seqedge::causal_conv1d", "prefill")] == "decomposition"
    assert lowered[("seqedge::rms_norm", "decode")] == lowered[("seqedge::rms_norm", "prefill")] == "native"
    for fam, (folder, _) in pte_artifacts.items():  # every weight starts on a page of the file
        assert {offset % PAGE for offset in _constant_offsets(folder / "model.pte")} == {0}, fam


def _constant_offsets(pte: Path) -> list[int]:
    """File offsets of an ExecuTorch program's constant tensors (its constant segment's entries)."""
    from executorch.exir._serialize._flatbuffer import _program_flatbuffer_to_json
    from executorch.exir._serialize._program import _ExtendedHeader

    raw = pte.read_bytes()
    header = _ExtendedHeader.from_bytes(raw[8:])
    program = json.loads(_program_flatbuffer_to_json(raw[: header.program_size]))
    segment = program["segments"][program["constant_segment"]["segment_index"]]
    return [header.segment_base_offset + segment["offset"] + o for o in program["constant_segment"]["offsets"]]


@pytest.mark.parametrize("fam", FAMILY_NAMES)
def test_pte_runs_any_length_with_state_carried(pte_artifacts, fam):
    folder, model = pte_artifacts[fam]
    threads = torch.get_num_threads()
    runner = open_artifact(folder)
    assert torch.get_num_threads() == 1  # torch only moves data while ExecuTorch computes (runtimes/base.py)
    tokens = torch.randint(0, 256, (1, 60))
    with torch.no_grad():
        s_ref, s_art = model.init_state(1), runner.init_state(1)
        for chunk in (tokens[:, :3], tokens[:, 3:4], tokens[:, 4:41], tokens[:, 41:]):  # T = 3, 1, 37, 19
            ref, s_ref = model.prefill(chunk, s_ref, last_only=True)
            got, s_art = runner.prefill(chunk, s_art)
            assert (ref - got).abs().max().item() < 1e-3
        long = torch.randint(0, 256, (1, 129))  # beyond the program's longest prefill (128): 128 + 1 through decode
        ref, _ = model.prefill(long, model.init_state(1), last_only=True)
        got, _ = runner.prefill(long, runner.init_state(1))
        assert (ref - got).abs().max().item() < 1e-3
    with pytest.raises(BadInputError, match="at least one token"):
        runner.prefill(torch.zeros(1, 0, dtype=torch.long), runner.init_state(1))
    runner.close()
    assert torch.get_num_threads() == threads


def test_state_is_read_where_executorch_wrote_it(pte_artifacts):
    """The exporter leaves every input and output out of the memory plan: the adapter returns the state from the
    storage the method wrote (the same memory each call: no copy) and passes it back in, where ExecuTorch reads it
    (no copy into the arena); Mamba's state is updated in that one buffer (its manifest's in_place_state). The
    logits are copied for the caller to keep; each step is still the model's."""
    folder, model = pte_artifacts["mamba"]
    runner = open_artifact(folder)
    assert read_manifest(folder)["in_place_state"] == runner.state_names
    for method in ("prefill", "decode"):
        meta = runner.program.metadata(method)
        assert not any(meta.output_tensor_meta(i).is_memory_planned() for i in range(meta.num_outputs()))
        assert not any(meta.input_tensor_meta(i).is_memory_planned() for i in range(meta.num_inputs()))
    tokens = torch.randint(0, 256, (1, 6))
    s_ref, s_art, storage, kept = model.init_state(1), runner.init_state(1), set(), []
    with torch.no_grad():
        for t in range(tokens.shape[1]):
            ref, s_ref = model.prefill(tokens[:, t : t + 1], s_ref, last_only=True)
            got, s_art = runner.step(tokens[:, t : t + 1], s_art)
            assert (ref - got).abs().max().item() < 1e-3
            kept.append((got, ref))
            storage.add(s_art[runner.state_names[0]].data_ptr())
    assert len(storage) == 1
    assert all((ref - got).abs().max().item() < 1e-3 for got, ref in kept)  # each step's logits, not the last's
    runner.close()


@pytest.mark.parametrize("forced", [False, True])
def test_a_state_read_after_its_output_is_written_is_copied_before_the_call(pte_artifacts, tmp_path, forced):
    """A Transformer's `pos` is read (RoPE, the cache write) after `pos + 1` is written, so the exporter leaves it
    out of in_place_state and the adapter copies it out of the method's storage before a step: the steps are the
    model's. Listed in place anyway (a hand-edited manifest), the step reads its own new `pos` and drifts: the
    analysis, not luck, keeps it right."""
    folder, model = pte_artifacts["transformer"]
    assert read_manifest(folder)["in_place_state"] == []
    if forced:
        folder = shutil.copytree(folder, tmp_path / "forced")
        manifest = json.loads((folder / "manifest.json").read_text())
        (folder / "manifest.json").write_text(json.dumps({**manifest, "in_place_state": ["pos"]}))
    runner = open_artifact(folder)
    tokens = torch.randint(0, 256, (1, 8))
    worst = 0.0
    with torch.no_grad():
        s_ref, s_art = model.init_state(1), runner.init_state(1)
        for t in range(tokens.shape[1]):
            ref, s_ref = model.prefill(tokens[:, t : t + 1], s_ref, last_only=True)
            got, s_art = runner.step(tokens[:, t : t + 1], s_art)
            worst = max(worst, (ref - got).abs().max().item())
    runner.close()
    assert (worst > 1e-3) == forced


@pytest.mark.parametrize("fam", ["mamba", "transformer"])
def test_a_decode_loop_binds_its_inputs_once(pte_artifacts, fam):
    """Passed back the state it returned, a decode step skips the pybindings' binding (its token through the
    buffer bound before, a staged `pos` copied into its staging buffer, `execute` alone): every step is still the
    model's, and so is a step from any other state (a fresh one, or a prefill's), which binds again."""
    folder, model = pte_artifacts[fam]
    runner = open_artifact(folder)
    decode = runner.methods["decode"]
    tokens = torch.randint(0, 256, (1, 12))
    worst, unbound = 0.0, []
    with torch.no_grad():
        s_ref, s_art = model.init_state(1), runner.init_state(1)
        for t in range(tokens.shape[1]):
            if t == 6:  # start over from a prefill of the first 3 tokens: its state is the prefill method's
                s_ref, s_art = model.init_state(1), runner.init_state(1)
                _, s_ref = model.prefill(tokens[:, :3], s_ref, last_only=True)
                _, s_art = runner.prefill(tokens[:, :3], s_art)
            unbound.append(not decode.bound)
            ref, s_ref = model.prefill(tokens[:, t : t + 1], s_ref, last_only=True)
            got, s_art = runner.step(tokens[:, t : t + 1], s_art)
            worst = max(worst, (ref - got).abs().max().item())
    runner.close()
    assert worst < 1e-3
    # bound from the third step on; the step after the prefill (t = 6) finds the flag set but is handed the prefill
    # method's state, not its own: it binds again (the full path), and the step after it is bound once more
    assert unbound == [True, True] + [False] * 5 + [True] + [False] * 4


def test_a_program_for_a_newer_runner_is_refused_by_name(pte_artifacts, native_runner, tmp_path):
    """The manifest's runner_contract says what a runner must know to run the program; a runner that knows less
    (native or Python) refuses it in one line naming the artifact and the fix, instead of running what it would
    misread."""
    from seqedge.runtimes.executorch import RUNNER_CONTRACT

    folder = tmp_path / "newer"
    shutil.copytree(pte_artifacts["mamba"][0], folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["runner_contract"] == RUNNER_CONTRACT
    (folder / "manifest.json").write_text(json.dumps({**manifest, "runner_contract": RUNNER_CONTRACT + 1}))
    r = subprocess.run([str(native_runner), str(folder), "--prompt", "hi", "--max-new-tokens", "2"], capture_output=True)
    assert r.returncode == 2 and b"needs a newer seqedge runner" in r.stderr and b"build-runner" in r.stderr
    with pytest.raises(UnsupportedError, match="needs a newer seqedge") as e:
        open_artifact(folder)
    assert "upgrade seqedge" in e.value.hint


class NotedMethod:
    """A loaded ExecuTorch method (the real one) whose calls are noted: (method, tokens)."""

    def __init__(self, name, method, calls):
        self.name, self.method, self.calls = name, method, calls

    def execute(self, args):
        self.calls.append((self.name, args[0].shape[1]))
        return self.method.execute(args)


def test_prefill_in_chunks_is_the_same_sequence(pte_artifacts, tmp_path):
    """A manifest's prefill_chunk: the runtime runs a long prompt in pieces (the last of one token through decode)
    with the state carried; logits and state are the model's, as in one call. The exporter asks for it on models
    without attention only (its KV cache is held by the program)."""
    folder, model = pte_artifacts["mamba"]
    assert read_manifest(folder)["prefill_chunk"] >= 2 and read_manifest(pte_artifacts["transformer"][0])["prefill_chunk"] is None
    chunked = tmp_path / "chunked"
    shutil.copytree(folder, chunked)
    manifest = json.loads((chunked / "manifest.json").read_text())
    (chunked / "manifest.json").write_text(json.dumps({**manifest, "prefill_chunk": 16}))
    tokens = torch.randint(0, 256, (1, 49))  # 16 + 16 + 16 + 1
    whole, pieces = open_artifact(folder), open_artifact(chunked)
    calls = []
    pieces.methods = {name: NotedMethod(name, method, calls) for name, method in pieces.methods.items()}
    with torch.no_grad():
        ref, s_ref = model.prefill(tokens, model.init_state(1), last_only=True)
    for runner in (whole, pieces):
        got, state = runner.prefill(tokens, runner.init_state(1))
        assert (ref - got).abs().max().item() < 1e-3
        assert all((s_ref[n] - state[n]).abs().max().item() < 1e-3 for n in runner.state_names)
        runner.close()
    assert calls == [("prefill", 16)] * 3 + [("decode", 1)]


def test_build_runner_command(tmp_path):
    r = CliRunner().invoke(app, ["build-runner", "--out", str(tmp_path / "bin"), "--no-tokenizers"])
    assert r.exit_code == 0, r.output
    names = {p.name for p in (tmp_path / "bin").iterdir()}
    assert set(RUNNER_FILES) <= names and "libexecutorch.so" in names  # a bundle: ExecuTorch's libraries beside it


def test_native_runner_matches_seqedge_generate(pte_artifacts, native_runner):
    """The runner's text is seqedge generate's, also with --timing, whose warm-up and timed prefills each start the
    sequence over (a prefill on a state left by the one before would change the text)."""
    cli = CliRunner()
    for fam in FAMILY_NAMES:
        folder = pte_artifacts[fam][0]
        command = [str(native_runner), str(folder), "--prompt", "def main(", "--max-new-tokens", "48"]
        native = subprocess.run(command, capture_output=True, check=True)
        timed = subprocess.run([*command, "--timing"], capture_output=True, check=True)
        py = cli.invoke(app, ["generate", str(folder), "--prompt", "def main(", "--max-new-tokens", "48"])
        assert py.exit_code == 0
        assert native.stdout == py.stdout_bytes == timed.stdout, fam
        figures = json.loads(timed.stderr.decode().strip().splitlines()[-1])
        assert figures["prefill_runs"] > 1 and figures["prefill_ms"] > 0 and figures["decode_steps"] > 0, fam
        assert 0 < figures["decode_ms_p50"] <= figures["decode_ms_total"], fam  # the median of the timed steps



@pytest.mark.parametrize("timing", [False, True])
def test_native_runner_takes_prompt_files_from_stdin_one_sequence_each(pte_artifacts, native_runner, tmp_path, timing):
    """--prompts-from-stdin: one engine, each line a prompt file, each generated as a run of its own would (the
    state the prompt before left is forgotten), its text flushed in turn; with --timing a timing line for each.
    A path that cannot be read ends it with exit 2 naming the file."""
    folder = pte_artifacts["mamba"][0]
    prompts = {"a.txt": b"def main(", "b.txt": b"x", "c.txt": b"class Foo:\n    "}
    for name, text in prompts.items():
        (tmp_path / name).write_bytes(text)
    order = ["a.txt", "b.txt", "a.txt", "c.txt"]
    flags = ["--max-new-tokens", "24", *(["--timing"] if timing else [])]
    alone = [subprocess.run([str(native_runner), str(folder), "--prompt-file", str(tmp_path / n), *flags],
                            capture_output=True, check=True).stdout for n in order]
    lines = "".join(f"{tmp_path / n}\n" for n in order).encode()
    r = subprocess.run([str(native_runner), str(folder), "--prompts-from-stdin", *flags], input=lines,
                       capture_output=True, check=True)
    assert r.stdout == b"".join(alone) and len(set(alone)) == 3
    timed = [json.loads(x) for x in r.stderr.decode().splitlines() if x.startswith('{"prompt_tokens"')]
    assert [t["prompt_tokens"] for t in timed] == ([len(prompts[n]) for n in order] if timing else [])
    bad = subprocess.run([str(native_runner), str(folder), "--prompts-from-stdin", *flags],
                         input=f"{tmp_path / 'a.txt'}\n{tmp_path / 'missing.txt'}\n".encode(), capture_output=True)
    assert bad.returncode == 2 and bad.stdout == alone[0]
    assert bad.stderr.decode().strip().splitlines()[-1] == f"seqedge_runner: error: cannot read {tmp_path / 'missing.txt'}"
def test_portable_backend(tmp_path):
    torch.manual_seed(0)
    m = export(build_model("gru", "tiny"), ExportPlan(out=tmp_path / "p", format="executorch", backend="portable",
                                                     max_len=32, verify_steps=8))
    assert m["backend"] == "portable" and m["delegation"]["decode"]["delegated_nodes"] == 0
    assert m["parity"]["passed"]


def test_bad_inputs(pte_artifacts, tmp_path):
    with pytest.raises(UnsupportedError, match=r"layer body\.attn .*not supported for ExecuTorch"):
        export(WithMHA(), ExportPlan(out=tmp_path / "x", format="executorch"))
    assert not (tmp_path / "x").exists()
    with pytest.raises(BadInputError, match="unknown --backend 'vulkan'"):
        export(build_model("gru", "tiny"), ExportPlan(out=tmp_path / "x", format="executorch", backend="vulkan"))
    src = pte_artifacts["gru"][0]

    def damaged(name, data):
        folder = tmp_path / name
        shutil.copytree(src, folder)
        (folder / "model.pte").write_bytes(data)
        m = json.loads((folder / "manifest.json").read_text())
        from seqedge.fsutil import sha256_file

        m["files"]["model.pte"] = sha256_file(folder / "model.pte")
        (folder / "manifest.json").write_text(json.dumps(m))
        return folder

    pte = (src / "model.pte").read_bytes()
    with pytest.raises(CorruptFileError, match="ExecuTorch cannot load .*model.pte"):
        open_artifact(damaged("truncated", pte[: len(pte) // 2]))
    with pytest.raises(CorruptFileError, match="ExecuTorch cannot load .*model.pte"):
        open_artifact(damaged("magic", b"XXXXXXXX" + pte[8:]))
    # a valid program without the prefill/decode methods
    _lower(torch.nn.Linear(4, 4), (torch.randn(1, 4),), None, tmp_path / "one.pte")
    with pytest.raises(CorruptFileError, match="has no method 'prefill'"):
        open_artifact(damaged("methods", (tmp_path / "one.pte").read_bytes()))
    r = CliRunner().invoke(app, ["generate", str(tmp_path / "truncated")])
    assert r.exit_code == 2 and r.output.startswith("error: ExecuTorch cannot load")


class MovesBesideWork(torch.nn.Module):
    """A residual add and a slice (moves only), an op XNNPACK lacks, then a linear layer and an add (work)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)

    def forward(self, x, r):  # x, r (1, 1, 16)
        h = (x + r)[..., :8]  # (1, 1, 8)
        return self.lin(h.cumsum(-1)) + r[..., 8:]  # (1, 1, 8)


@pytest.mark.parametrize("step", [False, True])
def test_a_step_leaves_partitions_of_moves_only_to_the_cpu_kernels(step):
    from executorch.exir import to_edge_transform_and_lower
    from executorch.extension.pybindings.portable_lib import _load_for_executorch_from_buffer

    from seqedge.exporters.executorch.partitioner import PrecheckedXnnpackPartitioner
    from seqedge.exporters.executorch.step_partitions import LEFT_OUT
    from seqedge.native import load_kernels

    load_kernels()  # as every seqedge program runs (alone, the process met "Missing backend id" at load)
    torch.manual_seed(0)
    model, args = MovesBesideWork().eval(), (torch.randn(1, 1, 16), torch.randn(1, 1, 16))
    edge = to_edge_transform_and_lower(torch.export.export(model, args),
                                       partitioner=[PrecheckedXnnpackPartitioner(step=step)])
    nodes = list(edge.exported_program().graph.nodes)
    delegates = [n for n in nodes if "executorch_call_delegate" in str(n.target)]
    left_out = [str(n.target) for n in nodes if LEFT_OUT in n.meta]
    assert len(delegates) == (1 if step else 2)
    assert (len(left_out) == 2 and any("add" in t for t in left_out) and any("slice" in t for t in left_out)) == step
    program = _load_for_executorch_from_buffer(edge.to_executorch().buffer)
    torch.testing.assert_close(program.forward(args)[0], model(*args))


class Transpose(torch.nn.Module):
    def __init__(self, dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.transpose(*self.dims) * 1.0


@pytest.mark.parametrize("shape,dims,moves", [((1, 7, 1), (1, 2), False), ((2, 1, 5, 1), (1, 3), False),
                                              ((1, 1, 6), (-1, 0), False), ((1, 3, 4), (1, 2), True),
                                              ((3, 1, 4), (0, 2), True)])
def test_a_steps_transpose_that_moves_nothing_is_traced_as_a_reshape(shape, dims, moves):
    """In a step (every size known) a transpose that moves no number (Mamba's (1, D, 1) convolution window) is
    traced as a reshape, which ExecuTorch runs as a view; one that moves numbers stays a transpose. The values are
    the transpose's either way."""
    from seqedge.exporters.decompositions import METHOD_REWRITES

    x = torch.randn(shape)
    with Substitute(METHOD_REWRITES["decode"]):
        ep = torch.export.export(Transpose(dims), (x,))
    targets = {n.target for n in ep.graph.nodes if n.op == "call_function"}
    assert (torch.ops.aten.transpose.int in targets) == moves
    assert (torch.ops.aten.reshape.default in targets or torch.ops.aten.view.default in targets) != moves
    assert torch.equal(ep.module()(x), x.transpose(*dims))


def test_gated_scans_are_an_exports_copy_with_the_same_outputs():
    """gate_scans: the copy's Mamba mixers call seqedge::mamba_scan (softplus, scan and gate as one op, ExecuTorch's
    kernel) where the caller's model keeps the three apart; both give the same logits and state."""
    from seqedge.exporters.projections import gate_scans
    from tests.test_models import assert_same_prefill

    torch.manual_seed(0)
    model = build_model("mamba", "tiny").eval()
    gated = gate_scans(model)
    mixers = lambda m: [layer.mixer for layer in m.backbone.layers]  # noqa: E731
    assert not any(x.gated_scan for x in mixers(model)) and all(x.gated_scan for x in mixers(gated))
    assert_same_prefill(gated, model)
