"""models.checkpoints: safetensors + JSON round trips, and what loading refuses."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from batch.core.errors import CheckpointError
from batch.pipeline import Pipeline
from models import checkpoints, recogniser, segmenter
from models.charset import CHARSET


def _outputs(model: torch.nn.Module, kind: str) -> torch.Tensor:
    torch.manual_seed(123)
    with torch.inference_mode():
        if kind == "segmenter":
            return model(torch.rand(2, 3, 64, 96), with_threshold=True)["prob"]
        return model(torch.rand(2, 1, 32, 48))


@pytest.mark.slow  # builds and runs both networks (~10 s)
@pytest.mark.parametrize("kind, arch", [("segmenter", "db_tiny"), ("recogniser", "crnn_tiny")])
def test_save_load_round_trip_gives_identical_outputs(tmp_path, kind, arch):
    builder = {"segmenter": segmenter, "recogniser": recogniser}[kind]
    torch.manual_seed(7)
    cfg = dict(builder.CONFIGS[arch])
    model = builder.build(arch, cfg).eval()
    with torch.no_grad():  # move BatchNorm statistics off their defaults so they must be saved
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.uniform_(-0.1, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    weights = checkpoints.save(model, kind, arch, cfg, tmp_path, {"note": "test"})
    assert weights == tmp_path / f"{kind}.safetensors" and weights.is_file()
    loaded, meta = checkpoints.load(tmp_path, kind)
    assert not loaded.training
    assert torch.equal(_outputs(model, kind), _outputs(loaded, kind))
    assert meta["kind"] == kind and meta["arch"] == arch and meta["config"] == cfg
    assert meta["note"] == "test" and len(meta["version"]) == 12
    if kind == "recogniser":
        assert meta["charset"] == CHARSET
    # the version is the weights' content: saving the same weights again gives the same one
    again = tmp_path / "again"
    checkpoints.save(model, kind, arch, cfg, again)
    assert checkpoints.read_meta(again, kind)["version"] == meta["version"]


def test_recogniser_charset_comes_from_the_checkpoint(tmp_path):
    cfg = dict(recogniser.CONFIGS["crnn_tiny"])
    model = recogniser.build("crnn_tiny", cfg, charset="abc")
    checkpoints.save(model, "recogniser", "crnn_tiny", cfg, tmp_path, {"charset": "abc"})
    loaded, meta = checkpoints.load(tmp_path, "recogniser")
    assert meta["charset"] == "abc" and loaded.classifier.out_features == 4


@pytest.mark.slow  # builds the tiny models twice
def test_tiny_models_are_deterministic_per_seed(tmp_path):
    a = checkpoints.make_tiny_models(tmp_path / "a", seed=0)
    b = checkpoints.make_tiny_models(tmp_path / "b", seed=0)
    c = checkpoints.make_tiny_models(tmp_path / "c", seed=1)
    for kind in checkpoints.KINDS:
        va, vb, vc = (checkpoints.read_meta(d, kind)["version"] for d in (a, b, c))
        assert va == vb != vc


# ---- refusals --------------------------------------------------------------------------------------


class _Trap:
    """Unpickling this creates a file: proof that a loader executed code from a checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def model_dir(tmp_path, tiny_models) -> Path:
    d = tmp_path / "models"
    shutil.copytree(tiny_models, d)
    return d


@pytest.mark.parametrize("name", ["segmenter.pt", "segmenter.bin", "segmenter.pth"])
def test_pickle_weights_are_refused_and_never_unpickled(model_dir, tmp_path, name):
    marker = tmp_path / "code-ran"
    (model_dir / "segmenter.safetensors").unlink()
    (model_dir / name).write_bytes(pickle.dumps({"state_dict": _Trap(marker)}))
    with pytest.raises(CheckpointError, match="only .safetensors"):
        checkpoints.load(model_dir, "segmenter")
    assert not marker.exists()


def test_a_pickle_named_safetensors_is_refused_and_never_unpickled(model_dir, tmp_path):
    marker = tmp_path / "code-ran"
    (model_dir / "segmenter.safetensors").write_bytes(pickle.dumps(_Trap(marker)))
    with pytest.raises(CheckpointError):
        checkpoints.load(model_dir, "segmenter")
    assert not marker.exists()


def test_missing_files_are_refused(model_dir):
    (model_dir / "recogniser.json").unlink()
    with pytest.raises(CheckpointError, match="recogniser.json"):
        checkpoints.load(model_dir, "recogniser")
    (model_dir / "segmenter.safetensors").unlink()
    with pytest.raises(CheckpointError, match="segmenter.safetensors not found"):
        checkpoints.load(model_dir, "segmenter")
    with pytest.raises(CheckpointError, match="unknown model kind"):
        checkpoints.load(model_dir, "tokenizer")


def test_weights_of_another_architecture_are_refused(model_dir, tmp_path):
    # crnn_small weights next to a crnn_tiny config: shapes differ, strict loading refuses
    cfg = dict(recogniser.CONFIGS["crnn_small"])
    checkpoints.save(recogniser.build("crnn_small", cfg), "recogniser", "crnn_small", cfg, tmp_path / "small")
    shutil.copy(tmp_path / "small" / "recogniser.safetensors", model_dir / "recogniser.safetensors")
    with pytest.raises(CheckpointError, match="does not match"):
        checkpoints.load(model_dir, "recogniser")


def test_weights_with_missing_or_extra_tensors_are_refused(model_dir):
    from safetensors.torch import load_file, save_file

    path = model_dir / "recogniser.safetensors"
    state = load_file(str(path))
    missing = dict(state)
    missing.pop(sorted(missing)[0])
    save_file(missing, str(path))
    with pytest.raises(CheckpointError, match="does not match"):
        checkpoints.load(model_dir, "recogniser")
    extra = dict(state, **{"extra.weight": torch.zeros(3)})
    save_file(extra, str(path))
    with pytest.raises(CheckpointError, match="does not match"):
        checkpoints.load(model_dir, "recogniser")


def test_truncated_safetensors_is_refused(model_dir):
    path = model_dir / "segmenter.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError):
        checkpoints.load(model_dir, "segmenter")


@pytest.mark.parametrize(
    "meta",
    ["{not json", json.dumps({"kind": "segmenter", "arch": "db_tiny", "config": {"no_such_option": 1}})],
)
def test_corrupt_or_wrong_json_is_a_checkpoint_error(model_dir, meta):
    (model_dir / "segmenter.json").write_text(meta)
    with pytest.raises(CheckpointError):
        checkpoints.load(model_dir, "segmenter")


def test_weights_swapped_after_saving_are_refused(model_dir, tmp_path):
    other = checkpoints.make_tiny_models(tmp_path / "other", seed=5)
    shutil.copy(other / "segmenter.safetensors", model_dir / "segmenter.safetensors")
    with pytest.raises(CheckpointError):
        checkpoints.load(model_dir, "segmenter")


# ---- through the pipeline ----------------------------------------------------------------------------


def test_tiny_models_load_through_pipeline(tiny_models):
    pipe = Pipeline.load(tiny_models, device="cpu")
    seg_v = checkpoints.read_meta(tiny_models, "segmenter")["version"]
    rec_v = checkpoints.read_meta(tiny_models, "recogniser")["version"]
    assert pipe.model_version.startswith(f"seg-{seg_v}+rec-{rec_v}")
    assert pipe.long_side == segmenter.CONFIGS["db_tiny"]["input_long_side"]
    assert pipe.max_width == recogniser.CONFIGS["crnn_tiny"]["max_width"]
    assert pipe.codec.charset == CHARSET
    pages = pipe.process_pages([np.full((300, 200, 3), 255, np.uint8), np.full((100, 400, 3), 255, np.uint8)])
    assert [(p.page, p.width, p.height) for p in pages] == [(1, 200, 300), (2, 400, 100)]


def test_pipeline_load_refuses_a_missing_dir(tmp_path):
    with pytest.raises(CheckpointError):
        Pipeline.load(tmp_path / "nowhere", device="cpu")
