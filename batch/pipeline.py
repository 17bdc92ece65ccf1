"""The predictor (pipeline layer): pages in, pages with lines and words out.

A Pipeline is two runners over one engine, with the page-level steps around them:

  prepare_page  put each page right (transforms/page_normalise.py), resize it for the segmenter
  segmenter     models/segmenter/runner.py: pre-process -> Engine.segment -> DB post-processing
  line layout   batch/lines.py: word boxes and line-head lines -> pieces of lines in reading order
  recogniser    models/recogniser/runner.py: crops -> Engine.recognise -> CTC read-outs, lexicon
  words placed  along each line from the CTC alignment (batch/lines.py), then moved back to the
                page's source pixels

The engine (models/engine.py) is PyTorch or ONNX Runtime, picked once; the runners never ask which.
By recogniser: a line recogniser (the default) reads one rotated crop per piece of line; a word
recogniser (older models) reads one crop per word box, grouped into lines afterwards. Pages from
many documents are segmented together, and all their crops are recognised together, so batches
stay full. Stage timing goes through a clock hook (batch/core/clock.py: `Pipeline.clock`).

torch is imported only where it runs something: the torch engine, a GPU, or an ONNX export on a
cache miss. On ONNX Runtime with cached graphs (the CPU default) the models take and give numpy
arrays and decoding and lexicon are numpy: `htr run` never imports torch (~3 s of start-up, #15).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from batch.core.clock import NO_CLOCK, Clock
from batch.core.ids import doc_id_for
from batch.core.schema import DocumentRecord, Page, Point, Word, now_ms
from batch.lines import (  # noqa: F401  (line_pieces, split_segments ... importable from here too)
    group_lines,
    line_pieces,
    number_lines,
    outline,
    place_words,
    split_segments,
)
from models import checkpoints
from models.charset import Codec
from models.engine import (  # noqa: F401  (device and engine choice, importable from here as before)
    CpuDevice,
    Engine,
    cpu_bf16,
    make_engine,
    pick_backend,
    pick_device,
)
from models.recogniser.lexicon import Lexicon
from models.recogniser.runner import RecogniserRunner, WordRead, lexicons_for  # noqa: F401
from models.segmenter.postprocess import LINE_POST, PostConfig
from models.segmenter.runner import (  # noqa: F401
    PageDetections,
    SegmenterRunner,
    resize_for_segmenter,
)
from transforms import crops as crops_mod
from transforms.page_normalise import PageFix, normalise_page
from transforms.rasterise import (
    DEFAULT_IMAGE_SIDE,
    DEFAULT_LIMITS,
    Limits,
    iter_pages,
    pdf_renderer,
    sniff,
    source_scale,
)

if TYPE_CHECKING:
    import torch


def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory for reuse instead of handing it back to the kernel.

    Every page image, crop batch and activation is a fresh multi-megabyte buffer. By default glibc
    maps most of them anew and unmaps them on free, so each is page-faulted in again: on the
    development VM that made decoding a test JPEG 31-38 ms instead of 13 ms. All blocks now come from
    the heap (glibc would still map those over 32 MiB, its ceiling for the mmap threshold: the
    segmenter's full-resolution head activations, ~9000 page faults and a fifth of its time per
    page, #15), and up to 512 MiB of freed heap is kept. No-op off glibc."""
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold, m_mmap_max = -1, -3, -4
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_mmap_max, 0)
    mallopt(m_trim_threshold, 512 << 20)


@dataclass
class PipelineConfig:
    seg_batch: int = 4  # pages per segmenter forward
    rec_batch: int = 256  # word crops per recogniser forward
    long_side: int | None = None  # segmenter input size; None = the checkpoint's
    # Dictionary rescoring of out-of-vocabulary readings: "auto" (line models: per line, English or
    # French, whichever knows most of its words, none if neither does; word models: English),
    # a wordfreq language code ("en", "fr", "de", ...) or "off". True/False mean auto/off.
    lexicon: str | bool = "auto"
    backend: str = "auto"  # CPU engine: "torch" or "onnxruntime"; auto picks the faster (models.engine)
    # "fp32" | "bf16"; auto = bf16 where the CPU computes it natively, fp16/bf16 on CUDA
    precision: str = "auto"
    image_side: int = DEFAULT_IMAGE_SIDE  # large JPEGs decoded reduced, to about this long side; 0: never
    fix_pages: bool = True  # invert negatives, undo quarter turns and skew, retry upside down
    post: PostConfig = field(default_factory=PostConfig)
    line_post: PostConfig = LINE_POST  # the line head's kernels (segmenters that have one)


RETRY_CONFIDENCE = 0.4  # pages whose mean word confidence is below this are also read upside down


def _mean_confidence(page: Page) -> float:
    words = page.words
    return sum(w.confidence for w in words) / len(words) if words else 0.0


def _to_source(page: Page, fix: PageFix, scale: tuple[float, float]) -> None:
    """Move a page read on the corrected image back to source pixels, in place."""
    sx, sy = scale
    for w in page.words:
        pts = fix.to_source(np.array([[p.x, p.y] for p in w.polygon]))
        w.polygon = [Point(float(x) * sx, float(y) * sy) for x, y in pts]
    page.width, page.height = round(fix.source_size[0] * sx), round(fix.source_size[1] * sy)


@dataclass
class PreparedPage:
    """A page already put right (Pipeline.prepare_page), with what reporting in source pixels needs;
    process_pages reads it as is. htr run prepares pages on its decode threads, off the model thread."""

    image: np.ndarray
    fix: PageFix
    scale: tuple[float, float]  # source pixels per pixel of the decoded page (transforms.rasterise)
    dpi: float | None
    # the image resized for the segmenter's first pass (_resize_for_segmenter at the pipeline's
    # long side) and its scale: made where the page is prepared, off the model thread (#15)
    for_segmenter: tuple[np.ndarray, float] | None = None


class Pipeline:
    def __init__(
        self,
        segmenter: Any,
        seg_meta: dict,
        recogniser: Any,
        rec_meta: dict,
        device: torch.device | CpuDevice | str,
        config: PipelineConfig | None = None,
        *,
        clock: Clock = NO_CLOCK,
    ):
        """segmenter, recogniser: torch modules, or ONNX Runtime runners already made from a
        checkpoint (Pipeline.load). clock: times the stages (batch/core/clock.py); none by default."""
        self._config = config or PipelineConfig()
        keep_freed_memory()
        self.seg_meta, self.rec_meta = seg_meta, rec_meta
        codec = Codec(rec_meta.get("charset") or Codec().charset)
        crop_height = rec_meta["config"].get("height", crops_mod.CROP_HEIGHT)
        self.line_mode = rec_meta["config"].get("unit") == "line"  # reads whole text lines
        self.model_version = f"seg-{seg_meta['version']}+rec-{rec_meta['version']}"
        self.engine: Engine = make_engine(
            segmenter, recogniser, device, self._config.backend, self._config.precision, crop_height
        )
        self.segmenter_runner = SegmenterRunner(
            self.engine, self._config.long_side or seg_meta["config"]["input_long_side"], self._config
        )
        lexicons = lexicons_for(self._config.lexicon, self.line_mode)
        self.recogniser_runner = RecogniserRunner(
            self.engine,
            codec,
            crop_height,
            rec_meta["config"].get("max_width", 512),
            lexicons,
            self._config,
        )
        if lexicons:
            self.model_version += "+lex"
        self.clock = clock

    @classmethod
    def load(
        cls,
        models_dir: str | Path | None = None,
        device: str = "auto",
        config: PipelineConfig | None = None,
        *,
        clock: Clock = NO_CLOCK,
    ) -> Pipeline:
        pdf_renderer()  # a machine that cannot render PDFs stops here, not at every PDF
        models_dir = Path(models_dir) if models_dir else checkpoints.DEFAULT_DIR
        config, dev = config or PipelineConfig(), pick_device(device)
        bf16_cpu = dev.type == "cpu" and cpu_bf16(config.precision)
        seg: Any
        rec: Any
        if pick_backend(config.backend, dev, bf16_cpu) == "onnxruntime":
            # exported graphs are cached on disk: a hit builds no network and imports no torch
            from models.onnx_backend import default_threads, from_checkpoints

            seg_meta = checkpoints.read_meta(models_dir, "segmenter")
            rec_meta = checkpoints.read_meta(models_dir, "recogniser")
            height = rec_meta.get("config", {}).get("height", crops_mod.CROP_HEIGHT)
            seg, rec = from_checkpoints(models_dir, height, default_threads())
        else:
            seg, seg_meta = checkpoints.load(models_dir, "segmenter")
            rec, rec_meta = checkpoints.load(models_dir, "recogniser")
        return cls(seg, seg_meta, rec, rec_meta, dev, config, clock=clock)

    # ---- the parts, and what callers read of them ----------------------------------------------

    @property
    def clock(self) -> Clock:
        return self._clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        """Time the stages from now on (jobs/bench.py's instrument); NO_CLOCK stops timing."""
        self._clock = self.segmenter_runner.clock = self.recogniser_runner.clock = clock

    @property
    def config(self) -> PipelineConfig:
        return self._config

    @config.setter
    def config(self, config: PipelineConfig) -> None:
        """Batch sizes and post-processing are read at each call (bench-gpu changes them)."""
        self._config = self.segmenter_runner.settings = self.recogniser_runner.settings = config

    @property
    def device(self) -> Any:
        return self.engine.device

    @property
    def backend(self) -> str:
        return self.engine.name

    @property
    def bf16_cpu(self) -> bool:
        return self.engine.bf16_cpu

    @property
    def channels_last(self) -> bool:
        return bool(getattr(self.engine, "channels_last", False))

    @property
    def segmenter(self) -> Any:
        return getattr(self.engine, "segmenter", None)

    @property
    def recogniser(self) -> Any:
        return getattr(self.engine, "recogniser", None)

    @property
    def long_side(self) -> int:
        return self.segmenter_runner.long_side

    @property
    def codec(self) -> Codec:
        return self.recogniser_runner.codec

    @property
    def crop_height(self) -> int:
        return self.recogniser_runner.crop_height

    @property
    def max_width(self) -> int:
        return self.recogniser_runner.max_width

    @property
    def lexicons(self) -> list[Lexicon]:
        return self.recogniser_runner.lexicons

    @property
    def lexicon(self) -> Lexicon | None:
        return self.lexicons[0] if self.lexicons else None

    # ---- segmentation (models/segmenter/runner.py) ---------------------------------------------

    def segment(self, pages: list[np.ndarray]) -> list[PageDetections]:
        """Word (and line) quads in page pixels with detection scores, for each page, segmented
        again at a better scale where the text came out too small or too large."""
        return self.segmenter_runner.segment(pages)

    def _rescaled_side(self, page: np.ndarray, found: PageDetections) -> int | None:
        return self.segmenter_runner.rescaled_side(page, found)

    def _seg_batches(self, pages: list[np.ndarray]) -> list[list[np.ndarray]]:
        return self.segmenter_runner.batches(pages)

    # ---- recognition (models/recogniser/runner.py) ---------------------------------------------

    def recognise(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        """Text and confidence for each word crop (uint8 gray, fixed height)."""
        return self.recogniser_runner.recognise(crops)

    def line_crop(self, gray: np.ndarray, quad: np.ndarray) -> np.ndarray:
        """A line quad (page pixels, TL,TR,BR,BL) rectified to the recogniser's height."""
        return self.recogniser_runner.crop(gray, quad)

    def read_lines(self, crops: list[np.ndarray], pages: list[int] | None = None) -> list[list[WordRead]]:
        """Line crops (uint8 gray, recogniser height) -> per line its words as
        (text, confidence, u0, u1), u0/u1 the fractions along the crop where the word lies.

        pages: the page each crop comes from. The lexicon's language is chosen per page from all its
        lines (one badly read line is no evidence of a language); without pages, per line."""
        return self.recogniser_runner.read_lines(crops, pages)

    # ---- pages ---------------------------------------------------------------------------------

    def process_pages(self, images: list[np.ndarray]) -> list[Page]:
        """HxWx3 uint8 RGB pages (any documents) -> Pages numbered 1..n in the given order.

        Each page is first put right (transforms.page_normalise: negatives inverted, quarter turns
        and skew undone); a page that still reads badly is tried upside down. Coordinates are
        reported in each page's source pixels (the fix undone, a reduced Raster scaled back up)."""
        if not images:
            return []
        with self.clock.stage("_process_pages"):
            return self._process_pages(images)

    def _process_pages(self, images: list[np.ndarray]) -> list[Page]:
        prepared = [img if isinstance(img, PreparedPage) else self.prepare_page(img) for img in images]
        images = [p.image for p in prepared]
        fixes = [p.fix for p in prepared]
        scales, dpis = [p.scale for p in prepared], [p.dpi for p in prepared]
        presized = self.segmenter_runner.presized
        mine = {id(p.image): p.for_segmenter for p in prepared if p.for_segmenter is not None}
        presized.update(mine)  # by the id of the image object, alive until the pages are read
        try:
            pages = self._read_pages(images)
        finally:
            for key in mine:
                presized.pop(key, None)
        if self.config.fix_pages:
            self._retry_upside_down(images, pages, fixes)
        for page, fix, scale, dpi in zip(pages, fixes, scales, dpis):
            _to_source(page, fix, scale)
            page.dpi = dpi
            with self.clock.stage("lines"):
                for line in page.lines:
                    outline(line)
        return pages

    def prepare_page(self, img: np.ndarray) -> PreparedPage:
        """The page-geometry fix of process_pages (negatives inverted, quarter turns and skew undone;
        no models, safe on any thread). The dpi comes from rasterise where known."""
        scale, dpi = source_scale(img), getattr(img, "dpi", None)
        img = np.asarray(img)
        if self.config.fix_pages:
            img, fix = normalise_page(img, guess_upside_down=False)
        else:
            fix = PageFix.identity(img.shape[1], img.shape[0])
        return PreparedPage(img, fix, scale, dpi, resize_for_segmenter(img, self.long_side))

    def _retry_upside_down(self, images: list[np.ndarray], pages: list[Page], fixes: list[PageFix]) -> None:
        """Read pages whose words are mostly unsure once more turned by 180 degrees (geometry alone
        cannot tell upside down from upright) and keep whichever reading the recogniser trusts more."""
        doubtful = [k for k, p in enumerate(pages) if _mean_confidence(p) < RETRY_CONFIDENCE]
        if not doubtful:
            return
        turned = [np.ascontiguousarray(images[k][::-1, ::-1]) for k in doubtful]
        for k, img, page in zip(doubtful, turned, self._read_pages(turned)):
            if _mean_confidence(page) > _mean_confidence(pages[k]) + 0.1:
                pages[k] = page
                fixes[k] = fixes[k].half_turned(img.shape[1], img.shape[0])

    def _read_pages(self, images: list[np.ndarray]) -> list[Page]:
        """Pages in the given images' own pixels."""
        detections = self.segment(images)
        if self.line_mode:
            return self._read_by_lines(images, detections)
        return self._read_by_words(images, detections)

    def _read_by_lines(self, images: list[np.ndarray], detections: list[PageDetections]) -> list[Page]:
        """Read each page line by line (line_pieces), then place the words the recogniser read
        along each piece."""
        crops, owners = [], []  # owners: (page, line index, piece quad, its word boxes)
        for k, (img, dets) in enumerate(zip(images, detections)):
            gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
            with self.clock.stage("lines"):
                pieces = line_pieces(dets)
            for li, quad, members in pieces:
                crops.append(self.line_crop(gray, quad))
                owners.append((k, li, quad, members))
        readings = self.read_lines(crops, [o[0] for o in owners]) if crops else []
        with self.clock.stage("lines"):
            by_page: list[dict[int, list[Word]]] = [{} for _ in images]
            for (k, li, quad, members), words in zip(owners, readings):
                for text, conf, poly, det in place_words(words, quad, members):
                    by_page[k].setdefault(li, []).append(
                        Word(
                            text=text,
                            confidence=conf,
                            det_score=det,
                            polygon=[Point(float(x), float(y)) for x, y in poly],
                        )
                    )
            return [
                Page(page=k + 1, width=img.shape[1], height=img.shape[0], lines=number_lines(by_page[k]))
                for k, img in enumerate(images)
            ]

    def _read_by_words(self, images: list[np.ndarray], detections: list[PageDetections]) -> list[Page]:
        """Read each word box on its own, then group the words read into lines."""
        crops = []
        for img, dets in zip(images, detections):
            gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
            crops += [self.recogniser_runner.crop(gray, quad) for quad, _ in dets.words]
        readings = iter(self.recognise(crops) if crops else [])
        pages = []
        for k, (img, dets) in enumerate(zip(images, detections)):
            words = []
            for (quad, score), (text, conf) in zip(dets.words, readings):
                if text:  # a detection the recogniser reads as nothing is noise
                    words.append(
                        Word(
                            text=text,
                            confidence=conf,
                            det_score=score,
                            polygon=[Point(float(x), float(y)) for x, y in quad],
                        )
                    )
            with self.clock.stage("lines"):
                lines = group_lines(words)
            pages.append(Page(page=k + 1, width=img.shape[1], height=img.shape[0], lines=lines))
        return pages

    def make_record(
        self,
        pages: list[Page],
        doc_id: str,
        source_uri: str,
        run_id: str,
        content_type: str = "",
        source_etag: str = "",
    ) -> DocumentRecord:
        """A document record; doc_id is batch.schema.doc_id_for(the source bytes)."""
        for i, p in enumerate(pages, 1):
            p.page = i
        return DocumentRecord(
            doc_id=doc_id,
            source_uri=source_uri,
            pages=pages,
            model_version=self.model_version,
            run_id=run_id,
            processed_at=now_ms(),
            content_type=content_type,
            source_etag=source_etag,
        )

    def process_document(
        self, data: bytes, source_uri: str, run_id: str, dpi: int = 200, limits: Limits = DEFAULT_LIMITS
    ) -> DocumentRecord:
        """One whole document, pages processed a batch at a time. Raises InputError subclasses."""
        content_type = sniff(data)
        pages: list[Page] = []
        chunk: list[np.ndarray] = []
        for img in iter_pages(data, dpi, limits, content_type, self.config.image_side):
            chunk.append(img)
            if len(chunk) >= self.config.seg_batch:
                pages.extend(self.process_pages(chunk))
                chunk = []
        pages.extend(self.process_pages(chunk))
        return self.make_record(pages, doc_id_for(data), source_uri, run_id, content_type)
