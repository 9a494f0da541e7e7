"""llama.cpp GGUF files as seqedge models: the way a llama.cpp user brings a model to ONNX/ExecuTorch.

    model = load_gguf("SmolLM2-135M-Instruct.Q4_1.gguf", max_seq_len=2048)
    tokenizer_folder("…gguf")        # tokenizer.json + configs rebuilt from the GGUF's metadata (cached)

The GGUF's metadata becomes a Hugging Face-style config (then the same architecture registry as local HF
folders maps or refuses it), its tensors are dequantized to float32 with the `gguf` package and renamed
to HF names (llama.cpp's Q/K row permutation for Llama undone), and its tokenizer (BPE vocabulary, merges,
special tokens, chat template) is rebuilt as a `tokenizers` tokenizer.json. `tensor_types(path)` says
which GGML types the file held (what was dequantized).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqedge.errors import BadPathError, CorruptFileError, UnsupportedError
from seqedge.registry import Registry

INSTALL = "pip install 'gguf>=0.17'"


def _reader(path: Path):
    try:
        from gguf import GGUFReader
    except ImportError:
        raise UnsupportedError("reading GGUF files needs the gguf package", INSTALL) from None
    if not path.is_file():
        raise BadPathError(f"GGUF file {path} does not exist", "pass a .gguf file")
    try:
        return GGUFReader(str(path))
    except Exception as e:  # gguf raises ValueError/struct errors for a corrupt header
        raise CorruptFileError(f"{path} is not a readable GGUF file ({type(e).__name__}: {str(e)[:120]})",
                               "re-download or re-convert it") from None


def _meta(reader) -> dict[str, Any]:
    out = {}
    for key, field in reader.fields.items():
        if key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type"):
            continue
        try:
            out[key] = field.contents()
        except Exception:  # an array type gguf cannot decode: not needed by seqedge
            continue
    return out


# --- architectures: GGUF metadata -> HF config, GGUF tensor names -> HF names -------------------------


@dataclass(frozen=True)
class GGUFArch:
    model_type: str  # the HF model_type (seqedge.ingest.hf.ARCHITECTURES)
    config: dict[str, str]  # HF config key -> GGUF key (with {a} for the architecture prefix)
    tensors: dict[str, str]  # GGUF name (with {i} for the block) -> HF name
    permute_qk: bool = False  # llama.cpp stores Llama's q/k rows permuted for its interleaved RoPE


_ATTN = {
    "token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    **{f"blk.{{i}}.attn_{g}.{w}": f"model.layers.{{i}}.self_attn.{h}_proj.{w}"
       for g, h in (("q", "q"), ("k", "k"), ("v", "v"), ("output", "o")) for w in ("weight", "bias")},
    **{f"blk.{{i}}.ffn_{g}.weight": f"model.layers.{{i}}.mlp.{g}_proj.weight" for g in ("gate", "up", "down")},
    "blk.{i}.attn_q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
    "blk.{i}.attn_k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight",
}
_ATTN_CONFIG = {
    "hidden_size": "{a}.embedding_length", "num_hidden_layers": "{a}.block_count",
    "intermediate_size": "{a}.feed_forward_length", "num_attention_heads": "{a}.attention.head_count",
    "num_key_value_heads": "{a}.attention.head_count_kv", "rope_theta": "{a}.rope.freq_base",
    "rms_norm_eps": "{a}.attention.layer_norm_rms_epsilon", "max_position_embeddings": "{a}.context_length",
    "head_dim": "{a}.attention.key_length",
}
ARCHS: Registry[GGUFArch] = Registry("GGUF architecture")
ARCHS.add("llama", GGUFArch("llama", _ATTN_CONFIG, _ATTN, permute_qk=True))
ARCHS.add("qwen2", GGUFArch("qwen2", _ATTN_CONFIG, _ATTN))
ARCHS.add("qwen3", GGUFArch("qwen3", _ATTN_CONFIG, _ATTN))
ARCHS.add("mamba", GGUFArch("mamba", {
    "hidden_size": "{a}.embedding_length", "num_hidden_layers": "{a}.block_count", "state_size": "{a}.ssm.state_size",
    "conv_kernel": "{a}.ssm.conv_kernel", "time_step_rank": "{a}.ssm.time_step_rank",
    "layer_norm_epsilon": "{a}.attention.layer_norm_rms_epsilon", "intermediate_size": "{a}.ssm.inner_size",
}, {
    "token_embd.weight": "backbone.embeddings.weight", "output_norm.weight": "backbone.norm_f.weight",
    "output.weight": "lm_head.weight", "blk.{i}.attn_norm.weight": "backbone.layers.{i}.norm.weight",
    **{f"blk.{{i}}.ssm_{g}.{w}": f"backbone.layers.{{i}}.mixer.{h}.{w}"
       for g, h in (("in", "in_proj"), ("x", "x_proj"), ("dt", "dt_proj"), ("out", "out_proj"), ("conv1d", "conv1d"))
       for w in ("weight", "bias")},
    "blk.{i}.ssm_a": "backbone.layers.{i}.mixer.A_log", "blk.{i}.ssm_d": "backbone.layers.{i}.mixer.D",
}))


def _hf_name(arch: GGUFArch, name: str) -> str | None:
    parts = name.split(".")
    if len(parts) > 2 and parts[0] == "blk" and parts[1].isdigit():
        key, i = ".".join(["blk", "{i}", *parts[2:]]), parts[1]
        hf = arch.tensors.get(key)
        return hf.replace("{i}", i) if hf else None
    return arch.tensors.get(name)


def _unpermute(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo convert_hf_to_gguf's `permute` of Llama's q/k rows (halves -> interleaved pairs per head)."""
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _dequantize(t) -> torch.Tensor:
    from gguf import GGMLQuantizationType, quants

    shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # GGML lists the fastest dim first
    if t.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
        data = np.asarray(t.data, dtype=np.float32)
    else:
        try:
            data = quants.dequantize(t.data, t.tensor_type)
        except NotImplementedError:
            raise UnsupportedError(f"GGUF tensor {t.name} is {t.tensor_type.name}, which the gguf package cannot "
                                   "dequantize", "re-quantize the file to Q8_0/Q4_0/Q4_1/F16") from None
    return torch.from_numpy(np.array(data.reshape(shape), dtype=np.float32))  # a writable copy


# architecture keys that need no mapping (derived, or checked in _check_metadata)
_KNOWN = {"vocab_size", "rope.dimension_count", "attention.value_length", "rope.scaling.type", "rope.scaling.factor",
          "rope.scaling.original_context_length", "ssm.dt_b_c_rms"}


def _check_metadata(path: Path, arch: GGUFArch, meta: dict[str, Any], cfg: dict[str, Any]) -> None:
    """Every `<arch>.*` key either maps to the config or is refused by name (e.g. `llama.expert_count`: a
    Mixtral-style MoE stored under the llama architecture); RoPE details seqedge cannot honour are refused."""
    a = meta["general.architecture"]
    mapped = {g.format(a=a) for g in arch.config.values()} | {f"{a}.{k}" for k in _KNOWN}
    for key in sorted(k for k in meta if k.startswith(f"{a}.") and k not in mapped):
        raise UnsupportedError(f"{path}: GGUF key {key}={meta[key]!r} is not supported by seqedge's "
                               f"{arch.model_type} family", "export from the model's Hugging Face folder, or report it")
    if meta.get(f"{a}.ssm.dt_b_c_rms"):
        raise UnsupportedError(f"{path}: GGUF key {a}.ssm.dt_b_c_rms (Falcon-Mamba's extra norms) is not supported",
                               "report the model")
    heads = cfg.get("num_attention_heads")
    head_dim = cfg.get("head_dim") or (cfg["hidden_size"] // heads if heads else None)
    for key in ("rope.dimension_count", "attention.value_length"):
        if head_dim and meta.get(f"{a}.{key}", head_dim) != head_dim:
            raise UnsupportedError(f"{path}: GGUF key {a}.{key}={meta[f'{a}.{key}']} differs from the head size "
                                   f"{head_dim} (partial rotary or uneven heads)", "report the model")
    scaling = meta.get(f"{a}.rope.scaling.type", "none")
    if scaling == "linear":
        cfg["rope_scaling"] = {"rope_type": "linear", "factor": float(meta.get(f"{a}.rope.scaling.factor", 1.0))}
    elif scaling != "none":
        raise UnsupportedError(f"{path}: GGUF key {a}.rope.scaling.type={scaling!r} is not supported "
                               "(supported: none, linear)", "export from the model's Hugging Face folder")


def read_gguf(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(HF-style config, HF-named float32 state dict) of a GGUF file."""
    reader = _reader(path)
    meta = _meta(reader)
    name = meta.get("general.architecture")
    arch = ARCHS.get(name) if isinstance(name, str) else None
    if arch is None:
        raise UnsupportedError(f"{path}: GGUF architecture {name!r} has no seqedge family",
                               f"supported: {', '.join(ARCHS.names())}")
    a = name
    cfg: dict[str, Any] = {"model_type": arch.model_type}
    for hf_key, g_key in arch.config.items():
        if g_key.format(a=a) in meta:
            cfg[hf_key] = meta[g_key.format(a=a)]
    _check_metadata(path, arch, meta, cfg)
    embed = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    if embed is None:
        raise CorruptFileError(f"{path} has no token_embd.weight", "re-convert the model")
    cfg["vocab_size"] = int(meta.get(f"{a}.vocab_size") or embed.shape.tolist()[-1])
    names = {t.name for t in reader.tensors}
    cfg["tie_word_embeddings"] = "output.weight" not in names
    if arch.model_type in ("llama", "qwen2", "qwen3") and cfg.get("head_dim") == cfg["hidden_size"] // cfg[
            "num_attention_heads"]:
        cfg.pop("head_dim")
    if arch.model_type == "qwen2":
        cfg["use_sliding_window"] = False
    sd: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        hf = _hf_name(arch, t.name)
        if hf is None:
            if t.name.startswith("rope_freqs"):
                raise UnsupportedError(f"{path}: tensor {t.name} (rope frequency factors) is not supported",
                                       "use a GGUF without rope scaling factors")
            continue  # e.g. llama.cpp's own metadata tensors
        w = _dequantize(t)
        if arch.permute_qk and hf.endswith(("q_proj.weight", "k_proj.weight")):
            heads = cfg["num_attention_heads"] if hf.endswith("q_proj.weight") else cfg.get(
                "num_key_value_heads", cfg["num_attention_heads"])
            w = _unpermute(w, heads)
        if hf.endswith("A_log"):  # llama.cpp stores A = -exp(A_log)
            w = torch.log(-w)
        if hf.endswith("conv1d.weight") and w.dim() == 2:
            w = w.unsqueeze(1)  # (D, K) -> (D, 1, K)
        sd[hf] = w
    return cfg, sd


def tensor_types(path: Path) -> dict[str, int]:
    return dict(Counter(t.tensor_type.name for t in _reader(Path(path)).tensors))


def load_gguf(path: Path | str, max_seq_len: int | None = None):
    """The seqedge model of a GGUF file, weights dequantized to float32."""
    from seqedge.checkpoint import load_weights
    from seqedge.ingest.hf import ARCHITECTURES
    from seqedge.models import config_from_dict, model_from_config

    path = Path(path)
    cfg, sd = read_gguf(path)
    config = config_from_dict(ARCHITECTURES[cfg["model_type"]].convert(cfg, max_seq_len, where=str(path)))
    model = model_from_config(config)
    load_weights(model, sd, path)
    return model.eval()


# --- tokenizer ---------------------------------------------------------------------------------------

_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
          r"\s+(?!\S)|\s+")
_LLAMA3 = _QWEN2.replace(r"|\p{N}|", r"|\p{N}{1,3}|")


def _pre_tokenizer(pre: str):
    from tokenizers import Regex, pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    split = lambda rx: pre_tokenizers.Sequence([  # noqa: E731
        pre_tokenizers.Split(Regex(rx), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                                       use_regex=False)])
    table = {
        "default": lambda: byte_level, "gpt-2": lambda: byte_level, "gpt2": lambda: byte_level,
        "smollm": lambda: pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level]),
        "qwen2": lambda: split(_QWEN2), "llama-bpe": lambda: split(_LLAMA3), "llama3": lambda: split(_LLAMA3),
    }
    if pre not in table:
        raise UnsupportedError(f"GGUF tokenizer pre-tokenizer {pre!r} is not known to seqedge",
                               f"known: {', '.join(table)}")
    return table[pre]()


def build_tokenizer(path: Path, out: Path) -> None:
    """Write tokenizer.json, tokenizer_config.json and generation_config.json for a GGUF's tokenizer."""
    from tokenizers import AddedToken, Tokenizer, decoders, models

    reader = _reader(path)
    meta = _meta(reader)
    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise UnsupportedError(f"{path}: GGUF tokenizer model {kind!r} is not supported (seqedge rebuilds BPE "
                               "'gpt2' tokenizers)", "export from the model's Hugging Face folder instead")
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    merges = reader.fields["tokenizer.ggml.merges"].contents()
    types = reader.fields["tokenizer.ggml.token_type"].contents() if "tokenizer.ggml.token_type" in reader.fields \
        else [1] * len(tokens)
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab, [tuple(m.split(" ", 1)) for m in merges], fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = _pre_tokenizer(str(meta.get("tokenizer.ggml.pre", "default")))
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types)
                            if ty == 3])  # CONTROL tokens: <|im_start|>, <|endoftext|>, ...
    tok.save(str(out / "tokenizer.json"))
    text = lambda key: tokens[meta[key]] if isinstance(meta.get(key), int) and meta[key] < len(tokens) else None  # noqa: E731
    config = {"bos_token": text("tokenizer.ggml.bos_token_id"), "eos_token": text("tokenizer.ggml.eos_token_id"),
              "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False))}
    if isinstance(meta.get("tokenizer.chat_template"), str):
        config["chat_template"] = meta["tokenizer.chat_template"]
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    gen = {k: meta[f"tokenizer.ggml.{k}"] for k in ("bos_token_id", "eos_token_id")
           if isinstance(meta.get(f"tokenizer.ggml.{k}"), int)}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2))


def tokenizer_folder(path: Path | str) -> Path:
    """A folder with the GGUF's tokenizer rebuilt (cached by the file's sha256 under ~/.cache/seqedge/gguf)."""
    from seqedge.fsutil import atomic_dir, cache_dir, sha256_file

    path = Path(path)
    folder = cache_dir("gguf") / sha256_file(path)[:32]
    if not (folder / "tokenizer.json").is_file():
        with atomic_dir(folder, force=True) as tmp:
            build_tokenizer(path, tmp)
    return folder
