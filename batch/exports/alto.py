"""ALTO 4.4 (Library of Congress) for one document: every page in one file.

Layout: Page > PrintSpace > one TextBlock > TextLine (BASELINE, polygon Shape) > String (CONTENT,
WC confidence, polygon Shape) with SP between words. Coordinates are page pixels
(MeasurementUnit pixel), PHYSICAL_IMG_NR the 1-based page; Processing names the model version.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from batch.core.schema import DocumentRecord, Page, Point, iso
from batch.exports.common import SOFTWARE, box_of, conf, image_name, line_outline, points_text

NS = "http://www.loc.gov/standards/alto/ns-v4#"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
SCHEMA_LOCATION = f"{NS} http://www.loc.gov/alto/v4/alto-4-4.xsd"


def _el(parent: ET.Element, tag: str, **attrs: object) -> ET.Element:
    return ET.SubElement(parent, f"{{{NS}}}{tag}", {k: str(v) for k, v in attrs.items()})


def _pos(box) -> dict[str, Any]:
    return {"HPOS": box.x0, "VPOS": box.y0, "WIDTH": box.width, "HEIGHT": box.height}


def _shape(parent: ET.Element, points: list[Point], page: Page) -> None:
    if len(points) >= 3:
        _el(_el(parent, "Shape"), "Polygon", POINTS=points_text(points, page))


def _page(layout: ET.Element, page: Page) -> None:
    p = f"p{page.page}"
    el = _el(
        layout,
        "Page",
        ID=p,
        PHYSICAL_IMG_NR=page.page,
        WIDTH=page.width,
        HEIGHT=page.height,
        PROCESSING="proc1",
    )
    space = _el(el, "PrintSpace", HPOS=0, VPOS=0, WIDTH=page.width, HEIGHT=page.height)
    if not page.lines:
        return
    outlines = [line_outline(ln) for ln in page.lines]
    every = [pt for poly, _ in outlines for pt in poly] or [pt for w in page.words for pt in w.polygon]
    block = _el(space, "TextBlock", ID=f"{p}_b1", **_pos(box_of(every, page)))
    for ln, (poly, baseline) in zip(page.lines, outlines):
        line_pts = poly or [pt for w in ln.words for pt in w.polygon]
        attrs = _pos(box_of(line_pts, page))
        if len(baseline) >= 2:
            attrs["BASELINE"] = points_text(baseline, page)
        tl = _el(block, "TextLine", ID=f"{p}_l{ln.line_idx + 1}", **attrs)
        _shape(tl, poly, page)
        for k, w in enumerate(ln.words):
            if k:
                prev = box_of(ln.words[k - 1].polygon, page)
                _el(tl, "SP", HPOS=prev.x1, VPOS=prev.y0, WIDTH=max(0, box_of(w.polygon, page).x0 - prev.x1))
            s = _el(
                tl,
                "String",
                ID=f"{p}_w{w.word_idx + 1}",
                CONTENT=w.text,
                **_pos(box_of(w.polygon, page)),
                WC=conf(w.confidence),
            )
            _shape(s, w.polygon, page)


def to_alto(doc: DocumentRecord) -> bytes:
    ET.register_namespace("", NS)
    ET.register_namespace("xsi", XSI)
    root = ET.Element(f"{{{NS}}}alto", {f"{{{XSI}}}schemaLocation": SCHEMA_LOCATION, "SCHEMAVERSION": "4.4"})
    desc = _el(root, "Description")
    _el(desc, "MeasurementUnit").text = "pixel"
    _el(_el(desc, "sourceImageInformation"), "fileName").text = image_name(doc)
    proc = _el(desc, "Processing", ID="proc1")
    _el(proc, "processingCategory").text = "contentGeneration"
    _el(proc, "processingDateTime").text = iso(doc.processed_at)
    _el(proc, "processingStepDescription").text = f"handwriting recognition, run {doc.run_id}"
    soft = _el(proc, "processingSoftware")
    _el(soft, "softwareName").text = SOFTWARE
    _el(soft, "softwareVersion").text = doc.model_version
    layout = _el(root, "Layout")
    for page in doc.pages:
        _page(layout, page)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
