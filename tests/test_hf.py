"""Local Hugging Face folders through seqedge's own families: random-weight checkpoints written by
transformers itself (each architecture, tied/untied, sharded, .bin, bf16, 4.x and 5.x config formats),
loaded without transformers, compared with transformers' own forward and greedy generation, exported to
both formats, and every config field seqedge cannot honour refused by name."""

import json
import os
import shutil

import pytest
import torch

transformers = pytest.importorskip("transformers")

from seqedge.checkpoint import load_checkpoint  # noqa: E402
from seqedge.errors import BadInputError, BadPathError, CorruptFileError, UnsupportedError  # noqa: E402
from seqedge.exporters import ExportPlan, export  # noqa: E402
from seqedge.generate import generate_ids  # noqa: E402
from seqedge.runtimes import open_artifact  # noqa: E402

VOCAB = 320
SMALL = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256)
ARCHS = {
    "llama": lambda: transformers.LlamaConfig(**SMALL, rope_theta=50000.0),
    "llama3-rope-tied": lambda: transformers.LlamaConfig(**SMALL, tie_word_embeddings=True, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64}),
    "llama-linear-rope-bias": lambda: transformers.LlamaConfig(**SMALL, attention_bias=True, mlp_bias=True,
                                                               rope_scaling={"rope_type": "linear", "factor": 2.0}),
    "mha-no-kv-heads": lambda: transformers.LlamaConfig(**{**SMALL, "num_key_value_heads": None}),
    "mistral": lambda: transformers.MistralConfig(**SMALL, sliding_window=4096),
    "qwen2": lambda: transformers.Qwen2Config(**SMALL, tie_word_embeddings=True),
    "qwen3": lambda: transformers.Qwen3Config(**SMALL, head_dim=24),
    "mixtral": lambda: transformers.MixtralConfig(**SMALL, num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": lambda: transformers.Qwen2MoeConfig(**SMALL, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=48,
                                                     shared_expert_intermediate_size=80, norm_topk_prob=True),
    "qwen3_moe": lambda: transformers.Qwen3MoeConfig(**SMALL, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=48,
                                                     norm_topk_prob=False),
    "mamba": lambda: transformers.MambaConfig(vocab_size=VOCAB, hidden_size=64, state_size=8, num_hidden_layers=2),
    "mamba2": lambda: transformers.Mamba2Config(vocab_size=VOCAB, hidden_size=64, state_size=8, num_hidden_layers=2,
                                                expand=2, head_dim=16, num_heads=8, n_groups=2, chunk_size=16),
}
PROMPT = [5, 77, 140, 9, 31, 250, 2, 300, 18]


def hf_model(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(ARCHS[arch]()).eval()
    with torch.no_grad():  # HF initialises some weights to constants (norms, biases): make every one count
        for name, p in model.named_parameters():
            if "A_log" not in name:
                p.add_(torch.randn_like(p) * 0.02)
    return model


def save(model, folder, **kw):
    model.save_pretrained(folder, **kw)
    return folder


def hf_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, -1]


def hf_greedy(model, ids, n):
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                             pad_token_id=0)
    return out[0, len(ids):].tolist()


def seqedge_logits(model, ids):
    with torch.no_grad():
        return model.prefill(torch.tensor([ids]), model.init_state(1))[0][0, -1]


@pytest.mark.parametrize("arch", list(ARCHS))
def test_logits_and_greedy_tokens_match_transformers(arch, tmp_path):
    hf = hf_model(arch)
    ours = load_checkpoint(save(hf, tmp_path / arch), max_seq_len=128)
    diff = (seqedge_logits(ours, PROMPT) - hf_logits(hf, PROMPT)).abs().max().item()
    assert diff <= 1e-4, f"{arch}: max |Δlogits| {diff:.2e}"
    assert generate_ids(ours, PROMPT, 32) == hf_greedy(hf, PROMPT, 32)


@pytest.mark.parametrize("layout", ["sharded", "bin", "bin-sharded", "bf16"])
def test_weight_layouts(layout, tmp_path):
    hf = hf_model("qwen2")
    if layout == "bf16":
        hf = hf.to(torch.bfloat16)
    kw = {"sharded": dict(max_shard_size="60KB"), "bin": dict(safe_serialization=False),
          "bin-sharded": dict(safe_serialization=False, max_shard_size="60KB"), "bf16": {}}[layout]
    folder = save(hf, tmp_path / "m", **kw)
    if "sharded" in layout:
        assert len([p for p in folder.iterdir() if p.name.startswith(("model-", "pytorch_model-"))]) > 1
    ours = load_checkpoint(folder, max_seq_len=64)
    hf = hf.float()
    diff = (seqedge_logits(ours, PROMPT) - hf_logits(hf, PROMPT)).abs().max().item()
    assert diff <= 1e-4, f"{layout}: {diff:.2e}"


def test_transformers5_rope_parameters_and_legacy_buffers(tmp_path):
    """transformers >= 5 writes rope_parameters instead of rope_theta/rope_scaling; old checkpoints carry
    rotary_emb.inv_freq buffers. Both read to the same model."""
    hf = hf_model("llama3-rope-tied")
    folder = save(hf, tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_theta": cfg.pop("rope_theta"), **cfg.pop("rope_scaling")}
    (folder / "config.json").write_text(json.dumps(cfg))
    from safetensors.torch import load_file, save_file

    sd = load_file(str(folder / "model.safetensors"))
    sd["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    ours = load_checkpoint(folder, max_seq_len=64)
    assert (seqedge_logits(ours, PROMPT) - hf_logits(hf, PROMPT)).abs().max().item() <= 1e-4


# ExecuTorch lowering is slow: qwen3 (explicit head_dim, q/k norms: the superset of the Llama family's
# options) and mamba there; the rope variants through ONNX. The PyTorch model both formats trace is the
# one test_logits_and_greedy_tokens_match_transformers checks for every architecture. SEQEDGE_FULL_MATRIX=1
# runs every architecture in both formats (~7 min on 2 cores).
EXPORTED = ([(a, f) for f in ("onnx", "executorch") for a in ARCHS] if os.environ.get("SEQEDGE_FULL_MATRIX") else
            [("llama3-rope-tied", "onnx"), ("qwen3", "onnx"), ("mixtral", "onnx"), ("qwen2_moe", "onnx"), ("qwen3_moe", "onnx"), ("mamba", "onnx"),
             ("mamba2", "onnx"), ("qwen3", "executorch"), ("qwen3_moe", "executorch"), ("mamba", "executorch")])


@pytest.mark.parametrize("arch,fmt", EXPORTED)
def test_exported_artifact_generates_what_transformers_generates(arch, fmt, tmp_path):
    hf = hf_model(arch)
    folder = save(hf, tmp_path / "hf")
    model = load_checkpoint(folder, max_seq_len=64)
    manifest = export(model, ExportPlan(out=tmp_path / "art", format=fmt, verify_steps=16,
                                        source={"kind": "checkpoint", "path": str(folder), "max_seq_len": 64}))
    assert manifest["parity"]["passed"]
    # float16 KV caches (the default where seqedge's attention kernel holds them) round each key and value once
    half = any(s["dtype"] == "float16" for s in manifest["state"] + manifest.get("held_state", []))
    runner = open_artifact(tmp_path / "art")
    try:
        assert (seqedge_logits(runner, PROMPT) - hf_logits(hf, PROMPT)).abs().max().item() <= (1e-3 if half else 1e-4)
        assert generate_ids(runner, PROMPT, 32) == hf_greedy(hf, PROMPT, 32)
    finally:
        runner.close()


def _refusal(tmp_path, edit, arch="llama"):
    folder = save(hf_model(arch), tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    edit(cfg, folder)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize("edit, error, needle", [
    (lambda c, f: c.update(hidden_act="gelu"), UnsupportedError, 'field hidden_act="gelu"'),
    (lambda c, f: c.update(rope_scaling={"rope_type": "yarn", "factor": 4.0}), UnsupportedError,
     "rope_type 'yarn'"),
    (lambda c, f: c.update(some_new_knob=3), UnsupportedError, "field some_new_knob=3 is not known"),
    (lambda c, f: c.update(quantization_config={"quant_method": "gptq"}), UnsupportedError, "field quantization_config"),
    (lambda c, f: c.update(rope_theta=-1), CorruptFileError, "rope_theta"),
    (lambda c, f: c.update(num_attention_heads=0), CorruptFileError, "num_attention_heads is 0"),
    (lambda c, f: c.update(model_type="gpt2", architectures=["GPT2LMHeadModel"]), UnsupportedError,
     "architecture 'gpt2' (GPT2LMHeadModel) has no seqedge family"),
])
def test_config_fields_seqedge_cannot_honour_are_refused_by_name(tmp_path, edit, error, needle):
    with pytest.raises(error, match=None) as e:
        load_checkpoint(_refusal(tmp_path, edit))
    assert needle in str(e.value), str(e.value)


@pytest.mark.parametrize("field, value", [("mlp_only_layers", [0]), ("decoder_sparse_step", 2)])
def test_qwen3_moe_with_dense_layers_among_the_mixtures_is_refused(tmp_path, field, value):
    with pytest.raises(UnsupportedError) as e:
        load_checkpoint(_refusal(tmp_path, lambda c, f: c.update({field: value}), arch="qwen3_moe"))
    assert f"field {field}={json.dumps(value)}" in str(e.value), str(e.value)


def test_sliding_window_shorter_than_the_cache_is_refused(tmp_path):
    folder = _refusal(tmp_path, lambda c, f: c.update(sliding_window=32), arch="mistral")
    with pytest.raises(UnsupportedError, match="field sliding_window=32"):
        load_checkpoint(folder, max_seq_len=64)
    assert load_checkpoint(folder, max_seq_len=32).config.max_seq_len == 32


def test_max_seq_len(tmp_path):
    folder = save(hf_model("llama"), tmp_path / "m")
    assert load_checkpoint(folder).config.max_seq_len == 256  # max_position_embeddings, under the 2048 default cap
    with pytest.raises(BadInputError, match="exceeds the model's max_position_embeddings"):
        load_checkpoint(folder, max_seq_len=1000)


def test_missing_shard_is_named(tmp_path):
    folder = save(hf_model("llama"), tmp_path / "m", max_shard_size="60KB")
    victim = sorted(folder.glob("model-*.safetensors"))[-1]
    victim.unlink()
    with pytest.raises(BadPathError, match=victim.name):
        load_checkpoint(folder)


def test_tied_checkpoint_with_a_different_head_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = save(hf_model("qwen2"), tmp_path / "m")
    sd = load_file(str(folder / "model.safetensors"))
    sd["lm_head.weight"] = torch.randn_like(sd["model.embed_tokens.weight"])
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CorruptFileError, match="tie_word_embeddings"):
        load_checkpoint(folder)


def test_hf_folder_needs_no_transformers(tmp_path):
    """seqedge's own loading reads JSON and safetensors only: run it where transformers cannot be imported."""
    import subprocess
    import sys

    folder = save(hf_model("qwen3"), tmp_path / "m")
    code = ("import sys; sys.modules['transformers'] = None\n"
            "from seqedge.checkpoint import load_checkpoint\n"
            f"m = load_checkpoint({str(folder)!r}, max_seq_len=32); print(type(m).__name__, m.config.qk_norm)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.split() == ["Transformer", "True"], r.stderr


def test_cli_bad_inputs_are_one_line_and_write_nothing(tmp_path):
    from typer.testing import CliRunner

    from seqedge.cli.app import app

    folder = _refusal(tmp_path, lambda c, f: c.update(hidden_act="relu"))
    r = CliRunner().invoke(app, ["export", str(folder), "--out", str(tmp_path / "art")])
    assert r.exit_code == 2 and r.output.startswith("error: ") and "hidden_act" in r.output, r.output
    assert not (tmp_path / "art").exists()
    shutil.rmtree(folder)
