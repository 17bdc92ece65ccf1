"""The ONNX export cache: a second load reuses the exported graph, any weight change re-exports,
an unusable cache folder only costs the export, and the cached graph computes what torch does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import onnx_backend as ob


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1)
    ).eval()


def _graph(net: torch.nn.Module) -> bytes:
    return ob.exported_graph(net, torch.rand(2, 1, 8, 16), {0: "b", 3: "w"})


def test_second_export_comes_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HTR_CACHE_DIR", str(tmp_path))
    first = _graph(_net())
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 1

    def no_export(*a, **k):
        raise AssertionError("exported again although the graph is cached")

    monkeypatch.setattr(ob, "_export", no_export)
    assert _graph(_net()) == first


def test_changed_weights_are_exported_again(tmp_path, monkeypatch):
    monkeypatch.setenv("HTR_CACHE_DIR", str(tmp_path))
    _graph(_net(0))
    net = _net(0)
    with torch.no_grad():
        net[0].bias[0] += 1.0
    _graph(net)
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 2
    assert not list((tmp_path / "onnx").glob("*.tmp"))


def test_unwritable_cache_still_exports(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("HTR_CACHE_DIR", str(blocker))
    assert _graph(_net()).startswith(b"\x08")  # an ONNX ModelProto (field 1, ir_version)


def test_cached_session_matches_torch(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("HTR_CACHE_DIR", str(tmp_path))
    net = _net(3)
    x = torch.rand(3, 1, 8, 40)
    for _ in range(2):  # export, then from the cache
        session = ob._session(_graph(net), threads=1)
        got = session.run(None, {"x": x.numpy()})[0]
        np.testing.assert_allclose(got, net(x).detach().numpy(), atol=1e-5)


def test_checkpoint_runners_come_from_the_cache_without_building_networks(tmp_path, monkeypatch, tiny_models):
    from models import checkpoints

    monkeypatch.setenv("HTR_CACHE_DIR", str(tmp_path))
    x = torch.rand(1, 1, 32, 80)
    first = ob.from_checkpoints(tiny_models, 32, threads=1)[1](x)

    def no_build(*a, **k):
        raise AssertionError("a network was built although both graphs are cached")

    monkeypatch.setattr(checkpoints, "load", no_build)
    again = ob.from_checkpoints(tiny_models, 32, threads=1)[1](x)
    np.testing.assert_allclose(again.numpy(), first.numpy())


def test_replaced_weights_miss_the_cache_and_are_checked(tmp_path, monkeypatch, tiny_models):
    import shutil

    from batch.core.errors import CheckpointError
    from models import checkpoints

    monkeypatch.setenv("HTR_CACHE_DIR", str(tmp_path / "cache"))
    models = shutil.copytree(tiny_models, tmp_path / "models")
    ob.from_checkpoints(models, 32, threads=1)
    other = checkpoints.make_tiny_models(tmp_path / "other", seed=5)
    shutil.copy(other / "recogniser.safetensors", models / "recogniser.safetensors")
    with pytest.raises(CheckpointError, match="does not match the version"):
        ob.from_checkpoints(models, 32, threads=1)
