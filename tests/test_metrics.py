"""jobs.metrics.polygon_iou and match on word quads and on real-looking (long, wavy, non-convex)
line polygons, against areas worked out independently."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from jobs.metrics import match, polygon_iou
from transforms.line_geometry import line_quad


def box(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


def rotated(cx, cy, w, h, angle):
    return cv2.boxPoints(((cx, cy), (w, h), angle)).astype(np.float32)


def convex_iou(a, b):
    """The convex-only scorer the old polygon_iou was: right for convex quads, the reference here."""
    area_a, area_b = abs(cv2.contourArea(a)), abs(cv2.contourArea(b))
    inter, _ = cv2.intersectConvexConvex(a, b)
    return inter / (area_a + area_b - inter)


def shoelace(poly: np.ndarray) -> float:
    x, y = poly[:, 0].astype(np.float64), poly[:, 1].astype(np.float64)
    return abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2


def wavy_line(x0=20.0, x1=420.0, top=50.0, height=30.0, n=20, amp=4.0, skew=0.05) -> np.ndarray:
    """A 2n-point line polygon: a wavy top edge left to right, the bottom edge back (non-convex)."""
    xs = np.linspace(x0, x1, n)
    wave = amp * np.sin(xs / 17.0)
    topline = np.stack([xs, top + skew * xs + wave], 1)
    bottom = np.stack([xs, top + height + skew * xs - wave], 1)[::-1]
    return np.concatenate([topline, bottom]).astype(np.float32)


L_SHAPE = np.array([[0, 0], [20, 0], [20, 10], [10, 10], [10, 20], [0, 20]], np.float32)  # area 300


def test_convex_quads_score_as_before():
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = rotated(*rng.uniform(40, 60, 2), *rng.uniform(10, 40, 2), rng.uniform(-40, 40))
        b = rotated(*rng.uniform(40, 60, 2), *rng.uniform(10, 40, 2), rng.uniform(-40, 40))
        assert polygon_iou(a, b) == pytest.approx(convex_iou(a, b), abs=1e-3)
    assert polygon_iou(box(0, 0, 10, 10), box(5, 0, 15, 10)) == pytest.approx(1 / 3, rel=1e-4)


def test_non_convex_polygon_against_rectangles():
    assert polygon_iou(L_SHAPE, box(0, 0, 20, 20)) == pytest.approx(300 / 400, rel=1e-4)
    # only the L's top-right arm lies in the right half: 100 / (300 + 200 - 100)
    assert polygon_iou(L_SHAPE, box(10, 0, 20, 20)) == pytest.approx(0.25, rel=1e-4)
    assert polygon_iou(box(10, 0, 20, 20), L_SHAPE) == pytest.approx(0.25, rel=1e-4)
    # the L's notch: boxes overlap, shapes only touch at the corner
    assert polygon_iou(L_SHAPE, box(10, 10, 20, 20)) == 0.0


def test_wavy_line_polygon_against_its_rotated_box():
    poly = wavy_line()
    assert len(poly) == 40
    quad = line_quad(poly)
    expected = shoelace(poly) / abs(cv2.contourArea(quad))  # the polygon lies inside its box
    iou = polygon_iou(poly, quad)
    assert iou == pytest.approx(expected, rel=1e-3)
    assert 0.6 < iou < 0.95
    assert polygon_iou(quad, poly) == pytest.approx(iou, rel=1e-6)


def test_identical_disjoint_and_degenerate():
    poly = wavy_line()
    assert polygon_iou(poly, poly) == pytest.approx(1.0)
    assert polygon_iou(L_SHAPE, L_SHAPE) == pytest.approx(1.0)
    assert polygon_iou(poly, poly + [0, 500]) == 0.0  # bounding boxes apart
    tri_a = np.array([[0, 0], [10, 0], [0, 10]], np.float32)  # x + y <= 10
    tri_b = np.array([[10, 10], [10, 1], [1, 10]], np.float32)  # x + y >= 11: boxes overlap
    assert polygon_iou(tri_a, tri_b) == 0.0
    assert polygon_iou(np.array([[0, 0], [5, 5], [10, 10]], np.float32), box(0, 0, 10, 10)) == 0.0
    assert polygon_iou(box(0, 0, 10, 10)[:2], box(0, 0, 10, 10)) == 0.0


def test_repeated_points_do_not_change_the_area():
    """Exported line polygons repeat points (runs of the same vertex): same region, same score."""
    poly = wavy_line()
    repeated = np.repeat(poly, 3, axis=0)
    quad = line_quad(poly)
    assert polygon_iou(repeated, quad) == pytest.approx(polygon_iou(poly, quad), rel=1e-6)


def test_match_pairs_line_polygons_with_boxes():
    gts = [wavy_line(top=50 + 60 * k, skew=0.0) for k in range(4)]
    preds = [line_quad(g) for g in gts[::-1]] + [box(0, 600, 400, 630)]  # reversed, plus a stray
    m = match(preds, gts, 0.5)
    assert sorted((i, j) for i, j, _ in m) == [(0, 3), (1, 2), (2, 1), (3, 0)]
    assert all(iou > 0.6 for _, _, iou in m)
