"""Searchable PDF for one document: the original page images with an invisible text layer.

A PDF source keeps its own pages untouched (only a text layer is added to each); a JPEG goes in as
it is (DCTDecode, its EXIF orientation applied by the placement matrix, never re-encoded); other
images (PNG, TIFF, BMP, WebP) are embedded losslessly (Flate). Each word is drawn in text render
mode 3 (invisible) in Courier, whose glyphs are all 0.6 em wide, so horizontal scaling makes the
word span exactly its box; the text runs along the word's polygon, so a skewed word is selected
where it is written. Text outside Windows-1252 (the standard fonts' encoding) becomes '?'.
"""

from __future__ import annotations

import io
import zlib

import numpy as np

from batch.core.errors import HtrError
from batch.core.ids import doc_id_for
from batch.core.schema import DocumentRecord, Page

DEFAULT_DPI = 300.0  # images that carry no resolution are placed as 300 dpi scans
ADVANCE = 0.6  # Courier: every glyph advances 0.6 em
ASCENT, DESCENT = 0.629, 0.157  # Courier's ascender / descender (AFM): the glyph box fills the word box

# EXIF orientation -> where the stored image's unit square (u right, v up) lands on the upright
# page's unit square (X right, Y up): the images of (0,0), (1,0) and (0,1).
_ORIENT = {
    1: ((0, 0), (1, 0), (0, 1)),
    2: ((1, 0), (0, 0), (1, 1)),
    3: ((1, 1), (0, 1), (1, 0)),
    4: ((0, 1), (1, 1), (0, 0)),
    5: ((1, 1), (1, 0), (0, 1)),
    6: ((0, 1), (0, 0), (1, 1)),
    7: ((0, 0), (0, 1), (1, 0)),
    8: ((1, 0), (1, 1), (0, 0)),
}


class ExportError(HtrError):
    """A document could not be exported (its source changed or cannot be read)."""

    stage = "export"


def to_pdf(doc: DocumentRecord, source: bytes) -> bytes:
    """The searchable PDF; `source` is the document's original bytes."""
    import pikepdf

    from transforms.rasterise import PDF, sniff

    if doc_id_for(source) != doc.doc_id:
        raise ExportError(
            f"{doc.source_uri}: the source has changed since it was read "
            f"(doc_id {doc.doc_id}); run htr run again before exporting a PDF"
        )
    if sniff(source) == PDF:
        pdf = _text_on_pdf(pikepdf.open(io.BytesIO(source)), doc)
    else:
        pdf = _pdf_from_images(source, doc)
    pdf.docinfo["/Producer"] = "htr-batch"
    pdf.docinfo["/Creator"] = f"htr-batch {doc.model_version}"
    buf = io.BytesIO()
    pdf.save(buf, deterministic_id=True)  # same record, same bytes: a re-export changes nothing
    return buf.getvalue()


# ---- the text layer ------------------------------------------------------------------------------


def _font(pdf):
    import pikepdf

    return pdf.make_indirect(
        pikepdf.Dictionary(
            Type=pikepdf.Name.Font,
            Subtype=pikepdf.Name.Type1,
            BaseFont=pikepdf.Name.Courier,
            Encoding=pikepdf.Name.WinAnsiEncoding,
        )
    )


def _text_layer(page: Page, size_pt: tuple[float, float], font_name: str, to_user: tuple) -> bytes:
    """Content stream: the page's words, invisible, placed in a page of size_pt (x right, y up);
    `to_user` maps that space into the PDF page's user space."""
    import pikepdf

    w_pt, h_pt = size_pt
    sx, sy = w_pt / max(page.width, 1), h_pt / max(page.height, 1)
    ops: list = [([], "q"), (_rounded(to_user), "cm"), ([], "BT"), ([3], "Tr")]
    for line in page.lines:
        for k, word in enumerate(line.words):
            ops += _word_ops(word, page, (sx, sy), h_pt, font_name, spaced=k < len(line.words) - 1)
    ops += [([], "ET"), ([], "Q")]
    return pikepdf.unparse_content_stream(ops)


def _word_ops(
    word, page: Page, scale: tuple[float, float], h_pt: float, font_name: str, spaced: bool
) -> list:
    """One word's text operators. A word followed by another on its line ends in a space (drawn
    past the box, in the gap): text extraction, search and selection then see two words even
    where the recognised boxes touch or overlap, instead of running them together."""
    import pikepdf

    sx, sy = scale
    text = word.text.encode("cp1252", errors="replace")
    pts = np.array(
        [
            [min(max(p.x, 0), page.width) * sx, h_pt - min(max(p.y, 0), page.height) * sy]
            for p in word.polygon
        ],
        float,
    )  # on the page: viewers drop text outside it
    if not text or len(pts) != 4:
        return []
    tl, tr, br, bl = pts
    along = ((tr - tl) + (br - bl)) / 2
    length = float(np.hypot(*along))
    height = float(np.hypot(*((tl - bl) + (tr - br)) / 2))
    if length < 0.1 or height < 0.1:
        return []
    cos, sin = along / length
    size = height / (ASCENT + DESCENT)
    base = bl + DESCENT * size * np.array([-sin, cos])  # the baseline, above the box's bottom
    return [
        ([pikepdf.Name(font_name), round(size, 4)], "Tf"),
        (_rounded([100.0 * length / (ADVANCE * size * len(text))]), "Tz"),  # the word fills its box
        (_rounded([cos, sin, -sin, cos, base[0], base[1]]), "Tm"),
        ([pikepdf.String(text + b" " if spaced else text)], "Tj"),
    ]


def _rounded(values) -> list[float]:
    return [round(float(v), 6) for v in values]


# ---- PDF sources: keep each page, add text ---------------------------------------------------------


def _displayed(pg) -> tuple[tuple[float, float, float, float], int]:
    """The box poppler renders (the crop box, else the media box) and the page's /Rotate."""
    box = [float(v) for v in (pg.obj.get("/CropBox") or pg.mediabox)]
    x0, y0, x1, y1 = min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])
    return (x0, y0, x1, y1), int(pg.obj.get("/Rotate", 0)) % 360


def _free_name(pg, kind: str, base: str):
    """A resource name the page does not use yet (fixed, not random: same input, same bytes)."""
    import pikepdf

    used = set(pg.resources.get(kind, {}).keys())
    return pikepdf.Name(next(n for n in (f"{base}{k or ''}" for k in range(len(used) + 1)) if n not in used))


def _rotation_matrix(box: tuple[float, float, float, float], rotate: int) -> tuple:
    """Displayed page space (what a viewer shows, y up, origin bottom-left) -> user space."""
    x0, y0, x1, y1 = box
    return {
        0: (1, 0, 0, 1, x0, y0),
        90: (0, 1, -1, 0, x1, y0),
        180: (-1, 0, 0, -1, x1, y1),
        270: (0, -1, 1, 0, x0, y1),
    }[rotate]


def _text_on_pdf(pdf, doc: DocumentRecord):
    import pikepdf

    if len(pdf.pages) != len(doc.pages):
        raise ExportError(
            f"{doc.source_uri}: the PDF has {len(pdf.pages)} pages, the record {len(doc.pages)}"
        )
    font = _font(pdf)
    for pg, page in zip(pdf.pages, doc.pages):
        box, rotate = _displayed(pg)
        w, h = box[2] - box[0], box[3] - box[1]
        size = (h, w) if rotate in (90, 270) else (w, h)
        name = pg.add_resource(font, pikepdf.Name.Font, _free_name(pg, "/Font", "/HtrText"))
        pg.contents_add(pikepdf.Stream(pdf, b"q\n"), prepend=True)  # the page's own state ends
        pg.contents_add(pikepdf.Stream(pdf, b"\nQ\n"))  # before our text starts
        pg.contents_add(
            pikepdf.Stream(pdf, _text_layer(page, size, str(name), _rotation_matrix(box, rotate)))
        )
    return pdf


# ---- image sources: one page per image (frame) ----------------------------------------------------


def _pdf_from_images(source: bytes, doc: DocumentRecord):
    import pikepdf
    from PIL import Image

    pdf = pikepdf.new()
    font = _font(pdf)
    with Image.open(io.BytesIO(source)) as im:
        frames = getattr(im, "n_frames", 1) if im.format == "TIFF" else 1
        if frames != len(doc.pages):
            raise ExportError(f"{doc.source_uri}: {frames} images, the record has {len(doc.pages)} pages")
        for k, page in enumerate(doc.pages):
            im.seek(k)
            image, placement = _image_xobject(pdf, im, source)
            dpi = page.dpi or DEFAULT_DPI
            w_pt, h_pt = page.width * 72.0 / dpi, page.height * 72.0 / dpi
            pg = pdf.add_blank_page(page_size=(w_pt, h_pt))
            img_name = pg.add_resource(image, pikepdf.Name.XObject, pikepdf.Name("/Im0"))
            font_name = pg.add_resource(font, pikepdf.Name.Font, pikepdf.Name("/HtrText"))
            (ox, oy), (ux, uy), (vx, vy) = placement
            cm = _rounded(
                [(ux - ox) * w_pt, (uy - oy) * h_pt, (vx - ox) * w_pt, (vy - oy) * h_pt, ox * w_pt, oy * h_pt]
            )
            draw = pikepdf.unparse_content_stream(
                [([], "q"), (cm, "cm"), ([img_name], "Do"), ([], "Q")]  # type: ignore[list-item]  # str operators
            )
            pg.contents_add(pikepdf.Stream(pdf, draw))
            pg.contents_add(
                pikepdf.Stream(pdf, _text_layer(page, (w_pt, h_pt), str(font_name), (1, 0, 0, 1, 0, 0)))
            )
    return pdf


def _image_xobject(pdf, im, source: bytes):
    """(image XObject, placement): a JPEG's own bytes with its EXIF orientation as placement;
    anything else decoded upright and Flate-compressed."""
    import pikepdf
    from PIL import ImageOps

    if im.format in ("JPEG", "MPO") and im.mode in (
        "L",
        "RGB",
    ):  # MPO: a camera JPEG + preview; readers take the first
        orientation = im.getexif().get(0x0112, 1)
        stream = pikepdf.Stream(
            pdf,
            source,
            Type=pikepdf.Name.XObject,
            Subtype=pikepdf.Name.Image,
            Width=im.width,
            Height=im.height,
            BitsPerComponent=8,
            ColorSpace=pikepdf.Name.DeviceGray if im.mode == "L" else pikepdf.Name.DeviceRGB,
            Filter=pikepdf.Name.DCTDecode,
        )
        return stream, _ORIENT.get(orientation, _ORIENT[1])
    from transforms.rasterise import to_rgb_array

    try:
        frame = ImageOps.exif_transpose(im)  # each TIFF page has its own orientation tag
    except Exception:
        frame = im.copy()
    rgb = to_rgb_array(frame)  # what the pipeline read: any mode, alpha on white
    stream = pikepdf.Stream(
        pdf,
        zlib.compress(rgb.tobytes(), 6),
        Type=pikepdf.Name.XObject,
        Subtype=pikepdf.Name.Image,
        Width=rgb.shape[1],
        Height=rgb.shape[0],
        BitsPerComponent=8,
        Filter=pikepdf.Name.FlateDecode,
        ColorSpace=pikepdf.Name.DeviceRGB,
    )
    return stream, _ORIENT[1]
