"""Checkpoints: `<kind>.safetensors` (weights) + `<kind>.json` (architecture, config, charset,
version). Loading rebuilds the network from the JSON and refuses any other weight format,
so a checkpoint can never execute code.

torch (and the networks' modules) are imported by the functions that build or save a network:
read_meta, which `htr run` uses on a cached ONNX graph, needs neither.

Models layer: imports models, transforms and batch.core only (tests/test_layers.py). Used by the
pipeline, training and evaluation.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batch.core.errors import CheckpointError
from models.charset import ASCII_CHARSET, CHARSET

if TYPE_CHECKING:
    import torch

DEFAULT_DIR = Path(__file__).resolve().parent / "default"
KINDS = ("segmenter", "recogniser")


def _builder(kind: str):
    """models.segmenter or models.recogniser: their CONFIGS and build()."""
    from models import recogniser, segmenter

    return {"segmenter": segmenter, "recogniser": recogniser}[kind]


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def save(
    model: torch.nn.Module,
    kind: str,
    arch: str,
    config: dict[str, Any],
    out_dir: str | Path,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write weights + config; the version is the weights' content hash."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / f"{kind}.safetensors"
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights))
    meta = {
        "kind": kind,
        "arch": arch,
        "config": config,
        "version": _file_hash(weights),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    if kind == "recogniser":
        meta.setdefault("charset", CHARSET)
    (out_dir / f"{kind}.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False))
    return weights


def read_meta(model_dir: str | Path, kind: str) -> dict[str, Any]:
    path = Path(model_dir) / f"{kind}.json"
    if not path.is_file():
        raise CheckpointError(f"{path} not found (expected {kind}.json + {kind}.safetensors)")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e


def load(model_dir: str | Path, kind: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the network the JSON describes and load its safetensors weights (strict)."""
    from safetensors.torch import load_file

    if kind not in KINDS:
        raise CheckpointError(f"unknown model kind {kind!r}")
    meta = read_meta(model_dir, kind)
    weights = Path(model_dir) / f"{kind}.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{weights} not found; only .safetensors weights are loaded")
    if meta.get("version") and _file_hash(weights) != meta["version"]:
        raise CheckpointError(
            f"{weights} does not match the version in {kind}.json (weights replaced after saving?)"
        )
    builder = _builder(kind)
    try:
        if kind == "recogniser":
            model = builder.build(meta["arch"], meta["config"], meta.get("charset", ASCII_CHARSET))
        else:
            model = builder.build(meta["arch"], meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{kind}.json describes no buildable model: {e!r}") from e
    try:
        model.load_state_dict(load_file(str(weights)), strict=True)
    except Exception as e:
        raise CheckpointError(f"{weights} does not match its config: {e}") from e
    return model.eval(), meta


def make_tiny_models(out_dir: str | Path, seed: int = 0, lines: bool = False) -> Path:
    """Randomly initialised tiny models for tests: same code paths, milliseconds per page.
    lines: a line recogniser (reads whole text lines) instead of a word recogniser."""
    import torch

    torch.manual_seed(seed)
    for kind, arch in (("segmenter", "db_tiny"), ("recogniser", "crnn_line_tiny" if lines else "crnn_tiny")):
        cfg = dict(_builder(kind).CONFIGS[arch])
        save(_builder(kind).build(arch, cfg), kind, arch, cfg, out_dir, {"trained": "random init"})
    return Path(out_dir)
