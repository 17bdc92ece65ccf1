"""Page-level input correction before segmentation: negatives, quarter turns and skew.

Real scans come in white-on-black (microfilm negatives), turned by 90/180/270 degrees (a sheet fed
sideways, a phone held in landscape) or a few degrees askew; the segmenter and recogniser were trained
on upright dark-on-light pages and read such pages badly or not at all.

Every measurement runs on a grey copy reduced to ~800 px on the long side; the full-size page is
inverted and warped once at the end, and a page that needs nothing comes back as the very same array.

  * polarity: a local background (a median over ~1/18 of the page) is estimated; on a page the
    sparse strokes depart from it towards dark, on a negative towards bright. Counting both, away
    from steps in the background (page edges, black blocks), tells them apart where the global grey
    level cannot (a dark desk around a photographed page, a black letterhead block);
  * orientation and skew: text lines make the row profile of the ink strongly peaked, the column
    profile is flat. The profile sharpness of the ink and of the ink turned by 90 degrees, searched
    over -10..10 degrees, gives both the quarter turn (mod 180) and the skew (accurate to ~0.2
    degrees on full pages);
  * 0 vs 180: geometry cannot tell; an `upright_score` callback (the recogniser's confidence) decides
    when given, otherwise Latin ascenders (more ink above the x-height band than below) decide, and
    only when clearly one-sided.

`PageFix.matrix` maps the corrected page back to the input, so results found on the corrected page
are reported in the input's pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

WORK_SIDE = 800  # long side of the measuring copy
MAX_SKEW = 10.0  # degrees searched either way
MIN_SKEW = 0.5  # smaller skews are left alone (the models cope, a resample costs sharpness)
SKEW_GAIN = 1.02  # a deskew must sharpen the line profile by this factor to count
TURN_MARGIN = 1.4  # rows must beat columns (or the reverse) by this factor to turn the page
NEGATIVE_RATIO = 2.0  # bright strokes must outnumber dark ones by this factor to invert
FLIP_RATIO = 1.6  # ink below the x-height band / above it, to turn by 180 without a callback
MIN_LINES = 0.2  # profile sharpness below which there are no text lines to align (pages: 0.6+)
MIN_INK = 150  # ink pixels (measuring copy) below which the page is treated as blank


@dataclass
class PageFix:
    inverted: bool  # the page was a negative and was inverted
    quarter_turns: (
        int  # 0..3: the input was turned by k*90° counter-clockwise (np.rot90 k) to make it upright
    )
    skew_deg: float  # deskew angle applied (degrees, positive = counter-clockwise as cv2.getRotationMatrix2D)
    source_size: tuple[int, int]  # (width, height) of the input image
    matrix: np.ndarray  # 2x3 affine mapping corrected-image pixel (x, y) -> input-image pixel (x, y)

    def to_source(self, points: np.ndarray) -> np.ndarray:
        """Nx2 (x, y) in the corrected image -> Nx2 (x, y) in the input image."""
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        return pts @ self.matrix[:, :2].T + self.matrix[:, 2]

    @classmethod
    def identity(cls, width: int, height: int) -> PageFix:
        """Nothing done to a width x height page."""
        return cls(False, 0, 0.0, (width, height), np.eye(3)[:2].copy())

    def half_turned(self, width: int, height: int) -> PageFix:
        """This fix followed by a 180-degree turn of its width x height corrected image (a caller
        that decided upside down itself, e.g. from recogniser confidence)."""
        matrix = np.vstack([self.matrix, [0, 0, 1]]) @ _turn_matrix(2, width, height)
        return PageFix(
            self.inverted, (self.quarter_turns + 2) % 4, self.skew_deg, self.source_size, matrix[:2].copy()
        )


def normalise_page(
    image: np.ndarray,
    upright_score: Callable[[np.ndarray], float] | None = None,
    *,
    detect_rotation: bool = True,
    deskew: bool = True,
    detect_negative: bool = True,
    guess_upside_down: bool = True,
) -> tuple[np.ndarray, PageFix]:
    """HxWx3 uint8 RGB (or HxW gray) -> (corrected image, same dtype/channels; the fix applied).

    upright_score(image) -> float: higher = more likely upright (e.g. mean recogniser confidence on
    a few lines). When given it is called on the full-size corrected candidate and on its 180 degree
    turn (on all four turns when the geometry cannot tell rows from columns); the best wins, the
    geometric candidate on ties. Without it the ascender heuristic decides, flipping only when clear;
    guess_upside_down=False leaves an upright-looking page unflipped (for a caller that checks upside
    down itself, as the pipeline does from the recogniser's confidence: the heuristic flipped 1 of 24
    synthetic test pages wrongly).

    The input is never modified; a page that needs nothing is returned as the same object."""
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"expected HxW or HxWx3 uint8, got {image.shape} {image.dtype}")
    gray = np.ascontiguousarray(image) if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    dark, bright = _strokes(_reduce(gray))
    inverted = detect_negative and _is_negative(dark, bright)
    ink = bright if inverted else dark

    candidates = _geometry(ink, detect_rotation, deskew) if detect_rotation or deskew else [(0, 0.0)]
    if not detect_rotation:
        return _apply(image, inverted, *candidates[0])
    if upright_score is None:
        turns, angle = candidates[0]
        # geometry knows rows from columns; which end is up comes from the ascenders. Sideways the
        # page is turned anyway, so the likelier end wins; upright it is only flipped when clear.
        above, below, lines = _ascender_balance(ink, turns, angle)
        if turns == 1 and below > above:
            turns = 3
        elif turns == 0 and guess_upside_down and _clearly_upside_down(above, below, lines):
            turns = 2
        return _apply(image, inverted, turns, angle)
    # each candidate and its 180 degree turn, scored on the full-size corrected page
    best = None
    for k, a in candidates:
        for kk in (k, k + 2):
            out, fix = _apply(image, inverted, kk, a)
            s = float(upright_score(out))
            if best is None or s > best[0]:
                best = (s, out, fix)
    assert best is not None  # candidates is never empty
    return best[1], best[2]


# ---- polarity ------------------------------------------------------------------------------------


def _reduce(gray: np.ndarray) -> np.ndarray:
    """The measuring copy: reduced by the smallest whole factor that brings the long side to
    WORK_SIDE or below (534..800 px). A whole factor lets INTER_AREA take its fast path (~10x
    faster than an arbitrary ratio); the few rows/columns cut to make it divide do not matter."""
    h, w = gray.shape
    f = -(-max(h, w) // WORK_SIDE)
    if f <= 1:
        return gray
    return cv2.resize(gray[: h - h % f, : w - w % f], (w // f, h // f), interpolation=cv2.INTER_AREA)


def _strokes(small: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks (bool) of dark-on-light and of bright-on-dark strokes on the measuring copy.

    The background is a median over a window of 1/18 of the long side (~45 px: wider than the
    strokes of large bold writing, so their middles are not lost), taken on a sparse grid of pixels
    (a median of pixel values, not of averages, so dense text does not pull it down) and blown
    back up. Where the background itself steps (page border on a desk, edge of a black block) the
    blown-up background is off by the step, in either direction: those pixels count for neither."""
    h, w = small.shape
    window = max(9, max(h, w) / 18)
    step = max(1, int(window / 9))
    sub = np.ascontiguousarray(small[step // 2 :: step, step // 2 :: step])
    if min(sub.shape) >= 9:
        bg_sub = cv2.medianBlur(sub, 9)
    else:  # a sliver: one level for all
        bg_sub = np.full_like(sub, int(np.median(sub)))
    # kernel None: OpenCV's 3x3 (its stubs want an array)
    spread_sub = cv2.subtract(cv2.dilate(bg_sub, None), cv2.erode(bg_sub, None))  # type: ignore[call-overload]
    if step == 1:
        bg, spread = bg_sub, spread_sub
    else:
        bg = cv2.resize(bg_sub, (w, h), interpolation=cv2.INTER_LINEAR)
        spread = cv2.resize(spread_sub, (w, h), interpolation=cv2.INTER_NEAREST)
    darker = cv2.subtract(bg, small)
    brighter = cv2.subtract(small, bg)
    # stroke contrast: a high percentile of the departures either way (strokes, not texture or noise)
    hist = (
        cv2.calcHist([darker], [0], None, [256], [0, 256])[:, 0]
        + cv2.calcHist([brighter], [0], None, [256], [0, 256])[:, 0]
    )
    cum = np.cumsum(hist[::-1])
    top = 255 - int(np.searchsorted(cum, 0.004 * small.size))
    t = max(14, int(0.4 * top))
    flat = spread <= t // 2 + 4
    return (darker > t) & flat, (brighter > t) & flat


def _is_negative(dark: np.ndarray, bright: np.ndarray) -> bool:
    """A negative's strokes are brighter than its (dark) background: many more bright strokes."""
    n_dark, n_bright = int(np.count_nonzero(dark)), int(np.count_nonzero(bright))
    return n_bright >= MIN_INK and n_bright > NEGATIVE_RATIO * n_dark


# ---- orientation and skew --------------------------------------------------------------------------


def _ink_points(ink: np.ndarray, limit: int) -> np.ndarray:
    """(N, 2) float32 (x, y) of ink pixels, evenly thinned to at most `limit` points."""
    pts = cv2.findNonZero(ink.view(np.uint8))
    if pts is None:
        return np.zeros((0, 2), np.float32)
    pts = pts.reshape(-1, 2)
    if len(pts) > limit:
        pts = pts[np.linspace(0, len(pts) - 1, limit).astype(np.int64)]
    return pts.astype(np.float32)


def _quarter_points(pts: np.ndarray, w: int) -> np.ndarray:
    """Points of a W-wide image in the frame of np.rot90(image, 1): columns become rows."""
    return np.stack([pts[:, 1], w - 1 - pts[:, 0]], 1)


def _row_profile(pts: np.ndarray, angle: float) -> np.ndarray:
    """Ink per 1 px row after rotating the points by `angle` degrees (cv2 sense: y' = -sin x + cos y)."""
    a = np.radians(angle)
    v = pts[:, 1] * np.cos(a) - pts[:, 0] * np.sin(a)
    return np.bincount((v - v.min()).astype(np.int64))


def _sharpness(profile: np.ndarray) -> float:
    """How peaked a row profile is: squared coefficient of variation over the inked extent, after a
    3-row box (single-pixel structure of letters is not text lines), less what counting scattered
    points alone gives (var m/3 for a mean m: noise and specks must not look like lines). Scale-free,
    so profiles of different lengths (rows vs columns) compare."""
    p = np.convolve(profile.astype(np.float64), np.ones(3) / 3, mode="same")
    c = np.cumsum(p)
    lo, hi = np.searchsorted(c, 0.01 * c[-1]), np.searchsorted(c, 0.99 * c[-1]) + 1
    p = p[lo:hi]
    m = p.mean()
    return float((p.var() - m / 3) / (m * m)) if m > 0 else 0.0


def _coarse_angle(pts: np.ndarray) -> tuple[float, float]:
    """(angle, sharpness): the best whole degree over +-MAX_SKEW, on a quarter of the points. The
    sharpness peak is about a degree wide for lines across a page, so 1 degree steps cannot miss it."""
    few = pts[::4] if len(pts) >= 4 * MIN_INK else pts
    angles = np.arange(-MAX_SKEW, MAX_SKEW + 0.01, 1.0)
    scores = [_sharpness(_row_profile(few, a)) for a in angles]
    i = int(np.argmax(scores))
    return float(angles[i]), float(scores[i])


def _fine_angle(pts: np.ndarray, coarse: float) -> float:
    """0.1 degree steps around the coarse angle, on half the points. An angle that sharpens the
    profile by under SKEW_GAIN over 0 degrees is reported as 0: nothing line-like to align."""
    some = pts[::2] if len(pts) >= 8 * MIN_INK else pts
    angles = np.round(np.arange(coarse - 0.8, coarse + 0.81, 0.1), 2)
    scores = [_sharpness(_row_profile(some, a)) for a in angles]
    i = int(np.argmax(scores))
    if scores[i] < SKEW_GAIN * _sharpness(_row_profile(some, 0.0)):
        return 0.0
    return float(angles[i])


def _geometry(ink: np.ndarray, detect_rotation: bool, deskew: bool) -> list[tuple[int, float]]:
    """Candidate (quarter turns, skew) pairs, likeliest first: one when rows vs columns is clear,
    both otherwise (a callback may then choose).

    Turns are 0 or 1 here (mod 180: the profiles cannot tell 90 from 270 or 0 from 180); the skew
    is measured in the turned frame. When rows and columns are close the page stays as it is --
    not deskewed either if the columns were (a little) better: that angle would be the columns'."""
    w = ink.shape[1]
    pts = _ink_points(ink, 20000)
    if len(pts) < MIN_INK:  # blank: nothing to measure
        return [(0, 0.0)]
    turned = _quarter_points(pts, w) if detect_rotation else pts

    def skew(k: int, coarse: float) -> float:
        if not deskew:
            return 0.0
        a = _fine_angle(turned if k else pts, coarse)
        return a if abs(a) > MIN_SKEW else 0.0

    a0, s0 = _coarse_angle(pts)
    a1, s1 = _coarse_angle(turned) if detect_rotation else (0.0, 0.0)
    if max(s0, s1) < MIN_LINES:  # no text lines either way (a picture, noise): leave it
        return [(0, 0.0)]
    if not detect_rotation:
        return [(0, skew(0, a0))]
    if s1 > TURN_MARGIN * s0:
        return [(1, skew(1, a1))]
    if s0 > TURN_MARGIN * s1:
        return [(0, skew(0, a0))]
    return [(0, skew(0, a0) if s0 >= s1 else 0.0), (1, skew(1, a1))]


# ---- 0 vs 180 without a recogniser ----------------------------------------------------------------


def _clearly_upside_down(above: float, below: float, lines: int) -> bool:
    """Only a clear majority of ink below the x-height bands over several lines turns a page that
    looks upright by 180 degrees: a wrong flip ruins a page that was fine."""
    return lines >= 3 and above + below >= MIN_INK and below > FLIP_RATIO * above


def _ascender_balance(ink: np.ndarray, turns: int, angle: float) -> tuple[float, float, int]:
    """(ink just above the x-height bands, ink just below them, number of text lines).

    Ascenders and capitals (b d f h k l t, A-Z, digits) outnumber descenders (g j p q y), so upright
    lines carry more ink above their x-height band than below. Long horizontal runs (rules the
    writing sits on, underlines) are removed first: they sit below the band and would vote for
    'upside down' on every ruled page."""
    m: np.ndarray = np.ascontiguousarray(np.rot90(ink, turns)).view(np.uint8)
    if angle != 0.0:
        hh, ww = m.shape
        rot = cv2.getRotationMatrix2D((ww / 2, hh / 2), angle, 1.0)
        m = cv2.warpAffine(m, rot, (ww, hh), flags=cv2.INTER_NEAREST)
    run = max(25, m.shape[1] // 20)
    rules = cv2.morphologyEx(m, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (run, 1)))
    prof = cv2.subtract(m, rules).sum(1, dtype=np.float64)
    cores = _cores(prof)
    above = below = 0.0
    for i, (top, bottom) in enumerate(cores):
        # most of a band's height either side, but never past halfway to the neighbouring band
        # (the previous line's descenders, the next line's ascenders)
        hc = bottom - top
        prev_bottom = cores[i - 1][1] if i else -(10**9)
        next_top = cores[i + 1][0] if i + 1 < len(cores) else 10**9
        a0 = max(0, top - int(0.8 * hc), (prev_bottom + top + 1) // 2)
        b1 = min(len(prof), bottom + int(0.8 * hc), (bottom + next_top) // 2)
        above += prof[a0:top].sum()
        below += prof[bottom:b1].sum()
    return float(above), float(below), len(cores)


def _cores(prof: np.ndarray) -> list[tuple[int, int]]:
    """x-height bands of text lines, top to bottom: a line is a run of rows above a low level, its
    band the rows around its peak row above half the peak (the x-height carries most of the ink)."""
    p = np.convolve(prof, np.ones(3) / 3, mode="same")
    low = 0.08 * np.percentile(p, 99)
    on = np.flatnonzero(np.diff(np.r_[0, (p > low).astype(np.int8), 0]))
    cores = []
    for s, e in zip(on[::2], on[1::2]):
        seg = p[s:e]
        peak = int(np.argmax(seg))
        half = 0.5 * seg[peak]
        top, bottom = peak, peak + 1
        while top > 0 and seg[top - 1] >= half:
            top -= 1
        while bottom < len(seg) and seg[bottom] >= half:
            bottom += 1
        if bottom - top >= 2:  # thinner is a stray dash, not an x-height band
            cores.append((s + top, s + bottom))
    return cores


# ---- applying the fix ------------------------------------------------------------------------------

# np.rot90(image, k) as cv2 rotations (several times faster than copying the strided view)
_CV_TURNS = {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_CLOCKWISE}


def _turn_matrix(k: int, w: int, h: int) -> np.ndarray:
    """3x3: pixel of np.rot90(image, k) -> pixel of the HxW image."""
    k %= 4
    if k == 0:
        return np.eye(3)
    if k == 1:
        return np.array([[0, -1, w - 1], [1, 0, 0], [0, 0, 1]], np.float64)
    if k == 2:
        return np.array([[-1, 0, w - 1], [0, -1, h - 1], [0, 0, 1]], np.float64)
    return np.array([[0, 1, 0], [-1, 0, h - 1], [0, 0, 1]], np.float64)


def _fill(image: np.ndarray, inverted: bool) -> tuple | float:
    """Colour for the corners a deskew uncovers: the median of the input's border (paper on a scan,
    the desk on a photo), so no black or white wedges for the segmenter to find."""
    edge = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]], axis=0)
    med = np.median(edge.reshape(-1, image.shape[2] if image.ndim == 3 else 1), 0)
    if inverted:
        med = 255 - med
    return tuple(float(v) for v in med) if image.ndim == 3 else float(med[0])


def _apply(image: np.ndarray, inverted: bool, turns: int, angle: float) -> tuple[np.ndarray, PageFix]:
    """Invert, turn and deskew the full-size image in one pass each; the fix with its matrix."""
    h, w = image.shape[:2]
    turns %= 4
    back = _turn_matrix(turns, w, h)  # turned frame -> input
    tw, th = (h, w) if turns % 2 else (w, h)
    out = image
    if angle != 0.0:
        # rotate about the centre on a canvas grown to keep the corners (no text is cut off)
        rot = cv2.getRotationMatrix2D((tw / 2, th / 2), angle, 1.0)
        cos, sin = abs(rot[0, 0]), abs(rot[0, 1])
        nw, nh = int(th * sin + tw * cos + 0.5), int(th * cos + tw * sin + 0.5)
        rot[0, 2] += nw / 2 - tw / 2
        rot[1, 2] += nh / 2 - th / 2
        back = back @ np.linalg.inv(np.vstack([rot, [0, 0, 1]]))  # corrected -> input
        forward = np.linalg.inv(back)[:2]  # input -> corrected
        src = cv2.bitwise_not(image) if inverted else image
        out = cv2.warpAffine(
            src,
            forward,
            (nw, nh),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=_fill(image, inverted),
        )
    else:
        if inverted:
            out = cv2.bitwise_not(out)
        if turns:
            out = cv2.rotate(out, _CV_TURNS[turns])
    fix = PageFix(
        inverted=inverted,
        quarter_turns=turns,
        skew_deg=float(angle),
        source_size=(w, h),
        matrix=back[:2].copy(),
    )
    return out, fix
