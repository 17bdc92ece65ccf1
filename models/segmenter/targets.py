"""Training targets for the DB segmenter, from word polygons.

- prob target: each word shrunk by the DB offset D = A (1 - r^2) / L, filled with 1;
- prob mask: 0 over ignored words (too small, or marked not-text) so they cost nothing;
- threshold target: 1 - distance-to-border / D inside the word grown by D, rescaled to
  [0.3, 0.7]; threshold mask: that grown region.

Models layer: imports models, transforms and batch.core only (tests/test_layers.py). Used by
training (jobs/datasets.py) only.
"""

from __future__ import annotations

import cv2
import numpy as np
import pyclipper

from models.segmenter.postprocess import LINE_SHRINK, SHRINK_RATIO

T_MIN, T_MAX = 0.3, 0.7


def _offset(poly: np.ndarray, distance: float) -> np.ndarray | None:
    pc = pyclipper.PyclipperOffset()
    pc.AddPath(np.round(poly).astype(np.int64).tolist(), pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    out = pc.Execute(distance)
    return np.array(max(out, key=len), np.int32) if out else None


def _segment_distance(xs: np.ndarray, ys: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from grid points to the segment a-b."""
    ab = b - a
    denom = float(ab @ ab) or 1e-6
    t = np.clip(((xs - a[0]) * ab[0] + (ys - a[1]) * ab[1]) / denom, 0, 1)
    return np.hypot(xs - (a[0] + t * ab[0]), ys - (a[1] + t * ab[1]))


def _draw_threshold(tmap: np.ndarray, poly: np.ndarray, grown: np.ndarray, d: float) -> None:
    h, w = tmap.shape
    x0, y0 = grown.min(0).clip(0)
    x1, y1 = np.minimum(grown.max(0), [w - 1, h - 1])
    if x1 < x0 or y1 < y0:
        return
    ys, xs = np.mgrid[y0 : y1 + 1, x0 : x1 + 1].astype(np.float32)
    dist = np.full(xs.shape, np.inf, np.float32)
    for k in range(len(poly)):
        dist = np.minimum(dist, _segment_distance(xs, ys, poly[k], poly[(k + 1) % len(poly)]))
    value = 1 - np.clip(dist / d, 0, 1)
    region = tmap[y0 : y1 + 1, x0 : x1 + 1]
    np.maximum(region, value, out=region)


def make_targets(
    height: int,
    width: int,
    polygons: list[np.ndarray],
    ignore: list[bool] | None = None,
    shrink_ratio: float = SHRINK_RATIO,
    min_size: float = 3.0,
) -> dict[str, np.ndarray]:
    gt = np.zeros((height, width), np.float32)
    mask = np.ones((height, width), np.float32)
    tmap = np.zeros((height, width), np.float32)
    tmask = np.zeros((height, width), np.float32)
    ignore = ignore or [False] * len(polygons)
    for poly, ign in zip(polygons, ignore):
        poly = np.asarray(poly, np.float32).reshape(-1, 2)
        _, (rw, rh), _ = cv2.minAreaRect(poly)
        area, length = abs(cv2.contourArea(poly)), cv2.arcLength(poly, True)
        if ign or min(rw, rh) < min_size or length == 0:
            cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 0)
            continue
        d = area * (1 - shrink_ratio**2) / length
        shrunk = _offset(poly, -d)
        if shrunk is None or len(shrunk) < 3:
            cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 0)
            continue
        cv2.fillPoly(gt, [shrunk], 1)
        grown = _offset(poly, d)
        if grown is not None:
            cv2.fillPoly(tmask, [grown], 1)
            _draw_threshold(tmap, poly, grown, max(d, 1e-3))
    return {"gt": gt, "mask": mask, "thresh": tmap * (T_MAX - T_MIN) + T_MIN, "thresh_mask": tmask}


def make_line_targets(
    height: int, width: int, polygons: list[np.ndarray], shrink_ratio: float = LINE_SHRINK
) -> dict[str, np.ndarray]:
    """Line-head targets: each line polygon (any number of points) shrunk by the DB offset; a
    line too thin to shrink is masked out rather than taught as background."""
    gt = np.zeros((height, width), np.float32)
    mask = np.ones((height, width), np.float32)
    for poly in polygons:
        poly = np.asarray(poly, np.float32).reshape(-1, 2)
        # D from the line's mean-height rectangle, not the outline: annotated line outlines are
        # jagged (every ascender a peak), which inflates the perimeter and would shrink too little;
        # postprocess.unshrink inverts exactly this rectangle relation.
        _, (rw, rh), _ = cv2.minAreaRect(poly)
        long_side = float(max(rw, rh))
        mean_height = abs(cv2.contourArea(poly)) / long_side if long_side else 0.0
        d = (
            long_side * mean_height * (1 - shrink_ratio**2) / (2 * (long_side + mean_height))
            if mean_height
            else 0.0
        )
        shrunk = _offset(poly, -d) if d > 0 else None
        if shrunk is None or len(shrunk) < 3:
            cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 0)
            continue
        cv2.fillPoly(gt, [shrunk], 1)
    return {"line_gt": gt, "line_mask": mask}
