"""`htr eval --manifest M [--manifest M2 | --manifest SETS/] [--models DIR] [--split val]`: how well
the pipeline reads labelled pages, per set and overall.

Word-level ground truth (GNHK, synthetic): word detection P/R/F1 at IoU >= 0.5 (the GNHK protocol),
recognition CER/WER on ground-truth word crops, end-to-end page CER/WER, bag-of-words F1.
Line-level ground truth (`"level": "line"` manifests: the real training sets, the 1905 letters dev
set): line detection P/R/F1 at IoU >= 0.5 on the full annotated polygons, recognition CER/WER on
ground-truth line crops (no segmenter involved), page CER/WER, an order-free bag-of-words F1 next to
a chance baseline (another page's transcription), and, where lines have types (line_types.jsonl),
crop CER and bag-of-words F1 per type (handwritten / printed / signature / other).

`evaluate(pages, predict)` takes any `predict(image) -> Page`, so peers (Tesseract, RapidOCR)
converted to our records are scored by exactly the same code (jobs/bench.py).

Apps/jobs layer (the top: may import anything below it); reads pages through batch.pipeline.
"""

from __future__ import annotations

import json
import re
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

# _json_lines: parse_sample drops a page's "level", which says what its ground truth is
from batch import options
from batch.core.manifest import is_recognition_target, parse_sample
from batch.core.schema import Page
from jobs.line_data import SPLIT_FILE, clean_transcription, read_page_list
from jobs.manifests import _json_lines, find_manifests, resolve_source
from jobs.metrics import DetectionScore, ErrorRate, match
from models.charset import normalise
from transforms.crops import quad_size, rectify
from transforms.line_geometry import expand_quad, line_quad
from transforms.rasterise import DEFAULT_LIMITS, Limits, source_scale

# (gray page, GT line quads in that image's pixels) -> one reading per quad
LineReader = Callable[[np.ndarray, list[np.ndarray]], list[str]]
# word crops -> one reading per crop (what a peer's `read_crops` is)
CropReader = Callable[[list[np.ndarray]], list[str]]


@dataclass
class GtItem:
    text: str  # as transcribed, markup included
    polygon: np.ndarray  # Nx2 source pixels, every annotated point (4 for words, 10-200 for lines)
    handwritten: bool = True
    kind: str | None = None  # line type from line_types.jsonl; None: from `handwritten`

    @property
    def line_type(self) -> str:
        return self.kind or ("handwritten" if self.handwritten else "printed")


@dataclass
class EvalPage:
    uri: str
    items: list[GtItem]
    level: str  # "word" | "line"
    _image: np.ndarray | None = field(default=None, repr=False)
    image_side: int | None = None  # decode as `htr run` would (a reduced Raster for large JPEGs)
    set_name: str = ""
    dpi: int = 200  # a PDF page: its first page at this resolution
    limits: Limits = DEFAULT_LIMITS
    _loaded: bool = field(default=False, repr=False)

    @property
    def image(self) -> np.ndarray:
        if self._image is None:
            from batch import storage
            from transforms.rasterise import iter_pages

            data = storage.read_bytes(self.uri)
            self._image = next(iter_pages(data, self.dpi, self.limits, image_side=self.image_side))
            self._loaded = True
        return self._image

    def release(self) -> None:
        """Drop an image this page decoded itself (a few MB each: a set of 300 pages would
        otherwise stay in memory); an image handed in stays."""
        if self._loaded:
            self._image, self._loaded = None, False


# ---- reading manifests -------------------------------------------------------------------------


def line_type_group(label: str) -> str:
    """An ALTO line type ("DefaultLine:Handwritten", "InterlinearLine:Handwritten",
    "DefaultLine:Signature", "DefaultLine:Print", "DefaultLine:Typewritten", "untyped") -> a group.
    Signatures are their own group: usually a name that is not legible as text."""
    for key, group in (
        ("Handwritten", "handwritten"),
        ("Signature", "signature"),
        ("Print", "printed"),
        ("Typewritten", "printed"),
    ):
        if key in label:
            return group
    return "other"


def _read_line_types(path: str | Path | None) -> dict[str, list[str]]:
    types: dict[str, list[str]] = {}
    if path:
        for ln in Path(path).read_text(encoding="utf-8").splitlines():
            if ln.strip():
                d = json.loads(ln)
                types[d["source-ref"]] = d["line_types"]
    return types


def _auto_level(items: list[GtItem]) -> str:
    """Lines have spaces inside; words don't (for manifests without a "level")."""
    spaced = sum(" " in it.text.strip() for it in items)
    return "line" if spaced > 0.3 * max(1, len(items)) else "word"


def _items(sample, kinds: list[str] | None) -> list[GtItem]:
    items = []
    for k, a in enumerate(sample.annotations):
        poly = np.array([[p["x"], p["y"]] for p in a.polygon], np.float32)  # every point
        kind = line_type_group(kinds[k]) if kinds and k < len(kinds) else None
        hw = kind == "handwritten" if kind else a.type != "P"
        items.append(GtItem(a.text, poly, hw, kind))
    return items


def load_eval_set(
    manifest: str | Path,
    line_types: str | Path | None = None,
    level: str = "auto",
    limit: int | None = None,
    image_side: int | None = None,
    pages: set[str] | None = None,
    set_name: str | None = None,
    dpi: int = 200,
    limits: Limits = DEFAULT_LIMITS,
) -> list[EvalPage]:
    """Pages of one manifest. `pages`: keep only these image file names (a validation split).
    image_side, dpi, limits: how each page file is decoded (htr eval: its decoding flags)."""
    manifest = Path(manifest)
    if line_types is None and (manifest.parent / "line_types.jsonl").is_file():
        line_types = manifest.parent / "line_types.jsonl"
    types = _read_line_types(line_types)
    out: list[EvalPage] = []
    for obj, where in _json_lines(manifest):
        if limit is not None and len(out) >= limit:
            break
        sample = parse_sample(obj, where)
        if pages is not None and Path(sample.source_ref).name not in pages:
            continue
        items = _items(sample, types.get(sample.source_ref))
        lvl = level if level != "auto" else obj.get("level") or _auto_level(items)
        out.append(
            EvalPage(
                resolve_source(sample, manifest),
                items,
                lvl,
                image_side=image_side,
                set_name=set_name or manifest.parent.name,
                dpi=dpi,
                limits=limits,
            )
        )
    return out


# ---- normalisation -----------------------------------------------------------------------------

# Typographic look-alikes the recogniser and the transcribers choose between freely.
_TYPOGRAPHIC = str.maketrans(
    {
        "’": "'",
        "‘": "'",
        "‚": "'",
        "‛": "'",
        "ʼ": "'",
        "′": "'",
        "“": '"',
        "”": '"',
        "„": '"',
        "″": '"',
        "–": "-",
        "—": "-",
        "‐": "-",
        "‑": "-",
        "−": "-",
        # decorative capitals transcribed with look-alike Canadian-syllabics letters (eScriptorium
        # sets do this): unreadable to any OCR engine's alphabet, so folded before scoring
        "ᗅ": "A",
        "ᗩ": "A",
        "ᗷ": "B",
        "ᑕ": "C",
        "ᗞ": "D",
        "ᗪ": "D",
        "ᕼ": "H",
        "ᒪ": "L",
        "ᑎ": "N",
        "ᑭ": "P",
        "ᖇ": "R",
    }
)
_EDGE_PUNCT = re.compile(r"^[^\w£$€]+|[^\w%°]+$")


def normalise_text(text: str) -> str:
    """What CER and bag-of-words compare, the same for prediction and reference: Unicode NFC,
    typographic quotes and dashes as ASCII, other look-alikes folded into the recogniser's alphabet
    (ſ -> s, ligatures split; models.charset.normalise), whitespace (line breaks too) collapsed."""
    text = unicodedata.normalize("NFC", text).translate(_TYPOGRAPHIC)
    return " ".join(t for t in (normalise(w) for w in text.split()) if t)


def reference_text(text: str, level: str = "line") -> str | None:
    """A transcription as comparable text; None where it cannot be scored (a line whose markup
    says its ink is not transcribed, a GNHK special token)."""
    if level == "line":
        clean = clean_transcription(text)
        return normalise_text(clean) if clean else None
    return normalise_text(text) if is_recognition_target(text) else None


def clean_text(text: str) -> str:
    """A line transcription with its markup out (^ superscript, ⟦⟧ struck, ...), normalised."""
    return reference_text(text, "line") or ""


def bow_tokens(text: str) -> list[str]:
    """Words for the bag-of-words score: normalised, lower case, punctuation off their edges
    (inner apostrophes and hyphens stay: "n'ayant", "peut-être" are one word each)."""
    out = []
    for w in normalise_text(text).lower().split():
        w = _EDGE_PUNCT.sub("", w)
        if w:
            out.append(w)
    return out


# ---- scoring -----------------------------------------------------------------------------------

BowPairs = list[tuple[list[str], list[str]]]  # (predicted words, reference words) per page


@dataclass
class Scores:
    det: dict[str, DetectionScore] = field(default_factory=dict)  # by level: "word" / "line"
    page_cer: ErrorRate = field(default_factory=ErrorRate)
    page_wer: ErrorRate = field(default_factory=ErrorRate)
    bow: BowPairs = field(default_factory=list)
    crop_cer: ErrorRate = field(default_factory=ErrorRate)
    crop_wer: ErrorRate = field(default_factory=ErrorRate)
    crop_cer_by_type: dict[str, ErrorRate] = field(default_factory=dict)
    bow_by_type: dict[str, BowPairs] = field(default_factory=dict)  # end to end, words in GT lines
    ref_by_type: dict[str, list[list[str]]] = field(default_factory=dict)  # per page: chance baseline
    unusable_lines: int = 0
    pages: int = 0
    seconds: float = 0.0

    def merge(self, other: Scores) -> None:
        """Add another set's counts: overall numbers are micro-averages (every character counts once)."""
        for f in fields(self):
            setattr(self, f.name, _merged(getattr(self, f.name), getattr(other, f.name)))


def _merged(a: Any, b: Any) -> Any:
    if isinstance(a, (ErrorRate, DetectionScore)):
        return type(a)(**{f.name: getattr(a, f.name) + getattr(b, f.name) for f in fields(a)})
    if isinstance(a, dict):
        return {
            k: _merged(a[k], b[k]) if k in a and k in b else a.get(k, b.get(k))
            for k in [*a, *[k for k in b if k not in a]]
        }
    return a + b  # lists, counts, seconds


def _bow_f1(pairs: BowPairs) -> float:
    """Micro-averaged over pages: every word counts once."""
    common = sum(sum((Counter(p) & Counter(r)).values()) for p, r in pairs)
    if not common:
        return 0.0
    precision = common / sum(len(p) for p, _ in pairs)
    recall = common / sum(len(r) for _, r in pairs)
    return 2 * precision * recall / (precision + recall)


def predicted_line_regions(page: Page) -> list[np.ndarray]:
    """Each predicted line's region: the convex hull of all its words' corners. The GT polygons
    outline the ink tightly; the hull follows a line's slanted or stepped word boxes where the
    minimum-area rectangle (line_geometry.line_quad) adds empty corners that push IoUs under 0.5
    (cremma_mss20, same predictions: line F1 0.55 with rectangles, 0.67 with hulls)."""
    return [
        cv2.convexHull(np.array([[p.x, p.y] for w in line.words for p in w.polygon], np.float32)).reshape(
            -1, 2
        )
        for line in page.lines
        if line.words
    ]


def _score_detection(ep: EvalPage, page: Page, s: Scores) -> None:
    gts = [it.polygon for it in ep.items]
    preds = (
        predicted_line_regions(page)
        if ep.level == "line"
        else [np.array([[p.x, p.y] for p in w.polygon], np.float32) for w in page.words]
    )
    s.det.setdefault(ep.level, DetectionScore()).add(len(match(preds, gts, 0.5)), len(preds), len(gts))


def _references(ep: EvalPage) -> list[str | None]:
    return [reference_text(it.text, ep.level) for it in ep.items]


def _score_page_text(ep: EvalPage, page: Page, refs: list[str | None], s: Scores) -> None:
    """Page text in reading order vs the usable GT transcriptions joined by line breaks."""
    ref = normalise_text("\n".join(r for r in refs if r))
    pred = normalise_text(page.text)
    s.page_cer.add(pred, ref)
    s.page_wer.add(pred.split(), ref.split())
    s.bow.append((bow_tokens(page.text), bow_tokens(ref)))


def _line_height(polygon: np.ndarray) -> float:
    return quad_size(line_quad(polygon))[1]


def words_by_line(page: Page, polygons: list[np.ndarray]) -> list[list[str]]:
    """Predicted words per GT line: a word joins the one line whose polygon holds its centre, or
    lies nearest to it within 15% of that line's height, so it counts once where polygons overlap."""
    contours = [np.asarray(p, np.float32).reshape(-1, 1, 2) for p in polygons]
    margins = [0.15 * _line_height(p) for p in polygons]
    out: list[list[str]] = [[] for _ in polygons]
    for w in page.words:
        c = (float(np.mean([p.x for p in w.polygon])), float(np.mean([p.y for p in w.polygon])))
        dists = [cv2.pointPolygonTest(cnt, c, True) for cnt in contours]
        best = int(np.argmax(dists)) if dists else -1
        if best >= 0 and dists[best] >= -margins[best]:
            out[best].append(w.text)
    return out


def _score_line_types(ep: EvalPage, page: Page, refs: list[str | None], s: Scores) -> None:
    """End-to-end bag of words per line type: the pipeline's words inside GT lines of that type."""
    usable = [(it, r) for it, r in zip(ep.items, refs) if r]
    found = words_by_line(page, [it.polygon for it, _ in usable])
    per_type: dict[str, tuple[list[str], list[str]]] = {}
    for (it, ref), words in zip(usable, found):
        pred_words, ref_words = per_type.setdefault(it.line_type, ([], []))
        pred_words += bow_tokens(" ".join(words))
        ref_words += bow_tokens(ref)
    for kind, pair in per_type.items():
        s.bow_by_type.setdefault(kind, []).append(pair)
        s.ref_by_type.setdefault(kind, []).append(pair[1])


def gt_line_quads(ep: EvalPage) -> list[np.ndarray]:
    """The crop quad of every GT line, in the decoded image's pixels: the rotated rectangle around
    the polygon with the margins the line recogniser is trained with (5% of the height above and
    below, 2% at the ends)."""
    sx, sy = source_scale(ep.image)  # ground truth is in source pixels
    return [
        expand_quad(line_quad(it.polygon), 0.05, 0.05, 0.02) / np.array([sx, sy], np.float32)
        for it in ep.items
    ]


def _score_line_crops(ep: EvalPage, read_lines: LineReader, refs: list[str | None], s: Scores) -> None:
    """Recognition alone: each usable GT line cut out and read, no segmenter involved."""
    keep = [k for k, r in enumerate(refs) if r]
    if not keep:
        return
    quads = gt_line_quads(ep)
    gray = cv2.cvtColor(np.asarray(ep.image), cv2.COLOR_RGB2GRAY)
    readings = read_lines(gray, [quads[k] for k in keep])
    for k, text in zip(keep, readings):
        pred, ref = normalise_text(text), refs[k] or ""  # kept: never empty
        s.crop_cer.add(pred, ref)
        s.crop_wer.add(pred.split(), ref.split())
        s.crop_cer_by_type.setdefault(ep.items[k].line_type, ErrorRate()).add(pred, ref)


def _score_word_crops(ep: EvalPage, recognise: CropReader, refs: list[str | None], s: Scores) -> None:
    keep = [k for k, r in enumerate(refs) if r]
    if not keep:
        return
    gray = cv2.cvtColor(np.asarray(ep.image), cv2.COLOR_RGB2GRAY)
    sx, sy = source_scale(ep.image)
    quads = [
        ep.items[k].polygon if len(ep.items[k].polygon) == 4 else line_quad(ep.items[k].polygon) for k in keep
    ]
    texts = recognise([rectify(gray, q / np.array([sx, sy], np.float32)) for q in quads])
    for k, text in zip(keep, texts):
        pred, ref = normalise_text(text), refs[k] or ""  # kept: never empty
        s.crop_cer.add(pred, ref)
        s.crop_wer.add([pred], [ref])


def score_page(
    ep: EvalPage,
    page: Page,
    s: Scores,
    recognise: CropReader | None = None,
    read_lines: LineReader | None = None,
) -> None:
    refs = _references(ep)
    _score_detection(ep, page, s)
    _score_page_text(ep, page, refs, s)
    if ep.level == "line":
        s.unusable_lines += sum(r is None for r in refs)
        _score_line_types(ep, page, refs, s)
        if read_lines is not None:
            _score_line_crops(ep, read_lines, refs, s)
    elif recognise is not None:
        _score_word_crops(ep, recognise, refs, s)
    s.pages += 1


def chance_bow(pages: list[EvalPage], line_type: str | None = "handwritten") -> float:
    """Bag-of-words F1 of each page's transcription (lines of `line_type`; None: all) scored
    against the next page's: what common words alone earn, the floor any real reading must clear."""
    refs = [
        [
            w
            for it in p.items
            if line_type is None or it.line_type == line_type
            for w in bow_tokens(reference_text(it.text, p.level) or "")
        ]
        for p in pages
    ]
    return _chance(refs) or 0.0


def _chance(refs: list[list[str]]) -> float | None:
    if len(refs) < 2:
        return None  # one page: there is no other page to draw chance from
    return _bow_f1([(refs[(i + 1) % len(refs)], refs[i]) for i in range(len(refs))])


def score_pages(
    pages: list[EvalPage],
    predict: Callable[[np.ndarray], Page],
    recognise: CropReader | None = None,
    read_lines: LineReader | None = None,
    progress: bool = True,
    desc: str = "eval",
) -> Scores:
    s = Scores()
    for ep in tqdm(pages, desc=desc, unit="page", disable=not progress, file=sys.stderr):
        t = time.perf_counter()
        page = predict(ep.image)
        s.seconds += time.perf_counter() - t
        score_page(ep, page, s, recognise, read_lines)
        ep.release()
    return s


def evaluate(
    pages: list[EvalPage],
    predict: Callable[[np.ndarray], Page],
    recognise: CropReader | None = None,
    progress: bool = True,
    desc: str = "eval",
    read_lines: LineReader | None = None,
) -> dict:
    """Metrics for one set of pages. `recognise` reads word crops (word-level pages),
    `read_lines` GT line crops (line-level pages); without them there is no crop CER."""
    return summarise(score_pages(pages, predict, recognise, read_lines, progress, desc), pages)


def _level(pages: list[EvalPage]) -> str:
    levels = {p.level for p in pages}
    return levels.pop() if len(levels) == 1 else ("mixed" if levels else "word")


def summarise(s: Scores, pages: list[EvalPage]) -> dict:
    out: dict = {"pages": s.pages, "level": _level(pages)}
    for lvl, det in sorted(s.det.items(), reverse=True):  # "word" before "line" if both
        out.update(
            {f"{lvl}_det_precision": det.precision, f"{lvl}_det_recall": det.recall, f"{lvl}_det_f1": det.f1}
        )
    if s.crop_cer.length:
        out.update(crop_cer=s.crop_cer.rate, crop_wer=s.crop_wer.rate)
    out.update(page_cer=s.page_cer.rate, page_wer=s.page_wer.rate, bow_f1=_bow_f1(s.bow))
    if "line" in s.det:
        out["unusable_lines"] = s.unusable_lines
        if (chance := _chance([ref for _, ref in s.bow])) is not None:
            out["bow_f1_chance"] = chance
    if len(s.bow_by_type) > 1:  # a split only where a set mixes line types (the dev set)
        for kind in sorted(s.bow_by_type):
            if kind in s.crop_cer_by_type:
                out[f"crop_cer_{kind}"] = s.crop_cer_by_type[kind].rate
            out[f"bow_f1_{kind}"] = _bow_f1(s.bow_by_type[kind])
        if (chance := _chance(s.ref_by_type.get("handwritten", []))) is not None:
            out["bow_f1_handwritten_chance"] = chance
    out["seconds_per_page"] = s.seconds / max(1, s.pages)
    return out


def format_table(results: dict[str, dict]) -> str:
    """Systems (or sets) as columns, metrics as rows; each column as wide as its name needs."""
    names = list(results)
    keys = [k for k in next(iter(results.values()))] if results else []
    for r in results.values():
        keys += [k for k in r if k not in keys]
    width = max([len(k) for k in keys] + [6])
    cols = [max(12, len(n)) for n in names]
    lines = [" ".join([f"{'metric':<{width}}"] + [f"{n:>{c}}" for n, c in zip(names, cols)])]
    for k in keys:
        cells = []
        for n, c in zip(names, cols):
            v = results[n].get(k, "")
            cells.append(f"{v:>{c}.4f}" if isinstance(v, float) else f"{str(v):>{c}}")
        lines.append(" ".join([f"{k:<{width}}"] + cells))
    return "\n".join(lines)


# ---- the pipeline as a reader of GT line crops ----------------------------------------------------


def _chunks(crop: np.ndarray, width: int) -> list[np.ndarray]:
    return [crop[:, x : x + width] for x in range(0, crop.shape[1], width)] or [crop]


def pipeline_line_reader(pipe) -> LineReader:
    """GT line crops read by the pipeline's recogniser. A line model (`pipe.line_mode`) reads the
    pipeline's own line crops (`pipe.line_crop`, `pipe.read_lines`). A word model reads at most
    `max_width` px per crop, and `line_crop` squeezes a line into that width (letters 3-4x too
    narrow): it reads the line at its own aspect ratio instead, in consecutive slices of that
    width joined without a space (a word cut at a slice edge costs a character or two)."""
    height, max_width = pipe.crop_height, pipe.max_width

    def read(gray: np.ndarray, quads: list[np.ndarray]) -> list[str]:
        if pipe.line_mode:
            lines = pipe.read_lines([pipe.line_crop(gray, q) for q in quads])
            return [" ".join(w[0] for w in words) for words in lines]
        slices = [_chunks(rectify(gray, q, height, 1 << 16), max_width) for q in quads]
        texts = iter(t for t, _ in pipe.recognise([p for parts in slices for p in parts]))
        return ["".join(next(texts) for _ in parts) for parts in slices]

    return read


def pipeline_predictor(pipe) -> tuple[Callable, CropReader, LineReader]:
    """(predict page, read word crops, read GT line crops) for a batch.pipeline.Pipeline."""
    predict = lambda image: pipe.process_pages([image])[0]  # noqa: E731
    recognise = lambda crops: [t for t, _ in pipe.recognise(crops)]  # noqa: E731
    return predict, recognise, pipeline_line_reader(pipe)


# ---- command -----------------------------------------------------------------------------------

SPLITS = {"val": SPLIT_FILE}  # jobs/splits/validation.txt


def configure(p) -> None:
    p.add_argument(
        "--manifest",
        required=True,
        action="append",
        help="manifest.jsonl, or a folder holding one set or several (*/manifest.jsonl); "
        "repeat for more sets. A set is named after the manifest's folder",
    )
    p.add_argument("--level", choices=["auto", "word", "line"], default="auto")
    p.add_argument("--line-types", help="line_types.jsonl (default: beside each manifest, if any)")
    p.add_argument("--limit", type=int, help="first N pages of each set only")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--pages-from",
        help="only the pages listed here (lines `set/image_file`, "
        "'#' comments); sets not listed are kept whole",
    )
    which.add_argument(
        "--split", choices=sorted(SPLITS), help="val: the validation pages of jobs/splits/validation.txt"
    )
    p.add_argument("--json", help="write every number here")
    options.add_arguments(p)  # --models, --device, engine and batches; --dpi, --image-side, limits


def load_sets(args) -> dict[str, list[EvalPage]]:
    decode = options.DecodeOptions.from_args(args)
    listed = None
    page_list = SPLITS[args.split] if getattr(args, "split", None) else getattr(args, "pages_from", None)
    if page_list:
        listed = read_page_list(page_list)
    sets = {}
    for name, manifest in find_manifests(args.manifest).items():
        wanted = listed.get(name) if listed is not None else None
        if listed is not None and wanted is None:
            print(f"htr eval: {name}: not in {page_list}, scored whole", file=sys.stderr)
        sets[name] = load_eval_set(
            manifest,
            args.line_types,
            args.level,
            args.limit,
            decode.image_side,
            wanted,
            name,
            dpi=decode.dpi,
            limits=decode.limits(),
        )
    return sets


def evaluate_sets(
    sets: dict[str, list[EvalPage]],
    predict: Callable[[np.ndarray], Page],
    recognise: CropReader | None = None,
    read_lines: LineReader | None = None,
    progress: bool = True,
) -> dict[str, dict]:
    """Metrics per set, and "overall" (micro-averaged over every page) when there are several."""
    results, total = {}, Scores()
    for name, pages in sets.items():
        s = score_pages(pages, predict, recognise, read_lines, progress, desc=name)
        results[name] = summarise(s, pages)
        total.merge(s)
    if len(sets) > 1:
        results["overall"] = summarise(total, [p for pages in sets.values() for p in pages])
    return results


def summary_line(name: str, m: dict) -> str:
    parts = [f"{m['pages']} pages"]
    for key, label in (
        ("line_det_f1", "line F1"),
        ("word_det_f1", "word F1"),
        ("crop_cer", "crop CER"),
        ("page_cer", "page CER"),
        ("bow_f1", "BoW F1"),
    ):
        if key in m:
            parts.append(f"{label} {m[key]:.3f}")
    return f"htr eval: {name}: " + ", ".join(parts)


def main(args) -> int:
    from batch.core.errors import EXIT_BAD_ARGS
    from batch.core.manifest import ManifestError

    try:
        sets = load_sets(args)
    except (FileNotFoundError, ManifestError) as e:  # say which file, not a traceback
        print(f"htr eval: {e}", file=sys.stderr)
        return EXIT_BAD_ARGS
    pipe = options.PipelineOptions.from_args(args).load()
    predict, recognise, read_lines = pipeline_predictor(pipe)
    results = evaluate_sets(sets, predict, recognise, read_lines)
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "model_version": pipe.model_version,
                    "split": args.split or args.pages_from,
                    "sets": {n: m for n, m in results.items() if n != "overall"},
                    "overall": results.get("overall") or next(iter(results.values()), {}),
                },
                indent=1,
            )
        )
    name = "overall" if "overall" in results else next(iter(results), "")
    if name:
        print(f"{summary_line(name, results[name])} ({pipe.model_version}, {len(sets)} set(s))")
    return 0
