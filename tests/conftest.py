"""Shared fixtures: tiny random models, the S3 server plugin (tests/s3_server.py) and
tests/worker_helpers.py's one_word_models."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytest_plugins = ["tests.s3_server", "tests.worker_helpers"]  # worker_helpers: one_word_models
# Exported ONNX graphs are cached (models/onnx_backend.py): tests and their subprocesses share one
# throw-away cache instead of the user's.
os.environ.setdefault("HTR_CACHE_DIR", tempfile.mkdtemp(prefix="htr-test-cache-"))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """Randomly initialised tiny segmenter + recogniser checkpoints (same code paths as real ones)."""
    from models.checkpoints import make_tiny_models

    return make_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def tiny_line_models(tmp_path_factory) -> Path:
    """Like tiny_models, with a line recogniser (the shipped default's kind)."""
    from models.checkpoints import make_tiny_models

    return make_tiny_models(tmp_path_factory.mktemp("tiny-line-models"), lines=True)


@pytest.fixture(scope="session")
def htr_cmd() -> list[str]:
    """The `htr` command as a subprocess argv (works without the console script installed)."""
    return [sys.executable, "-m", "batch.cli"]


@pytest.fixture(scope="session")
def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"  # tiny models: thread start-up costs more than it saves
    return env


@pytest.fixture(scope="session")
def constant_models(tmp_path_factory, tiny_models) -> Path:
    """The tiny checkpoints with their last layers set to constants: the segmenter says "text"
    at every pixel (each page is one word box: the whole page) and the recogniser reads "x" at
    every frame. Not a model of anything: it makes every stage after the networks (boxes,
    scaling back to page pixels, crops, decoding, lines, JSON, Parquet) run with known results."""
    import torch

    from models import checkpoints
    from models.charset import CHARSET

    d = tmp_path_factory.mktemp("constant-models")
    seg, seg_meta = checkpoints.load(tiny_models, "segmenter")
    rec, rec_meta = checkpoints.load(tiny_models, "recogniser")
    with torch.no_grad():
        seg.prob_head[-1].weight.zero_()
        seg.prob_head[-1].bias.fill_(10.0)
        rec.classifier.weight.zero_()
        rec.classifier.bias.zero_()
        rec.classifier.bias[CHARSET.index("x") + 1] = 10.0
    checkpoints.save(seg, "segmenter", seg_meta["arch"], seg_meta["config"], d)
    checkpoints.save(rec, "recogniser", rec_meta["arch"], rec_meta["config"], d)
    return d
