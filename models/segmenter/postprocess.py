"""Probability map -> word quadrilaterals with a score (DB post-processing).

The network is trained on words shrunk by SHRINK_RATIO; here each connected kernel is
grown back by the matching offset ("unclip") and fitted with a minimum-area rectangle.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pyclipper

SHRINK_RATIO = 0.4


@dataclass(frozen=True)
class PostConfig:
    bin_thresh: float = 0.3     # pixel probability that counts as text
    box_thresh: float = 0.5     # mean probability a kernel needs to become a word
    unclip_ratio: float = 1.6   # grows a kernel back; ~ 1 / (1 - SHRINK_RATIO**2) in area terms
    min_size: float = 3.0       # shorter side in map pixels; smaller kernels are noise
    max_candidates: int = 3000


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


def unclip(box: np.ndarray, ratio: float) -> np.ndarray | None:
    area = cv2.contourArea(box)
    length = cv2.arcLength(box, True)
    if length == 0:
        return None
    offset = pyclipper.PyclipperOffset()
    offset.AddPath(box.astype(np.int64).tolist(), pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    grown = offset.Execute(area * ratio / length)
    if not grown:
        return None
    return np.array(max(grown, key=len), dtype=np.float32)


def _mean_score(prob: np.ndarray, contour: np.ndarray) -> float:
    """Mean probability inside the contour, computed on its bounding box only."""
    x, y, w, h = cv2.boundingRect(contour)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [contour.reshape(-1, 2) - [x, y]], 1)
    return float(cv2.mean(prob[y:y + h, x:x + w], mask)[0])


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
        grown = unclip(cv2.boxPoints(rect), cfg.unclip_ratio)
        if grown is None:
            continue
        rect = cv2.minAreaRect(grown)
        if min(rect[1]) < cfg.min_size + 2:
            continue
        quad = order_quad(cv2.boxPoints(rect))
        quad[:, 0] = quad[:, 0].clip(0, w)
        quad[:, 1] = quad[:, 1].clip(0, h)
        out.append((quad, score))
    return out
