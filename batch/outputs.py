"""Writers for a run's outputs, local folder or s3:// prefix alike (through batch.storage):

  OUT/documents/<doc_id>.json                       one per document (batch.schema)
  OUT/words/run_date=YYYY-MM-DD/part-*.parquet      one row per word
  OUT/pages/run_date=YYYY-MM-DD/part-*.parquet      one row per page
  OUT/errors/run_date=YYYY-MM-DD/part-*.parquet     one row per failed document

Rows are buffered and written as parts of a useful size (Athena reads few large files
much faster than many tiny ones); a part's name is fixed by the run id and its sequence.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from batch import storage
from batch.schema import (DocumentRecord, ErrorRecord, error_rows, page_rows, run_date, to_table,
                          word_rows, PARTITION_COLUMN)


def parquet_bytes(table: pa.Table, compression: str = "zstd") -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression=compression)
    return buf.getvalue()


@dataclass
class OutputWriter:
    out_uri: str
    run_id: str
    rows_per_part: int = 200_000          # ~ tens of MB of words per part
    compression: str = "zstd"
    buffers: dict[str, list[dict]] = field(default_factory=lambda: {"words": [], "pages": [], "errors": []})
    seq: dict[str, int] = field(default_factory=lambda: {"words": 0, "pages": 0, "errors": 0})
    written: list[str] = field(default_factory=list)

    def document_uri(self, doc_id: str) -> str:
        return storage.join(self.out_uri, "documents", f"{doc_id}.json")

    def add_document(self, doc: DocumentRecord) -> None:
        storage.write_bytes(self.document_uri(doc.doc_id), doc.dumps().encode(), "application/json")
        self.buffers["words"].extend(word_rows(doc))
        self.buffers["pages"].extend(page_rows(doc))
        self._maybe_flush()

    def add_error(self, err: ErrorRecord) -> None:
        self.buffers["errors"].extend(error_rows(err))
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if len(self.buffers["words"]) >= self.rows_per_part:
            self.flush()

    def flush(self) -> None:
        for table, rows in self.buffers.items():
            if rows:
                self._write_part(table, rows)
                self.buffers[table] = []

    def _write_part(self, table: str, rows: list[dict]) -> None:
        by_date: dict[str, list[dict]] = {}
        for r in rows:
            by_date.setdefault(run_date(r["processed_at"]), []).append(r)
        for date, part_rows in sorted(by_date.items()):
            name = f"part-{self.run_id}-{self.seq[table]:05d}.parquet"
            uri = storage.join(self.out_uri, table, f"{PARTITION_COLUMN}={date}", name)
            storage.write_bytes(uri, parquet_bytes(to_table(table, part_rows), self.compression))
            self.seq[table] += 1
            self.written.append(uri)

    def close(self) -> None:
        self.flush()


def read_table(out_uri: str, table: str) -> pa.Table:
    """All parts of one output table (for tests and tools); empty table if none."""
    from batch.schema import TABLES

    parts = [u for u in storage.list_uris(storage.join(out_uri, table)) if u.endswith(".parquet")]
    if not parts:
        return TABLES[table].empty_table()
    return pa.concat_tables(pq.read_table(io.BytesIO(storage.read_bytes(u))).select(TABLES[table].names)
                            .cast(TABLES[table]) for u in parts)


def read_documents(out_uri: str) -> list[dict]:
    return [json.loads(storage.read_bytes(u)) for u in storage.list_uris(storage.join(out_uri, "documents"))
            if u.endswith(".json")]
