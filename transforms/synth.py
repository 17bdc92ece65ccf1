"""Synthetic handwritten pages and word crops: the only training data the models get.

A page is laid out like real paperwork (letters with letterheads, notes, lists, forms, diary pages),
written by 1-3 "hands" (a font plus personal slant, size, spacing, stroke, wobble and ink), then
aged and captured as a scan or a phone photo. Every word comes with a tight polygon around its ink.

    render_page(rng)            -> (PIL RGB page, [{"text", "polygon", "line_idx", "type"}])
    WordCropSampler(seed)       -> .sample() -> (uint8 grayscale word crop, text), fast
    write_pages / write_crops   -> JPEGs + manifest.jsonl (batch.core.manifest's format)
    htr synth --pages N --out DIR --seed S [--crops N]
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw

from batch.core.errors import EXIT_BAD_ARGS, EXIT_FATAL, HtrError
from batch.core.manifest import Annotation, Sample, dumps_manifest
from transforms import augment as A
from transforms import text_source as T
from transforms.fonts import Font, FontLibrary, library, truetype

CROSSED_OUT = "%SC%"  # GNHK's token for struck-out words: detected, never recognised


# ---- hands -----------------------------------------------------------------------------------------


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


# ---- words -----------------------------------------------------------------------------------------


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


# ---- lines -----------------------------------------------------------------------------------------


@dataclass
class PlacedWord:
    text: str
    polygon: np.ndarray  # (4, 2) page pixels, clockwise from top-left
    line_idx: int
    kind: str


@dataclass
class Page:
    """A page being written: float RGB paper, the words so far, the next free line index."""

    img: np.ndarray
    words: list[PlacedWord] = field(default_factory=list)
    next_line: int = 0

    @property
    def h(self) -> int:
        return self.img.shape[0]

    @property
    def w(self) -> int:
        return self.img.shape[1]


@dataclass
class LineDraft:
    """A line laid out but not yet on the page: its ink strip, where it goes, its word boxes."""

    strip: np.ndarray  # float32 ink alpha
    m: np.ndarray  # 2x3 affine, strip -> page
    words: list[InkWord]  # the words that fit
    quads: np.ndarray  # (n, 4, 2) word polygons in page pixels
    ink: np.ndarray

    def bbox(self, grow: float = 0.0) -> tuple[float, float, float, float]:
        pts = self.quads.reshape(-1, 2)
        x0, y0 = pts.min(0)
        x1, y1 = pts.max(0)
        return x0 - grow, y0 - grow, x1 + grow, y1 + grow


def draft_line(
    words: list[InkWord],
    hand: Hand,
    x: float,
    baseline: float,
    max_w: float,
    rng: np.random.Generator,
    angle: float | None = None,
) -> LineDraft:
    """Lay words left to right from (x, baseline) on a strip until `max_w` is used (at least one).

    The strip is later rotated by the line's skew onto the page; the word polygons go through the
    same rotation, so they stay tight around the ink.
    """
    xh = hand.x_height
    strip_h = int(max(w.alpha.shape[0] for w in words) * 2 + xh)
    base_y = strip_h / 2
    pad = int(2 * xh) + 4  # room for swashes and slant left of the first word's ink
    strip = np.zeros((strip_h, int(max_w + 4 * xh) + 2 * pad), np.float32)
    cx, boxes, placed = float(pad), [], []
    for i, w in enumerate(words):
        bw = w.box[2] - w.box[0]
        if i and cx - pad + bw > max_w:
            break
        y = base_y - w.baseline + rng.normal(0, 0.06 * xh) * (hand.kind == "H")
        ox, oy = int(round(cx - w.box[0])), int(round(y))
        _stamp(strip, w.alpha, ox, oy)
        boxes.append(
            [
                [ox + w.box[0], oy + w.box[1]],
                [ox + w.box[2], oy + w.box[1]],
                [ox + w.box[2], oy + w.box[3]],
                [ox + w.box[0], oy + w.box[3]],
            ]
        )
        placed.append(w)
        cx += bw + hand.word_space * xh * (rng.uniform(0.75, 1.3) if hand.kind == "H" else 1.0)
    angle = hand.skew + rng.normal(0, hand.skew_jitter) if angle is None else angle
    m: np.ndarray = cv2.getRotationMatrix2D((float(pad), base_y), 0.0 if hand.kind == "P" else angle, 1.0)
    m[:, 2] += (x - pad, baseline - base_y)
    return LineDraft(strip, m, placed, A.warp_polys(np.asarray(boxes, np.float32), m), hand.ink)


def commit_line(page: Page, draft: LineDraft, label: bool = True) -> int:
    """Put a drafted line on the page; its words get the next line index. Returns the word count."""
    _composite_warped(page.img, draft.strip, draft.m, draft.ink)
    if label:
        idx = page.next_line
        page.next_line += 1
        page.words.extend(PlacedWord(w.text, q, idx, w.kind) for w, q in zip(draft.words, draft.quads))
    return len(draft.words)


def write_line(
    page: Page,
    words: list[InkWord],
    hand: Hand,
    x: float,
    baseline: float,
    max_w: float,
    rng: np.random.Generator,
    angle: float | None = None,
    label: bool = True,
) -> int:
    """Draft and commit one line; returns how many of `words` fit."""
    if not words:
        return 0
    return commit_line(page, draft_line(words, hand, x, baseline, max_w, rng, angle), label)


def _overlaps(page: Page, box: tuple[float, float, float, float]) -> bool:
    """Whether an axis-aligned box meets any word already on the page (or leaves the page)."""
    x0, y0, x1, y1 = box
    if x0 < 0 or y0 < 0 or x1 > page.w or y1 > page.h:
        return True
    for w in page.words:
        (a0, b0), (a1, b1) = w.polygon.min(0), w.polygon.max(0)
        if a0 < x1 and x0 < a1 and b0 < y1 and y0 < b1:
            return True
    return False


def _composite_warped(img: np.ndarray, alpha: np.ndarray, m: np.ndarray, colour: np.ndarray) -> None:
    """Warp `alpha` by affine `m` into its page bounding box only (cheap), then lay it as ink."""
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    if len(rows) == 0:
        return
    alpha = alpha[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # strips are mostly empty margin
    m = m.copy()
    m[:, 2] += m[:, :2] @ np.array([cols[0], rows[0]], np.float64)
    h, w = alpha.shape
    corners = A.warp_polys(np.array([[[0, 0], [w, 0], [w, h], [0, h]]], np.float32), m)[0]
    x0, y0 = np.floor(corners.min(0)).astype(int)
    x1, y1 = np.ceil(corners.max(0)).astype(int)
    if x1 <= 0 or y1 <= 0 or x0 >= img.shape[1] or y0 >= img.shape[0]:
        return
    mm = m.copy()
    mm[:, 2] -= (x0, y0)
    warped = cv2.warpAffine(alpha, mm, (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_LINEAR)
    A.composite(img, warped, colour, int(x0), int(y0))


# ---- page layouts ----------------------------------------------------------------------------------


@dataclass
class Frame:
    """Writing area and vertical cursor."""

    left: float
    right: float
    top: float
    bottom: float
    y: float


def _words(
    tokens: list[str], hand: Hand, rng: np.random.Generator, lib: FontLibrary, cross_rate: float = 0.015
) -> list[InkWord]:
    out = []
    for t in tokens:
        if hand.font.caps_only and any(c.islower() for c in t):
            t = t.upper()
        if not t.strip():
            continue  # nothing drawable: an empty word would have no ink and no label
        w = render_word(t, hand, rng, lib)
        if hand.kind == "H" and rng.random() < cross_rate:
            w = cross_out(w, rng)
        out.append(w)
    return out


def paragraph(
    page: Page,
    fr: Frame,
    tokens: list[str],
    hand: Hand,
    rng: np.random.Generator,
    lib: FontLibrary,
    indent: float = 0.0,
    rules: np.ndarray | None = None,
) -> None:
    """Wrap tokens into lines inside the frame (ragged right), moving the cursor down. Words are
    rendered a line's worth at a time, so text that will not fit is never drawn."""
    pending, first = list(tokens), True
    words: list[Any] = []
    while (pending or words) and fr.y < fr.bottom:
        while pending and len(words) < 16:
            words += _words([pending.pop(0)], hand, rng, lib)
        fr.y = _snap(fr.y, rules)
        ind = indent if first else rng.normal(0, 0.2) * hand.x_height
        left = fr.left + ind + rng.normal(0, 0.15 * hand.x_height)
        n = write_line(page, words, hand, left, fr.y, fr.right - left, rng)
        words = words[max(1, n) :]
        if hand.kind == "H" and n >= 2 and rng.random() < 0.04:
            interlinear(page, hand, rng, lib)
        fr.y += hand.line_gap * hand.x_height * rng.uniform(0.95, 1.05)
        first = False


def interlinear(page: Page, hand: Hand, rng: np.random.Generator, lib: FontLibrary) -> None:
    """A word squeezed in above the last line, between two of its words, with a caret below:
    its own (short) line, as transcribers mark interlinear additions."""
    line = [w for w in page.words if w.line_idx == page.next_line - 1]
    i = int(rng.integers(len(line) - 1))
    left, right = line[i].polygon, line[i + 1].polygon
    small = replace(hand, x_height=hand.x_height * rng.uniform(0.6, 0.8), skew=0.0, skew_jitter=1.0)
    word = _words([T.english_word(rng, flatten=0.85)], small, rng, lib, cross_rate=0.0)
    gap_x = (left[1, 0] + right[0, 0]) / 2
    top = min(left[:, 1].min(), right[:, 1].min())
    descent = word[0].box[3] - word[0].baseline  # keep descenders clear of the line below
    draft = draft_line(
        word, small, gap_x - (word[0].box[2] - word[0].box[0]) / 2, top - 3 - descent, page.w, rng
    )
    if _overlaps(page, draft.bbox(-1.0)):
        return
    commit_line(page, draft)
    base = float(max(left[:, 1].max(), right[:, 1].max()))
    s = hand.x_height * 0.5
    cv2.polylines(
        page.img,
        [
            np.array(
                [[gap_x - s / 2, base + s * 0.3], [gap_x, base - s * 0.6], [gap_x + s / 2, base + s * 0.3]],
                np.int32,
            )
        ],
        False,
        tuple(float(c) for c in hand.ink),
        max(1, int(hand.x_height / 12)),
        cv2.LINE_AA,
    )


def _snap(y: float, rules: np.ndarray | None) -> float:
    """On ruled paper the baseline sits on the next rule (a little above it, as people write)."""
    if rules is None or len(rules) == 0:
        return y
    nxt = rules[rules >= y - 2]
    return float(nxt[0] - 2) if len(nxt) else y


def single_line(
    page: Page,
    fr: Frame,
    tokens: list[str],
    hand: Hand,
    rng: np.random.Generator,
    lib: FontLibrary,
    align: str = "left",
    gap: float | None = None,
    rules: np.ndarray | None = None,
    indent: float = 0.0,
) -> None:
    """One line aligned left / right / centre (dates, salutations, signatures, headings)."""
    if fr.y >= fr.bottom:
        return
    words = _words(tokens, hand, rng, lib)
    fr.y = _snap(fr.y, rules)
    width = sum(w.box[2] - w.box[0] for w in words) + hand.word_space * hand.x_height * (len(words) - 1)
    span = fr.right - fr.left
    if align == "right":
        x = fr.left + max(0.0, span - width) - rng.uniform(0, 0.15) * span
    elif align == "centre":
        x = fr.left + max(0.0, (span - width) / 2) + rng.normal(0, 0.02) * span
    elif align == "anywhere":
        x = fr.left + rng.uniform(0, max(1.0, span - width))
    else:
        x = fr.left + indent + rng.normal(0, 0.2) * hand.x_height
    x = max(fr.left * 0.5, x)
    write_line(page, words, hand, x, fr.y, fr.right - x + hand.x_height * 2, rng)
    fr.y += (hand.line_gap if gap is None else gap) * hand.x_height


def letterhead(page: Page, fr: Frame, rng: np.random.Generator, lib: FontLibrary) -> Hand:
    """Printed header: organisation name, address, perhaps officers in two columns. Returns the
    small print hand (for a pre-printed date line)."""
    xh = max(7.0, page.w * rng.uniform(1 / 160, 1 / 90))  # small print, but legible at this scan size
    name = [
        t.upper() if rng.random() < 0.5 else t.capitalize()
        for t in T.english_words(rng, int(rng.integers(2, 6)), flatten=0.5)
    ]
    big = make_hand(rng, lib, xh * rng.uniform(1.4, 2.2), "P")
    fr.y = fr.top + big.x_height * 2
    single_line(page, fr, name, big, rng, lib, align=str(rng.choice(["centre", "left"])), gap=2.4)
    small = make_hand(rng, lib, xh, "P")
    small.ink = big.ink
    for line in T.address(rng)[: int(rng.integers(1, 3))]:
        single_line(page, fr, line, small, rng, lib, align="centre", gap=2.4)
    if rng.random() < 0.4:  # officers' columns, left and right
        col = Frame(fr.left, fr.left + (fr.right - fr.left) * 0.3, fr.top, fr.bottom, fr.top + xh * 2)
        col2 = Frame(fr.right - (fr.right - fr.left) * 0.3, fr.right, fr.top, fr.bottom, fr.top + xh * 2)
        caps = rng.random() < 0.5
        for c in (col, col2):
            for _ in range(int(rng.integers(2, 5))):
                single_line(
                    page,
                    c,
                    [rng.choice(["President:", "Secretary:", "Treasurer:", "Office:"])],
                    small,
                    rng,
                    lib,
                    gap=2.0,
                )
                name = T.person(rng)
                single_line(page, c, [t.upper() for t in name] if caps else name, small, rng, lib, gap=2.6)
        fr.y = max(fr.y, col.y, col2.y)
    fr.y += xh * rng.uniform(2, 6)
    return small


def dated_line(
    page: Page, fr: Frame, hand: Hand, printed: Hand, rng: np.random.Generator, lib: FontLibrary
) -> None:
    """A pre-printed 'Town, ______' line on the letterhead with the date written on the rule."""
    span = fr.right - fr.left
    x, y = fr.left + span * rng.uniform(0.3, 0.55), fr.y
    x_end = _words_at(page, [T._pick(rng, T.TOWNS) + ","], printed, x, y, rng, lib)
    rule_end = fr.right - span * rng.uniform(0.0, 0.05)
    cv2.line(
        page.img,
        (int(x_end + printed.x_height * 0.3), int(y + 2)),
        (int(rule_end), int(y + 2)),
        tuple(float(c) for c in printed.ink),
        max(1, int(printed.x_height / 8)),
    )
    start = x_end + hand.x_height * rng.uniform(0.5, 2.0)
    write_line(
        page,
        _words(T.date(rng), hand, rng, lib),
        hand,
        start,
        y - rng.uniform(0, 0.2) * hand.x_height,
        max(hand.x_height * 4, rule_end - start + hand.x_height * 2),
        rng,
    )
    fr.y += hand.line_gap * hand.x_height


def layout_letter(
    page: Page,
    fr: Frame,
    hands: list[Hand],
    rng: np.random.Generator,
    lib: FontLibrary,
    rules: np.ndarray | None,
) -> None:
    h = hands[0]
    printed = letterhead(page, fr, rng, lib) if rules is None and rng.random() < 0.5 else None
    fr.y += h.x_height * 2
    if printed is not None and rng.random() < 0.5:
        dated_line(page, fr, h, printed, rng, lib)
    else:
        single_line(page, fr, T.date(rng), h, rng, lib, align="right", rules=rules)
    if rng.random() < 0.45:  # addressee block, often indented step by step
        step = h.x_height * rng.uniform(1.5, 5) if rng.random() < 0.5 else 0.0
        for i, line in enumerate([T.person(rng)] + T.address(rng)):
            single_line(page, fr, line, h, rng, lib, gap=h.line_gap * 0.9, rules=rules, indent=i * step)
    writer = h
    if rules is None and rng.random() < 0.12:  # typed letter, signed and annotated by hand
        writer = make_hand(rng, lib, h.x_height * rng.uniform(0.6, 0.85), "P", typewriter=True)
    single_line(page, fr, T.salutation(rng), writer, rng, lib, rules=rules)
    body = replace(fr, bottom=fr.bottom - 2.2 * h.line_gap * h.x_height)  # room for closing + signature
    for _ in range(int(rng.integers(2, 7))):  # letters fill the sheet; the frame stops them at the bottom
        paragraph(
            page,
            body,
            T.prose(rng, int(rng.integers(12, 90))),
            writer,
            rng,
            lib,
            indent=writer.x_height * rng.uniform(0, 10),
            rules=rules,
        )
    fr.y = body.y
    single_line(page, fr, T.closing(rng), h, rng, lib, align="right", rules=rules)
    signature(page, fr, h, rng, lib, rules)
    if len(hands) > 1:
        annotate(page, fr, hands[1], rng, lib)


def layout_note(
    page: Page,
    fr: Frame,
    hands: list[Hand],
    rng: np.random.Generator,
    lib: FontLibrary,
    rules: np.ndarray | None,
) -> None:
    h = hands[0]
    if rng.random() < 0.6:
        single_line(
            page,
            fr,
            T.date(rng) if rng.random() < 0.5 else T.prose(rng, int(rng.integers(1, 4))),
            h,
            rng,
            lib,
            align=str(rng.choice(["left", "right", "centre"])),
            rules=rules,
        )
    while fr.y < fr.bottom - h.x_height * 4:
        paragraph(
            page,
            fr,
            T.prose(rng, int(rng.integers(5, 60))),
            h,
            rng,
            lib,
            indent=h.x_height * rng.uniform(0, 3) * (rng.random() < 0.5),
            rules=rules,
        )
        fr.y += h.x_height * rng.uniform(0, 2)
        if rng.random() < 0.25:
            break
    for other in hands[1:]:
        annotate(page, fr, other, rng, lib)


def layout_list(
    page: Page,
    fr: Frame,
    hands: list[Hand],
    rng: np.random.Generator,
    lib: FontLibrary,
    rules: np.ndarray | None,
) -> None:
    h = hands[0]
    single_line(
        page,
        fr,
        [t.capitalize() for t in T.english_words(rng, int(rng.integers(1, 4)))]
        + [":"] * (rng.random() < 0.3),
        h,
        rng,
        lib,
        align=str(rng.choice(["left", "centre"])),
        rules=rules,
    )
    bullet = str(rng.choice(["-", "*", "num", "num)", "none", "o"]))
    priced = rng.random() < 0.4
    i = 1
    while fr.y < fr.bottom and i < 40:
        item = T.prose(rng, int(rng.integers(1, 6)))
        item[-1] = item[-1].rstrip(".") if rng.random() < 0.7 else item[-1]
        if bullet == "num":
            item.insert(0, f"{i}.")
        elif bullet == "num)":
            item.insert(0, f"{i})")
        elif bullet != "none":
            item.insert(0, bullet)
        if priced:
            item.append(T.money(rng))
        single_line(page, fr, item, h, rng, lib, rules=rules)
        i += 1
    for other in hands[1:]:
        annotate(page, fr, other, rng, lib)


FORM_LABELS = [
    "Name:",
    "Surname:",
    "First name:",
    "Address:",
    "Date:",
    "Date of birth:",
    "Tel:",
    "Phone:",
    "Email:",
    "Signature:",
    "Amount:",
    "Ref.",
    "No.",
    "Account:",
    "Occupation:",
    "Town:",
    "Postcode:",
    "Received from:",
    "The sum of:",
    "For:",
    "Remarks:",
    "Order No.",
    "Qty",
    "Item",
]


def layout_form(
    page: Page,
    fr: Frame,
    hands: list[Hand],
    rng: np.random.Generator,
    lib: FontLibrary,
    rules: np.ndarray | None,
) -> None:
    """Printed title and labels with handwritten answers on underlines."""
    h = hands[0]
    label = make_hand(rng, lib, h.x_height * rng.uniform(0.6, 0.9), "P")
    title = make_hand(rng, lib, label.x_height * rng.uniform(1.5, 2.2), "P")
    title.ink = label.ink
    single_line(
        page,
        fr,
        [t.upper() for t in T.english_words(rng, int(rng.integers(1, 5)), flatten=0.5)],
        title,
        rng,
        lib,
        align="centre",
        gap=3.5,
    )
    fr.y += h.x_height * 2
    while fr.y < fr.bottom - h.x_height * 2:
        lab = str(rng.choice(FORM_LABELS))
        row = Frame(fr.left, fr.right, fr.top, fr.bottom, fr.y)
        lab_w = (
            _words_at(page, lab.split(), label, row.left, row.y, rng, lib)
            - row.left
            + h.x_height * rng.uniform(0.5, 1.5)
        )
        line_col = tuple(float(c) for c in label.ink)
        cv2.line(
            page.img,
            (int(row.left + lab_w), int(row.y + h.x_height * 0.4)),
            (int(row.right), int(row.y + h.x_height * 0.4)),
            line_col,
            max(1, int(h.x_height / 15)),
        )
        answer = _form_answer(lab, rng)
        write_line(
            page,
            _words(answer, h, rng, lib),
            h,
            row.left + lab_w + rng.uniform(0, 2) * h.x_height,
            row.y + rng.normal(0, 0.1) * h.x_height,
            row.right - row.left - lab_w,
            rng,
        )
        fr.y += h.x_height * h.line_gap * rng.uniform(1.0, 1.4)
    for other in hands[1:]:
        annotate(page, fr, other, rng, lib)


def _words_at(
    page: Page, tokens: list[str], hand: Hand, x: float, y: float, rng: np.random.Generator, lib: FontLibrary
) -> float:
    """Write tokens on one unskewed line at (x, y); returns the x where their ink ends."""
    n0 = len(page.words)
    write_line(page, _words(tokens, hand, rng, lib), hand, x, y, page.w - x, rng, angle=0.0)
    return max([float(w.polygon[:, 0].max()) for w in page.words[n0:]], default=x)


def _form_answer(label: str, rng: np.random.Generator) -> list[str]:
    lab = label.lower()
    if "date" in lab:
        return T.date(rng)
    if "name" in lab or "from" in lab or "signature" in lab:
        return T.person(rng)
    if "address" in lab:
        return T.address(rng)[-1]
    if "tel" in lab or "phone" in lab:
        return [T.phone(rng)]
    if "email" in lab:
        return [f"{T.english_word(rng)}{int(rng.integers(0, 99))}@{T.english_word(rng)}.com"]
    if "amount" in lab or "sum" in lab:
        return [T.money(rng)]
    if "no" in lab or "ref" in lab or "qty" in lab or "account" in lab:
        return [T.number(rng) if rng.random() < 0.5 else T.rare_token(rng)]
    return T.prose(rng, int(rng.integers(1, 6)))


def annotate(page: Page, fr: Frame, hand: Hand, rng: np.random.Generator, lib: FontLibrary) -> None:
    """A second hand: a P.S. below the text, or a note at an angle in free space (margins, top),
    never over other words: overlapping labels would teach the detector nonsense."""
    words = _words(T.prose(rng, int(rng.integers(1, 7))), hand, rng, lib)
    if rng.random() < 0.35 and fr.y < page.h - hand.x_height * 4:
        y = min(fr.y + hand.x_height * 2, page.h - hand.x_height * 3)
        line = draft_line(_words(["P.S."], hand, rng, lib) + words, hand, fr.left, y, fr.right - fr.left, rng)
        if not _overlaps(page, line.bbox(hand.x_height * 0.3)):
            commit_line(page, line)
        return
    angle = float(rng.choice([rng.uniform(-40, 40), rng.normal(0, 3)]))
    width = page.w * rng.uniform(0.15, 0.35)
    for _ in range(12):  # find a free spot for the whole note, line by line
        x, y = rng.uniform(0.01, 0.8) * page.w, rng.uniform(0.03, 0.97) * page.h
        lines: list[Any] = []
        rest = words
        while rest and len(lines) < 3:
            line = draft_line(rest, hand, x, y, width, rng, angle=angle)
            lines.append(line)
            rest = rest[len(line.words) :]
            y += hand.line_gap * hand.x_height * math.cos(math.radians(angle))
            x -= hand.line_gap * hand.x_height * math.sin(math.radians(angle))
        if not any(_overlaps(page, ln.bbox(hand.x_height * 0.5)) for ln in lines):
            for ln in lines:
                commit_line(page, ln)
            return


def signature(
    page: Page, fr: Frame, hand: Hand, rng: np.random.Generator, lib: FontLibrary, rules: np.ndarray | None
) -> None:
    """The writer's name, bigger and more slanted than the text, often with a flourish under it."""
    sig = Hand(**{**hand.__dict__})
    sig.x_height = hand.x_height * rng.uniform(1.0, 1.7)
    sig.slant = hand.slant + rng.uniform(0.0, 0.25)
    sig.stretch = hand.stretch * rng.uniform(1.0, 1.4)
    n0 = len(page.words)
    single_line(
        page, fr, T.person(rng)[-int(rng.integers(1, 3)) :], sig, rng, lib, align="right", rules=rules
    )
    if len(page.words) > n0 and rng.random() < 0.5:  # unlabelled flourish under the name
        poly = np.concatenate([w.polygon for w in page.words[n0:]])
        (x0, _), (x1, y1) = poly.min(0), poly.max(0)
        t = np.linspace(0, 1, 24)
        xs = x0 + (x1 - x0) * (t * rng.uniform(1.0, 1.2) - rng.uniform(0, 0.1))
        ys = y1 + sig.x_height * (0.3 + rng.uniform(0.1, 0.5) * np.sin(np.pi * t * rng.uniform(1, 3)))
        cv2.polylines(
            page.img,
            [np.stack([xs, ys], 1).astype(np.int32)],
            False,
            tuple(float(c) for c in hand.ink),
            max(1, int(sig.x_height / 12)),
            cv2.LINE_AA,
        )


def marks(page: Page, hands: list[Hand], fr: Frame, rng: np.random.Generator) -> None:
    """Unlabelled pen marks real pages have: ticks, underlines, margin strokes, a stamp."""
    h = hands[0]
    colour = tuple(float(c) for c in h.ink)
    th = max(1, int(h.x_height / 10))
    for _ in range(int(rng.integers(0, 4))):
        s = h.x_height * rng.uniform(0.8, 2.5)
        kind = rng.random()
        if kind < 0.35:  # tick in the margin
            x, y = (
                rng.uniform(0.01, max(0.02, fr.left / page.w - 0.02)) * page.w,
                rng.uniform(0.05, 0.95) * page.h,
            )
            pts = np.array([[x, y], [x + s * 0.3, y + s * 0.4], [x + s, y - s * 0.6]], np.int32)
        elif kind < 0.75 and page.words:  # underline a word
            p = page.words[int(rng.integers(len(page.words)))].polygon
            pts = np.array([p[3] + (0, th * 2), p[2] + (0, th * 2 + rng.normal(0, th))], np.int32)
        else:  # vertical stroke in the left margin
            x, y = fr.left - rng.uniform(0.3, 1.5) * h.x_height, rng.uniform(0.1, 0.8) * page.h
            pts = np.array([[x, y], [x + rng.normal(0, s * 0.1), y + s * rng.uniform(2, 6)]], np.int32)
        cv2.polylines(page.img, [pts], False, colour, th, cv2.LINE_AA)
    if rng.random() < 0.05:
        stamp(page, rng, h.x_height)
    if rng.random() < 0.12:  # a reader's big tick at the top of the sheet
        x, y, s = (
            rng.uniform(0.3, 0.8) * page.w,
            rng.uniform(0.02, 0.06) * page.h,
            h.x_height * rng.uniform(1.5, 3),
        )
        pts = np.array(
            [[x, y + s * 0.3], [x + s * 0.25, y + s], [x + s * rng.uniform(0.8, 1.2), y - s * 0.2]], np.int32
        )
        cv2.polylines(page.img, [pts], False, colour, max(2, th), cv2.LINE_AA)


def stamp(page: Page, rng: np.random.Generator, xh: float) -> None:
    """A round rubber stamp (unlabelled, as archives leave them): two rings and a date bar."""
    r = int(xh * rng.uniform(2.5, 4.5))
    cx, cy = int(rng.uniform(0.5, 0.9) * page.w), int(rng.uniform(0.03, 0.2) * page.h + r)
    colour = [(120, 60, 160), (170, 40, 50), (40, 60, 150)][int(rng.integers(3))]
    layer: np.ndarray = np.zeros((2 * r + 8, 2 * r + 8), np.float32)
    c = (r + 4, r + 4)
    cv2.circle(layer, c, r, 1.0, max(2, r // 14), cv2.LINE_AA)
    cv2.circle(layer, c, int(r * 0.72), 1.0, max(1, r // 20), cv2.LINE_AA)
    cv2.rectangle(
        layer,
        (c[0] - int(r * 0.6), c[1] - r // 6),
        (c[0] + int(r * 0.6), c[1] + r // 6),
        1.0,
        max(1, r // 20),
    )
    layer *= np.clip(0.55 + 0.5 * rng.random(layer.shape, dtype=np.float32), 0, 1)  # uneven inking
    m = cv2.getRotationMatrix2D(c, rng.uniform(-30, 30), 1.0)
    layer = cv2.warpAffine(layer, m, layer.shape[::-1])
    A.composite(page.img, layer * rng.uniform(0.5, 0.9), np.array(colour, np.float32), cx - r - 4, cy - r - 4)


LAYOUTS = {
    "letter": (layout_letter, 0.4),
    "note": (layout_note, 0.25),
    "list": (layout_list, 0.15),
    "form": (layout_form, 0.2),
}


# ---- whole pages -----------------------------------------------------------------------------------

PAPER_SIZES_IN = {
    "a4": (8.27, 11.69),
    "letter": (8.5, 11.0),
    "half": (5.5, 8.5),
    "card": (6.0, 4.0),
    "notebook": (7.0, 9.75),
    "legal_pad": (8.5, 14.0),
}


def _page_size(rng: np.random.Generator) -> tuple[int, int]:
    name = str(rng.choice(list(PAPER_SIZES_IN), p=[0.35, 0.2, 0.15, 0.08, 0.17, 0.05]))
    w_in, h_in = PAPER_SIZES_IN[name]
    dpi = rng.uniform(110, 240)
    w, h = int(w_in * dpi), int(h_in * dpi)
    if max(w, h) > 2800:
        f = 2800 / max(w, h)
        w, h = int(w * f), int(h * f)
    return w, h


def render_page(rng: np.random.Generator) -> tuple[Image.Image, list[dict]]:
    """One synthetic page and its words: (RGB image, [{"text", "polygon", "line_idx", "type"}])."""
    lib = library()
    w, h = _page_size(rng)
    page = Page(A.paper(h, w, rng))
    xh = max(12.0, w / rng.uniform(28, 90))
    hands = [make_hand(rng, lib, xh, cursive=rng.random() < 0.55 or None)]
    for _ in range(int(rng.choice([0, 1, 2], p=[0.6, 0.3, 0.1]))):
        hands.append(make_hand(rng, lib, xh * rng.uniform(0.7, 1.3)))
    fr = Frame(
        w * rng.uniform(0.04, 0.16),
        w * (1 - rng.uniform(0.03, 0.12)),
        h * rng.uniform(0.03, 0.12),
        h * (1 - rng.uniform(0.03, 0.1)),
        0.0,
    )
    fr.y = fr.top + xh * 2
    rules = _paper_rules(page, fr, hands[0], rng)
    if rules is not None:  # on ruled paper people follow the rules
        hands[0].skew, hands[0].skew_jitter = float(rng.normal(0, 0.1)), 0.08
    names = list(LAYOUTS)
    layout = LAYOUTS[names[int(rng.choice(len(names), p=[v[1] for v in LAYOUTS.values()]))]][0]
    layout(page, fr, hands, rng, lib, rules)
    marks(page, hands, fr, rng)
    img, polys = _age_and_capture(page, rng)
    return Image.fromarray(img, "RGB"), _records(page.words, polys, img.shape[1], img.shape[0])


def _paper_rules(page: Page, fr: Frame, hand: Hand, rng: np.random.Generator) -> np.ndarray | None:
    """A third of pages are ruled or squared: rules are spaced for the main hand's line gap."""
    if rng.random() > 0.33:
        return None
    hand.line_gap = float(rng.uniform(2.5, 3.6))  # people size their writing to the rules
    spacing = hand.line_gap * hand.x_height
    grid = rng.random() < 0.25
    margin = fr.left - hand.x_height * rng.uniform(0.5, 2) if rng.random() < 0.5 else None
    return A.ruled_lines(page.img, rng, spacing, fr.top + spacing * rng.uniform(0.5, 1.5), margin, grid)


def _age_and_capture(page: Page, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    img = page.img  # float32: the photometric ops below work on it in place
    polys = np.stack([w.polygon for w in page.words]) if page.words else np.zeros((0, 4, 2), np.float32)
    if rng.random() < 0.3:
        A.show_through(img, rng)
    if rng.random() < 0.25:
        A.stains(img, rng)
    if rng.random() < 0.35:
        A.fold_lines(img, rng)
    if rng.random() < 0.15:
        A.punch_holes(img, rng)
    img = np.clip(img, 0, 255, out=img).astype(np.uint8)
    if rng.random() < 0.3:  # phone photo: tilted, maybe curled page on a desk, uneven light
        if rng.random() < 0.5:
            img, polys = A.curl(img, polys, rng, rng.uniform(0.003, 0.012))
        img, polys = A.perspective(
            img,
            polys,
            rng,
            rng.uniform(0.01, 0.06),
            A.desk(img.shape[0], img.shape[1], rng),
            margin=rng.uniform(0.0, 0.08),
        )
        img = A.lighting(img, rng)
        if rng.random() < 0.5:
            img = A.resample(img, rng, 0.6)
    elif rng.random() < 0.25:  # scan with the sheet's edges showing on the scanner lid
        lid = np.full_like(img, int(rng.choice([rng.uniform(20, 70), rng.uniform(200, 240)])))
        img, polys = A.perspective(
            img, polys, rng, rng.uniform(0.0, 0.012), lid, margin=rng.uniform(0.01, 0.04)
        )
    else:  # flat scan: slight rotation
        if rng.random() < 0.6:
            img, polys = A.rotate(img, polys, float(rng.normal(0, 0.8)), fill=A._edge_fill(img))
    if rng.random() < 0.15:
        img = A.lighting(img, rng)
    if rng.random() < 0.4:
        img = A.blur(img, rng, 1.1)
    img = A.scanner_noise(img, rng, rng.uniform(0.5, 4))
    if rng.random() < 0.3:
        img = A.jpeg(img, rng, 40, 90)
    return img, polys


def _records(words: list[PlacedWord], polys: np.ndarray, w: int, h: int) -> list[dict]:
    """Clip polygons to the image; drop words that ended up mostly outside it."""
    out = []
    for word, poly in zip(words, polys):
        clipped = np.clip(poly, [0, 0], [w - 1, h - 1])
        area = _area(poly)
        if area <= 1 or _area(clipped) < 0.6 * area:
            continue
        out.append(
            {
                "text": word.text,
                "polygon": [{"x": round(float(x), 1), "y": round(float(y), 1)} for x, y in clipped],
                "line_idx": word.line_idx,
                "type": word.kind,
            }
        )
    return out


def _area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


# ---- word crops for the recogniser ---------------------------------------------------------------------


class WordCropSampler:
    """Word crops cut the way the detector will cut them, fast enough to feed training on the fly.

    Each sample: a fresh hand, a token from text_source, the word on a paper patch with maybe bits
    of the neighbouring lines, cut with jittered margins and a slight rotation, then light noise.
    """

    def __init__(self, seed: int, bank: int = 12, patch: int = 384):
        self.rng = np.random.default_rng(seed)
        self.lib = library()
        bank_rng = np.random.default_rng([seed, 1])
        # A bank of grayscale paper patches, made once: paper synthesis per crop would be too slow.
        self.papers = [
            cv2.cvtColor(A.paper(patch, patch, bank_rng).astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(
                np.float32
            )
            for _ in range(bank)
        ]
        # Recent words, reused (rescaled) as neighbours: rendering extra words per crop is the
        # expensive part, and a neighbour only shows as a fragment.
        self.recent: list[InkWord] = []

    def sample(self) -> tuple[np.ndarray, str]:
        crop, text, _ = self.sample_with_box()
        return crop, text

    def sample_with_box(self) -> tuple[np.ndarray, str, tuple[int, int, int, int]]:
        """Like sample(), plus the word's ink box (x0, y0, x1, y1) inside the crop."""
        rng = self.rng
        xh = float(rng.uniform(9, 26))
        hand = make_hand(rng, self.lib, xh, "P" if rng.random() < 0.05 else "H")
        text = T.token(rng)
        if hand.font.caps_only and any(c.islower() for c in text):
            text = text.upper()
        word = render_word(text, hand, rng, self.lib)
        canvas, box = self._scene(word, hand, rng)
        self.recent = (self.recent + [word])[-32:]
        crop, box = self._cut(canvas, box, xh, rng)
        return self._finish(crop, rng), text, box

    def _scene(self, word: InkWord, hand: Hand, rng: np.random.Generator) -> tuple[np.ndarray, tuple]:
        """Ink alpha canvas with the word in the middle and maybe neighbours' ink around it."""
        xh = hand.x_height
        wh, ww = word.alpha.shape
        mh, mw = int(xh * 2.5), int(xh * 2)
        canvas = np.zeros((wh + 2 * mh, ww + 2 * mw), np.float32)
        canvas[mh : mh + wh, mw : mw + ww] = word.alpha
        box = (word.box[0] + mw, word.box[1] + mh, word.box[2] + mw, word.box[3] + mh)
        base_y = mh + word.baseline
        gap = hand.line_gap * xh
        for above in (True, False):  # descenders of the line above, ascenders of the line below
            if self.recent and rng.random() < 0.35:
                other = self._neighbour(word, rng)
                y = base_y - other.baseline + gap * rng.uniform(0.6, 1.0) * (-1 if above else 1)
                _stamp(canvas, other.alpha, int(rng.uniform(-other.alpha.shape[1], canvas.shape[1])), int(y))
        if self.recent and rng.random() < 0.15:  # a word of the same line just beyond the gap
            other = self._neighbour(word, rng)
            space = int(hand.word_space * xh * rng.uniform(0.5, 1.2))
            x = box[2] + space if rng.random() < 0.5 else box[0] - space - other.box[2]
            _stamp(canvas, other.alpha, x, int(base_y - other.baseline))
        return canvas, box

    def _neighbour(self, word: InkWord, rng: np.random.Generator) -> InkWord:
        """A recent word rescaled to this word's ink height (neighbours share the hand's size)."""
        other = self.recent[int(rng.integers(len(self.recent)))]
        f = (word.box[3] - word.box[1]) / max(1, other.box[3] - other.box[1]) * rng.uniform(0.8, 1.2)
        f = float(np.clip(f, 0.3, 3.0))
        h, w = other.alpha.shape
        alpha = cv2.resize(
            other.alpha, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_LINEAR
        )
        x0, y0, x1, y1 = (int(v * f) for v in other.box)
        return InkWord(alpha, other.baseline * f, (x0, y0, x1, y1), other.text, other.kind)

    def _cut(
        self, canvas: np.ndarray, box: tuple, xh: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, tuple]:
        """Cut like a detector: loose jittered margins (rarely biting into the ink), slight rotation."""
        x0, y0, x1, y1 = box
        ml, mr = rng.uniform(-0.05, 0.5, 2) * xh
        mt, mb = rng.uniform(-0.05, 0.4, 2) * xh
        angle = rng.normal(0, 1.2)
        if abs(angle) > 0.2:
            m = cv2.getRotationMatrix2D(((x0 + x1) / 2, (y0 + y1) / 2), angle, 1.0)
            canvas = cv2.warpAffine(canvas, m, (canvas.shape[1], canvas.shape[0]), flags=cv2.INTER_LINEAR)
        X0, Y0 = int(max(0, x0 - ml)), int(max(0, y0 - mt))
        X1, Y1 = int(min(canvas.shape[1], x1 + mr)), int(min(canvas.shape[0], y1 + mb))
        X1, Y1 = max(X0 + 4, X1), max(Y0 + 4, Y1)
        inner = (max(0, x0 - X0), max(0, y0 - Y0), min(X1, x1) - X0, min(Y1, y1) - Y0)
        return canvas[Y0:Y1, X0:X1], inner

    def _finish(self, alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = alpha.shape
        paper: np.ndarray = self.papers[int(rng.integers(len(self.papers)))]
        ph, pw = paper.shape
        if h > ph or w > pw:
            paper = cv2.resize(paper, (max(pw, w), max(ph, h)))
            ph, pw = paper.shape
        oy, ox = int(rng.integers(0, ph - h + 1)), int(rng.integers(0, pw - w + 1))
        bg = paper[oy : oy + h, ox : ox + w] * rng.uniform(0.75, 1.05)
        ink = rng.uniform(10, 120) if rng.random() < 0.85 else rng.uniform(120, 170)
        img: np.ndarray = bg - alpha * (bg - ink)
        if rng.random() < 0.15:  # a ruled line passing through
            y = int(rng.uniform(h * 0.55, h))
            img[min(h - 1, y)] *= rng.uniform(0.75, 0.92)
        if rng.random() < 0.3:
            img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.0))
        img += rng.standard_normal(img.shape, dtype=np.float32) * rng.uniform(0, 6)
        out = np.clip(img, 0, 255).astype(np.uint8)
        if rng.random() < 0.2:
            out = A.jpeg(out, rng, 40, 95)
        return out


def _stamp(canvas: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
    """Max-blend alpha into canvas at (x, y), clipped at the edges."""
    H, W = canvas.shape
    h, w = alpha.shape
    X0, Y0, X1, Y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if X0 < X1 and Y0 < Y1:
        np.maximum(canvas[Y0:Y1, X0:X1], alpha[Y0 - y : Y1 - y, X0 - x : X1 - x], out=canvas[Y0:Y1, X0:X1])


# ---- files + command ---------------------------------------------------------------------------------


def _write_manifest(samples: list[Sample], path: Path) -> Path:
    """The manifest beside the rendered files (always a local folder: the images are written there)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps_manifest(samples), encoding="utf-8")
    return path


def write_pages(n: int, out_dir: str | Path, seed: int) -> Path:
    """Render n pages as JPEGs under out_dir/pages and write out_dir/manifest.jsonl (same seed, same bytes)."""
    from tqdm import tqdm

    out = Path(out_dir)
    (out / "pages").mkdir(parents=True, exist_ok=True)
    samples, t0, n_words = [], time.time(), 0
    for i in tqdm(range(n), desc="pages", unit="page"):
        img, words = render_page(np.random.default_rng([seed, i]))
        name = f"pages/page_{i:06d}.jpg"
        img.save(out / name, quality=int(np.random.default_rng([seed, i, 7]).integers(70, 96)))
        samples.append(
            Sample(name, [Annotation(w["text"], w["polygon"], w["line_idx"], w["type"]) for w in words])
        )
        n_words += len(words)
    path = _write_manifest(samples, out / "manifest.jsonl")
    print(f"synth: {n} pages, {n_words} words in {time.time() - t0:.1f}s -> {path}")
    return path


def write_crops(n: int, out_dir: str | Path, seed: int) -> Path:
    """n word crops as PNGs under out_dir/crops plus out_dir/crops.jsonl, a manifest with one
    annotation per crop (its text, and the word's ink box inside the crop)."""
    from tqdm import tqdm

    out = Path(out_dir)
    (out / "crops").mkdir(parents=True, exist_ok=True)
    sampler, t0, samples = WordCropSampler(seed), time.time(), []
    for i in tqdm(range(n), desc="crops", unit="crop"):
        img, text, (x0, y0, x1, y1) = sampler.sample_with_box()
        name = f"crops/crop_{i:07d}.png"
        cv2.imwrite(str(out / name), img)
        box = [{"x": float(x), "y": float(y)} for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
        samples.append(Sample(name, [Annotation(text, box, 0, "H")]))
    path = _write_manifest(samples, out / "crops.jsonl")
    print(f"synth: {n} word crops in {time.time() - t0:.1f}s -> {path}")
    return path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pages", type=int, default=0, help="number of pages to render")
    parser.add_argument(
        "--crops", type=int, default=0, help="number of word crops to render (recogniser data)"
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="random seed: same seed, same files")


def main(args: argparse.Namespace) -> int:
    if args.pages < 0 or args.crops < 0 or (args.pages == 0 and args.crops == 0):
        print("synth: give --pages N and/or --crops N (N > 0)")
        return EXIT_BAD_ARGS
    try:
        if args.pages:
            write_pages(args.pages, args.out, args.seed)
        if args.crops:
            write_crops(args.crops, args.out, args.seed)
    except HtrError as e:  # e.g. FontsUnavailable: the environment, not the arguments
        print(f"synth: {e.kind}: {e}")
        return EXIT_FATAL
    except OSError as e:
        print(f"synth: cannot write to {args.out}: {e}")
        return EXIT_FATAL
    return 0
