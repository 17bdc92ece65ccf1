"""The predictor's parts (#16 item 3): the two engines behind one interface, the segmenter and
recogniser runners used on their own, and stage timing through the clock hook (no patching)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

import batch.pipeline as bp
import transforms.crops as crops_mod
from batch.core.clock import NO_CLOCK, StageClock
from batch.pipeline import Pipeline, PipelineConfig
from models import checkpoints
from models.engine import make_engine
from models.recogniser.runner import RecogniserRunner
from models.segmenter.runner import SegmenterRunner


def _page() -> np.ndarray:
    page = np.full((300, 400, 3), 255, np.uint8)
    cv2.putText(page, "Dear Anne", (20, 100), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (0, 0, 0), 4)
    cv2.putText(page, "the letter came", (20, 200), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (0, 0, 0), 3)
    return page


def _modules(models):
    return checkpoints.load(models, "segmenter")[0], checkpoints.load(models, "recogniser")[0]


def test_torch_and_onnxruntime_engines_agree(tiny_line_models):
    """Same weights, the same numpy batches in: the two engines' numpy outputs agree (no caller
    asks which engine it has)."""
    torch_engine = make_engine(*_modules(tiny_line_models), "cpu", "torch", "fp32")
    ort_engine = make_engine(*_modules(tiny_line_models), "cpu", "onnxruntime", "fp32")
    assert (torch_engine.name, ort_engine.name) == ("torch", "onnxruntime")
    assert not torch_engine.bf16_cpu and not ort_engine.bf16_cpu
    rng = np.random.default_rng(0)
    pages = rng.integers(0, 256, (2, 96, 128, 3), dtype=np.uint8)
    crops = rng.random((3, 1, 32, 80), dtype=np.float32)
    for run, x in (("segment", pages), ("recognise", crops)):
        a, b = getattr(torch_engine, run)(x), getattr(ort_engine, run)(x)
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype == np.float32
        assert a.shape == b.shape and a.shape[0] == len(x)
        np.testing.assert_allclose(a, b, atol=2e-4)


def test_runners_on_their_own_read_what_the_pipeline_reads(tiny_line_models):
    """The runners need no Pipeline (jobs/train.py's evaluation can reuse them): built from an
    engine and settings, they give the pipeline's own detections and readings."""
    config = PipelineConfig(lexicon="off", backend="torch", precision="fp32")
    pipe = Pipeline.load(tiny_line_models, "cpu", config)
    seg, rec = _modules(tiny_line_models)
    engine = make_engine(seg, rec, "cpu", "torch", "fp32")
    segmenter = SegmenterRunner(engine, pipe.long_side, config)
    recogniser = RecogniserRunner(engine, pipe.codec, pipe.crop_height, pipe.max_width, [], config)
    page = _page()
    (mine,) = segmenter.segment([page])
    (theirs,) = pipe.segment([page])
    assert len(mine.words) == len(theirs.words) and (mine.lines is None) == (theirs.lines is None)
    for (qa, sa), (qb, sb) in zip(mine.words + (mine.lines or []), theirs.words + (theirs.lines or [])):
        np.testing.assert_allclose(qa, qb, atol=1e-3)
        assert sa == pytest.approx(sb, abs=1e-5)
    gray = page[..., 0]
    quads = [np.array([[10, 60], [390, 60], [390, 110], [10, 110]], np.float32)]
    crops = [recogniser.crop(gray, q) for q in quads]
    assert crops[0].shape[0] == pipe.crop_height
    np.testing.assert_array_equal(crops[0], pipe.line_crop(gray, quads[0]))
    assert recogniser.read_lines(crops) == pipe.read_lines(crops)
    assert recogniser.recognise(crops) == pipe.recognise(crops)


@pytest.fixture(scope="module")
def constant_line_models(tmp_path_factory, constant_models, tiny_line_models):
    """constant_models' segmenter (the whole page is one word box) with a line recogniser that
    reads "x" at every frame: every stage of the line path runs, with crops to read."""
    import torch

    from models.charset import CHARSET

    d = tmp_path_factory.mktemp("constant-line-models")
    seg, seg_meta = checkpoints.load(constant_models, "segmenter")
    rec, rec_meta = checkpoints.load(tiny_line_models, "recogniser")
    with torch.no_grad():
        classifier: Any = rec.classifier
        classifier.weight.zero_()
        classifier.bias.zero_()
        classifier.bias[CHARSET.index("x") + 1] = 10.0
    checkpoints.save(seg, "segmenter", seg_meta["arch"], seg_meta["config"], d)
    checkpoints.save(rec, "recogniser", rec_meta["arch"], rec_meta["config"], d)
    return d


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
@pytest.mark.parametrize("models", ["constant_models", "constant_line_models"])
def test_stages_are_timed_through_the_clock_hook(request, models, backend):
    """Every stage is timed by the pipeline itself (word and line recognisers, both engines): no
    module function is replaced, leaf stages never overlap (their sum stays within process_pages'
    time), and the hook comes off again."""
    from jobs.bench import instrument, stage_rows

    def module_functions() -> dict[str, object]:
        names = ("resize_for_segmenter", "group_lines", "line_pieces")
        return {n: getattr(bp, n) for n in names} | {
            f"crops.{n}": getattr(crops_mod, n) for n in ("rectify", "pack")
        }

    functions = module_functions()
    config = PipelineConfig(backend=backend, precision="fp32")
    pipe = Pipeline.load(request.getfixturevalue(models), "cpu", config)
    assert pipe.line_mode == (models == "constant_line_models")
    clock = StageClock()
    undo = instrument(pipe, clock)
    assert pipe.clock is clock
    pages = pipe.process_pages([_page(), _page()])
    assert len(pages) == 2 and all(p.words for p in pages)
    assert module_functions() == functions  # nothing patched
    leaves = {
        "seg_resize",
        "seg_model",
        "postprocess",
        "crop",
        "rec_pack",
        "rec_model",
        "ctc_decode",
        "lines",
    }
    assert leaves | {"_process_pages"} <= set(clock.seconds)
    assert pipe.lexicons and "lexicon" in clock.seconds
    leaf_total = sum(v for k, v in clock.seconds.items() if k != "_process_pages")
    assert 0 < leaf_total <= clock.seconds["_process_pages"]
    assert [r[0] for r in stage_rows(clock.seconds, 2)][-1] == "other"
    undo()
    assert pipe.clock is NO_CLOCK
    before = dict(clock.seconds)
    pipe.process_pages([_page()])
    assert dict(clock.seconds) == before  # no longer timed


def test_settings_changed_after_load_reach_the_runners(tiny_models):
    """bench-gpu sets pipe.config.seg_batch / rec_batch after loading: the runners read them."""
    pipe = Pipeline.load(tiny_models, "cpu", PipelineConfig(seg_batch=4))
    a = np.zeros((400, 300, 3), np.uint8)
    assert [len(b) for b in pipe._seg_batches([a, a, a])] == [3]
    pipe.config.seg_batch = 1
    assert [len(b) for b in pipe._seg_batches([a, a, a])] == [1, 1, 1]
    pipe.config = PipelineConfig(seg_batch=2)
    assert [len(b) for b in pipe._seg_batches([a, a, a])] == [2, 1]
    assert pipe.segmenter_runner.settings is pipe.config is pipe.recogniser_runner.settings
