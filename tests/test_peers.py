"""Peer adapters (jobs/peers.py): parsing is tested on fixed strings; the real engines read a small
rendered page of large printed words. Those tests need `tesseract-ocr tesseract-ocr-eng` (apt) and
`rapidocr-onnxruntime` (pip, requirements-bench.txt) and are skipped, with the reason, without them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from jobs import peers
from jobs.evaluate import EvalPage, GtItem, evaluate

TSV = "\n".join(
    [
        "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext",
        "1\t1\t0\t0\t0\t0\t0\t0\t900\t300\t-1\t",
        "4\t1\t1\t1\t1\t0\t27\t35\t410\t59\t-1\t",
        "5\t1\t1\t1\t1\t1\t27\t35\t170\t59\t96.5\thello",
        "5\t1\t1\t1\t1\t2\t245\t35\t192\t59\t91.0\tworld",
        "5\t1\t1\t1\t1\t3\t460\t35\t10\t59\t95.0\t ",
        "5\t1\t2\t1\t1\t1\t24\t200\t211\t47\t80.0\tsecond",
    ]
)

WORDS = [("hello", 30, 100), ("world", 330, 100), ("paper", 30, 210), ("table", 330, 210)]


@pytest.fixture(scope="module")
def printed() -> tuple[np.ndarray, list[GtItem]]:
    """Large printed words on off-white paper, with their ground-truth boxes."""
    img = np.full((300, 640, 3), 245, np.uint8)
    items = []
    for text, x, y in WORDS:
        (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 2.0, 4)
        cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (25, 25, 25), 4)
        quad = np.array([[x, y - h], [x + w, y - h], [x + w, y + base], [x, y + base]], np.float32)
        items.append(GtItem(text, quad, handwritten=False))
    return img, items


def _skip_unless(reason: str | None) -> None:
    if reason:
        pytest.skip(reason)


def test_parse_tsv_keeps_words_and_groups_lines_by_block_par_line():
    page = peers.tsv_to_page(TSV, 900, 300)
    assert [ln.text for ln in page.lines] == ["hello world", "second"]
    hello = page.lines[0].words[0]
    assert hello.bbox == (27, 35, 197, 94)
    assert hello.confidence == pytest.approx(0.965)
    assert [w.word_idx for w in page.words] == [0, 1, 2]
    assert [w.line_idx for w in page.words] == [0, 0, 1]


def test_parse_tsv_of_an_empty_page():
    assert peers.tsv_to_page("", 10, 10).lines == []
    assert peers.tsv_to_page(TSV.splitlines()[0], 10, 10).lines == []


def test_split_line_apportions_the_box_by_character_position():
    quad = np.array([[0, 10], [110, 10], [110, 30], [0, 30]], np.float64)
    words = peers.split_line(quad, "ab  cdefgh ijk", 0.9)  # 14 characters
    assert [w.text for w in words] == ["ab", "cdefgh", "ijk"]
    x0, y0, x1, y1 = words[1].bbox
    assert (x0, x1) == pytest.approx((4 / 14 * 110, 10 / 14 * 110))
    assert (y0, y1) == (10, 30)
    assert words[2].bbox[2] == pytest.approx(110)
    # polygon stays clockwise from top-left on a tilted line
    tilted = np.array([[0, 0], [100, 20], [96, 40], [-4, 20]], np.float64)
    pts = [(p.x, p.y) for p in peers.split_line(tilted, "one two", 1.0)[0].polygon]
    assert pts[0] == (0, 0) and pts[3] == (-4, 20) and pts[1][0] > pts[0][0] and pts[2][1] > pts[1][1]


def test_rapid_result_to_page():
    result = [
        [[[0, 0], [100, 0], [100, 20], [0, 20]], "hello world", 0.8],
        [[[0, 40], [50, 40], [50, 60], [0, 60]], "  ", 0.5],
    ]
    page = peers.rapid_result_to_page(result, 200, 100)
    assert page.text == "hello world" and len(page.lines) == 1
    assert peers.rapid_result_to_page(None, 200, 100).lines == []


def test_tesseract_reads_printed_words(printed):
    _skip_unless(peers.tesseract_available())
    img, items = printed
    page = peers.tesseract_page(img)
    assert page.text.split() == [w for w, _, _ in WORDS]
    assert len(page.lines) == 2
    metrics = evaluate(
        [EvalPage("mem://printed", items, "word", img)],
        peers.tesseract_page,
        peers.tesseract_read_crops,
        progress=False,
    )
    assert metrics["word_det_f1"] >= 0.75 and metrics["page_cer"] <= 0.1
    assert metrics["crop_cer"] <= 0.25


def test_rapidocr_reads_printed_words(printed):
    _skip_unless(peers.rapidocr_available())
    img, items = printed
    rapid = peers.RapidPeer(threads=1)
    page = rapid(img)
    assert sorted(page.text.lower().split()) == sorted(w for w, _, _ in WORDS)  # its own reading order
    metrics = evaluate(
        [EvalPage("mem://printed", items, "word", img)], rapid, rapid.read_crops, progress=False
    )
    # its box order (top edge, then x) can put 'table' before 'paper': score order-free here
    assert metrics["word_det_f1"] >= 0.75 and metrics["bow_f1"] >= 0.99
    assert metrics["crop_cer"] <= 0.25


# ---- bench helpers (jobs/bench.py) -------------------------------------------------------------------


def test_repeated_pdf_has_every_page_and_stays_small(tmp_path):
    import io
    import subprocess

    from PIL import Image

    from jobs.bench import repeated_pdf

    jpegs = []
    for shade in (90, 200):
        buf = io.BytesIO()
        Image.new("RGB", (300, 400), (shade, shade, shade)).save(buf, "JPEG")
        jpegs.append((buf.getvalue(), 300, 400))
    pdf = repeated_pdf(jpegs, 50, tmp_path / "long.pdf")
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert "Pages:           50" in info
    assert pdf.stat().st_size < sum(len(j) for j, _, _ in jpegs) + 50 * 300


def test_instrumented_pipeline_times_every_stage(tiny_models):
    from batch.pipeline import Pipeline
    from jobs.bench import StageClock, instrument, stage_rows

    clock = StageClock()
    pipe = Pipeline.load(tiny_models, "cpu")
    undo = instrument(pipe, clock)
    page = np.full((400, 300, 3), 255, np.uint8)
    cv2.putText(page, "ink", (20, 200), cv2.FONT_HERSHEY_SIMPLEX, 3, (0, 0, 0), 8)
    try:
        pages = pipe.process_pages([page, page])
    finally:
        undo()
    assert len(pages) == 2
    assert {"_process_pages", "seg_resize", "seg_model", "postprocess", "lines"} <= set(clock.seconds)
    rows = stage_rows(clock.seconds, 2)
    assert rows[-1][0] == "other" and float(rows[-1][1]) >= 0
