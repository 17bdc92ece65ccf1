"""transforms.page_normalise: negatives, quarter turns and skew on constructed pages.

Pages are drawn here with cv2.putText (lines of words of varying length on off-white paper), plus
one page from the synthetic engine; every case is checked against the page it was made from.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from transforms.page_normalise import PageFix, normalise_page

PAPER = (244, 240, 230)
WORDS = (
    "the quick brown fox jumps over a lazy dog and then writes long letters to his family about "
    "everything that happened during summer holidays in Paris London Berlin 1897 Yours faithfully "
    "Henry"
).split()


def text_page(
    seed: int = 0,
    w: int = 1200,
    h: int = 1600,
    font: int = cv2.FONT_HERSHEY_SIMPLEX,
    scale: float = 1.0,
    top: int = 120,
    gap: int = 58,
    lines: int | None = None,
) -> np.ndarray:
    """Lines of words of varying length (ragged right margin) in dark ink on off-white paper."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = PAPER
    y, n = top, 0
    while y < h - gap and (lines is None or n < lines):
        x = w // 13 + int(rng.integers(0, w // 40 + 1))
        right = w - w // 13 - int(rng.integers(0, w // 4))
        while True:
            word = WORDS[int(rng.integers(len(WORDS)))]
            tw = cv2.getTextSize(word, font, scale, 2)[0][0]
            if x + tw > right:
                break
            cv2.putText(img, word, (x, y), font, scale, (30, 30, 40), 2, cv2.LINE_AA)
            x += tw + int(20 * scale)
        y, n = y + gap, n + 1
    return img


def skewed(img: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """`img` rotated by `angle` degrees (cv2 sense) about its centre on the same canvas, paper fill;
    and the 2x3 matrix from original to skewed pixels."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=PAPER), m


def phone_photo(page: np.ndarray, seed: int = 0, dim: bool = False) -> np.ndarray:
    """The page photographed on a dark wooden desk: perspective, a light gradient and a warm cast.
    `dim`: the page fills a small part of the frame and the light is poor, so most of the photo
    is near black (a global grey-level test would call it a negative)."""
    rng = np.random.default_rng(seed)
    h, w = page.shape[:2]
    H, W = (int(h * 1.5), int(w * 1.6)) if dim else (int(h * 1.3), int(w * 1.3))
    desk = np.empty((H, W, 3), np.float32)
    desk[:] = (45, 35, 30) if dim else (90, 62, 40)
    desk += cv2.GaussianBlur(rng.normal(0, 8, (H, W)).astype(np.float32), (0, 0), 2)[..., None]
    f = (0.27, 0.73) if dim else (0.12, 0.88)
    dst = np.array(
        [
            [W * f[0], H * f[0]],
            [W * f[1], H * (f[0] + 0.02)],
            [W * (f[1] + 0.01), H * f[1]],
            [W * (f[0] - 0.01), H * (f[1] + 0.02)],
        ],
        np.float32,
    )
    m = cv2.getPerspectiveTransform(np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32), dst)
    sheet = cv2.warpPerspective(page, m, (W, H)).astype(np.float32)
    mask = cv2.warpPerspective(np.ones((h, w), np.float32), m, (W, H))[..., None]
    out = sheet * mask + desk * (1 - mask)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    light = (0.55 - 0.25 * xs / W) if dim else (1.0 - 0.45 * (0.6 * xs / W + 0.4 * ys / H))
    out *= light[..., None] * np.array([1.0, 0.94, 0.82], np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of 1/4-size grey copies; -1 when the shapes differ (a turned page)."""
    if a.shape != b.shape:
        return -1.0
    small = [
        cv2.resize(
            x if x.ndim == 2 else cv2.cvtColor(x, cv2.COLOR_RGB2GRAY),
            None,
            fx=0.25,
            fy=0.25,
            interpolation=cv2.INTER_AREA,
        )
        .astype(np.float64)
        .ravel()
        for x in (a, b)
    ]
    return float(np.corrcoef(small[0], small[1])[0, 1])


def assert_identity(out: np.ndarray, fix: PageFix, page: np.ndarray) -> None:
    assert out is page
    assert (fix.inverted, fix.quarter_turns, fix.skew_deg) == (False, 0, 0.0)
    assert fix.source_size == (page.shape[1], page.shape[0])
    np.testing.assert_array_equal(fix.matrix, [[1, 0, 0], [0, 1, 0]])


@pytest.fixture(scope="module")
def page() -> np.ndarray:
    return text_page(0)


@pytest.fixture(scope="module")
def synth_page() -> np.ndarray:
    """A synthetic handwritten form (flat scan) from the project's engine: ~5 s, once."""
    from transforms.synth import render_page

    img, _ = render_page(np.random.default_rng(2))
    return np.asarray(img)


# ---- pages that need nothing ------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["simplex", "complex", "gray", "sparse"])
def test_upright_page_is_returned_untouched(variant):
    page = {
        "simplex": lambda: text_page(0),
        "complex": lambda: text_page(1, font=cv2.FONT_HERSHEY_COMPLEX, scale=0.8, gap=44),
        "gray": lambda: cv2.cvtColor(text_page(2), cv2.COLOR_RGB2GRAY),
        "sparse": lambda: text_page(3, lines=3),
    }[variant]()
    before = page.copy()
    out, fix = normalise_page(page)
    assert_identity(out, fix, page)
    np.testing.assert_array_equal(page, before)


def test_blank_tiny_and_noise_pages_are_left_alone():
    rng = np.random.default_rng(0)
    for img in (
        np.full((1600, 1200, 3), 245, np.uint8),
        np.zeros((900, 700), np.uint8),
        np.zeros((1, 1, 3), np.uint8),
        np.full((6, 700, 3), 200, np.uint8),
        rng.integers(0, 256, (600, 400, 3), dtype=np.uint8),
    ):
        out, fix = normalise_page(img)
        assert_identity(out, fix, img)


def test_rejects_other_dtypes_and_channel_counts():
    with pytest.raises(ValueError):
        normalise_page(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError):
        normalise_page(np.zeros((10, 10, 4), np.uint8))


# ---- negatives ----------------------------------------------------------------------------------------


def test_negative_is_inverted_back(page):
    out, fix = normalise_page(255 - page)
    assert fix.inverted and fix.quarter_turns == 0 and fix.skew_deg == 0.0
    np.testing.assert_array_equal(out, page)
    np.testing.assert_array_equal(fix.matrix, [[1, 0, 0], [0, 1, 0]])


def test_microfilm_negative_gray_noisy_low_contrast(page):
    """Grey film: dark background ~35, strokes ~185, grain, blur and a darker rim."""
    rng = np.random.default_rng(1)
    gray = cv2.cvtColor(page, cv2.COLOR_RGB2GRAY).astype(np.float32)
    h, w = gray.shape
    ys, xs = np.mgrid[0:h, 0:w] / np.array([h, w], np.float32)[:, None, None]
    rim = 1 - 0.3 * ((xs - 0.5) ** 2 + (ys - 0.5) ** 2)
    film = 35 + 150 * (240 - gray) / 210 + rng.normal(0, 8, gray.shape)
    film = cv2.GaussianBlur(film.astype(np.float32), (0, 0), 1.2) * rim
    film = np.clip(film, 0, 255).astype(np.uint8)
    out, fix = normalise_page(film)
    assert fix.inverted and fix.quarter_turns == 0
    assert out.shape == film.shape and out.dtype == np.uint8
    assert similarity(out, gray.astype(np.uint8)) > 0.9


@pytest.mark.parametrize("dim", [False, True])
def test_phone_photo_on_dark_desk_is_not_inverted(page, dim):
    photo = phone_photo(page, dim=dim)
    if dim:  # the point of this case: most of the picture is dark, yet it is not a negative
        assert np.median(photo) < 60
    out, fix = normalise_page(photo)
    assert not fix.inverted
    assert fix.quarter_turns == 0
    assert abs(fix.skew_deg) < 3  # the perspective tilts lines a little, nothing more


def test_negative_of_a_phone_photo_is_inverted(page):
    out, fix = normalise_page(255 - phone_photo(page))
    assert fix.inverted and fix.quarter_turns == 0


def test_black_letterhead_block_is_not_inverted():
    page = text_page(4, top=620)
    page[:500] = (20, 20, 60)  # a third of the page solid navy, with white lettering in it
    for i, line in enumerate(["ACME WIDGETS LTD", "12 High Street, London", "Telephone 0123 456789"]):
        cv2.putText(
            page,
            line,
            (80, 130 + 120 * i),
            cv2.FONT_HERSHEY_COMPLEX,
            2.0 if i == 0 else 1.5,
            (250, 250, 250),
            4,
            cv2.LINE_AA,
        )
    out, fix = normalise_page(page)
    assert_identity(out, fix, page)


# ---- quarter turns ------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3])
def test_quarter_turns_come_back_upright(page, k):
    turned = np.ascontiguousarray(np.rot90(page, k))
    out, fix = normalise_page(turned)
    assert fix.quarter_turns == (4 - k) % 4
    assert not fix.inverted and fix.skew_deg == 0.0
    assert fix.source_size == (turned.shape[1], turned.shape[0])
    np.testing.assert_array_equal(out, page)


def test_turned_view_is_accepted(page):
    """A non-contiguous view (np.rot90 without a copy) works like the copy."""
    out, fix = normalise_page(np.rot90(page, 1))
    assert fix.quarter_turns == 3
    np.testing.assert_array_equal(out, page)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_to_source_is_exact_for_quarter_turns(page, k):
    turned = np.ascontiguousarray(np.rot90(page, k))
    out, fix = normalise_page(turned)
    rng = np.random.default_rng(k)
    pts = np.stack([rng.integers(0, out.shape[1], 500), rng.integers(0, out.shape[0], 500)], 1)
    pts = np.vstack([pts, [[0, 0], [out.shape[1] - 1, out.shape[0] - 1]]])
    src = fix.to_source(pts)
    np.testing.assert_allclose(src, np.round(src), atol=1e-9)
    sx, sy = np.round(src).astype(int).T
    assert sx.min() >= 0 and sy.min() >= 0 and sx.max() < turned.shape[1] and sy.max() < turned.shape[0]
    np.testing.assert_array_equal(out[pts[:, 1], pts[:, 0]], turned[sy, sx])


def test_upside_down_is_decided_by_the_callback(page):
    calls = []

    def score(img: np.ndarray) -> float:  # stands in for the recogniser's confidence
        calls.append(img.shape)
        return similarity(img, page)

    out, fix = normalise_page(np.ascontiguousarray(np.rot90(page, 2)), upright_score=score)
    assert fix.quarter_turns == 2
    np.testing.assert_array_equal(out, page)
    assert len(calls) == 2

    calls.clear()
    out, fix = normalise_page(page, upright_score=score)
    assert_identity(out, fix, page)
    assert len(calls) == 2

    out, fix = normalise_page(np.ascontiguousarray(np.rot90(page, 1)), upright_score=score)
    assert fix.quarter_turns == 3
    np.testing.assert_array_equal(out, page)


def test_callback_is_obeyed_even_against_the_ascenders(page):
    """The callback has the last word: one that prefers the page upside down gets it so."""
    flipped = np.ascontiguousarray(np.rot90(page, 2))
    out, fix = normalise_page(page, upright_score=lambda img: similarity(img, flipped))
    assert fix.quarter_turns == 2
    np.testing.assert_array_equal(out, flipped)


@pytest.mark.parametrize("font", [cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_COMPLEX])
def test_upside_down_latin_text_without_callback(font):
    page = text_page(5, font=font)
    out, fix = normalise_page(np.ascontiguousarray(np.rot90(page, 2)))
    assert fix.quarter_turns == 2
    np.testing.assert_array_equal(out, page)
    # a caller that checks upside down itself (the pipeline) can keep the guess out
    _, kept = normalise_page(np.ascontiguousarray(np.rot90(page, 2)), guess_upside_down=False)
    assert kept.quarter_turns == 0


# ---- skew ---------------------------------------------------------------------------------------------


def _find(patch: np.ndarray, img: np.ndarray) -> np.ndarray:
    """(x, y) of `patch`'s centre pixel where it best matches in `img`."""
    res = cv2.matchTemplate(img, patch, cv2.TM_CCOEFF_NORMED)
    _, best, _, loc = cv2.minMaxLoc(res)
    assert best > 0.8, f"patch not found (best match {best:.2f})"
    return np.array(loc, np.float64) + (np.array(patch.shape[1::-1]) - 1) / 2


@pytest.mark.parametrize("angle", [7.0, -4.0])
def test_skew_is_measured_and_mapped_back(page, angle):
    tilted, m = skewed(page, angle)
    out, fix = normalise_page(tilted)
    assert not fix.inverted and fix.quarter_turns == 0
    assert abs(fix.skew_deg + angle) < 1.0  # skew_deg is the correction: the opposite turn
    # the corner wedges are paper coloured, not black
    assert np.abs(out[2, 2].astype(int) - PAPER).max() < 10
    # a word patch from the middle of the original page: found in the corrected page, mapped back
    # to the input it lands where the skew put it
    y0, x0 = 700, 300
    patch = page[y0 - 40 : y0 + 20, x0 : x0 + 300]
    centre = np.array([x0 + (300 - 1) / 2, y0 - 40 + (60 - 1) / 2])
    found = _find(patch, out)
    expected = m @ np.r_[centre, 1.0]
    np.testing.assert_allclose(fix.to_source(found[None])[0], expected, atol=3.0)


def test_turned_and_skewed_together(page):
    tilted, m = skewed(page, 5.0)
    turned = np.ascontiguousarray(np.rot90(tilted, 1))
    out, fix = normalise_page(turned)
    assert fix.quarter_turns == 3
    assert abs(fix.skew_deg + 5.0) < 1.0
    y0, x0 = 900, 400
    patch = page[y0 - 40 : y0 + 20, x0 : x0 + 300]
    centre = np.array([x0 + (300 - 1) / 2, y0 - 40 + (60 - 1) / 2])
    in_tilted = m @ np.r_[centre, 1.0]
    in_turned = np.array([in_tilted[1], tilted.shape[1] - 1 - in_tilted[0]])  # np.rot90 k=1
    np.testing.assert_allclose(fix.to_source(_find(patch, out)[None])[0], in_turned, atol=3.0)


def test_small_skew_is_left_alone(page):
    tilted, _ = skewed(page, 0.3)
    out, fix = normalise_page(tilted)
    assert_identity(out, fix, tilted)


def test_negative_turned_and_skewed(page):
    """All three at once: inverted, turned back, deskewed, with paper (not film) in the corners."""
    tilted, _ = skewed(page, -6.0)
    film = np.ascontiguousarray(np.rot90(255 - tilted, 3))
    out, fix = normalise_page(film)
    assert fix.inverted and fix.quarter_turns == 1 and abs(fix.skew_deg - 6.0) < 1.0
    assert out[2, 2].min() > 200


def test_switches_turn_detectors_off(page):
    turned = np.ascontiguousarray(np.rot90(page, 1))
    out, fix = normalise_page(turned, detect_rotation=False)
    assert fix.quarter_turns == 0 and out is turned
    tilted, _ = skewed(page, 6.0)
    out, fix = normalise_page(tilted, deskew=False)
    assert out is tilted and fix.skew_deg == 0.0
    out, fix = normalise_page(255 - page, detect_negative=False)
    assert not fix.inverted


# ---- small and synthetic pages --------------------------------------------------------------------------


def test_small_low_res_paragraph():
    para = text_page(6, w=450, h=300, scale=0.6, top=40, gap=30)
    out, fix = normalise_page(para)
    assert_identity(out, fix, para)
    out, fix = normalise_page(np.ascontiguousarray(np.rot90(para, 1)))
    assert fix.quarter_turns == 3
    np.testing.assert_array_equal(out, para)
    out, fix = normalise_page(255 - para)
    assert fix.inverted and fix.quarter_turns == 0


def test_synthetic_handwritten_page(synth_page):
    out, fix = normalise_page(synth_page)
    assert not fix.inverted and fix.quarter_turns == 0 and abs(fix.skew_deg) < 2
    upright = out
    out, fix = normalise_page(np.ascontiguousarray(np.rot90(synth_page, 1)))
    assert fix.quarter_turns == 3 and not fix.inverted
    assert similarity(out, upright) > 0.9
    out, fix = normalise_page(255 - synth_page)
    assert fix.inverted and fix.quarter_turns == 0
