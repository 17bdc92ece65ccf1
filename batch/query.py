"""`htr query OUT "SQL"`: SQL over an output (local folder or s3://) with DuckDB.

Views are named like the Athena tables from `htr athena-ddl` (batch.athena): `words`,
`pages`, `errors` (with the same optional prefix), each also as `<database>.<name>`,
so a query tried here runs unchanged in Athena. `run_date` is a string column, as
in Athena. A table with no Parquet yet (often `errors`) is an empty view with the
right columns, so queries on the others still work.

For s3:// the httpfs extension is LOADed straight from the duckdb-extension-httpfs
wheel: never downloaded, never INSTALLed into ~/.duckdb (which may be read-only in
a container), and DuckDB's extension auto-install is switched off so a missing
extension fails loudly instead of reaching for the network.

Read-only and confined to the output: only SELECT (and EXPLAIN) statements run; once the
views exist, DuckDB may open files only under OUT (`allowed_directories`), external access
is off and the configuration is locked, so a query cannot read `/etc/passwd`, glob or
ATTACH outside OUT, COPY anything anywhere, or switch those settings back.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import importlib.resources
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlparse

import duckdb
import numpy as np
import pyarrow as pa

from batch import storage
from batch.athena import DEFAULT_DATABASE, check_names, table_name
from batch.core.errors import EXIT_BAD_ARGS, EXIT_FATAL, EXIT_OK, HtrError, StorageError
from batch.core.schema import PARTITION_COLUMN, TABLES

FORMATS = ("table", "csv", "json")
MAX_CELL = 60  # characters shown per cell in --format table
READ_ONLY = {"SELECT", "EXPLAIN"}  # DESCRIBE, SHOW, SUMMARIZE, PRAGMA version, VALUES parse as SELECT


class QueryError(HtrError):
    """The SQL failed (syntax, unknown column, ...) or DuckDB could not be set up."""

    stage = "query"


def query(out_uri: str, sql: str, database: str = DEFAULT_DATABASE, table_prefix: str = "") -> pa.Table:
    """Run `sql` over the output at `out_uri`; the result as an Arrow table."""
    con = connect(out_uri, database, table_prefix)
    try:
        check_read_only(con, sql)
        return con.execute(sql).to_arrow_table()
    except (duckdb.IOException, duckdb.HTTPException) as e:
        raise StorageError(f"query over {out_uri} could not read its files: {e}") from e
    except duckdb.Error as e:
        raise QueryError(f"query failed: {e}") from e
    finally:
        con.close()


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """QueryError unless every statement of `sql` only reads (SELECT / EXPLAIN)."""
    try:
        kinds = [s.type.name for s in con.extract_statements(sql)]
    except duckdb.Error as e:
        raise QueryError(f"query failed: {e}") from e
    refused = sorted({k for k in kinds if k not in READ_ONLY})
    if refused:
        raise QueryError(
            f"htr query is read-only: {', '.join(refused)} statements are refused "
            "(use SELECT over words, pages, errors)"
        )


def connect(
    out_uri: str, database: str = DEFAULT_DATABASE, table_prefix: str = ""
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the output's tables as views, confined to them."""
    try:
        check_names(database, table_prefix)
    except ValueError as e:
        raise QueryError(str(e)) from e
    if not storage.is_s3(out_uri):
        out_uri = os.path.abspath(out_uri[len("file://") :] if out_uri.startswith("file://") else out_uri)
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    try:
        if storage.is_s3(out_uri):
            _load_httpfs(con)
            _create_s3_secret(con, out_uri)
        if database != "main":
            con.execute(f'CREATE SCHEMA IF NOT EXISTS "{database}"')
        for table, schema in TABLES.items():
            _create_view(con, out_uri, table, schema, database, table_prefix)
        _confine(con, out_uri)
    except duckdb.Error as e:
        con.close()
        raise QueryError(f"cannot set up DuckDB over {out_uri}: {e}") from e
    return con


def _confine(con: duckdb.DuckDBPyConnection, out_uri: str) -> None:
    """From here on DuckDB opens only files under OUT, and nothing can undo that."""
    root = out_uri.rstrip("/") + "/"
    con.execute(f"SET allowed_directories = [{_sql_str(root)}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET TimeZone = 'UTC'")  # timestamps as Athena shows them, whatever the machine's TZ
    con.execute("SET lock_configuration = true")


def httpfs_extension_path(con: duckdb.DuckDBPyConnection) -> Path:
    """Where the duckdb-extension-httpfs wheel keeps the build for this DuckDB version."""
    row = con.execute("PRAGMA version").fetchone()
    assert row is not None  # PRAGMA version always answers one row
    version = row[0]  # e.g. 'v1.5.5'
    try:
        package = importlib.resources.files("duckdb_extension_httpfs")
    except ModuleNotFoundError as e:
        raise QueryError("s3:// needs the duckdb-extension-httpfs package") from e
    path = Path(str(package)) / "extensions" / version / "httpfs.duckdb_extension"
    if not path.is_file():
        raise QueryError(
            f"no httpfs extension for DuckDB {version} at {path}: "
            f"install duckdb-extension-httpfs=={version.lstrip('v')}"
        )
    return path


def _load_httpfs(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"LOAD {_sql_str(str(httpfs_extension_path(con)))}")
    con.execute(f"SET http_retries = {storage.get_config().max_attempts}")


def _create_s3_secret(con: duckdb.DuckDBPyConnection, out_uri: str) -> None:
    """A temporary (in-memory) DuckDB S3 secret from boto3's credential chain and the
    storage endpoint. The statement holds credentials: it is never logged or echoed."""
    bucket, _ = storage.split_s3(out_uri)
    session = storage.session()
    params: dict[str, Any] = {
        "TYPE": "s3",
        "SCOPE": f"s3://{bucket}",
        "REGION": storage.get_config().region or session.region_name or "us-east-1",
    }
    creds = session.get_credentials()
    if creds is not None:
        frozen = creds.get_frozen_credentials()
        params.update(KEY_ID=frozen.access_key, SECRET=frozen.secret_key)
        if frozen.token:
            params["SESSION_TOKEN"] = frozen.token
    endpoint = storage.endpoint_url()
    if endpoint:  # S3-compatible (moto, MinIO): host:port, path-style, TLS per the URL's scheme
        url = urlparse(endpoint)
        params.update(ENDPOINT=url.netloc, URL_STYLE="path", USE_SSL=url.scheme == "https")
    body = ", ".join(f"{k} {v if isinstance(v, bool) else _sql_str(str(v))}" for k, v in params.items())
    con.execute(f"CREATE OR REPLACE TEMPORARY SECRET htr_s3 ({body})")


def _create_view(
    con: duckdb.DuckDBPyConnection, out_uri: str, table: str, schema: pa.Schema, database: str, prefix: str
) -> None:
    name = table_name(table, prefix)
    folder = storage.join(out_uri, table)
    # The schema's own columns, no rows: the view has every current column even where the output
    # holds only older parts (a version-1 output: line_polygon, dpi, ... come out null).
    empty = schema.empty_table().append_column(PARTITION_COLUMN, pa.array([], pa.string()))
    con.register(f"_empty_{name}", empty)
    source = f'"_empty_{name}"'
    if _has_parquet(folder):
        glob = storage.join(folder, "**", "*.parquet")
        parts = (
            f"read_parquet({_sql_str(glob)}, hive_partitioning = true, union_by_name = true, "
            f"hive_types = {{'{PARTITION_COLUMN}': 'VARCHAR'}})"
        )
        source = f"(SELECT * FROM {source} UNION ALL BY NAME SELECT * FROM {parts})"
    con.execute(f'CREATE VIEW main."{name}" AS SELECT * FROM {source}')
    if database != "main":
        con.execute(f'CREATE VIEW "{database}"."{name}" AS SELECT * FROM main."{name}"')


def _has_parquet(folder: str) -> bool:
    try:
        return next(storage.list_objects(folder, include=["*.parquet"]), None) is not None
    except storage.NotFound:
        return False


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# ---- output formats ---------------------------------------------------------------------------


def rows_for_output(table: pa.Table) -> list[dict[str, Any]]:
    """Plain JSON-able rows: float32 at its own precision (0.87, not 0.8700000047683716),
    timestamps as ISO 8601."""
    columns = {}
    for field, column in zip(table.schema, table.columns):
        values = column.to_pylist()
        if field.type == pa.float32():
            values = [None if v is None else float(str(np.float32(v))) for v in values]
        columns[field.name] = [_plain(v) for v in values]
    return [dict(zip(columns, row)) for row in zip(*columns.values())] if columns else []


def _plain(v: Any) -> Any:
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat()
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, bytes):
        return v.hex()
    return v


def format_table(names: list[str], rows: list[dict[str, Any]]) -> str:
    cells = [[_cell(r[n]) for n in names] for r in rows]
    widths = [max([len(n)] + [len(c[i]) for c in cells]) for i, n in enumerate(names)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    out = [line(names), line(["-" * w for w in widths])] + [line(c) for c in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def _cell(v: Any) -> str:
    text = (
        "NULL" if v is None else json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else str(v)
    )
    text = text.replace("\n", "\\n")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def write_output(table: pa.Table, fmt: str, out: TextIO | None = None) -> None:
    out = out or sys.stdout  # looked up at call time (tests capture it)
    names, rows = table.column_names, rows_for_output(table)
    if fmt == "table":
        print(format_table(names, rows), file=out)
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        for r in rows:
            writer.writerow(
                [
                    ""
                    if r[n] is None
                    else json.dumps(r[n], ensure_ascii=False)
                    if isinstance(r[n], (list, dict))
                    else r[n]
                    for n in names
                ]
            )
    else:  # json: an array, one row object per line (valid JSON, still greppable)
        body = ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows)
        print(f"[\n{body}\n]" if rows else "[]", file=out)


# ---- CLI --------------------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="the output root: a folder or s3://bucket/prefix/")
    parser.add_argument("sql", metavar="SQL", help="the query, over views words, pages, errors")
    parser.add_argument("--format", choices=FORMATS, default="table", help="default: %(default)s")
    parser.add_argument(
        "--database",
        default=DEFAULT_DATABASE,
        help="schema the views also live in, as in Athena (default: %(default)s)",
    )
    parser.add_argument("--table-prefix", default="", help="prefix of the view names, as in athena-ddl")
    storage.add_arguments(parser, writes=False)


def main(args: argparse.Namespace) -> int:
    try:
        storage.configure_from_args(args)
        result = query(args.out, args.sql, args.database, args.table_prefix)
    except QueryError as e:
        print(f"htr query: error: {e}", file=sys.stderr)
        return EXIT_BAD_ARGS
    except StorageError as e:
        print(f"htr query: error: {e}", file=sys.stderr)
        return EXIT_FATAL
    write_output(result, args.format)
    return EXIT_OK
