"""BatchNorm folding and the CPU precision/backend choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from batch.pipeline import Pipeline, PipelineConfig
from models import checkpoints
from models.fuse import fuse_batchnorm


def _with_live_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """Random running statistics, so folding has something to get wrong."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


@pytest.mark.parametrize("kind,shape", [("segmenter", (2, 3, 96, 64)), ("recogniser", (3, 1, 32, 48))])
def test_folding_batchnorm_keeps_the_outputs(tiny_models, kind, shape):
    model = _with_live_batchnorm(checkpoints.load(tiny_models, kind)[0])
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        before = model(x)
        n = fuse_batchnorm(model)
        after = model(x)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert n > 0 and n_bn == 0  # every BatchNorm of our models follows a convolution
    if kind == "segmenter":
        before, after = before["prob"], after["prob"]
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


def test_folding_refuses_a_training_model(tiny_models):
    model = checkpoints.load(tiny_models, "recogniser")[0].train()
    with pytest.raises(ValueError, match="eval"):
        fuse_batchnorm(model)


def _native_bf16() -> bool:
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def test_cpu_precision_and_backend_choice(tiny_models):
    fp32 = Pipeline.load(tiny_models, "cpu", PipelineConfig(precision="fp32", backend="torch"))
    assert not fp32.bf16_cpu and fp32.backend == "torch" and fp32.channels_last
    auto = Pipeline.load(tiny_models, "cpu", PipelineConfig(backend="torch"))
    assert auto.bf16_cpu == _native_bf16()
    with pytest.raises(ValueError, match="precision"):
        Pipeline.load(tiny_models, "cpu", PipelineConfig(precision="fp8"))


@pytest.mark.skipif(not _native_bf16(), reason="this CPU has no native bf16 (AVX512-BF16/AMX)")
def test_bf16_pipeline_agrees_with_fp32(constant_models):
    """Same pages through bf16 and fp32: the constant models give the same words and boxes."""
    page = np.full((200, 160, 3), 255, np.uint8)
    page[60:90, 30:130] = 0
    runs = [
        Pipeline.load(constant_models, "cpu", PipelineConfig(precision=p, backend="torch")).process_pages(
            [page]
        )
        for p in ("bf16", "fp32")
    ]
    words = [
        [
            (w.text, [(round(pt.x), round(pt.y)) for pt in w.polygon])
            for ln in pages[0].lines
            for w in ln.words
        ]
        for pages in runs
    ]
    assert words[0] and words[0] == words[1]


def test_cpu_segmenter_batches_only_pages_of_one_input_shape(tiny_models):
    pipe = Pipeline.load(tiny_models, "cpu", PipelineConfig(seg_batch=2))
    a, b = np.zeros((400, 300, 3), np.uint8), np.zeros((300, 400, 3), np.uint8)
    batches = pipe._seg_batches([a, a, a, b, a])
    assert [len(x) for x in batches] == [2, 1, 1, 1]  # full at 2; b's shape differs
    assert [x[0].shape for x in batches] == [a.shape, a.shape, b.shape, a.shape]
    assert len(pipe.segment([a, b, a])) == 3


def test_reduced_pages_are_reported_in_source_pixels(constant_models):
    """A JPEG decoded at 1/4: the constant segmenter's whole-page word comes back in source pixels."""
    import io

    from PIL import Image

    from transforms.rasterise import iter_pages

    buf = io.BytesIO()
    Image.new("RGB", (1600, 1200), "white").save(buf, "JPEG")
    raster = next(iter_pages(buf.getvalue(), image_side=300))
    assert raster.shape[:2] == (300, 400)
    pipe = Pipeline.load(constant_models, "cpu")
    (page,) = pipe.process_pages([raster])
    assert (page.width, page.height) == (1600, 1200)
    (word,) = page.words
    x0, y0, x1, y1 = word.bbox
    assert x1 > 1500 and y1 > 1100 and x1 <= 1600.1 and y1 <= 1200.1
