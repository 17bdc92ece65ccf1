"""batch.core.schema (and batch.core.ids): document JSON round trip, Parquet tables, ids and partition dates."""

from __future__ import annotations

import datetime as dt
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch.core.ids import doc_id_for
from batch.core.schema import (
    ADDED_COLUMNS,
    ERRORS_SCHEMA,
    PAGES_SCHEMA,
    POLYGON_TYPE,
    SCHEMA_VERSION,
    TABLES,
    WORDS_SCHEMA,
    DocumentRecord,
    ErrorRecord,
    Line,
    Page,
    Point,
    Word,
    columns_since,
    conform,
    error_rows,
    iso,
    page_rows,
    run_date,
    to_table,
    word_rows,
)
from batch.outputs import parquet_bytes, read_documents, read_table

PROCESSED = int(dt.datetime(2026, 3, 1, 23, 59, 58, 125000, tzinfo=dt.UTC).timestamp() * 1000)


def w(text, x0, y0, x1, y1, conf=0.8125, det=0.5, line_idx=0, word_idx=0) -> Word:
    return Word(
        text, conf, det, [Point(x0, y0), Point(x1, y0), Point(x1, y1), Point(x0, y1)], word_idx, line_idx
    )


def sample_doc() -> DocumentRecord:
    # values already at the JSON's precision (4 decimals, polygons 0.1 px) so equality is exact
    p1 = Page(
        1,
        1654,
        2339,
        [
            Line(
                0,
                [
                    w("Dear", 100.5, 200, 180, 240, 0.9, 0.75, 0, 0),
                    w("café,", 190, 201.5, 300.2, 241, 0.4375, 0.6, 0, 1),
                ],
                [Point(100.5, 198), Point(300.2, 198), Point(300.2, 242), Point(100.5, 242)],
                [Point(100.5, 235.5), Point(300.2, 236)],
            ),
            Line(1, [w("£5 — ok", 100, 260, 260, 300, 1.0, 0.99, 1, 2)]),  # no outline (version 1)
        ],
        dpi=200.0,
    )
    p2 = Page(2, 800, 600, [])
    return DocumentRecord(
        doc_id=doc_id_for(b"document bytes"),
        source_uri="s3://in/a b/ü.pdf",
        pages=[p1, p2],
        model_version="seg-abc+rec-def",
        run_id="run-1",
        processed_at=PROCESSED,
        content_type="application/pdf",
        source_etag="etag-1",
    )


# ---- JSON -----------------------------------------------------------------------------------------


def test_document_json_round_trip():
    doc = sample_doc()
    text = doc.dumps()
    back = DocumentRecord.from_json(json.loads(text))
    assert back == doc
    assert "café" in text and "£5 — ok" in text  # UTF-8 as is, not \\u escapes


def test_document_json_layout():
    d = sample_doc().to_json()
    assert d["schema_version"] == SCHEMA_VERSION == 2 and d["page_count"] == 2
    assert d["processed_at"] == "2026-03-01T23:59:58.125+00:00"
    p1, p2 = d["pages"]
    assert (p1["page"], p1["width"], p1["height"], p1["dpi"]) == (1, 1654, 2339, 200.0)
    line0, line1 = p1["lines"]
    assert line0["polygon"][2] == {"x": 300.2, "y": 242} and len(line0["polygon"]) == 4
    assert line0["baseline"] == [{"x": 100.5, "y": 235.5}, {"x": 300.2, "y": 236}]
    assert line1["polygon"] is None and line1["baseline"] is None
    assert p1["text"] == "Dear café,\n£5 — ok"
    assert [ln["text"] for ln in p1["lines"]] == ["Dear café,", "£5 — ok"]
    first = p1["lines"][0]["words"][0]
    assert first["polygon"] == [
        {"x": 100.5, "y": 200},
        {"x": 180, "y": 200},
        {"x": 180, "y": 240},
        {"x": 100.5, "y": 240},
    ]
    assert first["bbox"] == [100.5, 200, 180, 240]
    assert p2 == {"page": 2, "width": 800, "height": 600, "dpi": None, "text": "", "lines": []}


def test_json_rounds_floats():
    doc = sample_doc()
    doc.pages[0].lines[0].words[0].confidence = 0.123456789
    doc.pages[0].lines[0].words[0].polygon[0] = Point(1.23456, 9.87654)
    word = doc.to_json()["pages"][0]["lines"][0]["words"][0]
    assert word["confidence"] == 0.1235 and word["polygon"][0] == {"x": 1.2, "y": 9.9}


def test_processed_at_survives_the_json_round_trip_to_the_millisecond():
    doc = sample_doc()
    for ms in (274087259715, 68662875446, 2169240323857, PROCESSED):
        doc.processed_at = ms
        assert DocumentRecord.from_json(json.loads(doc.dumps())).processed_at == ms


def test_iso_is_utc_milliseconds():
    assert iso(0) == "1970-01-01T00:00:00.000+00:00"
    assert dt.datetime.fromisoformat(iso(PROCESSED)).timestamp() * 1000 == PROCESSED


# ---- Parquet ---------------------------------------------------------------------------------------


def _read_back(name: str, rows: list[dict]) -> tuple[pa.Table, pq.ParquetFile]:
    data = parquet_bytes(to_table(name, rows))
    return pq.read_table(io.BytesIO(data)), pq.ParquetFile(io.BytesIO(data))


def test_word_rows_to_parquet_and_back():
    doc = sample_doc()
    rows = word_rows(doc)
    assert len(rows) == 3
    table, pf = _read_back("words", rows)
    assert table.schema.equals(WORDS_SCHEMA)
    assert table.schema.field("polygon").type == POLYGON_TYPE
    assert table.schema.field("processed_at").type == pa.timestamp("ms", tz="UTC")
    back = table.to_pylist()
    for r, row in zip(back, rows):
        assert r["processed_at"] == dt.datetime(2026, 3, 1, 23, 59, 58, 125000, tzinfo=dt.UTC)
        assert r["polygon"] == row["polygon"]
        for key in (
            "doc_id",
            "source_uri",
            "page",
            "line_idx",
            "word_idx",
            "text",
            "page_width",
            "page_height",
            "model_version",
            "run_id",
        ):
            assert r[key] == row[key], key
        for key in ("confidence", "det_score", "x0", "y0", "x1", "y1"):  # float32 columns
            assert r[key] == pytest.approx(row[key], abs=1e-4), key
    assert [(r["text"], r["line_idx"], r["word_idx"]) for r in back] == [
        ("Dear", 0, 0),
        ("café,", 0, 1),
        ("£5 — ok", 1, 2),
    ]
    assert (back[1]["x0"], back[1]["y0"], back[1]["x1"]) == (190, 201.5, pytest.approx(300.2))
    assert back[1]["line_baseline"] == [{"x": 100.5, "y": 235.5}, {"x": 300.2, "y": 236}]
    assert back[0]["line_polygon"] == back[1]["line_polygon"] and len(back[0]["line_polygon"]) == 4
    assert back[2]["line_polygon"] is None and back[2]["line_baseline"] is None
    assert pf.schema_arrow.metadata[b"htr.schema_version"] == b"2"
    # what Athena sees: INT64 timestamps in ms, adjusted to UTC; a LIST of x/y structs
    ts = pf.schema_arrow.field("processed_at")
    assert ts.type.unit == "ms" and ts.type.tz == "UTC"
    col = pf.metadata.schema.column(pf.metadata.schema.names.index("processed_at"))
    assert col.physical_type == "INT64" and "milliseconds" in str(col.logical_type).lower()
    assert "isAdjustedToUTC=true" in str(col.logical_type)


def test_page_rows_to_parquet_and_back():
    doc = sample_doc()
    rows = page_rows(doc)
    table, _ = _read_back("pages", rows)
    assert table.schema.equals(PAGES_SCHEMA)
    p1, p2 = table.to_pylist()
    assert (p1["page"], p1["page_count"], p1["line_count"], p1["word_count"]) == (1, 2, 2, 3)
    assert p1["text"] == "Dear café,\n£5 — ok"
    assert p1["mean_confidence"] == pytest.approx(round((0.9 + 0.4375 + 1.0) / 3, 4), abs=1e-6)
    assert (p1["page_width"], p1["page_height"], p1["dpi"], p2["dpi"]) == (1654, 2339, 200.0, None)
    assert (p2["page"], p2["word_count"], p2["line_count"], p2["text"]) == (2, 0, 0, "")
    assert p2["mean_confidence"] is None  # no words: null, not 0


def test_error_rows_to_parquet_and_back():
    err = ErrorRecord(
        doc_id="d" * 24,
        source_uri="/in/bad.pdf",
        stage="decode",
        error_type="EncryptedDocument",
        message="PDF is encrypted",
        run_id="r",
        processed_at=PROCESSED,
    )
    table, _ = _read_back("errors", error_rows(err))
    assert table.schema.equals(ERRORS_SCHEMA)
    (row,) = table.to_pylist()
    assert row["stage"] == "decode" and row["error_type"] == "EncryptedDocument"
    assert row["processed_at"].isoformat() == "2026-03-01T23:59:58.125000+00:00"
    assert err.to_json()["processed_at"] == "2026-03-01T23:59:58.125+00:00"


def test_all_column_names_are_lowercase():
    for schema in TABLES.values():
        for name in schema.names:
            assert name == name.lower() and name.isidentifier(), name


def test_empty_tables_keep_the_schema():
    for name, schema in TABLES.items():
        table, _ = _read_back(name, [])
        assert table.num_rows == 0 and table.schema.equals(schema)


def test_to_table_rejects_rows_of_the_wrong_type():
    rows = word_rows(sample_doc())
    rows[0]["page"] = "one"
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        to_table("words", rows)


# ---- ids and dates ----------------------------------------------------------------------------------


def test_doc_id_is_stable_for_the_same_content():
    a = doc_id_for(b"%PDF-1.4 same bytes")
    assert a == doc_id_for(b"%PDF-1.4 same bytes")
    assert a != doc_id_for(b"%PDF-1.4 same bytes ")
    assert a != doc_id_for(b"%PDF-1.4 Same bytes")
    assert len(a) == 24 and all(ch in "0123456789abcdef" for ch in a)


def test_run_date_is_the_utc_day():
    assert run_date(PROCESSED) == "2026-03-01"
    assert run_date(PROCESSED + 2000) == "2026-03-02"  # 2 s later, past midnight UTC
    assert run_date(0) == "1970-01-01"


# ---- older outputs stay readable -------------------------------------------------------------------


def _version1(schema: pa.Schema, new: tuple[str, ...]) -> pa.Schema:
    """The schema as version 1 wrote it: without the columns version 2 added."""
    return pa.schema([f for f in schema if f.name not in new])


def test_version1_parts_and_documents_read_with_the_new_columns_null(tmp_path):
    """A version 1 output (parts without line_polygon/line_baseline/dpi, JSON without outlines)
    reads through read_table / read_documents and DocumentRecord.from_json."""
    doc = sample_doc()
    for name, rows, new in (
        ("words", word_rows(doc), ("line_polygon", "line_baseline")),
        ("pages", page_rows(doc), ("dpi",)),
    ):
        old = _version1(TABLES[name], new)
        table = pa.Table.from_pylist([{k: v for k, v in r.items() if k not in new} for r in rows], schema=old)
        part = tmp_path / name / "run_date=2026-03-01" / "part-old.parquet"
        part.parent.mkdir(parents=True)
        part.write_bytes(parquet_bytes(table))
        back = read_table(str(tmp_path), name)
        assert back.schema.equals(TABLES[name]) and back.num_rows == len(rows)
        from batch.query import query  # the DuckDB views too, over an output of version-1 parts only

        nulls = query(str(tmp_path), f"SELECT count(*) AS n, count({new[0]}) AS v FROM {name}")
        assert nulls.to_pylist() == [{"n": len(rows), "v": 0}]
        assert all(back.column(c).null_count == len(rows) for c in new)
        assert conform(table, name).column_names == TABLES[name].names
    d = doc.to_json()
    d["schema_version"] = 1
    for p in d["pages"]:
        p.pop("dpi")
        for ln in p["lines"]:
            ln.pop("polygon"), ln.pop("baseline")
    (tmp_path / "documents").mkdir()
    (tmp_path / "documents" / "old.json").write_text(json.dumps(d))
    [old_doc] = read_documents(str(tmp_path))
    back = DocumentRecord.from_json(old_doc)
    assert back.pages[0].dpi is None and back.pages[0].lines[0].polygon == []
    assert back.pages[0].text == doc.pages[0].text


def test_athena_ddl_and_duckdb_views_have_the_version2_columns(tmp_path):
    """Athena's DDL is generated from the schema; DuckDB's views read old and new parts together
    (union by name: old rows null in the new columns)."""
    from batch.athena import all_ddl, parse_ddl_columns
    from batch.query import query

    ddl = {s.split("`")[3]: s for s in all_ddl("s3://b/out/")[1:]}
    words, _ = parse_ddl_columns(ddl["words"])
    pages, _ = parse_ddl_columns(ddl["pages"])
    assert words["line_polygon"] == words["line_baseline"] == "array<struct<x:double,y:double>>"
    assert pages["dpi"] == "double"
    rows = word_rows(sample_doc())
    folder = tmp_path / "words" / "run_date=2026-03-01"
    folder.mkdir(parents=True)
    new = ("line_polygon", "line_baseline")
    old = pa.Table.from_pylist(
        [{k: v for k, v in r.items() if k not in new} for r in rows], schema=_version1(WORDS_SCHEMA, new)
    )
    (folder / "part-v1.parquet").write_bytes(parquet_bytes(old))
    (folder / "part-v2.parquet").write_bytes(parquet_bytes(to_table("words", rows)))
    got = query(
        str(tmp_path),
        "SELECT count(*) AS n, count(line_polygon) AS outlined, max(len(line_baseline)) AS points FROM words",
    ).to_pylist()
    assert got == [{"n": 6, "outlined": 2, "points": 2}]


def test_every_version_lists_its_added_columns():
    """A schema bump names the columns it added (nullable, at the tables' ends): conform, old
    outputs and `htr athena-ddl --upgrade-from` rely on the list."""
    assert sorted(ADDED_COLUMNS) == list(range(2, SCHEMA_VERSION + 1))
    for name, schema in TABLES.items():
        added = [n for v in sorted(ADDED_COLUMNS) for n in ADDED_COLUMNS[v].get(name, ())]
        assert schema.names[len(schema.names) - len(added) :] == added
        assert all(schema.field(n).nullable for n in added)
        assert [f.name for f in columns_since(1, name)] == added
        assert columns_since(SCHEMA_VERSION, name) == []
    assert [f.name for f in columns_since(1, "words")] == ["line_polygon", "line_baseline"]
    with pytest.raises(ValueError, match="unknown"):
        columns_since(SCHEMA_VERSION + 1, "words")


def test_athena_upgrade_adds_the_new_columns_to_old_tables(capsys):
    """Tables created by version 1's DDL (CREATE ... IF NOT EXISTS leaves them as they are) get the
    version 2 columns by ALTER TABLE ... ADD COLUMNS, typed as the CREATE DDL types them."""
    from batch.athena import all_ddl, parse_ddl_columns, upgrade_ddl
    from batch.cli import main as htr
    from batch.core.errors import EXIT_BAD_ARGS, EXIT_OK

    create = {s.split("`")[3]: parse_ddl_columns(s)[0] for s in all_ddl("s3://b/out/", "arch", "p_")[1:]}
    alters = upgrade_ddl(1, "arch", "p_")
    assert [a.split("`")[3] for a in alters] == ["p_words", "p_pages"]  # errors gained nothing
    for stmt in alters:
        assert stmt.startswith("ALTER TABLE `arch`.`") and " ADD COLUMNS (" in stmt and stmt.endswith(");")
        table = stmt.split("`")[3]
        added = {
            name.strip("`"): typ
            for name, _, typ in (
                c.strip().partition(" ") for c in stmt[stmt.index("(") + 1 : -2].split(", `")
            )
        }
        old = {k: v for k, v in create[table].items() if k not in added}
        assert {**old, **added} == create[table]  # version 1's columns + the added = today's table
    assert upgrade_ddl(SCHEMA_VERSION) == []
    assert htr(["athena-ddl", "s3://b/out/", "--upgrade-from", "1"]) == EXIT_OK
    printed = capsys.readouterr().out
    assert (
        "ADD COLUMNS (`line_polygon` array<struct<x:double,y:double>>" in printed and "CREATE" not in printed
    )
    assert htr(["athena-ddl", "s3://b/out/", "--upgrade-from", str(SCHEMA_VERSION + 1)]) == EXIT_BAD_ARGS
