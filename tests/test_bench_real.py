"""`htr bench`'s real-data table (jobs/bench_real.py) and the bench's GT line-crop readers, on tiny
line-level sets built here (cv2-drawn pages, polygons, a manifest per set, a validation list)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from jobs.bench import HtrHost, StageClock, metric_rows, peer_line_crops
from jobs.bench_real import ALL, bench_real, real_sets
from jobs.evaluate import normalise_text
from jobs.metrics import ErrorRate

TESSERACT = shutil.which("tesseract") is not None


def line_poly(x0: float, x1: float, top: float, height: float = 40.0) -> list[dict]:
    """A 12-point polygon around a text line (top edge left to right, bottom edge back)."""
    xs = np.linspace(x0, x1, 6)
    pts = [(x, top + 2 * np.sin(x / 30)) for x in xs] + [(x, top + height) for x in xs[::-1]]
    return [{"x": float(x), "y": float(y)} for x, y in pts]


def write_set(folder: Path, pages: dict[str, list[str]]) -> None:
    """pages: {image name: line texts}; each line drawn at 60 + 80 k px, polygon around it."""
    folder.mkdir(parents=True)
    rows = []
    for name, lines in pages.items():
        img = np.full((400, 640, 3), 255, np.uint8)
        texts = []
        for k, text in enumerate(lines):
            top = 60 + 80 * k
            cv2.putText(img, text, (30, top + 32), cv2.FONT_HERSHEY_SIMPLEX, 1.1, (0, 0, 0), 2)
            texts.append({"text": text, "polygon": line_poly(40, 340, top), "line_idx": k})
        (folder / "images").mkdir(exist_ok=True)
        cv2.imwrite(str(folder / "images" / name), img)
        rows.append(
            json.dumps({"source-ref": f"images/{name}", "annotations": {"texts": texts}, "level": "line"})
        )
    (folder / "manifest.jsonl").write_text("\n".join(rows) + "\n")


@pytest.fixture
def real_dir(tmp_path: Path) -> tuple[Path, Path]:
    """Three sets: alpha (one validation page, one training page), beta (one validation page),
    gamma (training pages only); and their validation list."""
    root = tmp_path / "train"
    write_set(root / "alpha", {"a1.png": ["ax by", "cx dx"], "a2.png": ["never scored"]})
    write_set(root / "beta", {"b1.png": ["x y", "zz"]})
    write_set(root / "gamma", {"g1.png": ["training only"]})
    split = tmp_path / "validation.txt"
    split.write_text("# validation pages\nalpha/a1.png\nbeta/b1.png\n")
    return root, split


def md_table_after(md: str, title: str) -> dict[str, list[str]]:
    """The markdown table that follows the line starting with `title`: first cell -> the rest
    (the header row under the key 'set')."""
    lines = md.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(title))
    rows = {}
    for ln in lines[start + 1 :]:
        if ln.startswith("|"):
            if not ln.startswith("|---"):
                cells = [c.strip() for c in ln.strip("|").split("|")]
                rows[cells[0]] = cells[1:]
        elif rows:
            break
    return rows


def test_real_sets_take_the_listed_validation_pages_only(real_dir):
    root, split = real_dir
    sets, notes = real_sets(root, split)
    assert [(ds.name, [Path(p.uri).name for p in ds.pages]) for ds in sets] == [
        ("alpha", ["a1.png"]),
        ("beta", ["b1.png"]),
    ]
    assert all(p.level == "line" for ds in sets for p in ds.pages)
    assert any(n.startswith("gamma:") for n in notes)
    split.write_text("alpha/a1.png\nalpha/a2.png\nbeta/b1.png\nbeta/missing.png\n")
    sets, notes = real_sets(root, split)
    assert [len(ds.pages) for ds in sets] == [2, 1]
    assert any(n.startswith("beta: 1 listed pages are not") for n in notes)
    sets, _ = real_sets(root, split, limit=1)  # --real-limit 1
    assert [len(ds.pages) for ds in sets] == [1, 1]


def test_bench_real_is_skipped_with_a_note_without_the_folder(tmp_path):
    report = SimpleNamespace(notes=[], sections=[])
    args = SimpleNamespace(real=str(tmp_path / "absent"), real_split=str(tmp_path / "v.txt"), real_limit=None)
    assert bench_real(args, {}, 4, report) is None
    assert report.sections == [] and "absent" in report.notes[0] and "skipped" in report.notes[0]


def test_htr_bench_real_table(tmp_path, real_dir, constant_models, capsys):
    """The constant models read every page as one word "x" over the whole page and every GT line
    crop (narrower than their 512 px) as "x": the numbers follow from that."""
    from batch.cli import main

    root, split = real_dir
    out = tmp_path / "BENCH.md"
    systems = "htr-batch" + (",tesseract" if TESSERACT else "")
    rc = main(
        [
            "bench",
            "--synthetic-pages",
            "0",
            "--no-dev",
            "--skip-memory",
            "--no-e2e",
            "--threads",
            "1",
            "--systems",
            systems,
            "--models",
            str(constant_models),
            "--real",
            str(root),
            "--real-split",
            str(split),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    md = out.read_text()
    assert "## Real data: line-level sets (the training sets' validation pages)" in md
    assert "gamma: no page listed" in md
    names = systems.split(",")
    f1 = md_table_after(md, "Line detection F1")
    crop = md_table_after(md, "CER on ground-truth line crops")
    page = md_table_after(md, "Page CER")
    bow = md_table_after(md, "Bag-of-words F1")
    speed = md_table_after(md, "Pages/s")
    for table in (f1, crop, page, speed):
        assert table["set"] == ["pages", *names]
        assert list(table) == ["set", "alpha", "beta", ALL]
        assert [table[s][0] for s in ("alpha", "beta", ALL)] == ["1", "1", "2"]  # a2 is not validation
    assert bow["set"] == ["pages", *names, "chance"]
    ours = {
        name: {s: float(t[s][1]) for s in ("alpha", "beta", ALL)}
        for name, t in (("f1", f1), ("crop", crop), ("page", page), ("bow", bow), ("speed", speed))
    }
    assert ours["crop"] == {
        "alpha": pytest.approx(0.8, abs=1e-3),  # "x" vs "ax by", "x" vs "cx dx"
        "beta": pytest.approx(0.8, abs=1e-3),  # "x" vs "x y", "x" vs "zz"
        ALL: pytest.approx(0.8, abs=1e-3),
    }  # 12 / 15
    assert ours["page"] == {
        "alpha": pytest.approx(10 / 11, abs=1e-3),
        "beta": pytest.approx(5 / 6, abs=1e-3),
        ALL: pytest.approx(15 / 17, abs=1e-3),
    }  # micro-average
    assert ours["bow"]["alpha"] == 0.0 and ours["bow"]["beta"] == pytest.approx(0.5, abs=1e-3)
    assert ours["f1"][ALL] == 0.0  # one box over the whole page
    assert all(v > 0 for v in ours["speed"].values())
    if TESSERACT:
        theirs = [float(crop[s][2]) for s in ("alpha", "beta", ALL)] + [float(page[ALL][2])]
        assert all(0.0 <= v <= 1.5 for v in theirs)
    printed = capsys.readouterr().out
    assert "CER on ground-truth line crops" in printed and "real validation" in printed.splitlines()[-1]


def _fake_line_pipe(calls: list):
    def read_lines(crops):
        calls.append(len(crops))
        return [[("Dear", 0.9, 0.0, 0.4), ("Sir", 0.8, 0.5, 1.0)] for _ in crops]

    return SimpleNamespace(
        line_mode=True,
        crop_height=32,
        max_width=2048,
        line_crop=lambda gray, q: np.zeros((32, 300), np.uint8),
        read_lines=read_lines,
    )


def test_htr_host_reads_gt_lines_with_the_pipelines_line_reader(tiny_line_models):
    from batch.pipeline import Pipeline, PipelineConfig

    calls: list = []
    host = SimpleNamespace(pipe=_fake_line_pipe(calls), clock=StageClock())
    quads = [np.array([[10, 10], [300, 10], [300, 50], [10, 50]], np.float32)] * 2
    gray = np.full((100, 400), 255, np.uint8)
    assert HtrHost.read_lines(host, (gray, quads)) == ["Dear Sir", "Dear Sir"]  # words joined by spaces
    assert calls == [2] and host.clock.enabled

    pipe = Pipeline.load(tiny_line_models, "cpu", PipelineConfig(lexicon=False, backend="torch"))
    assert pipe.line_mode
    seen: list = []
    read = pipe.read_lines
    pipe.read_lines = lambda crops: seen.extend(crops) or read(crops)
    host = SimpleNamespace(pipe=pipe, clock=StageClock())
    texts = HtrHost.read_lines(host, (gray, quads))
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert len(seen) == 2 and all(c.shape[0] == pipe.crop_height for c in seen)
    assert texts == [" ".join(w[0] for w in words) for words in read(seen)]


def test_peer_line_crops_keep_the_pages_resolution():
    gray = np.full((300, 800), 255, np.uint8)
    crops = peer_line_crops(gray, [np.array([[10, 20], [610, 20], [610, 80], [10, 80]], np.float32)])
    assert crops[0].shape == (60, 600)


def _printed_line(text: str) -> tuple[np.ndarray, list[np.ndarray]]:
    gray = np.full((200, 900), 255, np.uint8)
    cv2.putText(gray, text, (30, 110), cv2.FONT_HERSHEY_DUPLEX, 1.6, 0, 2)
    return gray, [np.array([[15, 60], [880, 60], [880, 130], [15, 130]], np.float32)]


@pytest.mark.skipif(not TESSERACT, reason="tesseract is not installed")
def test_tesseract_reads_a_gt_line_as_one_line():
    from jobs.bench import TesseractHost

    text = "Quick brown fox 1905"
    host = TesseractHost(1)
    (got,) = host.read_lines(_printed_line(text))
    cer = ErrorRate()
    cer.add(normalise_text(got), text)
    assert cer.rate < 0.25, got


def test_rapidocr_reads_a_gt_line():
    from jobs.peers import rapidocr_available

    if rapidocr_available():
        pytest.skip(rapidocr_available())
    from jobs.bench import RapidHost

    text = "Quick brown fox 1905"
    (got,) = RapidHost(1).read_lines(_printed_line(text))
    cer = ErrorRate()
    cer.add(normalise_text(got), text)
    assert cer.rate < 0.25, got


def test_dev_metrics_split_line_types_into_their_own_rows():
    results = {
        "htr-batch": {
            "pages": 2,
            "level": "line",
            "crop_cer": 0.5,
            "bow_f1": 0.4,
            "bow_f1_chance": 0.2,
            "crop_cer_handwritten": 0.6,
            "bow_f1_handwritten": 0.3,
            "crop_cer_printed": 0.1,
            "bow_f1_printed": 0.9,
            "bow_f1_handwritten_chance": 0.25,
        },
        "tesseract": {
            "pages": 2,
            "level": "line",
            "crop_cer": 0.7,
            "bow_f1": 0.2,
            "bow_f1_chance": 0.2,
            "crop_cer_handwritten": 0.9,
            "bow_f1_handwritten": 0.1,
            "crop_cer_printed": 0.2,
            "bow_f1_printed": 0.8,
            "bow_f1_handwritten_chance": 0.25,
        },
    }
    assert [r[0] for r in metric_rows(results)] == ["crop_cer", "bow_f1", "bow_f1_chance"]
    typed = metric_rows(results, typed=True)
    assert [(r[0], r[1].split(" (")[0] + (" chance" if "chance" in r[1] else ""), *r[2:]) for r in typed] == [
        ("handwritten", "crop CER", 0.6, 0.9),
        ("handwritten", "BoW F1", 0.3, 0.1),
        ("handwritten", "BoW F1 chance", 0.25, 0.25),
        ("printed", "crop CER", 0.1, 0.2),
        ("printed", "BoW F1", 0.9, 0.8),
    ]
