"""Probability map -> word quadrilaterals with a score (DB post-processing).

The network is trained on words shrunk by SHRINK_RATIO; here each connected kernel is
fitted with a minimum-area rectangle and grown back by the exact inverse of that shrink.

Models layer: imports models, transforms and batch.core only (tests/test_layers.py). Used by the
segmenter runner (models/segmenter/runner.py) and training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

SHRINK_RATIO = 0.4
LINE_SHRINK = 0.5  # text lines are shrunk harder: neighbouring lines' polygons often overlap


@dataclass(frozen=True)
class PostConfig:
    # Both chosen for the shipped segmenter on synthetic seed 4242 (word F1 0.867 at 0.4/0.5, 0.900 here)
    bin_thresh: float = 0.6  # pixel probability that counts as text
    box_thresh: float = 0.7  # mean probability a kernel needs to become a word
    shrink_ratio: float = SHRINK_RATIO  # what training shrank words by (models/segmenter/targets.py)
    min_size: float = 3.0  # shorter side in map pixels; smaller kernels are noise
    max_candidates: int = 3000
    line: bool = False  # kernels are text lines (targets.make_line_targets): grow by unshrink_line


# Lines: the same kernel-and-grow steps with the line head's shrink; a line kernel is long and thin,
# so a lower bar on its mean probability keeps faint lines without admitting specks (min_size).
LINE_POST = PostConfig(bin_thresh=0.5, box_thresh=0.6, shrink_ratio=LINE_SHRINK, min_size=2.0, line=True)


def order_quad(pts: np.ndarray) -> np.ndarray:
    """4x2 points ordered top-left, top-right, bottom-right, bottom-left (clockwise, y down)."""
    pts = np.asarray(pts, dtype=np.float32).reshape(4, 2)
    s, d = pts.sum(1), np.diff(pts, axis=1).ravel()
    tl, br = pts[np.argmin(s)], pts[np.argmax(s)]
    tr, bl = pts[np.argmin(d)], pts[np.argmax(d)]
    quad = np.stack([tl, tr, br, bl])
    if len({tuple(p) for p in quad.tolist()}) < 4:  # degenerate for 45-degree boxes: sort by angle
        c = pts.mean(0)
        ang = np.arctan2(pts[:, 1] - c[1], pts[:, 0] - c[0])
        quad = pts[np.argsort(ang)]
        quad = np.roll(quad, -int(np.argmin(quad.sum(1))), axis=0)
    return quad


def unshrink(rect: tuple, ratio: float = SHRINK_RATIO) -> tuple:
    """Grow a kernel rectangle back to the word it was shrunk from.

    Training shrank a w x h word by D = A (1 - r^2) / L (A area, L perimeter). For the kernel
    w' x h' the word is (w' + 2d) x (h' + 2d) with d solving that same relation:
    (8 - 4k) d^2 + (2 - 2k)(w' + h') d - k w' h' = 0, k = 1 - r^2.
    """
    (cx, cy), (w, h), angle = rect
    w, h = w + 1, h + 1  # the contour runs through pixel centres
    k = 1 - ratio * ratio
    a, b, c = 8 - 4 * k, (2 - 2 * k) * (w + h), -k * w * h
    d = (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)
    return (cx, cy), (w + 2 * d, h + 2 * d), angle


def unshrink_line(rect: tuple, contour: np.ndarray, ratio: float = LINE_SHRINK) -> tuple:
    """Grow a line kernel back to its line. Training eroded each line by D = (1 - r^2) h / 2
    (h its mean height), leaving a kernel of mean thickness t = r^2 h: so D = (1 - r^2) t / (2 r^2),
    with t measured as kernel area / kernel length (robust to the ascender peaks that set the
    kernel rectangle's height)."""
    (cx, cy), (w, h), angle = rect
    length = max(w, h) + 1
    t = (cv2.contourArea(contour) + length) / length  # + length: the contour runs through pixel centres
    d = (1 - ratio * ratio) * t / (2 * ratio * ratio)
    return (cx, cy), (w + 1 + 2 * d, h + 1 + 2 * d), angle


def _mean_score(prob: np.ndarray, contour: np.ndarray) -> float:
    """Mean probability inside the contour, computed on its bounding box only."""
    x, y, w, h = cv2.boundingRect(contour)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [contour.reshape(-1, 2) - [x, y]], 1)
    return float(cv2.mean(prob[y : y + h, x : x + w], mask)[0])


def boxes_from_prob(prob: np.ndarray, cfg: PostConfig = PostConfig()) -> list[tuple[np.ndarray, float]]:
    """prob: HxW float map. Returns [(4x2 quad in map pixels, score)]."""
    bitmap = (prob > cfg.bin_thresh).astype(np.uint8)
    contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    h, w = prob.shape
    out = []
    for contour in contours[: cfg.max_candidates]:
        if len(contour) < 3:
            continue
        rect = cv2.minAreaRect(contour)
        if min(rect[1]) < cfg.min_size:
            continue
        score = _mean_score(prob, contour)
        if score < cfg.box_thresh:
            continue
        rect = (
            unshrink_line(rect, contour, cfg.shrink_ratio) if cfg.line else unshrink(rect, cfg.shrink_ratio)
        )
        if min(rect[1]) < cfg.min_size + 2:
            continue
        quad = order_quad(cv2.boxPoints(rect))
        quad[:, 0] = quad[:, 0].clip(0, w)
        quad[:, 1] = quad[:, 1].clip(0, h)
        out.append((quad, score))
    return out
