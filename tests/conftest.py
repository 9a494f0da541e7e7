import json
import os
import sysconfig
from pathlib import Path

import pytest
import torch

from seqedge.checkpoint import save_checkpoint
from seqedge.data import Corpus, load_corpus
from seqedge.models import FAMILIES, build_model

torch.set_num_threads(min(2, os.cpu_count() or 1))

FAMILY_NAMES = FAMILIES.names()


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    return load_corpus()


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """An untrained-but-seeded tiny checkpoint per family, written with the real writer."""
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for fam in FAMILY_NAMES:
        torch.manual_seed(0)
        out[fam] = save_checkpoint(build_model(fam, "tiny"), root / fam)
    return out


@pytest.fixture(scope="session")
def trained(corpus):
    """Tiny models trained briefly: their predictions are peaked enough for accuracy to mean something."""
    from seqedge.train import TrainPlan, train

    out = {}
    for fam in ("transformer", "mamba", "lstm"):
        plan = TrainPlan(family=fam, preset="tiny", steps=60, batch_size=8, seq_len=64, eval_windows=4)
        out[fam] = train(plan, corpus=corpus)[0].eval()
    return out


class TrainedExports:
    """The trained tiny models exported once per (family, format, recipe) for every test that needs one."""

    def __init__(self, trained, root: Path):
        self.trained, self.root, self.done = trained, root, {}

    def get(self, fam: str, fmt: str, recipe: str, verify: bool = True) -> tuple[Path, dict]:
        """verify=False: the program only (no parity or accuracy report), unless a verified one is here."""
        from seqedge.exporters import ExportPlan, export

        key = (fam, fmt, recipe, verify)
        if not verify and (fam, fmt, recipe, True) in self.done:
            return self.done[(fam, fmt, recipe, True)]
        if key not in self.done:
            out = self.root / f"{fam}-{fmt}-{recipe}{'' if verify else '-unverified'}"
            self.done[key] = (out, export(self.trained[fam], ExportPlan(out=out, format=fmt, quant=recipe, max_len=128,
                                                                        verify=verify, verify_steps=32, eval_bytes=256)))
        return self.done[key]


@pytest.fixture(scope="session")
def trained_exports(trained, tmp_path_factory) -> TrainedExports:
    return TrainedExports(trained, tmp_path_factory.mktemp("trained-exports"))


@pytest.fixture(scope="session")
def pte_artifacts(tmp_path_factory):
    """Every family's tiny preset (seeded random weights) as an fp32 ExecuTorch artifact, with its model."""
    from seqedge.exporters import ExportPlan, export

    root = tmp_path_factory.mktemp("pte")
    out = {}
    for fam in FAMILY_NAMES:
        torch.manual_seed(0)
        model = build_model(fam, "tiny").eval()
        export(model, ExportPlan(out=root / fam, format="executorch", max_len=128, verify_steps=64,
                                 source={"kind": "preset", "family": fam, "preset": "tiny", "seed": 0}))
        out[fam] = (root / fam, model)
    return out


@pytest.fixture(scope="session")
def native_runner(tmp_path_factory) -> Path:
    """seqedge_runner and its libraries, built once with cmake (seqedge build-runner); byte-level models only
    (the C++ tokenizer's first build takes minutes: test_native_tokenizer.py, a slow test, builds that one)."""
    from seqedge.native import build_runner

    return build_runner(tmp_path_factory.mktemp("runner"), tokenizers=False)


TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def best_kernel_isa() -> str:
    """The feature level seqedge's kernels run at here uncapped (vector_math.h isa_level): v4, v3 or baseline."""
    from seqedge.host import _cpuinfo

    flags = set(_cpuinfo().get("flags", "").split())
    v3 = {"avx2", "fma", "bmi2"} <= flags
    return "v4" if v3 and {"avx512f", "avx512vl", "avx512bw", "avx512dq"} <= flags else "v3" if v3 else "baseline"


def train_tokenizer(folder: Path, vocab: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    tok.train_from_iterator([(stdlib / n).read_text() for n in ("textwrap.py", "shlex.py", "fnmatch.py")], trainer)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "eos_token": "<|im_end|>", "bos_token": None, "chat_template": TEMPLATE,
        "tokenizer_class": "PreTrainedTokenizerFast"}))
