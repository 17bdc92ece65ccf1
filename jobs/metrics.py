"""Metrics shared by training and evaluation: edit distances, IoU matching, bag-of-words F1."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyclipper
from rapidfuzz.distance import Levenshtein


def levenshtein(a: str | list, b: str | list) -> int:
    """Edit distance over characters (str) or tokens (list). C code: a page is thousands of
    characters, and the pure-Python table (len(a) x len(b)) took seconds per page."""
    return int(Levenshtein.distance(a, b))


@dataclass
class ErrorRate:
    """Accumulates edits / reference length (CER on characters, WER on words)."""

    edits: int = 0
    length: int = 0

    def add(self, prediction: str | list, reference: str | list) -> None:
        self.edits += levenshtein(prediction, reference)
        self.length += len(reference)

    @property
    def rate(self) -> float:
        return self.edits / self.length if self.length else 0.0


_CLIP_SCALE = 256.0  # page pixels -> Clipper's integer grid: 1/256 px is far below annotation noise


def _clip_path(poly: np.ndarray) -> list[tuple[int, int]]:
    return [(int(round(x * _CLIP_SCALE)), int(round(y * _CLIP_SCALE))) for x, y in poly]


def _area(paths: list) -> float:
    """Net area of Clipper output (outer rings are positive, holes negative), in page pixels²."""
    return abs(sum(pyclipper.Area(p) for p in paths)) / _CLIP_SCALE**2


def _filled_area(path: list[tuple[int, int]]) -> float:
    """Area a polygon covers, also when its outline crosses itself or repeats points (real line
    polygons from ALTO/PAGE exports do both): the union of the polygon with itself."""
    try:
        return _area(pyclipper.SimplifyPolygon(path, pyclipper.PFT_NONZERO))
    except pyclipper.ClipperException:  # fewer than 3 distinct points: no area
        return 0.0


def polygon_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two simple polygons (Nx2, any N >= 3, convex or not): word quads and line polygons."""
    a, b = np.asarray(a, np.float64).reshape(-1, 2), np.asarray(b, np.float64).reshape(-1, 2)
    if len(a) < 3 or len(b) < 3:
        return 0.0
    (ax0, ay0), (ax1, ay1) = a.min(0), a.max(0)
    (bx0, by0), (bx1, by1) = b.min(0), b.max(0)
    if ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0:
        return 0.0  # bounding boxes apart: skip the clipping
    pa, pb = _clip_path(a), _clip_path(b)
    area_a, area_b = _filled_area(pa), _filled_area(pb)
    if area_a <= 0 or area_b <= 0:
        return 0.0
    pc = pyclipper.Pyclipper()
    try:
        pc.AddPath(pa, pyclipper.PT_SUBJECT, True)
        pc.AddPath(pb, pyclipper.PT_CLIP, True)
    except pyclipper.ClipperException:  # degenerate outline (all points on a line)
        return 0.0
    inter = _area(pc.Execute(pyclipper.CT_INTERSECTION, pyclipper.PFT_NONZERO, pyclipper.PFT_NONZERO))
    union = area_a + area_b - inter
    return float(min(1.0, inter / union)) if union > 0 else 0.0


def _bbox(q: np.ndarray) -> tuple[float, float, float, float]:
    return float(q[:, 0].min()), float(q[:, 1].min()), float(q[:, 0].max()), float(q[:, 1].max())


def match(
    preds: list[np.ndarray], gts: list[np.ndarray], iou_thresh: float = 0.5
) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching by descending IoU; returns (pred_idx, gt_idx, iou)."""
    pairs = []
    gboxes = [_bbox(np.asarray(g)) for g in gts]
    for i, p in enumerate(preds):
        px0, py0, px1, py1 = _bbox(np.asarray(p))
        for j, (gx0, gy0, gx1, gy1) in enumerate(gboxes):
            if px1 < gx0 or gx1 < px0 or py1 < gy0 or gy1 < py0:
                continue  # cheap reject before the polygon intersection
            iou = polygon_iou(p, gts[j])
            if iou >= iou_thresh:
                pairs.append((iou, i, j))
    pairs.sort(reverse=True)
    used_p, used_g, out = set(), set(), []
    for iou, i, j in pairs:
        if i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
            out.append((i, j, iou))
    return out


@dataclass
class DetectionScore:
    tp: int = 0
    n_pred: int = 0
    n_gt: int = 0

    def add(self, n_matched: int, n_pred: int, n_gt: int) -> None:
        self.tp += n_matched
        self.n_pred += n_pred
        self.n_gt += n_gt

    @property
    def precision(self) -> float:
        return self.tp / self.n_pred if self.n_pred else 0.0

    @property
    def recall(self) -> float:
        return self.tp / self.n_gt if self.n_gt else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def bag_of_words_f1(pred_words: list[str], ref_words: list[str]) -> float:
    """Order-free F1 over word multisets (insensitive to reading order and line breaks)."""
    p, r = Counter(pred_words), Counter(ref_words)
    common = sum((p & r).values())
    if not common:
        return 0.0
    precision, recall = common / sum(p.values()), common / sum(r.values())
    return 2 * precision * recall / (precision + recall)
