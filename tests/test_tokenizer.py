"""Tokenizers end to end: a byte-level BPE trained here on local text, shipped with a random-weight HF
checkpoint, copied into the artifact (listed and hashed), used by `generate --prompt/--chat`, stopping at
EOS; compared with transformers' own tokenizer and chat template."""

import json

import pytest
import torch
from typer.testing import CliRunner

transformers = pytest.importorskip("transformers")

from conftest import train_tokenizer  # noqa: E402

from seqedge.checkpoint import load_checkpoint  # noqa: E402
from seqedge.cli.app import app  # noqa: E402
from seqedge.errors import BadInputError, CorruptFileError  # noqa: E402
from seqedge.exporters import ExportPlan, export  # noqa: E402
from seqedge.exporters.artifact import read_manifest  # noqa: E402
from seqedge.fsutil import sha256_file  # noqa: E402
from seqedge.generate import generate_ids  # noqa: E402
from seqedge.tokenizer import HFTokenizer, load_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A random-weight Llama written by transformers, with a tokenizer of its vocabulary."""
    folder = tmp_path_factory.mktemp("hf") / "m"
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    model.save_pretrained(folder)
    train_tokenizer(folder, 320)
    return folder


def hf_tokenizer(folder):
    return transformers.AutoTokenizer.from_pretrained(folder)


def test_encode_decode_and_chat_match_transformers(hf_folder):
    ours, theirs = load_tokenizer(hf_folder), hf_tokenizer(hf_folder)
    text = "def wrap(text, width=70):\n    return text.split()"
    assert ours.encode(text) == theirs.encode(text, add_special_tokens=True)
    assert ours.decode(ours.encode(text)) == text
    assert ours.eos_ids == (theirs.convert_tokens_to_ids("<|im_end|>"),)
    want = theirs.apply_chat_template([{"role": "user", "content": "What is 2+2?"}], add_generation_prompt=True,
                                      tokenize=True)
    assert ours.chat("What is 2+2?") == list(want)


@pytest.fixture(scope="module")
def artifact(hf_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("art") / "a"
    export(load_checkpoint(hf_folder, max_seq_len=128),
           ExportPlan(out=out, verify_steps=8, tokenizer_dir=hf_folder,
                      source={"kind": "checkpoint", "path": str(hf_folder), "max_seq_len": 128}))
    return out


def test_tokenizer_travels_into_the_artifact_listed_and_hashed(artifact, hf_folder):
    m = read_manifest(artifact)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert m["files"][name] == sha256_file(hf_folder / name) == sha256_file(artifact / name)
    assert m["tokenizer"]["kind"] == "hf" and m["tokenizer"]["chat_template"] is True
    assert m["tokenizer"]["eos_ids"] == list(load_tokenizer(hf_folder).eos_ids)
    shown = CliRunner().invoke(app, ["inspect", str(artifact)], terminal_width=200)
    assert shown.exit_code == 0 and f"EOS {m['tokenizer']['eos_ids']} · chat template yes" in shown.output, shown.output


def test_generate_prompt_and_chat_through_the_artifact(artifact, hf_folder):
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_folder).eval()
    tok = hf_tokenizer(hf_folder)
    ids = tok.encode("def wrap(")
    with torch.no_grad():
        want = hf.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, pad_token_id=0,
                           eos_token_id=tok.eos_token_id)[0, len(ids):].tolist()
    want = [i for i in want if i != tok.eos_token_id]
    r = CliRunner().invoke(app, ["generate", str(artifact), "--prompt", "def wrap(", "--max-new-tokens", "12"])
    assert r.exit_code == 0, r.output
    assert r.output == "def wrap(" + tok.decode(want, skip_special_tokens=True) + "\n"
    c = CliRunner().invoke(app, ["generate", str(artifact), "--chat", "--prompt", "hi", "--max-new-tokens", "5"])
    assert c.exit_code == 0 and "<|im_start|>" not in c.output, c.output


def test_generation_stops_at_eos(hf_folder, tmp_path):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(hf_folder, folder)
    model, tok = load_checkpoint(folder, max_seq_len=64), load_tokenizer(folder)
    first = generate_ids(model, tok.encode("def "), 1)[0]
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [first]}))
    tok = load_tokenizer(folder)
    assert first in tok.eos_ids and generate_ids(model, tok.encode("def "), 20, eos_ids=tok.eos_ids) == []


def test_tokenizer_larger_than_the_vocabulary_is_refused(hf_folder, tmp_path):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(hf_folder, folder)
    train_tokenizer(folder, 400)
    with pytest.raises(BadInputError, match="has 400 tokens but the model's vocabulary is 320"):
        load_checkpoint(folder)


def test_chat_template_runs_in_a_sandbox(hf_folder, tmp_path):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(hf_folder, folder)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["chat_template"] = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(CorruptFileError, match="cannot be rendered"):
        HFTokenizer(folder).chat("hi")
