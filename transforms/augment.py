"""Distortions for synthetic handwriting and for real crops/pages in training.

Three groups, each function taking a `numpy.random.Generator` so results follow the seed:
  * ink masks (float32 HxW, 1 = full ink): slant, stroke width, elastic wobble, baseline drift,
    pen pressure, and compositing onto paper in an ink colour;
  * pages (uint8 HxWx3 or HxW): paper, rules, stains, folds, show-through, punch holes, scanner
    noise, phone lighting, blur, JPEG;
  * geometry on pages (perspective, rotation) that also maps word polygons, given as float32 (N, 4, 2).
`augment_crop` and `augment_page` chain them with sensible odds for training on real data.
"""

from __future__ import annotations

import cv2
import numpy as np

Polys = np.ndarray  # (N, 4, 2) float32, page pixels

# Ink colours (RGB): iron-gall browns and blacks dominate old letters; blue / black ballpoint,
# pencil grey and the odd red or green pen for modern notes.
INKS = {
    "black": (25, 25, 30),
    "blue_black": (30, 35, 70),
    "iron_gall": (55, 40, 30),
    "faded_brown": (105, 80, 60),
    "blue": (30, 50, 150),
    "royal_blue": (40, 60, 190),
    "pencil": (75, 75, 82),
    "red": (170, 30, 35),
    "green": (30, 110, 60),
    "violet": (80, 40, 120),
}
INK_ODDS = {
    "black": 0.24,
    "blue_black": 0.16,
    "iron_gall": 0.16,
    "faded_brown": 0.08,
    "blue": 0.14,
    "royal_blue": 0.06,
    "pencil": 0.09,
    "red": 0.03,
    "green": 0.02,
    "violet": 0.02,
}
# Paper colours (RGB): white, cream, aged yellow, bluish letter paper, grey recycled, pink.
PAPERS = [
    (246, 246, 242),
    (244, 240, 228),
    (236, 226, 200),
    (228, 214, 178),
    (222, 230, 236),
    (214, 224, 232),
    (226, 226, 222),
    (240, 228, 226),
    (250, 250, 250),
]
PAPER_ODDS = [0.22, 0.18, 0.14, 0.08, 0.1, 0.06, 0.08, 0.04, 0.1]


# ---- ink masks -----------------------------------------------------------------------------------


def shear(mask: np.ndarray, slant: float, baseline: float | None = None) -> tuple[np.ndarray, float]:
    """Slant a mask: slant = tan(angle), > 0 leans right. Returns (mask, x shift of the baseline)."""
    h, w = mask.shape[:2]
    if abs(slant) < 1e-3:
        return mask, 0.0
    base = h - 1 if baseline is None else baseline
    # x' = x + slant * (base - y) + shift: the baseline only moves by `shift`, ascenders lean.
    xs = [slant * (base - y) for y in (0, h - 1)]
    shift = -min(0.0, *xs)
    out_w = int(np.ceil(w + max(0.0, *xs) + shift)) + 1
    m = np.array([[1, -slant, slant * base + shift], [0, 1, 0]], np.float32)
    return cv2.warpAffine(mask, m, (out_w, h), flags=cv2.INTER_LINEAR, borderValue=0), shift


def stroke_width(mask: np.ndarray, delta: int) -> np.ndarray:
    """Thicker (delta > 0) or thinner (delta < 0) strokes by delta pixels."""
    if delta == 0:
        return mask
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (abs(delta) + 1, abs(delta) + 1))
    return cv2.dilate(mask, k) if delta > 0 else cv2.erode(mask, k)


def _smooth_field(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Random field in [-1, 1]-ish, smooth at the scale of `cell` pixels."""
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    coarse = rng.standard_normal((gh, gw), dtype=np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def elastic(mask: np.ndarray, rng: np.random.Generator, amount: float, cell: float) -> np.ndarray:
    """Wobble strokes by up to ~`amount` px with a displacement field smooth over `cell` px."""
    if amount <= 0:
        return mask
    h, w = mask.shape[:2]
    dx = _smooth_field(rng, h, w, cell) * amount
    dy = _smooth_field(rng, h, w, cell) * amount
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(mask, gx + dx, gy + dy, cv2.INTER_LINEAR, borderValue=0)


def baseline_drift(mask: np.ndarray, rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """Let the writing wander up and down along the word (a smooth vertical shift per column)."""
    if amplitude <= 0:
        return mask
    h, w = mask.shape[:2]
    period = rng.uniform(1.5, 4.0) * h
    phase = rng.uniform(0, 2 * np.pi)
    xs = np.arange(w, dtype=np.float32)
    dy = (amplitude * np.sin(2 * np.pi * xs / period + phase)).astype(np.float32)
    gx, gy = np.meshgrid(xs, np.arange(h, dtype=np.float32))
    return cv2.remap(mask, gx, gy + dy[None, :], cv2.INTER_LINEAR, borderValue=0)


def warp_ink(
    alpha: np.ndarray,
    rng: np.random.Generator,
    slant: float,
    baseline: float,
    drift: float = 0.0,
    wobble: float = 0.0,
    cell: float = 16.0,
    pressure_low: float = 1.0,
    stretch: float = 1.0,
) -> np.ndarray:
    """Slant, horizontal stretch, baseline drift, elastic wobble and pen pressure in one remap
    (the fast path for synthetic words; `shear`, `baseline_drift`, `elastic` and `pressure`
    do each alone)."""
    h, w = alpha.shape[:2]
    offs = (slant * baseline, slant * (baseline - (h - 1)))
    shift = -min(0.0, *offs)
    out_w = int(np.ceil((w + abs(offs[0] - offs[1])) * stretch)) + 1
    gh, gw = max(2, int(h / cell) + 2), max(2, int(out_w / cell) + 2)
    fields = cv2.resize(
        rng.standard_normal((gh, gw, 3), dtype=np.float32), (out_w, h), interpolation=cv2.INTER_LINEAR
    )
    gy, gx = np.indices((h, out_w), dtype=np.float32)
    # forward: X = (x + slant * (baseline - y) + shift) * stretch; this is its inverse
    map_x = gx * (1.0 / stretch) - slant * (baseline - gy) - shift
    map_y = gy
    if wobble > 0:
        map_x += fields[..., 0] * wobble
        map_y = map_y + fields[..., 1] * wobble
    if drift > 0:
        period, phase = rng.uniform(1.5, 4.0) * h, rng.uniform(0, 2 * np.pi)
        map_y = map_y + (drift * np.sin(2 * np.pi * gx[0] / period + phase)).astype(np.float32)[None, :]
    out = cv2.remap(alpha, map_x, map_y, cv2.INTER_LINEAR, borderValue=0)
    if pressure_low < 1.0:
        out *= pressure_low + (1 - pressure_low) * np.clip(0.5 + 0.35 * fields[..., 2], 0, 1)
    return out


def pen_nib(mask: np.ndarray, length: float, angle: float) -> np.ndarray:
    """Broad-nib pen: strokes across the nib get thick, strokes along it stay thin (dip pens of
    old letters). `length` px, `angle` degrees from horizontal."""
    k = max(2, int(round(length)))
    kernel = np.zeros((k + 2, k + 2), np.uint8)
    c = (k + 1) / 2
    dx, dy = np.cos(np.radians(angle)) * k / 2, -np.sin(np.radians(angle)) * k / 2
    cv2.line(kernel, (int(round(c - dx)), int(round(c - dy))), (int(round(c + dx)), int(round(c + dy))), 1, 1)
    return cv2.dilate(mask, kernel)


def pressure(mask: np.ndarray, rng: np.random.Generator, low: float = 0.55) -> np.ndarray:
    """Uneven ink: a smooth opacity field between `low` and 1 (pen pressure, ink running dry)."""
    h, w = mask.shape[:2]
    f = _smooth_field(rng, h, w, cell=max(8.0, h * rng.uniform(0.5, 2.0)))
    f = low + (1 - low) * np.clip(0.5 + 0.35 * f, 0, 1)
    return mask * f


def pick_ink(rng: np.random.Generator) -> np.ndarray:
    names = list(INK_ODDS)
    p = np.array(list(INK_ODDS.values()))
    base = np.array(INKS[names[int(rng.choice(len(names), p=p / p.sum()))]], np.float32)
    return np.clip(base + rng.normal(0, 10, 3), 0, 255).astype(np.float32)


def composite(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray, x: int, y: int) -> None:
    """Lay ink `alpha` (HxW, 0..1) of `colour` onto float32 `img` at (x, y), in place, clipped.

    Ink darkens like a dye (multiplicative), so overlapping strokes and rules stay visible.
    """
    h, w = alpha.shape[:2]
    H, W = img.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x0 >= x1 or y0 >= y1:
        return
    a = alpha[y0 - y : y1 - y, x0 - x : x1 - x]
    region = img[y0:y1, x0:x1]
    tint = colour / 255.0
    if region.ndim == 3:
        region *= 1 - a[..., None] * (1 - tint[None, None, :])
    else:
        region *= 1 - a * (1 - float(tint.mean()))


# ---- pages ---------------------------------------------------------------------------------------


def paper(h: int, w: int, rng: np.random.Generator, colour: tuple[int, int, int] | None = None) -> np.ndarray:
    """A float32 RGB paper: base colour, blotchy large-scale tone, grain or emboss, aged edges."""
    if colour is None:
        colour = PAPERS[int(rng.choice(len(PAPERS), p=np.array(PAPER_ODDS) / sum(PAPER_ODDS)))]
    base = (np.array(colour, np.float32) + rng.normal(0, 4, 3)).astype(np.float32)
    sh, sw = h // 8 + 1, w // 8 + 1  # tone and vignette are smooth: build them small
    tone = _smooth_field(rng, sh, sw, cell=rng.uniform(10, 40)) * rng.uniform(1, 5)
    if rng.random() < 0.5:
        tone += (vignette(sh, sw, rng, strength=rng.uniform(0.03, 0.15)) - 1) * float(base.mean())
    shade: np.ndarray = cv2.resize(tone, (w, h), interpolation=cv2.INTER_LINEAR)
    grain = rng.standard_normal((h // 2 + 1, w // 2 + 1), dtype=np.float32)  # fibres ~2 px
    if rng.random() < 0.5:  # embossed / laid paper: grain visible at a few px
        grain = cv2.GaussianBlur(grain, (0, 0), rng.uniform(0.5, 1.0)) * 2.5
    shade += cv2.resize(grain, (w, h), interpolation=cv2.INTER_LINEAR) * rng.uniform(1.5, 6.0)
    img = shade[..., None] + base[None, None, :]
    return np.clip(img, 0, 255, out=img)


def vignette(h: int, w: int, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Multiplier that darkens towards the edges (aged or unevenly lit paper)."""
    ys = np.linspace(-1, 1, h, dtype=np.float32)[:, None] + rng.uniform(-0.2, 0.2)
    xs = np.linspace(-1, 1, w, dtype=np.float32)[None, :] + rng.uniform(-0.2, 0.2)
    r = np.sqrt(xs**2 + ys**2) / np.sqrt(2)
    return 1 - strength * r**2


def ruled_lines(
    img: np.ndarray,
    rng: np.random.Generator,
    spacing: float,
    top: float,
    margin_x: float | None = None,
    grid: bool = False,
) -> np.ndarray:
    """Draw ruled (or squared) paper lines in place; returns the y of each rule."""
    h, w = img.shape[:2]
    colour = np.array(
        [(150, 180, 215), (170, 190, 220), (160, 160, 170), (190, 200, 230)][int(rng.integers(4))], np.float32
    )
    thick = max(1, int(round(spacing / 40)))
    ys = np.arange(top, h - spacing / 2, spacing)
    for y in ys:
        cv2.line(img, (0, int(y)), (w, int(y)), colour.tolist(), thick, cv2.LINE_AA)
    if grid:
        for x in np.arange(rng.uniform(0, spacing), w, spacing):
            cv2.line(img, (int(x), 0), (int(x), h), colour.tolist(), thick, cv2.LINE_AA)
    if margin_x is not None:
        cv2.line(img, (int(margin_x), 0), (int(margin_x), h), (220, 120, 120), thick + 1, cv2.LINE_AA)
    return ys


# Photometric page ops accept uint8 (returned as a new uint8 array) or float32 (changed in place
# and returned): the synthetic engine keeps its page in float32 and converts once at the end.


def _work(img: np.ndarray) -> np.ndarray:
    return img if img.dtype == np.float32 else img.astype(np.float32)


def _done(out: np.ndarray, like: np.ndarray) -> np.ndarray:
    if like.dtype == np.float32:
        return out
    return np.clip(out, 0, 255, out=out).astype(like.dtype)


def _scale(out: np.ndarray, mult: np.ndarray, tint: np.ndarray | None = None) -> None:
    """out *= mult per pixel (HxW), optionally deeper per channel: 1 - (1 - mult) * tint[c]."""
    if out.ndim == 2:
        out *= mult
    elif tint is None:
        out *= mult[..., None]
    else:
        loss = 1 - mult
        for c in range(out.shape[2]):
            out[..., c] *= 1 - loss * float(tint[c])


def stains(img: np.ndarray, rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    """Coffee rings, water marks and foxing spots (multiplicative, soft edged, brownish)."""
    h, w = img.shape[:2]
    n = int(rng.integers(1, 4)) if n is None else n
    small = np.ones((h // 4 + 1, w // 4 + 1), np.float32)
    for _ in range(n):
        cx, cy = rng.uniform(0, small.shape[1]), rng.uniform(0, small.shape[0])
        r = rng.uniform(0.03, 0.15) * min(small.shape)
        axes = (max(1, int(r)), max(1, int(r * rng.uniform(0.6, 1.0))))
        depth = rng.uniform(0.03, 0.15)
        if rng.random() < 0.5:  # ring
            cv2.ellipse(
                small, (int(cx), int(cy)), axes, rng.uniform(0, 180), 0, 360, 1 - depth, max(1, int(r / 10))
            )
        else:
            cv2.ellipse(small, (int(cx), int(cy)), axes, rng.uniform(0, 180), 0, 360, 1 - depth / 2, -1)
    for _ in range(int(rng.integers(0, 30))):  # foxing: small brown dots
        cv2.circle(
            small,
            (int(rng.uniform(0, small.shape[1])), int(rng.uniform(0, small.shape[0]))),
            int(rng.integers(1, 3)),
            1 - rng.uniform(0.05, 0.2),
            -1,
        )
    small = cv2.GaussianBlur(small, (0, 0), 1.5)
    out = _work(img)
    _scale(out, cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), np.array([1.0, 1.07, 1.2]))
    return _done(out, img)


def fold_lines(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One or two creases: a thin dark/bright line with shading on one side."""
    h, w = img.shape[:2]
    out = _work(img)
    for _ in range(int(rng.integers(1, 3))):
        horizontal = rng.random() < 0.7
        size = h if horizontal else w
        pos = size * rng.choice([1 / 3, 1 / 2, 2 / 3]) + rng.normal(0, size * 0.02)
        coords = np.arange(size, dtype=np.float32) - pos
        width = rng.uniform(2, 8)
        shade = 1 - rng.uniform(0.03, 0.1) * np.exp(-((coords / width) ** 2))
        shade += rng.uniform(0.0, 0.04) * np.exp(-(((coords - width * 1.5) / (width * 3)) ** 2))
        shade = shade.astype(np.float32)
        shape = (-1, 1) if horizontal else (1, -1)
        out *= shade.reshape(shape + (1,) * (out.ndim - 2))
    return _done(out, img)


def show_through(
    img: np.ndarray, rng: np.random.Generator, ghost: np.ndarray | None = None, opacity: float | None = None
) -> np.ndarray:
    """Writing from the back of the sheet, mirrored and blurred. `ghost` is an ink alpha (HxW,
    0..1) of the other side; without it the page's own darkness is mirrored (works on real pages).
    Worked out at quarter resolution: a ghost is blurry anyway."""
    h, w = img.shape[:2]
    sw, sh = max(1, w // 4), max(1, h // 4)
    if ghost is None:
        small = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32)
        gray = small.mean(axis=2) if small.ndim == 3 else small
        ghost = np.clip((np.median(gray) - gray) / 120.0, 0, 1)
        ghost = np.roll(ghost, int(rng.integers(-sh // 10, sh // 10 + 1)), axis=0)
    else:
        ghost = cv2.resize(ghost.astype(np.float32), (sw, sh), interpolation=cv2.INTER_AREA)
    ghost = cv2.GaussianBlur(np.ascontiguousarray(ghost[:, ::-1]), (0, 0), rng.uniform(0.8, 2.5))
    opacity = rng.uniform(0.02, 0.09) if opacity is None else opacity
    out = _work(img)
    _scale(out, 1 - opacity * cv2.resize(ghost, (w, h), interpolation=cv2.INTER_LINEAR))
    return _done(out, img)


def punch_holes(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Filing holes along one edge, showing a darker or lighter backing."""
    h, w = img.shape[:2]
    out = img if img.dtype == np.float32 else img.copy()
    r = int(min(h, w) * rng.uniform(0.01, 0.018))
    v = float(rng.choice([rng.uniform(20, 90), rng.uniform(200, 255)]))
    top = rng.random() < 0.6
    n = int(rng.integers(2, 4))
    for i in range(n):
        t = (i + 1) / (n + 1) + rng.normal(0, 0.02)
        c = (int(w * t), int(r * rng.uniform(2, 4))) if top else (int(r * rng.uniform(2, 4)), int(h * t))
        cv2.circle(out, c, r, (v, v, v) if out.ndim == 3 else v, -1, cv2.LINE_AA)
    return out


def scanner_noise(img: np.ndarray, rng: np.random.Generator, sigma: float | None = None) -> np.ndarray:
    """Sensor noise, dust specks and now and then a streak down the scan."""
    h, w = img.shape[:2]
    sigma = rng.uniform(1.0, 7.0) if sigma is None else sigma
    out = _work(img)
    noise: np.ndarray = rng.standard_normal(
        (h // 2 + 1, w // 2 + 1), dtype=np.float32
    )  # sensor noise ~2 px grain
    noise = cv2.resize(noise, (w, h), interpolation=cv2.INTER_NEAREST) * sigma
    if out.ndim == 3:
        for c in range(out.shape[2]):
            out[..., c] += noise
    else:
        out += noise
    for _ in range(int(rng.integers(0, 40))):
        v = float(rng.choice([rng.uniform(0, 80), rng.uniform(230, 255)]))
        cv2.circle(
            out,
            (int(rng.integers(w)), int(rng.integers(h))),
            int(rng.integers(1, 3)),
            (v, v, v) if out.ndim == 3 else v,
            -1,
        )
    if rng.random() < 0.1:
        x = int(rng.integers(w))
        out[:, x : x + int(rng.integers(1, 3))] *= rng.uniform(0.7, 1.1)
    return _done(out, img)


def lighting(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Phone-photo light: a gradient or spot, a colour cast and maybe a soft shadow."""
    h, w = img.shape[:2]
    ys, xs = np.mgrid[0:h:8, 0:w:8].astype(np.float32)
    ys, xs = ys / h, xs / w
    if rng.random() < 0.5:
        ang = rng.uniform(0, 2 * np.pi)
        field = np.cos(ang) * xs + np.sin(ang) * ys
        field = 1 - rng.uniform(0.1, 0.4) * (field - field.min()) / (np.ptp(field) + 1e-6)
    else:
        cx, cy = rng.uniform(0, 1, 2)
        field = 1 - rng.uniform(0.1, 0.45) * np.clip(np.hypot(xs - cx, ys - cy) / 1.2, 0, 1)
    if rng.random() < 0.35:  # shadow of the phone / hand over one part
        ang = rng.uniform(0, 2 * np.pi)
        d = np.cos(ang) * (xs - 0.5) + np.sin(ang) * (ys - 0.5) - rng.uniform(0.1, 0.4)
        field *= 1 - rng.uniform(0.15, 0.4) / (1 + np.exp(-d / 0.03))
    field = cv2.resize(field.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    out = _work(img)
    if out.ndim == 3:  # colour cast folded into the per-channel scale
        cast = 1 + np.asarray(rng.normal(0, 0.04, out.shape[2]))
        for c in range(out.shape[2]):
            out[..., c] *= field * np.float32(cast[c])
    else:
        out *= field
    return _done(out, img)


def blur(img: np.ndarray, rng: np.random.Generator, max_sigma: float = 1.4) -> np.ndarray:
    """Out of focus (gaussian) or, a quarter of the time, a short motion streak."""
    if rng.random() < 0.25:
        k = int(rng.integers(3, 8))
        kernel: np.ndarray = np.zeros((k, k), np.float32)
        kernel[k // 2, :] = 1.0 / k
        rot = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), rng.uniform(0, 180), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (k, k))
        return cv2.filter2D(img, -1, kernel / max(kernel.sum(), 1e-6))
    return cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, max_sigma))


def jpeg(img: np.ndarray, rng: np.random.Generator, low: int = 35, high: int = 95) -> np.ndarray:
    """Re-encode as JPEG at a random quality (block artefacts, chroma bleeding)."""
    q = int(rng.integers(low, high + 1))
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
    flag = cv2.IMREAD_COLOR if img.ndim == 3 else cv2.IMREAD_GRAYSCALE
    return cv2.imdecode(buf, flag) if ok else img  # type: ignore[return-value]  # our own JPEG decodes


def resample(img: np.ndarray, rng: np.random.Generator, low: float = 0.5) -> np.ndarray:
    """Down- then up-sample: detail lost by a low-resolution camera or scan."""
    h, w = img.shape[:2]
    f = rng.uniform(low, 1.0)
    small = cv2.resize(img, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


# ---- page geometry (moves polygons too) ------------------------------------------------------------


def warp_polys(polys: Polys, matrix: np.ndarray) -> Polys:
    """Map (N, 4, 2) polygons through a 2x3 affine or 3x3 homography."""
    if len(polys) == 0:
        return polys.astype(np.float32).reshape(0, 4, 2)
    pts = polys.reshape(-1, 1, 2).astype(np.float32)
    if matrix.shape == (2, 3):
        out = cv2.transform(pts, matrix)
    else:
        out = cv2.perspectiveTransform(pts, matrix.astype(np.float64))
    return out.reshape(-1, 4, 2).astype(np.float32)


def rotate(
    img: np.ndarray, polys: Polys, angle: float, fill: tuple | float = 255
) -> tuple[np.ndarray, Polys]:
    """Rotate by `angle` degrees (counter-clockwise), growing the canvas so nothing is cut."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(h * sin + w * cos + 0.5), int(h * cos + w * sin + 0.5)
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    out = cv2.warpAffine(
        img, m, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=fill
    )
    return out, warp_polys(polys, m)


def perspective(
    img: np.ndarray,
    polys: Polys,
    rng: np.random.Generator,
    strength: float = 0.06,
    background: np.ndarray | None = None,
    margin: float = 0.0,
) -> tuple[np.ndarray, Polys]:
    """Tilted camera: move each page corner by up to `strength` x size. With `margin` > 0 the page
    lands inside a larger frame filled from `background` (a desk, a table)."""
    h, w = img.shape[:2]
    mx, my = int(w * margin), int(h * margin)
    ow, oh = w + 2 * mx, h + 2 * my
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    jitter = rng.uniform(-strength, strength, (4, 2)) * np.array([w, h], np.float32)
    dst = (src + np.array([mx, my], np.float32) + jitter).astype(np.float32)
    dst[:, 0] = np.clip(dst[:, 0], 0, ow - 1)
    dst[:, 1] = np.clip(dst[:, 1], 0, oh - 1)
    m = cv2.getPerspectiveTransform(src, dst)
    if background is None:
        fill = tuple(float(v) for v in np.median(img.reshape(-1, img.shape[2] if img.ndim == 3 else 1), 0))
        out = cv2.warpPerspective(img, m, (ow, oh), flags=cv2.INTER_LINEAR, borderValue=fill)
    else:
        bg = cv2.resize(background, (ow, oh)).astype(img.dtype)
        out = cv2.warpPerspective(
            img, m, (ow, oh), dst=bg, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT
        )
    return out, warp_polys(polys, m)


def curl(
    img: np.ndarray, polys: Polys, rng: np.random.Generator, strength: float = 0.015
) -> tuple[np.ndarray, Polys]:
    """A page that does not lie flat (curled edge, bent sheet, book spine): a smooth displacement
    of up to ~`strength` x page size. Polygons move with it (first-order inverse of the field)."""
    h, w = img.shape[:2]
    amp = strength * max(h, w)
    coarse = rng.standard_normal((3, 3, 2), dtype=np.float32) * amp * 0.15
    bend = np.linspace(-1, 1, 3, dtype=np.float32) ** 2 * amp * rng.uniform(-1, 1)  # bow along x or y
    if rng.random() < 0.5:
        coarse[:, :, 1] += bend[None, :]
    else:
        coarse[:, :, 0] += bend[:, None]
    field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    gy, gx = np.indices((h, w), dtype=np.float32)
    out = cv2.remap(
        img, gx + field[..., 0], gy + field[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    if len(polys):
        pts = polys.reshape(-1, 2)
        xi = np.clip(pts[:, 0].round().astype(int), 0, w - 1)
        yi = np.clip(pts[:, 1].round().astype(int), 0, h - 1)
        polys = (pts - field[yi, xi]).reshape(-1, 4, 2).astype(np.float32)
    return out, polys


def desk(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A background for phone photos: wood grain, a plain or fabric table, or more paper."""
    kind = rng.random()
    base = np.array(
        [
            (120, 85, 55),
            (60, 60, 65),
            (180, 170, 150),
            (40, 45, 55),
            (150, 110, 75),
            (200, 200, 195),
            (90, 100, 120),
        ][int(rng.integers(7))],
        np.float32,
    ) + rng.normal(0, 10, 3)
    img = np.empty((h, w, 3), np.float32)
    img[:] = base
    shade = _smooth_field(rng, h, w, max(h, w) / 3) * rng.uniform(5, 20)
    if kind < 0.4:  # wood: streaks along a random direction
        streaks = cv2.resize(rng.standard_normal((max(2, h // 30), 3), dtype=np.float32), (w, h))
        m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(0, 180), 1.5)
        shade += cv2.warpAffine(streaks, m, (w, h), borderMode=cv2.BORDER_REFLECT) * rng.uniform(6, 15)
    elif kind < 0.7:  # fabric / carpet: fine texture
        shade += cv2.GaussianBlur(rng.standard_normal((h, w), dtype=np.float32), (0, 0), 1.0) * rng.uniform(
            4, 12
        )
    img += shade[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


# ---- chains for training on real data ----------------------------------------------------------------


def augment_crop(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random distortions for a grayscale uint8 word crop (dark ink on light paper).

    Geometry runs on the ink (paper level minus the image) so new borders come out as paper, not
    as white or black wedges."""
    paper_level = float(np.percentile(img, 90))
    ink = np.clip(paper_level - img.astype(np.float32), 0, 255)
    h = ink.shape[0]
    if rng.random() < 0.5:
        ink, _ = shear(ink, float(rng.uniform(-0.3, 0.3)), baseline=h * 0.7)
    if rng.random() < 0.3:
        ink = stroke_width(ink, int(rng.choice([-1, 1, 2])))
    if rng.random() < 0.4:
        ink = elastic(ink, rng, amount=rng.uniform(0.5, 2.0), cell=max(6.0, h / 3))
    if rng.random() < 0.4:
        f = rng.uniform(0.8, 1.25)
        ink = cv2.resize(ink, (max(4, int(ink.shape[1] * f)), h), interpolation=cv2.INTER_LINEAR)
    out = paper_level - ink
    if rng.random() < 0.5:  # contrast / brightness
        a, b = rng.uniform(0.6, 1.2), rng.uniform(-30, 30)
        out = out * a + b + (1 - a) * paper_level
    out = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        out = blur(out, rng, max_sigma=1.0)
    if rng.random() < 0.3:
        out = scanner_noise(out, rng, sigma=rng.uniform(1, 8))
    if rng.random() < 0.3:
        out = jpeg(out, rng, 30, 90)
    return out


def augment_page(img: np.ndarray, polys: Polys | list, rng: np.random.Generator) -> tuple[np.ndarray, Polys]:
    """Random page-level distortions for an RGB uint8 page and its (N, 4, 2) word polygons."""
    out, polys = img, np.asarray(polys, np.float32).reshape(-1, 4, 2)
    if rng.random() < 0.3:
        out = stains(out, rng)
    if rng.random() < 0.2:
        out = fold_lines(out, rng)
    if rng.random() < 0.2:
        out = show_through(out, rng)
    if rng.random() < 0.4:
        out = lighting(out, rng)
    if rng.random() < 0.5:
        out, polys = rotate(out, polys, float(rng.normal(0, 1.5)), fill=_edge_fill(out))
    if rng.random() < 0.3:
        out, polys = perspective(out, polys, rng, strength=rng.uniform(0.01, 0.05))
    if rng.random() < 0.4:
        out = blur(out, rng)
    if rng.random() < 0.4:
        out = scanner_noise(out, rng)
    if rng.random() < 0.5:
        out = jpeg(out, rng)
    return out, polys


def _edge_fill(img: np.ndarray) -> tuple:
    edge = np.concatenate([img[0], img[-1]], axis=0)
    return tuple(float(v) for v in np.median(edge.reshape(-1, img.shape[2] if img.ndim == 3 else 1), 0))
