"""Llama-style decoder: RMSNorm, RoPE, grouped-query attention, SwiGLU — or a mixture of SwiGLU experts.

Parameter names and shapes match Hugging Face `LlamaForCausalLM` (`model.embed_tokens.weight`,
`model.layers.{i}.self_attn.q_proj.weight`, ..., `lm_head.weight`), so an HF state dict loads as is. With
`num_local_experts` > 0 each layer's feed-forward is Mixtral's sparse MoE block under its HF names
(`model.layers.{i}.block_sparse_moe.gate.weight`, `...experts.{e}.w1/w2/w3.weight`), optionally with Qwen2-MoE's
sigmoid-gated shared expert (`...shared_expert.{gate,up,down}_proj`, `...shared_expert_gate`).
Attention with the KV cache is one `seqedge::attention` op per layer; the cache is a fixed-size
state tensor of `max_seq_len` positions plus a `pos` counter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqedge.models.base import ModelConfig, RMSNorm, SequenceModel, State, TensorSpec, fused_linear
from seqedge.ops import attention
from seqedge.ops.moe_ffn.reference import quantize_experts
from seqedge.ops.moe_ffn.reference import routing as moe_routing


@dataclass
class TransformerConfig(ModelConfig):
    family = "transformer"
    vocab_size: int = 256
    hidden_size: int = 64
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 192
    max_seq_len: int = 512
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    head_dim: int = 0  # 0: hidden_size // num_attention_heads (Qwen3, Gemma-style configs give it explicitly)
    attention_bias: bool = False  # bias on q/k/v/o (Llama's attention_bias)
    qkv_bias: bool = False  # bias on q/k/v only (Qwen2)
    mlp_bias: bool = False
    qk_norm: bool = False  # RMSNorm over head_dim on q and k before RoPE (Qwen3)
    rope_scaling: dict | None = None  # {"rope_type": "linear"|"llama3", "factor": ..., ...}
    num_local_experts: int = 0  # 0: one dense SwiGLU per layer; E > 0: a mixture of E SwiGLU experts (Mixtral)
    num_experts_per_tok: int = 2  # k experts chosen per token by the router
    norm_topk_prob: bool = True  # renormalise the k chosen routing weights to sum to 1 (Mixtral; OLMoE does not)
    shared_expert_intermediate_size: int = 0  # > 0: a SwiGLU every token also runs, sigmoid-gated (Qwen2-MoE)
    zero_means_auto: ClassVar[tuple[str, ...]] = ("head_dim", "num_local_experts", "shared_expert_intermediate_size")  # 0 allowed

    def __post_init__(self):
        if self.head_dim <= 0:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError("hidden_size must be divisible by num_attention_heads (or give head_dim)")
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be divisible by num_key_value_heads")
        if self.head_dim % 2:
            raise ValueError("head_dim must be even (RoPE rotates pairs)")
        if self.rope_scaling is not None:
            rope_inv_freq(self)  # validates the scaling dict
        if self.shared_expert_intermediate_size and not self.num_local_experts:
            raise ValueError("shared_expert_intermediate_size needs num_local_experts (a shared expert of a mixture)")
        if self.num_local_experts and not 1 <= self.num_experts_per_tok <= self.num_local_experts:
            raise ValueError(f"num_experts_per_tok ({self.num_experts_per_tok}) must be in [1, num_local_experts "
                             f"({self.num_local_experts})]")


ROPE_SCALINGS = ("default", "linear", "llama3")


def rope_inv_freq(cfg: TransformerConfig) -> Tensor:
    """RoPE inverse frequencies (head_dim/2,) with the config's scaling (HF's `rope_type`s linear, llama3)."""
    hd = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))  # (hd/2,)
    s = cfg.rope_scaling or {}
    kind = s.get("rope_type", s.get("type", "default"))
    if kind == "default":
        return inv_freq
    if kind not in ROPE_SCALINGS:
        raise ValueError(f"rope_scaling type {kind!r} is not supported (supported: {', '.join(ROPE_SCALINGS)})")
    factor = float(s["factor"])
    if kind == "linear":
        return inv_freq / factor
    low, high = float(s.get("low_freq_factor", 1.0)), float(s.get("high_freq_factor", 4.0))  # llama3
    old_len = float(s.get("original_max_position_embeddings", 8192))
    wavelen = 2 * math.pi / inv_freq  # (hd/2,)
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(medium, smoothed, scaled)


def rope_cos_sin(positions: Tensor, inv_freq: Tensor) -> tuple[Tensor, Tensor]:
    """cos/sin tables for absolute `positions` (T,), HF layout (halves duplicated): (T, head_dim)."""
    freqs = positions.float()[:, None] * inv_freq[None, :]  # (T, hd/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (T, hd)
    return emb.cos(), emb.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (B, H, T, hd) rotated by HF's rotate_half convention."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)  # (B, H, T, hd)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.n_head, self.n_kv, self.hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        qkv_bias = cfg.attention_bias or cfg.qkv_bias
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_head * self.hd, bias=qkv_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.hd, bias=qkv_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.hd, bias=qkv_bias)
        self.o_proj = nn.Linear(self.n_head * self.hd, cfg.hidden_size, bias=cfg.attention_bias)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(self.hd, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(self.hd, cfg.rms_norm_eps)

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q (B, T, H*hd), k and v (B, T, Hkv*hd): one matmul once `fuse_projections` joined the three."""
        if hasattr(self, "qkv_proj"):
            return self.qkv_proj(x).split(self.qkv_widths, dim=-1)
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)

    def fuse_projections(self) -> None:
        """For export: q/k/v_proj become one `qkv_proj` (rows concatenated), so the input is read and
        quantized once per layer. Per-row quantization (int8 channels, int4 groups) gives the same values."""
        self.qkv_widths = [self.q_proj.out_features, self.k_proj.out_features, self.v_proj.out_features]
        self.qkv_proj = fused_linear(self.q_proj, self.k_proj, self.v_proj)
        del self.q_proj, self.k_proj, self.v_proj

    def forward(self, x, cos, sin, k_cache=None, v_cache=None, pos=None):
        """Training (no cache): cos/sin (T, hd) for positions 0..T-1. With a cache: the model's RoPE tables
        (S, hd/2), which `seqedge::attention` indexes at pos..pos+T-1 itself."""
        B, T, _ = x.shape
        q, k, v = self.project(x)  # (B, T, H*hd), (B, T, Hkv*hd) x 2
        if hasattr(self, "q_norm"):
            q = self.q_norm(q.view(B, T, self.n_head, self.hd)).reshape(B, T, self.n_head * self.hd)
            k = self.k_norm(k.view(B, T, self.n_kv, self.hd)).reshape(B, T, self.n_kv * self.hd)
        if k_cache is None:  # training: whole sequence, no cache
            q = apply_rope(q.view(B, T, self.n_head, self.hd).transpose(1, 2), cos, sin)  # (B, H, T, hd)
            k = apply_rope(k.view(B, T, self.n_kv, self.hd).transpose(1, 2), cos, sin)  # (B, Hkv, T, hd)
            v = v.view(B, T, self.n_kv, self.hd).transpose(1, 2)  # (B, Hkv, T, hd)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)  # (B, H, T, hd)
            y = y.transpose(1, 2).reshape(B, T, self.n_head * self.hd)  # (B, T, H*hd)
        else:
            y, k_cache, v_cache = attention(q, k, v, k_cache, v_cache, pos, cos, sin)  # (B, T, H*hd)
        return self.o_proj(y), k_cache, v_cache


class MLP(nn.Module):
    def __init__(self, cfg: TransformerConfig, width: int | None = None):
        super().__init__()
        width = width or cfg.intermediate_size
        self.gate_proj = nn.Linear(cfg.hidden_size, width, bias=cfg.mlp_bias)
        self.up_proj = nn.Linear(cfg.hidden_size, width, bias=cfg.mlp_bias)
        self.down_proj = nn.Linear(width, cfg.hidden_size, bias=cfg.mlp_bias)

    def fuse_projections(self) -> None:
        """For export: gate_proj and up_proj become one `gate_up_proj` (see Attention.fuse_projections)."""
        self.gate_up_proj = fused_linear(self.gate_proj, self.up_proj)
        del self.gate_proj, self.up_proj

    def forward(self, x: Tensor) -> Tensor:
        if hasattr(self, "gate_up_proj"):
            swiglu = getattr(self.gate_up_proj, "swiglu", None)  # a quantized layer with the SwiGLU in its kernel
            if swiglu is not None:
                return self.down_proj(swiglu(x))  # (B, T, I) into down_proj
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)  # (B, T, I) each
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)  # (B, T, I) each
        return self.down_proj(F.silu(gate) * up)


class Expert(nn.Module):
    """One SwiGLU expert under Mixtral's names: w2(silu(w1 x) * w3 x)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.w2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.w3 = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class PackedExperts(nn.Module):
    """A SparseMoE's experts as the exporters take them: one `seqedge::moe_ffn` over stacked weights, so an
    artifact reads only the k chosen experts per token (onnxruntime's MoE, seqedge's ExecuTorch kernel).

        w13 (E, 2I, C): w1 and w3 rows interleaved;  w2 (E, C, I)

    `quantize(bits, block13, block2)` stores them as the op's block codes (`seqedge::moe_ffn_q`, ops/moe_ffn)."""

    def __init__(self, experts: nn.ModuleList):
        super().__init__()
        w1 = torch.stack([e.w1.weight.detach() for e in experts])  # (E, I, C)
        w3 = torch.stack([e.w3.weight.detach() for e in experts])  # (E, I, C)
        E, inner, C = w1.shape
        self.w13 = nn.Parameter(torch.stack([w1, w3], dim=2).reshape(E, 2 * inner, C), requires_grad=False)
        self.w2 = nn.Parameter(torch.stack([e.w2.weight.detach() for e in experts]), requires_grad=False)  # (E, C, I)
        self.bits = 0

    def quantize(self, bits: int, block13: int, block2: int) -> None:
        for name, block in (("w13", block13), ("w2", block2)):
            codes, scales = quantize_experts(getattr(self, name), bits, block)
            delattr(self, name)
            self.register_buffer(f"{name}_codes", codes)
            self.register_buffer(f"{name}_scales", scales)
        self.bits = bits

    def forward(self, x: Tensor, logits: Tensor, top_k: int, renormalise: bool) -> Tensor:
        if self.bits:
            return torch.ops.seqedge.moe_ffn_q(x, logits, self.w13_codes, self.w13_scales, self.w2_codes,
                                               self.w2_scales, top_k, renormalise, self.bits)
        return torch.ops.seqedge.moe_ffn(x, logits, self.w13, self.w2, top_k, renormalise)


class SparseMoE(nn.Module):
    """Mixtral's MoE feed-forward: a router picks k of E experts per token (softmax, top-k, renormalised) and
    sums their outputs by those weights. Trained in the dense masked form — every expert on every token,
    unchosen ones weighted 0 (no data-dependent control flow, differentiable). Exported packed
    (`fuse_projections`: PackedExperts, one `seqedge::moe_ffn` node that reads only the chosen experts).
    `moe_ref` is the per-token loop over the chosen experts both must equal."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.top_k, self.renormalise = cfg.num_experts_per_tok, cfg.norm_topk_prob
        self.gate = nn.Linear(cfg.hidden_size, cfg.num_local_experts, bias=False)
        self.experts = nn.ModuleList(Expert(cfg) for _ in range(cfg.num_local_experts))
        if cfg.shared_expert_intermediate_size:  # Qwen2-MoE: every token, scaled by sigmoid(shared_expert_gate x)
            self.shared_expert = MLP(cfg, cfg.shared_expert_intermediate_size)
            self.shared_expert_gate = nn.Linear(cfg.hidden_size, 1, bias=False)

    def routing(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The k chosen experts' weights and indices, each (B, T, k)."""
        weights, chosen = moe_routing(self.gate(x), self.top_k, self.renormalise)  # (B, T, k)
        return weights.to(x.dtype), chosen

    def fuse_projections(self) -> None:
        self.experts = PackedExperts(self.experts)

    def shared(self, x: Tensor) -> Tensor | float:
        """The shared expert's sigmoid-gated output (B, T, C); 0 without one."""
        if not hasattr(self, "shared_expert"):
            return 0.0
        return torch.sigmoid(self.shared_expert_gate(x)) * self.shared_expert(x)

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(self.experts, PackedExperts):
            return self.experts(x, self.gate(x), self.top_k, self.renormalise) + self.shared(x)  # (B, T, C)
        weights, chosen = self.routing(x)  # (B, T, k)
        dense = torch.zeros(*x.shape[:-1], len(self.experts), dtype=x.dtype).scatter(-1, chosen, weights)  # (B, T, E)
        out = dense[..., :1] * self.experts[0](x)  # (B, T, C)
        for e in range(1, len(self.experts)):
            out = out + dense[..., e : e + 1] * self.experts[e](x)
        return out + self.shared(x)


def moe_ref(moe: SparseMoE, x: Tensor) -> Tensor:
    """Reference MoE: for each token, run only its k chosen experts and sum their outputs by weight (plus the
    shared expert's gated output, where there is one)."""
    weights, chosen = moe.routing(x)  # (B, T, k)
    out = torch.zeros_like(x)  # (B, T, C)
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            for w, e in zip(weights[b, t].tolist(), chosen[b, t].tolist()):
                out[b, t] += w * moe.experts[e](x[b, t])
    return out + moe.shared(x)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.self_attn = Attention(cfg)
        if cfg.num_local_experts:
            self.block_sparse_moe = SparseMoE(cfg)
        else:
            self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, k_cache=None, v_cache=None, pos=None):
        a, k_cache, v_cache = self.self_attn(self.input_layernorm(x), cos, sin, k_cache, v_cache, pos)
        x = x + a  # (B, T, C)
        ffn = self.block_sparse_moe if hasattr(self, "block_sparse_moe") else self.mlp
        x = x + ffn(self.post_attention_layernorm(x))  # (B, T, C)
        return x, k_cache, v_cache


class LlamaBody(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Transformer(SequenceModel):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.config = cfg
        self.model = LlamaBody(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.apply(_init_weights)
        self.register_buffer("inv_freq", rope_inv_freq(cfg), persistent=False)  # (hd/2,)
        freqs = torch.arange(cfg.max_seq_len).float()[:, None] * self.inv_freq[None, :]  # (S, hd/2)
        self.register_buffer("rope_cos", freqs.cos(), persistent=False)  # (S, hd/2) the cached path's tables
        self.register_buffer("rope_sin", freqs.sin(), persistent=False)

    @property
    def max_seq_len(self) -> int:
        return self.config.max_seq_len

    def state_spec(self, batch: int | str = "batch") -> list[TensorSpec]:
        c = self.config
        shape = (batch, c.num_key_value_heads, c.max_seq_len, c.head_dim)
        specs = []
        for i in range(c.num_hidden_layers):
            specs += [TensorSpec(f"k.{i}", "float32", shape), TensorSpec(f"v.{i}", "float32", shape)]
        return specs + [TensorSpec("pos", "int64", (1,))]

    def forward(self, tokens: Tensor) -> Tensor:
        T = tokens.shape[1]
        cos, sin = rope_cos_sin(torch.arange(T), self.inv_freq)
        x = self.model.embed_tokens(tokens)  # (B, T, C)
        for layer in self.model.layers:
            x, _, _ = layer(x, cos, sin)
        return self.lm_head(self.model.norm(x))  # (B, T, V)

    def _cached_layers(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        """The layers over `tokens` from position state["pos"] on: hidden states (B, T, C) and the new caches."""
        x = self.model.embed_tokens(tokens)  # (B, T, C)
        new: State = {}
        for i, layer in enumerate(self.model.layers):
            x, new[f"k.{i}"], new[f"v.{i}"] = layer(x, self.rope_cos, self.rope_sin, state[f"k.{i}"], state[f"v.{i}"],
                                                    state["pos"])
        return x, new

    def prefill(self, tokens: Tensor, state: State, last_only: bool = False) -> tuple[Tensor, State]:
        x, new = self._cached_layers(tokens, state)
        new["pos"] = state["pos"] + tokens.shape[1]
        if last_only:
            x = x[:, -1:]  # (B, 1, C)
        return self.lm_head(self.model.norm(x)), new  # (B, T or 1, V)

    def prefill_padded(self, tokens: Tensor, length: Tensor, state: State) -> tuple[Tensor, State]:
        """Causal attention never lets a real token see the padding after it; the padding's keys land in
        cache slots from pos + length on, which are unread until real tokens overwrite them."""
        x, new = self._cached_layers(tokens, state)
        new["pos"] = state["pos"] + length
        x = x.index_select(1, length - 1)  # (B, 1, C)
        return self.lm_head(self.model.norm(x)), new  # (B, 1, V)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, std=0.02)
    if isinstance(m, nn.Linear) and m.bias is not None:
        nn.init.zeros_(m.bias)
