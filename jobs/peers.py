"""Peer OCR systems as `predict(image) -> Page` callables, so `jobs.evaluate` scores them exactly
like htr-batch (jobs/bench.py).

- Tesseract (Debian `tesseract-ocr`, `tesseract-ocr-eng`): the `tesseract` command with TSV output,
  one process per page, `OMP_THREAD_LIMIT=1`; the page goes in on stdin as a PPM (no encoding cost,
  same pixels as ours). Words and their boxes come from TSV level-5 rows; lines from Tesseract's own
  block/paragraph/line numbers.
- RapidOCR (PyPI `rapidocr-onnxruntime`, models inside the wheel, runs offline): PP-OCR detection,
  angle classifier and recognition on onnxruntime. It returns line boxes + text + score; each line
  is split at spaces into words whose boxes are cut from the line box by character position, so
  word-level scoring is fair to it.

Both also read single word crops (`read_crops`) for the recognition-only score.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from batch.core.schema import Line, Page, Point, Word

# ---- shared helpers ----------------------------------------------------------------------------


def box_polygon(x0: float, y0: float, x1: float, y1: float) -> list[Point]:
    """Axis-aligned box as our 4-point polygon, clockwise from top-left."""
    return [Point(x0, y0), Point(x1, y0), Point(x1, y1), Point(x0, y1)]


def number_words(lines: list[Line]) -> list[Line]:
    """Reading-order indices as our pipeline sets them: word_idx over the page, line_idx per line."""
    k = 0
    for i, line in enumerate(lines):
        line.line_idx = i
        for w in line.words:
            w.line_idx, w.word_idx = i, k
            k += 1
    return lines


# ---- Tesseract -----------------------------------------------------------------------------------


def tesseract_available() -> str | None:
    """Why Tesseract cannot run here, or None when it can (binary and English data present)."""
    exe = shutil.which("tesseract")
    if exe is None:
        return "the tesseract command is not installed (Debian: tesseract-ocr tesseract-ocr-eng)"
    langs = subprocess.run([exe, "--list-langs"], capture_output=True, text=True).stdout.split()
    return None if "eng" in langs else "tesseract has no English data (Debian: tesseract-ocr-eng)"


def tesseract_version() -> str:
    out = subprocess.run(["tesseract", "--version"], capture_output=True, text=True)
    return (out.stdout or out.stderr).splitlines()[0].strip()


def _ppm(image: np.ndarray) -> bytes:
    """RGB or gray array as binary PPM/PGM bytes: Leptonica reads them from stdin without decoding cost."""
    h, w = image.shape[:2]
    magic = b"P6" if image.ndim == 3 else b"P5"
    return magic + b"\n%d %d\n255\n" % (w, h) + np.ascontiguousarray(image).tobytes()


def _tess_env() -> dict[str, str]:
    return {**os.environ, "OMP_THREAD_LIMIT": "1"}  # one core per process; parallelism is ours


def run_tesseract_tsv(image: np.ndarray, psm: int = 3, lang: str = "eng", timeout: float = 300) -> str:
    """`tesseract stdin stdout --psm PSM tsv` on one page image; returns the TSV text."""
    cmd = ["tesseract", "stdin", "stdout", "-l", lang, "--psm", str(psm), "tsv"]
    out = subprocess.run(cmd, input=_ppm(image), capture_output=True, env=_tess_env(), timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(
            f"tesseract failed ({out.returncode}): {out.stderr.decode(errors='replace')[-500:]}"
        )
    return out.stdout.decode("utf-8", errors="replace")


@dataclass
class TsvWord:
    key: tuple[int, int, int]  # (block, paragraph, line): Tesseract's own line identity
    text: str
    conf: float  # 0..100
    left: int
    top: int
    width: int
    height: int


def parse_tsv(tsv: str) -> list[TsvWord]:
    """Level-5 (word) rows with text, in Tesseract's order."""
    rows = tsv.splitlines()
    if not rows:
        return []
    head = rows[0].split("\t")
    col = {name: i for i, name in enumerate(head)}
    words = []
    for row in rows[1:]:
        f = row.split("\t")
        if len(f) < len(head) or f[col["level"]] != "5":
            continue
        text = f[col["text"]].strip()
        if not text:
            continue
        words.append(
            TsvWord(
                key=(int(f[col["block_num"]]), int(f[col["par_num"]]), int(f[col["line_num"]])),
                text=text,
                conf=float(f[col["conf"]]),
                left=int(f[col["left"]]),
                top=int(f[col["top"]]),
                width=int(f[col["width"]]),
                height=int(f[col["height"]]),
            )
        )
    return words


def tsv_to_page(tsv: str, width: int, height: int, page_no: int = 1) -> Page:
    """Tesseract TSV -> our Page: one Line per (block, par, line), confidence 0..1.
    Tesseract has no separate detection score: det_score repeats the word confidence."""
    lines: dict[tuple[int, int, int], Line] = {}
    for tw in parse_tsv(tsv):
        conf = max(0.0, min(1.0, tw.conf / 100))
        word = Word(
            text=tw.text,
            confidence=conf,
            det_score=conf,
            polygon=box_polygon(tw.left, tw.top, tw.left + tw.width, tw.top + tw.height),
        )
        lines.setdefault(tw.key, Line(0, [])).words.append(word)
    return Page(page=page_no, width=width, height=height, lines=number_words(list(lines.values())))


def tesseract_page(image: np.ndarray, psm: int = 3, lang: str = "eng") -> Page:
    """predict(image) for Tesseract: RGB page array -> Page."""
    return tsv_to_page(run_tesseract_tsv(image, psm, lang), image.shape[1], image.shape[0])


def _pad_crop(crop: np.ndarray, height: int = 64, border: int = 12) -> np.ndarray:
    """Word crops are ~32 px high; Tesseract reads better with more pixels and a margin of paper."""
    scale = height / crop.shape[0]
    big = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), height), interpolation=cv2.INTER_CUBIC)
    paper = int(np.median(big))
    return cv2.copyMakeBorder(big, border, border, border, border, cv2.BORDER_CONSTANT, value=paper)


def tesseract_read_crops(crops: Sequence[np.ndarray], psm: int = 7, lang: str = "eng") -> list[str]:
    """Text of each gray word crop: one tesseract process for all of them (an image list file,
    pages separated by form feeds in the output)."""
    if not crops:
        return []
    with tempfile.TemporaryDirectory(prefix="htr-tess-") as tmp:
        paths = []
        for i, crop in enumerate(crops):
            path = Path(tmp) / f"{i:06d}.png"
            cv2.imwrite(str(path), _pad_crop(crop))
            paths.append(str(path))
        listing = Path(tmp) / "list.txt"
        listing.write_text("\n".join(paths) + "\n")
        cmd = ["tesseract", str(listing), "stdout", "-l", lang, "--psm", str(psm)]
        out = subprocess.run(cmd, capture_output=True, env=_tess_env(), timeout=60 + len(crops))
    texts = out.stdout.decode("utf-8", errors="replace").split("\f")
    texts = [" ".join(t.split()) for t in texts[: len(crops)]]
    return texts + [""] * (len(crops) - len(texts))


# ---- RapidOCR ------------------------------------------------------------------------------------


def rapidocr_available() -> str | None:
    """Why RapidOCR cannot run here, or None when it can."""
    try:
        import rapidocr_onnxruntime  # noqa: F401
    except ImportError as e:
        return f"rapidocr-onnxruntime is not installed ({e}); pip install --no-deps -r requirements-bench.txt"
    return None


def rapidocr_version() -> str:
    from importlib.metadata import version

    return f"rapidocr-onnxruntime {version('rapidocr-onnxruntime')}, onnxruntime {version('onnxruntime')}"


def split_line(quad: np.ndarray, text: str, score: float) -> list[Word]:
    """A recognised line -> words, each cut from the line quad (tl, tr, br, bl) between the
    fractions of the text where the word starts and ends (character position)."""
    n = len(text)
    words, start = [], 0
    for token in text.split():
        a = text.index(token, start)
        b = start = a + len(token)
        fa, fb = a / n, b / n
        top = quad[0] + (quad[1] - quad[0]) * np.array([[fa], [fb]])
        bottom = quad[3] + (quad[2] - quad[3]) * np.array([[fb], [fa]])
        pts = np.concatenate([top, bottom])
        words.append(
            Word(
                text=token,
                confidence=float(score),
                det_score=float(score),
                polygon=[Point(float(x), float(y)) for x, y in pts],
            )
        )
    return words


def rapid_result_to_page(result: list | None, width: int, height: int, page_no: int = 1) -> Page:
    """RapidOCR's [[box(4 points), text, score], ...] (or None) -> Page, one Line per box."""
    lines = []
    for box, text, score in result or []:
        words = split_line(np.asarray(box, np.float64), str(text), float(score))
        if words:
            lines.append(Line(0, words))
    return Page(page=page_no, width=width, height=height, lines=number_words(lines))


class RapidPeer:
    """RapidOCR with its default models and settings; onnxruntime intra-op threads = `threads`."""

    def __init__(self, threads: int = 1):
        from rapidocr_onnxruntime import RapidOCR

        self.engine = RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1)

    def __call__(self, image: np.ndarray) -> Page:
        result, _ = self.engine(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))  # it expects OpenCV's BGR
        return rapid_result_to_page(result, image.shape[1], image.shape[0])

    def read_crops(self, crops: Sequence[np.ndarray]) -> list[str]:
        """Recognition only (no detection, no angle classifier) on gray word crops."""
        texts = []
        for crop in crops:
            result, _ = self.engine(cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR), use_det=False, use_cls=False)
            texts.append(" ".join(str(result[0][0]).split()) if result else "")
        return texts
