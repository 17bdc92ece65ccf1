"""The segmenter runner (models layer): pages in, word (and line) quads with scores out.

pre-process (resize each page for the segmenter, batch pages of one input shape, pad with white
paper) -> Engine.segment (models/engine.py: PyTorch or ONNX Runtime) -> post-process (DB boxes
from the probability maps, models/segmenter/postprocess.py, scaled back to page pixels). A page
whose text came out far smaller or larger than the sizes the segmenter learned is segmented once
more at the scale that brings it there.

numpy and OpenCV only; each stage is timed through the clock hook (batch/core/clock.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from batch.core.clock import NO_CLOCK, Clock
from models.engine import Engine
from models.segmenter.postprocess import PostConfig, boxes_from_prob
from transforms.crops import quad_size

# Heights of the segmenter's word boxes (its input pixels) on pages like those it learned from:
# 15-56 px on 24 synthetic test pages at its 1024 px input (median 23). Outside TEXT_RANGE a page
# is segmented again at the scale that brings the median to TEXT_HEIGHT.
TEXT_HEIGHT = 24.0
TEXT_RANGE = (9.0, 64.0)
# Line heights (rotated-rectangle height) of the real training pages at 1024 px: page medians 24-53 px
# (5th-95th percentile), median 36; the line head learned them x0.6-1.5.
LINE_HEIGHT = 36.0
LINE_RANGE = (20.0, 60.0)
SEG_RESCALE = (0.5, 2.5)  # a second pass changes the segmenter's input size by at most these factors

Detection = tuple[np.ndarray, float]  # a 4x2 quad in page pixels and its score


@dataclass
class PageDetections:
    """What the segmenter found on one page: word boxes, and text lines where it has a line head."""

    words: list[Detection]
    lines: list[Detection] | None = None


class SegmenterSettings(Protocol):
    """What the runner reads of the pipeline's settings, at each call (batch.pipeline.PipelineConfig)."""

    seg_batch: int  # pages per forward
    post: PostConfig  # word boxes from channel 0
    line_post: PostConfig  # lines from channel 1 (a line head)


def resize_for_segmenter(page: np.ndarray, long_side: int) -> tuple[np.ndarray, float]:
    h, w = page.shape[:2]
    scale = long_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # Area averaging only where bilinear would alias (below half size): OpenCV's INTER_AREA at a
    # fractional factor such as 0.75 costs 9 ms per page here, bilinear 1.3 ms.
    interp = cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR
    return cv2.resize(page, size, interpolation=interp), scale


def pad_pages(resized: list[np.ndarray]) -> np.ndarray:
    """Pages (H x W x 3 uint8) in one N x H x W x 3 batch, each padded with white paper to the
    largest height and width, rounded up to multiples of 32 (the segmenter's stride)."""
    hmax = max(r.shape[0] for r in resized)
    wmax = max(r.shape[1] for r in resized)
    hpad, wpad = -(-hmax // 32) * 32, -(-wmax // 32) * 32
    batch = np.full((len(resized), hpad, wpad, 3), 255, np.uint8)
    for k, r in enumerate(resized):
        batch[k, : r.shape[0], : r.shape[1]] = r
    return batch


class SegmenterRunner:
    def __init__(self, engine: Engine, long_side: int, settings: SegmenterSettings, clock: Clock = NO_CLOCK):
        """long_side: the segmenter's input size (its checkpoint's, or the pipeline's choice)."""
        self.engine, self.long_side, self.settings, self.clock = engine, long_side, settings, clock
        # pages already resized at long_side (PreparedPage.for_segmenter), by id() of the page
        # array: filled and emptied by the pipeline around a call
        self.presized: dict[int, tuple[np.ndarray, float]] = {}

    def segment(self, pages: list[np.ndarray]) -> list[PageDetections]:
        """Word (and line) quads in page pixels with detection scores, for each page. A page whose
        text came out far smaller or larger than the sizes the segmenter learned is segmented once
        more at the scale that brings it there (a 100-dpi form, a 450-px paragraph, a close-up photo)."""
        out = []
        for batch in self.batches(pages):
            out.extend(self.segment_batch(batch))
        for k, page in enumerate(pages):
            side = self.rescaled_side(page, out[k])
            if side:
                out[k] = self.segment_batch([page], side)[0]
        return out

    def rescaled_side(self, page: np.ndarray, found: PageDetections) -> int | None:
        """The segmenter input size that puts the page's median text height where the segmenter
        learned it (word boxes: TEXT_HEIGHT; a line head's lines: LINE_HEIGHT, which it measures
        better on real handwriting), or None when it is already in range (or too little text)."""
        long_side = max(page.shape[:2])
        scale = self.long_side / long_side
        by_lines = found.lines is not None and len(found.lines) >= 3
        dets = found.lines if found.lines is not None and by_lines else found.words
        target, (low, high) = (LINE_HEIGHT, LINE_RANGE) if by_lines else (TEXT_HEIGHT, TEXT_RANGE)
        if len(dets) < 3:
            # nothing found: text may be too small to see at this scale; look again at twice the
            # size where the page has the pixels for it
            return 2 * self.long_side if not dets and long_side > 1.5 * self.long_side else None
        heights = [quad_size(q)[1] * scale for q, _ in dets]
        median = float(np.median(heights))
        if low <= median <= high:
            return None
        factor = float(np.clip(target / median, *SEG_RESCALE))
        side = int(self.long_side * factor)
        return side if abs(side - self.long_side) > 0.2 * self.long_side else None

    def batches(self, pages: list[np.ndarray]) -> list[list[np.ndarray]]:
        """Up to seg_batch pages per forward. On the CPU only pages whose padded input has the same
        shape share one: padding a page to its neighbour's size costs more there than batching
        saves (measured 0.15 s/page unbatched vs 0.19 batched by 4 on the real letters)."""

        def padded(p: np.ndarray) -> tuple[int, ...]:
            if self.engine.device.type != "cpu":
                return ()  # GPUs: any pages batch together
            scale = self.long_side / max(p.shape[:2])
            return tuple(-(-max(1, round(d * scale)) // 32) for d in p.shape[:2])

        batches: list[list[np.ndarray]] = []
        last_shape: tuple[int, ...] | None = None
        for p in pages:
            shape = padded(p)
            if batches and shape == last_shape and len(batches[-1]) < self.settings.seg_batch:
                batches[-1].append(p)
            else:
                batches.append([p])
            last_shape = shape
        return batches

    def segment_batch(self, pages: list[np.ndarray], long_side: int | None = None) -> list[PageDetections]:
        """One forward over pages at one input size (default: long_side)."""
        side = long_side or self.long_side
        with self.clock.stage("seg_resize"):
            resized = self.preprocess(pages, side)
            batch = pad_pages([r for r, _ in resized])
        with self.clock.stage("seg_model", sync=True):
            prob = self.engine.segment(batch)
        with self.clock.stage("postprocess"):
            return self.postprocess(prob, resized)

    def preprocess(self, pages: list[np.ndarray], side: int) -> list[tuple[np.ndarray, float]]:
        """Each page resized to `side` (already done where the pipeline prepared it), and its scale."""
        ready = [self.presized.get(id(p)) for p in pages]
        return [
            r if r is not None and max(r[0].shape[:2]) == side else resize_for_segmenter(p, side)
            for r, p in zip(ready, pages)
        ]

    def postprocess(self, prob: np.ndarray, resized: list[tuple[np.ndarray, float]]) -> list[PageDetections]:
        """The batch's probability maps -> each page's quads in its own pixels (padding cut off)."""
        results = []
        for k, (r, scale) in enumerate(resized):
            maps = prob[k, :, : r.shape[0], : r.shape[1]]
            words = [(quad / scale, score) for quad, score in boxes_from_prob(maps[0], self.settings.post)]
            lines = None
            if len(maps) > 1:  # a line head: channel 1
                lines = [
                    (quad / scale, score) for quad, score in boxes_from_prob(maps[1], self.settings.line_post)
                ]
            results.append(PageDetections(words, lines))
        return results
