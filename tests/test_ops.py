"""Every implementation of each seqedge op against its reference: T = 1, odd and power-of-two T,
state carried across calls. fp32 tolerances: scan 1e-4 relative to the output scale, attention 1e-5."""

import pytest
import torch
import torch.nn.functional as F

from seqedge.ops import (
    attention,
    attention_ref,
    attention_sdpa,
    selective_scan,
    selective_scan_chunked,
    selective_scan_ref,
    ssd_scan,
    ssd_scan_chunked,
    ssd_scan_ref,
)
from seqedge.ops.selective_scan.native import scan_native
from seqedge.ops.selective_scan.sequential import scan_backward, scan_forward

# "native": seqedge's C++ scan through ctypes (what the op runs on float32 CPU tensors); it must apply here
SCAN_IMPLS = {"op": selective_scan, "sequential": scan_forward, "chunked": selective_scan_chunked,
              "native": scan_native}
ATTN_IMPLS = {"op": attention, "sdpa": attention_sdpa}
LENGTHS = [1, 7, 16, 33]


def scan_inputs(T, Bt=2, D=24, N=8, seed=0, step_scale=1.0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(Bt, T, D, generator=g)
    delta = F.softplus(torch.randn(Bt, T, D, generator=g)) * step_scale
    A = -torch.exp(torch.randn(D, N, generator=g))
    B, C = torch.randn(Bt, T, N, generator=g), torch.randn(Bt, T, N, generator=g)
    D_ = torch.randn(D, generator=g)
    state = torch.randn(Bt, D, N, generator=g)
    return u, delta, A, B, C, D_, state


def mamba_scan_inputs(T, Bt=2, D=40, N=16, seed=0):
    """seqedge::mamba_scan's operands: the step before its softplus (both signs, some past torch's threshold of 20)
    and the gate's z (both signs) in place of scan_inputs' positive delta; 16 states, as Mamba's (its kernel's
    16-lane step), and two blocks of 16 channels and a partial one."""
    u, _, A, B, C, D_, state = scan_inputs(T, Bt, D, N, seed)
    g = torch.Generator().manual_seed(seed + 1)
    delta = torch.randn(Bt, T, D, generator=g) * 4 - 2 + (torch.rand(Bt, T, D, generator=g) > 0.95) * 22
    return u, delta, A, B, C, D_, state, torch.randn(Bt, T, D, generator=g) * 3


def int4_mamba_scan_inputs(T, Bt=2, D=48, N=16, R=40, seed=0):
    """seqedge::int4_mamba_scan's operands: mamba_scan_inputs with the step as Mamba's dt_proj, dt (Bt, T, R) times
    int4 codes in groups of 16 rows (R = 40: a partial block of 32) plus a bias."""
    from seqedge.ops.int4_matmul import group_rows, int4_blocks

    u, _, A, B, C, D_, state, z = mamba_scan_inputs(T, Bt, D, N, seed)
    g = torch.Generator().manual_seed(seed + 2)
    codes, scales = group_rows(*int4_blocks(torch.randn(D, R, generator=g) * 0.3))
    return u, torch.randn(Bt, T, R, generator=g), codes, scales, torch.randn(D, generator=g) - 1, A, B, C, D_, state, z


def assert_close(name, got, want, rtol=1e-4):
    scale = max(1.0, want.abs().max().item())
    diff = (got - want).abs().max().item()
    assert diff <= rtol * scale, f"{name}: max abs diff {diff:.3g} > {rtol * scale:.3g}"


def ssd_inputs(T, Bt=2, H=6, P=4, G=2, N=8, seed=0, step_scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(Bt, T, H, P, generator=g)
    dt = F.softplus(torch.randn(Bt, T, H, generator=g)) * step_scale
    A = -torch.exp(torch.randn(H, generator=g))
    B, C = torch.randn(Bt, T, G, N, generator=g), torch.randn(Bt, T, G, N, generator=g)
    return x, dt, A, B, C, torch.randn(H, generator=g), torch.randn(Bt, H, P, N, generator=g)


SSD_IMPLS = {"op": ssd_scan, "chunked": ssd_scan_chunked,
             "chunked-8": lambda *a: ssd_scan_chunked(*a, chunk=8)}  # several chunks, a partial last one


SCANS = {"selective_scan": (SCAN_IMPLS, selective_scan_ref, scan_inputs),
         "ssd_scan": (SSD_IMPLS, ssd_scan_ref, ssd_inputs)}
SCAN_CASES = [(op, impl) for op, (impls, _, _) in SCANS.items() for impl in impls]


@pytest.mark.parametrize("op,impl", SCAN_CASES)
@pytest.mark.parametrize("T", [*LENGTHS, 70, 130])
def test_scan_matches_reference(op, impl, T):
    impls, ref, inputs = SCANS[op]
    args = inputs(T)
    y, s = impls[impl](*args)
    y_ref, s_ref = ref(*args)
    assert y.shape == y_ref.shape and s.shape == s_ref.shape
    assert_close(f"{op} {impl} y", y, y_ref)
    assert_close(f"{op} {impl} state", s, s_ref)


@pytest.mark.parametrize("op,impl", SCAN_CASES)
@pytest.mark.parametrize("step_scale", [1.0, 40.0])  # 40: Δ·A down to about -1000 per step
def test_scan_state_carried_across_calls(op, impl, step_scale):
    impls, ref, inputs = SCANS[op]
    x, delta, A, B, C, D, state = inputs(40, step_scale=step_scale)
    y_ref, s_ref = ref(x, delta, A, B, C, D, state)
    cut = 13
    y1, s1 = impls[impl](x[:, :cut], delta[:, :cut], A, B[:, :cut], C[:, :cut], D, state)
    y2, s2 = impls[impl](x[:, cut:], delta[:, cut:], A, B[:, cut:], C[:, cut:], D, s1)
    assert torch.isfinite(y1).all() and torch.isfinite(y2).all()
    assert_close(f"{op} {impl} y", torch.cat([y1, y2], 1), y_ref)
    assert_close(f"{op} {impl} state", s2, s_ref)


def test_ssd_scan_is_mamba1s_scan_per_group_of_heads():
    """The identity the portable ONNX lowering and the ExecuTorch kernel path rest on."""
    from seqedge.exporters.decompositions import _ssd_as_selective_scans

    args = ssd_inputs(9)
    y, s = _ssd_as_selective_scans(*args, scan_fn=selective_scan_ref)
    y_ref, s_ref = ssd_scan_ref(*args)
    assert_close("y", y, y_ref)
    assert_close("state", s, s_ref)


@pytest.mark.parametrize("op", SCANS)
@pytest.mark.parametrize("T", [1, 9, 70])
def test_scan_backward_matches_autograd_of_reference(op, T):
    """The op's gradients (selective_scan: the hand-derived reverse scan; ssd_scan: autograd of the chunked form,
    recomputed) against autograd through the sequential reference."""
    impls, ref, inputs = SCANS[op]
    args = inputs(T, seed=3)
    ref_in = [a.clone().requires_grad_() for a in args]
    y, s = ref(*ref_in)
    gy, gs = torch.randn_like(y), torch.randn_like(s)
    torch.autograd.backward((y, s), (gy, gs))
    op_in = [a.clone().requires_grad_() for a in args]
    torch.autograd.backward(impls["op"](*op_in), (gy, gs))
    for i, (a, r) in enumerate(zip(op_in, ref_in)):
        assert_close(f"{op} grad of input {i}", a.grad, r.grad)
    if op == "selective_scan":  # the backward the op registers, called directly
        for i, (g, r) in enumerate(zip(scan_backward(*args, gy, gs), ref_in)):
            assert_close(f"scan_backward input {i}", g, r.grad)


def rope_tables(S, hd, theta=10000.0):
    inv_freq = 1.0 / theta ** (torch.arange(0, hd, 2).float() / hd)  # (hd/2,)
    freqs = torch.arange(S).float()[:, None] * inv_freq[None, :]  # (S, hd/2)
    return freqs.cos(), freqs.sin()


def attn_inputs(T, S=32, Bt=2, H=4, Hkv=2, hd=8, pos=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(Bt, T, H * hd, generator=g)
    k, v = torch.randn(Bt, T, Hkv * hd, generator=g), torch.randn(Bt, T, Hkv * hd, generator=g)
    kc, vc = torch.randn(Bt, Hkv, S, hd, generator=g), torch.randn(Bt, Hkv, S, hd, generator=g)
    return (q, k, v, kc, vc, torch.tensor([pos]), *rope_tables(S, hd))


def test_rope_in_the_reference_is_a_rotation_by_position():
    """rope_ref rotates each (x_i, x_{i+hd/2}) pair by position x frequency: norms are kept, position 0 is the
    identity, and a query and key rotated to positions m and n score as if rotated to m - n and 0."""
    from seqedge.ops.attention.reference import rope_ref

    cos, sin = rope_tables(64, 8)
    x, y = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    at = lambda t, p: rope_ref(t, cos, sin, torch.tensor([p]))  # noqa: E731
    torch.testing.assert_close(at(x, 0), x)
    torch.testing.assert_close(at(x, 37).norm(), x.norm())
    torch.testing.assert_close((at(x, 40) * at(y, 15)).sum(), (at(x, 25) * at(y, 0)).sum(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("impl", ATTN_IMPLS)
@pytest.mark.parametrize("T", LENGTHS[:-1])
@pytest.mark.parametrize("pos", [0, 5])
def test_attention_matches_reference(impl, T, pos):
    args = attn_inputs(T, pos=pos)
    out, kc, vc = ATTN_IMPLS[impl](*args)
    ref = attention_ref(*args)
    for name, got, want in zip(("out", "k_cache", "v_cache"), (out, kc, vc), ref):
        assert_close(f"{impl} {name}", got, want, rtol=1e-5)


@pytest.mark.parametrize("impl", ATTN_IMPLS)
def test_attention_cache_carried_across_calls(impl):
    q, k, v, kc, vc, _, cos, sin = attn_inputs(12)
    kc, vc = torch.zeros_like(kc), torch.zeros_like(vc)
    whole, kw, vw = attention_ref(q, k, v, kc, vc, torch.tensor([0]), cos, sin)
    a, kc1, vc1 = ATTN_IMPLS[impl](q[:, :7], k[:, :7], v[:, :7], kc, vc, torch.tensor([0]), cos, sin)
    b, kc2, vc2 = ATTN_IMPLS[impl](q[:, 7:], k[:, 7:], v[:, 7:], kc1, vc1, torch.tensor([7]), cos, sin)
    assert_close(f"{impl} out", torch.cat([a, b], 1), whole, rtol=1e-5)
    assert_close(f"{impl} k_cache", kc2, kw, rtol=1e-5)


def test_ops_are_single_nodes_under_export():
    class Block(torch.nn.Module):
        def forward(self, u, delta, A, B, C, D, state):
            return selective_scan(u, delta, A, B, C, D, state)

    ep = torch.export.export(Block(), scan_inputs(5))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count("seqedge.selective_scan.default") == 1, targets

    class SSD(torch.nn.Module):
        def forward(self, *args):
            return ssd_scan(*args)

    ep = torch.export.export(SSD(), ssd_inputs(5))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count("seqedge.ssd_scan.default") == 1, targets


@pytest.mark.parametrize("kind", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
def test_rnn_scan_reference_is_torchs_cell(kind):
    """seqedge::rnn_scan (the op ExecuTorch's recurrent layers run) against nn.RNN / nn.LSTM / nn.GRU
    themselves, with the state carried across two calls."""
    from seqedge.ops import CELLS, rnn_scan

    torch.manual_seed(0)
    H, E = 12, 7
    layer = {"lstm": lambda: torch.nn.LSTM(E, H, batch_first=True), "gru": lambda: torch.nn.GRU(E, H, batch_first=True)
             }.get(kind, lambda: torch.nn.RNN(E, H, nonlinearity=kind.split("_")[1], batch_first=True))()
    x = torch.randn(2, 9, E)
    h0, c0 = torch.randn(1, 2, H), torch.randn(1, 2, H)
    with torch.no_grad():
        want, want_state = layer(x, (h0, c0) if kind == "lstm" else h0)
        h, c, ys = h0[0], c0[0], []
        for part in (x[:, :4], x[:, 4:]):
            gx = part @ layer.weight_ih_l0.T + layer.bias_ih_l0
            y, h, c = rnn_scan(gx, layer.weight_hh_l0, layer.bias_hh_l0, h, c, CELLS[kind])  # the op: its reference
            ys.append(y)
    assert_close(f"{kind} y", torch.cat(ys, 1), want)
    assert_close(f"{kind} h", h, (want_state[0] if kind == "lstm" else want_state)[0])
    if kind == "lstm":
        assert_close("lstm c", c, want_state[1][0])


def moe_inputs(T, Bt=2, C=64, inner=48, E=6, seed=0):
    """Operands of seqedge::moe_ffn: x, router logits, w13 (E, 2·inner, C), w2 (E, C, inner)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(Bt, T, C, generator=g), torch.randn(Bt, T, E, generator=g) * 2,
            torch.randn(E, 2 * inner, C, generator=g) / C ** 0.5, torch.randn(E, C, inner, generator=g) / inner ** 0.5)


@pytest.mark.parametrize("renormalise", [True, False])
@pytest.mark.parametrize("T", [1, 7])
def test_moe_ffn_op_and_packed_model_match_the_per_token_reference(renormalise, T):
    """The op (its dense masked form) against the per-token loop over the chosen experts, and a model's
    SparseMoE packed for export (PackedExperts, the op) against the same block in its training form."""
    from seqedge.exporters.projections import fuse_projections
    from seqedge.models import build_model
    from seqedge.models.transformer import moe_ref
    from seqedge.ops import moe_ffn, moe_ffn_ref

    x, logits, w13, w2 = moe_inputs(T)
    for k in (1, 2, 6):
        assert_close(f"moe_ffn k={k}", moe_ffn(x, logits, w13, w2, k, renormalise),
                     moe_ffn_ref(x, logits, w13, w2, k, renormalise), rtol=1e-5)
    torch.manual_seed(0)
    model = build_model("transformer", "tiny-moe", norm_topk_prob=renormalise).eval()
    packed = fuse_projections(model).model.layers[0].block_sparse_moe
    assert type(packed.experts).__name__ == "PackedExperts" and type(model.model.layers[0].block_sparse_moe.experts
                                                                     ).__name__ == "ModuleList"
    x = torch.randn(1, T, model.config.hidden_size)
    with torch.no_grad():
        assert_close("packed", packed(x), moe_ref(model.model.layers[0].block_sparse_moe, x), rtol=1e-5)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("block", [16, 64])
def test_expert_codes_round_trip_within_half_a_step(bits, block):
    """quantize_experts -> dequantize_experts: each weight within half its block's step, the packed layout
    onnxruntime's QMoE reads (two 4-bit codes a byte, the even one low), and moe_ffn_q is moe_ffn on them."""
    from seqedge.ops import moe_ffn, moe_ffn_q
    from seqedge.ops.moe_ffn import dequantize_experts, quantize_experts

    x, logits, w13, w2 = moe_inputs(3)
    codes, scales = quantize_experts(w13, bits, block)
    assert codes.dtype == torch.uint8 and codes.shape == (6, 96, 64 * bits // 8) and scales.shape == (6, 96, 64 // block)
    back = dequantize_experts(codes, scales, bits, block)
    step = scales.repeat_interleave(block, dim=-1)
    assert ((back - w13).abs() <= step / 2 + 1e-7).all()
    if bits == 4:
        assert (codes[..., 0] & 0xF).tolist() == (torch.round(w13[..., 0] / scales[..., 0]) + 8).int().tolist()
    c2, s2 = quantize_experts(w2, bits, 16)
    assert_close("moe_ffn_q", moe_ffn_q(x, logits, codes, scales, c2, s2, 2, True, bits),
                 moe_ffn(x, logits, back, dequantize_experts(c2, s2, bits, 16), 2, True), rtol=1e-5)
