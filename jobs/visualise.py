"""Draw word polygons and their text over the pages, to check labels or model output by eye.

    htr visualise data/manifest.jsonl --out viz/      # ground truth (our manifest format)
    htr visualise out/ --out viz/                     # run output: out/documents/*.json
    htr visualise out/documents/<doc_id>.json --out viz/

One PNG per page. Handwritten words are outlined in red, printed ones in green, model words
coloured by confidence (red = unsure, green = sure); each word's text is written above it and
line numbers are shown at the left of each line.

And one HTML page per document (or manifest image), for review in a browser: the page images with
every word's box over them; hovering a word shows its text and confidence, and words below
--low-confidence are highlighted. Each file stands alone (images inlined), so it can be mailed or
put on a share as it is.
"""

from __future__ import annotations

import argparse
import base64
import functools
import html
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from batch.core.errors import EXIT_BAD_ARGS, EXIT_OK, EXIT_PARTIAL, HtrError, InputError

MAX_SIDE = 2200  # pages are drawn at most this big: enough to read, small to write


@dataclass
class Box:
    """One word to draw: a polygon in page pixels, its text and a colour."""

    polygon: list[tuple[float, float]]
    text: str
    line_idx: int
    colour: tuple[int, int, int]
    confidence: float | None = None  # model output; None for ground truth


@dataclass
class PageView:
    name: str  # output file stem
    image: np.ndarray  # RGB uint8
    boxes: list[Box]
    scale: float = 1.0  # image pixels per polygon unit
    document: str = ""  # the HTML file (stem) the page belongs to
    title: str = ""  # shown at the top of that file


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
    boxes = [
        Box(
            [(p["x"], p["y"]) for p in a.polygon],
            a.text,
            a.line_idx,
            (220, 30, 30) if a.type == "H" else (20, 150, 40),
        )
        for a in sample.annotations
    ]
    name = f"{i:05d}_{Path(sample.source_ref).stem}"
    return [PageView(name, image, boxes, document=name, title=sample.source_ref)]


def _confidence_colour(c: float) -> tuple[int, int, int]:
    c = float(np.clip(c, 0, 1))
    return int(230 * (1 - c)), int(170 * c), 40


def document_views(path: Path) -> list[PageView]:
    """Pages of one output document; polygons are in the pipeline's page pixels, which may differ
    from a re-rasterised PDF page, so they are scaled by the width ratio."""
    from batch.core.schema import DocumentRecord

    try:
        doc = DocumentRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: not an htr output document ({e})", stage="visualise") from e
    out = []
    for page, image in zip(doc.pages, _read_image(doc.source_uri.removeprefix("file://"))):
        boxes = [
            Box(
                [(p.x, p.y) for p in w.polygon],
                w.text,
                w.line_idx,
                _confidence_colour(w.confidence),
                w.confidence,
            )
            for w in page.words
        ]
        scale = image.shape[1] / page.width if page.width else 1.0
        out.append(
            PageView(
                f"{doc.doc_id}_p{page.page:03d}",
                image,
                boxes,
                scale,
                doc.doc_id,
                f"{doc.source_uri} ({doc.model_version})",
            )
        )
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


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default()


def draw(view: PageView) -> Image.Image:
    """The page with its polygons and texts, shrunk to at most MAX_SIDE."""
    img = Image.fromarray(view.image).convert("RGB")
    f = min(1.0, MAX_SIDE / max(img.size))
    if f < 1.0:
        img = img.resize((max(1, int(img.width * f)), max(1, int(img.height * f))), Image.Resampling.LANCZOS)
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


# ---- HTML review page ------------------------------------------------------------------------------

LOW_CONFIDENCE = 0.5

_STYLE = """
body { font: 14px sans-serif; margin: 12px; background: #eee; }
.page { position: relative; display: inline-block; margin: 0 12px 12px 0; box-shadow: 0 1px 4px #888; }
.page img { display: block; }
.page svg { position: absolute; left: 0; top: 0; }
polygon.word { fill: rgba(30, 110, 230, 0.10); stroke: rgb(30, 110, 230); stroke-width: 2; }
polygon.word.low { fill: rgba(255, 0, 0, 0.35); stroke: rgb(220, 0, 0); stroke-width: 3; }
polygon.word:hover { fill: rgba(255, 200, 0, 0.45); }
#tip { position: fixed; display: none; pointer-events: none; background: #111; color: #fff;
       padding: 4px 8px; border-radius: 3px; font-size: 16px; white-space: pre; }
"""

_SCRIPT = """
const tip = document.getElementById("tip");
for (const w of document.querySelectorAll("polygon.word")) {
  w.addEventListener("mousemove", e => {
    const conf = w.dataset.conf === "" ? "" : "  confidence " + Number(w.dataset.conf).toFixed(2);
    tip.textContent = w.dataset.text + conf;
    tip.style.left = (e.clientX + 14) + "px";
    tip.style.top = (e.clientY + 14) + "px";
    tip.style.display = "block";
  });
  w.addEventListener("mouseleave", () => { tip.style.display = "none"; });
}
"""


def _data_uri(view: PageView) -> tuple[str, int, int]:
    """The page image, shrunk to at most MAX_SIDE, as an inline JPEG."""
    img = Image.fromarray(view.image).convert("RGB")
    f = min(1.0, MAX_SIDE / max(img.size))
    if f < 1.0:
        img = img.resize((max(1, int(img.width * f)), max(1, int(img.height * f))), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode(), img.width, img.height


def _page_html(view: PageView, low: float) -> str:
    uri, w, h = _data_uri(view)
    s = w / view.image.shape[1] * view.scale  # polygon units -> displayed pixels
    words = []
    for b in view.boxes:
        unsure = b.confidence is not None and b.confidence < low
        pts = " ".join(f"{x * s:.1f},{y * s:.1f}" for x, y in b.polygon)
        conf = "" if b.confidence is None else f"{b.confidence:.4f}"
        label = b.text + (f" ({b.confidence:.2f})" if b.confidence is not None else "")
        words.append(
            f'<polygon class="word{" low" if unsure else ""}" points="{pts}" '
            f'data-text="{html.escape(b.text)}" data-conf="{conf}" data-line="{b.line_idx}">'
            f"<title>{html.escape(label)}</title></polygon>"
        )
    return (
        f'<div class="page" id="{html.escape(view.name)}"><img src="{uri}" width="{w}" height="{h}" alt="">'
        f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}">{"".join(words)}</svg></div>'
    )


def document_html(views: list[PageView], low: float = LOW_CONFIDENCE) -> str:
    """One document's review page (see the module doc)."""
    boxes = [b for v in views for b in v.boxes]
    unsure = sum(b.confidence is not None and b.confidence < low for b in boxes)
    title = html.escape(views[0].title or views[0].document) if views else ""
    head = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_STYLE}</style></head><body>\n<h1>{title}</h1>\n"
        f"<p>{len(views)} pages, {len(boxes)} words, {unsure} below confidence {low:.2f} "
        f"(highlighted red); hover a word for its text and confidence.</p>\n"
    )
    pages = "\n".join(_page_html(v, low) for v in views)
    return f'{head}{pages}\n<div id="tip"></div>\n<script>{_SCRIPT}</script>\n</body></html>\n'


def visualise(source: str, out_dir: str | Path, low: float = LOW_CONFIDENCE) -> tuple[int, int]:
    """Write one PNG per page and one HTML page per document; returns (pages written, images or
    documents that failed)."""
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
        if views:
            (out / f"{views[0].document or views[0].name}.html").write_text(
                document_html(views, low), encoding="utf-8"
            )
    return written, failed


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="MANIFEST_OR_OUTPUT",
        help="manifest.jsonl, an htr output folder, or one documents/*.json",
    )
    parser.add_argument("--out", required=True, help="folder for the PNGs and HTML pages")
    parser.add_argument(
        "--low-confidence",
        type=float,
        default=LOW_CONFIDENCE,
        help="words below this confidence are highlighted in the HTML (default: %(default)s)",
    )


def main(args: argparse.Namespace) -> int:
    try:
        written, failed = visualise(args.source, args.out, args.low_confidence)
    except HtrError as e:
        print(f"visualise: {e.kind}: {e}")
        return EXIT_BAD_ARGS
    print(f"visualise: {written} pages drawn, {failed} failed -> {args.out}")
    return EXIT_PARTIAL if failed else EXIT_OK
