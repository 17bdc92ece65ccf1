"""DB post-processing (probability map -> word quads) and the training targets it inverts."""

from __future__ import annotations

import itertools
import math

import cv2
import numpy as np
import pytest

from models.segmenter.postprocess import PostConfig, boxes_from_prob, order_quad
from models.segmenter.targets import T_MAX, T_MIN, make_targets


def quad_mask(quad, shape) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(np.asarray(quad)).astype(np.int32)], 1)
    return m.astype(bool)


def iou(a, b, shape) -> float:
    ma, mb = quad_mask(a, shape), quad_mask(b, shape)
    return float((ma & mb).sum() / max((ma | mb).sum(), 1))


def rect(x0, y0, x1, y1) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


def rotated(cx, cy, w, h, degrees) -> np.ndarray:
    a = math.radians(degrees)
    u, v = np.array([math.cos(a), math.sin(a)]), np.array([-math.sin(a), math.cos(a)])
    return np.array(
        [
            [cx, cy] + x * u + y * v
            for x, y in [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]
        ],
        np.float32,
    )


SHRINK_RATIO = PostConfig().shrink_ratio


def grown_box(x0, y0, x1, y1, ratio=SHRINK_RATIO) -> np.ndarray:
    """The word a kernel came from: the box that training's shrink (D = A (1 - r^2) / L, see
    models/segmenter/targets.py) turns into this kernel, found by fixed-point iteration."""
    w, h, k, d = x1 - x0, y1 - y0, 1 - ratio**2, 0.0
    for _ in range(100):
        d = (w + 2 * d) * (h + 2 * d) * k / (2 * (w + h + 4 * d))
    return rect(x0 - d, y0 - d, x1 + d, y1 + d)


def match(found, expected_quad, shape) -> tuple[np.ndarray, float, float]:
    """The found (quad, score) that overlaps expected_quad most, with its IoU."""
    best = max(found, key=lambda qs: iou(qs[0], expected_quad, shape))
    return best[0], best[1], iou(best[0], expected_quad, shape)


# ---- boxes_from_prob -----------------------------------------------------------------------------

# The thresholds these hand-drawn maps are made for; the defaults are tuned on the shipped model.
DRAWN = PostConfig(bin_thresh=0.4, box_thresh=0.5)


def test_blobs_become_quads_in_the_right_places_with_their_scores():
    shape = (240, 320)
    prob = np.zeros(shape, np.float32)
    kernels = {(30, 40, 130, 60): 0.9, (180, 40, 290, 70): 0.75, (60, 150, 200, 175): 0.6}
    for (x0, y0, x1, y1), v in kernels.items():
        prob[y0:y1, x0:x1] = v
    prob[200:202, 250:252] = 0.95  # speck: shorter side under min_size
    prob[120:123, 10:60] = 0.95  # hairline: 3 px tall, still too thin
    prob[100:130, 250:300] = 0.4  # above bin_thresh but below box_thresh: not a word
    found = boxes_from_prob(prob, DRAWN)
    assert len(found) == 3
    for (x0, y0, x1, y1), v in kernels.items():
        quad, score, overlap = match(found, grown_box(x0, y0, x1, y1), shape)
        assert overlap > 0.7, ((x0, y0), overlap)
        assert score == pytest.approx(v, abs=0.02)
        assert quad.shape == (4, 2) and quad.dtype == np.float32
        # the grown box contains the kernel
        assert quad[:, 0].min() <= x0 and quad[:, 0].max() >= x1 - 1
        assert quad[:, 1].min() <= y0 and quad[:, 1].max() >= y1 - 1


def test_score_is_the_mean_probability_of_a_non_uniform_blob():
    prob = np.zeros((100, 200), np.float32)
    prob[40:60, 20:100] = 0.6
    prob[40:60, 100:180] = 1.0
    ((quad, score),) = boxes_from_prob(prob, DRAWN)
    assert score == pytest.approx(0.8, abs=0.02)
    assert iou(quad, grown_box(20, 40, 180, 60), prob.shape) > 0.7


def test_rotated_blob_gives_a_rotated_quad():
    shape = (300, 300)
    prob = np.zeros(shape, np.float32)
    kernel = rotated(150, 150, 140, 24, 25)
    cv2.fillPoly(prob, [np.round(kernel).astype(np.int32)], 0.9)
    ((quad, score),) = boxes_from_prob(prob, DRAWN)
    top = quad[1] - quad[0]
    assert math.degrees(math.atan2(top[1], top[0])) == pytest.approx(25, abs=3)
    d = 140 * 24 * 1.6 / (2 * (140 + 24))
    assert iou(quad, rotated(150, 150, 140 + 2 * d, 24 + 2 * d, 25), shape) > 0.7
    assert score == pytest.approx(0.9, abs=0.02)


def test_quads_are_clipped_to_the_map():
    prob = np.zeros((60, 100), np.float32)
    prob[0:12, 0:50] = 0.9  # touching the top-left corner
    ((quad, _),) = boxes_from_prob(prob, DRAWN)
    assert quad.min() >= 0 and quad[:, 0].max() <= 100 and quad[:, 1].max() <= 60


def test_empty_and_flat_maps_give_nothing():
    assert boxes_from_prob(np.zeros((64, 64), np.float32)) == []
    assert boxes_from_prob(np.full((64, 64), 0.2, np.float32), DRAWN) == []


def test_config_thresholds_are_used():
    prob = np.zeros((100, 200), np.float32)
    prob[40:60, 20:180] = 0.45
    assert boxes_from_prob(prob, DRAWN) == []
    assert len(boxes_from_prob(prob, PostConfig(bin_thresh=0.4, box_thresh=0.4))) == 1
    prob = np.zeros((100, 200), np.float32)
    for k in range(5):
        prob[10 + 15 * k : 20 + 15 * k, 20:180] = 0.9
    assert len(boxes_from_prob(prob)) == 5
    assert len(boxes_from_prob(prob, PostConfig(max_candidates=2))) == 2


# ---- order_quad ----------------------------------------------------------------------------------


def _clockwise(quad: np.ndarray) -> bool:
    """Positive shoelace area with y down = clockwise on screen."""
    x, y = quad[:, 0], quad[:, 1]
    return float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)) > 0


@pytest.mark.parametrize("degrees", [0, 10, -20, 40, -40])
def test_order_quad_any_input_order(degrees):
    q = rotated(100, 80, 120, 30, degrees)  # TL, TR, BR, BL by construction
    for perm in itertools.permutations(range(4)):
        out = order_quad(q[list(perm)])
        assert out.shape == (4, 2)
        assert np.allclose(out, q, atol=1e-4), (perm, out)


def test_order_quad_45_degrees_is_still_a_clockwise_quad():
    diamond = np.array([[50, 0], [100, 50], [50, 100], [0, 50]], np.float32)
    for perm in itertools.permutations(range(4)):
        out = order_quad(diamond[list(perm)])
        assert {tuple(p) for p in out.tolist()} == {tuple(p) for p in diamond.tolist()}
        assert _clockwise(out)
        assert out[0].sum() == diamond.sum(1).min()  # starts at a top-left-most corner


# ---- make_targets: the kernels that boxes_from_prob grows back -----------------------------------


def test_make_targets_on_a_known_polygon():
    h, w = 150, 200
    poly = rect(40, 50, 140, 90)  # 100 x 40
    t = make_targets(h, w, [poly])
    inside = quad_mask(poly, (h, w))
    gt = t["gt"] > 0
    # shrunk kernel: inside the polygon, offset by D = A (1 - r^2) / L = 4000 * 0.84 / 280 = 12
    assert gt.any() and not (gt & ~inside).any()
    assert abs(gt.sum() - (100 - 24) * (40 - 24)) / ((100 - 24) * (40 - 24)) < 0.1
    ys, xs = np.nonzero(gt)
    assert abs(xs.min() - 52) <= 1 and abs(xs.max() - 128) <= 1
    assert abs(ys.min() - 62) <= 1 and abs(ys.max() - 78) <= 1
    assert (t["mask"] == 1).all()
    # threshold map in [T_MIN, T_MAX], highest on the polygon's border, lowest far away
    th = t["thresh"]
    assert th.min() >= T_MIN - 1e-6 and th.max() <= T_MAX + 1e-6
    assert th[50, 90] == pytest.approx(T_MAX, abs=0.02)  # on the top edge
    assert th[70, 90] == pytest.approx(T_MIN, abs=1e-6)  # centre: further than D from edges
    assert th[5, 5] == pytest.approx(T_MIN, abs=1e-6)
    # threshold mask: the polygon grown by D
    tm = t["thresh_mask"] > 0
    assert tm[50, 90] and tm[40, 90] and not tm[30, 90] and tm[70, 90]


def test_make_targets_ignored_and_tiny_polygons_are_masked():
    h, w = 100, 100
    big, tiny = rect(10, 10, 60, 40), rect(70, 70, 90, 71.5)
    t = make_targets(h, w, [big, tiny], ignore=[True, False])
    assert t["gt"].sum() == 0
    assert (t["mask"][15:35, 15:55] == 0).all() and t["mask"][80, 20] == 1
    assert t["mask"][70, 80] == 0  # too thin to learn: masked, not a target


def test_targets_and_postprocess_round_trip():
    """The kernel make_targets draws, grown back by boxes_from_prob, lands on the original word."""
    h, w = 200, 320
    words = [rect(20, 30, 150, 70), rect(180, 30, 300, 62), rotated(160, 140, 200, 40, 8)]
    t = make_targets(h, w, words)
    found = boxes_from_prob(t["gt"])
    assert len(found) == len(words)
    for word in words:
        quad, score, overlap = match(found, word, (h, w))
        assert overlap > 0.65, overlap
        assert score == pytest.approx(1.0)
        centre_error = np.linalg.norm(quad.mean(0) - word.mean(0))
        assert centre_error < 2.0


@pytest.mark.parametrize("size", [(100, 30), (120, 32), (130, 40)])
def test_round_trip_recovers_word_height(size):
    w, h = size
    word = rect(50, 50, 50 + w, 50 + h)
    ((quad, _),) = boxes_from_prob(make_targets(200, 320, [word])["gt"])
    got_h = np.linalg.norm(quad[3] - quad[0])
    assert abs(got_h - h) <= 0.1 * h, got_h
