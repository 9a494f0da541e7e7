"""Architectures seqedge has no family for, through optimum-onnx into a seqedge artifact: a random-weight
GPT-2 written by transformers, exported with its tokenizer, verified against transformers, generating what
transformers generates; refusals when the path cannot be taken."""

import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

transformers = pytest.importorskip("transformers")
pytest.importorskip("optimum.exporters.onnx")

from conftest import train_tokenizer  # noqa: E402

from seqedge.cli.app import app  # noqa: E402
from seqedge.exporters.artifact import read_manifest  # noqa: E402
from seqedge.generate import generate_ids  # noqa: E402
from seqedge.runtimes import open_artifact  # noqa: E402
from seqedge.tokenizer import load_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "gpt2"
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=320, n_embd=64, n_layer=2, n_head=4, n_positions=256)
    transformers.AutoModelForCausalLM.from_config(cfg).eval().save_pretrained(folder)
    train_tokenizer(folder, 320)
    return folder


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("quant", ["fp32", "int8"])
def test_unknown_architecture_exports_through_optimum(gpt2, tmp_path, quant):
    r = run("export", gpt2, "--quant", quant, "--out", tmp_path / "art")
    assert r.exit_code == 0, r.output
    m = read_manifest(tmp_path / "art")
    assert m["via"] == "optimum" and m["family"] == "gpt2" and m["parity"]["passed"]
    assert [s["name"] for s in m["state"]] == [f"past_key_values.{i}.{kv}" for i in range(2) for kv in ("key", "value")]
    assert "tokenizer.json" in m["files"] and m["tokenizer"]["kind"] == "hf"
    if quant == "int8":
        assert m["quant"]["weight_bytes"] < 0.5 * m["quant"]["weight_bytes_fp32"]
        return
    hf = transformers.AutoModelForCausalLM.from_pretrained(gpt2).eval()
    tok = load_tokenizer(tmp_path / "art")
    ids = tok.encode("def wrap(text):")
    with torch.no_grad():
        want = hf.generate(torch.tensor([ids]), max_new_tokens=24, min_new_tokens=24, do_sample=False,
                           pad_token_id=0)[0, len(ids):].tolist()
    runner = open_artifact(tmp_path / "art")
    try:
        assert generate_ids(runner, ids, 24) == want
    finally:
        runner.close()
    v = run("verify", tmp_path / "art", "--steps", "8")
    assert v.exit_code == 0, v.output


def test_optimum_path_refusals(gpt2, tmp_path):
    r = run("export", gpt2, "--format", "executorch", "--out", tmp_path / "a")
    assert r.exit_code == 2 and "--via optimum exports ONNX only" in r.output and not (tmp_path / "a").exists()
    r = run("export", gpt2, "--via", "seqedge", "--out", tmp_path / "a")
    assert r.exit_code == 2 and "architecture 'gpt2' (GPT2LMHeadModel) has no seqedge family" in r.output


def test_without_optimum_the_install_command_is_named(gpt2, tmp_path):
    code = ("import sys; sys.modules['optimum'] = None; sys.modules['optimum.exporters'] = None\n"
            "sys.modules['optimum.exporters.onnx'] = None\n"
            f"sys.argv = ['seqedge', 'export', {str(gpt2)!r}, '--out', {str(tmp_path / 'a')!r}]\n"
            "from seqedge.cli.app import main; main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "SEQEDGE_LOG_DIR": str(tmp_path / "logs")})
    assert r.returncode == 2, r.stderr
    assert "needs optimum-onnx" in r.stderr and "pip install -e '.[hf]'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "a").exists()
