"""The native runner tokenizes real models in C++ (pytorch-tokenizers' HF tokenizer, built into
seqedge_runner from its source): the same prompt ids as the Rust `tokenizers` library, the same text as
`seqedge generate` for a prompt and a chat turn, stopping at the model's EOS. Runs when the source is in the
cache (`make fetch-tokenizers`); the first build compiles the tokenizer's dependencies (minutes)."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

transformers = pytest.importorskip("transformers")

from conftest import train_tokenizer  # noqa: E402

from seqedge.checkpoint import load_checkpoint  # noqa: E402
from seqedge.cli.app import app  # noqa: E402
from seqedge.exporters import ExportPlan, export  # noqa: E402
from seqedge.exporters.artifact import read_manifest  # noqa: E402
from seqedge.generate import generate_ids  # noqa: E402
from seqedge.native import FETCH_TOKENIZERS, build_runner, tokenizers_source  # noqa: E402
from seqedge.runtimes import open_artifact  # noqa: E402
from seqedge.tokenizer import load_tokenizer  # noqa: E402

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(tokenizers_source() is None, reason=f"no pytorch-tokenizers source: {FETCH_TOKENIZERS}")]

PROMPT = "def wrap(text, width=70):"
TEXTS = [PROMPT, "naïve café — 東京 ✓\n\n    return  x", "<|im_start|>user\nhi<|im_end|>"]


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    return build_runner(tmp_path_factory.mktemp("runner-tok"), tokenizers=True)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """A random-weight Llama with a byte-level BPE trained here, whose EOS is the fifth token greedy decoding
    of PROMPT reaches (so generation ends early), exported to ExecuTorch."""
    root = tmp_path_factory.mktemp("native-tok")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    transformers.AutoModelForCausalLM.from_config(cfg).eval().save_pretrained(root / "hf")
    train_tokenizer(root / "hf", 320)
    model, tok = load_checkpoint(root / "hf", max_seq_len=128), load_tokenizer(root / "hf")
    greedy = generate_ids(model, tok.encode(PROMPT), 12)
    eos = next(t for i, t in enumerate(greedy) if i >= 4 and t not in greedy[:i])
    (root / "hf" / "generation_config.json").write_text(json.dumps({"eos_token_id": eos}))
    export(model, ExportPlan(out=root / "art", format="executorch", verify_steps=8, tokenizer_dir=root / "hf",
                             source={"kind": "checkpoint", "path": str(root / "hf"), "max_seq_len": 128}))
    return root / "art"


def native(runner, artifact, *args):
    return subprocess.run([str(runner), str(artifact), *args], capture_output=True, check=True).stdout


@pytest.mark.parametrize("text", TEXTS)
def test_prompt_ids_match_the_rust_tokenizer(runner, artifact, text):
    ids = native(runner, artifact, "--prompt", text, "--encode").split()
    assert [int(i) for i in ids] == load_tokenizer(artifact).encode(text)


@pytest.mark.parametrize("args", [["--prompt", PROMPT], ["--chat", "--prompt", "What is 2+2?"], ["--prompt", TEXTS[1]]])
def test_runner_prints_what_seqedge_generate_prints(runner, artifact, args):
    py = CliRunner().invoke(app, ["generate", str(artifact), *args, "--max-new-tokens", "24"])
    assert py.exit_code == 0, py.output
    assert native(runner, artifact, *args, "--max-new-tokens", "24") == py.stdout_bytes


def test_generation_stops_at_eos(runner, artifact):
    tok, model = load_tokenizer(artifact), open_artifact(artifact)
    try:
        ids = generate_ids(model, tok.encode(PROMPT), 24, eos_ids=tok.eos_ids)
    finally:
        model.close()
    assert 4 <= len(ids) < 12  # cut at the EOS the fixture chose, well before --max-new-tokens
    assert native(runner, artifact, "--prompt", PROMPT, "--max-new-tokens", "24") == (PROMPT + tok.decode(ids) + "\n").encode()


def test_byte_only_runner_refuses_a_tokenizer_artifact(artifact, tmp_path):
    plain = build_runner(tmp_path / "plain", tokenizers=False)
    proc = subprocess.run([str(plain), str(artifact), "--prompt", "x"], capture_output=True, text=True)
    assert proc.returncode == 2 and "built without tokenizer support" in proc.stderr, proc.stderr
    shutil.rmtree(tmp_path / "plain")


# arm64 (the runner bundle cross-compiled with the tokenizer, run under qemu) and the Kotlin wrapper over the
# JNI bridge: a real tokenizer.json artifact gives the same ids and text there as the x86-64 runner.
from test_apps import ARM, kotlinc, need, scores  # noqa: E402


@pytest.fixture(scope="module")
def arm_runner(tmp_path_factory):
    need(shutil.which(ARM.compiler) is not None and shutil.which(ARM.emulator[0]) is not None,
         f"the aarch64 cross toolchain or qemu ({ARM.install})")
    return build_runner(tmp_path_factory.mktemp("arm-tok"), tokenizers=True, target=ARM.name)


def test_arm64_runner_tokenizes_and_generates_like_the_x86_one(runner, arm_runner, artifact, tmp_path):
    for text in TEXTS:
        assert (subprocess.run([*ARM.emulator, str(arm_runner), str(artifact), "--prompt", text, "--encode"],
                               capture_output=True, check=True).stdout == native(runner, artifact, "--prompt", text, "--encode"))
    for args in (["--prompt", PROMPT], ["--chat", "--prompt", "What is 2+2?"]):
        arm = subprocess.run([*ARM.emulator, str(arm_runner), str(artifact), *args, "--max-new-tokens", "24"],
                             capture_output=True, check=True).stdout
        assert arm == native(runner, artifact, *args, "--max-new-tokens", "24")
    a, b = scores(runner, artifact, tmp_path / "x86.f32", False), scores(arm_runner, artifact, tmp_path / "arm.f32", True)
    assert a.shape[0] >= 8 and abs(a - b).max() <= 1e-5


def test_kotlin_wrapper_generates_with_the_tokenizer(runner, artifact, tmp_path):
    from seqedge.apps import PackagePlan, package

    compiler, java = kotlinc(), shutil.which("java")
    need(compiler is not None and java is not None and (runner.parent / "libseqedge_jni.so").is_file(),
         "kotlinc (npm install -g kotlin-compiler) or a JDK")
    package(PackagePlan(artifact=artifact, target="android", out=tmp_path / "pkg"), say=lambda _: None)
    kt = sorted((tmp_path / "pkg/seqedge/src/main/kotlin/dev/seqedge").glob("*.kt"))
    jar = tmp_path / "app.jar"
    subprocess.run([compiler, *map(str, kt), str(Path(__file__).with_name("kotlin") / "Main.kt"), "-d", str(jar),
                    "-nowarn"], check=True, capture_output=True, timeout=600)
    stdlib = Path(compiler).resolve().parents[1] / "lib" / "kotlin-stdlib.jar"
    for text in (PROMPT, TEXTS[1]):
        proc = subprocess.run([java, f"-Djava.library.path={runner.parent}", "-cp", f"{jar}:{stdlib}", "MainKt",
                               str(artifact), text, "24"], capture_output=True, timeout=300)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-800:]
        assert proc.stdout == native(runner, artifact, "--prompt", text, "--max-new-tokens", "24")
        assert b"streamed-equals-result: true" in proc.stderr


SMOLLM2 = Path.home() / ".cache" / "seqedge" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.skipif(not SMOLLM2.is_file(), reason=f"{SMOLLM2} not present (make fetch-smollm2)")
def test_arm64_runner_with_a_real_models_tokenizer(runner, arm_runner, tmp_path):
    """SmolLM2-135M's own tokenizer (49152 tokens, its chat template and EOS, rebuilt from its GGUF) on a small
    random Llama of that vocabulary: the arm64 runner under qemu encodes and generates what the x86 one does."""
    from seqedge.ingest.gguf import tokenizer_folder

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    transformers.AutoModelForCausalLM.from_config(cfg).eval().save_pretrained(tmp_path / "hf")
    export(load_checkpoint(tmp_path / "hf", max_seq_len=128),
           ExportPlan(out=tmp_path / "art", format="executorch", verify=False, tokenizer_dir=tokenizer_folder(SMOLLM2)))
    art = tmp_path / "art"
    assert read_manifest(art)["tokenizer"]["kind"] == "hf"
    for args in (["--prompt", TEXTS[1], "--encode"], ["--chat", "--prompt", "What is the capital of France?", "--encode"],
                 ["--prompt", PROMPT, "--max-new-tokens", "16"], ["--chat", "--prompt", "Hi!", "--max-new-tokens", "16"]):
        arm = subprocess.run([*ARM.emulator, str(arm_runner), str(art), *args], capture_output=True, check=True).stdout
        assert arm == native(runner, art, *args), args
    ids = native(runner, art, "--prompt", TEXTS[1], "--encode").split()
    assert [int(i) for i in ids] == load_tokenizer(art).encode(TEXTS[1])
