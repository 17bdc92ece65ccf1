"""The segmenter's line head: line targets and their inverse, the real-page cache, training on line
polygons only, and the pipeline reading the lines it finds (with word boxes as the fallback)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from batch.pipeline import PageDetections, line_pieces
from jobs import train
from jobs.metrics import match, polygon_iou
from jobs.page_data import PageCache, build_pages
from models import checkpoints, segmenter
from models.segmenter.postprocess import LINE_POST, boxes_from_prob
from models.segmenter.targets import make_line_targets

WORDS = ["Mon", "cher", "George", "lettre", "1905", "Paris", "archive", "notes", "encre"]


def _jagged_line(x0: float, x1: float, top: float, bottom: float, rng: np.random.Generator) -> np.ndarray:
    """An annotated line outline as real sets draw it: the baseline below, a peak per ascender above."""
    xs = np.linspace(x0, x1, 24)
    upper = [[x, top + (0 if rng.random() < 0.3 else rng.uniform(6, 12))] for x in xs]
    return np.array(upper + [[x1, bottom], [x0, bottom]], np.float32)


def test_line_targets_grow_back_to_their_lines() -> None:
    rng = np.random.default_rng(0)
    lines = [_jagged_line(40, 560, 40 + 50 * k, 80 + 50 * k, rng) for k in range(6)]
    t = make_line_targets(400, 600, lines)
    assert 0 < t["line_gt"].mean() < 0.5 and t["line_mask"].all()
    found = boxes_from_prob(t["line_gt"], LINE_POST)
    assert len(found) == len(lines)  # neighbours stay apart
    pairs = match([q for q, _ in found], lines, 0.5)
    assert len(pairs) == len(lines)
    assert min(polygon_iou(found[i][0], lines[j]) for i, j, _ in pairs) > 0.6


def _word(x0: float, y0: float, x1: float, y1: float, score: float = 0.9):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32), score


def test_line_pieces_take_the_line_heads_lines_and_fall_back_to_words() -> None:
    words = [
        _word(10, 10, 60, 30),
        _word(70, 10, 120, 30),  # inside the first line
        _word(10, 60, 60, 80),  # inside the second
        _word(10, 110, 60, 130),
        _word(70, 110, 110, 130),
    ]  # a line the line head missed
    lines = [_word(5, 5, 130, 35, 0.8), _word(5, 55, 130, 85, 0.7)]
    pieces = line_pieces(PageDetections(words, lines))
    assert [row for row, _, _ in pieces] == [0, 1, 2]  # rows top to bottom
    assert [len(members) for _, _, members in pieces] == [2, 1, 2]
    assert np.allclose(pieces[0][1], lines[0][0])  # the line head's own quad
    # without a line head: every line comes from the word boxes, as before
    assert [len(m) for _, _, m in line_pieces(PageDetections(words))] == [2, 1, 2]
    # two pieces side by side (two columns) share a row, left first
    side = line_pieces(PageDetections([], [_word(300, 5, 500, 35), _word(5, 5, 200, 35)]))
    assert [row for row, _, _ in side] == [0, 0] and side[0][1][0, 0] < side[1][1][0, 0]
    # a tall thin kernel (a table rule, a long stroke) is not a line of text on a deskewed page
    assert line_pieces(PageDetections([], [_word(5, 5, 15, 300)])) == []
    # a line the line head broke in two (a gap under a line height) is read as one crop again
    broken = line_pieces(
        PageDetections([_word(20, 10, 60, 30)], [_word(5, 5, 200, 35), _word(215, 6, 400, 36)])
    )
    assert len(broken) == 1 and len(broken[0][2]) == 1
    assert broken[0][1][:, 0].min() <= 5 and broken[0][1][:, 0].max() >= 400


def _real_set(root: Path, rng: np.random.Generator) -> None:
    """A tiny 'real' set: printed lines with jagged line outlines and no word boxes."""
    font = ImageFont.load_default(size=28)
    folder = root / "tiny_set"
    folder.mkdir(parents=True)
    rows = []
    for p in range(3):
        im = Image.new("RGB", (640, 480), "white")
        d = ImageDraw.Draw(im)
        texts = []
        for k in range(6):
            text = " ".join(WORDS[int(i)] for i in rng.integers(len(WORDS), size=3))
            x0, y0, x1, y1 = d.textbbox((30, 30 + 70 * k), text, font=font)
            d.text((30, 30 + 70 * k), text, font=font, fill="black")
            poly = _jagged_line(x0 - 4, x1 + 4, y0 - 4, y1 + 4, rng)
            texts.append({"text": text, "polygon": [{"x": float(x), "y": float(y)} for x, y in poly]})
        im.save(folder / f"p{p}.png")
        rows.append({"source-ref": f"p{p}.png", "annotations": {"texts": texts}})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def page_cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real")
    _real_set(root / "sets", np.random.default_rng(1))
    split = root / "validation.txt"
    split.write_text("# one page held out\ntiny_set/p2.png\n")
    summary = build_pages(root / "sets", root / "pages", split)
    assert summary == {"pages": 3, "val": 1, "lines": 18}
    return root / "pages"


def test_page_cache_keeps_every_polygon_point(page_cache: Path) -> None:
    train_pages, val_pages = PageCache(page_cache, "train"), PageCache(page_cache, "val")
    assert (len(train_pages), len(val_pages)) == (2, 1)
    image, lines = val_pages.page(0)
    assert image.shape == (480, 640, 3) and len(lines) == 6 and all(len(p) == 26 for p in lines)


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    train.configure(p)
    return p.parse_args(argv)


def test_line_head_learns_from_line_polygons_alone(page_cache: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(ValueError, match="--pages"):  # a line head needs the line data
        train.main(_args(["segmenter", "--arch", "db_tiny_lines", "--steps", "1"]))
    args = _args(
        [
            "segmenter",
            "--arch",
            "db_tiny_lines",
            "--pages",
            str(page_cache),
            "--synthetic-share",
            "0",
            "--test",
            str(page_cache.parent / "sets" / "tiny_set"),
            "--steps",
            "30",
            "--batch-size",
            "2",
            "--crop-size",
            "256",
            "--lr",
            "5e-3",
            "--log-every",
            "10",
            "--eval-every",
            "30",
            "--eval-size",
            "1",
            "--workers",
            "0",
            "--model-dir",
            str(tmp_path / "seg"),
        ]
    )
    assert train.main(args) == 0
    out = capsys.readouterr().out
    losses = [float(m) for m in re.findall(r"train_loss=([\d.]+)", out)]
    assert losses[-1] < losses[0], losses
    assert re.search(r"step=30 .*line_precision=[\d.]+ line_recall=[\d.]+ line_f1=[\d.]+", out)
    model, meta = checkpoints.load(tmp_path / "seg", "segmenter")
    assert meta["config"]["line_channels"] == 8
    with torch.no_grad():
        prob = model.eval()(torch.rand(1, 3, 64, 96), with_threshold=False)["prob"]
    assert prob.shape == (1, 2, 64, 96)  # channel 0 words, channel 1 lines
    assert segmenter.build("db_tiny")(torch.rand(1, 3, 64, 64))["prob"].shape[1] == 1
