"""Archive formats: ALTO, PAGE XML, hOCR and searchable PDF, written from document records.

The serialisers (alto, page, hocr, pdf) are pure functions of a record (and, for the PDF, the
source's bytes), apart from the pipeline. This module names the formats, where each one's files
live under OUT, and renders a document's files for the writers (`htr run --formats`, `htr export`,
`htr serve` by Accept header).

  OUT/alto/<doc_id>.xml              ALTO 4.4, every page of the document
  OUT/page/<doc_id>/<page:04d>.xml   PAGE XML 2019-07-15, one per page
  OUT/hocr/<doc_id>.hocr             hOCR (HTML), every page
  OUT/pdf/<doc_id>.pdf               the source's pages with an invisible text layer
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from batch.core.schema import DocumentRecord

TABLE_FORMATS = ("json", "parquet")  # always written: they are what the ledger commits


@dataclass(frozen=True)
class Format:
    name: str
    media_type: str
    ext: str
    per_page: bool = False  # one file per page (under a folder named by doc_id)
    needs_source: bool = False  # renders from the source's bytes too


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("alto", "application/alto+xml", ".xml"),
        Format("page", "application/vnd.prima.page+xml", ".xml", per_page=True),
        Format("hocr", "text/vnd.hocr+html", ".hocr"),
        Format("pdf", "application/pdf", ".pdf", needs_source=True),
    )
}


def parse_formats(text: str) -> tuple[str, ...]:
    """'json,parquet,alto' -> ('alto',): the archive formats asked for (json and parquet are always
    written). Raises ValueError naming an unknown format."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FORMATS and n not in TABLE_FORMATS]
    if unknown:
        raise ValueError(
            f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(TABLE_FORMATS + tuple(FORMATS))}"
        )
    return tuple(dict.fromkeys(n for n in names if n in FORMATS))


def render(doc: DocumentRecord, fmt: str, source: bytes | None = None) -> dict[str, bytes]:
    """One format's files for a document: {path relative to OUT: bytes}."""
    f = FORMATS[fmt]
    if fmt == "alto":
        from batch.exports.alto import to_alto

        return {f"alto/{doc.doc_id}{f.ext}": to_alto(doc)}
    if fmt == "page":
        from batch.exports.page import to_page_xml

        return {f"page/{doc.doc_id}/{p.page:04d}{f.ext}": to_page_xml(doc, p) for p in doc.pages}
    if fmt == "hocr":
        from batch.exports.hocr import to_hocr

        return {f"hocr/{doc.doc_id}{f.ext}": to_hocr(doc)}
    from batch.exports.pdf import to_pdf

    if source is None:
        from batch import storage

        source = storage.read_bytes(doc.source_uri)
    return {f"pdf/{doc.doc_id}{f.ext}": to_pdf(doc, source)}


def renderer(
    formats: tuple[str, ...], read_source: Callable[[str], bytes] | None = None
) -> Callable[[DocumentRecord], dict[str, bytes]] | None:
    """A function doc -> {relative path: bytes} for all of `formats`; None when there are none.
    The PDF reads the source again (by source_uri): the run does not keep documents' bytes."""
    if not formats:
        return None

    def files(doc: DocumentRecord) -> dict[str, bytes]:
        from batch import storage

        doc = DocumentRecord.from_json(doc.to_json())  # at the JSON's precision: `htr export` agrees
        source = (
            (read_source or storage.read_bytes)(doc.source_uri)
            if any(FORMATS[f].needs_source for f in formats)
            else None
        )
        out: dict[str, bytes] = {}
        for fmt in formats:
            out.update(render(doc, fmt, source))
        return out

    return files


def stale_uris(out_uri: str, doc_id: str) -> list[str]:
    """Every export a document may have under OUT (to delete when the document is gone)."""
    from batch import storage

    uris = [storage.join(out_uri, f.name, f"{doc_id}{f.ext}") for f in FORMATS.values() if not f.per_page]
    for f in FORMATS.values():
        if f.per_page:
            try:
                uris += list(storage.list_uris(storage.join(out_uri, f.name, doc_id) + "/"))
            except storage.NotFound:
                pass
    return uris


def formats_arg(text: str) -> tuple[str, ...]:
    """parse_formats for argparse (`htr run --formats`): its message on a bad name."""
    import argparse

    try:
        return parse_formats(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


# ---- one document answered in a format (htr serve, by Accept header) ---------------------------------


def negotiate(accept: str | None) -> str | None:
    """The archive format an Accept header prefers, or None (JSON: absent, */*, JSON, or anything we
    do not write). Media ranges are ranked by their q-value (RFC 9110; the first listed wins a
    tie); q=0 means "not this one"."""
    by_type = {f.media_type: f.name for f in FORMATS.values()}
    ranked: list[tuple[float, int, str]] = []
    for k, item in enumerate((accept or "").split(",")):
        media, *params = (part.strip().lower() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0  # a malformed weight: ignore the range
        if media and q > 0:
            ranked.append((-q, k, media))
    for _, _, media in sorted(ranked):
        if media in by_type:
            return by_type[media]
        if media in ("application/json", "*/*", "application/*"):
            return None
    return None


def response(doc: DocumentRecord, fmt: str, source: bytes) -> tuple[int, tuple[str, bytes] | dict]:
    """(HTTP status, (media type, body)) for one document in `fmt`; PAGE XML holds one page, so a
    longer document answers 406 with a JSON error naming the formats that hold it."""
    if fmt == "page" and len(doc.pages) != 1:
        return 406, {
            "error": {
                "type": "NotAcceptable",
                "stage": "export",
                "message": f"PAGE XML holds one page and this document has {len(doc.pages)}; "
                "ask for application/alto+xml, text/vnd.hocr+html or application/pdf",
            }
        }
    (data,) = render(DocumentRecord.from_json(doc.to_json()), fmt, source).values()
    return 200, (FORMATS[fmt].media_type, data)
