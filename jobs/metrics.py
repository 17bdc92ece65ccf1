"""Metrics shared by training and evaluation: edit distances, IoU matching, bag-of-words F1."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import cv2
import numpy as np


def levenshtein(a: str | list, b: str | list) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


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


def polygon_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two convex quads (Nx2)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    area_a, area_b = abs(cv2.contourArea(a)), abs(cv2.contourArea(b))
    if area_a <= 0 or area_b <= 0:
        return 0.0
    inter, _ = cv2.intersectConvexConvex(a, b)
    union = area_a + area_b - inter
    return float(inter / union) if union > 0 else 0.0


def _bbox(q: np.ndarray) -> tuple[float, float, float, float]:
    return float(q[:, 0].min()), float(q[:, 1].min()), float(q[:, 0].max()), float(q[:, 1].max())


def match(preds: list[np.ndarray], gts: list[np.ndarray], iou_thresh: float = 0.5
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
