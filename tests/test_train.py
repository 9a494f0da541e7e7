"""Training, corpora and checkpoints on real files."""

import json

import numpy as np
import pytest
import torch

from seqedge.checkpoint import load_checkpoint, save_checkpoint
from seqedge.data import load_corpus
from seqedge.errors import BadInputError, BadPathError
from seqedge.generate import generate
from seqedge.models import build_model
from seqedge.train import TrainPlan, bits_per_byte, train
from tests.conftest import FAMILY_NAMES


def test_default_corpus_is_split_by_file_deterministically(corpus):
    again = load_corpus()
    assert len(corpus.train) > 1_000_000 and len(corpus.held_out) > 100_000
    assert np.array_equal(corpus.held_out[:4096], again.held_out[:4096])
    # held out is roughly a tenth
    assert 0.05 < len(corpus.held_out) / (len(corpus.train) + len(corpus.held_out)) < 0.2


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_training_lowers_held_out_bits_per_byte(family, corpus):
    torch.manual_seed(0)
    untrained = bits_per_byte(build_model(family, "tiny"), corpus.held_out, windows=8, seq_len=64)
    plan = TrainPlan(family=family, preset="tiny", steps=40, batch_size=8, seq_len=64, eval_windows=8)
    model, report = train(plan, corpus=corpus)
    assert 7.5 < untrained < 8.5  # uniform over 256 bytes is 8 bits
    assert report["held_out_bits_per_byte"] < untrained - 1.0, (untrained, report)
    assert report["steps"] == 40 and report["seconds"] > 0


def test_checkpoint_round_trip_gives_identical_logits(tmp_path):
    torch.manual_seed(1)
    model = build_model("mamba", "tiny").eval()
    save_checkpoint(model, tmp_path / "ck", report={"steps": 0})
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["config.json", "model.safetensors",
                                                                   "train_report.json"]
    loaded = load_checkpoint(tmp_path / "ck")
    tokens = torch.randint(0, 256, (1, 12))
    with torch.no_grad():
        assert torch.equal(model(tokens), loaded(tokens))
    assert loaded.lm_head.weight is loaded.backbone.embeddings.weight  # tie survives
    assert json.loads((tmp_path / "ck" / "config.json").read_text())["family"] == "mamba"


def test_generate_is_deterministic_and_respects_length():
    torch.manual_seed(0)
    model = build_model("gru", "tiny").eval()
    a = generate(model, b"def ", max_new_tokens=17)
    assert a == generate(model, b"def ", max_new_tokens=17) and len(a) == 17
    assert len(generate(model, b"x", max_new_tokens=5, temperature=1.0, seed=3)) == 5


def test_generate_rejects_too_long_for_the_cache():
    model = build_model("transformer", "tiny")
    with pytest.raises(BadInputError, match="maximum sequence length 512"):
        generate(model, b"a" * 500, max_new_tokens=20)


def test_corpus_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="no readable text"):
        load_corpus([tmp_path / "empty"])
    with pytest.raises(BadPathError, match="does not exist"):
        load_corpus([tmp_path / "nope.txt"])
    (tmp_path / "small.txt").write_text("x" * 100)
    with pytest.raises(BadInputError, match="too small"):
        load_corpus([tmp_path / "small.txt"])


def test_single_file_corpus_holds_out_its_tail(tmp_path):
    text = "".join(f"line {i}\n" for i in range(2000)).encode()
    (tmp_path / "a.txt").write_bytes(text)
    c = load_corpus([tmp_path / "a.txt"])
    assert len(c.train) + len(c.held_out) == len(text)
    assert bytes(c.held_out) == text[len(c.train):]
