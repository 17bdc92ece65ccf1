"""`htr visualise` draws polygons over pages from a manifest or from run output."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from batch.cli import main as htr
from batch.errors import EXIT_BAD_ARGS, EXIT_OK, EXIT_PARTIAL
from batch.schema import DocumentRecord, Line, Page, Point, Word
from jobs.manifests import Annotation, Sample, write_manifest


def _page(path, size=(400, 300)):
    img = Image.new("RGB", size, (250, 248, 240))
    img.paste((20, 20, 20), (50, 60, 150, 90))
    img.save(path)


def _reddish(path) -> int:
    a = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int(((a[..., 0] > 150) & (a[..., 1] < 100) & (a[..., 2] < 100)).sum())


def test_visualise_manifest(tmp_path):
    _page(tmp_path / "p.png")
    quad = [{"x": 50, "y": 60}, {"x": 150, "y": 60}, {"x": 150, "y": 90}, {"x": 50, "y": 90}]
    write_manifest([Sample("missing.png", []), Sample("p.png", [Annotation("Dear", quad, 0, "H")])],
                   tmp_path / "manifest.jsonl")
    out = tmp_path / "viz"
    assert htr(["visualise", str(tmp_path / "manifest.jsonl"), "--out", str(out)]) == EXIT_PARTIAL
    [png] = sorted(out.glob("*.png"))
    assert Image.open(png).size == (400, 300) and _reddish(png) > 100


def test_visualise_output_documents(tmp_path):
    _page(tmp_path / "scan.png")
    word = Word("Dear", 0.2, 0.9, [Point(50, 60), Point(150, 60), Point(150, 90), Point(50, 90)])
    doc = DocumentRecord("abc123", str(tmp_path / "scan.png"), [Page(1, 400, 300, [Line(0, [word])])],
                         "m1", "run1", 0, "image/png")
    (tmp_path / "out" / "documents").mkdir(parents=True)
    (tmp_path / "out" / "documents" / "abc123.json").write_text(json.dumps(doc.to_json()))
    out = tmp_path / "viz"
    assert htr(["visualise", str(tmp_path / "out"), "--out", str(out)]) == EXIT_OK
    assert (out / "abc123_p001.png").exists() and _reddish(out / "abc123_p001.png") > 50


def test_visualise_bad_source(tmp_path):
    assert htr(["visualise", str(tmp_path / "nothing"), "--out", str(tmp_path / "v")]) == EXIT_BAD_ARGS
    (tmp_path / "empty").mkdir()
    assert htr(["visualise", str(tmp_path / "empty"), "--out", str(tmp_path / "v")]) == EXIT_BAD_ARGS
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    assert htr(["visualise", str(tmp_path / "broken.jsonl"), "--out", str(tmp_path / "v")]) == EXIT_BAD_ARGS
