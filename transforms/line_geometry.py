"""Geometry of text lines: the rotated rectangle around a line, margins, and where a stretch of a
rectified line crop (a word found by CTC) lies on the page.

Quads are 4x2 float32 arrays, TL, TR, BR, BL, in page pixels.
"""

from __future__ import annotations

import cv2
import numpy as np


def order_quad(pts: np.ndarray) -> np.ndarray:
    """4 corners -> TL, TR, BR, BL for a text line that reads left to right (wider than tall)."""
    pts = np.asarray(pts, np.float32)
    c = pts.mean(0)
    ang = np.arctan2(pts[:, 1] - c[1], pts[:, 0] - c[0])
    pts = pts[np.argsort(ang)]  # clockwise in image coordinates, from -pi
    tl = int(np.argmin(pts.sum(1)))
    pts = np.roll(pts, -tl, axis=0)
    if np.linalg.norm(pts[1] - pts[0]) < np.linalg.norm(pts[3] - pts[0]):  # started on a short side
        pts = np.roll(pts, -1, axis=0) if pts[1, 0] > pts[3, 0] else pts
    return pts


def line_quad(polygon: np.ndarray) -> np.ndarray:
    """The minimum-area rotated rectangle around a line polygon (any number of points), TL,TR,BR,BL.
    Rotated lines are cut straight; a near-vertical rectangle is read as horizontal (a line is long)."""
    rect = cv2.minAreaRect(np.asarray(polygon, np.float32).reshape(-1, 2))
    (cx, cy), (w, h), angle = rect
    if h > w:  # OpenCV may report the long side as height
        rect = ((cx, cy), (h, w), angle - 90)
    if abs(rect[2]) > 45:  # keep the angle within ±45°: text stays upright
        rect = (rect[0], rect[1], rect[2] - 180 * np.sign(rect[2]))
    return order_quad(cv2.boxPoints(rect))


def expand_quad(quad: np.ndarray, top: float, bottom: float, side: float = 0.0) -> np.ndarray:
    """Grow a TL,TR,BR,BL quad by fractions of its height above, below and at both ends."""
    q = np.asarray(quad, np.float32)
    down = ((q[3] - q[0]) + (q[2] - q[1])) / 2
    right = ((q[1] - q[0]) + (q[2] - q[3])) / 2
    right = right / max(np.linalg.norm(right), 1e-6) * np.linalg.norm(down)
    return np.array(
        [
            q[0] - top * down - side * right,
            q[1] - top * down + side * right,
            q[2] + bottom * down + side * right,
            q[3] + bottom * down - side * right,
        ],
        np.float32,
    )


def span_polygon(quad: np.ndarray, u0: float, u1: float) -> np.ndarray:
    """The part of a line quad between fractions u0 < u1 of its length (a word inside the line)."""
    q = np.asarray(quad, np.float32)
    top0, top1 = q[0] + u0 * (q[1] - q[0]), q[0] + u1 * (q[1] - q[0])
    bot0, bot1 = q[3] + u0 * (q[2] - q[3]), q[3] + u1 * (q[2] - q[3])
    return np.array([top0, top1, bot1, bot0], np.float32)
