"""hOCR 1.2 for one document: ocr_page > ocr_line > ocrx_word, each with `bbox` (page pixels) and
words with `x_wconf` (confidence 0-100); lines carry hOCR's `baseline` (slope, offset from the
line box's bottom-left)."""

from __future__ import annotations

from html import escape

from batch.core.schema import DocumentRecord, Page
from batch.exports.common import SOFTWARE, box_of, image_name, line_confidence, line_outline


def _bbox(b) -> str:
    return f"bbox {b.x0} {b.y0} {b.x1} {b.y1}"


def _baseline(baseline, box) -> str:
    if len(baseline) < 2:
        return ""
    a, b = baseline[0], baseline[-1]
    slope = (b.y - a.y) / (b.x - a.x) if b.x != a.x else 0.0
    offset = a.y + slope * (box.x0 - a.x) - box.y1
    return f"; baseline {slope:.4f} {offset:.0f}"


def _page(doc: DocumentRecord, page: Page) -> list[str]:
    res = f"; scan_res {page.dpi:g} {page.dpi:g}" if page.dpi else ""
    out = [
        f'<div class="ocr_page" id="page_{page.page}" title="image '
        f"{escape(_quoted(image_name(doc)))}; bbox 0 0 {page.width} {page.height}; "
        f'ppageno {page.page - 1}{res}">'
    ]
    for ln in page.lines:
        poly, baseline = line_outline(ln)
        box = box_of(poly or [p for w in ln.words for p in w.polygon], page)
        out.append(
            f'<span class="ocr_line" id="line_{page.page}_{ln.line_idx + 1}" title="{_bbox(box)}'
            f'{_baseline(baseline, box)}; x_wconf {round(100 * line_confidence(ln))}">'
        )
        words = [
            f'<span class="ocrx_word" id="word_{page.page}_{w.word_idx + 1}" '
            f'title="{_bbox(box_of(w.polygon, page))}; x_wconf {round(100 * w.confidence)}">'
            f"{escape(w.text)}</span>"
            for w in ln.words
        ]
        out.append(" ".join(words) + "</span>")
    out.append("</div>")
    return out


def _quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_hocr(doc: DocumentRecord) -> bytes:
    head = [
        "<!DOCTYPE html>",
        '<html xmlns="http://www.w3.org/1999/xhtml" lang="und">',
        "<head>",
        '<meta charset="utf-8"/>',
        f"<title>{escape(image_name(doc))}</title>",
        f'<meta name="ocr-system" content="{SOFTWARE} {escape(doc.model_version)}"/>',
        '<meta name="ocr-capabilities" content="ocr_page ocr_line ocrx_word"/>',
        "</head>",
        "<body>",
    ]
    body = [line for page in doc.pages for line in _page(doc, page)]
    return "\n".join(head + body + ["</body>", "</html>", ""]).encode("utf-8")
