import os
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
