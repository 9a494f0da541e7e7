"""What a user sees when something fails inside seqedge or a library it drives: one line naming the stage,
the model and the op when known, a hint, the log holding the trace; exit 3 for seqedge's own failures,
2 for the user's; nothing left at --out; library noise kept out of the terminal."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from seqedge.diagnostics import internal_error, stage, where
from seqedge.errors import InternalError, UnsupportedError


def seqedge(*args, env=None, cwd=None):
    """The real command in a child process (main(): logging set up as for a user)."""
    return subprocess.run([sys.executable, "-m", "seqedge", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=600)


def assert_one_message(r, code, *needles):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    err = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr + r.stdout
    assert err[0].startswith("error: ") and len(err) == 2 and err[1].startswith("hint: "), r.stderr
    for needle in needles:
        assert needle in r.stderr, r.stderr
    return err


def log_named_in(hint: str):
    from pathlib import Path

    path = Path(hint.split("full trace in ")[1].split(";")[0])
    assert path.is_file(), hint
    return path.read_text()


@pytest.mark.parametrize("fmt, stage_name", [
    ("onnx", "torch.export"),
    ("onnx", "ONNX conversion"),
    ("onnx", "verification in onnx's runtime"),
    ("executorch", "ExecuTorch lowering"),
    ("executorch", "partitioning and delegation"),  # one of the lowering's own stages (lowering_stages.py)
])
def test_internal_failure_is_one_line_exit_3_and_leaves_nothing(tmp_path, fmt, stage_name):
    out = tmp_path / "art"
    r = seqedge("export", "--family", "mamba", "--preset", "tiny", "--format", fmt, "--out", out,
                env={"SEQEDGE_FAIL_STAGE": stage_name, "SEQEDGE_LOG_DIR": tmp_path / "logs"})
    err = assert_one_message(r, 3, f"error: {stage_name} failed for mamba/tiny", "SEQEDGE_DEBUG=1", "seqedge bug")
    log = log_named_in(err[1])
    assert "Traceback" in log and "injected failure" in log
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["logs"]  # no temporary folder either


def test_debug_shows_the_traceback_instead(tmp_path):
    r = seqedge("export", "--family", "mamba", "--preset", "tiny", "--out", tmp_path / "a",
                env={"SEQEDGE_FAIL_STAGE": "ONNX conversion", "SEQEDGE_DEBUG": "1", "SEQEDGE_LOG_DIR": tmp_path / "l"})
    assert r.returncode == 1 and "Traceback" in r.stderr and "injected failure" in r.stderr
    assert not (tmp_path / "a").exists()


def test_export_output_is_seqedges_own(tmp_path):
    """Library warnings (torchvision missing, FutureWarnings) go to the log, not the terminal."""
    logs = tmp_path / "logs"
    r = seqedge("export", "--family", "mamba", "--preset", "tiny", "--out", tmp_path / "a",
                env={"SEQEDGE_LOG_DIR": logs})
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr
    assert "exported" in r.stdout and "Warning" not in r.stdout and "torchvision" not in r.stdout
    assert all("WARNING" in line or line.startswith(" ") for f in logs.glob("*.log") for line in
               f.read_text().splitlines() if line.strip())


BAD_USER_MODEL = textwrap.dedent('''
    from seqedge.models import build_model


    def build():
        model = build_model("transformer", "tiny")
        inner = model.prefill

        def prefill(tokens, state, last_only=False):
            if tokens.sum() > 10**9:  # data-dependent Python control flow: torch.export cannot trace it
                tokens = tokens * 0
            return inner(tokens, state, last_only=last_only)

        model.prefill = prefill
        return model
''')


def test_users_model_that_cannot_be_traced_is_the_users_error(tmp_path):
    (tmp_path / "bad_models.py").write_text(BAD_USER_MODEL)
    out = tmp_path / "art"
    r = seqedge("export", "--model", "bad_models:build", "--out", out,
                env={"PYTHONPATH": tmp_path, "SEQEDGE_LOG_DIR": tmp_path / "logs"}, cwd=tmp_path)
    err = assert_one_message(r, 2, "error: torch.export failed for bad_models:build", "make it traceable")
    assert "seqedge bug" not in r.stderr
    assert "Traceback" in log_named_in(err[1])
    assert not out.exists()


def test_stage_keeps_seqedge_errors_and_wraps_the_rest(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQEDGE_LOG_DIR", str(tmp_path))
    with pytest.raises(UnsupportedError, match="already a message"):
        with stage("x"):
            raise UnsupportedError("already a message")
    with pytest.raises(InternalError) as e:
        with stage("ONNX conversion", "mamba/tiny", hint="try --ops portable"):
            torch.ops.seqedge.selective_scan.default("not a tensor")
    assert e.value.exit_code == 3 and e.value.stage == "ONNX conversion"
    assert e.value.message.startswith("ONNX conversion failed for mamba/tiny at seqedge::selective_scan")
    assert e.value.hint.startswith("try --ops portable") and e.value.log.is_file()


@pytest.mark.parametrize("text, found", [
    ("[ONNXRuntimeError] : 1 : FAIL : Node (/m/LinearAttention_3) Op (LinearAttention) bad shape",
     "/m/LinearAttention_3 LinearAttention"),
    ("while lowering com.microsoft.CausalConvWithState: too many values", "com.microsoft.CausalConvWithState"),
    ("Missing out variants: {'llama::custom_sdpa'}", "llama::custom_sdpa"),
    ("something else entirely", None),
])
def test_where_names_the_op_or_node(text, found):
    assert where(RuntimeError(text)) == found


def test_op_named_in_a_cause_is_found(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQEDGE_LOG_DIR", str(tmp_path))
    try:
        try:
            raise ValueError("seqedge::attention: shape mismatch")
        except ValueError as inner:
            raise RuntimeError("export failed") from inner
    except RuntimeError as e:
        assert internal_error("torch.export", e).message.endswith("at seqedge::attention: RuntimeError: export failed")
