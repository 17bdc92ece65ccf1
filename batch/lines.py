"""Group words into lines and put them in reading order.

Robust to mild page skew (the page's dominant word angle is removed first) and to
ascenders/descenders overlapping the next line: lines are first built from the words of
typical height only, a word joining the line whose nearest word (in x) is closest in y;
then each unusually tall word (a tall capital, a long descender, two lines' strokes in
one box) joins the line whose nearest word it overlaps most vertically, so it can neither
pull two lines together nor start a line of its own when it belongs to one.
"""

from __future__ import annotations

import math

import numpy as np

from batch.core.schema import Line, Point, Word
from transforms.line_geometry import line_quad

TALL = 1.3  # a word taller than this times the median height is placed after the others


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
