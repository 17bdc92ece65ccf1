"""Group words into lines and put them in reading order.

Robust to mild page skew (the page's dominant word angle is removed first) and to
ascenders/descenders overlapping the next line (a word joins the line whose nearest
word it overlaps most vertically, not the first line that touches it).
"""
from __future__ import annotations

import math

import numpy as np

from batch.schema import Line, Word


def _geometry(words: list[Word]) -> tuple[np.ndarray, np.ndarray, float]:
    """Centres, heights, and the page's skew angle (radians) from the words' top edges."""
    quads = np.array([[[p.x, p.y] for p in w.polygon] for w in words], dtype=np.float64)
    centres = quads.mean(1)
    heights = (np.linalg.norm(quads[:, 3] - quads[:, 0], axis=1)
               + np.linalg.norm(quads[:, 2] - quads[:, 1], axis=1)) / 2
    widths = (np.linalg.norm(quads[:, 1] - quads[:, 0], axis=1)
              + np.linalg.norm(quads[:, 2] - quads[:, 3], axis=1)) / 2
    top = quads[:, 1] - quads[:, 0]
    angles = np.arctan2(top[:, 1], top[:, 0])
    wide = (widths > 1.5 * heights) & (np.abs(angles) < math.radians(30))
    skew = float(np.median(angles[wide])) if wide.any() else 0.0
    return centres, np.maximum(heights, 1.0), skew


def group_lines(words: list[Word]) -> list[Line]:
    """Lines top to bottom, words left to right; sets each word's line_idx and word_idx."""
    if not words:
        return []
    centres, heights, skew = _geometry(words)
    c, s = math.cos(-skew), math.sin(-skew)
    x = centres[:, 0] * c - centres[:, 1] * s   # deskewed coordinates
    y = centres[:, 0] * s + centres[:, 1] * c
    lines: list[list[int]] = []
    for i in np.argsort(y, kind="stable"):
        best, best_gap = None, math.inf
        for li, members in enumerate(lines):
            j = min(members, key=lambda m: abs(x[m] - x[i]))  # nearest word of that line
            gap = abs(y[j] - y[i])
            if gap < 0.5 * max(heights[i], heights[j]) and gap < best_gap:
                best, best_gap = li, gap
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
