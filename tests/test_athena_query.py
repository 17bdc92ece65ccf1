"""`htr athena-ddl` and `htr query` over small outputs, locally and on S3 (moto over HTTP)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch import athena, storage
from batch import query as q
from batch.cli import main as htr
from batch.core.errors import EXIT_BAD_ARGS
from batch.core.schema import (
    TABLES,
    DocumentRecord,
    ErrorRecord,
    Line,
    Page,
    Point,
    Word,
    error_rows,
    page_rows,
    to_table,
    word_rows,
)

REPO = Path(__file__).resolve().parents[1]
DAY1, DAY2 = 1714557600000, 1714644000000  # 2024-05-01 10:00 UTC, 2024-05-02 10:00 UTC


def _line(idx: int, words: list[tuple[str, float]]) -> Line:
    out, x = [], 10.0
    for i, (text, conf) in enumerate(words):
        poly = [
            Point(x, 20.0 * idx),
            Point(x + 50, 20.0 * idx),
            Point(x + 50, 20.0 * idx + 15),
            Point(x, 20.0 * idx + 15),
        ]
        out.append(Word(text, conf, 0.9, poly, word_idx=i, line_idx=idx))
        x += 60
    return Line(idx, out)


def _doc(doc_id: str, pages: list[list[list[tuple[str, float]]]], at: int) -> DocumentRecord:
    return DocumentRecord(
        doc_id=doc_id,
        source_uri=f"s3://scans/{doc_id}.pdf",
        model_version="test-1",
        run_id="run-1",
        processed_at=at,
        pages=[
            Page(n + 1, 1000, 1400, [_line(i, ln) for i, ln in enumerate(lines)])
            for n, lines in enumerate(pages)
        ],
    )


LETTER = _doc(
    "letter",
    [
        [[("Dear", 0.97), ("Sir", 0.95)], [("the", 0.99), ("harvest", 0.31), ("was", 0.9), ("good", 0.88)]],
        [[("Yours", 0.93), ("truly", 0.42)]],
    ],
    DAY1,
)
MEMO = _doc("memo", [[[("Meeting", 0.91), ("at", 0.98), ("noon", 0.89)]]], DAY2)
FAILED = ErrorRecord(
    "broken", "s3://scans/broken.pdf", "decode", "EncryptedDocument", "PDF is encrypted", "run-1", DAY2
)


def write_output(out: str, with_errors: bool = True) -> None:
    """Parquet parts as the worker lays them out: OUT/<table>/run_date=YYYY-MM-DD/part-*.parquet."""
    parts = [
        ("words", "2024-05-01", word_rows(LETTER)),
        ("pages", "2024-05-01", page_rows(LETTER)),
        ("words", "2024-05-02", word_rows(MEMO)),
        ("pages", "2024-05-02", page_rows(MEMO)),
    ]
    if with_errors:
        parts.append(("errors", "2024-05-02", error_rows(FAILED)))
    for table, day, rows in parts:
        buf = io.BytesIO()
        pq.write_table(to_table(table, rows), buf)
        storage.write_bytes(storage.join(out, table, f"run_date={day}", "part-00000.parquet"), buf.getvalue())


@pytest.fixture
def local_out(tmp_path: Path) -> str:
    out = str(tmp_path / "out")
    write_output(out)
    return out


@pytest.fixture
def s3_out(s3_bucket: str) -> str:
    out = f"s3://{s3_bucket}/htr/out/"
    write_output(out)
    return out


def run_json(capsys, out: str, sql: str, *extra: str) -> list[dict]:
    assert htr(["query", out, sql, "--format", "json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


SEARCH = "SELECT doc_id, page, line_idx, text FROM words WHERE lower(text) = 'harvest'"
LOW_CONF = "SELECT doc_id, text, confidence FROM words WHERE confidence < 0.5 ORDER BY confidence"
PAGES_PER_DOC = "SELECT doc_id, count(*) AS pages FROM pages GROUP BY doc_id ORDER BY doc_id"


# ---- htr query, local ---------------------------------------------------------------------------


def test_query_full_text_search(capsys, local_out: str):
    assert run_json(capsys, local_out, SEARCH) == [
        {"doc_id": "letter", "page": 1, "line_idx": 1, "text": "harvest"}
    ]


def test_query_low_confidence_words(capsys, local_out: str):
    assert run_json(capsys, local_out, LOW_CONF) == [
        {"doc_id": "letter", "text": "harvest", "confidence": 0.31},
        {"doc_id": "letter", "text": "truly", "confidence": 0.42},
    ]


def test_query_pages_per_document_and_partitions(capsys, local_out: str):
    assert run_json(capsys, local_out, PAGES_PER_DOC) == [
        {"doc_id": "letter", "pages": 2},
        {"doc_id": "memo", "pages": 1},
    ]
    rows = run_json(
        capsys,
        local_out,
        "SELECT run_date, count(*) AS n FROM htr.words "
        "WHERE run_date >= '2024-05-01' GROUP BY run_date ORDER BY run_date",
    )
    assert rows == [{"run_date": "2024-05-01", "n": 8}, {"run_date": "2024-05-02", "n": 3}]


def test_query_python_api_returns_arrow_with_schema_types(local_out: str):
    table = q.query(local_out, "SELECT * FROM words ORDER BY doc_id, page, line_idx, word_idx")
    assert table.num_rows == 11
    assert table.schema.names == TABLES["words"].names + ["run_date"]
    assert table.column("polygon")[0].as_py() == [
        {"x": 10.0, "y": 0.0},
        {"x": 60.0, "y": 0.0},
        {"x": 60.0, "y": 15.0},
        {"x": 10.0, "y": 15.0},
    ]


def test_missing_table_is_an_empty_view_with_the_right_columns(capsys, tmp_path: Path):
    out = str(tmp_path / "no-errors")
    write_output(out, with_errors=False)
    empty = q.query(out, "SELECT * FROM errors")
    assert empty.num_rows == 0 and empty.schema.names == TABLES["errors"].names + ["run_date"]
    assert run_json(capsys, out, "SELECT count(*) AS n FROM words") == [{"n": 11}]
    nothing = str(tmp_path / "nothing-yet")
    assert q.query(nothing, "SELECT count(*) AS n FROM pages").column("n").to_pylist() == [0]


def test_table_prefix_and_database_names(capsys, local_out: str):
    rows = run_json(
        capsys,
        local_out,
        "SELECT count(*) AS n FROM archive.prod_errors",
        "--database",
        "archive",
        "--table-prefix",
        "prod_",
    )
    assert rows == [{"n": 1}]


def test_table_and_csv_formats(capsys, local_out: str):
    assert htr(["query", local_out, PAGES_PER_DOC]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["doc_id", "pages"] and lines[2].split() == ["letter", "2"]
    assert lines[-1] == "(2 rows)"
    assert (
        htr(
            ["query", local_out, "SELECT doc_id, polygon, processed_at FROM words LIMIT 1", "--format", "csv"]
        )
        == 0
    )
    (row,) = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert json.loads(row["polygon"])[0] == {"x": 10.0, "y": 0.0}
    assert row["processed_at"].startswith("2024-05-01T10:00:00")


def test_bad_sql_is_a_clear_error(capsys, local_out: str):
    assert htr(["query", local_out, "SELECT nope FROM words"]) == EXIT_BAD_ARGS
    assert "htr query: error: query failed" in capsys.readouterr().err
    with pytest.raises(q.QueryError, match="database"):
        q.query(local_out, "SELECT 1", database="Bad-Name")


# ---- htr query, S3 ------------------------------------------------------------------------------


def test_query_s3_answers_the_same(s3_out: str):
    def rows(sql: str) -> list[dict]:
        return q.rows_for_output(q.query(s3_out, sql))

    assert rows(SEARCH) == [{"doc_id": "letter", "page": 1, "line_idx": 1, "text": "harvest"}]
    assert [r["text"] for r in rows(LOW_CONF)] == ["harvest", "truly"]
    assert rows(PAGES_PER_DOC) == [{"doc_id": "letter", "pages": 2}, {"doc_id": "memo", "pages": 1}]
    assert rows("SELECT error_type FROM errors") == [{"error_type": "EncryptedDocument"}]


def test_httpfs_is_loaded_from_the_wheel_not_installed(s3_out: str):
    con = q.connect(s3_out)
    try:  # httpfs's own setting exists: it is loaded; duckdb_extensions() would scan ~/.duckdb,
        # which the confined connection may not (the subprocess test below sees none made)
        assert con.execute("SELECT current_setting('s3_url_style')").fetchone() is not None
        assert con.execute("SELECT current_setting('autoinstall_known_extensions')").fetchone() == (False,)
        assert con.execute("SELECT current_setting('enable_external_access')").fetchone() == (False,)
    finally:
        con.close()


def test_query_cli_subprocess_over_s3(s3_out: str, tmp_path: Path):
    """The real entry point in a fresh process, with an empty HOME: nothing cached, nothing fetched."""
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "-m", "batch.cli", "query", s3_out, LOW_CONF, "--format", "csv"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert list(csv.reader(io.StringIO(proc.stdout))) == [
        ["doc_id", "text", "confidence"],
        ["letter", "harvest", "0.31"],
        ["letter", "truly", "0.42"],
    ]
    assert "testing" not in proc.stdout + proc.stderr  # the dummy credentials never surface
    assert not (tmp_path / "home" / ".duckdb").exists()


# ---- htr athena-ddl -----------------------------------------------------------------------------


def test_ddl_column_types_equal_the_written_parquet_schema(capsys, s3_out: str):
    assert htr(["athena-ddl", s3_out]) == 0
    statements = capsys.readouterr().out.split("\n\n")
    assert statements[0] == "CREATE DATABASE IF NOT EXISTS `htr`;"
    for table, ddl in zip(TABLES, statements[1:], strict=True):
        columns, partitions = athena.parse_ddl_columns(ddl)
        part = next(storage.list_objects(storage.join(s3_out, table), include=["*.parquet"]))
        written = pq.read_schema(io.BytesIO(storage.read_bytes(part.uri)))
        assert columns == athena.hive_columns(written)
        assert list(columns) == written.names  # same order too
        assert partitions == {"run_date": "string"}
        location = storage.join(s3_out, table) + "/"
        assert f"LOCATION '{location}'" in ddl
        assert f"'storage.location.template'='{location}run_date=${{run_date}}/'" in ddl
        assert "'projection.run_date.type'='date'" in ddl and "STORED AS PARQUET" in ddl


def test_ddl_types_spelled_out():
    columns, _ = athena.parse_ddl_columns(athena.ddl_for("words", TABLES["words"], "s3://b/o/words", "htr"))
    assert columns["polygon"] == "array<struct<x:double,y:double>>"
    assert (columns["doc_id"], columns["page"], columns["confidence"], columns["processed_at"]) == (
        "string",
        "int",
        "float",
        "timestamp",
    )
    assert athena.hive_type(pa.int64()) == "bigint" and athena.hive_type(pa.float64()) == "double"
    with pytest.raises(TypeError, match="no Athena type"):
        athena.hive_type(pa.binary())


def test_ddl_names_and_bad_args(capsys):
    assert htr(["athena-ddl", "s3://b/out", "--database", "archive", "--table-prefix", "prod_"]) == 0
    out = capsys.readouterr().out
    assert "CREATE EXTERNAL TABLE IF NOT EXISTS `archive`.`prod_pages`" in out
    assert "LOCATION 's3://b/out/pages/'" in out
    assert htr(["athena-ddl", "/local/out"]) == EXIT_BAD_ARGS
    assert "must be s3://" in capsys.readouterr().err
    assert htr(["athena-ddl", "s3://b/out", "--database", "My-DB"]) == EXIT_BAD_ARGS


# ---- read-only, confined to the output ------------------------------------------------------------

ESCAPES = [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM glob('/root/*')",
    "SELECT * FROM read_parquet('{out}/../*/**/*.parquet')",
    "COPY (SELECT 1) TO '{tmp}/copied.csv'",
    "COPY (SELECT * FROM words) TO '{out}/words/run_date=2024-05-01/evil.parquet'",
    "ATTACH '{tmp}/other.duckdb' AS other",
    "CREATE TABLE evil AS SELECT 1",
    "SET enable_external_access = true",
    "INSTALL httpfs",
    "SELECT 1; COPY (SELECT 1) TO '{tmp}/second.csv'",
]


@pytest.mark.parametrize("sql", ESCAPES)
def test_query_cannot_read_or_write_outside_the_output(sql: str, capsys, local_out: str, tmp_path: Path):
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    rc = htr(["query", local_out, sql.format(out=local_out, tmp=tmp_path)])
    _, err = capsys.readouterr()
    assert rc != 0 and "htr query: error:" in err
    assert "root:" not in err  # nothing of /etc/passwd in the message either
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


S3_ESCAPES = [
    "SELECT * FROM read_parquet('s3://{bucket}/elsewhere/*.parquet')",  # same bucket, outside OUT
    "SELECT * FROM read_text('s3://{bucket}/secret.txt')",
    "SELECT * FROM read_text('s3://{bucket}/htr/outside.txt')",  # a sibling of OUT's prefix
    "SELECT * FROM glob('s3://{bucket}/*')",
    "SELECT * FROM read_text('{endpoint}/{bucket}/secret.txt')",  # plain HTTP(S), through httpfs
    "COPY (SELECT 1) TO 's3://{bucket}/copied.csv'",
    "COPY (SELECT * FROM words) TO 's3://{bucket}/htr/out/words/run_date=2024-05-01/evil.parquet'",
]


def test_s3_query_cannot_read_or_write_outside_the_output(s3_out: str, s3_endpoint: str):
    """The same confinement over S3 (httpfs loaded): objects next to OUT, in the same bucket
    and readable with the same credentials, stay out of reach, and nothing is written."""
    from tests.s3_server import s3_client

    bucket = storage.split_s3(s3_out)[0]
    client = s3_client(s3_endpoint)
    buf = io.BytesIO()
    pq.write_table(pa.table({"x": [1]}), buf)
    for key, body in (
        ("elsewhere/a.parquet", buf.getvalue()),
        ("secret.txt", b"top secret"),
        ("htr/outside.txt", b"top secret"),
    ):
        client.put_object(Bucket=bucket, Key=key, Body=body)
    before = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))
    con = q.connect(s3_out)  # one confined connection (as q.query makes): httpfs loads once
    try:
        for sql in S3_ESCAPES:
            with pytest.raises((q.QueryError, duckdb.Error)) as refused:
                q.check_read_only(con, sql.format(bucket=bucket, endpoint=s3_endpoint))
                con.execute(sql.format(bucket=bucket, endpoint=s3_endpoint)).fetchall()
            assert "top secret" not in str(refused.value), sql
        # the output itself reads through the same table functions
        own = f"SELECT count(*) FROM read_parquet('{s3_out}words/**/*.parquet')"
        assert con.execute(own).fetchall() == [(11,)]
    finally:
        con.close()
    assert sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])) == before
    with pytest.raises(q.QueryError, match="Permission Error"):  # and the command's path refuses too
        q.query(s3_out, S3_ESCAPES[0].format(bucket=bucket))


def test_query_may_still_read_its_own_output_any_way(capsys, local_out: str):
    sql = (
        f"SELECT count(*) AS n FROM read_parquet('{local_out}/words/**/*.parquet') "
        "UNION ALL SELECT count(*) FROM words"
    )
    assert [r["n"] for r in run_json(capsys, local_out, sql)] == [11, 11]


def test_endpoint_credentials_never_reach_a_message(
    capsys, monkeypatch, tmp_path: Path, tiny_models, s3_endpoint, fresh_storage
):
    """`--s3-endpoint-url http://KEY:SECRET@host`: whatever fails, neither half is printed."""
    monkeypatch.setenv("HTR_S3_MAX_ATTEMPTS", "1")
    url = "http://AKIDLEAKYKEY:VERYSECRETVALUE@127.0.0.1:9"
    assert htr(["query", "s3://bucket/out/", "SELECT 1", "--s3-endpoint-url", url]) != 0
    assert (
        htr(
            [
                "run",
                str(tmp_path),
                "s3://bucket/out/",
                "--s3-endpoint-url",
                url,
                "--models",
                str(tiny_models),
                "--no-progress",
            ]
        )
        != 0
    )
    out, err = capsys.readouterr()
    assert "AKIDLEAKYKEY" not in out + err and "VERYSECRETVALUE" not in out + err
    assert "***@127.0.0.1:9" in err
