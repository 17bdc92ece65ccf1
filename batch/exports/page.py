"""PAGE XML 2019-07-15 (PRImA; read by Transkribus, eScriptorium, OCR-D, kraken): one file per page.

Layout: one TextRegion per page (in the ReadingOrder) > TextLine (Coords polygon, Baseline) > Word
(Coords, TextEquiv with conf), each level with its TextEquiv. Points are whole, non-negative page
pixels, as the schema requires.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from batch.core.schema import DocumentRecord, Page, Point, iso
from batch.exports.common import (
    SOFTWARE,
    box_of,
    conf,
    image_name,
    line_confidence,
    line_outline,
    points_text,
)

NS = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
SCHEMA_LOCATION = f"{NS} {NS}/pagecontent.xsd"


def _el(parent: ET.Element, tag: str, **attrs: object) -> ET.Element:
    return ET.SubElement(parent, f"{{{NS}}}{tag}", {k: str(v) for k, v in attrs.items()})


def _coords(parent: ET.Element, points: list[Point], page: Page) -> None:
    _el(parent, "Coords", points=points_text(points, page))


def _text(parent: ET.Element, text: str, confidence: float | None = None) -> None:
    te = _el(parent, "TextEquiv", **({"conf": conf(confidence)} if confidence is not None else {}))
    _el(te, "Unicode").text = text


def _rect(points: list[Point], page: Page) -> list[Point]:
    b = box_of(points, page)
    return [Point(b.x0, b.y0), Point(b.x1, b.y0), Point(b.x1, b.y1), Point(b.x0, b.y1)]


def to_page_xml(doc: DocumentRecord, page: Page) -> bytes:
    ET.register_namespace("", NS)
    ET.register_namespace("xsi", XSI)
    root = ET.Element(f"{{{NS}}}PcGts", {f"{{{XSI}}}schemaLocation": SCHEMA_LOCATION})
    meta = _el(root, "Metadata")
    _el(meta, "Creator").text = f"{SOFTWARE} {doc.model_version}"
    _el(meta, "Created").text = iso(doc.processed_at)
    _el(meta, "LastChange").text = iso(doc.processed_at)
    attrs: dict[str, object] = {
        "imageFilename": image_name(doc),
        "imageWidth": page.width,
        "imageHeight": page.height,
    }
    if page.dpi:
        attrs.update(imageXResolution=page.dpi, imageYResolution=page.dpi, imageResolutionUnit="PPI")
    pg = _el(root, "Page", **attrs)
    if not page.lines:
        return ET.tostring(root, encoding="utf-8", xml_declaration=True)
    region = f"r{page.page}"
    _el(
        _el(_el(pg, "ReadingOrder"), "OrderedGroup", id=f"ro{page.page}"),
        "RegionRefIndexed",
        index=0,
        regionRef=region,
    )
    outlines = [line_outline(ln) for ln in page.lines]
    tr = _el(pg, "TextRegion", id=region)
    _coords(
        tr,
        _rect(
            [pt for poly, _ in outlines for pt in poly] or [pt for w in page.words for pt in w.polygon], page
        ),
        page,
    )
    for ln, (poly, baseline) in zip(page.lines, outlines):
        tl = _el(
            tr, "TextLine", id=f"{region}_l{ln.line_idx + 1}", custom=f"readingOrder {{index:{ln.line_idx};}}"
        )  # Transkribus' own order key
        _coords(tl, poly if len(poly) >= 3 else _rect([p for w in ln.words for p in w.polygon], page), page)
        if len(baseline) >= 2:
            _el(tl, "Baseline", points=points_text(baseline, page))
        for w in ln.words:
            we = _el(tl, "Word", id=f"{region}_w{w.word_idx + 1}")
            _coords(we, w.polygon, page)
            _text(we, w.text, w.confidence)
        _text(tl, ln.text, line_confidence(ln))
    _text(tr, page.text)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
