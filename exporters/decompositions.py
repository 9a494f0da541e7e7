"""Export-friendly torch decompositions of seqedge's ops, shared by the exporters' lowering registries.

Each function has its op's signature and semantics (see the op's reference.py) but uses only ops that
export with a symbolic length and that backends run: no data-dependent slicing, no Python loop over
time (the recurrence is the `scan` higher-order op, which stays control flow in ONNX and ExecuTorch).
`Substitute` swaps them in while torch.export traces the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch._higher_order_ops.scan import scan
from torch.overrides import TorchFunctionMode

from seqedge.ops.causal_conv1d.op import causal_conv1d_eager


def scan_over_time(u, delta, A, B, C, D, state):
    """selective_scan as a `scan` over time (any T)."""
    a = torch.exp(delta[..., None] * A)  # (Bt, T, D, N)
    b = (delta * u)[..., None] * B[:, :, None, :]  # (Bt, T, D, N)

    def step(h, xs):
        a_t, b_t, c_t = xs  # (Bt, D, N), (Bt, D, N), (Bt, N)
        h = a_t * h + b_t  # (Bt, D, N)
        return h, (h * c_t[:, None, :]).sum(-1)  # (Bt, D)

    init = state.clone(memory_format=torch.contiguous_format)  # a slice of a larger state (Mamba-2's groups) has
    h, y = scan(step, init, (a, b, C), dim=1)  # its parent's strides; the carry must match them. y: (Bt, T, D)
    return y + D * u, h


def _ssd_as_selective_scans(x, dt, A, B, C, D, state, scan_fn):
    """ssd_scan as one selective scan per group of heads (channels = the group's heads × head_dim, Δ and A
    broadcast over a head's channels, B/C shared by the group): Mamba-2 in Mamba-1's terms."""
    Bt, T, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    w = H // G  # heads per group
    ys, states = [], []
    for g in range(G):
        hs = slice(g * w, (g + 1) * w)
        u = x[:, :, hs].reshape(Bt, T, w * P)  # (Bt, T, w*P)
        delta = dt[:, :, hs, None].expand(Bt, T, w, P).reshape(Bt, T, w * P)  # (Bt, T, w*P)
        a = A[hs, None, None].expand(w, P, N).reshape(w * P, N)  # (w*P, N)
        skip = D[hs, None].expand(w, P).reshape(w * P)  # (w*P,)
        y, s = scan_fn(u, delta, a, B[:, :, g], C[:, :, g], skip, state[:, hs].reshape(Bt, w * P, N))
        ys.append(y.reshape(Bt, T, w, P))
        states.append(s.reshape(Bt, w, P, N))
    return torch.cat(ys, dim=2), torch.cat(states, dim=1)


def ssd_over_time(x, dt, A, B, C, D, state):
    """ssd_scan as a `scan` over time per group of heads (any T; standard ONNX ops)."""
    return _ssd_as_selective_scans(x, dt, A, B, C, D, state, scan_over_time)


def ssd_selective_scan_kernel(x, dt, A, B, C, D, state):
    """ssd_scan as seqedge::selective_scan per group of heads (ExecuTorch: the C++ scan kernel)."""
    return _ssd_as_selective_scans(x, dt, A, B, C, D, state, torch.ops.seqedge.selective_scan)


def ssd_single_step(x, dt, A, B, C, D, state):
    """ssd_scan for T = 1 (decode): elementwise ops and one matmul per head, no control flow."""
    Bt, _, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    x1, dt1 = x.reshape(Bt, H, P), dt.reshape(Bt, H)  # (Bt, H, P), (Bt, H)
    b = B.reshape(Bt, G, 1, N).expand(Bt, G, H // G, N).reshape(Bt, H, 1, N)  # (Bt, H, 1, N)
    c = C.reshape(Bt, G, 1, N).expand(Bt, G, H // G, N).reshape(Bt, H, N, 1)  # (Bt, H, N, 1)
    decay = torch.exp(dt1 * A).reshape(Bt, H, 1, 1)  # (Bt, H, 1, 1)
    s = decay * state + (dt1[..., None] * x1).unsqueeze(-1) * b  # (Bt, H, P, N)
    y = (s @ c).reshape(Bt, H, P) + D[:, None] * x1  # (Bt, H, P)
    return y.reshape(Bt, 1, H, P), s


def scan_single_step(u, delta, A, B, C, D, state):
    """selective_scan for T = 1 (decode): plain elementwise ops, no control flow."""
    a = torch.exp(delta[:, 0, :, None] * A)  # (Bt, D, N)
    h = a * state + (delta[:, 0] * u[:, 0])[..., None] * B[:, 0, None, :]  # (Bt, D, N)
    y = (h * C[:, 0, None, :]).sum(-1) + D * u[:, 0]  # (Bt, D)
    return y[:, None], h


def scan_unrolled(u, delta, A, B, C, D, state):
    """selective_scan for a static T, the recurrence written out step by step: elementwise ops and one
    matmul per step, no control flow (graphs for NPU compilers, which take no Scan/Loop). T = 1 is
    scan_single_step."""
    a = torch.exp(delta[..., None] * A)  # (Bt, T, D, N)
    b = (delta * u)[..., None] * B[:, :, None, :]  # (Bt, T, D, N)
    h, ys = state, []
    for t in range(u.shape[1]):
        h = a[:, t] * h + b[:, t]  # (Bt, D, N)
        ys.append(h @ C[:, t, :, None])  # (Bt, D, 1)
    return torch.cat(ys, dim=2).transpose(1, 2) + D * u, h  # (Bt, T, D), (Bt, D, N)


def ssd_unrolled(x, dt, A, B, C, D, state):
    """ssd_scan for a static T: the unrolled selective scan per group of heads."""
    return _ssd_as_selective_scans(x, dt, A, B, C, D, state, scan_unrolled)


def conv_concat(x, weight, bias, state):
    """causal_conv1d as Concat + depthwise Conv + SiLU + Slice."""
    return causal_conv1d_eager(x, weight, bias, state)


def _rotated(q, k, v, pos, cos, sin, hd: int):
    """q (Bt, T, H, hd), k and v (Bt, T, Hkv, hd) from the op's flat inputs, q and k rotated to pos..pos+T-1
    (rope_ref's arithmetic, the table rows gathered once for both)."""
    Bt, T = q.shape[0], q.shape[1]
    positions = pos.reshape(-1)[:1] + torch.arange(T, device=q.device)  # (T,)
    # a static chunk's padding may run past the table (minimum, not clamp: Core ML's converter turns an
    # integer clamp into float, and gather then refuses the indices)
    positions = torch.minimum(positions, positions.new_tensor(cos.shape[0] - 1))
    c, s = cos.index_select(0, positions), sin.index_select(0, positions)  # (T, hd/2)
    c = torch.cat([c, c], dim=-1)[None, :, None, :]  # (1, T, 1, hd)
    s = torch.cat([s, s], dim=-1)[None, :, None, :]  # (1, T, 1, hd)
    half = hd // 2

    def rotate(x):  # (Bt, T, h, hd)
        return x * c + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * s

    q = rotate(q.reshape(Bt, T, q.shape[2] // hd, hd))  # (Bt, T, H, hd)
    k = rotate(k.reshape(Bt, T, k.shape[2] // hd, hd))  # (Bt, T, Hkv, hd)
    return q, k, v.reshape(Bt, T, v.shape[2] // hd, hd)


def attention_masked(q, k, v, k_cache, v_cache, pos, cos, sin):
    """attention: RoPE by gathered table rows, masked write into the fixed cache + causal attention over
    every cache slot."""
    Bt, T, S, hd = q.shape[0], q.shape[1], k_cache.shape[2], k_cache.shape[3]
    q, k, v = (x.transpose(1, 2) for x in _rotated(q, k, v, pos, cos, sin, hd))  # (Bt, heads, T, hd)
    idx = torch.arange(S, device=q.device)  # (S,)
    rel = idx - pos  # (S,) offset of each cache slot into the new tokens
    write = ((rel >= 0) & (rel < T))[None, None, :, None]  # (1, 1, S, 1)
    src = rel.clamp(0, T - 1)  # (S,)
    k_cache = torch.where(write, k.index_select(2, src), k_cache)  # (Bt, Hkv, S, hd)
    v_cache = torch.where(write, v.index_select(2, src), v_cache)  # (Bt, Hkv, S, hd)
    visible = idx[None, :] <= (pos + torch.arange(T, device=q.device))[:, None]  # (T, S)
    rep = q.shape[1] // k.shape[1]
    keys = k_cache.repeat_interleave(rep, dim=1)  # (Bt, H, S, hd)
    vals = v_cache.repeat_interleave(rep, dim=1)  # (Bt, H, S, hd)
    out = F.scaled_dot_product_attention(q, keys, vals, attn_mask=visible)  # (Bt, H, T, hd)
    return out.transpose(1, 2).reshape(Bt, T, -1), k_cache, v_cache


MASKED = -100.0  # the additive score of a hidden slot in attention_blended: exp(-100) is 0 in float32


def attention_blended(q, k, v, k_cache, v_cache, pos, cos, sin):
    """attention as attention_masked in arithmetic only, for quantized NPU graphs: the cache write is a blend
    (cache·(1−m) + new·m, m a 0/1 float mask) and hidden slots get MASKED added to their scores — no Where
    and no −inf, which QDQ cannot quantize (a Where keeps its float state input; −inf has no scale)."""
    Bt, T, S, hd = q.shape[0], q.shape[1], k_cache.shape[2], k_cache.shape[3]
    q, k, v = (x.transpose(1, 2) for x in _rotated(q, k, v, pos, cos, sin, hd))  # (Bt, heads, T, hd)
    idx = torch.arange(S, device=q.device)  # (S,)
    rel = idx - pos  # (S,) offset of each cache slot into the new tokens
    write = ((rel >= 0) & (rel < T)).to(q.dtype)[None, None, :, None]  # (1, 1, S, 1)
    # the source row of each written slot; at T = 1 always row 0 (a clamp to [0, 0] becomes QNN's ReluMinMax
    # with an empty range, which the HTP refuses at run time)
    src = torch.zeros_like(rel) if T == 1 else torch.minimum(torch.maximum(rel, rel.new_tensor(0)), rel.new_tensor(T - 1))  # (S,)
    k_cache = k_cache * (1 - write) + k.index_select(2, src) * write  # (Bt, Hkv, S, hd)
    v_cache = v_cache * (1 - write) + v.index_select(2, src) * write  # (Bt, Hkv, S, hd)
    visible = (idx[None, :] <= (pos + torch.arange(T, device=q.device))[:, None]).to(q.dtype)  # (T, S)
    rep = q.shape[1] // k.shape[1]
    keys = k_cache.repeat_interleave(rep, dim=1)  # (Bt, H, S, hd)
    vals = v_cache.repeat_interleave(rep, dim=1)  # (Bt, H, S, hd)
    scores = q @ keys.transpose(2, 3) * hd**-0.5 + (1 - visible) * MASKED  # (Bt, H, T, S)
    out = torch.softmax(scores, dim=-1) @ vals  # (Bt, H, T, hd)
    return out.transpose(1, 2).reshape(Bt, T, -1), k_cache, v_cache


class Substitute(TorchFunctionMode):
    """While active (around torch.export), run each op's decomposition instead of the op; record which
    ops were met, so the exporter can say which lowering it used."""

    def __init__(self, decompositions: dict):
        super().__init__()
        self.decompositions = decompositions
        self.seen: set = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        key = func.default if isinstance(func, torch._ops.OpOverloadPacket) else func  # torch.ops.seqedge.x(...)
        if key in self.decompositions:
            self.seen.add(key)
            return self.decompositions[key](*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


# --- forms whose data path XNNPACK delegates whole (ExecuTorch) -------------------------------------------
# XNNPACK takes matmuls, elementwise math (exp, log, sigmoid, rsqrt, max), softmax, slices and views, but
# no where/gather/select/sum/mean-over-last-dim: each of those on a layer's data path splits it into
# another delegate, and each delegate costs lowering time and a boundary at run time. These forms keep
# such ops off the data path (masks are built from `pos` alone) or replace them with matmuls.


def conv_tail_slice(x, weight, bias, state):
    """causal_conv1d with the new state sliced from the end (a static start) and SiLU as x·sigmoid(x)."""
    K = weight.shape[-1]
    window = torch.cat([state, x], dim=2)  # (Bt, D, K-1+T)
    y = F.conv1d(window, weight, bias, groups=weight.shape[0])  # (Bt, D, T)
    return y * torch.sigmoid(y), window[:, :, window.shape[2] - (K - 1):]


def softplus_stable(x, beta=1.0, threshold=20.0):
    """softplus as max(x, 0) + log(1 + exp(-|x|)): exact, no overflow, no where/log1p."""
    return torch.clamp(x, min=0) + torch.log(1 + torch.exp(-torch.abs(x)))


def rms_norm_pooled(x, normalized_shape, weight=None, eps=None):
    """rms_norm with the mean of squares as XNNPACK's global average pool: a 4-D mean over the last two
    dims, the second of size 1 (mean over the last dim of a 3-D tensor is not delegated)."""
    shape = x.shape
    sq = (x * x).reshape(-1, 1, 1, shape[-1])  # (rows, 1, 1, C)
    ms = sq.mean(dim=(-1, -2), keepdim=True).reshape(*shape[:-1], 1)  # (..., 1)
    y = x * torch.rsqrt(ms + (eps if eps is not None else torch.finfo(x.dtype).eps))
    return y * weight if weight is not None else y


def rms_norm_kernel(x, normalized_shape, weight=None, eps=None):
    """rms_norm as seqedge's C++ kernel (`seqedge::rms_norm`, ExecuTorch's decode method): XNNPACK ran a step's norm
    as its own delegate call, whose fixed cost (~4-5 us on a Zen 3, the same for ten ops as for one) was most of
    it; the kernel takes ~0.2 us for a 576-wide row. A norm the op does not take (no weight, more than the last
    dimension, not float32) is rms_norm_pooled."""
    if (weight is None or len(normalized_shape) != 1 or x.dtype != torch.float32 or weight.dtype != torch.float32
            or weight.dim() != 1):
        return rms_norm_pooled(x, normalized_shape, weight, eps)
    return torch.ops.seqedge.rms_norm(x, weight, eps if eps is not None else torch.finfo(x.dtype).eps)


def chunk_as_slices(x, chunks, dim=0):
    size = x.shape[dim]
    if not isinstance(size, int):  # a symbolic (dynamic) dimension: keep the op
        return x.chunk(chunks, dim)
    each = -(-size // chunks)
    return tuple(x.narrow(dim, s, min(each, size - s)) for s in range(0, size, each))


def split_as_slices(x, split_size_or_sections, dim=0):
    size = x.shape[dim]
    if not isinstance(size, int):
        return x.split(split_size_or_sections, dim)
    sizes = (split_size_or_sections if isinstance(split_size_or_sections, (list, tuple))
             else [min(split_size_or_sections, size - s) for s in range(0, size, split_size_or_sections)])
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return tuple(x.narrow(dim, s, n) for s, n in zip(starts, sizes))


def transpose_as_reshape(x, dim0, dim1):
    """transpose that moves no number (of the dims from dim0 to dim1, at most one larger than 1; all sizes known) as
    a reshape: ExecuTorch runs a reshape as a view of the same memory and a transpose as a copy, in a step an
    XNNPACK call of its own (Mamba's (1, D, 1) convolution window to (1, 1, D), two a layer)."""
    shape = list(x.shape)
    if x.dim() == 0 or not all(isinstance(n, int) for n in shape) or not x.is_contiguous():
        return x.transpose(dim0, dim1)
    d0, d1 = sorted((dim0 % x.dim(), dim1 % x.dim()))
    if sum(n != 1 for n in shape[d0:d1 + 1]) > 1:
        return x.transpose(dim0, dim1)
    shape[d0], shape[d1] = shape[d1], shape[d0]
    return x.reshape(shape)


# torch functions rewritten while an ExecuTorch method is traced (applied with Substitute)
XNNPACK_REWRITES = {
    F.softplus: softplus_stable,
    F.rms_norm: rms_norm_pooled,
    torch.Tensor.chunk: chunk_as_slices,
    torch.Tensor.split: split_as_slices,
}
# ... per method: the norms as seqedge's kernel in both (a prompt's too: XNNPACK's mean of squares over (T, D) as a
# global average pool made a llama-135m prompt of 1,024 tokens' norms 31 ms of ~490, the kernel 3 ms; ETDump)
METHOD_REWRITES = {method: {**XNNPACK_REWRITES, F.rms_norm: rms_norm_kernel} for method in ("prefill", "decode")}
# ... and in a step (T = 1, every size known) the transposes that move nothing as reshapes
METHOD_REWRITES["decode"].update({torch.Tensor.transpose: transpose_as_reshape, torch.transpose: transpose_as_reshape})


# --- ExecuTorch's LLM kernels ---------------------------------------------------------------------------


def _as_cache(x, cache):
    """New keys or values in the cache's type: float32 into a float16 cache by seqedge's kernel (`seqedge::to_half`;
    ExecuTorch's portable conversion was 6 % of a llama-135m prompt of 1,024 tokens), anything else by `to`."""
    if x.dtype == torch.float32 and cache.dtype == torch.float16:
        return torch.ops.seqedge.to_half(x.contiguous())
    return x.to(cache.dtype)


READ_POSITION = "_seqedge_position"  # the attribute a traced pos keeps its read value in


def read_position(pos):
    """`pos` (a one-element tensor) as an int for the cache ops, read once per traced method: every layer is
    handed the same `pos`, and each layer's own read was three instructions in the program (select, view,
    item: 90 of a llama-135m decode step's 634; reading it once, its Python decode ran x1.01-1.05). Outside a
    trace (a plain int comes back) it is read every call: `pos` may have been written in place since."""
    p = getattr(pos, READ_POSITION, None)
    if p is None:
        p = pos.reshape(-1)[0].item()
        torch._check_is_size(p)
        if isinstance(p, torch.SymInt):
            setattr(pos, READ_POSITION, p)
    return p


def attention_cached_sdpa(q, k, v, k_cache, v_cache, pos, cos, sin):
    """attention over KV caches the program holds. Here k_cache / v_cache are the program-held buffers in
    ExecuTorch's (Bt, S, Hkv, hd) layout (executorch/held_state.py), not the op's (Bt, Hkv, S, hd) — the
    (Bt, T, heads, hd) layout the projections give, so nothing is transposed: RoPE by seqedge's `seqedge::rope`
    kernel (one call for q, one for k, where the rotation decomposes into a dozen nodes),
    `llama::update_cache` (ExecuTorch's LLM kernel) writes k, v into the caches in place and seqedge's
    `seqedge::cached_sdpa` attends causally over slots [0, pos + T) with grouped-query heads (a prompt in tiles
    of positions, a decode step streaming each cached row once for all the query heads). The caches are
    returned as they are (written in place)."""
    Bt, T, hd = q.shape[0], q.shape[1], k_cache.shape[3]
    p = read_position(pos)
    torch._check(p < k_cache.shape[1])
    q = torch.ops.seqedge.rope(q.reshape(Bt, T, -1, hd), pos, cos, sin)  # (Bt, T, H, hd)
    k = torch.ops.seqedge.rope(k.reshape(Bt, T, -1, hd), pos, cos, sin)  # (Bt, T, Hkv, hd)
    v = v.reshape(Bt, T, -1, hd)  # (Bt, T, Hkv, hd)
    torch.ops.llama.update_cache(_as_cache(k, k_cache), k_cache, p)  # float16 caches: rounded once, here
    torch.ops.llama.update_cache(_as_cache(v, v_cache), v_cache, p)
    out = torch.ops.seqedge.cached_sdpa(q.contiguous(), k_cache, v_cache, p)  # (Bt, T, H, hd)
    return out.reshape(Bt, T, -1), k_cache, v_cache
