"""Local Hugging Face folders (`config.json` with a `model_type`, weights, tokenizer) as seqedge models.

No transformers needed: the config is read as JSON and mapped by an architecture registry keyed by
`model_type`; the weights are read with safetensors (one file or shards listed in
`model.safetensors.index.json`) or from `pytorch_model.bin` (+ shards) with `torch.load(weights_only=True)`,
and load into seqedge's families as they are (seqedge's Transformer, Mamba and Mamba-2 carry HF's parameter names).

Every config field either maps to a seqedge config field, is known not to change the inference math
(initialisation, dropout, cache flags, token ids, bookkeeping), or is refused by name — a field seqedge
does not know is refused too, never dropped. Both the transformers 4.x config format (`rope_theta`,
`rope_scaling`) and 5.x (`rope_parameters`) are read.

    arch = ARCHITECTURES["qwen3"]
    cfg = arch.convert(config_dict, max_seq_len=2048)        # a seqedge config dict (family + fields)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seqedge.errors import BadInputError, BadPathError, CorruptFileError, SeqedgeError, UnsupportedError
from seqedge.registry import Registry

DEFAULT_MAX_SEQ_LEN = 2048

# fields of any transformers config that do not change what the model computes at inference
NO_MATH = {
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "_name_or_path", "bos_token_id",
    "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id", "initializer_range", "use_cache",
    "output_attentions", "output_hidden_states", "return_dict", "id2label", "label2id", "tokenizer_class",
    "problem_type", "torchscript", "chunk_size_feed_forward", "is_encoder_decoder", "attention_dropout",
    "is_llama_config", "pretraining_tp", "task_specific_params", "prefix", "finetuning_task", "_attn_implementation",
    "attn_implementation", "use_return_dict", "tie_encoder_decoder", "pruned_heads", "max_length", "min_length",
    "transformers.js_config", "embd_pdrop", "resid_pdrop", "summary_first_dropout",
}
_MISSING = object()


class Fields:
    """One config dict read field by field: each read marks the field used; `finish()` refuses the rest."""

    def __init__(self, cfg: dict[str, Any], where: str):
        self.cfg, self.where, self.used = cfg, where, set(NO_MATH) & set(cfg)

    def refuse(self, key: str, why: str) -> UnsupportedError:
        return UnsupportedError(f"{self.where}: field {key}={json.dumps(self.cfg.get(key))} {why}",
                                "seqedge cannot honour it; try --via optimum, or report the model")

    def get(self, key: str, default: Any = _MISSING, kind: type | tuple = int, lo: float | None = None) -> Any:
        self.used.add(key)
        value = self.cfg.get(key, default)
        if value is _MISSING:
            raise CorruptFileError(f"{self.where} lacks {key}", "is this a complete Hugging Face config.json?")
        if value is default and default is None:
            return value
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise CorruptFileError(f"{self.where}: {key} is {value!r}, expected {getattr(kind, '__name__', kind)}",
                                   "fix config.json")
        if lo is not None and not (isinstance(value, (int, float)) and value >= lo and math.isfinite(value)):
            raise CorruptFileError(f"{self.where}: {key} is {value!r}, expected a finite value >= {lo}", "fix config.json")
        return value

    def expect(self, key: str, allowed: tuple, default: Any = None) -> Any:
        """A field seqedge supports only at these values (a missing field takes `default`)."""
        self.used.add(key)
        value = self.cfg.get(key, default)
        if value not in allowed:
            raise self.refuse(key, f"is not supported (supported: {', '.join(map(json.dumps, allowed))})")
        return value

    def ignore(self, *keys: str) -> None:
        """Fields that only matter for training or initialisation."""
        self.used.update(keys)

    def finish(self) -> None:
        unknown = sorted(k for k in self.cfg if k not in self.used)
        if unknown:
            raise self.refuse(unknown[0], f"is not known to seqedge (it may change the model's math"
                                          f"{'; also ' + ', '.join(unknown[1:4]) if len(unknown) > 1 else ''})")


def _rope(f: Fields) -> tuple[float, dict | None]:
    """rope_theta and rope_scaling, from transformers 4.x (`rope_theta`, `rope_scaling`) or 5.x
    (`rope_parameters`) configs."""
    params = f.get("rope_parameters", None, dict)
    if params is not None:
        theta = params.get("rope_theta", f.cfg.get("rope_theta", 10000.0))
        f.used.add("rope_theta")
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
        if f.get("rope_scaling", None, dict) not in (None, scaling):
            raise f.refuse("rope_scaling", "conflicts with rope_parameters")
    else:
        theta = f.get("rope_theta", 10000.0, float, lo=0)
        scaling = f.get("rope_scaling", None, dict)
    if not isinstance(theta, (int, float)) or isinstance(theta, bool) or not math.isfinite(theta) or theta <= 0:
        raise CorruptFileError(f"{f.where}: rope_theta is {theta!r}, expected a positive number", "fix config.json")
    from seqedge.models.transformer import ROPE_SCALINGS

    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if kind not in ROPE_SCALINGS:
        raise f.refuse("rope_parameters" if params is not None else "rope_scaling",
                       f"has rope_type {kind!r}, which seqedge does not implement "
                       f"(supported: {', '.join(ROPE_SCALINGS)})")
    if kind != "default":
        factor = scaling.get("factor")
        if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not factor > 0:
            raise CorruptFileError(f"{f.where}: rope scaling factor is {factor!r}", "fix config.json")
    return float(theta), (scaling if kind != "default" else None)


def _max_seq_len(f: Fields, requested: int | None) -> int:
    limit = f.get("max_position_embeddings", None, int, lo=1)
    if requested is None:
        return min(limit or DEFAULT_MAX_SEQ_LEN, DEFAULT_MAX_SEQ_LEN)
    if limit is not None and requested > limit:
        raise BadInputError(f"--max-seq-len {requested} exceeds the model's max_position_embeddings ({limit})",
                            f"pass --max-seq-len {limit} or less")
    return requested


def _sliding_window(f: Fields, max_seq_len: int, flag: str | None) -> None:
    """Sliding-window attention equals full attention when the cache is no longer than the window. `flag`
    names the switch (Qwen's use_sliding_window); without one (Mistral) a window applies whenever set."""
    on = f.get(flag, False, bool) if flag else True
    window = f.get("sliding_window", None, int, lo=1)
    f.ignore("max_window_layers", "layer_types")  # which layers get the window: moot when none needs one
    if on and window is not None and window < max_seq_len:
        raise f.refuse("sliding_window", f"is shorter than the KV cache ({max_seq_len} positions) and seqedge's "
                       f"attention has no window; pass --max-seq-len {window} or less")


def _transformer(f: Fields, max_seq_len: int | None, *, qkv_bias: bool = False, qk_norm: bool = False,
                 window_flag: str | None = None, tie_default: bool = False) -> dict[str, Any]:
    heads = f.get("num_attention_heads", kind=int, lo=1)
    hidden = f.get("hidden_size", kind=int, lo=1)
    f.expect("hidden_act", ("silu",), "silu")
    f.expect("rope_interleaved", (False,), False)
    theta, scaling = _rope(f)
    seq = _max_seq_len(f, max_seq_len)
    _sliding_window(f, seq, window_flag)
    head_dim = f.get("head_dim", None, int, lo=2) or 0
    if not head_dim and hidden % heads:
        raise CorruptFileError(f"{f.where}: hidden_size {hidden} is not a multiple of num_attention_heads {heads}",
                               "give head_dim or fix config.json")
    cfg = dict(
        family="transformer", vocab_size=f.get("vocab_size", kind=int, lo=1), hidden_size=hidden,
        num_hidden_layers=f.get("num_hidden_layers", kind=int, lo=1), num_attention_heads=heads,
        num_key_value_heads=f.get("num_key_value_heads", None, int, lo=1) or heads,
        intermediate_size=f.get("intermediate_size", kind=int, lo=1), max_seq_len=seq, rope_theta=theta,
        rms_norm_eps=f.get("rms_norm_eps", 1e-6, float, lo=0),
        tie_word_embeddings=f.get("tie_word_embeddings", tie_default, bool), head_dim=head_dim,
        attention_bias=f.get("attention_bias", False, bool), qkv_bias=qkv_bias,
        mlp_bias=f.get("mlp_bias", False, bool), qk_norm=qk_norm, rope_scaling=scaling)
    if heads % cfg["num_key_value_heads"]:
        raise CorruptFileError(f"{f.where}: num_attention_heads {heads} is not a multiple of num_key_value_heads "
                               f"{cfg['num_key_value_heads']}", "fix config.json")
    return cfg


def _mixtral(f: Fields, max_seq_len: int | None) -> dict[str, Any]:
    cfg = _transformer(f, max_seq_len)
    experts = f.get("num_local_experts", kind=int, lo=1)
    top_k = f.get("num_experts_per_tok", 2, int, lo=1)
    if top_k > experts:
        raise CorruptFileError(f"{f.where}: num_experts_per_tok {top_k} exceeds num_local_experts {experts}",
                               "fix config.json")
    f.ignore("output_router_logits", "router_aux_loss_coef", "router_jitter_noise")  # training only
    return {**cfg, "num_local_experts": experts, "num_experts_per_tok": top_k}


def _qwen_moe(f: Fields, max_seq_len: int | None, *, shared: bool, **attention) -> dict[str, Any]:
    """Qwen-MoE: Qwen2 (q/k/v bias) or Qwen3 (q/k norms per head) attention and a routed mixture in every layer
    (softmax routing, top-k, renormalised when norm_topk_prob), with Qwen2-MoE's sigmoid-gated shared expert."""
    cfg = _transformer(f, max_seq_len, window_flag="use_sliding_window", **attention)
    experts = f.get("num_experts", kind=int, lo=1)
    top_k = f.get("num_experts_per_tok", 8, int, lo=1)
    if top_k > experts:
        raise CorruptFileError(f"{f.where}: num_experts_per_tok {top_k} exceeds num_experts {experts}", "fix config.json")
    if f.get("decoder_sparse_step", 1, int, lo=1) != 1:
        raise f.refuse("decoder_sparse_step", "puts dense feed-forwards between the mixtures; seqedge's layers "
                       "are all one kind (supported: 1)")
    if f.get("mlp_only_layers", [], list):
        raise f.refuse("mlp_only_layers", "makes some layers dense; seqedge's layers are all one kind (supported: [])")
    f.ignore("output_router_logits", "router_aux_loss_coef")  # training only
    # intermediate_size is the width of the dense feed-forward no layer has here; the experts are moe_intermediate_size
    return {**cfg, "intermediate_size": f.get("moe_intermediate_size", kind=int, lo=1), "num_local_experts": experts,
            "num_experts_per_tok": top_k, "norm_topk_prob": f.get("norm_topk_prob", False, bool),
            **({"shared_expert_intermediate_size": f.get("shared_expert_intermediate_size", kind=int, lo=1)}
               if shared else {})}


def _mamba(f: Fields, max_seq_len: int | None) -> dict[str, Any]:
    hidden = f.get("hidden_size", kind=int, lo=1)
    expand = f.get("expand", 2, int, lo=1)
    inner = f.get("intermediate_size", expand * hidden, int, lo=1)
    if inner != expand * hidden:
        raise f.refuse("intermediate_size", f"is not expand × hidden_size ({expand * hidden})")
    rank = f.cfg.get("time_step_rank", "auto")
    f.used.add("time_step_rank")
    if rank != "auto" and (not isinstance(rank, int) or isinstance(rank, bool) or rank < 1):
        raise CorruptFileError(f"{f.where}: time_step_rank is {rank!r}", "fix config.json")
    f.expect("hidden_act", ("silu",), "silu")
    # initialisation of Δ and of the residual projections, and implementation choices (fp32 residual: seqedge
    # computes in fp32 already; the mamba.py fallback)
    f.ignore("time_step_scale", "time_step_min", "time_step_max", "time_step_init_scheme", "time_step_floor",
             "rescale_prenorm_residual", "residual_in_fp32", "use_mambapy", "use_associative_scan")
    return dict(family="mamba", vocab_size=f.get("vocab_size", kind=int, lo=1), hidden_size=hidden,
                state_size=f.get("state_size", 16, int, lo=1), num_hidden_layers=f.get("num_hidden_layers", kind=int, lo=1),
                expand=expand, conv_kernel=f.get("conv_kernel", 4, int, lo=1),
                time_step_rank=0 if rank == "auto" else rank,
                layer_norm_epsilon=f.get("layer_norm_epsilon", 1e-5, float, lo=0),
                use_bias=f.get("use_bias", False, bool), use_conv_bias=f.get("use_conv_bias", True, bool),
                tie_word_embeddings=f.get("tie_word_embeddings", True, bool))


def _mamba2(f: Fields, max_seq_len: int | None) -> dict[str, Any]:
    hidden = f.get("hidden_size", kind=int, lo=1)
    expand = f.get("expand", 2, int, lo=1)
    head_dim = f.get("head_dim", 64, int, lo=1)
    heads = f.get("num_heads", (expand * hidden) // head_dim, int, lo=1)
    if heads * head_dim != expand * hidden:
        raise f.refuse("num_heads", f"× head_dim ({head_dim}) is not expand × hidden_size ({expand * hidden})")
    limit = f.cfg.get("time_step_limit", [0.0, math.inf])
    f.used.add("time_step_limit")
    if list(limit) != [0.0, math.inf]:  # a finite clamp of Δ changes the recurrence; seqedge's kernels do not clamp
        raise f.refuse("time_step_limit", "is not supported (supported: [0.0, Infinity], no clamp)")
    f.expect("hidden_act", ("silu",), "silu")
    f.expect("rms_norm", (True,), True)
    # initialisation of Δ and the residual projections, implementation choices (the chunk length of HF's SSD
    # form: the same math; fp32 residual: seqedge computes in fp32); time_step_rank is not used by Mamba-2
    f.ignore("time_step_min", "time_step_max", "time_step_floor", "rescale_prenorm_residual", "residual_in_fp32",
             "chunk_size", "time_step_rank")
    return dict(family="mamba2", vocab_size=f.get("vocab_size", kind=int, lo=1), hidden_size=hidden,
                state_size=f.get("state_size", 128, int, lo=1), num_hidden_layers=f.get("num_hidden_layers", kind=int, lo=1),
                expand=expand, head_dim=head_dim, n_groups=f.get("n_groups", 1, int, lo=1),
                conv_kernel=f.get("conv_kernel", 4, int, lo=1), layer_norm_epsilon=f.get("layer_norm_epsilon", 1e-5, float, lo=0),
                use_bias=f.get("use_bias", False, bool), use_conv_bias=f.get("use_conv_bias", True, bool),
                tie_word_embeddings=f.get("tie_word_embeddings", True, bool))


@dataclass(frozen=True)
class Architecture:
    model_type: str
    family: str
    hf_class: str  # the transformers class whose weights and math this matches
    read: Callable[[Fields, int | None], dict[str, Any]]
    drop: tuple[str, ...] = (".rotary_emb.inv_freq",)  # derived buffers older checkpoints saved
    rename: tuple[tuple[str, str], ...] = ()  # (regex over an HF name, seqedge's) where the names differ

    def convert(self, cfg: dict[str, Any], max_seq_len: int | None = None, where: str = "config.json") -> dict:
        f = Fields(cfg, where)
        out = self.read(f, max_seq_len)
        f.finish()
        return out


ARCHITECTURES: Registry[Architecture] = Registry("Hugging Face architecture")
ARCHITECTURES.add("llama", Architecture("llama", "transformer", "LlamaForCausalLM", _transformer))
ARCHITECTURES.add("mistral", Architecture("mistral", "transformer", "MistralForCausalLM", _transformer))
ARCHITECTURES.add("qwen2", Architecture("qwen2", "transformer", "Qwen2ForCausalLM",
                                        lambda f, n: _transformer(f, n, qkv_bias=True, window_flag="use_sliding_window")))
ARCHITECTURES.add("qwen3", Architecture("qwen3", "transformer", "Qwen3ForCausalLM",
                                        lambda f, n: _transformer(f, n, qk_norm=True, window_flag="use_sliding_window")))
ARCHITECTURES.add("mixtral", Architecture("mixtral", "transformer", "MixtralForCausalLM", _mixtral))
# Qwen-MoE's mixture under Mixtral's names: mlp.gate / mlp.experts.{e}.gate_proj, up_proj, down_proj -> w1, w3, w2
QWEN_MOE_NAMES = ((r"\.mlp\.experts\.(\d+)\.gate_proj\.", r".block_sparse_moe.experts.\1.w1."),
                  (r"\.mlp\.experts\.(\d+)\.up_proj\.", r".block_sparse_moe.experts.\1.w3."),
                  (r"\.mlp\.experts\.(\d+)\.down_proj\.", r".block_sparse_moe.experts.\1.w2."),
                  (r"\.mlp\.(gate|shared_expert|shared_expert_gate)\.", r".block_sparse_moe.\1."))
ARCHITECTURES.add("qwen2_moe", Architecture(
    "qwen2_moe", "transformer", "Qwen2MoeForCausalLM", lambda f, n: _qwen_moe(f, n, shared=True, qkv_bias=f.get("qkv_bias", True, bool)),
    rename=QWEN_MOE_NAMES))
ARCHITECTURES.add("qwen3_moe", Architecture(
    "qwen3_moe", "transformer", "Qwen3MoeForCausalLM", lambda f, n: _qwen_moe(f, n, shared=False, qk_norm=True),
    rename=QWEN_MOE_NAMES))
ARCHITECTURES.add("mamba", Architecture("mamba", "mamba", "MambaForCausalLM", _mamba))
ARCHITECTURES.add("mamba2", Architecture("mamba2", "mamba2", "Mamba2ForCausalLM", _mamba2))


# --- weights -----------------------------------------------------------------------------------------


def _shards(folder: Path, index_name: str) -> list[Path]:
    from seqedge.checkpoint import read_json

    index = read_json(folder / index_name, "weight index")
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CorruptFileError(f"{folder / index_name} has no weight_map", "re-download the checkpoint")
    names = sorted(set(weight_map.values()))
    for n in names:
        if not isinstance(n, str) or Path(n).name != n:
            raise CorruptFileError(f"{folder / index_name} names a shard outside the folder: {n!r}",
                                   "re-download the checkpoint")
        if not (folder / n).is_file():
            raise BadPathError(f"shard {folder / n} listed in {index_name} is missing", "download every shard")
    return [folder / n for n in names]


def weight_files(folder: Path) -> list[Path]:
    """The weight files of an HF folder, safetensors preferred."""
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (folder / index).is_file():
            return _shards(folder, index)
        if (folder / single).is_file():
            return [folder / single]
    raise BadPathError(f"{folder} has no model.safetensors, model.safetensors.index.json or pytorch_model.bin",
                       "point at a folder with the weights (save_pretrained writes them)")


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the folder's weight files, as float32."""
    from seqedge.checkpoint import load_state_dict

    sd: dict[str, torch.Tensor] = {}
    for path in weight_files(folder):
        part = load_state_dict(path)
        sd.update({k: (v.float() if v.is_floating_point() else v) for k, v in part.items()})
    return sd


def has_family(folder: Path) -> bool | None:
    """Whether an HF folder's architecture maps to a seqedge family (None: not an HF folder)."""
    from seqedge.checkpoint import read_json

    if not (Path(folder) / "config.json").is_file():
        return None
    cfg = read_json(Path(folder) / "config.json", "model config")
    if "family" in cfg or "model_type" not in cfg:
        return None
    return cfg["model_type"] in ARCHITECTURES


def hf_config(folder: Path, cfg: dict[str, Any], max_seq_len: int | None = None):
    """The seqedge family config for an HF folder's config.json (checked like any config)."""
    from seqedge.models import config_from_dict

    model_type = cfg.get("model_type")
    arch = ARCHITECTURES.get(model_type) if isinstance(model_type, str) else None
    if arch is None:
        names = cfg.get("architectures") or []
        raise UnsupportedError(f"{folder / 'config.json'}: architecture {model_type!r} "
                               f"({', '.join(map(str, names))[:200] or 'no architectures field'}) has no seqedge "
                               f"family", f"seqedge's own families take: {', '.join(ARCHITECTURES.names())}; others "
                               "export through optimum-onnx: `seqedge export DIR --via optimum` (pip install -e '.[hf]')")
    try:
        converted = arch.convert(cfg, max_seq_len, where=str(folder / "config.json"))
    except SeqedgeError:
        raise
    except (TypeError, ValueError, KeyError, ZeroDivisionError, AttributeError, OverflowError) as e:
        raise CorruptFileError(f"{folder / 'config.json'} is invalid ({type(e).__name__}: {e})"[:300],
                               "fix the config") from None
    return config_from_dict(converted, where=str(folder / "config.json"))


def _renamed(key: str, rename: tuple[tuple[str, str], ...]) -> str:
    for hf, ours in rename:
        key = re.sub(hf, ours, key)
    return key


def load_hf(folder: Path, cfg: dict[str, Any], max_seq_len: int | None = None):
    """The seqedge model for an HF folder whose config.json is `cfg`, with its weights loaded."""
    from seqedge.checkpoint import load_weights
    from seqedge.models import model_from_config
    from seqedge.tokenizer import check_fits, load_tokenizer

    config = hf_config(folder, cfg, max_seq_len)  # refuses an architecture without a seqedge family
    arch = ARCHITECTURES[cfg["model_type"]]
    model = model_from_config(config)
    sd = {_renamed(k, arch.rename): v for k, v in read_weights(folder).items() if not k.endswith(arch.drop)}
    tied = getattr(config, "tie_word_embeddings", False)
    head = sd.pop("lm_head.weight", None) if tied else None
    if head is not None:  # some tied checkpoints store the head too: it must be the embedding
        embed = next((v for k, v in sd.items() if k.endswith(("embed_tokens.weight", "embeddings.weight"))), None)
        if embed is None or embed.shape != head.shape or not torch.equal(embed, head):
            raise CorruptFileError(f"{folder}: config says tie_word_embeddings but lm_head.weight differs from the "
                                   "embedding", "set tie_word_embeddings to false in config.json")
    load_weights(model, sd, folder)
    check_fits(load_tokenizer(folder), config.vocab_size, str(folder))
    return model.eval()
