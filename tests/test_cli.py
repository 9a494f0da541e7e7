"""The CLI through typer's CliRunner: real training, real files, one clear message per bad input."""

import json
import textwrap

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from seqedge.cli.app import app
from seqedge.models import build_model

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_clear_error(result, *needles):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.output.startswith("error: "), result.output
    for needle in needles:
        assert needle in result.output, result.output


def test_train_then_generate(tmp_path):
    out = tmp_path / "ck"
    r = run("train", "--family", "lstm", "--preset", "tiny", "--steps", "3", "--batch-size", "4",
            "--seq-len", "32", "--out", out)
    assert r.exit_code == 0, r.output
    assert "held-out bits per byte" in r.output
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "train_report.json"}
    g = run("generate", out, "--prompt", "import ", "--max-new-tokens", "10")
    assert g.exit_code == 0, g.output
    assert g.output.startswith("import ")


def test_train_on_user_text(tmp_path):
    (tmp_path / "notes.txt").write_text("hello world, " * 400)
    r = run("train", "--family", "gru", "--preset", "tiny", "--steps", "2", "--batch-size", "2", "--seq-len", "32",
            "--data", tmp_path / "notes.txt", "--out", tmp_path / "ck")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("args,needles", [
    (["--family", "rwkv"], ["unknown model family 'rwkv'", "transformer, mamba, lstm, gru"]),
    (["--preset", "huge"], ["unknown preset 'huge'", "tiny, small"]),
    (["--steps", "0"], ["--steps must be positive"]),
    (["--steps", "-3"], ["--steps must be positive"]),
    (["--minutes", "0"], ["--minutes must be positive"]),
])
def test_train_bad_arguments(tmp_path, args, needles):
    r = run("train", "--out", tmp_path / "ck", *args)
    assert_one_clear_error(r, *needles)
    assert not (tmp_path / "ck").exists()


def test_train_empty_corpus_leaves_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run("train", "--preset", "tiny", "--steps", "1", "--data", tmp_path / "empty", "--out", tmp_path / "ck")
    assert_one_clear_error(r, "holds no readable text")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no temp folder either


def test_train_refuses_existing_output(tmp_path):
    (tmp_path / "ck").mkdir()
    r = run("train", "--preset", "tiny", "--steps", "1", "--out", tmp_path / "ck")
    assert_one_clear_error(r, "already exists", "--force")


def test_generate_missing_path(tmp_path):
    assert_one_clear_error(run("generate", tmp_path / "nothing"), "does not exist", str(tmp_path / "nothing"))


@pytest.mark.parametrize("damage,needle", [
    ("truncate", "corrupt or truncated"),
    ("garbage", "corrupt or truncated"),
    ("delete", "does not exist"),
])
def test_generate_corrupt_checkpoint(tiny_checkpoints, tmp_path, damage, needle):
    import shutil

    ck = tmp_path / "ck"
    shutil.copytree(tiny_checkpoints["transformer"], ck)
    weights = ck / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "garbage":
        weights.write_bytes(b"\x00garbage" * 10)
    else:
        weights.unlink()
    assert_one_clear_error(run("generate", ck), needle, "model.safetensors")


def test_generate_bad_config(tiny_checkpoints, tmp_path):
    import shutil

    ck = tmp_path / "ck"
    shutil.copytree(tiny_checkpoints["gru"], ck)
    (ck / "config.json").write_text("{not json")
    assert_one_clear_error(run("generate", ck), "not valid JSON", "config.json")
    (ck / "config.json").write_text('{"family": "wavenet"}')
    assert_one_clear_error(run("generate", ck), "unknown model family 'wavenet'")


def test_executorch_prefill_longer_than_the_kv_cache_is_refused_before_tracing(tmp_path):
    positions = build_model("transformer", "tiny").max_seq_len
    r = run("export", "--family", "transformer", "--preset", "tiny", "--format", "executorch",
            "--max-len", positions + 1, "--out", tmp_path / "art")
    assert_one_clear_error(r, f"--max-len {positions + 1} is longer than the model's {positions} positions",
                           f"--max-len {positions} or less")
    assert not (tmp_path / "art").exists()


def test_an_unknown_kv_cache_type_is_refused(tmp_path):
    r = run("export", "--family", "transformer", "--preset", "tiny", "--kv-cache", "int8", "--out", tmp_path / "art")
    assert_one_clear_error(r, "unknown --kv-cache 'int8'", "valid: ")
    assert not (tmp_path / "art").exists()


def test_debug_env_shows_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQEDGE_DEBUG", "1")
    r = run("generate", tmp_path / "nothing")
    assert r.exit_code != 0 and r.exception is not None and not isinstance(r.exception, SystemExit)


USER_MODULE = textwrap.dedent('''
    from seqedge.models import build_model

    def build():
        return build_model("gru", "tiny")

    def not_a_model():
        return object()
''')


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_bring_your_own_model(tmp_path, monkeypatch, fmt):
    (tmp_path / "my_models.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(5)
    sd = build_model("gru", "tiny").state_dict()
    weights = tmp_path / f"w.{fmt}"
    save_file(sd, str(weights)) if fmt == "safetensors" else torch.save(sd, weights)
    r = run("generate", "--model", "my_models:build", "--checkpoint", weights, "--max-new-tokens", "5")
    assert r.exit_code == 0, r.output


def test_an_artifact_never_imports_the_code_it_names(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(5)
    weights = tmp_path / "w.safetensors"
    save_file(build_model("gru", "tiny").state_dict(), str(weights))
    art = tmp_path / "art"
    r = run("export", "--model", "my_models:build", "--checkpoint", weights, "--out", art)
    assert r.exit_code == 0, r.output
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["source"]["model"] == "my_models:build"
    # verify re-runs parity only against code the user names on the command line
    assert run("verify", art, "--model", "my_models:build", "--checkpoint", weights, "--steps", "4").exit_code == 0
    assert_one_clear_error(run("verify", art, "--steps", "4"), "does not import", "--model my_models:build")
    manifest["source"]["model"] = "os:abort"  # a planted artifact: would abort the process if imported
    (art / "manifest.json").write_text(json.dumps(manifest))
    assert_one_clear_error(run("verify", art, "--steps", "4"), "does not import", "'os:abort'")


def test_bring_your_own_model_errors(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert_one_clear_error(run("generate", "--model", "my_models"), "package.module:factory")
    assert_one_clear_error(run("generate", "--model", "no_such_mod:build"), "cannot import")
    assert_one_clear_error(run("generate", "--model", "my_models:not_a_model"), "init_state")
    # a pickle with code in it is refused by weights_only=True
    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "f": build_model}, evil)
    assert_one_clear_error(run("generate", "--model", "my_models:build", "--checkpoint", evil), "cannot be loaded safely")
    # right format, wrong weights
    save_file({"nope": torch.zeros(2)}, str(tmp_path / "w.safetensors"))
    assert_one_clear_error(run("generate", "--model", "my_models:build", "--checkpoint", tmp_path / "w.safetensors"),
                           "do not match the model")
