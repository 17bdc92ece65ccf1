"""Archive exports (batch.exports): ALTO and PAGE XML valid against the official schemas, hOCR
that parses with the right boxes, searchable PDFs whose words poppler finds on their boxes, and
all of them written exactly once by `htr run --formats` and `htr export`."""

from __future__ import annotations

import io
import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pikepdf
import pytest
from lxml import etree
from PIL import Image, ImageDraw

from batch.cli import main as htr
from batch.core.errors import EXIT_BAD_ARGS, EXIT_OK
from batch.core.ids import doc_id_for
from batch.core.schema import DocumentRecord, Line, Page, Point, Word
from batch.exports import FORMATS, parse_formats, render
from batch.exports.pdf import ExportError

SCHEMAS = Path(__file__).resolve().parent / "schemas"
DEFAULT_MODELS = Path(__file__).resolve().parents[1] / "models" / "default"


@pytest.fixture(scope="module")
def alto_schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(SCHEMAS / "alto-4-4.xsd")))


@pytest.fixture(scope="module")
def page_schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(SCHEMAS / "pagecontent-2019-07-15.xsd")))


def valid(schema: etree.XMLSchema, data: bytes) -> etree._ElementTree:
    tree = etree.parse(io.BytesIO(data))
    schema.assertValid(tree)  # raises DocumentInvalid with the line and the reason
    return tree


# ---- records built directly --------------------------------------------------------------------


def quad(x0, y0, x1, y1, skew=0.0) -> list[Point]:
    return [Point(x0, y0 + skew), Point(x1, y0), Point(x1, y1), Point(x0, y1 + skew)]


def record(source: bytes = b"src", source_uri: str = "/archive/box 1/letter&1.png") -> DocumentRecord:
    l0 = [
        Word("Dear", 0.91, 0.8, quad(100, 100, 220, 150), 0, 0),
        Word('"Annie"', 0.42, 0.7, quad(240, 102, 420, 152), 1, 0),
        Word("&<ça>", 0.05, 0.6, quad(440, 98, 560, 150, 4), 2, 0),
    ]
    l1 = [Word("£5—½", 1.0, 0.9, quad(-3, 200, 130, 262), 3, 1)]  # past the left edge
    page1 = Page(
        1,
        1000,
        700,
        [Line(0, l0, quad(95, 95, 565, 155), [Point(95, 148), Point(565, 150)]), Line(1, l1)],
        dpi=200.0,
    )  # line 1: no outline (v1)
    page2 = Page(2, 1000, 700, [])
    return DocumentRecord(
        doc_id_for(source), source_uri, [page1, page2], "seg-a+rec-b", "run-1", 1764400000000, "image/png"
    )


NS_ALTO = {"a": "http://www.loc.gov/standards/alto/ns-v4#"}
NS_PAGE = {"p": "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"}


def test_alto_is_valid_and_complete(alto_schema):
    doc = record()
    ((name, data),) = render(doc, "alto").items()
    assert name == f"alto/{doc.doc_id}.xml"
    tree = valid(alto_schema, data)
    assert tree.findtext(".//a:MeasurementUnit", namespaces=NS_ALTO) == "pixel"
    assert tree.findtext(".//a:softwareVersion", namespaces=NS_ALTO) == "seg-a+rec-b"
    pages = tree.findall(".//a:Page", NS_ALTO)
    assert [(p.get("PHYSICAL_IMG_NR"), p.get("WIDTH")) for p in pages] == [("1", "1000"), ("2", "1000")]
    lines = tree.findall(".//a:TextLine", NS_ALTO)
    assert [" ".join(s.get("CONTENT") for s in ln.findall("a:String", NS_ALTO)) for ln in lines] == [
        'Dear "Annie" &<ça>',
        "£5—½",
    ]
    assert lines[0].get("BASELINE") == "95,148 565,150"
    assert lines[1].get("BASELINE")  # computed from the words for a version 1 line
    strings = tree.findall(".//a:String", NS_ALTO)
    assert [
        (s.get("HPOS"), s.get("VPOS"), s.get("WIDTH"), s.get("HEIGHT"), s.get("WC")) for s in strings[:2]
    ] == [("100", "100", "120", "50", "0.91"), ("240", "102", "180", "50", "0.42")]
    assert strings[3].get("HPOS") == "0"  # clipped to the page
    assert len(tree.findall(".//a:TextLine/a:SP", NS_ALTO)) == 2
    assert strings[2].find("a:Shape/a:Polygon", NS_ALTO).get("POINTS") == "440,102 560,98 560,150 440,154"


def test_page_xml_is_valid_per_page(page_schema):
    doc = record()
    files = render(doc, "page")
    assert sorted(files) == [f"page/{doc.doc_id}/0001.xml", f"page/{doc.doc_id}/0002.xml"]
    tree = valid(page_schema, files[f"page/{doc.doc_id}/0001.xml"])
    valid(page_schema, files[f"page/{doc.doc_id}/0002.xml"])  # an empty page too
    page = tree.find("p:Page", NS_PAGE)
    assert (page.get("imageFilename"), page.get("imageXResolution")) == ("letter&1.png", "200.0")
    assert tree.find(".//p:RegionRefIndexed", NS_PAGE).get("regionRef") == tree.find(
        ".//p:TextRegion", NS_PAGE
    ).get("id")
    lines = tree.findall(".//p:TextLine", NS_PAGE)
    assert [ln.findtext("p:TextEquiv/p:Unicode", namespaces=NS_PAGE) for ln in lines] == [
        'Dear "Annie" &<ça>',
        "£5—½",
    ]
    assert lines[0].find("p:Baseline", NS_PAGE).get("points") == "95,148 565,150"
    words = tree.findall(".//p:Word", NS_PAGE)
    assert [w.find("p:TextEquiv", NS_PAGE).get("conf") for w in words] == ["0.91", "0.42", "0.05", "1"]
    assert words[3].find("p:Coords", NS_PAGE).get("points").startswith("0,200 ")


class _Hocr(HTMLParser):
    def __init__(self):
        super().__init__()
        self.items: list[tuple[str, str, str]] = []  # (class, title, text)
        self._open: list[int] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("class", "").startswith("ocr"):
            self._open.append(len(self.items))
            self.items.append((a["class"], a.get("title", ""), ""))
        else:
            self._open.append(-1)

    def handle_endtag(self, tag):
        self._open.pop()

    def handle_data(self, data):
        for i in self._open:
            if i >= 0 and self.items[i][0] == "ocrx_word":
                c, t, text = self.items[i]
                self.items[i] = (c, t, text + data)


def _bbox(title: str) -> tuple[int, ...]:
    return tuple(int(v) for v in re.search(r"bbox (\d+) (\d+) (\d+) (\d+)", title).groups())


def test_hocr_parses_and_its_boxes_match():
    doc = record()
    (data,) = render(doc, "hocr").values()
    etree.fromstring(data)  # well-formed XHTML
    parser = _Hocr()
    parser.feed(data.decode("utf-8"))
    kinds = [c for c, _, _ in parser.items]
    assert kinds.count("ocr_page") == 2 and kinds.count("ocr_line") == 2 and kinds.count("ocrx_word") == 4
    words = [(t, text) for c, t, text in parser.items if c == "ocrx_word"]
    assert [text for _, text in words] == [w.text for w in doc.pages[0].words]
    for (title, _), w in zip(words, doc.pages[0].words):
        x0, y0, x1, y1 = w.bbox
        assert _bbox(title) == (max(0, round(x0)), round(y0), round(x1), round(y1))
        assert f"x_wconf {round(100 * w.confidence)}" in title
    assert "scan_res 200 200" in parser.items[0][1]
    assert "baseline 0.0043 -" in parser.items[1][1]  # the stored baseline, 2 px over 470


def test_formats_parse():
    assert parse_formats("json,parquet") == ()
    assert parse_formats(" json , ALTO,page,alto,pdf") == ("alto", "page", "pdf")
    with pytest.raises(ValueError, match="tiff"):
        parse_formats("json,tiff")


@pytest.mark.parametrize(
    "accept, fmt",
    [
        (None, None),
        ("*/*", None),
        ("application/alto+xml", "alto"),
        ("text/html;q=0.9, application/vnd.prima.page+xml", "page"),
        ("application/alto+xml;q=0.5, application/json;q=0.9", None),  # JSON preferred
        ("application/json;q=0.2, application/pdf", "pdf"),
        ("application/pdf;q=0, text/vnd.hocr+html;q=0.3", "hocr"),  # q=0: not acceptable
        ("application/alto+xml;q=0.7, application/pdf;q=0.7", "alto"),  # a tie: the first listed
        ("Application/ALTO+XML ; Q=0.8", "alto"),
        ("text/csv", None),
    ],
)
def test_accept_header_is_ranked_by_q(accept, fmt):
    from batch.exports import negotiate

    assert negotiate(accept) == fmt


# ---- searchable PDF ----------------------------------------------------------------------------


def _poppler_words(pdf: bytes, tmp_path: Path) -> list[list[tuple[str, float, float, float, float]]]:
    """Per page, pdftotext -bbox's words (text, xMin, yMin, xMax, yMax in points); pdfinfo first."""
    path = tmp_path / "doc.pdf"
    path.write_bytes(pdf)
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True)
    assert info.returncode == 0 and not info.stderr.strip(), info.stderr
    out = subprocess.run(["pdftotext", "-bbox", str(path), "-"], capture_output=True, text=True)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
    pages = []
    for body in re.findall(r"<page [^>]*>(.*?)</page>", out.stdout, re.S):
        pages.append(
            [
                (m[4], *map(float, m[:4]))
                for m in re.findall(
                    r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">(.*?)</word>',
                    body,
                )
            ]
        )
    return pages


def _unescape(s: str) -> str:
    import html

    return html.unescape(s)  # pdftotext -bbox writes XML entities (&amp; &lt; &quot; &apos; ...)


def check_pdf_words(pdf: bytes, doc: DocumentRecord, tmp_path: Path, tolerance_px: float = 3.0) -> None:
    """Every word of the record is in the PDF's text layer, on its box (within a few pixels)."""
    for page, found in zip(doc.pages, _poppler_words(pdf, tmp_path), strict=True):
        scale = 72.0 / (page.dpi or 300.0)
        assert len(found) == len(page.words)
        for w, (text, *box) in zip(page.words, found):
            assert _unescape(text) == w.text.encode("cp1252", "replace").decode("cp1252")
            x0, y0, x1, y1 = w.bbox
            want = (max(x0, 0), y0, x1, y1)
            for got, exp in zip(box, want):
                assert abs(got / scale - exp) <= tolerance_px + 0.03 * (y1 - y0), (w.text, box, want)


def _png(size=(1000, 700), dpi=200) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (250, 248, 240)).save(buf, "PNG", dpi=(dpi, dpi))
    return buf.getvalue()


def test_pdf_from_a_png_has_the_words_on_their_boxes(tmp_path):
    source = _png()
    doc = record(source)
    doc.pages[0].lines[0].words[2].polygon = quad(440, 100, 560, 150)  # pdftotext boxes are upright
    doc.pages = doc.pages[:1]
    (pdf,) = render(doc, "pdf", source).values()
    check_pdf_words(pdf, doc, tmp_path)
    with pikepdf.open(io.BytesIO(pdf)) as p:
        assert [float(v) for v in p.pages[0].mediabox] == [0, 0, 360, 252]  # 1000 px at 200 dpi


def _jpeg(size=(300, 200), orientation: int | None = None) -> bytes:
    img = Image.new("RGB", size, "white")
    ImageDraw.Draw(img).rectangle((0, 0, 60, 40), fill=(200, 0, 0))  # red mark top-left
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, exif=exif.tobytes(), dpi=(100, 100))
    return buf.getvalue()


@pytest.mark.parametrize("orientation", [1, 6, 3, 8])
def test_pdf_keeps_a_jpeg_as_it_is_and_turns_it_upright(tmp_path, orientation):
    source = _jpeg(orientation=orientation)
    upright = np.asarray(Image.open(io.BytesIO(_jpeg())).convert("RGB"))  # what orientation 1 shows
    from PIL import ImageOps

    shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(source))).convert("RGB"))
    h, w = shown.shape[:2]
    doc = DocumentRecord(
        doc_id_for(source),
        "x.jpg",
        [Page(1, w, h, [Line(0, [Word("mark", 0.9, 0.9, quad(10, 10, 120, 40), 0, 0)])], dpi=100.0)],
        "m",
        "r",
        0,
        "image/jpeg",
    )
    (pdf,) = render(doc, "pdf", source).values()
    with pikepdf.open(io.BytesIO(pdf)) as p:
        (image,) = [v for v in p.pages[0].Resources.XObject.values()]
        assert image.read_raw_bytes() == source  # not re-encoded
    path = tmp_path / "o.pdf"
    path.write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", "100", "-png", str(path), str(tmp_path / "r")], check=True)
    rendered = np.asarray(Image.open(next(tmp_path.glob("r*.png"))).convert("RGB")).astype(int)
    assert rendered.shape[:2] == (h, w)
    assert np.abs(rendered - shown).mean() < 8  # shown as a viewer would
    assert orientation != 1 or np.abs(rendered - upright).mean() < 8
    check_pdf_words(pdf, doc, tmp_path)


def _pdf_source(rotate: int = 0) -> bytes:
    """A one-page PDF of an image, optionally with /Rotate."""
    buf = io.BytesIO()
    Image.new("RGB", (400, 300), "white").save(buf, "PDF", resolution=72)
    with pikepdf.open(io.BytesIO(buf.getvalue())) as p:
        if rotate:
            p.pages[0].Rotate = rotate
        out = io.BytesIO()
        p.save(out)
        return out.getvalue()


@pytest.mark.parametrize("rotate", [0, 90])
def test_pdf_source_keeps_its_pages_and_gains_text(tmp_path, rotate):
    source = _pdf_source(rotate)
    w, h = (300, 400) if rotate else (400, 300)  # page pixels at 72 dpi, as poppler shows it
    doc = DocumentRecord(
        doc_id_for(source),
        "x.pdf",
        [
            Page(
                1,
                w,
                h,
                [
                    Line(
                        0,
                        [
                            Word("Hello", 0.9, 0.9, quad(20, 30, 140, 60), 0, 0),
                            Word("world", 0.8, 0.9, quad(160, 30, 280, 60), 1, 0),
                        ],
                    )
                ],
                dpi=72.0,
            )
        ],
        "m",
        "r",
        0,
        "application/pdf",
    )
    (pdf,) = render(doc, "pdf", source).values()
    with pikepdf.open(io.BytesIO(source)) as a, pikepdf.open(io.BytesIO(pdf)) as b:
        (img_a,), (img_b,) = list(a.pages[0].get_images().values()), list(b.pages[0].get_images().values())
        assert img_a.read_raw_bytes() == img_b.read_raw_bytes()
    check_pdf_words(pdf, doc, tmp_path)


def test_pdf_text_layer_holds_every_character_the_recogniser_writes(tmp_path):
    """The text layer's font speaks Windows-1252: every character of the shipped charset must be
    found by pdftotext as it was written (a charset that grows past it fails here)."""
    from models.charset import CHARSET

    chars = "".join(c for c in CHARSET if not c.isspace())
    chunks = [chars[k : k + 12] for k in range(0, len(chars), 12)]
    words = [
        Word(
            text,
            0.9,
            0.9,
            quad(40 + 170 * (k % 5), 40 + 60 * (k // 5), 200 + 170 * (k % 5), 90 + 60 * (k // 5)),
            k,
            0,
        )
        for k, text in enumerate(chunks)
    ]
    source = _png((900, 60 * (len(chunks) // 5 + 2)))
    page = Page(1, 900, 60 * (len(chunks) // 5 + 2), [Line(0, words)], dpi=200.0)
    doc = DocumentRecord(doc_id_for(source), "c.png", [page], "m", "r", 0, "image/png")
    (pdf,) = render(doc, "pdf", source).values()
    found = [_unescape(t) for t, *_ in _poppler_words(pdf, tmp_path)[0]]
    assert "".join(found) == chars


def test_pdf_words_whose_boxes_touch_stay_apart(tmp_path):
    """Handwriting's word boxes often touch or overlap: each word but a line's last ends in a space,
    so pdftotext -bbox sees two words, not 'NeilSquare' (its plain-text layout mode still joins
    words without a gap between their boxes: it spaces by geometry alone)."""
    source = _png((1000, 300))
    words = [
        Word("Neil", 0.9, 0.9, quad(100, 100, 260, 160), 0, 0),
        Word("Square", 0.9, 0.9, quad(255, 100, 500, 160), 1, 0),  # 5 px over its neighbour
        Word("W1", 0.9, 0.9, quad(500, 100, 600, 160), 2, 0),  # touching
    ]
    last = [Word("end", 0.9, 0.9, quad(100, 200, 220, 260), 3, 1)]
    page = Page(1, 1000, 300, [Line(0, words), Line(1, last)], dpi=200.0)
    doc = DocumentRecord(doc_id_for(source), "t.png", [page], "m", "r", 0, "image/png")
    (pdf,) = render(doc, "pdf", source).values()
    assert [t for t, *_ in _poppler_words(pdf, tmp_path)[0]] == ["Neil", "Square", "W1", "end"]
    check_pdf_words(pdf, doc, tmp_path)  # each on its own box: the space lies outside it


def test_pdf_from_a_multipage_tiff_has_a_page_per_frame(tmp_path):
    """Each TIFF frame becomes a page of its own size and resolution, with its own words."""
    frames = [Image.new("L", (800, 500), 250), Image.new("RGB", (400, 600), (240, 240, 250))]
    buf = io.BytesIO()
    frames[0].save(buf, "TIFF", save_all=True, append_images=frames[1:], dpi=(150, 150))
    source = buf.getvalue()
    pages = [
        Page(1, 800, 500, [Line(0, [Word("first", 0.9, 0.9, quad(100, 100, 300, 160), 0, 0)])], dpi=150.0),
        Page(2, 400, 600, [Line(0, [Word("second", 0.8, 0.9, quad(50, 400, 350, 470), 0, 0)])], dpi=150.0),
    ]
    doc = DocumentRecord(doc_id_for(source), "n.tiff", pages, "m", "r", 0, "image/tiff")
    (pdf,) = render(doc, "pdf", source).values()
    with pikepdf.open(io.BytesIO(pdf)) as p:
        assert [[round(float(v)) for v in pg.mediabox] for pg in p.pages] == [
            [0, 0, 384, 240],
            [0, 0, 192, 288],
        ]
    check_pdf_words(pdf, doc, tmp_path)
    doc.pages = doc.pages[:1]
    with pytest.raises(ExportError, match="2 images, the record has 1 pages"):
        render(doc, "pdf", source)


def test_pdf_refuses_a_changed_source():
    with pytest.raises(ExportError, match="changed"):
        render(record(b"old bytes"), "pdf", _png())


# ---- the real pipeline: htr run --formats, htr export --------------------------------------------


def _printed_page() -> Image.Image:
    page = Image.new("RGB", (1100, 700), "white")
    draw, font, y = ImageDraw.Draw(page), bold_font(64), 120
    for words in (["Meeting", "notes"], ["call", "Anna"]):
        x: float = 100
        for text in words:
            draw.text((x, y), text, fill="black", font=font)
            x = draw.textbbox((x, y), text, font=font)[2] + 60
        y += 250
    return page


def _inputs(folder: Path) -> None:
    folder.mkdir()
    page = _printed_page()
    page.save(folder / "printed.png", dpi=(150, 150))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned; shown upright
    page.transpose(Image.Transpose.ROTATE_90).save(
        folder / "photo.jpg", quality=85, exif=exif.tobytes(), dpi=(96, 96)
    )
    page.save(folder / "letter.pdf", resolution=100)


ALL = "json,parquet,alto,page,hocr,pdf"


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    if not (DEFAULT_MODELS / "segmenter.safetensors").is_file():
        pytest.skip("the shipped models (models/default/*.safetensors) are not in this checkout")
    root = tmp_path_factory.mktemp("real-run")
    _inputs(root / "in")
    rc = htr(
        [
            "run",
            str(root / "in"),
            str(root / "out"),
            "--formats",
            ALL,
            "--dpi",
            "100",
            "--no-progress",
            "--no-lexicon",
        ]
    )
    assert rc == EXIT_OK
    return root / "out"


def _docs(out: Path) -> list[DocumentRecord]:
    return [
        DocumentRecord.from_json(json.loads(p.read_text()))
        for p in sorted((out / "documents").glob("*.json"))
    ]


def test_run_records_lines_and_resolution(real_run):
    from batch.outputs import read_table

    docs = _docs(real_run)
    assert sorted(Path(d.source_uri).name for d in docs) == ["letter.pdf", "photo.jpg", "printed.png"]
    for d in docs:
        (page,) = d.pages
        assert (
            page.dpi
            == {"letter.pdf": 100.0, "printed.png": 150.0, "photo.jpg": 96.0}[Path(d.source_uri).name]
        )
        assert len(page.lines) == 2
        for ln in page.lines:
            assert len(ln.polygon) == 4 and len(ln.baseline) == 2
            ys = [p.y for w in ln.words for p in w.polygon]
            assert min(ys) - 2 <= ln.baseline[0].y <= max(ys) + 2  # at the words' bottom
            assert ln.baseline[0].x < ln.baseline[1].x
    words = read_table(str(real_run), "words", committed=True).to_pylist()
    assert words and all(len(r["line_polygon"]) == 4 and len(r["line_baseline"]) == 2 for r in words)
    pages = read_table(str(real_run), "pages", committed=True).to_pylist()
    assert sorted(str(r["dpi"]) for r in pages) == ["100.0", "150.0", "96.0"]
    assert not list((real_run / "_ledger" / "pending").rglob("*"))  # staged exports published


def test_run_writes_every_format_valid(real_run, alto_schema, page_schema, tmp_path):
    for d in _docs(real_run):
        valid(alto_schema, (real_run / "alto" / f"{d.doc_id}.xml").read_bytes())
        for p in d.pages:
            valid(page_schema, (real_run / "page" / d.doc_id / f"{p.page:04d}.xml").read_bytes())
        parser = _Hocr()
        parser.feed((real_run / "hocr" / f"{d.doc_id}.hocr").read_text())
        got = [(_bbox(t), text) for c, t, text in parser.items if c == "ocrx_word"]
        assert [text for _, text in got] == [w.text for w in d.pages[0].words]
        for (box, _), w in zip(got, d.pages[0].words):
            assert np.allclose(box, [round(v) for v in w.bbox], atol=1)
        check_pdf_words((real_run / "pdf" / f"{d.doc_id}.pdf").read_bytes(), d, tmp_path)


def test_export_command_rewrites_the_same_files(real_run, tmp_path):
    dest = tmp_path / "again"
    assert htr(["export", str(real_run), "--to", "alto,page,hocr,pdf", "--dest", str(dest)]) == EXIT_OK
    for fmt in ("alto", "page", "hocr"):
        ours = sorted(p.relative_to(real_run) for p in (real_run / fmt).rglob("*") if p.is_file())
        assert ours and ours == sorted(p.relative_to(dest) for p in (dest / fmt).rglob("*") if p.is_file())
        assert all((real_run / p).read_bytes() == (dest / p).read_bytes() for p in ours)
    assert len(list((dest / "pdf").glob("*.pdf"))) == 3
    assert htr(["export", str(real_run), "--to", "tiff"]) == EXIT_BAD_ARGS
    assert htr(["export", str(tmp_path / "nothing"), "--to", "alto"]) == EXIT_BAD_ARGS


def test_export_command_reads_and_writes_s3(real_run, s3_bucket, fresh_storage):
    from batch import storage

    out = f"s3://{s3_bucket}/out/"
    for p in (real_run / "documents").glob("*.json"):
        storage.write_bytes(storage.join(out, "documents", p.name), p.read_bytes())
    assert htr(["export", out, "--to", "alto,pdf"]) == EXIT_OK
    doc = _docs(real_run)[0]
    assert (
        storage.read_bytes(storage.join(out, "alto", f"{doc.doc_id}.xml"))
        == (real_run / "alto" / f"{doc.doc_id}.xml").read_bytes()
    )
    assert storage.read_bytes(storage.join(out, "pdf", f"{doc.doc_id}.pdf"))[:5] == b"%PDF-"


# ---- exactly once: a killed run leaves no export the next run does not finish ----------------------

from tests.worker_helpers import bold_font, htr_inprocess, htr_subprocess, png  # noqa: E402


def _export_files(out: Path) -> dict[str, bytes]:
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for fmt in FORMATS
        for p in (out / fmt).rglob("*")
        if p.is_file()
    }


def _expected(out: Path) -> dict[str, bytes]:
    """What the committed documents' exports must be: rendered again from their JSON."""
    want: dict[str, bytes] = {}
    for d in _docs(out):
        for fmt in ("alto", "page", "pdf"):
            want.update(render(d, fmt))
    return want


def test_a_killed_run_leaves_exports_the_rerun_completes(tmp_path, one_word_models, capsys):
    """Killed after the second batch committed and its first JSON was published, before its
    exports were: the rerun's recovery publishes them, and the third batch is done anew."""
    src = tmp_path / "in"
    src.mkdir()
    for k in range(3):
        (src / f"p{k}.png").write_bytes(png(k))
    out = tmp_path / "out"
    argv = [
        "run",
        src,
        out,
        "--models",
        one_word_models,
        "--formats",
        "alto,page,pdf",
        "--no-progress",
        "--part-docs",
        "1",
        "--backend",
        "torch",
    ]
    killed = htr_subprocess(argv, HTR_CRASH_AT="publish-after:2")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert 3 <= len(_export_files(out)) < 9  # batch 1's three files; batch 2's not yet
    assert htr_inprocess(capsys, *argv)[0] == 0
    assert _export_files(out) == _expected(out) and len(_expected(out)) == 9  # 3 docs x 3 files
    assert not [p for p in (out / "_ledger" / "pending").rglob("*") if p.is_file()]
    # a changed source: the old document's exports go with its JSON
    old = _docs(out)
    (src / "p0.png").write_bytes(png(99))
    assert htr_inprocess(capsys, *argv)[0] == 0
    assert _export_files(out) == _expected(out) and len(_expected(out)) == 9
    assert {d.doc_id for d in old} - {d.doc_id for d in _docs(out)}


# ---- htr serve: the format the Accept header asks for ------------------------------------------------


def test_serve_answers_in_the_format_accept_asks_for(one_word_models, alto_schema, page_schema, tmp_path):
    import http.client
    import threading

    from batch.serve import Server, ServeSettings, Service
    from tests.worker_helpers import pdf as two_page_pdf

    service = Service(ServeSettings.from_env({}))
    service.load(str(one_word_models), "cpu")
    server = Server(("127.0.0.1", 0), service)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]

    def post(data: bytes, ctype: str, accept: str | None) -> tuple[int, str | None, bytes]:
        conn = http.client.HTTPConnection(host, port, timeout=60)
        conn.request(
            "POST", "/invocations", data, {"Content-Type": ctype, **({"Accept": accept} if accept else {})}
        )
        r = conn.getresponse()
        out = (r.status, r.getheader("Content-Type"), r.read())
        conn.close()
        return out

    try:
        page = png(7, (120, 160))
        status, ctype, body = post(page, "image/png", None)
        assert (status, ctype) == (200, "application/json")
        (answer,) = json.loads(body)["pages"]  # the SageMaker response: schema version 2
        assert (
            "dpi" in answer
            and all(len(ln["polygon"]) == 4 and len(ln["baseline"]) == 2 for ln in answer["lines"])
            and answer["lines"]
        )
        status, ctype, body = post(page, "image/png", "application/alto+xml")
        assert (status, ctype) == (200, "application/alto+xml")
        valid(alto_schema, body)
        status, ctype, body = post(page, "image/png", "text/html;q=0.9, application/vnd.prima.page+xml")
        assert (status, ctype) == (200, "application/vnd.prima.page+xml")
        valid(page_schema, body)
        status, ctype, body = post(page, "image/png", "application/pdf")
        assert (status, ctype) == (200, "application/pdf")
        record = DocumentRecord.from_json(json.loads(post(page, "image/png", "*/*")[2]))
        check_pdf_words(body, record, tmp_path)
        status, ctype, body = post(two_page_pdf(3), "application/pdf", "application/vnd.prima.page+xml")
        assert (status, ctype) == (406, "application/json") and "alto" in json.loads(body)["error"]["message"]
    finally:
        server.shutdown()
        service.close()


def test_sagemaker_collect_writes_the_formats(real_run, alto_schema, tmp_path):
    """A transform job's .out files (the serve JSON) -> the tables and the archive formats."""
    transform = tmp_path / "transform-out"
    transform.mkdir()
    inputs = real_run.parent / "in"
    for d in _docs(real_run):
        (transform / f"{Path(d.source_uri).name}.out").write_text(json.dumps(d.to_json()))
    out = tmp_path / "collected"
    assert (
        htr(
            [
                "sagemaker",
                "collect",
                str(transform),
                str(out),
                "--input",
                str(inputs),
                "--formats",
                "alto,pdf",
            ]
        )
        == EXIT_OK
    )
    ran = {d.doc_id: d for d in _docs(real_run)}
    for d in _docs(out):
        valid(alto_schema, (out / "alto" / f"{d.doc_id}.xml").read_bytes())
        check_pdf_words((out / "pdf" / f"{d.doc_id}.pdf").read_bytes(), d, tmp_path)
        # the response's line outlines and page resolution reach the collected records
        assert [(p.dpi, [(ln.polygon, ln.baseline) for ln in p.lines]) for p in d.pages] == [
            (p.dpi, [(ln.polygon, ln.baseline) for ln in p.lines]) for p in ran[d.doc_id].pages
        ]
        assert all(len(ln.polygon) == 4 and len(ln.baseline) == 2 for p in d.pages for ln in p.lines)
    assert len(_docs(out)) == 3


def test_a_failing_export_fails_only_its_document(tmp_path):
    """The writer renders before it stages anything: the worker turns the exception into the
    document's error row, and nothing of the document is committed."""
    from batch.outputs import OutputWriter, read_documents, read_table

    def broken(doc):
        raise ExportError("source gone")

    writer = OutputWriter(str(tmp_path / "out"), "run-1", exports=broken)
    with pytest.raises(ExportError):
        writer.add_document(record())
    writer.close()
    assert (
        read_documents(str(tmp_path / "out")) == []
        and read_table(str(tmp_path / "out"), "words").num_rows == 0
    )
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file() and "exports" in p.parts]


def test_run_formats_on_s3_publish_and_retire_exports(
    s3_endpoint, s3_bucket, one_word_models, capsys, fresh_storage
):
    from batch import storage
    from tests.s3_server import s3_client

    client = s3_client(s3_endpoint)
    for k in range(2):
        client.put_object(Bucket=s3_bucket, Key=f"in/p{k}.png", Body=png(10 + k))
    out = f"s3://{s3_bucket}/out/"
    argv = [
        "run",
        f"s3://{s3_bucket}/in/",
        out,
        "--models",
        one_word_models,
        "--formats",
        "alto,page",
        "--no-progress",
        "--backend",
        "torch",
    ]

    def exported() -> set[str]:
        keys = {
            o["Key"]
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
            for o in page.get("Contents", [])
        }
        assert not [k for k in keys if "/_ledger/pending/" in k]
        return {k[len("out/") :] for k in keys if k.startswith(("out/alto/", "out/page/"))}

    assert htr_inprocess(capsys, *argv)[0] == 0
    docs = [json.loads(storage.read_bytes(u)) for u in storage.list_uris(out + "documents/")]
    assert exported() == {f"alto/{d['doc_id']}.xml" for d in docs} | {
        f"page/{d['doc_id']}/0001.xml" for d in docs
    }
    client.put_object(Bucket=s3_bucket, Key="in/p0.png", Body=png(99))  # a changed source
    assert htr_inprocess(capsys, *argv)[0] == 0
    now = [json.loads(storage.read_bytes(u)) for u in storage.list_uris(out + "documents/")]
    assert exported() == {f"alto/{d['doc_id']}.xml" for d in now} | {
        f"page/{d['doc_id']}/0001.xml" for d in now
    }
    assert len(now) == 2 and {d["doc_id"] for d in docs} != {d["doc_id"] for d in now}
