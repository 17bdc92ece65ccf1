"""The recogniser runner (models layer): crops in, text out.

pre-process (crops planned into width-bucketed batches and packed as ink maps,
transforms/crops.py) -> Engine.recognise (models/engine.py: PyTorch or ONNX Runtime) ->
post-process (greedy CTC read-outs, models/recogniser/ctc.py, then lexicon rescoring,
models/recogniser/lexicon.py). Two readers: `recognise` for word crops (older word models) and
`read_lines` for line crops (the default), which also gives where along the crop each word lies.

numpy only; each stage is timed through the clock hook (batch/core/clock.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np

from batch.core.clock import NO_CLOCK, Clock
from models.charset import Codec
from models.engine import Engine
from models.recogniser.ctc import greedy_decode, word_spans
from models.recogniser.lexicon import Lexicon, pick_lexicon
from transforms import crops as crops_mod

LINE_BUCKETS = (64, 128, 256, 384, 512, 768, 1024, 1536, 2048)

WordRead = tuple[str, float, float, float]  # text, confidence, and where it lies along the crop (u0, u1)
# a line's words as CTC read them, (text, confidence, first frame, end frame), and its log-probabilities
FrameWords = tuple[list[tuple[str, float, int, int]], np.ndarray]


class RecogniserSettings(Protocol):
    """What the runner reads of the pipeline's settings, at each call (batch.pipeline.PipelineConfig)."""

    rec_batch: int  # crops per forward (line crops: about rec_batch x 128 columns)


def lexicons_for(choice: str | bool, line_mode: bool) -> list[Lexicon]:
    """The lexicons to rescore with: "auto" (line models: English and French, the one that knows
    most of a page's words is used; word models: English), a wordfreq language code, or "off"."""
    choice = {True: "auto", False: "off"}.get(choice, choice)  # type: ignore[arg-type]
    if choice == "off":
        return []
    if choice == "auto":
        return [Lexicon.english(), Lexicon.for_language("fr")] if line_mode else [Lexicon.english()]
    return [Lexicon.for_language(str(choice))]


def frame_counts(widths: np.ndarray, frames: int) -> np.ndarray:
    """The CTC frames that cover each crop's own width (a frame is 4 columns), padding cut off."""
    return np.minimum(-(-np.asarray(widths) // 4), frames)


class RecogniserRunner:
    def __init__(
        self,
        engine: Engine,
        codec: Codec,
        crop_height: int,
        max_width: int,
        lexicons: list[Lexicon],
        settings: RecogniserSettings,
        clock: Clock = NO_CLOCK,
    ):
        self.engine, self.codec, self.settings, self.clock = engine, codec, settings, clock
        self.crop_height, self.max_width = crop_height, max_width
        self.lexicons = lexicons

    def crop(self, gray: np.ndarray, quad: np.ndarray) -> np.ndarray:
        """A quad (page pixels, TL,TR,BR,BL) rectified to the recogniser's height."""
        with self.clock.stage("crop"):
            return crops_mod.rectify(gray, quad, self.crop_height, self.max_width)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        with self.clock.stage("rec_model", sync=True):
            return self.engine.recognise(batch)

    # ---- word crops ----------------------------------------------------------------------------

    def recognise(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        """Text and confidence for each word crop (uint8 gray, fixed height)."""
        results: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        with self.clock.stage("rec_pack"):
            plan = crops_mod.plan_batches([c.shape[1] for c in crops], self.settings.rec_batch)
        for idx in plan:
            with self.clock.stage("rec_pack"):
                batch, widths = crops_mod.pack([crops[i] for i in idx])
            log_probs = self._forward(batch)
            frames = frame_counts(widths, log_probs.shape[1])
            with self.clock.stage("ctc_decode"):
                seqs, confs = greedy_decode(log_probs, frames)
                texts = [self.codec.decode_greedy(seq) for seq in seqs]
            if self.lexicons:
                with self.clock.stage("lexicon"):
                    texts = self.lexicons[0].rescore(texts, log_probs, frames, self.codec)
            for i, text, conf in zip(idx, texts, confs):
                results[i] = (text, conf)
        return results

    # ---- line crops ----------------------------------------------------------------------------

    def read_lines(self, crops: list[np.ndarray], pages: list[int] | None = None) -> list[list[WordRead]]:
        """Line crops (uint8 gray, recogniser height) -> per line its words as
        (text, confidence, u0, u1), u0/u1 the fractions along the crop where the word lies.

        pages: the page each crop comes from. The lexicon's language is chosen per page from all its
        lines (one badly read line is no evidence of a language); without pages, per line."""
        space = self.codec.index.get(" ", -1)
        empty: FrameWords = ([], np.zeros((0, 0), np.float32))
        read: list[FrameWords] = [empty] * len(crops)
        for idx, batch, widths in self._line_batches(crops):
            log_probs = self._forward(batch)
            frames = frame_counts(widths, log_probs.shape[1])
            with self.clock.stage("ctc_decode"):
                for row, i in enumerate(idx):
                    lp = log_probs[row, : int(frames[row])]
                    read[i] = (
                        [
                            (self.codec.decode_greedy(cls), conf, f0, f1)
                            for cls, f0, f1, conf in word_spans(lp, lp.shape[0], space)
                        ],
                        lp,
                    )
        if self.lexicons:
            with self.clock.stage("lexicon"):
                read = self._rescore(read, pages if pages is not None else list(range(len(crops))))
        # a frame covers 4 crop columns; a word reaches half a frame beyond its last peak
        return [
            [
                (t, c, max(0.0, (f0 - 0.5) / len(lp)), min(1.0, (f1 + 0.5) / len(lp)))
                for t, c, f0, f1 in words
                if t
            ]
            for words, lp in read
        ]

    def _rescore(self, read: list[FrameWords], groups: list[int]) -> list[FrameWords]:
        """Lexicon rescoring with one language per group of lines (see read_lines)."""
        texts: dict[int, list[str]] = {}
        for (words, _), g in zip(read, groups):
            texts.setdefault(g, []).extend(w[0] for w in words)
        chosen = {g: pick_lexicon(self.lexicons, t) for g, t in texts.items()}
        out = [words for words, _ in read]
        by_lexicon: dict[int, tuple[Lexicon, list[int]]] = {}
        for i, g in enumerate(groups):
            lexicon = chosen[g]
            if lexicon is not None:
                by_lexicon.setdefault(id(lexicon), (lexicon, []))[1].append(i)
        for lexicon, idx in by_lexicon.values():  # all lines of one language in one CTC pass
            for i, words in zip(idx, lexicon.rescore_lines([read[i] for i in idx], self.codec)):
                out[i] = words
        return [(words, lp) for words, (_, lp) in zip(out, read)]

    def _line_batches(self, crops: list[np.ndarray]) -> Iterator[tuple[list[int], np.ndarray, np.ndarray]]:
        """(indices, B x 1 x H x W ink maps, widths), about rec_batch x 128 columns per batch."""
        with self.clock.stage("rec_pack"):
            plan = crops_mod.plan_batches(
                [c.shape[1] for c in crops],
                self.settings.rec_batch,
                LINE_BUCKETS,
                columns=self.settings.rec_batch * 128,
            )
        for part in plan:
            with self.clock.stage("rec_pack"):
                batch, widths = crops_mod.pack([crops[i] for i in part], LINE_BUCKETS)
            yield part, batch, widths
