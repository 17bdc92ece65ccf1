"""Shared fixtures: tiny random models, and the S3 server plugin (tests/s3_server.py)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytest_plugins = ["tests.s3_server"]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """Randomly initialised tiny segmenter + recogniser checkpoints (same code paths as real ones)."""
    from models.checkpoints import make_tiny_models

    return make_tiny_models(tmp_path_factory.mktemp("tiny-models"))


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
