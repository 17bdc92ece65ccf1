"""Writers for a run's outputs, local folder or s3:// prefix alike (through batch.storage):

  OUT/documents/<doc_id>.json                               one per document (batch.schema)
  OUT/words/run_date=YYYY-MM-DD/part-<writer>-<n>.parquet   one row per word
  OUT/pages/run_date=YYYY-MM-DD/part-<writer>-<n>.parquet   one row per page
  OUT/errors/run_date=YYYY-MM-DD/part-<writer>-<n>.parquet  one row per failed document
  OUT/_ledger/                                              the commit log (batch.ledger)

Exactly once. Each source (input object) has exactly one set of rows: those of its latest
committed processing, either words + pages + a document JSON (status ok) or one errors row
(status error; a document that failed last night and succeeds tonight leaves errors/).
Documents are committed in batches (`docs_per_part` documents or `rows_per_part` word rows,
whichever comes first; one batch = one part per table and day, sized for Athena):

  1. stage    each document's JSON -> _ledger/pending/<batch>/<doc_id>.json, as it finishes
  2. parts    the batch's rows -> new parts; every name is unique (writer id + sequence)
  3. rewrite  live parts holding older rows of the batch's sources (changed objects, retried
              failures, --reprocess) are rewritten without those rows, as new parts
  4. marker   _ledger/pending/<batch>/_batch
  5. COMMIT   ledger entry N+1, put-if-absent: the batch's sources, the parts it adds (and
              which sources each holds), the parts it removes (the ones rewritten in 3), the
              documents no longer live. Nothing before this point is part of the output.
  6. publish  staged JSON -> documents/, removed parts and dead documents' JSON deleted,
              then the pending folder (its marker last)

`OutputWriter.open()` (first thing in every run) recovers: a pending batch that has an entry
gets step 6 again (every step is idempotent); one without an entry is deleted; a part that
no entry lists (an orphan from a killed run) is deleted. Parquet parts hold many documents,
so superseding rewrites whole parts (step 3) instead of tombstoning rows: what Athena reads
is then simply every file under words/, pages/, errors/. Between a kill and the next run's
recovery, orphans and removed parts may still be there; `read_table(..., committed=True)`
reads exactly the committed parts at any time.

Shards (`--shard i/n`) share one OUT: names carry the shard tag, so a shard only ever
deletes its own uncommitted files; an unsharded writer assumes it is the only one and
cleans up after anyone. A writer takes its shard's lease (_ledger/writers/<tag>.json) before
recovering and checks it before each commit, so when two runs of one shard overlap, the
older one stops instead of committing parts the newer one has just cleaned away.

Test hook: HTR_CRASH_AT=<point>:<n> SIGKILLs the process the n-th time it reaches <point>,
one of part-before, part-after, rewrite-after, commit-before, commit-after, publish-after.
"""
from __future__ import annotations

import io
import json
import os
import posixpath
import signal
import threading
import uuid
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batch import storage
from batch.errors import HtrError, StorageError
from batch.exports import stale_uris
from batch.ledger import PENDING, WRITERS, Ledger, LedgerState, Shard, tag_of
from batch.schema import (DocumentRecord, ErrorRecord, PARTITION_COLUMN, TABLES, conform, error_rows,
                          iso, iter_word_rows, now_ms, page_rows, run_date, to_table)

COMPRESSIONS = ("zstd", "snappy")
DOCUMENTS = "documents"
MARKER = "_batch"
EXPORTS = "exports"   # pending/<batch>/exports/<doc_id>/<path under OUT>: archive formats (batch.exports)
CRASH_ENV = "HTR_CRASH_AT"
_MAX_CONFLICTS = 50  # commit attempts lost to other writers before giving up


class CommitFailed(HtrError):
    """A batch could not be committed (storage failing after retries): the run stops; the
    next run recovers and redoes the batch."""

    stage = "commit"


# ---- test hook ---------------------------------------------------------------------------------

_crash_hits: Counter = Counter()
_crash_lock = threading.Lock()


def crash_point(name: str) -> None:
    """kill -9 ourselves at the n-th `name` when HTR_CRASH_AT=name:n (tests only)."""
    spec = os.environ.get(CRASH_ENV, "")
    point, _, n = spec.partition(":")
    if point != name:
        return
    with _crash_lock:
        _crash_hits[name] += 1
        if _crash_hits[name] == int(n or 1):
            os.kill(os.getpid(), signal.SIGKILL)


# ---- helpers -----------------------------------------------------------------------------------

def parquet_bytes(table: pa.Table, compression: str = "zstd") -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression=compression)
    return buf.getvalue()


def _read_parquet(uri: str, table: str) -> pa.Table:
    return conform(pq.read_table(io.BytesIO(storage.read_bytes(uri))), table)  # older versions too


def _by_date(table: pa.Table) -> dict[str, pa.Table]:
    """Rows split by the run_date partition of their processed_at."""
    days = [run_date(ms) for ms in table.column("processed_at").cast(pa.int64()).to_pylist()]
    return {d: table.filter(pa.array([x == d for x in days])) for d in sorted(set(days))}


class _Uploads:
    """Object writes on a few threads: S3 round trips, not CPU, bound the writer. At most
    `queued` writes wait at a time, so staged JSON never piles up in memory."""

    def __init__(self, threads: int = 8, queued: int = 32):
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="out-io")
        self.slots = threading.BoundedSemaphore(queued)
        self.futures: list[Future] = []

    def submit(self, fn: Callable, *args: Any) -> None:
        self.slots.acquire()
        future = self.pool.submit(fn, *args)
        future.add_done_callback(lambda _: self.slots.release())
        self.futures.append(future)

    def wait(self) -> None:
        """Until everything submitted is written; raises the first failure."""
        futures, self.futures = self.futures, []
        errors = [e for e in (f.exception() for f in futures) if e is not None]
        if errors:
            raise errors[0]

    def map(self, fn: Callable, items: Iterable) -> list:
        return list(self.pool.map(fn, items))

    def close(self) -> None:
        self.pool.shutdown(wait=True)


@dataclass
class _Item:
    """One source's contribution to the batch being assembled."""
    source: dict[str, Any]                 # its ledger record (batch.ledger.SourceState fields)
    tables: dict[str, pa.Table]            # its rows, by table


@dataclass
class Recovery:
    """What `OutputWriter.open` cleaned up after an earlier, interrupted run."""
    finished: int = 0      # committed batches whose publish step was redone
    abandoned: int = 0     # uncommitted batches whose staged files were deleted
    orphans: int = 0       # uncommitted parts deleted
    foreign: int = 0       # Parquet files no ledger ever knew (left alone)

    def __bool__(self) -> bool:
        return bool(self.finished or self.abandoned or self.orphans or self.foreign)

    def summary(self) -> str:
        text = (f"recovered: {self.finished} committed batches finished, {self.abandoned} "
                f"uncommitted batches and {self.orphans} orphan parts removed")
        if self.foreign:
            text += (f"; {self.foreign} Parquet files not written by a ledger-aware run were "
                     "left alone (their rows are outside the exactly-once guarantee)")
        return text


# ---- the writer --------------------------------------------------------------------------------

@dataclass
class OutputWriter:
    out_uri: str
    run_id: str
    rows_per_part: int = 200_000          # word rows per batch (~ tens of MB of Parquet)
    compression: str = "zstd"
    docs_per_part: int = 1000             # documents per batch: also the most a kill can undo
    shard: Shard = field(default_factory=Shard)
    model_version: str = ""               # recorded for error rows (they have no model output)
    # archive formats: doc -> {path under OUT: bytes} (batch.exports.renderer), staged and
    # published with the document's JSON
    exports: Callable[[DocumentRecord], dict[str, bytes]] | None = None
    written: list[str] = field(default_factory=list)   # part URIs this writer wrote
    committed: int = 0                    # sources committed by this writer

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}")
        self.ledger = Ledger(self.out_uri)
        self.writer_id = f"{self.run_id}-{self.shard.tag}-{uuid.uuid4().hex[:6]}"
        self._items: dict[str, _Item] = {}
        self._batch_no = 0
        self._part_no = 0
        self._word_rows = 0
        self._opened = False
        self._io = _Uploads()

    # ---- adding records ------------------------------------------------------------------

    def add_document(self, doc: DocumentRecord, source: storage.SourceObject | None = None) -> None:
        """Stage the document; it is committed with its batch."""
        self.open()
        uri = doc.source_uri or doc.doc_id
        files = self.exports(doc) if self.exports else {}   # first: a failed export fails only this document
        for rel, data in files.items():
            self._io.submit(storage.write_bytes, self._pending_uri(f"{EXPORTS}/{doc.doc_id}/{rel}"), data)
        self._io.submit(storage.write_bytes, self._pending_uri(f"{doc.doc_id}.json"),
                        doc.dumps().encode(), "application/json")
        words = to_table("words", iter_word_rows(doc))
        self._add(uri, _Item(
            self._source(uri, source, doc.source_etag, doc.doc_id, "ok", doc.model_version,
                         doc.run_id, pages=len(doc.pages), words=words.num_rows),
            {"words": words, "pages": to_table("pages", page_rows(doc))}))

    def add_error(self, err: ErrorRecord, source: storage.SourceObject | None = None) -> None:
        self.open()
        uri = err.source_uri or err.doc_id
        self._add(uri, _Item(
            self._source(uri, source, "", err.doc_id, "error", self.model_version, err.run_id),
            {"errors": to_table("errors", error_rows(err))}))

    def _source(self, uri: str, src: storage.SourceObject | None, etag: str, doc_id: str,
                status: str, model_version: str, run_id: str, pages: int = 0,
                words: int = 0) -> dict[str, Any]:
        return {"uri": uri, "etag": src.etag if src else etag, "size": src.size if src else -1,
                "doc_id": doc_id, "status": status, "model_version": model_version,
                "run_id": run_id, "pages": pages, "words": words}

    def _add(self, uri: str, item: _Item) -> None:
        """Buffer a source's rows (a second record for one source replaces the first)."""
        old = self._items.pop(uri, None)
        self._word_rows += item.source["words"] - (old.source["words"] if old else 0)
        self._items[uri] = item
        if len(self._items) >= self.docs_per_part or self._word_rows >= self.rows_per_part:
            self.flush()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._io.close()

    # ---- one batch: parts, rewrites, commit, publish --------------------------------------

    def flush(self) -> None:
        """Commit the buffered batch (no-op if empty). Raises CommitFailed."""
        if not self._items:
            return
        self.open()
        try:
            self._io.wait()  # the batch's staged JSON
            added = self._write_new_parts()
            storage.write_bytes(self._pending_uri(MARKER), b"")
            entry = self._commit(added)
            crash_point("commit-after")
            finish_commit(self.ledger, entry, self._io.map)
        except StorageError as e:
            raise CommitFailed(f"batch {self._batch_id()} not committed: {e}") from e
        self.committed += len(self._items)
        self._items, self._word_rows = {}, 0
        self._batch_no += 1

    def _write_new_parts(self) -> dict[str, set[str]]:
        """The batch's rows as new parts, written in parallel: {relative path: source URIs}."""
        parts: dict[str, pa.Table] = {}
        for table in TABLES:
            tables = [i.tables[table] for i in self._items.values()
                      if table in i.tables and i.tables[table].num_rows]
            if tables:
                for day, rows in _by_date(pa.concat_tables(tables)).items():
                    parts[self._part_name(f"{table}/{PARTITION_COLUMN}={day}")] = rows
        self._io.map(lambda rel: self._write_part(rel, parts[rel], "part"), parts)
        return {rel: set(rows.column("source_uri").to_pylist()) for rel, rows in parts.items()}

    def _part_name(self, folder: str) -> str:
        self._part_no += 1
        return f"{folder}/part-{self.writer_id}-{self._part_no - 1:05d}.parquet"

    def _write_part(self, rel: str, rows: pa.Table, point: str) -> str:
        crash_point(f"{point}-before")
        uri = storage.join(self.out_uri, rel)
        storage.write_bytes(uri, parquet_bytes(rows, self.compression))
        self.written.append(uri)
        crash_point(f"{point}-after")
        return rel

    def _commit(self, added: dict[str, set[str]]) -> dict[str, Any]:
        """Append the batch's ledger entry, re-planning the rewrites whenever another writer
        committed first. Returns the entry as committed."""
        rewrites: dict[tuple[str, frozenset[str]], str | None] = {}   # (old, dropped) -> new
        for _ in range(_MAX_CONFLICTS):
            self._check_lease()
            self.ledger.refresh()
            plan = self.ledger.state.superseded(set(self._items))
            try:
                for old, stale in plan.items():
                    key = (old, frozenset(stale))
                    if key not in rewrites:
                        rewrites[key] = self._rewrite(old, stale)
            except storage.NotFound:
                continue  # another writer removed that part just now: re-plan on its entry
            crash_point("commit-before")
            entry = self.ledger.try_commit(self._entry(added, plan, rewrites))
            if entry is not None:
                used = {rewrites[(old, frozenset(stale))] for old, stale in plan.items()}
                for rel in set(rewrites.values()) - used - {None}:  # from plans that lost a race
                    storage.delete(storage.join(self.out_uri, rel))
                return entry
        raise StorageError(f"gave up after {_MAX_CONFLICTS} commit conflicts on {self.out_uri}")

    def _lease_uri(self) -> str:
        return storage.join(self.out_uri, WRITERS, f"{self.shard.tag}.json")

    def _take_lease(self) -> None:
        """Say that this writer is now the one for its shard (before recovery deletes the
        uncommitted files of any earlier one)."""
        storage.write_bytes(self._lease_uri(), json.dumps({"writer": self.writer_id}).encode(),
                            "application/json")

    def _check_lease(self) -> None:
        """An overlapping run of the same shard (a cron job starting while last night's still
        runs) has taken over and deleted our uncommitted parts: stop before committing them."""
        try:
            holder = json.loads(storage.read_bytes(self._lease_uri())).get("writer")
        except storage.NotFound:
            holder = None
        if holder != self.writer_id:
            raise StorageError(f"another run ({holder}) took over shard {self.shard} of "
                               f"{self.out_uri}; this run stops without committing")

    def _rewrite(self, old: str, stale: set[str]) -> str | None:
        """`old` without the rows of `stale` sources, as a new part; None if nothing is left."""
        table = posixpath.normpath(old).split("/", 1)[0]
        rows = _read_parquet(storage.join(self.out_uri, old), table)
        keep = rows.filter(pc.invert(pc.is_in(rows.column("source_uri"), pa.array(sorted(stale)))))
        if keep.num_rows == 0:
            return None
        return self._write_part(self._part_name(posixpath.dirname(old)), keep, "rewrite")

    def _entry(self, added: dict[str, set[str]], plan: dict[str, set[str]],
               rewrites: dict[tuple[str, frozenset[str]], str | None]) -> dict[str, Any]:
        state = self.ledger.state
        seq = state.seq + 1
        entry_added = {rel: {u: seq for u in sorted(uris)} for rel, uris in added.items()}
        for old, stale in plan.items():
            new = rewrites[(old, frozenset(stale))]
            if new:  # the surviving rows keep their generation
                entry_added[new] = {u: g for u, g in state.parts[old].items() if u not in stale}
        sources = [{**i.source, "parts": sorted(r for r, us in added.items() if uri in us)}
                   for uri, i in self._items.items()]
        return {"batch": self._batch_id(), "writer": self.writer_id, "run_id": self.run_id,
                "shard": str(self.shard), "committed_at": iso(now_ms()), "sources": sources,
                "added": entry_added, "removed": sorted(plan), "dead_docs": self._dead_docs(state)}

    def _dead_docs(self, state: LedgerState) -> list[str]:
        """Documents whose JSON must go once this batch commits: no source refers to them."""
        refs, dropped = Counter(state.doc_refs), set()
        for uri, item in self._items.items():
            old = state.sources.get(uri)
            if old is not None and old.status == "ok":
                refs[old.doc_id] -= 1
                dropped.add(old.doc_id)
            if item.source["status"] == "ok":
                refs[item.source["doc_id"]] += 1
        return sorted(d for d in dropped if refs[d] <= 0)

    def _batch_id(self) -> str:
        return f"{self.writer_id}-{self._batch_no:05d}"

    def _pending_uri(self, name: str) -> str:
        return storage.join(self.out_uri, PENDING, self._batch_id(), name)

    # ---- recovery ------------------------------------------------------------------------

    def open(self) -> Recovery:
        """Load the ledger and clean up after interrupted runs (once; before any write)."""
        if self._opened:
            return Recovery()
        self._opened = True
        self._take_lease()
        self.ledger.load()
        rec = Recovery()
        self._recover_pending(rec)
        self._recover_parts(rec)
        return rec

    def _mine(self, name: str) -> bool:
        """May this writer clean up `name`? Its shard's files, or anyone's if unsharded."""
        tag = tag_of(name)
        return (tag is not None and self.writer_id not in name
                and (self.shard.count == 1 or tag == self.shard.tag))

    def _recover_pending(self, rec: Recovery) -> None:
        batches: dict[str, list[str]] = {}
        for uri in _list(storage.join(self.out_uri, PENDING)):
            batch = _relative(self.out_uri, uri)[len(PENDING) + 1:].split("/", 1)[0]
            batches.setdefault(batch, []).append(uri)
        for batch, uris in sorted(batches.items()):
            if not self._mine(batch):
                continue
            seq = self.ledger.state.batches.get(batch)
            if seq is not None:
                finish_commit(self.ledger, self.ledger.read_entry(seq) or {}, self._io.map)
                rec.finished += 1
            else:
                self._io.map(storage.delete, uris)
                _remove_empty_folder(storage.join(self.out_uri, PENDING, batch))
                rec.abandoned += 1

    def _recover_parts(self, rec: Recovery) -> None:
        live = self.ledger.state.parts
        for table in TABLES:
            for uri in _list(storage.join(self.out_uri, table)):
                rel = _relative(self.out_uri, uri)
                name = _unwrap_tmp(posixpath.basename(rel))
                if rel in live or not name.endswith(".parquet"):
                    continue
                if tag_of(name) is None:
                    rec.foreign += 1
                elif self._mine(name):
                    storage.delete(uri)
                    rec.orphans += 1


def finish_commit(ledger: Ledger, entry: dict[str, Any], run: Callable = map) -> None:
    """Step 6 for a committed entry: publish its documents, delete what it removed, then its
    pending folder (marker last). Idempotent, so recovery simply runs it again. `run` maps
    a function over items (a thread pool's map, to overlap the round trips)."""
    if not entry:
        return
    out, state = ledger.out_uri, ledger.state
    pending = storage.join(out, PENDING, entry["batch"])
    doc_ids = {s["doc_id"] for s in entry["sources"] if s["status"] == "ok"
               and getattr(state.sources.get(s["uri"]), "seq", None) == entry["seq"]}
    list(run(lambda d: _publish(pending, out, d), sorted(doc_ids)))  # superseded ones excluded
    _publish_exports(pending, out, doc_ids, run)
    gone = [storage.join(out, rel) for rel in entry["removed"]]
    gone += [storage.join(out, DOCUMENTS, f"{d}.json") for d in entry["dead_docs"]
             if not state.doc_refs.get(d)]
    gone += [u for d in entry["dead_docs"] if not state.doc_refs.get(d) for u in stale_uris(out, d)]
    gone += [u for u in _list(pending) if posixpath.basename(u.replace(os.sep, "/")) != MARKER]
    list(run(storage.delete, gone))
    storage.delete(storage.join(pending, MARKER))
    _remove_empty_folder(pending)


def _publish(pending: str, out: str, doc_id: str) -> None:
    """Staged JSON -> documents/ (skipped if already published: staged files go only last)."""
    try:
        data = storage.read_bytes(storage.join(pending, f"{doc_id}.json"))
    except storage.NotFound:
        return
    storage.write_bytes(storage.join(out, DOCUMENTS, f"{doc_id}.json"), data, "application/json")
    crash_point("publish-after")


def _publish_exports(pending: str, out: str, doc_ids: set[str], run: Callable = map) -> None:
    """Staged exports of the batch's live documents -> their paths under OUT (idempotent, like
    _publish: the staged copies are deleted only after everything is published)."""
    root = storage.join(pending, EXPORTS)
    staged = [(u, _relative(root, u).split("/", 1)) for u in _list(root)]
    list(run(lambda s: storage.write_bytes(storage.join(out, s[1][1]), storage.read_bytes(s[0])),
             [s for s in staged if len(s[1]) == 2 and s[1][0] in doc_ids]))


def _list(prefix_uri: str) -> list[str]:
    try:
        return list(storage.list_uris(prefix_uri))
    except storage.NotFound:  # a local folder not created yet
        return []


def _remove_empty_folder(uri: str) -> None:
    """Local folders outlive their files (S3 prefixes do not)."""
    if not storage.is_s3(uri):
        path = uri[len("file://"):] if uri.startswith("file://") else uri
        for folder in [f for f, _, _ in os.walk(path, topdown=False)] or [path]:  # staged exports nest
            try:
                os.rmdir(folder)
            except OSError:
                pass


def _relative(out_uri: str, uri: str) -> str:
    """'words/run_date=.../part-x.parquet' for a URI under OUT ('/'-separated everywhere)."""
    if storage.is_s3(out_uri):
        return uri[len(out_uri.rstrip("/")) + 1:]
    root = out_uri[len("file://"):] if out_uri.startswith("file://") else out_uri
    return os.path.relpath(uri, root).replace(os.sep, "/")


def _unwrap_tmp(name: str) -> str:
    """'.part-x.parquet.0123456789ab.tmp' (a local write killed midway) -> 'part-x.parquet'."""
    if name.startswith(".") and name.endswith(".tmp"):
        return name[1:].rsplit(".", 2)[0]
    return name


# ---- reading -----------------------------------------------------------------------------------

def read_table(out_uri: str, table: str, committed: bool = False) -> pa.Table:
    """All parts of one output table (for tests and tools); empty table if none.

    committed=True reads only the parts the ledger lists, which is exact even while a run
    is writing or after one was killed (before the next run's recovery)."""
    if committed:
        state = Ledger(out_uri).load()
        parts = [storage.join(out_uri, rel) for rel in sorted(state.parts)
                 if rel.startswith(table + "/")]
    else:
        parts = [u for u in _list(storage.join(out_uri, table)) if u.endswith(".parquet")]
    if not parts:
        return TABLES[table].empty_table()
    return pa.concat_tables(_read_parquet(u, table) for u in parts)


def read_documents(out_uri: str) -> list[dict]:
    return [json.loads(storage.read_bytes(u)) for u in _list(storage.join(out_uri, DOCUMENTS))
            if u.endswith(".json")]


def read_ledger(out_uri: str) -> LedgerState:
    """The folded ledger of an output (what is committed, source by source)."""
    return Ledger(out_uri).load()

