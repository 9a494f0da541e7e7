"""llama.cpp GGUF files in: GGUFs written here from random-weight transformers models the way llama.cpp's
converter writes them (Llama's q/k rows permuted, Mamba's A stored as -exp(A_log), tied heads omitted),
F32 and Q8_0, with a BPE tokenizer; read back with seqedge and compared with transformers; exported and
generated through the artifact. A real SmolLM2 GGUF runs in the slow test when the file is present."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from conftest import TEMPLATE, train_tokenizer  # noqa: E402

from seqedge.checkpoint import load_checkpoint  # noqa: E402
from seqedge.errors import UnsupportedError  # noqa: E402
from seqedge.exporters import ExportPlan, export  # noqa: E402
from seqedge.generate import generate_ids  # noqa: E402
from seqedge.ingest.gguf import tensor_types, tokenizer_folder  # noqa: E402
from seqedge.loading import tokenizer_source  # noqa: E402
from seqedge.runtimes import open_artifact  # noqa: E402
from seqedge.tokenizer import load_tokenizer  # noqa: E402

VOCAB = 320
PROMPT = [5, 77, 140, 9, 31, 250, 2, 300, 18]


def permute(w: np.ndarray, heads: int) -> np.ndarray:  # convert_hf_to_gguf.LlamaModel.permute
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_llama(tied: bool):
    torch.manual_seed(1)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                   rope_theta=20000.0, rms_norm_eps=1e-5, tie_word_embeddings=tied)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def write_gguf(model, path: Path, qtype, tok_dir: Path | None = None) -> Path:
    G = gguf.GGMLQuantizationType
    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_freq_base(c.rope_theta)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)
    if tok_dir is not None:
        tj = json.loads((tok_dir / "tokenizer.json").read_text())
        vocab = sorted(tj["model"]["vocab"].items(), key=lambda kv: kv[1])
        special = {t["content"]: t["id"] for t in tj["added_tokens"]}
        tokens = [t for t, _ in vocab] + [f"[PAD{i}]" for i in range(len(vocab), c.vocab_size)]
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt-2")
        w.add_token_list(tokens)
        w.add_token_types([3 if t in special else 1 for t in tokens])
        w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]])
        w.add_eos_token_id(special["<|im_end|>"])
        w.add_chat_template(TEMPLATE)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        names.update({p + "input_layernorm.weight": f"blk.{i}.attn_norm.weight",
                      p + "post_attention_layernorm.weight": f"blk.{i}.ffn_norm.weight",
                      **{p + f"self_attn.{h}_proj.weight": f"blk.{i}.attn_{g}.weight"
                         for h, g in (("q", "q"), ("k", "k"), ("v", "v"), ("o", "output"))},
                      **{p + f"mlp.{g}_proj.weight": f"blk.{i}.ffn_{g}.weight" for g in ("gate", "up", "down")}})
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        a = t.float().numpy()
        if name.endswith("q_proj.weight"):
            a = permute(a, c.num_attention_heads)
        if name.endswith("k_proj.weight"):
            a = permute(a, c.num_key_value_heads)
        if a.ndim == 2 and qtype != G.F32:
            w.add_tensor(names[name], gguf.quants.quantize(a, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(names[name], np.ascontiguousarray(a, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def logits(model, ids):
    with torch.no_grad():
        out = model(torch.tensor([ids])).logits[0, -1] if hasattr(model, "generation_config") else \
            model.prefill(torch.tensor([ids]), model.init_state(1))[0][0, -1]
    return out


@pytest.mark.parametrize("tied", [False, True])
def test_f32_gguf_matches_transformers(tmp_path, tied):
    hf = hf_llama(tied)
    path = write_gguf(hf, tmp_path / "m.gguf", gguf.GGMLQuantizationType.F32)
    ours = load_checkpoint(path, max_seq_len=64)
    assert ours.config.tie_word_embeddings is tied
    assert (logits(ours, PROMPT) - logits(hf, PROMPT)).abs().max().item() <= 1e-4
    with torch.no_grad():
        want = hf.generate(torch.tensor([PROMPT]), max_new_tokens=32, min_new_tokens=32, do_sample=False,
                           pad_token_id=0)[0, len(PROMPT):].tolist()
    assert generate_ids(ours, PROMPT, 32) == want


def test_q8_gguf_is_dequantized(tmp_path):
    hf = hf_llama(False)
    path = write_gguf(hf, tmp_path / "m.gguf", gguf.GGMLQuantizationType.Q8_0)
    layers = hf.config.num_hidden_layers
    assert tensor_types(path) == {"Q8_0": 7 * layers + 2, "F32": 2 * layers + 1}  # matrices + embed/head; norms
    ours = load_checkpoint(path, max_seq_len=64)
    ref = logits(hf, PROMPT)
    err = (logits(ours, PROMPT) - ref).abs().max().item() / ref.abs().max().item()
    assert err <= 0.02, f"Q8_0 dequantized logits: relative error {err:.3g}"


@pytest.mark.parametrize("fmt", ["onnx", "executorch"])
def test_gguf_with_tokenizer_exports_and_generates(tmp_path, fmt):
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    train_tokenizer(tok_dir, VOCAB - 40)
    hf = hf_llama(True)
    path = write_gguf(hf, tmp_path / "m.gguf", gguf.GGMLQuantizationType.F32, tok_dir)
    os.environ["SEQEDGE_CACHE"] = str(tmp_path / "cache")
    try:
        rebuilt = tokenizer_source(path)
        assert rebuilt == tokenizer_folder(path) and str(rebuilt).startswith(str(tmp_path / "cache"))
        ours, theirs = load_tokenizer(rebuilt), load_tokenizer(tok_dir)
        text = "def fnmatch(name, pat):\n    return 42"
        assert ours.encode(text) == theirs.encode(text) and ours.decode(ours.encode(text)) == text
        assert ours.eos_ids == theirs.eos_ids and ours.chat("hi") == theirs.chat("hi")
        model = load_checkpoint(path, max_seq_len=64)
        m = export(model, ExportPlan(out=tmp_path / "art", format=fmt, verify_steps=8, tokenizer_dir=rebuilt,
                                     source={"kind": "checkpoint", "path": str(path), "max_seq_len": 64}))
    finally:
        del os.environ["SEQEDGE_CACHE"]
    assert m["parity"]["passed"] and "tokenizer.json" in m["files"] and m["tokenizer"]["eos_ids"] == list(ours.eos_ids)
    runner = open_artifact(tmp_path / "art")
    try:
        ids = ours.encode("def ")
        assert generate_ids(runner, ids, 16, eos_ids=ours.eos_ids) == generate_ids(model, ids, 16, eos_ids=ours.eos_ids)
    finally:
        runner.close()


def test_unmapped_gguf_keys_are_refused_by_name(tmp_path):
    """A Mixtral-style MoE stored under the llama architecture must not load as a dense Llama."""
    path = write_gguf(hf_llama(False), tmp_path / "m.gguf", gguf.GGMLQuantizationType.F32)
    reader_meta = gguf.GGUFReader(str(path))
    w = gguf.GGUFWriter(str(tmp_path / "moe.gguf"), "llama")
    for key, field in reader_meta.fields.items():
        if key.startswith("llama."):
            value = field.contents()
            w.add_key_value(key, value, field.types[0]) if not isinstance(value, list) else None
    w.add_uint32("llama.expert_count", 8)
    for t in reader_meta.tensors:
        w.add_tensor(t.name, np.array(t.data, dtype=np.float32).reshape([int(d) for d in reversed(t.shape.tolist())]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnsupportedError, match="GGUF key llama.expert_count=8 is not supported"):
        load_checkpoint(tmp_path / "moe.gguf")


def test_unsupported_gguf_architecture_is_named(tmp_path):
    w = gguf.GGUFWriter(str(tmp_path / "x.gguf"), "rwkv6")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnsupportedError, match="GGUF architecture 'rwkv6' has no seqedge family"):
        load_checkpoint(tmp_path / "x.gguf")


SMOLLM2 = Path(os.environ.get("SEQEDGE_SMOLLM2_GGUF", Path.home() / ".cache" / "seqedge" / "models" /
                              "SmolLM2-135M-Instruct.Q4_1.gguf"))


@pytest.mark.slow
@pytest.mark.skipif(not SMOLLM2.is_file(), reason=f"{SMOLLM2} not present (make fetch-smollm2)")
def test_real_smollm2_answers_through_its_artifact(tmp_path):
    """A real pretrained 134.5M Llama from llama.cpp's format, exported to ONNX with its tokenizer: the chat
    answer names Paris, from the artifact and from the GGUF itself."""
    from typer.testing import CliRunner

    from seqedge.cli.app import app

    r = CliRunner().invoke(app, ["export", str(SMOLLM2), "--format", "onnx", "--max-seq-len", "512",
                                 "--out", str(tmp_path / "onnx")])
    assert r.exit_code == 0, r.output
    answers = []
    for target in (tmp_path / "onnx", SMOLLM2):
        g = CliRunner().invoke(app, ["generate", str(target), "--chat", "--prompt", "What is the capital of France?",
                                     "--max-new-tokens", "12", "--max-seq-len", "512"] if target == SMOLLM2 else
                               ["generate", str(target), "--chat", "--prompt", "What is the capital of France?",
                                "--max-new-tokens", "12"])
        assert g.exit_code == 0 and "Paris" in g.output, g.output
        answers.append(g.output)
    assert answers[0] == answers[1]
