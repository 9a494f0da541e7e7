"""The model zoo: families registered by name, each with named presets.

    model = build_model("mamba", "small")
    FAMILIES.names()            # ['transformer', 'mamba', 'lstm', 'gru', 'rnn', ...]
    FAMILIES["mamba"].presets   # {'tiny': {...}, 'small': {...}, 'mamba-130m': {...}}

`tiny` presets are for tests (a few hundred thousand parameters), `small` for the demo (2-5 M),
and the named shapes (`mamba-130m`, `llama-135m`) for benchmarks with random weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from seqedge.errors import CorruptFileError, UnknownNameError
from seqedge.models.base import ModelConfig, SequenceModel, State, TensorSpec
from seqedge.models.mamba import Mamba, MambaConfig
from seqedge.models.mamba2 import Mamba2, Mamba2Config
from seqedge.models.rnn import GRU, LSTM, ElmanConfig, ElmanRNN, GRUConfig, LSTMConfig
from seqedge.models.s4 import S4, S4Config
from seqedge.models.transformer import Transformer, TransformerConfig
from seqedge.registry import Registry
from seqedge.untrusted import check_memory


@dataclass(frozen=True)
class Family:
    name: str
    config_cls: type[ModelConfig]
    model_cls: type[SequenceModel]
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def config(self, preset: str, **overrides: Any) -> ModelConfig:
        if preset not in self.presets:
            raise UnknownNameError(
                f"unknown preset {preset!r} for family {self.name!r}", f"valid: {', '.join(self.presets)}"
            )
        return self.config_cls(**{**self.presets[preset], **overrides})


FAMILIES: Registry[Family] = Registry("model family")

FAMILIES.add("transformer", Family("transformer", TransformerConfig, Transformer, {
    "tiny": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=192, max_seq_len=512),
    "small": dict(hidden_size=192, num_hidden_layers=6, num_attention_heads=6, num_key_value_heads=2,
                  intermediate_size=512, max_seq_len=1024),
    "tiny-mqa": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=1,
                     intermediate_size=192, max_seq_len=512),
    "small-mqa": dict(hidden_size=192, num_hidden_layers=6, num_attention_heads=6, num_key_value_heads=1,
                      intermediate_size=512, max_seq_len=1024),
    "tiny-moe": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     intermediate_size=96, max_seq_len=512, num_local_experts=4, num_experts_per_tok=2),
    "small-moe": dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=6, num_key_value_heads=2,
                      intermediate_size=224, max_seq_len=1024, num_local_experts=8, num_experts_per_tok=2),
    # OLMoE-1B-7B (allenai/OLMoE-1B-7B-0924's config; its q/k norms are over the whole projection, not per head —
    # the same parameter count): 64 experts, 8 active
    "olmoe-1b-7b": dict(vocab_size=50304, hidden_size=2048, num_hidden_layers=16, num_attention_heads=16,
                        num_key_value_heads=16, intermediate_size=1024, max_seq_len=4096, num_local_experts=64,
                        num_experts_per_tok=8, norm_topk_prob=False),
    "llama-135m": dict(vocab_size=49152, hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                       num_key_value_heads=3, intermediate_size=1536, max_seq_len=2048, rope_theta=100000.0,
                       tie_word_embeddings=True),
}))
FAMILIES.add("mamba", Family("mamba", MambaConfig, Mamba, {
    "tiny": dict(hidden_size=96, state_size=8, num_hidden_layers=4),
    "small": dict(hidden_size=256, state_size=16, num_hidden_layers=6),
    "mamba-130m": dict(vocab_size=50280, hidden_size=768, state_size=16, num_hidden_layers=24, expand=2),
    # MambaByte-353M (Wang et al. 2024, "MambaByte: Token-free Selective State Space Model"): bytes in, no tokenizer
    "mambabyte-353m": dict(vocab_size=256, hidden_size=1024, state_size=16, num_hidden_layers=53, expand=2),
}))
FAMILIES.add("lstm", Family("lstm", LSTMConfig, LSTM, {
    "tiny": dict(embed_size=64, hidden_size=160, num_layers=2),
    "small": dict(embed_size=128, hidden_size=448, num_layers=2),
}))
FAMILIES.add("gru", Family("gru", GRUConfig, GRU, {
    "tiny": dict(embed_size=64, hidden_size=192, num_layers=2),
    "small": dict(embed_size=128, hidden_size=512, num_layers=2),
}))
FAMILIES.add("rnn", Family("rnn", ElmanConfig, ElmanRNN, {
    "tiny": dict(embed_size=64, hidden_size=256, num_layers=2),
    "small": dict(embed_size=128, hidden_size=768, num_layers=2),
    "tiny-relu": dict(embed_size=64, hidden_size=256, num_layers=2, nonlinearity="relu"),
}))
FAMILIES.add("mamba2", Family("mamba2", Mamba2Config, Mamba2, {
    "tiny": dict(hidden_size=96, state_size=16, num_hidden_layers=4, head_dim=16, n_groups=2),  # the general case
    "small": dict(hidden_size=256, state_size=32, num_hidden_layers=6, head_dim=32),
    # HF state-spaces/mamba2-130m's config.json
    "mamba2-130m": dict(vocab_size=50288, hidden_size=768, state_size=128, num_hidden_layers=24, expand=2,
                        head_dim=64, n_groups=1),
}))
FAMILIES.add("s4", Family("s4", S4Config, S4, {
    "tiny": dict(hidden_size=96, state_size=16, num_hidden_layers=4),
    "small": dict(hidden_size=384, state_size=64, num_hidden_layers=8),
}))

DEFAULT_FAMILY = "transformer"


def build_model(family: str, preset: str = "tiny", **overrides: Any) -> SequenceModel:
    return model_from_config(FAMILIES[family].config(preset, **overrides))


def config_from_dict(d: dict[str, Any], where: str = "model config") -> ModelConfig:
    """A family config from untrusted JSON: types and ranges of every field, then the family's own
    consistency checks (heads divide the width, ...); a bad value is a CorruptFileError naming it."""
    family = d.get("family", "")
    if not isinstance(family, str):
        raise CorruptFileError(f"{where}: family must be a string, got {family!r}"[:200], "fix the config")
    fam = FAMILIES[family]
    try:
        return fam.config_cls.from_dict(d)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError) as e:
        raise CorruptFileError(f"{where} is invalid ({e})"[:300], "fix the config, or re-create it") from None


def model_from_config(cfg: ModelConfig) -> SequenceModel:
    """The model, after its size is known: it is first built on the meta device (no memory), and its weights
    and batch-1 state are refused beyond the machine's memory (or --max-memory). Under
    `with torch.device("meta")` only the shape is built."""
    cls = FAMILIES[cfg.family].model_cls
    with torch.device("meta"):
        shape = cls(cfg)
    if torch.empty(0).device.type == "meta":
        return shape
    params = sum(p.numel() for p in {id(p): p for p in shape.parameters()}.values())
    state = sum(math.prod(s.shape) * torch.empty(0, dtype=getattr(torch, s.dtype)).element_size()
                for s in shape.state_spec(1))
    check_memory(4 * params + state, f"a {cfg.family} model of {params:,} parameters (fp32) and its state")
    return cls(cfg)


__all__ = [
    "DEFAULT_FAMILY", "FAMILIES", "Family", "ModelConfig", "SequenceModel", "State", "TensorSpec",
    "build_model", "config_from_dict", "model_from_config",
]
