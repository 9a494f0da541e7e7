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
def native_runner(tmp_path_factory) -> Path:
    """seqedge_runner and its kernel libraries, built once with cmake (seqedge build-runner)."""
    from seqedge.native import build_runner

    return build_runner(tmp_path_factory.mktemp("runner"))


TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


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
