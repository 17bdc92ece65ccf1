"""The synthetic-data engine's page being written (transforms layer; transforms/synth.py is the map).

A Page holds the paper, the ink composited so far and every word placed on it with its polygon;
a line is drafted word by word (draft_line: where each word goes, following the hand's baseline
and slant), then committed (commit_line) or written in one call (write_line)."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from transforms import augment as A
from transforms.synth_crops import _stamp
from transforms.synth_hands import Hand, InkWord


@dataclass
class PlacedWord:
    text: str
    polygon: np.ndarray  # (4, 2) page pixels, clockwise from top-left
    line_idx: int
    kind: str


@dataclass
class Page:
    """A page being written: float RGB paper, the words so far, the next free line index."""

    img: np.ndarray
    words: list[PlacedWord] = field(default_factory=list)
    next_line: int = 0

    @property
    def h(self) -> int:
        return self.img.shape[0]

    @property
    def w(self) -> int:
        return self.img.shape[1]


@dataclass
class LineDraft:
    """A line laid out but not yet on the page: its ink strip, where it goes, its word boxes."""

    strip: np.ndarray  # float32 ink alpha
    m: np.ndarray  # 2x3 affine, strip -> page
    words: list[InkWord]  # the words that fit
    quads: np.ndarray  # (n, 4, 2) word polygons in page pixels
    ink: np.ndarray

    def bbox(self, grow: float = 0.0) -> tuple[float, float, float, float]:
        pts = self.quads.reshape(-1, 2)
        x0, y0 = pts.min(0)
        x1, y1 = pts.max(0)
        return x0 - grow, y0 - grow, x1 + grow, y1 + grow


def draft_line(
    words: list[InkWord],
    hand: Hand,
    x: float,
    baseline: float,
    max_w: float,
    rng: np.random.Generator,
    angle: float | None = None,
) -> LineDraft:
    """Lay words left to right from (x, baseline) on a strip until `max_w` is used (at least one).

    The strip is later rotated by the line's skew onto the page; the word polygons go through the
    same rotation, so they stay tight around the ink.
    """
    xh = hand.x_height
    strip_h = int(max(w.alpha.shape[0] for w in words) * 2 + xh)
    base_y = strip_h / 2
    pad = int(2 * xh) + 4  # room for swashes and slant left of the first word's ink
    strip = np.zeros((strip_h, int(max_w + 4 * xh) + 2 * pad), np.float32)
    cx, boxes, placed = float(pad), [], []
    for i, w in enumerate(words):
        bw = w.box[2] - w.box[0]
        if i and cx - pad + bw > max_w:
            break
        y = base_y - w.baseline + rng.normal(0, 0.06 * xh) * (hand.kind == "H")
        ox, oy = int(round(cx - w.box[0])), int(round(y))
        _stamp(strip, w.alpha, ox, oy)
        boxes.append(
            [
                [ox + w.box[0], oy + w.box[1]],
                [ox + w.box[2], oy + w.box[1]],
                [ox + w.box[2], oy + w.box[3]],
                [ox + w.box[0], oy + w.box[3]],
            ]
        )
        placed.append(w)
        cx += bw + hand.word_space * xh * (rng.uniform(0.75, 1.3) if hand.kind == "H" else 1.0)
    angle = hand.skew + rng.normal(0, hand.skew_jitter) if angle is None else angle
    m: np.ndarray = cv2.getRotationMatrix2D((float(pad), base_y), 0.0 if hand.kind == "P" else angle, 1.0)
    m[:, 2] += (x - pad, baseline - base_y)
    return LineDraft(strip, m, placed, A.warp_polys(np.asarray(boxes, np.float32), m), hand.ink)


def commit_line(page: Page, draft: LineDraft, label: bool = True) -> int:
    """Put a drafted line on the page; its words get the next line index. Returns the word count."""
    _composite_warped(page.img, draft.strip, draft.m, draft.ink)
    if label:
        idx = page.next_line
        page.next_line += 1
        page.words.extend(PlacedWord(w.text, q, idx, w.kind) for w, q in zip(draft.words, draft.quads))
    return len(draft.words)


def write_line(
    page: Page,
    words: list[InkWord],
    hand: Hand,
    x: float,
    baseline: float,
    max_w: float,
    rng: np.random.Generator,
    angle: float | None = None,
    label: bool = True,
) -> int:
    """Draft and commit one line; returns how many of `words` fit."""
    if not words:
        return 0
    return commit_line(page, draft_line(words, hand, x, baseline, max_w, rng, angle), label)


def _overlaps(page: Page, box: tuple[float, float, float, float]) -> bool:
    """Whether an axis-aligned box meets any word already on the page (or leaves the page)."""
    x0, y0, x1, y1 = box
    if x0 < 0 or y0 < 0 or x1 > page.w or y1 > page.h:
        return True
    for w in page.words:
        (a0, b0), (a1, b1) = w.polygon.min(0), w.polygon.max(0)
        if a0 < x1 and x0 < a1 and b0 < y1 and y0 < b1:
            return True
    return False


def _composite_warped(img: np.ndarray, alpha: np.ndarray, m: np.ndarray, colour: np.ndarray) -> None:
    """Warp `alpha` by affine `m` into its page bounding box only (cheap), then lay it as ink."""
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    if len(rows) == 0:
        return
    alpha = alpha[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # strips are mostly empty margin
    m = m.copy()
    m[:, 2] += m[:, :2] @ np.array([cols[0], rows[0]], np.float64)
    h, w = alpha.shape
    corners = A.warp_polys(np.array([[[0, 0], [w, 0], [w, h], [0, h]]], np.float32), m)[0]
    x0, y0 = np.floor(corners.min(0)).astype(int)
    x1, y1 = np.ceil(corners.max(0)).astype(int)
    if x1 <= 0 or y1 <= 0 or x0 >= img.shape[1] or y0 >= img.shape[0]:
        return
    mm = m.copy()
    mm[:, 2] -= (x0, y0)
    warped = cv2.warpAffine(alpha, mm, (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_LINEAR)
    A.composite(img, warped, colour, int(x0), int(y0))
