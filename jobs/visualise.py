"""Draw word polygons and their text over the pages, to check labels or model output by eye.

    htr visualise data/manifest.jsonl --out viz/      # ground truth (our manifest format)
    htr visualise out/ --out viz/                     # run output: out/documents/*.json
    htr visualise out/documents/<doc_id>.json --out viz/

One PNG per page. Handwritten words are outlined in red, printed ones in green, model words
coloured by confidence (red = unsure, green = sure); each word's text is written above it and
line numbers are shown at the left of each line.
"""
from __future__ import annotations

import argparse
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from batch.errors import EXIT_BAD_ARGS, EXIT_OK, EXIT_PARTIAL, HtrError, InputError

MAX_SIDE = 2200   # pages are drawn at most this big: enough to read, small to write


@dataclass
class Box:
    """One word to draw: a polygon in page pixels, its text and a colour."""
    polygon: list[tuple[float, float]]
    text: str
    line_idx: int
    colour: tuple[int, int, int]


@dataclass
class PageView:
    name: str                 # output file stem
    image: np.ndarray         # RGB uint8
    boxes: list[Box]
    scale: float = 1.0        # image pixels per polygon unit


# ---- sources --------------------------------------------------------------------------------------

def _read_image(uri: str) -> Iterator[np.ndarray]:
    from batch import storage
    from transforms.rasterise import iter_pages
    yield from iter_pages(storage.read_bytes(uri))


Loader = Callable[[], list[PageView]]  # reads one image or document when called


def manifest_loaders(path: Path) -> list[Loader]:
    from jobs.manifests import read_manifest
    samples = read_manifest(path)  # a broken manifest fails here, as a whole
    return [functools.partial(_sample_views, i, s, path) for i, s in enumerate(samples)]


def _sample_views(i: int, sample, path: Path) -> list[PageView]:
    from jobs.manifests import resolve_source
    image = next(_read_image(resolve_source(sample, path)))
    boxes = [Box([(p["x"], p["y"]) for p in a.polygon], a.text, a.line_idx,
                 (220, 30, 30) if a.type == "H" else (20, 150, 40)) for a in sample.annotations]
    return [PageView(f"{i:05d}_{Path(sample.source_ref).stem}", image, boxes)]


def _confidence_colour(c: float) -> tuple[int, int, int]:
    c = float(np.clip(c, 0, 1))
    return int(230 * (1 - c)), int(170 * c), 40


def document_views(path: Path) -> list[PageView]:
    """Pages of one output document; polygons are in the pipeline's page pixels, which may differ
    from a re-rasterised PDF page, so they are scaled by the width ratio."""
    from batch.schema import DocumentRecord
    try:
        doc = DocumentRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: not an htr output document ({e})", stage="visualise") from e
    out = []
    for page, image in zip(doc.pages, _read_image(doc.source_uri.removeprefix("file://"))):
        boxes = [Box([(p.x, p.y) for p in w.polygon], w.text, w.line_idx, _confidence_colour(w.confidence))
                 for w in page.words]
        scale = image.shape[1] / page.width if page.width else 1.0
        out.append(PageView(f"{doc.doc_id}_p{page.page:03d}", image, boxes, scale))
    return out


def loaders(source: str) -> list[Loader]:
    """What to draw from a manifest (.jsonl/.manifest), an output folder or one output document
    (.json). A source that is not there or holds nothing raises InputError here."""
    p = Path(source)
    if p.is_dir():
        docs = sorted((p / "documents").glob("*.json")) if (p / "documents").is_dir() else []
        if docs:
            return [functools.partial(document_views, d) for d in docs]
        if (p / "manifest.jsonl").exists():
            return manifest_loaders(p / "manifest.jsonl")
        raise InputError(f"{p}: no documents/*.json and no manifest.jsonl", stage="visualise")
    if not p.exists():
        raise InputError(f"{source}: not found", stage="visualise")
    return [functools.partial(document_views, p)] if p.suffix == ".json" else manifest_loaders(p)


# ---- drawing --------------------------------------------------------------------------------------

def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default()


def draw(view: PageView) -> Image.Image:
    """The page with its polygons and texts, shrunk to at most MAX_SIDE."""
    img = Image.fromarray(view.image).convert("RGB")
    f = min(1.0, MAX_SIDE / max(img.size))
    if f < 1.0:
        img = img.resize((max(1, int(img.width * f)), max(1, int(img.height * f))), Image.LANCZOS)
    s = f * view.scale
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(overlay)
    heights = [max(y for _, y in b.polygon) - min(y for _, y in b.polygon) for b in view.boxes] or [20]
    font = _font(int(np.clip(np.median(heights) * s * 0.45, 9, 28)))
    first_in_line: dict[int, tuple[float, float]] = {}
    for b in view.boxes:
        pts = [(x * s, y * s) for x, y in b.polygon]
        d.polygon(pts, outline=b.colour + (255,), width=max(1, int(2 * f + 0.5)))
        x0, y0 = min(x for x, _ in pts), min(y for _, y in pts)
        tb = d.textbbox((x0, y0), b.text, font=font, anchor="lb")
        d.rectangle(tb, fill=(255, 255, 255, 190))
        d.text((x0, y0), b.text, font=font, fill=b.colour + (255,), anchor="lb")
        if b.line_idx not in first_in_line or x0 < first_in_line[b.line_idx][0]:
            first_in_line[b.line_idx] = (x0, (y0 + max(y for _, y in pts)) / 2)
    for idx, (x, y) in first_in_line.items():
        d.text((max(0, x - 4), y), str(idx), font=font, fill=(40, 60, 200, 255), anchor="rm")
    return Image.alpha_composite(img.convert("RGBA"), overlay).convert("RGB")


def visualise(source: str, out_dir: str | Path) -> tuple[int, int]:
    """Write one PNG per page; returns (pages written, images or documents that failed)."""
    from tqdm import tqdm
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = failed = 0
    for load in tqdm(loaders(source), desc="visualise", unit="image"):
        try:
            views = load()
        except HtrError as e:  # one unreadable image must not stop the rest
            print(f"visualise: skipped: {e.kind}: {e}")
            failed += 1
            continue
        for view in views:
            draw(view).save(out / f"{view.name}.png")
            written += 1
    return written, failed


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="MANIFEST_OR_OUTPUT",
                        help="manifest.jsonl, an htr output folder, or one documents/*.json")
    parser.add_argument("--out", required=True, help="folder for the PNGs")


def main(args: argparse.Namespace) -> int:
    try:
        written, failed = visualise(args.source, args.out)
    except HtrError as e:
        print(f"visualise: {e.kind}: {e}")
        return EXIT_BAD_ARGS
    print(f"visualise: {written} pages drawn, {failed} failed -> {args.out}")
    return EXIT_PARTIAL if failed else EXIT_OK
