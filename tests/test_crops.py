"""transforms.crops: rectifying word quads, ink normalisation, width-bucketed batches."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from transforms.crops import (
    CROP_HEIGHT,
    WIDTH_BUCKETS,
    bucket_width,
    crop_width,
    ink_levels,
    normalise_ink,
    pack,
    plan_batches,
    quad_size,
    rectify,
)


def rotated_quad(cx: float, cy: float, w: float, h: float, degrees: float) -> np.ndarray:
    """TL, TR, BR, BL of a w x h rectangle centred at (cx, cy), turned clockwise on screen."""
    a = math.radians(degrees)
    ux, uy = math.cos(a), math.sin(a)  # along the text
    vx, vy = -math.sin(a), math.cos(a)  # down the text
    pts = [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]
    return np.array([[cx + x * ux + y * vx, cy + x * uy + y * vy] for x, y in pts], np.float32)


def page_with_left_half_inked(quad_w: float, quad_h: float, degrees: float, size=(400, 300)):
    """A white page, a rotated quad, and black ink filling the left half of the quad (minus a
    margin): the rectified crop must show ink on its left and paper on its right."""
    w, h = size
    gray = np.full((h, w), 255, np.uint8)
    cx, cy = w / 2, h / 2
    m = 0.15 * quad_h
    a = math.radians(degrees)
    left = rotated_quad(
        cx - quad_w / 4 * math.cos(a),
        cy - quad_w / 4 * math.sin(a),
        quad_w / 2 - 2 * m,
        quad_h - 2 * m,
        degrees,
    )
    cv2.fillPoly(gray, [np.round(left).astype(np.int32)], 0)
    return gray, rotated_quad(cx, cy, quad_w, quad_h, degrees)


@pytest.mark.parametrize("degrees", [0, 20, -35, 180])
@pytest.mark.parametrize("quad_h", [32, 120])  # 120: shrunk by area averaging first
def test_rectify_gives_upright_content(degrees, quad_h):
    """The quad's TL corner maps to the crop's top left whatever its angle (180: upside down
    on the page, so the crop turns it back)."""
    quad_w = 4 * quad_h
    gray, quad = page_with_left_half_inked(quad_w, quad_h, degrees, size=(800, 600))
    crop = rectify(gray, quad)
    assert crop.dtype == np.uint8 and crop.shape == (CROP_HEIGHT, 4 * CROP_HEIGHT)
    ink = crop < 128
    w = crop.shape[1]
    core = ink[6:-6, 6 : w // 2 - 6]  # inside the inked half, away from its border
    paper = ink[:, w // 2 + 4 :]  # the other half
    assert core.mean() > 0.95, core.mean()
    assert paper.mean() < 0.02, paper.mean()


def test_rectify_width_follows_aspect_and_limits():
    gray = np.full((200, 2000), 255, np.uint8)
    assert rectify(gray, rotated_quad(100, 100, 96, 24, 0)).shape == (32, 128)
    assert rectify(gray, rotated_quad(100, 100, 96, 24, 0), height=16).shape == (16, 64)
    # a very long quad is capped at max_width, a tiny one at 8 columns
    assert rectify(gray, rotated_quad(1000, 100, 1800, 20, 0)).shape == (32, 512)
    assert rectify(gray, rotated_quad(1000, 100, 1800, 20, 0), max_width=256).shape == (32, 256)
    assert rectify(gray, rotated_quad(100, 100, 2, 20, 0)).shape == (32, 8)


def test_rectify_quads_at_or_past_the_page_edge():
    gray = np.full((100, 100), 255, np.uint8)
    gray[:, :10] = 0
    # partly outside on the left: the outside is filled from the edge (ink column repeated)
    crop = rectify(gray, np.array([[-20, 10], [40, 10], [40, 30], [-20, 30]], np.float32))
    assert crop.shape == (32, 96)
    assert (crop[:, :40] < 128).mean() > 0.9 and (crop[:, 60:] > 128).all()
    # entirely outside, large enough to take the shrink path: blank paper, no exception
    far = np.array([[500, 500], [900, 500], [900, 600], [500, 600]], np.float32)
    blank = rectify(gray, far)
    assert blank.shape == (32, 128) and (blank == 255).all()


def test_quad_size_and_crop_width():
    assert quad_size(rotated_quad(50, 50, 80, 20, 0)) == pytest.approx((80, 20), abs=1e-4)
    assert quad_size(rotated_quad(50, 50, 80, 20, 33)) == pytest.approx((80, 20), abs=1e-3)
    # a trapezoid: mean of opposite edges
    trap = np.array([[0, 0], [100, 0], [80, 30], [20, 30]], np.float32)
    w, h = quad_size(trap)
    assert w == pytest.approx(80) and h == pytest.approx(math.hypot(20, 30))
    assert crop_width(rotated_quad(0, 0, 80, 20, 0)) == 128
    assert crop_width(rotated_quad(0, 0, 80, 0.1, 0)) == 512  # degenerate height: capped


def test_normalise_ink_maps_paper_to_0_and_ink_to_1():
    crop = np.full((32, 64), 255, np.uint8)
    crop[8:24, 8:40] = 0
    ink = normalise_ink(crop)
    assert ink.dtype == np.float32
    assert ink[8:24, 8:40].min() == 1.0 and ink[:8].max() == 0.0
    # grey paper and faded ink read the same way
    faded = np.full((32, 64), 200, np.uint8)
    faded[8:24, 8:40] = 150
    f = normalise_ink(faded)
    assert f[:8].max() == 0.0 and f[8:24, 8:40].min() > 0.95
    # a blank crop with scanner noise stays near zero: the span has a floor, noise is not ink
    rng = np.random.default_rng(0)
    noisy = (250 + rng.integers(-4, 5, (32, 64))).astype(np.uint8)
    assert normalise_ink(noisy).max() < 0.3


def test_bucket_width():
    assert [bucket_width(w) for w in (1, 32, 33, 64, 65, 512, 513, 5000)] == [
        32,
        32,
        64,
        64,
        96,
        512,
        512,
        512,
    ]
    assert WIDTH_BUCKETS == tuple(sorted(WIDTH_BUCKETS))


def test_plan_batches_groups_by_bucket_and_splits():
    widths = [30, 100, 33, 500, 64, 65, 20, 31, 600]
    plan = plan_batches(widths, batch_size=2)
    assert plan == [[0, 6], [7], [2, 4], [5], [1], [3, 8]]
    # every index exactly once, each batch within one bucket and at most batch_size long
    flat = sorted(i for b in plan for i in b)
    assert flat == list(range(len(widths)))
    for b in plan:
        assert len(b) <= 2 and len({bucket_width(widths[i]) for i in b}) == 1
    assert plan_batches([], 4) == []
    assert plan_batches(widths, batch_size=100) == [[0, 6, 7], [2, 4], [5], [1], [3, 8]]


def test_pack_pads_with_zero_to_the_bucket():
    a = np.full((32, 40), 255, np.uint8)
    a[:, :20] = 0  # left half ink
    b = np.zeros((32, 70), np.uint8)  # all ink
    b[:, 60:] = 255
    batch, widths = pack([a, b])
    assert batch.shape == (2, 1, 32, 96) and batch.dtype == np.float32  # 70 -> bucket 96
    assert widths.tolist() == [40, 70]
    assert (batch[0, 0, :, :20] == 1).all() and (batch[0, 0, :, 20:] == 0).all()
    assert (batch[1, 0, :, :60] == 1).all() and (batch[1, 0, :, 60:] == 0).all()
    # a crop wider than the largest bucket is cut to it
    wide = np.zeros((32, 600), np.uint8)
    wide[:, ::2] = 255
    batch, widths = pack([wide])
    assert batch.shape == (1, 1, 32, 512) and widths.tolist() == [512]


def test_ink_levels_equal_numpy_percentiles():
    """The histogram shortcut must give np.percentile's linear-method values, on any crop."""
    rng = np.random.default_rng(3)
    crops = [rng.integers(0, 256, (32, w), dtype=np.uint8) for w in (1, 2, 7, 130)]
    crops += [np.full((32, 9), 200, np.uint8), rng.integers(100, 104, (32, 50)).astype(np.uint8)]
    for crop in crops:
        expected = np.percentile(crop.astype(np.float64), [3, 90])
        assert np.allclose(ink_levels(crop), expected, atol=1e-9), crop.shape


def test_plan_batches_by_column_budget_puts_fewer_wide_crops_in_a_batch():
    widths = [40] * 5 + [500] * 5
    plan = plan_batches(widths, batch_size=100, columns=1100)
    assert plan == [[0, 1, 2, 3, 4], [5, 6], [7, 8], [9]]  # 1100 // 64 = 17; 1100 // 512 = 2
