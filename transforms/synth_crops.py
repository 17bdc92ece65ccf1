"""The synthetic-data engine's word crops (transforms layer; transforms/synth.py is the map).

WordCropSampler: word crops for the recogniser straight from a hand, without laying out a page
(fast): a rendered word on a paper-like background, at the recogniser's crop height."""

from __future__ import annotations

import cv2
import numpy as np

from transforms import augment as A
from transforms import text_source as T
from transforms.fonts import library
from transforms.synth_hands import Hand, InkWord, make_hand, render_word


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
