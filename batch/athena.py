"""`htr athena-ddl OUT`: CREATE EXTERNAL TABLE statements for an output on S3.

The column lists are generated from the Arrow schemas in batch.core.schema, so the DDL
cannot drift from what the writer puts in Parquet. Tables are partitioned by
`run_date` (a string 'YYYY-MM-DD', as in the Hive folder names) and use partition
projection, so new days are queryable without MSCK REPAIR or crawlers.

Naming is shared with `htr query` (batch.query): table `<prefix><name>` in database
`<database>`, so SQL tested locally with DuckDB runs unchanged in Athena.
"""

from __future__ import annotations

import argparse
import re
import sys

import pyarrow as pa

from batch import storage
from batch.core.errors import EXIT_BAD_ARGS, EXIT_OK
from batch.core.schema import PARTITION_COLUMN, SCHEMA_VERSION, TABLES, columns_since

DEFAULT_DATABASE = "htr"
PROJECTION_START = "2020-01-01"
_IDENTIFIER = re.compile(r"^[a-z0-9_]*$")  # what Athena (Glue) accepts without surprises

_SCALAR_TYPES: dict[pa.DataType, str] = {
    pa.string(): "string",
    pa.large_string(): "string",
    pa.bool_(): "boolean",
    pa.int8(): "tinyint",
    pa.int16(): "smallint",
    pa.int32(): "int",
    pa.int64(): "bigint",
    pa.float32(): "float",
    pa.float64(): "double",
    pa.date32(): "date",
}


def hive_type(t: pa.DataType) -> str:
    """The Athena/Hive type that reads an Arrow-written Parquet column of type `t`."""
    if t in _SCALAR_TYPES:
        return _SCALAR_TYPES[t]
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"array<{hive_type(t.value_type)}>"
    if pa.types.is_struct(t):
        return "struct<" + ",".join(f"{f.name}:{hive_type(f.type)}" for f in t) + ">"
    raise TypeError(f"no Athena type for Arrow type {t}: extend batch.athena.hive_type")


def hive_columns(schema: pa.Schema) -> dict[str, str]:
    return {f.name: hive_type(f.type) for f in schema}


def table_name(table: str, prefix: str = "") -> str:
    return f"{prefix}{table}"


def check_names(database: str, prefix: str) -> None:
    """Athena lower-cases names and dislikes most punctuation: insist on [a-z0-9_]."""
    for what, value in (("database", database), ("table prefix", prefix)):
        if not _IDENTIFIER.match(value) or (what == "database" and not value):
            raise ValueError(f"{what} {value!r} must be lowercase letters, digits and '_'")


def ddl_for(
    table_name: str,
    schema: pa.Schema,
    location: str,
    database: str = DEFAULT_DATABASE,
    projection_start: str = PROJECTION_START,
) -> str:
    """CREATE EXTERNAL TABLE for one Hive-partitioned Parquet table at `location` (s3://.../)."""
    location = location.rstrip("/") + "/"
    if "'" in location or "\\" in location:
        raise ValueError(f"location {location!r} must not contain quotes or backslashes")
    columns = ",\n".join(f"  `{name}` {typ}" for name, typ in hive_columns(schema).items())
    p = PARTITION_COLUMN
    props = {
        "projection.enabled": "true",
        f"projection.{p}.type": "date",
        f"projection.{p}.format": "yyyy-MM-dd",
        f"projection.{p}.range": f"{projection_start},NOW",
        f"projection.{p}.interval": "1",
        f"projection.{p}.interval.unit": "DAYS",
        "storage.location.template": f"{location}{p}=${{{p}}}/",
    }
    tblprops = ",\n".join(f"  '{k}'='{v}'" for k, v in props.items())
    return (
        f"CREATE EXTERNAL TABLE IF NOT EXISTS `{database}`.`{table_name}` (\n{columns}\n)\n"
        f"PARTITIONED BY (`{p}` string)\n"
        f"STORED AS PARQUET\n"
        f"LOCATION '{location}'\n"
        f"TBLPROPERTIES (\n{tblprops}\n);"
    )


def all_ddl(out_uri: str, database: str = DEFAULT_DATABASE, prefix: str = "") -> list[str]:
    """CREATE DATABASE + one CREATE EXTERNAL TABLE per output table."""
    check_names(database, prefix)
    statements = [f"CREATE DATABASE IF NOT EXISTS `{database}`;"]
    for name, schema in TABLES.items():
        statements.append(ddl_for(table_name(name, prefix), schema, storage.join(out_uri, name), database))
    return statements


def upgrade_ddl(from_version: int, database: str = DEFAULT_DATABASE, prefix: str = "") -> list[str]:
    """ALTER TABLE ... ADD COLUMNS for tables an older `htr athena-ddl` created (CREATE ... IF NOT
    EXISTS leaves an existing table's columns as they were, so the new columns would never show).
    Parquet columns are read by name: old parts answer null in the added columns."""
    check_names(database, prefix)
    statements = []
    for name in TABLES:
        added = columns_since(from_version, name)
        if added:
            columns = ", ".join(f"`{f.name}` {hive_type(f.type)}" for f in added)
            statements.append(
                f"ALTER TABLE `{database}`.`{table_name(name, prefix)}` ADD COLUMNS ({columns});"
            )
    return statements


# ---- parsing DDL back (tests compare it with written Parquet files) --------------------------


def parse_ddl_columns(ddl: str) -> tuple[dict[str, str], dict[str, str]]:
    """(columns, partition columns) as {name: type} from a CREATE EXTERNAL TABLE statement."""
    body_start = ddl.index("(", ddl.upper().index("CREATE EXTERNAL TABLE"))
    columns, after = _bracketed(ddl, body_start)
    part_at = ddl.upper().find("PARTITIONED BY", after)
    partitions = _bracketed(ddl, ddl.index("(", part_at))[0] if part_at >= 0 else ""
    return _column_defs(columns), _column_defs(partitions)


def _bracketed(text: str, open_at: int) -> tuple[str, int]:
    """The text inside the parenthesis opening at `open_at`, and the index after its close."""
    depth = 0
    for i in range(open_at, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[open_at + 1 : i], i + 1
    raise ValueError("unbalanced parentheses in DDL")


def _column_defs(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in _split_top_level(text):
        name, _, typ = item.strip().partition(" ")
        out[name.strip("`")] = typ.strip()
    return out


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside <...> and (...), e.g. inside struct<x:double,y:double>."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        depth += 1 if c in "<(" else -1 if c in ">)" else 0
        if c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p.strip()]


# ---- CLI --------------------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="the output root, s3://bucket/prefix/")
    parser.add_argument("--database", default=DEFAULT_DATABASE, help="Athena database (default: %(default)s)")
    parser.add_argument("--table-prefix", default="", help="prefix for the table names, e.g. 'prod_'")
    parser.add_argument(
        "--upgrade-from",
        type=int,
        metavar="VERSION",
        help="print ALTER TABLE ... ADD COLUMNS for tables created by the DDL of this schema "
        f"version instead (this htr writes version {SCHEMA_VERSION})",
    )


def main(args: argparse.Namespace) -> int:
    if not storage.is_s3(args.out):
        print(
            "htr athena-ddl: error: Athena reads only from S3; OUT must be s3://bucket/prefix/",
            file=sys.stderr,
        )
        return EXIT_BAD_ARGS
    try:
        if args.upgrade_from is not None:
            statements = upgrade_ddl(args.upgrade_from, args.database, args.table_prefix)
        else:
            statements = all_ddl(args.out, args.database, args.table_prefix)
    except ValueError as e:
        print(f"htr athena-ddl: error: {e}", file=sys.stderr)
        return EXIT_BAD_ARGS
    print(
        "\n\n".join(statements)
        if statements
        else f"-- nothing to add: the tables are at version {SCHEMA_VERSION}"
    )
    return EXIT_OK
