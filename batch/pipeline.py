"""The predictor: pages in, pages with lines and words out.

pre-processing (resize/pad pages) -> segmenter -> DB post-processing -> then, by recogniser:
  line recogniser (the default): words grouped into lines -> one rotated crop per line (segment) ->
      CTC over the whole line -> words and their polygons from the CTC alignment;
  word recogniser (older models): one crop per word -> CTC -> line grouping.
Pages from many documents are segmented together, and all their crops are recognised together,
so batches stay full.

torch is imported only where it runs something: the torch backend, a GPU, or an ONNX export on a
cache miss. On ONNX Runtime with cached graphs (the CPU default) the models take and give numpy
arrays and decoding and lexicon are numpy: `htr run` never imports torch (~3 s of start-up, #15).
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from batch.core.ids import doc_id_for
from batch.core.schema import DocumentRecord, Line, Page, Point, Word, now_ms
from batch.lines import group_lines, outline
from models import checkpoints
from models.charset import Codec
from models.recogniser.ctc import as_numpy, greedy_decode, word_spans
from models.recogniser.lexicon import Lexicon, pick_lexicon
from models.segmenter.postprocess import LINE_POST, PostConfig, boxes_from_prob, order_quad
from transforms import crops as crops_mod
from transforms.line_geometry import expand_quad, line_quad, span_polygon
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


@dataclass(frozen=True)
class CpuDevice:
    """The CPU, as far as the pipeline asks (`.type`), without importing torch for a torch.device."""

    type: str = "cpu"
    index: None = None

    def __str__(self) -> str:
        return "cpu"


def _cuda_possible() -> bool:
    """False where torch cannot see a GPU: no NVIDIA driver library to load, no AMD GPU driver.
    Spares a CPU machine importing torch only to hear torch.cuda.is_available() say no."""
    import ctypes

    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            pass
    return os.path.exists("/dev/kfd")  # ROCm builds of torch answer torch.cuda too


def pick_device(device: str = "auto") -> torch.device | CpuDevice:
    if device == "cpu" or (device == "auto" and not _cuda_possible()):
        return CpuDevice()
    import torch

    if device == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else CpuDevice()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but no CUDA device is available")
    return torch.device(device)


def _is_torch_module(obj: Any) -> bool:
    return "torch" in sys.modules and isinstance(obj, sys.modules["torch"].nn.Module)


def _cpu_flags() -> set[str] | None:
    """The x86 CPU's feature flags (Linux), None where they cannot be read."""
    import platform

    if sys.platform != "linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def native_cpu_bf16() -> bool:
    """Whether oneDNN runs bf16 natively here (AVX512-BF16 / AMX, AVX-NE-CONVERT): torch's answer,
    asked only where the CPU's flags leave it possible (torch costs ~3 s to import)."""
    flags = _cpu_flags()
    if flags is not None and not any(f.startswith(("avx512", "amx", "avx_ne_convert")) for f in flags):
        return False
    import torch

    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


@dataclass
class PipelineConfig:
    seg_batch: int = 4  # pages per segmenter forward
    rec_batch: int = 256  # word crops per recogniser forward
    long_side: int | None = None  # segmenter input size; None = the checkpoint's
    # Dictionary rescoring of out-of-vocabulary readings: "auto" (line models: per line, English or
    # French, whichever knows most of its words, none if neither does; word models: English),
    # a wordfreq language code ("en", "fr", "de", ...) or "off". True/False mean auto/off.
    lexicon: str | bool = "auto"
    backend: str = "auto"  # CPU engine: "torch" or "onnxruntime"; auto picks the faster here (below)
    # "fp32" | "bf16"; auto = bf16 where the CPU computes it natively, fp16/bf16 on CUDA
    precision: str = "auto"
    image_side: int = DEFAULT_IMAGE_SIDE  # large JPEGs decoded reduced, to about this long side; 0: never
    fix_pages: bool = True  # invert negatives, undo quarter turns and skew, retry upside down
    post: PostConfig = field(default_factory=PostConfig)
    line_post: PostConfig = LINE_POST  # the line head's kernels (segmenters that have one)


def _resize_for_segmenter(page: np.ndarray, long_side: int) -> tuple[np.ndarray, float]:
    h, w = page.shape[:2]
    scale = long_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # Area averaging only where bilinear would alias (below half size): OpenCV's INTER_AREA at a
    # fractional factor such as 0.75 costs 9 ms per page here, bilinear 1.3 ms.
    interp = cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR
    return cv2.resize(page, size, interpolation=interp), scale


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
LINE_BUCKETS = (64, 128, 256, 384, 512, 768, 1024, 1536, 2048)
LINE_MARGIN = 0.08  # line quads from word boxes grown by this share of their height on each side
SEGMENT_GAP = 2.5  # a gap wider than this many line heights splits a line into two crops

Detection = tuple[np.ndarray, float]  # a 4x2 quad in page pixels and its score


@dataclass
class PageDetections:
    """What the segmenter found on one page: word boxes, and text lines where it has a line head."""

    words: list[Detection]
    lines: list[Detection] | None = None


def split_segments(words: list[Word]) -> list[list[Word]]:
    """A line's words (left to right) cut at wide gaps: two columns or a date far right on the same
    baseline are read as separate crops, not as one crop full of empty paper."""
    if not words:
        return []
    heights = [w.bbox[3] - w.bbox[1] for w in words]
    gap_limit = SEGMENT_GAP * float(np.median(heights))
    segments = [[words[0]]]
    for prev, w in zip(words, words[1:]):
        if w.bbox[0] - prev.bbox[2] > gap_limit:
            segments.append([])
        segments[-1].append(w)
    return segments


def _along(quad: np.ndarray, points: np.ndarray) -> tuple[float, float]:
    """The stretch (u0, u1) of a line quad's length that points cover, as fractions."""
    axis = quad[1] - quad[0]
    u = (points - quad[0]) @ axis / max(float(axis @ axis), 1e-6)
    return float(u.min()), float(u.max())


def place_words(
    words: list[tuple[str, float, float, float]], quad: np.ndarray, boxes: list[Word]
) -> list[tuple[str, float, np.ndarray, float]]:
    """(text, confidence, polygon, detection score) for the words read along a line segment.

    A word takes the polygon of the segmenter's word box(es) lying mostly (>= half their length)
    within its CTC stretch: those boxes are tight around the ink. Where none does (the segmenter
    merged or split words differently), the word gets its stretch of the line quad."""
    spans = [(_along(quad, np.array([[p.x, p.y] for p in b.polygon])), b) for b in boxes]
    mean_det = float(np.mean([b.det_score for b in boxes])) if boxes else 0.0
    out = []
    for text, conf, u0, u1 in words:
        mine = [b for (a0, a1), b in spans if min(a1, u1) - max(a0, u0) >= 0.5 * max(a1 - a0, 1e-6)]
        if mine:
            pts = np.array([[p.x, p.y] for b in mine for p in b.polygon], np.float32)
            poly = pts.reshape(4, 2) if len(mine) == 1 else line_quad(pts)
            out.append((text, conf, poly, float(np.mean([b.det_score for b in mine]))))
        else:
            out.append((text, conf, span_polygon(quad, u0, u1), mean_det))
    return out


def _box_word(quad: np.ndarray, score: float) -> Word:
    return Word("", 0.0, score, [Point(float(x), float(y)) for x, y in quad])


def _inside(quad: np.ndarray, word: Word) -> bool:
    cx = sum(p.x for p in word.polygon) / len(word.polygon)
    cy = sum(p.y for p in word.polygon) / len(word.polygon)
    return cv2.pointPolygonTest(quad.astype(np.float32).reshape(-1, 1, 2), (cx, cy), False) >= 0


def line_pieces(dets: PageDetections) -> list[tuple[int, np.ndarray, list[Word]]]:
    """A page's text as pieces of lines to read, each (row in reading order, quad, word boxes in it).

    Without a line head: the word boxes grouped into lines, each cut at wide gaps (split_segments),
    one row per line. With one: its lines, plus lines grouped from the word boxes no line covers (a
    line it missed), all ordered into rows together (pieces side by side on one row: two columns, a
    date), with the pieces of one line broken apart joined again."""
    words = [_box_word(q, s) for q, s in dets.words]
    heads: list[tuple[np.ndarray, list[Word]]] = []
    for quad, _ in dets.lines or []:
        quad = order_quad(quad)
        width, height = crops_mod.quad_size(quad)
        if width < UPRIGHT * height:  # the page is deskewed: a tall kernel is a rule or a stroke
            continue
        heads.append((quad, [w for w in words if _inside(quad, w)]))
    taken = {id(w) for _, members in heads for w in members}
    grouped = [
        [
            (expand_quad(line_quad(_points(segment)), LINE_MARGIN, LINE_MARGIN, LINE_MARGIN), segment)
            for segment in split_segments(line.words)
        ]
        for line in group_lines([w for w in words if id(w) not in taken])
    ]
    if dets.lines is None:
        rows = grouped
    else:  # measured: one row grouping over both kinds reads real pages better than two
        rows = _rows(heads + [piece for row in grouped for piece in row])
    return [(k, quad, members) for k, row in enumerate(rows) for quad, members in row]


def _points(words: list[Word]) -> np.ndarray:
    return np.array([[p.x, p.y] for w in words for p in w.polygon], np.float32)


def _rows(pieces: list[tuple[np.ndarray, list[Word]]]) -> list[list[tuple[np.ndarray, list[Word]]]]:
    """Pieces grouped into rows top to bottom, left to right in a row, close pieces joined."""
    stand_ins = [_box_word(q, 1.0) for q, _ in pieces]
    piece_of = {id(w): p for w, p in zip(stand_ins, pieces)}
    return [_join_close([piece_of[id(w)] for w in row.words]) for row in group_lines(stand_ins)]


UPRIGHT = 0.5  # a line-head kernel narrower than this share of its height is not a line of text
JOIN_GAP = 0.8  # pieces of one row closer than this many line heights are one line broken in two


def _join_close(row: list[tuple[np.ndarray, list[Word]]]) -> list[tuple[np.ndarray, list[Word]]]:
    """One row's pieces (left to right) with the pieces of a line the segmenter broke apart joined
    again: read as one crop, the recogniser keeps the context across the break."""
    out = [row[0]] if row else []
    for quad, members in row[1:]:
        last, last_members = out[-1]
        height = min(crops_mod.quad_size(last)[1], crops_mod.quad_size(quad)[1])
        gap = float(quad[:, 0].min() - last[:, 0].max())
        if gap < JOIN_GAP * height:
            out[-1] = (line_quad(np.concatenate([last, quad]).astype(np.float32)), last_members + members)
        else:
            out.append((quad, members))
    return out


def number_lines(lines: dict[int, list[Word]]) -> list[Line]:
    """Lines in reading order, renumbered without the empty ones; words numbered across the page."""
    out, k = [], 0
    for li in sorted(lines):
        for w in lines[li]:
            w.line_idx, w.word_idx = len(out), k
            k += 1
        out.append(Line(len(out), lines[li]))
    return out


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
    ):
        """segmenter, recogniser: torch modules, or ONNX Runtime runners already made from a
        checkpoint (Pipeline.load)."""
        if isinstance(device, str):
            device = CpuDevice() if device == "cpu" else pick_device(device)
        self.device = device
        self.config = config or PipelineConfig()
        keep_freed_memory()
        if _is_torch_module(segmenter) or _is_torch_module(recogniser):
            import torch

            device = self.device = torch.device(str(device))
            segmenter = segmenter.to(device).eval() if _is_torch_module(segmenter) else segmenter
            recogniser = recogniser.to(device).eval() if _is_torch_module(recogniser) else recogniser
        self.segmenter, self.recogniser = segmenter, recogniser
        self.seg_meta, self.rec_meta = seg_meta, rec_meta
        self.codec = Codec(rec_meta.get("charset") or Codec().charset)
        self.long_side = self.config.long_side or seg_meta["config"]["input_long_side"]
        self.crop_height = rec_meta["config"].get("height", crops_mod.CROP_HEIGHT)
        self.max_width = rec_meta["config"].get("max_width", 512)
        self.line_mode = rec_meta["config"].get("unit") == "line"  # reads whole text lines
        self.model_version = f"seg-{seg_meta['version']}+rec-{rec_meta['version']}"
        self.bf16_cpu = device.type == "cpu" and self._cpu_bf16(self.config.precision)
        self.backend = self._pick_backend(self.config.backend, device, self.bf16_cpu)
        self.bf16_cpu = self.bf16_cpu and self.backend == "torch"
        if self.backend == "onnxruntime":
            if _is_torch_module(self.segmenter):
                from models.onnx_backend import default_threads, to_onnxruntime

                self.segmenter, self.recogniser = to_onnxruntime(
                    self.segmenter, self.recogniser, self.crop_height, default_threads()
                )
        else:
            import torch

            from models.fuse import fuse_batchnorm

            self.device = torch.device(str(self.device))
            fuse_batchnorm(self.segmenter)
            fuse_batchnorm(self.recogniser)
        # oneDNN's convolutions and pooling are fastest on NHWC (2x for the recogniser in bf16)
        self.channels_last = device.type == "cpu" and self.backend == "torch"
        if self.channels_last:
            self.segmenter = self.segmenter.to(memory_format=torch.channels_last)
            self.recogniser = self.recogniser.to(memory_format=torch.channels_last)
        self._presized: dict[int, tuple[np.ndarray, float]] = {}  # see process_pages
        self.lexicons = self._lexicons(self.config.lexicon, self.line_mode)
        self.lexicon = self.lexicons[0] if self.lexicons else None
        if self.lexicon:
            self.model_version += "+lex"

    @staticmethod
    def _lexicons(choice: str | bool, line_mode: bool) -> list[Lexicon]:
        choice = {True: "auto", False: "off"}.get(choice, choice)  # type: ignore[arg-type]
        if choice == "off":
            return []
        if choice == "auto":
            return [Lexicon.english(), Lexicon.for_language("fr")] if line_mode else [Lexicon.english()]
        return [Lexicon.for_language(str(choice))]

    @staticmethod
    def _cpu_bf16(precision: str) -> bool:
        """bf16 on the CPU only where oneDNN runs it natively (AVX512-BF16 / AMX): there it is
        ~1.7x faster than fp32 for our convolutions; elsewhere it would be emulated and slower."""
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, not {precision!r}")
        if precision == "fp32":
            return False
        native = native_cpu_bf16()
        if precision == "bf16" and not native:
            raise ValueError("--precision bf16 asked for, but this CPU has no native bf16 (AVX512-BF16/AMX)")
        return precision != "fp32" and native

    @staticmethod
    def _pick_backend(wanted: str, device: Any, bf16_cpu: bool = False) -> str:
        """CPU: PyTorch with bf16 autocast where the CPU has native bf16 (fastest, BENCHMARKS.md),
        otherwise ONNX Runtime in fp32 (faster than eager fp32 PyTorch). GPUs stay on PyTorch."""
        if device.type != "cpu" or wanted == "torch" or (wanted == "auto" and bf16_cpu):
            return "torch"
        import importlib.util

        try:
            import onnxruntime  # noqa: F401

            if importlib.util.find_spec("onnx") is None:  # the exporter needs it (found, not imported:
                raise ImportError("No module named 'onnx'")  # a cached graph never loads it)
        except ImportError:
            if wanted == "onnxruntime":
                raise
            return "torch"
        return "onnxruntime"

    @classmethod
    def load(
        cls, models_dir: str | Path | None = None, device: str = "auto", config: PipelineConfig | None = None
    ) -> Pipeline:
        pdf_renderer()  # a machine that cannot render PDFs stops here, not at every PDF
        models_dir = Path(models_dir) if models_dir else checkpoints.DEFAULT_DIR
        config, dev = config or PipelineConfig(), pick_device(device)
        bf16_cpu = dev.type == "cpu" and cls._cpu_bf16(config.precision)
        if cls._pick_backend(config.backend, dev, bf16_cpu) == "onnxruntime":
            # exported graphs are cached on disk: a hit builds no network and imports no torch
            from models.onnx_backend import default_threads, from_checkpoints

            seg_meta = checkpoints.read_meta(models_dir, "segmenter")
            rec_meta = checkpoints.read_meta(models_dir, "recogniser")
            height = rec_meta.get("config", {}).get("height", crops_mod.CROP_HEIGHT)
            seg, rec = from_checkpoints(models_dir, height, default_threads())
        else:
            seg, seg_meta = checkpoints.load(models_dir, "segmenter")
            rec, rec_meta = checkpoints.load(models_dir, "recogniser")
        return cls(seg, seg_meta, rec, rec_meta, dev, config)

    def _autocast(self):
        if self.backend != "torch":
            return contextlib.nullcontext()
        import torch

        if self.device.type == "cuda" and self.config.precision != "fp32":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        if self.bf16_cpu:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def _inference(self):
        """Around a model call: torch's inference mode and autocast on the torch backend."""
        if self.backend != "torch":
            yield
            return
        import torch

        with torch.inference_mode(), self._autocast():
            yield

    def _input(self, batch: np.ndarray) -> Any:
        """A float32 NCHW batch as the model takes it: as is for ONNX Runtime, a torch tensor on
        the device (channels-last on the CPU) for torch."""
        if self.backend != "torch":
            return batch
        import torch

        x = torch.from_numpy(batch).to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    # ---- segmentation ------------------------------------------------------------------------

    def segment(self, pages: list[np.ndarray]) -> list[PageDetections]:
        """Word (and line) quads in page pixels with detection scores, for each page. A page whose text came
        out far smaller or larger than the sizes the segmenter learned is segmented once more at
        the scale that brings it there (a 100-dpi form, a 450-px paragraph, a close-up photo)."""
        out = []
        for batch in self._seg_batches(pages):
            out.extend(self._segment_batch(batch))
        for k, page in enumerate(pages):
            side = self._rescaled_side(page, out[k])
            if side:
                out[k] = self._segment_batch([page], side)[0]
        return out

    def _rescaled_side(self, page: np.ndarray, found: PageDetections) -> int | None:
        """The segmenter input size that puts the page's median text height where the segmenter
        learned it (word boxes: TEXT_HEIGHT; a line head's lines: LINE_HEIGHT, which it measures
        better on real handwriting), or None when it is already in range (or too little text)."""
        long_side = max(page.shape[:2])
        scale = self.long_side / long_side
        by_lines = found.lines is not None and len(found.lines) >= 3
        dets = found.lines if by_lines else found.words
        target, (low, high) = (LINE_HEIGHT, LINE_RANGE) if by_lines else (TEXT_HEIGHT, TEXT_RANGE)
        if len(dets) < 3:
            # nothing found: text may be too small to see at this scale; look again at twice the
            # size where the page has the pixels for it
            return 2 * self.long_side if not dets and long_side > 1.5 * self.long_side else None
        heights = [crops_mod.quad_size(q)[1] * scale for q, _ in dets]
        median = float(np.median(heights))
        if low <= median <= high:
            return None
        factor = float(np.clip(target / median, *SEG_RESCALE))
        side = int(self.long_side * factor)
        return side if abs(side - self.long_side) > 0.2 * self.long_side else None

    def _seg_batches(self, pages: list[np.ndarray]) -> list[list[np.ndarray]]:
        """Up to seg_batch pages per forward. On the CPU only pages whose padded input has the same
        shape share one: padding a page to its neighbour's size costs more there than batching
        saves (measured 0.15 s/page unbatched vs 0.19 batched by 4 on the real letters)."""

        def padded(p: np.ndarray) -> tuple[int, ...]:
            if self.device.type != "cpu":
                return ()  # GPUs: any pages batch together
            scale = self.long_side / max(p.shape[:2])
            return tuple(-(-max(1, round(d * scale)) // 32) for d in p.shape[:2])

        batches: list[list[np.ndarray]] = []
        last_shape: tuple[int, ...] | None = None
        for p in pages:
            shape = padded(p)
            if batches and shape == last_shape and len(batches[-1]) < self.config.seg_batch:
                batches[-1].append(p)
            else:
                batches.append([p])
            last_shape = shape
        return batches

    def _segment_batch(self, pages: list[np.ndarray], long_side: int | None = None) -> list[PageDetections]:
        side = long_side or self.long_side
        resized = [self._presized.get(id(p)) for p in pages]  # made by prepare_page, if at this size
        resized = [
            r if r is not None and max(r[0].shape[:2]) == side else _resize_for_segmenter(p, side)
            for r, p in zip(resized, pages)
        ]
        hmax = max(r.shape[0] for r, _ in resized)
        wmax = max(r.shape[1] for r, _ in resized)
        hpad, wpad = -(-hmax // 32) * 32, -(-wmax // 32) * 32
        batch = np.full((len(pages), hpad, wpad, 3), 255, np.uint8)  # pad with white paper
        for k, (r, _) in enumerate(resized):
            batch[k, : r.shape[0], : r.shape[1]] = r
        x = self._seg_input(batch)
        with self._inference():
            prob = as_numpy(self.segmenter(x, with_threshold=False)["prob"])
        results = []
        for k, (r, scale) in enumerate(resized):
            maps = prob[k, :, : r.shape[0], : r.shape[1]]
            words = [(quad / scale, score) for quad, score in boxes_from_prob(maps[0], self.config.post)]
            lines = None
            if len(maps) > 1:  # a line head: channel 1
                lines = [
                    (quad / scale, score) for quad, score in boxes_from_prob(maps[1], self.config.line_post)
                ]
            results.append(PageDetections(words, lines))
        return results

    def _seg_input(self, batch: np.ndarray) -> Any:
        """N x H x W x 3 uint8 pages -> the segmenter's N x 3 x H x W float input in [0, 1]."""
        if self.backend == "torch":  # converted on the device: a quarter of the bytes to move
            import torch

            x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float().div_(255)
            return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        x = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)
        x /= 255
        return x

    # ---- recognition -------------------------------------------------------------------------

    def recognise(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        """Text and confidence for each word crop (uint8 gray, fixed height)."""
        results: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        plan = crops_mod.plan_batches([c.shape[1] for c in crops], self.config.rec_batch)
        for idx in plan:
            batch, widths = crops_mod.pack([crops[i] for i in idx])
            x = self._input(batch)
            with self._inference():
                log_probs = as_numpy(self.recogniser(x))
            frames = np.minimum(-(-np.asarray(widths) // 4), log_probs.shape[1])
            seqs, confs = greedy_decode(log_probs, frames)
            texts = [self.codec.decode_greedy(seq) for seq in seqs]
            if self.lexicon:
                texts = self.lexicon.rescore(texts, log_probs, frames, self.codec)
            for i, text, conf in zip(idx, texts, confs):
                results[i] = (text, conf)
        return results

    # ---- lines -------------------------------------------------------------------------------

    def line_crop(self, gray: np.ndarray, quad: np.ndarray) -> np.ndarray:
        """A line quad (page pixels, TL,TR,BR,BL) rectified to the recogniser's height."""
        return crops_mod.rectify(gray, quad, self.crop_height, self.max_width)

    def read_lines(
        self, crops: list[np.ndarray], pages: list[int] | None = None
    ) -> list[list[tuple[str, float, float, float]]]:
        """Line crops (uint8 gray, recogniser height) -> per line its words as
        (text, confidence, u0, u1), u0/u1 the fractions along the crop where the word lies.

        pages: the page each crop comes from. The lexicon's language is chosen per page from all its
        lines (one badly read line is no evidence of a language); without pages, per line."""
        space = self.codec.index.get(" ", -1)
        read: list[tuple[list, np.ndarray]] = [([], np.zeros((0, 0), np.float32))] * len(crops)
        for idx, batch, widths in self._line_batches(crops):
            x = self._input(batch)
            with self._inference():
                log_probs = as_numpy(self.recogniser(x))
            frames = np.minimum(-(-np.asarray(widths) // 4), log_probs.shape[1])
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

    def _rescore(
        self, read: list[tuple[list, np.ndarray]], groups: list[int]
    ) -> list[tuple[list, np.ndarray]]:
        """Lexicon rescoring with one language per group of lines (see read_lines)."""
        texts: dict[int, list[str]] = {}
        for (words, _), g in zip(read, groups):
            texts.setdefault(g, []).extend(w[0] for w in words)
        chosen = {g: pick_lexicon(self.lexicons, t) for g, t in texts.items()}
        out = [words for words, _ in read]
        by_lexicon: dict[int, tuple[Lexicon, list[int]]] = {}
        for i, g in enumerate(groups):
            if chosen[g] is not None:
                by_lexicon.setdefault(id(chosen[g]), (chosen[g], []))[1].append(i)
        for lexicon, idx in by_lexicon.values():  # all lines of one language in one CTC pass
            for i, words in zip(idx, lexicon.rescore_lines([read[i] for i in idx], self.codec)):
                out[i] = words
        return [(words, lp) for words, (_, lp) in zip(out, read)]

    def _line_batches(self, crops: list[np.ndarray]):
        """(indices, B x 1 x H x W ink maps, widths), about rec_batch x 128 columns per batch."""
        plan = crops_mod.plan_batches(
            [c.shape[1] for c in crops],
            self.config.rec_batch,
            LINE_BUCKETS,
            columns=self.config.rec_batch * 128,
        )
        for part in plan:
            batch, widths = crops_mod.pack([crops[i] for i in part], LINE_BUCKETS)
            yield part, batch, widths

    def _read_by_lines(self, images: list[np.ndarray], detections: list[PageDetections]) -> list[Page]:
        """Read each page line by line (line_pieces), then place the words the recogniser read
        along each piece."""
        crops, owners = [], []  # owners: (page, line index, piece quad, its word boxes)
        for k, (img, dets) in enumerate(zip(images, detections)):
            gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
            for li, quad, members in line_pieces(dets):
                crops.append(self.line_crop(gray, quad))
                owners.append((k, li, quad, members))
        readings = self.read_lines(crops, [o[0] for o in owners]) if crops else []
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

    # ---- pages -------------------------------------------------------------------------------

    def process_pages(self, images: list[np.ndarray]) -> list[Page]:
        """HxWx3 uint8 RGB pages (any documents) -> Pages numbered 1..n in the given order.

        Each page is first put right (transforms.page_normalise: negatives inverted, quarter turns
        and skew undone); a page that still reads badly is tried upside down. Coordinates are
        reported in each page's source pixels (the fix undone, a reduced Raster scaled back up)."""
        if not images:
            return []
        prepared = [img if isinstance(img, PreparedPage) else self.prepare_page(img) for img in images]
        images = [p.image for p in prepared]
        fixes = [p.fix for p in prepared]
        scales, dpis = [p.scale for p in prepared], [p.dpi for p in prepared]
        mine = {id(p.image): p.for_segmenter for p in prepared if p.for_segmenter is not None}
        self._presized.update(mine)  # by the id of the image object, alive until the pages are read
        try:
            pages = self._read_pages(images)
        finally:
            for key in mine:
                self._presized.pop(key, None)
        if self.config.fix_pages:
            self._retry_upside_down(images, pages, fixes)
        for page, fix, scale, dpi in zip(pages, fixes, scales, dpis):
            _to_source(page, fix, scale)
            page.dpi = dpi
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
        return PreparedPage(img, fix, scale, dpi, _resize_for_segmenter(img, self.long_side))

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

    def _read_by_words(self, images: list[np.ndarray], detections) -> list[Page]:
        crops = []
        for img, dets in zip(images, detections):
            gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
            crops += [
                crops_mod.rectify(gray, quad, self.crop_height, self.max_width) for quad, _ in dets.words
            ]
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
            pages.append(Page(page=k + 1, width=img.shape[1], height=img.shape[0], lines=group_lines(words)))
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
