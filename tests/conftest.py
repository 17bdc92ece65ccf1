"""Shared fixtures: tiny random models, the S3 server plugin (tests/s3_server.py) and
tests/worker_helpers.py's one_word_models."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
pytest_plugins = ["tests.s3_server", "tests.worker_helpers"]  # worker_helpers: one_word_models
# Exported ONNX graphs are cached (models/onnx_backend.py): tests and their subprocesses share one
# throw-away cache instead of the user's.
os.environ.setdefault("HTR_CACHE_DIR", tempfile.mkdtemp(prefix="htr-test-cache-"))


# ---- the slow marker: `make test-fast` runs `pytest -m "not slow"` ---------------------------------

# Whole modules that start processes (htr, torchrun, tesseract, chromium), a moto or S3 server, train
# models or run benchmarks.
SLOW_MODULES = {
    "test_athena_query",
    "test_bad_input_tree",
    "test_bench",
    "test_bench_e2e",
    "test_bench_real",
    "test_exactly_once",
    "test_exit_status",
    "test_infra",
    "test_infra_lambda",
    "test_packaging",
    "test_peers",
    "test_reliability",
    "test_run_integration",
    "test_sagemaker_deploy",
    "test_sagemaker_launch",
    "test_sagemaker_process",
    "test_serve",
    "test_startup",
    "test_train",
    "test_visualise",
    "test_worker_s3",
    "test_line_head",
}
# Any other test that uses one of these: an S3 server, a child process, or models to run.
SLOW_FIXTURES = {
    "s3_endpoint",
    "s3_bucket",
    "fault_proxy",
    "htr_cmd",
    "subprocess_env",
    "tiny_models",
    "tiny_line_models",
    "constant_models",
    "one_word_models",
    "real_run",  # test_exports: `htr run` with the shipped models
}


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        if module in SLOW_MODULES or SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


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
        head: Any = seg.prob_head[-1]  # nn.Module attributes type as Tensor | Module
        classifier: Any = rec.classifier
        head.weight.zero_()
        head.bias.fill_(10.0)
        classifier.weight.zero_()
        classifier.bias.zero_()
        classifier.bias[CHARSET.index("x") + 1] = 10.0
    checkpoints.save(seg, "segmenter", seg_meta["arch"], seg_meta["config"], d)
    checkpoints.save(rec, "recogniser", rec_meta["arch"], rec_meta["config"], d)
    return d
