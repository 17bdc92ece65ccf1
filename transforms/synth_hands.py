"""The synthetic-data engine's hands and words (transforms layer; transforms/synth.py is the map).

A hand is a font plus personal slant, size, spacing, stroke, wobble and ink (make_hand); a word is
rendered by it as an ink mask with its baseline (render_word), distorted a little, trimmed tight
around the ink, and now and then struck out (cross_out)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw

from transforms import augment as A
from transforms.fonts import Font, FontLibrary, truetype

CROSSED_OUT = "%SC%"  # GNHK's token for struck-out words: detected, never recognised


# ---- hands -------------------------------------------------------------------------------------


@dataclass
class Hand:
    """One writer: a font and the personal habits layered on top of it."""

    font: Font
    x_height: float  # px; lowercase body height on the page
    slant: float  # tan(angle) added to the font's own slant, > 0 leans right
    stroke: float  # stroke weight change, px per 20 px of x-height (< 0 thinner)
    ink: np.ndarray  # RGB float32
    letter_space: float  # extra gap between glyphs, fraction of x-height (unjoined fonts)
    word_space: float  # gap between words, in x-heights
    line_gap: float  # baseline-to-baseline distance, in x-heights
    size_jitter: float  # per-word relative size change
    drift: float  # baseline wander amplitude, in x-heights
    wobble: float  # elastic distortion amplitude, in x-heights
    pressure_low: float  # lowest ink opacity left by pressure variation
    skew: float  # degrees; lines tend to climb or fall
    kind: str = "H"
    skew_jitter: float = 0.4  # degrees of line-to-line variation around `skew`
    stretch: float = 1.0  # horizontal scale: many cursive hands write wide
    nib: float = 0.0  # broad-nib pen width in x-heights (0: round pen / pencil / biro)
    nib_angle: float = 40.0  # nib angle, degrees

    @property
    def pencil(self) -> bool:
        return bool(np.all(np.abs(self.ink - self.ink.mean()) < 12) and self.ink.mean() > 55)


TYPEWRITER_FONTS = ("liberation-mono", "nimbus-mono")


def make_hand(
    rng: np.random.Generator,
    lib: FontLibrary,
    x_height: float,
    kind: str = "H",
    cursive: bool | None = None,
    typewriter: bool = False,
) -> Hand:
    if kind == "P":
        font = lib.pick(rng, "P")
        if typewriter:
            font = next((f for f in lib.printed if f.name in TYPEWRITER_FONTS), font)
        ink = np.array(
            [(20, 20, 25), (30, 40, 110), (90, 30, 30), (40, 40, 40)][int(rng.integers(4))], np.float32
        )
        space = _advance(font.path, 100, " ") / (100 * x_ratio(font))  # the font's own space, in x-heights
        return Hand(
            font=font,
            x_height=x_height,
            slant=0.0,
            stroke=0.0,
            ink=ink,
            letter_space=0.0,
            word_space=space * rng.uniform(0.9, 1.3),
            line_gap=rng.uniform(2.2, 3.0),
            size_jitter=0.0,
            drift=0.0,
            wobble=0.0,
            pressure_low=0.9,
            skew=0.0,
            kind="P",
        )
    font = lib.pick(rng, "H", cursive)
    hand = Hand(
        font=font,
        x_height=x_height,
        slant=float(rng.normal(0.12, 0.15)),
        stroke=float(
            rng.choice(
                [-1.0, 0.0, 0.0, 0.5, 1.0, 2.0],
                p=[0.15 * (not font.thin), 0.4, 0.15, 0.1, 0.1 + 0.15 * font.thin, 0.1],
            )
        ),
        ink=A.pick_ink(rng),
        letter_space=float(rng.uniform(-0.05, 0.25)),
        word_space=float(rng.uniform(0.6, 1.6)),
        line_gap=float(rng.uniform(2.3, 4.8)),
        size_jitter=float(rng.uniform(0.0, 0.05)),
        drift=float(rng.uniform(0.0, 0.12)),
        wobble=float(rng.uniform(0.0, 0.12)),
        pressure_low=float(rng.uniform(0.45, 0.95)),
        skew=float(rng.normal(0, 0.8)),
        stretch=float(np.exp(rng.normal(0.1 if font.cursive else 0.0, 0.15))),
        nib=float(rng.uniform(0.08, 0.22)) if font.cursive and not font.thin and rng.random() < 0.35 else 0.0,
        nib_angle=float(rng.uniform(25, 60)),
    )
    if hand.pencil:  # graphite is already light: keep pressure from fading it out
        hand.pressure_low = max(hand.pressure_low, 0.75)
    return hand


# ---- words -------------------------------------------------------------------------------------


@dataclass
class InkWord:
    """A rendered word: ink opacity, where its baseline is and the tight box around the ink."""

    alpha: np.ndarray  # float32 HxW, 0..1
    baseline: float  # y of the baseline inside alpha
    box: tuple[int, int, int, int]  # ink x0, y0, x1, y1 (exclusive) inside alpha
    text: str
    kind: str = "H"


_metrics: dict[str, float] = {}


def x_ratio(font: Font) -> float:
    """x-height / font size (cap height for caps-only fonts), measured once per font."""
    if font.path not in _metrics:
        f = truetype(font.path, 100)
        ch = "X" if font.caps_only else "x"
        left, top, right, bottom = f.getbbox(ch, anchor="ls")
        _metrics[font.path] = max(0.2, (bottom - top) / 100.0)
    return _metrics[font.path]


@functools.lru_cache(maxsize=65536)
def _advance(path: str, size: int, ch: str) -> float:
    return truetype(path, size).getlength(ch)


def _font_size(xh: float, font: Font) -> int:
    """Point size giving x-height `xh`; even sizes above 24 px keep the font cache small."""
    s = max(6, int(round(xh / x_ratio(font))))
    return s - s % 2 if s > 24 else s


def _glyph_positions(text: str, font: Font, size: int, spacing: float) -> list[tuple[str, float]]:
    """(chunk, x) pairs. Joined scripts stay one chunk so their connections survive; other fonts
    are placed glyph by glyph at their advance plus the hand's letter spacing."""
    if font.cursive or font.kind == "P":
        return [(text, 0.0)]
    out, x = [], 0.0
    for ch in text:
        out.append((ch, x))
        x += _advance(font.path, size, ch) + spacing
    return out


def render_word(
    text: str, hand: Hand, rng: np.random.Generator, lib: FontLibrary, scale: float = 1.0
) -> InkWord:
    """Draw `text` in `hand` (glyph fallback where the font lacks a character) and distort it."""
    xh = hand.x_height * scale * (1 + rng.normal(0, hand.size_jitter) if hand.size_jitter else 1)
    xh = max(4.0, xh)
    runs = lib.runs(text, hand.font)
    pad = int(xh * 0.8) + 4
    sizes = [_font_size(xh, f) for _, f in runs]
    asc = max(truetype(f.path, s).getmetrics()[0] for (_, f), s in zip(runs, sizes))
    desc = max(truetype(f.path, s).getmetrics()[1] for (_, f), s in zip(runs, sizes))
    widths = [truetype(f.path, s).getlength(t) for (t, f), s in zip(runs, sizes)]
    spacing = hand.letter_space * xh
    width = int(sum(widths) + spacing * len(text) + 2 * pad + xh)
    height = int(asc + desc + 2 * pad)
    img = Image.new("L", (max(8, width), max(8, height)), 0)
    draw = ImageDraw.Draw(img)
    base = pad + asc
    x = float(pad)
    jitter = 0.04 * xh * (hand.kind == "H")
    for (run, f), size in zip(runs, sizes):
        font = truetype(f.path, size)
        for chunk, dx in _glyph_positions(run, f, size, spacing):
            dy = rng.normal(0, jitter) if jitter else 0.0
            draw.text((x + dx, base + dy), chunk, font=font, fill=255, anchor="ls")
        x += font.getlength(run) + spacing * len(run) * (not (f.cursive or f.kind == "P"))
    alpha = np.asarray(img, dtype=np.float32) * (1 / 255.0)
    if hand.kind == "H":
        alpha = _distort(alpha, base, hand, xh, rng)
    return _tighten(alpha, base, text, hand.kind)


def _distort(alpha: np.ndarray, base: float, hand: Hand, xh: float, rng: np.random.Generator) -> np.ndarray:
    if hand.nib > 0:  # thin the font's own strokes, then let the nib make thick and thin
        alpha = A.pen_nib(A.stroke_width(alpha, -int(xh / 20)), hand.nib * xh, hand.nib_angle)
    else:
        delta = int(round(hand.stroke * xh / 20))
        alpha = A.stroke_width(
            alpha, delta if delta > 0 or xh >= 16 else 0
        )  # small text has no stroke to spare
    alpha = A.warp_ink(
        alpha,
        rng,
        hand.slant + rng.normal(0, 0.03),
        base,
        drift=hand.drift * xh,
        wobble=hand.wobble * xh,
        cell=max(4.0, xh * rng.uniform(0.6, 1.4)),
        pressure_low=hand.pressure_low,
        stretch=hand.stretch * rng.uniform(0.97, 1.03),
    )
    if hand.pencil:  # graphite: grainy, never fully dark (the grey ink colour does the rest)
        alpha *= np.clip(0.9 + 0.2 * rng.standard_normal(alpha.shape, dtype=np.float32), 0.55, 1.0)
    return alpha


def _tighten(alpha: np.ndarray, base: float, text: str, kind: str, thr: float = 0.2) -> InkWord:
    """Crop to the ink plus a 2 px margin; remember the ink box inside."""
    rows = np.flatnonzero((alpha > thr).any(axis=1))
    cols = np.flatnonzero((alpha > thr).any(axis=0))
    if len(rows) == 0:  # nothing drawn (e.g. a lone space): keep a 1 px speck so callers stay simple
        return InkWord(np.zeros((3, 3), np.float32), 1.0, (1, 1, 2, 2), text, kind)
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    m = 2
    Y0, X0 = max(0, y0 - m), max(0, x0 - m)
    Y1, X1 = min(alpha.shape[0], y1 + m), min(alpha.shape[1], x1 + m)
    return InkWord(alpha[Y0:Y1, X0:X1].copy(), base - Y0, (x0 - X0, y0 - Y0, x1 - X0, y1 - Y0), text, kind)


def cross_out(word: InkWord, rng: np.random.Generator) -> InkWord:
    """Strike a word through (or scribble over it); the label becomes GNHK's %SC%."""
    a = word.alpha.copy()
    x0, y0, x1, y1 = word.box
    th = max(1, int((y1 - y0) / 12))
    n = int(rng.integers(1, 4)) if rng.random() < 0.6 else int(rng.integers(4, 9))
    for _ in range(n):
        ya = int(rng.uniform(y0 + (y1 - y0) * 0.3, y1 - (y1 - y0) * 0.3))
        yb = int(np.clip(ya + rng.normal(0, (y1 - y0) * 0.15), y0, y1 - 1))
        cv2.line(a, (x0, ya), (x1 - 1, yb), 1.0, th, cv2.LINE_AA)
    return InkWord(a, word.baseline, word.box, CROSSED_OUT, word.kind)
