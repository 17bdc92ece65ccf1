"""Labelled-data formats: our manifest, GNHK's native layout and SageMaker Ground Truth.

Our manifest is JSON lines, one page per line:
    {"source-ref": "pages/p1.jpg",
     "annotations": {"texts": [{"text": "Dear", "polygon": [{"x": 10, "y": 20}, ... 4 points],
                                "line_idx": 0, "type": "H"}]}}
`source-ref` is relative to the manifest's folder, absolute, or s3:// (kept as a string here;
batch.storage reads it). Polygons run clockwise from top-left in page pixels; "type" is "H"
(handwritten) or "P" (printed).

Converters bring other formats to it: GNHK (one JSON per image), Ground Truth output manifests
(bounding-box and polygon tasks), and the PAGE XML and ALTO that Transkribus, eScriptorium, kraken
and OCR-D export (`convert_xml`: a line-level manifest of line polygons, baselines and transcriptions,
or a word-level one where the files have words), so `htr train` fine-tunes on an archive's own
corrected pages:

    python -m jobs.manifests from-xml data/archive-export        # -> data/archive-export/manifest.jsonl

`labeling_job_request` builds a CreateLabelingJob request for new images in S3 without calling AWS.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from batch.core.manifest import (
    LEVELS,
    TYPES,
    Annotation,
    ManifestError,
    Sample,
    dumps_manifest,
    parse_point,
    parse_sample,
)

# ---- our manifest --------------------------------------------------------------------------------


def _read_text(path: str | Path) -> str:
    p = str(path)
    if p.startswith("s3://"):
        from batch import storage

        return storage.read_bytes(p).decode("utf-8")
    try:
        return Path(p.removeprefix("file://")).read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ManifestError(f"manifest not found: {p}") from e
    except UnicodeDecodeError as e:
        raise ManifestError(f"manifest is not UTF-8 text: {p}") from e


def _json_lines(path: str | Path) -> Iterator[tuple[Any, str]]:
    """(object, "path:line") for each non-blank line of a JSON-lines file."""
    for n, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line), f"{path}:{n}"
        except json.JSONDecodeError as e:
            raise ManifestError(f"{path}:{n}: not JSON ({e.msg})") from e


def read_manifest(path: str | Path) -> list[Sample]:
    """All samples of a manifest (local path, file:// or s3://). Blank lines are skipped."""
    return [parse_sample(obj, where) for obj, where in _json_lines(path)]


def write_manifest(samples: Iterable[Sample], path: str | Path) -> Path | str:
    """Write JSON lines to a local path (parents created) or an s3:// URI; returns the path."""
    text = dumps_manifest(samples)
    if str(path).startswith("s3://"):
        from batch import storage

        storage.write_bytes(str(path), text.encode("utf-8"), "application/jsonlines")
        return str(path)
    p = Path(str(path).removeprefix("file://"))
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p


def resolve_source(sample: Sample, manifest_path: str | Path) -> str:
    """Where the image is: s3:// and absolute refs as they are, relative ones next to the manifest."""
    ref = sample.source_ref
    if ref.startswith("s3://") or os.path.isabs(ref.removeprefix("file://")):
        return ref
    base = str(manifest_path)
    if base.startswith("s3://"):
        return posixpath.join(posixpath.dirname(base), ref)
    return os.path.join(os.path.dirname(base.removeprefix("file://")), ref)


def find_manifests(paths: list[str | Path]) -> dict[str, Path]:
    """Set name (the manifest's folder name) -> manifest, for manifest files and for folders that
    hold one set (manifest.jsonl) or several (*/manifest.jsonl)."""
    found: dict[str, Path] = {}
    for p in map(Path, paths):
        if p.is_dir():
            manifests = (
                [p / "manifest.jsonl"]
                if (p / "manifest.jsonl").is_file()
                else sorted(p.glob("*/manifest.jsonl"))
            )
            if not manifests:
                raise FileNotFoundError(f"no manifest.jsonl in {p} or its sub-folders")
        else:
            manifests = [p]
        for m in manifests:
            name, n = m.parent.resolve().name, 2
            while name in found:  # two sets in folders of the same name stay apart
                name, n = f"{m.parent.resolve().name}#{n}", n + 1
            found[name] = m
    return found


def split_manifest(
    samples: list[Sample], test_fraction: float = 0.2, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """Deterministic (train, test) split by seed; at least one test sample when there are two or more."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError("test_fraction must be in [0, 1)")
    order = np.random.default_rng(seed).permutation(len(samples))
    n_test = int(round(len(samples) * test_fraction))
    if test_fraction > 0 and len(samples) >= 2:
        n_test = max(1, n_test)
    test_idx = set(order[:n_test].tolist())
    train = [s for i, s in enumerate(samples) if i not in test_idx]
    test = [s for i, s in enumerate(samples) if i in test_idx]
    return train, test


# ---- GNHK ----------------------------------------------------------------------------------------

GNHK_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


def gnhk_annotations(items: Any, where: str) -> list[Annotation]:
    """GNHK's per-image list of {"text", "polygon": {"x0","y0",...,"x3","y3"}, "line_idx", "type"}."""
    if not isinstance(items, list):
        raise ManifestError(f"{where}: GNHK file must hold a list of words")
    out = []
    for i, it in enumerate(items):
        try:
            poly = it["polygon"]
            pts = [{"x": float(poly[f"x{k}"]), "y": float(poly[f"y{k}"])} for k in range(4)]
            kind = it.get("type", "H")
            out.append(
                Annotation(str(it["text"]), pts, int(it.get("line_idx", 0)), kind if kind in TYPES else "H")
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestError(f"{where} word {i}: not a GNHK word ({e})") from e
    return out


def gnhk_to_samples(folder: str | Path) -> list[Sample]:
    """A GNHK folder (image + same-stem .json pairs) as samples, source-ref relative to the folder."""
    root = Path(folder)
    if not root.is_dir():
        raise ManifestError(f"GNHK folder not found: {root}")
    samples = []
    for js in sorted(root.rglob("*.json")):
        image = next((js.with_suffix(e) for e in GNHK_IMAGE_EXTS if js.with_suffix(e).exists()), None)
        if image is None:
            continue  # not an annotation file (or its image is missing)
        try:
            items = json.loads(js.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ManifestError(f"{js}: not JSON") from e
        samples.append(Sample(image.relative_to(root).as_posix(), gnhk_annotations(items, str(js))))
    if not samples:
        raise ManifestError(f"no GNHK image/JSON pairs under {root}")
    return samples


def convert_gnhk(folder: str | Path, manifest_path: str | Path | None = None) -> Path | str:
    """Write `folder`/manifest.jsonl (or manifest_path, source-refs made relative to it)."""
    root = Path(folder)
    out = Path(manifest_path) if manifest_path else root / "manifest.jsonl"
    samples = gnhk_to_samples(root)
    rel = os.path.relpath(root.resolve(), out.parent.resolve())
    if rel != ".":
        samples = [Sample(Path(rel, s.source_ref).as_posix(), s.annotations) for s in samples]
    return write_manifest(samples, out)


def samples_to_gnhk(sample: Sample) -> list[dict[str, Any]]:
    """The inverse for one page (useful to hand data to GNHK tools): quads only."""
    out = []
    for a in sample.annotations:
        pts = a.polygon[:4]
        poly = {f"{c}{k}": pts[k][c] for k in range(len(pts)) for c in ("x", "y")}
        out.append({"text": a.text, "polygon": poly, "line_idx": a.line_idx, "type": a.type})
    return out


# ---- PAGE XML and ALTO (Transkribus, eScriptorium, kraken, OCR-D exports) ---------------------------
#
# Read by local element names, so every PAGE version (2010..2019, Transkribus writes 2013-07-15) and
# ALTO v2..v4 (or no namespace) parse alike.


def _local(el: Any) -> str:
    return el.tag.rsplit("}", 1)[-1] if isinstance(el.tag, str) else ""


def _kids(el: Any, name: str) -> list[Any]:
    return [c for c in el if _local(c) == name]


def _kid(el: Any, name: str) -> Any:
    return next(iter(_kids(el, name)), None)


def _descendants(el: Any, name: str) -> list[Any]:
    return [c for c in el.iter() if _local(c) == name]


def _points(text: str | None, where: str) -> list[dict[str, float]]:
    """'x1,y1 x2,y2 ...' (PAGE, ALTO) or 'x1 y1 x2 y2 ...' (older ALTO) -> points."""
    nums = (text or "").replace(",", " ").split()
    try:
        values = [float(v) for v in nums]
    except ValueError as e:
        raise ManifestError(f"{where}: bad points {text!r}") from e
    if len(values) % 2:
        raise ManifestError(f"{where}: odd number of coordinates in {text!r}")
    return [{"x": values[k], "y": values[k + 1]} for k in range(0, len(values), 2)]


def _box(x: float, y: float, w: float, h: float) -> list[dict[str, float]]:
    return _box_polygon(x, y, w, h)


@dataclass
class XmlLine:
    """One text line of an archive's XML, in page pixels."""

    text: str
    polygon: list[dict[str, float]]
    baseline: list[dict[str, float]] | None
    words: list[tuple[str, list[dict[str, float]]]]  # (text, polygon), where the file has words


@dataclass
class XmlPage:
    image: str  # as the file names it
    width: int
    height: int
    lines: list[XmlLine]


# ---- PAGE


def _page_text(el: Any) -> str:
    """The element's own TextEquiv (the lowest index when there are several)."""
    equivs = _kids(el, "TextEquiv")
    equivs.sort(key=lambda e: int(e.get("index", 0)) if str(e.get("index", "0")).lstrip("-").isdigit() else 0)
    for te in equivs:
        u = _kid(te, "Unicode")
        if u is not None and u.text is not None:
            return u.text
    return ""


def _page_coords(el: Any, where: str) -> list[dict[str, float]]:
    c = _kid(el, "Coords")
    if c is None:
        return []
    if c.get("points") is not None:
        return _points(c.get("points"), where)
    return [{"x": float(p.get("x")), "y": float(p.get("y"))} for p in _kids(c, "Point")]  # PAGE 2010


def _custom_index(el: Any) -> int | None:
    import re

    m = re.search(r"readingOrder\s*\{\s*index\s*:\s*(\d+)", el.get("custom", ""))
    return int(m.group(1)) if m else None


def _reading_order(page: Any) -> dict[str, int]:
    """Region id -> position in the page's ReadingOrder (nested groups flattened)."""
    ro = _kid(page, "ReadingOrder")
    refs = [r for r in ro.iter() if _local(r) in ("RegionRefIndexed", "RegionRef")] if ro is not None else []
    return {r.get("regionRef"): k for k, r in enumerate(refs)}


def _read_page_xml(root: Any, where: str) -> list[XmlPage]:
    page = _kid(root, "Page")
    if page is None:
        raise ManifestError(f"{where}: PAGE XML without a Page")
    order = _reading_order(page)
    regions = _descendants(page, "TextRegion")
    regions = sorted(enumerate(regions), key=lambda kr: order.get(kr[1].get("id"), len(order) + kr[0]))
    lines = []
    for _, region in regions:
        own = list(enumerate(_kids(region, "TextLine")))  # Transkribus' index first, else file order
        own.sort(key=lambda kl: (_custom_index(kl[1]) is None, _custom_index(kl[1]) or 0, kl[0]))
        for _, ln in own:
            text = _page_text(ln)
            words = [(_page_text(w), _page_coords(w, where)) for w in _kids(ln, "Word")]
            if not text and words:
                text = " ".join(t for t, _ in words if t)
            base = _kid(ln, "Baseline")
            lines.append(
                XmlLine(
                    text,
                    _page_coords(ln, where),
                    _points(base.get("points"), where) if base is not None else None,
                    words,
                )
            )
    try:
        size = int(float(page.get("imageWidth"))), int(float(page.get("imageHeight")))
    except (TypeError, ValueError) as e:
        raise ManifestError(f"{where}: Page needs imageWidth and imageHeight") from e
    return [XmlPage(page.get("imageFilename", ""), *size, lines)]


# ---- ALTO


def _alto_box(el: Any, where: str) -> list[dict[str, float]]:
    shape = _kid(el, "Shape")
    poly = _kid(shape, "Polygon") if shape is not None else None
    if poly is not None and poly.get("POINTS"):
        return _points(poly.get("POINTS"), where)
    try:
        return _box(*(float(el.get(k)) for k in ("HPOS", "VPOS", "WIDTH", "HEIGHT")))
    except (TypeError, ValueError):
        return []


def _alto_baseline(el: Any, box: list[dict[str, float]], where: str) -> list[dict[str, float]] | None:
    """ALTO 4's BASELINE points; ALTO 2/3's single number: a level line at that height."""
    value = (el.get("BASELINE") or "").strip()
    if not value:
        return None
    try:
        y = float(value)
    except ValueError:
        return _points(value, where)
    xs = [p["x"] for p in box] or [0.0]
    return [{"x": min(xs), "y": y}, {"x": max(xs), "y": y}]


def _read_alto(root: Any, where: str) -> list[XmlPage]:
    unit = (root.findtext(".//{*}MeasurementUnit") or "pixel").strip()
    if unit != "pixel":
        raise ManifestError(f"{where}: ALTO in {unit!r}; only pixel coordinates can be read")
    image = (root.findtext(".//{*}sourceImageInformation/{*}fileName") or "").strip()
    pages = []
    for page in _descendants(root, "Page"):
        lines = []
        for ln in _descendants(page, "TextLine"):
            box = _alto_box(ln, where)
            words = [(s.get("CONTENT", ""), _alto_box(s, where)) for s in _kids(ln, "String")]
            text = " ".join(t for t, _ in words if t)
            lines.append(XmlLine(text, box, _alto_baseline(ln, box, where), words))
        try:
            size = int(float(page.get("WIDTH"))), int(float(page.get("HEIGHT")))
        except (TypeError, ValueError) as e:
            raise ManifestError(f"{where}: ALTO Page needs WIDTH and HEIGHT in pixels") from e
        pages.append(XmlPage(image, *size, lines))
    return pages


def read_archive_xml(data: bytes, where: str = "xml") -> list[XmlPage]:
    """A PAGE XML or ALTO file's pages (PAGE: one; ALTO: one per Page element)."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise ManifestError(f"{where}: not XML ({e})") from e
    kind = _local(root)
    if kind == "PcGts":
        return _read_page_xml(root, where)
    if kind == "alto":
        return _read_alto(root, where)
    raise ManifestError(f"{where}: neither PAGE XML (PcGts) nor ALTO (alto) but <{kind}>")


def xml_page_sample(page: XmlPage, source_ref: str, level: str = "line") -> Sample:
    """Our manifest entry for one page: its lines (polygon, baseline, text) or, at word level, the
    words the file has (lines without words are left out: there is nothing to place them by).
    Lines without a transcription or a polygon are dropped."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
    anns: list[Annotation] = []
    for idx, ln in enumerate(page.lines):
        if level == "line":
            if ln.text.strip() and len(ln.polygon) >= 3:
                anns.append(Annotation(ln.text, ln.polygon, idx, "H", ln.baseline))
            continue
        anns += [Annotation(t, poly, idx) for t, poly in ln.words if t.strip() and len(poly) >= 3]
    return Sample(source_ref, anns, level)


XML_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".jp2", ".bmp", ".webp")


def _find_image(xml_path: Path, named: str) -> Path:
    """The page image an XML file names: next to it, one folder up (Transkribus puts its XML in
    page/, eScriptorium and kraken next to the images), or by the XML's own stem."""
    name = Path(named.replace("\\", "/")).name if named else ""
    folders = [xml_path.parent, xml_path.parent.parent]
    candidates = [f / named for f in folders if named] + [f / name for f in folders if name]
    candidates += [f / (xml_path.stem + e) for f in folders for e in XML_IMAGE_EXTS]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise ManifestError(f"{xml_path}: its image {named or xml_path.stem!r} is not next to it")
    return found


def _image_size(path: Path) -> tuple[int, int]:
    """The image's size as the trainers see it (upright: EXIF orientation applied, as cv2.imread
    and transforms.rasterise do)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except (OSError, UnidentifiedImageError) as e:
        raise ManifestError(f"{path}: not a page image the trainers can read ({e})") from e
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _fit_to_image(page: XmlPage, size: tuple[int, int], where: str) -> XmlPage:
    """The page's coordinates on its image: an export names the size its coordinates refer to
    (imageWidth/imageHeight, ALTO's Page WIDTH/HEIGHT); an image exported smaller or larger (a
    reduced download) gets them scaled. A different shape means a different image: refused."""
    w, h = size
    if (page.width, page.height) == (w, h):
        return page
    if page.width <= 0 or page.height <= 0:
        raise ManifestError(f"{where}: the XML gives no page size ({page.width}x{page.height})")
    sx, sy = w / page.width, h / page.height
    if abs(sx / sy - 1) > 0.02:
        raise ManifestError(
            f"{where}: the XML describes a {page.width}x{page.height} image, the image is {w}x{h} "
            "(another image, or turned?)"
        )

    def fit(points: list[dict[str, float]]) -> list[dict[str, float]]:
        return [{"x": round(p["x"] * sx, 2), "y": round(p["y"] * sy, 2)} for p in points]

    lines = [
        XmlLine(
            ln.text,
            fit(ln.polygon),
            fit(ln.baseline) if ln.baseline is not None else None,
            [(t, fit(poly)) for t, poly in ln.words],
        )
        for ln in page.lines
    ]
    return XmlPage(page.image, w, h, lines)


def convert_xml(
    root: str | Path, manifest_path: str | Path | None = None, level: str = "line"
) -> list[Sample]:
    """Every PAGE XML / ALTO file under `root` (a folder, or one file) as manifest samples, written
    to manifest_path (default root/manifest.jsonl) with source-refs relative to it."""
    root = Path(root)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*.xml") if p.is_file())
    if not files:
        raise ManifestError(f"no .xml files under {root}")
    out = (
        Path(manifest_path) if manifest_path else (root.parent if root.is_file() else root) / "manifest.jsonl"
    )
    samples = []
    for xml_path in files:
        pages = read_archive_xml(xml_path.read_bytes(), str(xml_path))
        images = [_find_image(xml_path, page.image) for page in pages]
        if len(set(images)) < len(images):  # ALTO names one file for all its Page elements
            raise ManifestError(
                f"{xml_path}: {len(pages)} pages over one image ({images[0].name}); a manifest entry "
                "is one page image: export one XML file per page image"
            )
        for page, image in zip(pages, images):
            page = _fit_to_image(page, _image_size(image), f"{xml_path} (image {image.name})")
            ref = Path(os.path.relpath(image.resolve(), out.parent.resolve())).as_posix()
            samples.append(xml_page_sample(page, ref, level))
    write_manifest(samples, out)
    return samples


# ---- SageMaker Ground Truth ----------------------------------------------------------------------


def _box_polygon(left: float, top: float, width: float, height: float) -> list[dict[str, float]]:
    return [
        {"x": left, "y": top},
        {"x": left + width, "y": top},
        {"x": left + width, "y": top + height},
        {"x": left, "y": top + height},
    ]


def _label_attribute(obj: dict[str, Any], label_attribute: str | None) -> str:
    if label_attribute:
        if label_attribute not in obj:
            raise ManifestError(f"label attribute {label_attribute!r} not in line")
        return label_attribute
    names = [k for k in obj if k != "source-ref" and f"{k}-metadata" in obj and isinstance(obj[k], dict)]
    if not names:
        raise ManifestError("no Ground Truth label attribute (a key with a matching '-metadata') found")
    return names[0]


def _gt_text(ann: dict[str, Any], class_map: dict[str, str], text_attribute: str) -> str:
    """Transcription from a per-object attribute if the job collected one, else the class name."""
    attrs = ann.get("label-category-attributes") or ann.get("attributes") or {}
    for source in (attrs, ann):
        if isinstance(source, dict) and source.get(text_attribute) not in (None, ""):
            return str(source[text_attribute])
    if "label" in ann:
        return str(ann["label"])
    return str(class_map.get(str(ann.get("class_id")), "%NA%"))


def _gt_vertices(ann: dict[str, Any], where: str) -> list[dict[str, float]]:
    if all(k in ann for k in ("left", "top", "width", "height")):
        return _box_polygon(float(ann["left"]), float(ann["top"]), float(ann["width"]), float(ann["height"]))
    pts = ann.get("vertices") or ann.get("points") or ann.get("polygon")
    if isinstance(pts, list) and len(pts) >= 3:
        return [parse_point(p, where) for p in pts]
    raise ManifestError(f"{where}: annotation has neither a box nor >= 3 vertices")


def _worker_output(value: Any, where: str) -> dict[str, Any]:
    """The labels inside a Ground Truth value. Built-in tasks store them directly; a custom task
    (a crowd-polygon template) without a consolidation Lambda stores each worker's form output as a
    JSON string under annotationsFromAllWorkers[i].annotationData.content: the first worker's is used."""
    if not isinstance(value, dict):
        raise ManifestError(f"{where}: the label value is not an object")
    workers = value.get("annotationsFromAllWorkers")
    if isinstance(workers, list) and workers:
        try:
            value = json.loads(workers[0]["annotationData"]["content"])
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestError(f"{where}: unreadable annotationsFromAllWorkers[0]: {e}") from e
    if "annotatedResult" in value:  # the crowd-polygon element's default name
        value = value["annotatedResult"]
    elif not any(k in value for k in ("annotations", "polygons")):  # a form field named otherwise
        value = next((v for v in value.values() if isinstance(v, dict) and "polygons" in v), value)
    return value


def ground_truth_sample(
    obj: dict[str, Any],
    label_attribute: str | None = None,
    text_attribute: str = "transcription",
    where: str = "line",
) -> Sample:
    """One Ground Truth output line (bounding-box, polygon or crowd-polygon result) as a Sample.

    Boxes become 4-point polygons; polygon vertices are kept as drawn. Without a transcription
    attribute the class name is the text (e.g. a single "word" class gives detection-only data).
    """
    if not isinstance(obj, dict) or not isinstance(obj.get("source-ref"), str):
        raise ManifestError(f"{where}: needs a string 'source-ref'")
    name = _label_attribute(obj, label_attribute)
    value, meta = obj[name], obj.get(f"{name}-metadata", {}) or {}
    class_map = {str(k): str(v) for k, v in (meta.get("class-map") or {}).items()}
    value = _worker_output(value, where)
    anns = value.get("annotations", value.get("polygons"))
    if not isinstance(anns, list):
        raise ManifestError(f"{where}: '{name}' holds no 'annotations' (or 'polygons') list")
    out = []
    for i, a in enumerate(anns):
        if not isinstance(a, dict):
            raise ManifestError(f"{where}: annotation {i} is not an object")
        out.append(
            Annotation(
                _gt_text(a, class_map, text_attribute),
                _gt_vertices(a, f"{where} annotation {i}"),
                int(a.get("line_idx", 0)),
                str(a.get("type", "H")) if a.get("type") in TYPES else "H",
            )
        )
    return Sample(obj["source-ref"], out)


def convert_ground_truth(
    path: str | Path,
    out_path: str | Path | None = None,
    label_attribute: str | None = None,
    text_attribute: str = "transcription",
) -> list[Sample]:
    """Read a Ground Truth output.manifest; optionally write it as our manifest."""
    samples = [
        ground_truth_sample(obj, label_attribute, text_attribute, where) for obj, where in _json_lines(path)
    ]
    if out_path is not None:
        write_manifest(samples, out_path)
    return samples


def to_ground_truth_line(
    sample: Sample,
    label_attribute: str = "words",
    job_name: str = "htr-words",
    image_size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """A sample as a Ground Truth bounding-box output line (classes = distinct texts): for tests,
    or to pre-fill an adjustment job from our synthetic or predicted labels."""
    classes = sorted({a.text for a in sample.annotations})
    ids = {t: i for i, t in enumerate(classes)}
    anns = []
    for a in sample.annotations:
        xs, ys = [p["x"] for p in a.polygon], [p["y"] for p in a.polygon]
        anns.append(
            {
                "class_id": ids[a.text],
                "left": round(min(xs)),
                "top": round(min(ys)),
                "width": round(max(xs) - min(xs)),
                "height": round(max(ys) - min(ys)),
            }
        )
    value: dict[str, Any] = {"annotations": anns}
    if image_size:
        value["image_size"] = [{"width": image_size[0], "height": image_size[1], "depth": 3}]
    return {
        "source-ref": sample.source_ref,
        label_attribute: value,
        f"{label_attribute}-metadata": {
            "objects": [{"confidence": 0.0} for _ in anns],
            "class-map": {str(i): t for t, i in ids.items()},
            "type": "groundtruth/object-detection",
            "human-annotated": "yes",
            "creation-date": "1970-01-01T00:00:00",
            "job-name": f"labeling-job/{job_name}",
        },
    }


# Accounts that host Ground Truth's built-in pre-annotation / consolidation Lambdas, per region
# (SageMaker API reference, HumanTaskConfig.PreHumanTaskLambdaArn).
GT_LAMBDA_ACCOUNTS = {
    "us-east-1": "432418664414",
    "us-east-2": "266458841044",
    "us-west-2": "081040173940",
    "ca-central-1": "918755190332",
    "eu-west-1": "568282634449",
    "eu-west-2": "487402164563",
    "eu-central-1": "203001061592",
    "ap-northeast-1": "477331159723",
    "ap-northeast-2": "845288260483",
    "ap-south-1": "565803892007",
    "ap-southeast-1": "377565633583",
    "ap-southeast-2": "454466003867",
}
GT_TASKS = {"BoundingBox": "BoundingBox", "SemanticSegmentation": "SemanticSegmentation"}


def input_manifest(image_uris: Iterable[str]) -> str:
    """Ground Truth input manifest text: one {"source-ref": uri} line per image in S3."""
    lines = []
    for uri in image_uris:
        if not str(uri).startswith("s3://"):
            raise ManifestError(f"Ground Truth reads images from S3 only: {uri}")
        lines.append(json.dumps({"source-ref": str(uri)}))
    return "\n".join(lines) + "\n"


def label_category_config(
    labels: Iterable[str] = ("word", "printed-word", "illegible"),
    text_attribute: str | None = "transcription",
) -> dict[str, Any]:
    """The label category file (uploaded to S3) with, optionally, a free-text transcription attribute."""
    cfg: dict[str, Any] = {"document-version": "2018-11-28", "labels": [{"label": lab} for lab in labels]}
    if text_attribute:
        cfg["categoryGlobalAttributes"] = [
            {"name": text_attribute, "type": "string", "description": "exactly what is written, no spaces"}
        ]
    return cfg


def labeling_job_request(
    job_name: str,
    manifest_s3_uri: str,
    output_s3_uri: str,
    role_arn: str,
    workteam_arn: str,
    label_categories_s3_uri: str,
    ui_template_s3_uri: str,
    region: str,
    task: str = "BoundingBox",
    label_attribute: str = "words",
    workers_per_object: int = 1,
    task_time_limit_s: int = 600,
    title: str = "Draw a box around every handwritten or printed word",
    description: str = "Box each word tightly; type what it says",
) -> dict[str, Any]:
    """kwargs for boto3 sagemaker.create_labeling_job(**request): pure, nothing is sent."""
    if task not in GT_TASKS:
        raise ValueError(f"task must be one of {sorted(GT_TASKS)}, got {task!r}")
    account = GT_LAMBDA_ACCOUNTS.get(region)
    if account is None:
        raise ValueError(f"Ground Truth built-in Lambdas are not listed for region {region!r}")
    for name, uri in (
        ("manifest", manifest_s3_uri),
        ("output", output_s3_uri),
        ("label categories", label_categories_s3_uri),
        ("UI template", ui_template_s3_uri),
    ):
        if not uri.startswith("s3://"):
            raise ValueError(f"{name} must be an s3:// URI, got {uri!r}")
    if task == "SemanticSegmentation" and not label_attribute.endswith("-ref"):
        label_attribute += "-ref"  # Ground Truth requires it for segmentation jobs
    fn = GT_TASKS[task]
    return {
        "LabelingJobName": job_name,
        "LabelAttributeName": label_attribute,
        "InputConfig": {
            "DataSource": {"S3DataSource": {"ManifestS3Uri": manifest_s3_uri}},
            "DataAttributes": {"ContentClassifiers": ["FreeOfAdultContent"]},
        },
        "OutputConfig": {"S3OutputPath": output_s3_uri},
        "RoleArn": role_arn,
        "LabelCategoryConfigS3Uri": label_categories_s3_uri,
        "HumanTaskConfig": {
            "WorkteamArn": workteam_arn,
            "UiConfig": {"UiTemplateS3Uri": ui_template_s3_uri},
            "PreHumanTaskLambdaArn": f"arn:aws:lambda:{region}:{account}:function:PRE-{fn}",
            "TaskKeywords": ["handwriting", "transcription", "bounding box"],
            "TaskTitle": title,
            "TaskDescription": description,
            "NumberOfHumanWorkersPerDataObject": workers_per_object,
            "TaskTimeLimitInSeconds": task_time_limit_s,
            "TaskAvailabilityLifetimeInSeconds": 10 * 24 * 3600,
            "MaxConcurrentTaskCount": 1000,
            "AnnotationConsolidationConfig": {
                "AnnotationConsolidationLambdaArn": f"arn:aws:lambda:{region}:{account}:function:ACS-{fn}"
            },
        },
        "Tags": [{"Key": "project", "Value": "htr-batch"}],
    }


BOUNDING_BOX_TEMPLATE = """<script src="https://assets.crowd.aws/crowd-html-elements.js"></script>
<crowd-form>
  <crowd-bounding-box name="boundingBox" src="{{ task.input.taskObject | grant_read_access }}"
      header="Draw a tight box around each word" labels="{{ task.input.labels | to_json | escape }}">
    <full-instructions header="Word boxes">
      <p>One box per word, tight around the ink, including punctuation attached to the word.</p>
      <p>Type exactly what is written in the transcription field. Crossed-out words: %SC%.
         Unreadable words: %NA%.</p>
    </full-instructions>
    <short-instructions>Box every word; transcribe it exactly.</short-instructions>
  </crowd-bounding-box>
</crowd-form>
"""


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m jobs.manifests", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    x = sub.add_parser(
        "from-xml", help="PAGE XML / ALTO files (Transkribus, eScriptorium, kraken) -> manifest"
    )
    x.add_argument("root", help="a folder of .xml files and their images, or one .xml file")
    x.add_argument("--out", help="manifest path (default: ROOT/manifest.jsonl)")
    x.add_argument(
        "--level",
        choices=LEVELS,
        default="line",
        help="line: a line-level manifest for the line recogniser (jobs.line_data); "
        "word: the files' words, for the segmenter",
    )
    a = p.parse_args(argv)
    try:
        samples = convert_xml(a.root, a.out, a.level)
    except ManifestError as e:
        print(f"manifests: {e}")
        return 2
    n = sum(len(s.annotations) for s in samples)
    print(f"manifests: {len(samples)} pages, {n} {a.level}s -> {a.out or 'manifest.jsonl'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
