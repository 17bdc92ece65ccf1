"""`htr eval --manifest M [--models DIR]`: how well the pipeline reads labelled pages.

Word-level ground truth (GNHK, synthetic): word detection P/R/F1 at IoU >= 0.5 (the GNHK
protocol), recognition CER/WER on ground-truth crops, end-to-end page CER/WER.
Line-level ground truth (e.g. the 1905 letters dev set): line detection F1, page CER/WER,
per-line CER on handwritten lines, and an order-free bag-of-words F1 after normalising
transcription marks, next to a chance baseline (another page's transcription).

`evaluate(pages, predict)` takes any `predict(image) -> Page`, so peers (Tesseract,
RapidOCR) converted to our records are scored by exactly the same code (jobs/bench.py).
"""
from __future__ import annotations

import json
import re
import sys
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from batch.schema import Page
from jobs.metrics import DetectionScore, ErrorRate, match
from models.charset import normalise
from transforms.rasterise import DEFAULT_IMAGE_SIDE, source_scale


@dataclass
class GtItem:
    text: str
    quad: np.ndarray           # 4x2 page pixels
    handwritten: bool = True


@dataclass
class EvalPage:
    uri: str
    items: list[GtItem]
    level: str                 # "word" | "line"
    _image: np.ndarray | None = field(default=None, repr=False)
    image_side: int | None = None   # decode as `htr run` would (a reduced Raster for large JPEGs)

    @property
    def image(self) -> np.ndarray:
        if self._image is None:
            from batch import storage
            from transforms.rasterise import iter_pages

            self._image = next(iter_pages(storage.read_bytes(self.uri), image_side=self.image_side))
        return self._image


HANDWRITTEN_TYPES = ("Handwritten",)   # line_types values containing this count as handwriting


def load_eval_set(manifest: str | Path, line_types: str | Path | None = None,
                  level: str = "auto", limit: int | None = None,
                  image_side: int | None = None) -> list[EvalPage]:
    from jobs.manifests import read_manifest, resolve_source

    manifest = Path(manifest)
    if line_types is None and (manifest.parent / "line_types.jsonl").is_file():
        line_types = manifest.parent / "line_types.jsonl"
    types: dict[str, list[str]] = {}
    if line_types:
        for ln in Path(line_types).read_text().splitlines():
            if ln.strip():
                d = json.loads(ln)
                types[d["source-ref"]] = d["line_types"]
    pages = []
    for sample in read_manifest(manifest)[:limit]:
        kinds = types.get(sample.source_ref)
        items = []
        for k, a in enumerate(sample.annotations):
            quad = np.array([[p["x"], p["y"]] if isinstance(p, dict) else [p.x, p.y] for p in a.polygon],
                            np.float32)
            hw = (any(t in kinds[k] for t in HANDWRITTEN_TYPES) if kinds
                  else getattr(a, "type", "H") != "P")
            items.append(GtItem(a.text, quad, hw))
        lvl = level
        if lvl == "auto":  # lines have spaces inside; words don't
            spaced = sum(" " in it.text.strip() for it in items)
            lvl = "line" if spaced > 0.3 * max(1, len(items)) else "word"
        pages.append(EvalPage(resolve_source(sample, manifest), items, lvl, image_side=image_side))
    return pages


# ---- normalisation -----------------------------------------------------------------------------

_MARKS = re.compile(r"[\^⟦⟧*]")
_EDGE_PUNCT = re.compile(r"^[^\w£$€]+|[^\w%°]+$")


def clean_text(text: str) -> str:
    """Transcription marks out (^ superscript, ⟦⟧ struck), look-alikes folded, spaces collapsed."""
    text = unicodedata.normalize("NFKC", _MARKS.sub("", text))
    return " ".join(t for t in (normalise(w) for w in text.split()) if t)


def bow_tokens(text: str) -> list[str]:
    """Words for the bag-of-words score: lower case, edge punctuation off."""
    out = []
    for w in clean_text(text).lower().split():
        w = _EDGE_PUNCT.sub("", w)
        if w:
            out.append(w)
    return out


# ---- scoring -----------------------------------------------------------------------------------

def _inside(point: np.ndarray, quad: np.ndarray, margin: float) -> bool:
    x0, y0 = quad.min(0) - margin
    x1, y1 = quad.max(0) + margin
    return x0 <= point[0] <= x1 and y0 <= point[1] <= y1


def _words_in(page: Page, quad: np.ndarray) -> list[str]:
    """Predicted words whose centre lies in a GT region, left to right."""
    h = float(quad[:, 1].max() - quad[:, 1].min())
    found = []
    for w in page.words:
        c = np.array([[p.x, p.y] for p in w.polygon]).mean(0)
        if _inside(c, quad, 0.15 * h):
            found.append((c[0], w.text))
    return [t for _, t in sorted(found)]


def _line_quads(page: Page) -> list[np.ndarray]:
    quads = []
    for line in page.lines:
        pts = np.array([[p.x, p.y] for w in line.words for p in w.polygon], np.float32)
        x0, y0 = pts.min(0)
        x1, y1 = pts.max(0)
        quads.append(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32))
    return quads


@dataclass
class Scores:
    det: DetectionScore = field(default_factory=DetectionScore)
    page_cer: ErrorRate = field(default_factory=ErrorRate)
    page_wer: ErrorRate = field(default_factory=ErrorRate)
    hw_line_cer: ErrorRate = field(default_factory=ErrorRate)
    hw_bow: list[tuple[list[str], list[str]]] = field(default_factory=list)
    all_bow: list[tuple[list[str], list[str]]] = field(default_factory=list)
    crop_cer: ErrorRate = field(default_factory=ErrorRate)
    crop_wer: ErrorRate = field(default_factory=ErrorRate)
    pages: int = 0
    seconds: float = 0.0


def _bow_f1(pairs: list[tuple[list[str], list[str]]]) -> float:
    """Micro-averaged over pages: every word counts once."""
    common = sum(sum((Counter(p) & Counter(r)).values()) for p, r in pairs)
    if not common:
        return 0.0
    precision = common / sum(len(p) for p, _ in pairs)
    recall = common / sum(len(r) for _, r in pairs)
    return 2 * precision * recall / (precision + recall)


def score_page(ep: EvalPage, page: Page, s: Scores) -> None:
    gt_quads = [it.quad for it in ep.items]
    pred_quads = (_line_quads(page) if ep.level == "line"
                  else [np.array([[p.x, p.y] for p in w.polygon], np.float32) for w in page.words])
    s.det.add(len(match(pred_quads, gt_quads, 0.5)), len(pred_quads), len(gt_quads))
    ref_text = clean_text("\n".join(it.text for it in ep.items if not it.text.startswith("%")))
    pred_text = clean_text(page.text)
    s.page_cer.add(pred_text, ref_text)
    s.page_wer.add(pred_text.split(), ref_text.split())
    hw_pred, hw_ref = [], []
    for it in ep.items:
        if it.handwritten and ep.level == "line":
            words = _words_in(page, it.quad)
            s.hw_line_cer.add(clean_text(" ".join(words)), clean_text(it.text))
            hw_pred += bow_tokens(" ".join(words))
            hw_ref += bow_tokens(it.text)
    if ep.level == "line":
        s.hw_bow.append((hw_pred, hw_ref))
    s.all_bow.append((bow_tokens(page.text), bow_tokens(ref_text)))
    s.pages += 1


def chance_bow(pages: list[EvalPage]) -> float:
    """Bag-of-words F1 of each page's handwritten transcription scored against the next page's:
    what common words alone earn, the floor any real reading must clear."""
    refs = [[w for it in p.items if it.handwritten for w in bow_tokens(it.text)] for p in pages]
    if len(refs) < 2:
        return 0.0
    return _bow_f1([(refs[(i + 1) % len(refs)], refs[i]) for i in range(len(refs))])


def evaluate(pages: list[EvalPage], predict: Callable[[np.ndarray], Page],
             recognise: Callable[[list[np.ndarray]], list[str]] | None = None,
             progress: bool = True, desc: str = "eval") -> dict:
    s = Scores()
    for ep in tqdm(pages, desc=desc, unit="page", disable=not progress, file=sys.stderr):
        t = time.perf_counter()
        page = predict(ep.image)
        s.seconds += time.perf_counter() - t
        score_page(ep, page, s)
        if recognise is not None and ep.level == "word":
            _score_crops(ep, recognise, s)
    return summarise(s, pages)


def _score_crops(ep: EvalPage, recognise, s: Scores) -> None:
    import cv2
    from jobs.manifests import is_recognition_target
    from transforms.crops import rectify

    gray = cv2.cvtColor(np.asarray(ep.image), cv2.COLOR_RGB2GRAY)
    items = [it for it in ep.items if is_recognition_target(it.text)]
    if not items:
        return
    sx, sy = source_scale(ep.image)   # ground truth is in source pixels
    texts = recognise([rectify(gray, it.quad / np.float32([sx, sy])) for it in items])
    for it, pred in zip(items, texts):
        s.crop_cer.add(pred, normalise(it.text))
        s.crop_wer.add([pred], [normalise(it.text)])


def summarise(s: Scores, pages: list[EvalPage]) -> dict:
    level = pages[0].level if pages else "word"
    out = {
        "pages": s.pages, "level": level,
        f"{level}_det_precision": s.det.precision, f"{level}_det_recall": s.det.recall,
        f"{level}_det_f1": s.det.f1,
        "page_cer": s.page_cer.rate, "page_wer": s.page_wer.rate,
        "bow_f1": _bow_f1(s.all_bow),
        "seconds_per_page": s.seconds / max(1, s.pages),
    }
    if level == "line":
        out["hw_line_cer"] = s.hw_line_cer.rate
        out["hw_bow_f1"] = _bow_f1(s.hw_bow)
        out["hw_bow_f1_chance"] = chance_bow(pages)
    if s.crop_cer.length:
        out["crop_cer"] = s.crop_cer.rate
        out["crop_wer"] = s.crop_wer.rate
    return out


def format_table(results: dict[str, dict]) -> str:
    """Systems as columns, metrics as rows."""
    names = list(results)
    keys = [k for k in next(iter(results.values()))] if results else []
    for r in results.values():
        keys += [k for k in r if k not in keys]
    width = max([len(k) for k in keys] + [6])
    lines = [" ".join([f"{'metric':<{width}}"] + [f"{n:>12}" for n in names])]
    for k in keys:
        cells = []
        for n in names:
            v = results[n].get(k, "")
            cells.append(f"{v:>12.4f}" if isinstance(v, float) else f"{str(v):>12}")
        lines.append(" ".join([f"{k:<{width}}"] + cells))
    return "\n".join(lines)


# ---- command -----------------------------------------------------------------------------------

def configure(p) -> None:
    p.add_argument("--manifest", required=True, help="manifest.jsonl (word- or line-level ground truth)")
    p.add_argument("--models", help="model folder (default: models/default)")
    p.add_argument("--device", default="auto")
    p.add_argument("--level", choices=["auto", "word", "line"], default="auto")
    p.add_argument("--line-types", help="line_types.jsonl (default: beside the manifest, if any)")
    p.add_argument("--limit", type=int, help="first N pages only")
    p.add_argument("--json", help="write the metrics here")
    p.add_argument("--no-lexicon", action="store_true", help="score the raw recogniser readings")
    p.add_argument("--long-side", type=int, help="segmenter input size (default: the checkpoint's)")
    p.add_argument("--backend", choices=["auto", "torch", "onnxruntime"], default="auto")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--image-side", type=int, default=DEFAULT_IMAGE_SIDE,
                   help="decode large JPEGs reduced as htr run does (0: full size)")


def pipeline_predictor(pipe) -> tuple[Callable, Callable]:
    predict = lambda image: pipe.process_pages([image])[0]  # noqa: E731
    recognise = lambda crops: [t for t, _ in pipe.recognise(crops)]  # noqa: E731
    return predict, recognise


def main(args) -> int:
    from batch.pipeline import Pipeline, PipelineConfig

    pages = load_eval_set(args.manifest, args.line_types, args.level, args.limit, args.image_side)
    pipe = Pipeline.load(args.models, args.device, PipelineConfig(
        lexicon=not args.no_lexicon, long_side=args.long_side, backend=args.backend,
        precision=args.precision, image_side=args.image_side))
    predict, recognise = pipeline_predictor(pipe)
    metrics = evaluate(pages, predict, recognise)
    metrics["model_version"] = pipe.model_version
    print(format_table({"htr-batch": metrics}))
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=1))
    print(f"htr eval: {metrics['pages']} pages, {metrics['level']}-level ground truth, "
          f"page CER {metrics['page_cer']:.3f}, bag-of-words F1 {metrics['bow_f1']:.3f}")
    return 0
