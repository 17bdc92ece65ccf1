"""Line layout (pipeline layer): words grouped into lines in reading order, and the pieces of
lines the recogniser reads.

- group_lines: word boxes -> lines, top to bottom, words left to right;
- line_pieces: what the segmenter found on a page (models/segmenter/runner.py: word boxes, and
  lines from a line head) -> the pieces of lines to crop and read, in reading order;
- place_words: the words the recogniser read along a piece -> their polygons on the page;
- number_lines, outline: the page's lines numbered, each with its polygon and baseline.

group_lines is robust to mild page skew (the page's dominant word angle is removed first) and to
ascenders/descenders overlapping the next line: lines are first built from the words of
typical height only, a word joining the line whose nearest word (in x) is closest in y;
then each unusually tall word (a tall capital, a long descender, two lines' strokes in
one box) joins the line whose nearest word it overlaps most vertically, so it can neither
pull two lines together nor start a line of its own when it belongs to one.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from batch.core.schema import Line, Point, Word
from models.segmenter.postprocess import order_quad
from models.segmenter.runner import PageDetections
from transforms.crops import quad_size
from transforms.line_geometry import expand_quad, line_quad, span_polygon

TALL = 1.3  # a word taller than this times the median height is placed after the others
LINE_MARGIN = 0.08  # line quads from word boxes grown by this share of their height on each side
SEGMENT_GAP = 2.5  # a gap wider than this many line heights splits a line into two crops
UPRIGHT = 0.5  # a line-head kernel narrower than this share of its height is not a line of text
JOIN_GAP = 0.8  # pieces of one row closer than this many line heights are one line broken in two


def _skew(quads: np.ndarray) -> float:
    """The page's skew angle (radians) from the top edges of its wide words."""
    heights = (
        np.linalg.norm(quads[:, 3] - quads[:, 0], axis=1) + np.linalg.norm(quads[:, 2] - quads[:, 1], axis=1)
    ) / 2
    widths = (
        np.linalg.norm(quads[:, 1] - quads[:, 0], axis=1) + np.linalg.norm(quads[:, 2] - quads[:, 3], axis=1)
    ) / 2
    top = quads[:, 1] - quads[:, 0]
    angles = np.arctan2(top[:, 1], top[:, 0])
    wide = (widths > 1.5 * heights) & (np.abs(angles) < math.radians(30))
    return float(np.median(angles[wide])) if wide.any() else 0.0


def group_lines(words: list[Word]) -> list[Line]:
    """Lines top to bottom, words left to right; sets each word's line_idx and word_idx."""
    if not words:
        return []
    quads = np.array([[[p.x, p.y] for p in w.polygon] for w in words], dtype=np.float64)
    skew = _skew(quads)
    c, s = math.cos(-skew), math.sin(-skew)
    xs = quads[..., 0] * c - quads[..., 1] * s  # deskewed corners
    ys = quads[..., 0] * s + quads[..., 1] * c
    x, y = xs.mean(1), ys.mean(1)
    top, bottom = ys.min(1), ys.max(1)
    heights = np.maximum(bottom - top, 1.0)
    typical = heights <= TALL * float(np.median(heights))

    lines: list[list[int]] = []

    def nearest(members: list[int], i: int) -> int:
        return min(members, key=lambda m: abs(x[m] - x[i]))

    # 1. words of typical height: join the line whose nearest word is closest in y
    for i in np.argsort(y, kind="stable"):
        if not typical[i]:
            continue
        best, best_gap = None, math.inf
        for li, members in enumerate(lines):
            j = nearest(members, i)
            gap = abs(y[j] - y[i])
            if gap < 0.5 * max(heights[i], heights[j]) and gap < best_gap:
                best, best_gap = li, gap
        if best is None:
            lines.append([int(i)])
        else:
            lines[best].append(int(i))

    # 2. tall words: join the line whose nearest word they overlap most (as a share of the
    #    smaller of the two), if that is at least half
    for i in np.argsort(y, kind="stable"):
        if typical[i]:
            continue
        best, best_key = None, (0.5, -math.inf)
        for li, members in enumerate(lines):
            j = nearest(members, i)
            overlap = min(bottom[i], bottom[j]) - max(top[i], top[j])
            key = (overlap / min(heights[i], heights[j]), -abs(y[j] - y[i]))
            if key[0] >= 0.5 and key > best_key:
                best, best_key = li, key
        if best is None:
            lines.append([int(i)])
        else:
            lines[best].append(int(i))

    lines.sort(key=lambda m: float(np.median(y[m])))
    out, k = [], 0
    for li, members in enumerate(lines):
        members.sort(key=lambda m: x[m])
        line_words = []
        for m in members:
            w = words[m]
            w.line_idx, w.word_idx = li, k
            k += 1
            line_words.append(w)
        out.append(Line(li, line_words))
    return out


def outline(line: Line) -> None:
    """Set a line's polygon (the rotated rectangle around its words) and baseline (that rectangle's
    bottom edge, left to right: where the words' boxes end, at or a little below the written
    baseline), in the coordinates of its words. Lines without words are left as they are."""
    pts = np.array([[p.x, p.y] for w in line.words for p in w.polygon], np.float32)
    if len(pts) < 3:
        return
    quad = line_quad(pts)
    line.polygon = [Point(float(x), float(y)) for x, y in quad]
    line.baseline = [line.polygon[3], line.polygon[2]]


def split_segments(words: list[Word]) -> list[list[Word]]:
    """A line's words (left to right) cut at wide gaps: two columns or a date far right on the same
    baseline are read as separate crops, not as one crop full of empty paper."""
    if not words:
        return []
    heights = [w.bbox[3] - w.bbox[1] for w in words]
    gap_limit = SEGMENT_GAP * float(np.median(heights))
    segments = [[words[0]]]
    for prev, w in zip(words, words[1:]):
        if w.bbox[0] - prev.bbox[2] > gap_limit:
            segments.append([])
        segments[-1].append(w)
    return segments


def _along(quad: np.ndarray, points: np.ndarray) -> tuple[float, float]:
    """The stretch (u0, u1) of a line quad's length that points cover, as fractions."""
    axis = quad[1] - quad[0]
    u = (points - quad[0]) @ axis / max(float(axis @ axis), 1e-6)
    return float(u.min()), float(u.max())


def place_words(
    words: list[tuple[str, float, float, float]], quad: np.ndarray, boxes: list[Word]
) -> list[tuple[str, float, np.ndarray, float]]:
    """(text, confidence, polygon, detection score) for the words read along a line segment.

    A word takes the polygon of the segmenter's word box(es) lying mostly (>= half their length)
    within its CTC stretch: those boxes are tight around the ink. Where none does (the segmenter
    merged or split words differently), the word gets its stretch of the line quad."""
    spans = [(_along(quad, np.array([[p.x, p.y] for p in b.polygon])), b) for b in boxes]
    mean_det = float(np.mean([b.det_score for b in boxes])) if boxes else 0.0
    out = []
    for text, conf, u0, u1 in words:
        mine = [b for (a0, a1), b in spans if min(a1, u1) - max(a0, u0) >= 0.5 * max(a1 - a0, 1e-6)]
        if mine:
            pts = np.array([[p.x, p.y] for b in mine for p in b.polygon], np.float32)
            poly = pts.reshape(4, 2) if len(mine) == 1 else line_quad(pts)
            out.append((text, conf, poly, float(np.mean([b.det_score for b in mine]))))
        else:
            out.append((text, conf, span_polygon(quad, u0, u1), mean_det))
    return out


def _box_word(quad: np.ndarray, score: float) -> Word:
    return Word("", 0.0, score, [Point(float(x), float(y)) for x, y in quad])


def _inside(quad: np.ndarray, word: Word) -> bool:
    cx = sum(p.x for p in word.polygon) / len(word.polygon)
    cy = sum(p.y for p in word.polygon) / len(word.polygon)
    return cv2.pointPolygonTest(quad.astype(np.float32).reshape(-1, 1, 2), (cx, cy), False) >= 0


def line_pieces(dets: PageDetections) -> list[tuple[int, np.ndarray, list[Word]]]:
    """A page's text as pieces of lines to read, each (row in reading order, quad, word boxes in it).

    Without a line head: the word boxes grouped into lines, each cut at wide gaps (split_segments),
    one row per line. With one: its lines, plus lines grouped from the word boxes no line covers (a
    line it missed), all ordered into rows together (pieces side by side on one row: two columns, a
    date), with the pieces of one line broken apart joined again."""
    words = [_box_word(q, s) for q, s in dets.words]
    heads: list[tuple[np.ndarray, list[Word]]] = []
    for quad, _ in dets.lines or []:
        quad = order_quad(quad)
        width, height = quad_size(quad)
        if width < UPRIGHT * height:  # the page is deskewed: a tall kernel is a rule or a stroke
            continue
        heads.append((quad, [w for w in words if _inside(quad, w)]))
    taken = {id(w) for _, members in heads for w in members}
    grouped = [
        [
            (expand_quad(line_quad(_points(segment)), LINE_MARGIN, LINE_MARGIN, LINE_MARGIN), segment)
            for segment in split_segments(line.words)
        ]
        for line in group_lines([w for w in words if id(w) not in taken])
    ]
    if dets.lines is None:
        rows = grouped
    else:  # measured: one row grouping over both kinds reads real pages better than two
        rows = _rows(heads + [piece for row in grouped for piece in row])
    return [(k, quad, members) for k, row in enumerate(rows) for quad, members in row]


def _points(words: list[Word]) -> np.ndarray:
    return np.array([[p.x, p.y] for w in words for p in w.polygon], np.float32)


def _rows(pieces: list[tuple[np.ndarray, list[Word]]]) -> list[list[tuple[np.ndarray, list[Word]]]]:
    """Pieces grouped into rows top to bottom, left to right in a row, close pieces joined."""
    stand_ins = [_box_word(q, 1.0) for q, _ in pieces]
    piece_of = {id(w): p for w, p in zip(stand_ins, pieces)}
    return [_join_close([piece_of[id(w)] for w in row.words]) for row in group_lines(stand_ins)]


def _join_close(row: list[tuple[np.ndarray, list[Word]]]) -> list[tuple[np.ndarray, list[Word]]]:
    """One row's pieces (left to right) with the pieces of a line the segmenter broke apart joined
    again: read as one crop, the recogniser keeps the context across the break."""
    out = [row[0]] if row else []
    for quad, members in row[1:]:
        last, last_members = out[-1]
        height = min(quad_size(last)[1], quad_size(quad)[1])
        gap = float(quad[:, 0].min() - last[:, 0].max())
        if gap < JOIN_GAP * height:
            out[-1] = (line_quad(np.concatenate([last, quad]).astype(np.float32)), last_members + members)
        else:
            out.append((quad, members))
    return out


def number_lines(lines: dict[int, list[Word]]) -> list[Line]:
    """Lines in reading order, renumbered without the empty ones; words numbered across the page."""
    out: list[Line] = []
    k = 0
    for li in sorted(lines):
        for w in lines[li]:
            w.line_idx, w.word_idx = len(out), k
            k += 1
        out.append(Line(len(out), lines[li]))
    return out
