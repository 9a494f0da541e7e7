"""What one token costs a model, from its config alone: parameters by role, bytes streamed and FLOPs per
decode token and per prefill, and the state (KV cache or recurrent state) moved.

    shape = ModelShape.of_config({"family": "mamba", ...})     # seqedge config
    shape = ModelShape.of_config(json.load(open("config.json")))  # Hugging Face Llama / Mamba config
    shape.decode_bytes(weight_bits("int4", 32), context=512), shape.decode_flops(context=512)

The model is built on PyTorch's meta device (no memory, no weights), so parameter counts are exact for
every family seqedge implements; an HF config is mapped onto the matching family first.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from seqedge.errors import BadInputError


def weight_bits(recipe: str, group: int | None = 32) -> float:
    """Bits of one stored weight, scales included (int4: + one fp32 scale per group; int8: per channel)."""
    base = recipe.split("-")[0]
    if base in ("fp32",):
        return 32.0
    if base in ("fp16", "bf16"):
        return 16.0
    if base in ("int8", "w8a16", "w8a8"):  # (the QNN recipes: int8 weights, one scale per tensor)
        return 8.0
    if base == "int4":
        return 4.0 + 32.0 / (group or 32)
    raise BadInputError(f"no weight size known for recipe {recipe!r}", "use fp32, fp16, int8 or int4")


HF_MODEL_TYPES = {"llama": "transformer", "mamba": "mamba", "mamba2": "mamba2"}


def seqedge_config(config: dict[str, Any]) -> dict[str, Any]:
    """A seqedge config dict from a seqedge or Hugging Face config dict."""
    from seqedge.models import FAMILIES

    if "family" in config:
        return config
    family = HF_MODEL_TYPES.get(config.get("model_type", ""))
    if family is None:
        raise BadInputError(f"config model_type {config.get('model_type')!r} is not one seqedge can project",
                            f"supported: {', '.join(HF_MODEL_TYPES)} (Hugging Face) or a seqedge config.json")
    fields = {f.name for f in dataclasses.fields(FAMILIES[family].config_cls)}
    out = {k: v for k, v in config.items() if k in fields}
    if family == "transformer":
        out["max_seq_len"] = int(config.get("max_position_embeddings", 4096))
    return {"family": family, **out}


@dataclass(frozen=True)
class ModelShape:
    family: str
    parameters: int
    embedding: int  # table rows x width (one row read per token)
    head: int  # output projection (streamed every token; shared with the embedding when tied)
    matmul: int  # other Linear / RNN weights (streamed every token)
    other: int  # norms, conv, SSM parameters (float in every recipe)
    tied: bool
    layers: int
    vocab: int
    heads: int = 0
    kv_heads: int = 0
    head_dim: int = 0
    state_numel: int = 0  # recurrent state elements (Mamba conv + SSM, RNN h/c)
    scan_flops: int = 0  # per token, outside matmuls (Mamba's and S4D's recurrence)
    experts_inactive: int = 0  # MoE: expert weights a token's router did not choose ((E - k) / E of them)
    max_seq_len: int | None = None

    @classmethod
    def of_config(cls, config: dict[str, Any]) -> ModelShape:
        from seqedge.models import config_from_dict, model_from_config

        cfg = config_from_dict(seqedge_config(config))
        with torch.device("meta"):
            model = model_from_config(cfg)
        return cls.of_model(model)

    @classmethod
    def of_model(cls, model) -> ModelShape:
        cfg = model.config
        seen: set[int] = set()
        emb = head = mat = other = 0
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                if id(p) in seen:
                    continue
                seen.add(id(p))
                n = p.numel()
                if isinstance(module, nn.Embedding):
                    emb += n
                elif module is getattr(model, "lm_head", None):
                    head += n
                elif (isinstance(module, nn.Linear) and name == "weight") or (isinstance(module, nn.RNNBase)
                                                                               and name.startswith("weight")):
                    mat += n
                else:
                    other += n
        inactive = 0
        for module in model.modules():  # a mixture of experts reads k of its E experts per token
            experts, k = getattr(module, "experts", None), getattr(module, "top_k", 0)
            if isinstance(experts, nn.ModuleList) and k:
                per_expert = sum(p.numel() for p in experts[0].parameters())
                inactive += (len(experts) - k) * per_expert
        tied = bool(getattr(cfg, "tie_word_embeddings", False)) and head == 0
        layers = getattr(cfg, "num_hidden_layers", getattr(cfg, "num_layers", 0))
        state = sum(math.prod(s.shape) for s in model.state_spec(1) if s.name != "pos" and not s.name.startswith(("k.", "v.")))
        kw: dict[str, Any] = {}
        if cfg.family == "transformer":
            kw = dict(heads=cfg.num_attention_heads, kv_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim,
                      max_seq_len=cfg.max_seq_len)
        return cls(cfg.family, emb + head + mat + other, emb, head, mat, other, tied, layers, cfg.vocab_size,
                   state_numel=state, scan_flops=model.recurrence_flops(), experts_inactive=inactive, **kw)

    # --- per token -----------------------------------------------------------------------------------

    @property
    def head_params(self) -> int:
        return self.embedding if self.tied else self.head

    def weight_bytes(self, bits: float, head_bits: float | None = None) -> float:
        """Bytes of all weights as stored (embedding included) at `bits` per weight (`head_bits` for the
        embedding and output head when they differ)."""
        hb = bits if head_bits is None else head_bits
        return (self.embedding + self.head) * hb / 8 + self.matmul * bits / 8 + self.other * 4

    def kv_bytes(self, context: int, dtype_bytes: int = 4) -> float:
        return 2.0 * self.layers * self.kv_heads * self.head_dim * context * dtype_bytes

    def decode_bytes(self, bits: float, context: int = 0, head_bits: float | None = None, state_bytes: int = 4,
                     kv_itemsize: int | None = None) -> float:
        """Bytes read per decode token: every streamed weight once (the embedding: one row; of a mixture of
        experts, the k chosen experts — what a top-k kernel reads), the KV cache up to `context` (elements of
        `kv_itemsize` bytes, else `state_bytes`), the recurrent state read and written."""
        hb = bits if head_bits is None else head_bits
        streamed = (self.matmul - self.experts_inactive) * bits / 8 + self.head_params * hb / 8 + self.other * 4
        row = self.embedding // max(1, self.vocab) * 4
        kv = self.kv_bytes(context, kv_itemsize or state_bytes)
        return streamed + row + kv + 2 * self.state_numel * state_bytes

    def decode_flops(self, context: int = 0) -> float:
        attn = 4.0 * self.layers * self.heads * self.head_dim * context
        return 2.0 * (self.matmul - self.experts_inactive + self.head_params) + attn + self.scan_flops

    def prefill_flops(self, tokens: int, context: int = 0, all_logits: bool = False) -> float:
        """FLOPs to prefill `tokens` after `context`: matmuls per token, causal attention, the head for the
        last token only unless `all_logits`."""
        attn = 4.0 * self.layers * self.heads * self.head_dim * (tokens * context + tokens * (tokens + 1) / 2)
        head = 2.0 * self.head_params * (tokens if all_logits else 1)
        return 2.0 * (self.matmul - self.experts_inactive) * tokens + head + attn + self.scan_flops * tokens

    def prefill_bytes(self, bits: float, tokens: int, context: int = 0, head_bits: float | None = None,
                      kv_itemsize: int | None = None) -> float:
        """Every streamed weight once for the whole prompt, the KV cache written and read, the state."""
        return self.decode_bytes(bits, context + tokens, head_bits, kv_itemsize=kv_itemsize)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def kv_itemsize(manifest: dict | None, recipe: str = "fp32") -> int:
    """Bytes per element of the attention caches an artifact holds (exporters/plan.py's held_cache_type); without
    an artifact, what an export of `recipe` holds where seqedge's kernels hold them (kv_cache_type: float16 for a
    quantized recipe, float32 for fp32); 4 where there are none."""
    from seqedge.exporters.plan import default_kv_cache, held_cache_type

    held = default_kv_cache(recipe) if manifest is None else held_cache_type(manifest)
    return 2 if held == "float16" else 4
