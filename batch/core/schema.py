"""The record schema: one place for what htr-batch writes.

Document JSON (OUT/documents/<doc_id>.json) nests pages -> lines -> words.
Parquet tables flatten it: `words` (one row per word), `pages` (one per page),
`errors` (one per failed document). Column names are lowercase and timestamps
are UTC milliseconds so Athena reads them as-is.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = 2  # 2: line polygon + baseline, page dpi (all nullable; version 1 outputs still read)
PARTITION_COLUMN = "run_date"  # Hive partition: OUT/<table>/run_date=YYYY-MM-DD/


def now_ms() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")


@dataclass(slots=True)
class Point:
    x: float
    y: float


@dataclass(slots=True)  # a 1000-page document holds ~150k of these until it is written
class Word:
    text: str
    confidence: float  # recogniser: mean per-character max probability, 0..1
    det_score: float  # segmenter: mean text probability inside the polygon, 0..1
    polygon: list[Point]  # 4 points, page pixels, clockwise from top-left
    word_idx: int = 0  # reading order within the page
    line_idx: int = 0

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        xs = [p.x for p in self.polygon]
        ys = [p.y for p in self.polygon]
        return min(xs), min(ys), max(xs), max(ys)


@dataclass(slots=True)
class Line:
    line_idx: int
    words: list[Word]
    # The line's outline and baseline in page pixels; empty where unknown (version 1 outputs).
    polygon: list[Point] = field(default_factory=list)  # clockwise from top-left
    baseline: list[Point] = field(default_factory=list)  # left to right

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)


@dataclass(slots=True)
class Page:
    page: int  # 1-based
    width: int
    height: int
    lines: list[Line] = field(default_factory=list)
    dpi: float | None = None  # pixels per inch: the rasterising dpi of a PDF, an image's own tag

    @property
    def words(self) -> list[Word]:
        return [w for line in self.lines for w in line.words]

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


@dataclass
class DocumentRecord:
    doc_id: str
    source_uri: str
    pages: list[Page]
    model_version: str
    run_id: str
    processed_at: int  # UTC ms
    content_type: str = ""
    source_etag: str = ""

    def to_json(self, pages: bool = True) -> dict[str, Any]:
        d = {
            "schema_version": SCHEMA_VERSION,
            "doc_id": self.doc_id,
            "source_uri": self.source_uri,
            "source_etag": self.source_etag,
            "content_type": self.content_type,
            "model_version": self.model_version,
            "run_id": self.run_id,
            "processed_at": iso(self.processed_at),
            "page_count": len(self.pages),
        }
        if pages:
            d["pages"] = [_page_json(p) for p in self.pages]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DocumentRecord:
        pages = []
        for p in d["pages"]:
            lines = []
            for ln in p["lines"]:
                words = [
                    Word(
                        text=w["text"],
                        confidence=w["confidence"],
                        det_score=w["det_score"],
                        polygon=[Point(**pt) for pt in w["polygon"]],
                        word_idx=w["word_idx"],
                        line_idx=ln["line_idx"],
                    )
                    for w in ln["words"]
                ]
                lines.append(
                    Line(ln["line_idx"], words, _points(ln.get("polygon")), _points(ln.get("baseline")))
                )
            pages.append(Page(p["page"], p["width"], p["height"], lines, p.get("dpi")))
        t = dt.datetime.fromisoformat(d["processed_at"])  # integer arithmetic: floats lose 1 ms
        processed = (t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)
        return cls(
            d["doc_id"],
            d["source_uri"],
            pages,
            d["model_version"],
            d["run_id"],
            processed,
            d.get("content_type", ""),
            d.get("source_etag", ""),
        )

    def dumps(self) -> str:
        """to_json() as text, built a page at a time: the dict tree of a 1000-page document
        would otherwise be held whole next to its text."""
        head = json.dumps({**self.to_json(pages=False), "pages": []}, ensure_ascii=False, indent=1)
        pages = ",\n".join(json.dumps(_page_json(p), ensure_ascii=False, indent=1) for p in self.pages)
        return head[: -len("[]\n}")] + "[\n" + pages + "\n]\n}" if pages else head


def _points(pts: list[dict[str, float]] | None) -> list[Point]:
    return [Point(**pt) for pt in pts or []]


def _xy_list(pts: list[Point]) -> list[dict[str, float]] | None:
    """Points as JSON/Parquet values; None (null) for an unknown outline."""
    return [{"x": _xy(pt.x), "y": _xy(pt.y)} for pt in pts] if pts else None


def _xy(v: float) -> float:
    return round(v, 1)  # 0.1 px: finer than any scan, and JSON and Parquet agree exactly


def _score(v: float) -> float:
    return round(v, 4)


def _page_json(p: Page) -> dict[str, Any]:
    return {
        "page": p.page,
        "width": p.width,
        "height": p.height,
        "dpi": p.dpi,
        "text": p.text,
        "lines": [
            {
                "line_idx": ln.line_idx,
                "text": ln.text,
                "polygon": _xy_list(ln.polygon),
                "baseline": _xy_list(ln.baseline),
                "words": [
                    {
                        "word_idx": w.word_idx,
                        "text": w.text,
                        "confidence": _score(w.confidence),
                        "det_score": _score(w.det_score),
                        "polygon": [{"x": _xy(pt.x), "y": _xy(pt.y)} for pt in w.polygon],
                        "bbox": [_xy(v) for v in w.bbox],
                    }
                    for w in ln.words
                ],
            }
            for ln in p.lines
        ],
    }


@dataclass
class ErrorRecord:
    doc_id: str  # content hash when the bytes could be read, else hash of the uri
    source_uri: str
    stage: str  # fetch | decode | segment | recognise | write | ...
    error_type: str  # exception class name, e.g. EncryptedDocument
    message: str
    run_id: str
    processed_at: int

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["processed_at"] = iso(self.processed_at)
        return d


# ---- Parquet (Arrow) schemas -------------------------------------------------------------------

POLYGON_TYPE = pa.list_(pa.struct([("x", pa.float64()), ("y", pa.float64())]))
TS = pa.timestamp("ms", tz="UTC")
# Written into every Parquet part's footer, so a reader can tell which version wrote it.
_META = {b"htr.schema_version": str(SCHEMA_VERSION).encode()}

WORDS_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("source_uri", pa.string()),
        ("page", pa.int32()),
        ("line_idx", pa.int32()),
        ("word_idx", pa.int32()),
        ("text", pa.string()),
        ("confidence", pa.float32()),
        ("det_score", pa.float32()),
        ("polygon", POLYGON_TYPE),
        ("x0", pa.float32()),
        ("y0", pa.float32()),
        ("x1", pa.float32()),
        ("y1", pa.float32()),
        ("page_width", pa.int32()),
        ("page_height", pa.int32()),
        ("model_version", pa.string()),
        ("run_id", pa.string()),
        ("processed_at", TS),
        # version 2 (null in version 1 parts): the word's line, repeated on each of its words
        ("line_polygon", POLYGON_TYPE),
        ("line_baseline", POLYGON_TYPE),
    ],
    metadata=_META,
)

PAGES_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("source_uri", pa.string()),
        ("page", pa.int32()),
        ("page_count", pa.int32()),
        ("text", pa.string()),
        ("line_count", pa.int32()),
        ("word_count", pa.int32()),
        ("mean_confidence", pa.float32()),
        ("page_width", pa.int32()),
        ("page_height", pa.int32()),
        ("model_version", pa.string()),
        ("run_id", pa.string()),
        ("processed_at", TS),
        ("dpi", pa.float64()),  # version 2 (null in version 1 parts, and for images without a tag)
    ],
    metadata=_META,
)

ERRORS_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("source_uri", pa.string()),
        ("stage", pa.string()),
        ("error_type", pa.string()),
        ("message", pa.string()),
        ("run_id", pa.string()),
        ("processed_at", TS),
    ],
    metadata=_META,
)

TABLES: dict[str, pa.Schema] = {"words": WORDS_SCHEMA, "pages": PAGES_SCHEMA, "errors": ERRORS_SCHEMA}

# The columns each schema version added, per table (all nullable, at the end of the table): what a
# version-1 part lacks (conform) and what `htr athena-ddl --upgrade-from` adds to tables an older
# DDL created. A new version adds its entry here.
ADDED_COLUMNS: dict[int, dict[str, tuple[str, ...]]] = {
    2: {"words": ("line_polygon", "line_baseline"), "pages": ("dpi",)},
}


def columns_since(version: int, table: str) -> list[pa.Field]:
    """The current schema's fields of `table` that versions after `version` added, in table order."""
    if not 1 <= version <= SCHEMA_VERSION:
        raise ValueError(f"schema version {version} unknown: this htr writes versions 1 to {SCHEMA_VERSION}")
    names = {n for v, tables in ADDED_COLUMNS.items() if v > version for n in tables.get(table, ())}
    return [f for f in TABLES[table] if f.name in names]


def word_rows(doc: DocumentRecord) -> list[dict[str, Any]]:
    return list(iter_word_rows(doc))


def iter_word_rows(doc: DocumentRecord) -> Iterator[dict[str, Any]]:
    for p in doc.pages:
        for ln, w in ((line, word) for line in p.lines for word in line.words):
            x0, y0, x1, y1 = w.bbox
            yield {
                "doc_id": doc.doc_id,
                "source_uri": doc.source_uri,
                "page": p.page,
                "line_idx": w.line_idx,
                "word_idx": w.word_idx,
                "text": w.text,
                "confidence": _score(w.confidence),
                "det_score": _score(w.det_score),
                "polygon": [{"x": _xy(pt.x), "y": _xy(pt.y)} for pt in w.polygon],
                "x0": _xy(x0),
                "y0": _xy(y0),
                "x1": _xy(x1),
                "y1": _xy(y1),
                "page_width": p.width,
                "page_height": p.height,
                "model_version": doc.model_version,
                "run_id": doc.run_id,
                "processed_at": doc.processed_at,
                "line_polygon": _xy_list(ln.polygon),
                "line_baseline": _xy_list(ln.baseline),
            }


def page_rows(doc: DocumentRecord) -> list[dict[str, Any]]:
    rows = []
    for p in doc.pages:
        words = p.words
        conf = _score(sum(w.confidence for w in words) / len(words)) if words else None
        rows.append(
            {
                "doc_id": doc.doc_id,
                "source_uri": doc.source_uri,
                "page": p.page,
                "page_count": len(doc.pages),
                "text": p.text,
                "line_count": len(p.lines),
                "word_count": len(words),
                "mean_confidence": conf,
                "page_width": p.width,
                "page_height": p.height,
                "model_version": doc.model_version,
                "run_id": doc.run_id,
                "processed_at": doc.processed_at,
                "dpi": p.dpi,
            }
        )
    return rows


def error_rows(err: ErrorRecord) -> list[dict[str, Any]]:
    return [asdict(err)]


def to_table(name: str, rows: Iterable[dict[str, Any]], chunk: int = 10_000) -> pa.Table:
    """Rows to an Arrow table a chunk at a time: a 1000-page document has ~150k word rows, and
    holding them all as Python dicts at once cost more memory than the models."""
    tables, buf = [], []
    for row in rows:
        buf.append(row)
        if len(buf) >= chunk:
            tables.append(pa.Table.from_pylist(buf, schema=TABLES[name]))
            buf = []
    tables.append(pa.Table.from_pylist(buf, schema=TABLES[name]))
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def conform(table: pa.Table, name: str) -> pa.Table:
    """A part read back, in the current schema of table `name`: columns a part written by an older
    schema version lacks (all added columns are nullable) come back as nulls."""
    schema = TABLES[name]
    for f in schema:
        if f.name not in table.column_names:
            table = table.append_column(f.name, pa.nulls(table.num_rows, f.type))
    return table.select(schema.names).cast(schema)


def run_date(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d")
