"""Synthetic text-line crops for the line recogniser: English (and some French-accented) prose,
numbers, dates and print, in the synthetic engine's hands, on its papers.

Real line data (jobs/line_data.py) brings real strokes; these bring English words, print and
typewriting, and characters the real sets rarely show. A line is the words of one hand rendered
one by one, set on a common baseline with the hand's word spacing, slightly rotated, cut with
jittered margins like the pipeline's line quads, then given paper and noise.
"""

from __future__ import annotations

import numpy as np

from transforms import text_source as T
from transforms.synth import WordCropSampler, _stamp, make_hand, render_word

# Accented words so the accented classes see synthetic ink too (the real sets carry most of them).
_ACCENTED = (
    "été",
    "café",
    "élève",
    "à",
    "déjà",
    "où",
    "père",
    "mère",
    "Noël",
    "naïve",
    "façade",
    "garçon",
    "fête",
    "hôtel",
    "sûr",
    "cœur",
    "œuvre",
    "Zoë",
    "über",
    "Müller",
    "straße",
    "señor",
    "año",
    "«",
    "»",
    "—",
    "–",
    "’",
    "½",
    "¼",
    "¾",
    "N°",
    "£5",
    "€20",
)


def line_tokens(rng: np.random.Generator) -> list[str]:
    """3-10 tokens: prose mostly, sometimes a date, an address part, numbers or accented words."""
    n = int(rng.integers(3, 11))
    r = rng.random()
    if r < 0.6:
        words = T.prose(rng, n, sentence_start=rng.random() < 0.5)
    else:
        words = [T.token(rng) for _ in range(n)]
    if rng.random() < 0.15:
        words[int(rng.integers(len(words)))] = str(_ACCENTED[int(rng.integers(len(_ACCENTED)))])
    if rng.random() < 0.1:
        words = T.date(rng) + words[: max(1, n - 3)]
    return [w for w in words if w.strip()]


def heading_tokens(rng: np.random.Generator, printed: bool) -> list[str]:
    """A letterhead, form or address line: a name, an address part or a short title. Printed
    ones are often in capitals (letterheads, form labels), which running prose almost never is."""
    r = rng.random()
    if r < 0.4:
        words = T.person(rng)
    elif r < 0.75:
        lines = T.address(rng)
        words = lines[int(rng.integers(len(lines)))]
    else:
        words = T.prose(rng, int(rng.integers(2, 5)), sentence_start=True)
        words[-1] = words[-1].rstrip(",.;:!?") + _pick_char(rng, ":,.")
    if printed and rng.random() < 0.6:
        words = [w.upper() for w in words]
    return [w for w in words if w.strip()]


def _pick_char(rng: np.random.Generator, chars: str) -> str:
    return chars[int(rng.integers(len(chars)))]


class LineCropSampler(WordCropSampler):
    """`sample()` -> (uint8 gray line crop, text). Reuses the word sampler's paper bank and finish."""

    print_share = 0.2  # lines in a printed or typewritten hand (a third of those typewritten)

    def sample(self) -> tuple[np.ndarray, str]:
        rng = self.rng
        xh = float(rng.uniform(8, 22))
        printed = rng.random() < self.print_share
        hand = make_hand(
            rng, self.lib, xh, "P" if printed else "H", typewriter=printed and rng.random() < 0.3
        )
        heading = rng.random() < (0.35 if printed else 0.1)
        tokens = heading_tokens(rng, printed) if heading else line_tokens(rng)
        if hand.font.caps_only:
            tokens = [t.upper() for t in tokens]
        words = [render_word(t, hand, rng, self.lib) for t in tokens]
        canvas, box = self._line(words, hand, rng)
        crop, _ = self._cut(canvas, box, xh, rng)
        return self._finish(crop, rng), " ".join(w.text for w in words)

    def _line(self, words, hand, rng) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        xh = hand.x_height
        space = [hand.word_space * xh * rng.uniform(0.7, 1.3) for _ in words]
        asc = max(w.baseline for w in words)
        desc = max(w.alpha.shape[0] - w.baseline for w in words)
        width = int(sum(w.box[2] - w.box[0] for w in words) + sum(space) + 4 * xh)
        mh = int(xh * 2)
        canvas = np.zeros((int(asc + desc) + 2 * mh, width), np.float32)
        base = mh + asc
        x = 2 * xh
        x0 = y0 = 10**9
        x1 = y1 = 0
        drift = hand.drift * xh
        for w, gap in zip(words, space):
            dy = rng.normal(0, drift) if drift else 0.0
            left, top = int(x - w.box[0]), int(base - w.baseline + dy)
            _stamp(canvas, w.alpha, left, top)
            x0, y0 = min(x0, left + w.box[0]), min(y0, top + w.box[1])
            x1, y1 = max(x1, left + w.box[2]), max(y1, top + w.box[3])
            x += (w.box[2] - w.box[0]) + gap
        return canvas, (int(x0), int(max(0, y0)), int(x1), int(min(canvas.shape[0], y1)))
