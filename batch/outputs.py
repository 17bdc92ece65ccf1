"""Writers for a run's outputs, local folder or s3:// prefix alike (through batch.storage):

  OUT/documents/<doc_id>.json                               one per document (batch.core.schema)
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
no entry lists (an orphan from a killed run) is deleted; a part that the ledger lists but
storage has lost is dropped by a repair entry that marks its sources "lost", so this very run
processes them again (nothing marked done is ever silently missing). Parquet parts hold many documents,
so superseding rewrites whole parts (step 3) instead of tombstoning rows: what Athena reads
is then simply every file under words/, pages/, errors/. Between a kill and the next run's
recovery, orphans and removed parts may still be there; `read_table(..., committed=True)`
reads exactly the committed parts at any time.

Shards (`--shard i/n`) share one OUT: names carry the shard tag, so a shard only ever
deletes its own uncommitted files; an unsharded writer cleans up after anyone. Overlapping
runs of one shard (a cron job starting while last night's still runs) are fenced by leases
in the ledger itself (batch.ledger.Claim): a run commits a lease entry before it deletes
anything, and every entry is checked against the lease in the same put-if-absent that
creates it, so the older run can never commit parts the newer one has cleaned away; it stops
with CommitFailed. Recovery deletes only what the state after its own lease entry does not
list, so it never deletes a part of a committed (or still committable) entry.

Storage faults: each storage call retries transient errors itself (batch.storage); a batch
whose commit still fails is tried again as a whole a few times (`_ROUNDS`: same part names,
staged JSON re-sent, and an entry that did land is recognised by its batch id), then the run
stops with CommitFailed (exit 4) with nothing half-published: the next run's recovery
deletes or finishes whatever the batch left.

Test hook: HTR_CRASH_AT=<point>:<n> SIGKILLs the process the n-th time it reaches <point>,
one of part-before, part-after, rewrite-after, commit-before, commit-after, publish-after.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batch import storage
from batch.core.errors import HtrError, StorageError
from batch.core.schema import (
    PARTITION_COLUMN,
    TABLES,
    DocumentRecord,
    ErrorRecord,
    conform,
    error_rows,
    iso,
    iter_word_rows,
    now_ms,
    page_rows,
    run_date,
    to_table,
)
from batch.exports import stale_uris
from batch.ledger import PENDING, Claim, LeaseLost, Ledger, LedgerState, Shard, tag_of

COMPRESSIONS = ("zstd", "snappy")
DOCUMENTS = "documents"
MARKER = "_batch"
EXPORTS = "exports"  # pending/<batch>/exports/<doc_id>/<path under OUT>: archive formats (batch.exports)
CRASH_ENV = "HTR_CRASH_AT"
_MAX_CONFLICTS = 50  # commit attempts lost to other writers before giving up
_ROUNDS = 4  # whole commit (or publish) attempts, once storage's own retries ran out


class CommitFailed(HtrError):
    """A batch could not be committed (storage failing after retries, or the shard taken over
    by another run): the run stops; the next run recovers and redoes the batch. Stage
    "publish" when the batch did commit and only its publishing failed (the next run
    finishes it)."""

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
        self.futures: list[tuple[Future, Callable, tuple]] = []

    def submit(self, fn: Callable, *args: Any) -> None:
        self.slots.acquire()
        future = self.pool.submit(fn, *args)
        future.add_done_callback(lambda _: self.slots.release())
        self.futures.append((future, fn, args))

    def wait(self) -> None:
        """Until everything submitted is written; raises the first failure. Failed writes
        stay listed, so a later wait() (a retried commit round) submits them again."""
        jobs, self.futures = self.futures, []
        failed = [(fn, args, e) for f, fn, args in jobs if (e := f.exception()) is not None]
        for fn, args, _ in failed:
            self.submit(fn, *args)
        if failed:
            raise failed[0][2]

    def map(self, fn: Callable, items: Iterable) -> list:
        return list(self.pool.map(fn, items))

    def close(self) -> None:
        self.pool.shutdown(wait=True)


@dataclass
class _Item:
    """One source's contribution to the batch being assembled."""

    source: dict[str, Any]  # its ledger record (batch.ledger.SourceState fields)
    tables: dict[str, pa.Table]  # its rows, by table


@dataclass
class Recovery:
    """What `OutputWriter.open` cleaned up after an earlier, interrupted run."""

    finished: int = 0  # committed batches whose publish step was redone
    abandoned: int = 0  # uncommitted batches whose staged files were deleted
    orphans: int = 0  # uncommitted parts deleted
    foreign: int = 0  # Parquet files no ledger ever knew (left alone)
    missing: int = 0  # committed parts that storage lost (their sources: "lost")
    lost: int = 0  # sources marked "lost", to be processed again

    def __bool__(self) -> bool:
        return bool(self.finished or self.abandoned or self.orphans or self.foreign or self.missing)

    def summary(self) -> str:
        text = (
            f"recovered: {self.finished} committed batches finished, {self.abandoned} "
            f"uncommitted batches and {self.orphans} orphan parts removed"
        )
        if self.missing:
            text += (
                f"; {self.missing} committed parts were missing from storage: their "
                f"{self.lost} sources are processed again"
            )
        if self.foreign:
            text += (
                f"; {self.foreign} Parquet files not written by a ledger-aware run were "
                "left alone (their rows are outside the exactly-once guarantee)"
            )
        return text


# ---- the writer --------------------------------------------------------------------------------


@dataclass
class OutputWriter:
    out_uri: str
    run_id: str
    rows_per_part: int = 200_000  # word rows per batch (~ tens of MB of Parquet)
    compression: str = "zstd"
    docs_per_part: int = 1000  # documents per batch: also the most a kill can undo
    shard: Shard = field(default_factory=Shard)
    model_version: str = ""  # recorded for error rows (they have no model output)
    # archive formats: doc -> {path under OUT: bytes} (batch.exports.renderer), staged and
    # published with the document's JSON
    exports: Callable[[DocumentRecord], dict[str, bytes]] | None = None
    written: list[str] = field(default_factory=list)  # part URIs this writer wrote
    committed: int = 0  # sources committed by this writer

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
        self._claim = Claim(self.shard.lease_key, self.writer_id)
        self._parts: dict[str, pa.Table] | None = None  # the batch's new parts, named once
        self._parts_written: set[str] = set()
        self._rewrites: dict[tuple[str, frozenset[str]], str | None] = {}  # (old, dropped) -> new
        self._repairs = 0

    # ---- adding records ------------------------------------------------------------------

    def add_document(self, doc: DocumentRecord, source: storage.SourceObject | None = None) -> None:
        """Stage the document; it is committed with its batch."""
        self.open()
        uri = doc.source_uri or doc.doc_id
        files = self.exports(doc) if self.exports else {}  # first: a failed export fails only this document
        for rel, data in files.items():
            self._io.submit(storage.write_bytes, self._pending_uri(f"{EXPORTS}/{doc.doc_id}/{rel}"), data)
        self._io.submit(
            storage.write_bytes,
            self._pending_uri(f"{doc.doc_id}.json"),
            doc.dumps().encode(),
            "application/json",
        )
        words = to_table("words", iter_word_rows(doc))
        self._add(
            uri,
            _Item(
                self._source(
                    uri,
                    source,
                    doc.source_etag,
                    doc.doc_id,
                    "ok",
                    doc.model_version,
                    doc.run_id,
                    pages=len(doc.pages),
                    words=words.num_rows,
                ),
                {"words": words, "pages": to_table("pages", page_rows(doc))},
            ),
        )

    def add_error(self, err: ErrorRecord, source: storage.SourceObject | None = None) -> None:
        self.open()
        uri = err.source_uri or err.doc_id
        self._add(
            uri,
            _Item(
                self._source(uri, source, "", err.doc_id, "error", self.model_version, err.run_id),
                {"errors": to_table("errors", error_rows(err))},
            ),
        )

    def _source(
        self,
        uri: str,
        src: storage.SourceObject | None,
        etag: str,
        doc_id: str,
        status: str,
        model_version: str,
        run_id: str,
        pages: int = 0,
        words: int = 0,
    ) -> dict[str, Any]:
        return {
            "uri": uri,
            "etag": src.etag if src else etag,
            "size": src.size if src else -1,
            "doc_id": doc_id,
            "status": status,
            "model_version": model_version,
            "run_id": run_id,
            "pages": pages,
            "words": words,
        }

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
        """Commit the buffered batch (no-op if empty). Raises CommitFailed: "not committed"
        before the commit point, stage "publish" after it."""
        if not self._items:
            return
        self.open()
        batch = self._batch_id()
        entry = self._in_rounds(self._commit_once, f"batch {batch} not committed")
        self.committed += len(self._items)
        self._items, self._word_rows = {}, 0
        self._parts, self._parts_written, self._rewrites = None, set(), {}
        self._batch_no += 1
        crash_point("commit-after")
        self._in_rounds(
            lambda: finish_commit(self.ledger, entry, self._io.map),
            f"batch {batch} is committed, but publishing its documents failed (the next run finishes it)",
            stage="publish",
        )

    def _in_rounds(self, step: Callable[[], Any], failure: str, stage: str = "commit") -> Any:
        """`step` (idempotent), tried again after a pause while it fails transiently; any
        failure in the end is CommitFailed. A lost lease is final at once."""
        cfg = storage.get_config()
        for round_no in range(1, _ROUNDS + 1):
            try:
                return step()
            except LeaseLost as e:
                self._abandon_batch()
                raise CommitFailed(f"{failure}: {e}", stage) from e
            except StorageError as e:
                if not e.transient or round_no == _ROUNDS:
                    raise CommitFailed(f"{failure}: {e}", stage) from e
                time.sleep(min(30.0, cfg.backoff_base * 4 * 2**round_no) * (0.5 + random.random() / 2))
            except Exception as e:  # noqa: BLE001 - e.g. a part that is not Parquet
                raise CommitFailed(f"{failure}: {type(e).__name__}: {e}", stage) from e

    def _abandon_batch(self) -> None:
        """The lease is gone, so this batch can never commit: delete what it wrote (its parts,
        rewrites, staged JSON) rather than leave orphans until the next run's recovery.
        Best effort: whatever stays, that recovery deletes."""
        rels = set(self._parts_written) | {r for r in self._rewrites.values() if r}
        uris = [storage.join(self.out_uri, rel) for rel in rels]
        uris += _list(storage.join(self.out_uri, PENDING, self._batch_id()))
        try:
            self._io.wait()
        except Exception:  # noqa: BLE001 - a staged write that failed has nothing to delete
            pass
        try:
            self._io.map(storage.delete, sorted(set(uris)))
            _remove_empty_folder(storage.join(self.out_uri, PENDING, self._batch_id()))
        except StorageError:
            pass

    def _commit_once(self) -> dict[str, Any]:
        """Steps 1-5 for the buffered batch; safe to call again after any failure."""
        self._io.wait()  # the batch's staged JSON (failed writes are sent again)
        added = self._write_new_parts()
        storage.write_bytes(self._pending_uri(MARKER), b"")
        return self._commit(added)

    def _write_new_parts(self) -> dict[str, set[str]]:
        """The batch's rows as new parts, written in parallel: {relative path: source URIs}.
        Named once per batch, so a retried round writes the same parts again."""
        if self._parts is None:
            self._parts = {}
            for table in TABLES:
                tables = [
                    i.tables[table]
                    for i in self._items.values()
                    if table in i.tables and i.tables[table].num_rows
                ]
                if tables:
                    for day, rows in _by_date(pa.concat_tables(tables)).items():
                        self._parts[self._part_name(f"{table}/{PARTITION_COLUMN}={day}")] = rows
        parts = self._parts
        todo = [rel for rel in parts if rel not in self._parts_written]
        self._parts_written.update(self._io.map(lambda rel: self._write_part(rel, parts[rel], "part"), todo))
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
        committed first. The lease is checked against the state each attempt extends (in
        Ledger.try_commit). Returns the entry as committed."""
        rewrites = self._rewrites
        for _ in range(_MAX_CONFLICTS):
            self.ledger.refresh()
            state = self.ledger.state
            if self._batch_id() in state.batches:  # an earlier round's entry did land
                return self.ledger.read_entry(state.batches[self._batch_id()]) or {}
            self._claim.check(state)  # stop before rewriting anything if the lease is gone
            plan = state.superseded(set(self._items))
            missing = set()
            for old, stale in plan.items():
                key = (old, frozenset(stale))
                if key not in rewrites:
                    try:
                        rewrites[key] = self._rewrite(old, stale)
                    except storage.NotFound:
                        missing.add(old)
            if missing:  # removed by another writer just now, or lost: re-plan either way
                self._repair(missing)
                continue
            crash_point("commit-before")
            entry = self.ledger.try_commit(self._entry(added, plan, rewrites), self._claim)
            if entry is not None:
                used = {rewrites[(old, frozenset(stale))] for old, stale in plan.items()}
                for rel in {
                    r for r in rewrites.values() if r is not None
                } - used:  # from plans that lost a race
                    storage.delete(storage.join(self.out_uri, rel))
                return entry
        raise StorageError(f"gave up after {_MAX_CONFLICTS} commit conflicts on {self.out_uri}", "commit")

    def _commit_entry(
        self, build: Callable[[LedgerState], dict[str, Any]], before_any_write: bool = False
    ) -> dict[str, Any]:
        """Commit a housekeeping entry (lease, repair) built against the latest state.
        before_any_write: this writer has written nothing yet, so it may take the lease at
        whatever epoch it finds now."""
        for _ in range(_MAX_CONFLICTS):
            self.ledger.refresh()
            if before_any_write and not self._claim.held:
                self._claim.epoch = self.ledger.state.lease_epoch(self._claim.key)
            entry = self.ledger.try_commit(build(self.ledger.state), self._claim)
            if entry is not None:
                return entry
        raise StorageError(f"gave up after {_MAX_CONFLICTS} commit conflicts on {self.out_uri}", "commit")

    def _housekeeping(self, state: LedgerState, missing: set[str], name: str) -> dict[str, Any]:
        """An entry that takes the lease and drops `missing` parts (those still live), marking
        every source with rows in them "lost" so it is processed again."""
        gone = sorted(p for p in missing if p in state.parts)
        lost = sorted({u for p in gone for u in state.parts[p] if u in state.sources})
        sources = [
            {
                **{k: v for k, v in vars(state.sources[u]).items() if k != "seq"},
                "status": "lost",
                "run_id": self.run_id,
            }
            for u in lost
        ]
        refs = Counter(state.doc_refs)
        for u in lost:
            if state.sources[u].status == "ok":
                refs[state.sources[u].doc_id] -= 1
        dead = sorted({state.sources[u].doc_id for u in lost if refs[state.sources[u].doc_id] <= 0})
        return {
            "batch": f"{self.writer_id}-{name}",
            "writer": self.writer_id,
            "run_id": self.run_id,
            "shard": str(self.shard),
            "committed_at": iso(now_ms()),
            "sources": sources,
            "added": {},
            "removed": gone,
            "dead_docs": dead,
        }

    def _repair(self, missing: set[str], before_any_write: bool = False) -> int:
        """Drop committed parts that are not in storage (after a refresh shows them still
        live); returns how many sources were marked lost."""
        self.ledger.refresh()
        live = {p for p in missing if p in self.ledger.state.parts}
        if not live:
            return 0
        self._repairs += 1
        entry = self._commit_entry(
            lambda st: self._housekeeping(st, live, f"repair{self._repairs}"), before_any_write
        )
        finish_commit(self.ledger, entry, self._io.map)  # their documents' JSON goes too
        return len(entry["sources"])

    def _rewrite(self, old: str, stale: set[str]) -> str | None:
        """`old` without the rows of `stale` sources, as a new part; None if nothing is left."""
        table = posixpath.normpath(old).split("/", 1)[0]
        rows = _read_parquet(storage.join(self.out_uri, old), table)
        keep = rows.filter(pc.invert(pc.is_in(rows.column("source_uri"), pa.array(sorted(stale)))))
        if keep.num_rows == 0:
            return None
        return self._write_part(self._part_name(posixpath.dirname(old)), keep, "rewrite")

    def _entry(
        self,
        added: dict[str, set[str]],
        plan: dict[str, set[str]],
        rewrites: dict[tuple[str, frozenset[str]], str | None],
    ) -> dict[str, Any]:
        state = self.ledger.state
        seq = state.seq + 1
        entry_added = {rel: {u: seq for u in sorted(uris)} for rel, uris in added.items()}
        for old, stale in plan.items():
            new = rewrites[(old, frozenset(stale))]
            if new:  # the surviving rows keep their generation
                entry_added[new] = {u: g for u, g in state.parts[old].items() if u not in stale}
        sources = [
            {**i.source, "parts": sorted(r for r, us in added.items() if uri in us)}
            for uri, i in self._items.items()
        ]
        return {
            "batch": self._batch_id(),
            "writer": self.writer_id,
            "run_id": self.run_id,
            "shard": str(self.shard),
            "committed_at": iso(now_ms()),
            "sources": sources,
            "added": entry_added,
            "removed": sorted(plan),
            "dead_docs": self._dead_docs(state),
        }

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
        """Load the ledger and clean up after interrupted runs (once; before any write).

        What is committed is judged from the ledger around one listing of the output: a
        part live both before and after the listing but not listed is lost; a part of this
        writer's scope that no entry lists is an orphan, and a pending batch without an
        entry is abandoned. Deleting those needs the lease: a lease entry goes first (with
        the repair of lost parts), and the deletes are re-judged against the state after it,
        which no run that lost the lease can extend."""
        if self._opened:
            return Recovery()
        self._opened = True
        state = self.ledger.load()
        self._claim.epoch = state.lease_epoch(self._claim.key)
        live_before = set(state.parts)
        physical = self._list_parts()
        pending = self._list_pending()
        self.ledger.refresh()
        state = self.ledger.state
        missing = {p for p in live_before if p in state.parts and p not in physical}
        names = {rel: _unwrap_tmp(posixpath.basename(rel)) for rel in physical}
        rec = Recovery(
            foreign=sum(1 for rel, name in names.items() if tag_of(name) is None and rel not in state.parts)
        )
        for batch in [b for b in pending if b in state.batches]:  # committed: finish publishing
            finish_commit(self.ledger, self.ledger.read_entry(state.batches[batch]) or {}, self._io.map)
            rec.finished += 1
        orphans = {rel for rel, name in names.items() if rel not in state.parts and self._mine(name)}
        abandoned = {b for b in pending if b not in state.batches}
        if not (orphans or abandoned or missing):
            return rec
        entry = self._commit_entry(lambda st: self._housekeeping(st, missing, "lease"), before_any_write=True)
        finish_commit(self.ledger, entry, self._io.map)  # dead documents of lost sources
        rec.missing, rec.lost = len(entry["removed"]), len(entry["sources"])
        state = self.ledger.state  # no run that lost the lease can add to this
        gone = [physical[rel] for rel in orphans if rel not in state.parts]
        self._io.map(storage.delete, gone)
        rec.orphans = len(gone)
        for batch in sorted(b for b in abandoned if b not in state.batches):
            self._io.map(storage.delete, pending[batch])
            _remove_empty_folder(storage.join(self.out_uri, PENDING, batch))
            rec.abandoned += 1
        return rec

    def _mine(self, name: str) -> bool:
        """May this writer clean up `name`? Its shard's files, or anyone's if unsharded."""
        tag = tag_of(name)
        return (
            tag is not None
            and self.writer_id not in name
            and (self.shard.count == 1 or tag == self.shard.tag)
        )

    def _list_pending(self) -> dict[str, list[str]]:
        """This writer's scope of pending batches -> their files."""
        batches: dict[str, list[str]] = {}
        for uri in _list(storage.join(self.out_uri, PENDING)):
            batch = _relative(self.out_uri, uri)[len(PENDING) + 1 :].split("/", 1)[0]
            if self._mine(batch):
                batches.setdefault(batch, []).append(uri)
        return batches

    def _list_parts(self) -> dict[str, str]:
        """Every Parquet part (or a local temp file of one) under words/, pages/, errors/:
        relative path -> URI. A temp file is keyed by its own path, so it is never 'live'."""
        found: dict[str, str] = {}
        for table in TABLES:
            for uri in _list(storage.join(self.out_uri, table)):
                rel = _relative(self.out_uri, uri)
                if _unwrap_tmp(posixpath.basename(rel)).endswith(".parquet"):
                    found[rel] = uri
        return found


def finish_commit(ledger: Ledger, entry: dict[str, Any], run: Callable = map) -> None:
    """Step 6 for a committed entry: publish its documents, delete what it removed, then its
    pending folder (marker last). Idempotent, so recovery simply runs it again. `run` maps
    a function over items (a thread pool's map, to overlap the round trips)."""
    if not entry:
        return
    out, state = ledger.out_uri, ledger.state
    pending = storage.join(out, PENDING, entry["batch"])
    doc_ids = {
        s["doc_id"]
        for s in entry["sources"]
        if s["status"] == "ok" and getattr(state.sources.get(s["uri"]), "seq", None) == entry["seq"]
    }
    list(run(lambda d: _publish(pending, out, d), sorted(doc_ids)))  # superseded ones excluded
    _publish_exports(pending, out, doc_ids, run)
    gone = [storage.join(out, rel) for rel in entry["removed"]]
    gone += [
        storage.join(out, DOCUMENTS, f"{d}.json") for d in entry["dead_docs"] if not state.doc_refs.get(d)
    ]
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
    list(
        run(
            lambda s: storage.write_bytes(storage.join(out, s[1][1]), storage.read_bytes(s[0])),
            [s for s in staged if len(s[1]) == 2 and s[1][0] in doc_ids],
        )
    )


def _list(prefix_uri: str) -> list[str]:
    try:
        return list(storage.list_uris(prefix_uri))
    except storage.NotFound:  # a local folder not created yet
        return []


def _remove_empty_folder(uri: str) -> None:
    """Local folders outlive their files (S3 prefixes do not)."""
    if not storage.is_s3(uri):
        path = uri[len("file://") :] if uri.startswith("file://") else uri
        for folder in [f for f, _, _ in os.walk(path, topdown=False)] or [path]:  # staged exports nest
            try:
                os.rmdir(folder)
            except OSError:
                pass


def _relative(out_uri: str, uri: str) -> str:
    """'words/run_date=.../part-x.parquet' for a URI under OUT ('/'-separated everywhere)."""
    if storage.is_s3(out_uri):
        return uri[len(out_uri.rstrip("/")) + 1 :]
    root = out_uri[len("file://") :] if out_uri.startswith("file://") else out_uri
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
        parts = [storage.join(out_uri, rel) for rel in sorted(state.parts) if rel.startswith(table + "/")]
    else:
        parts = [u for u in _list(storage.join(out_uri, table)) if u.endswith(".parquet")]
    if not parts:
        return TABLES[table].empty_table()
    return pa.concat_tables(_read_parquet(u, table) for u in parts)


def read_documents(out_uri: str) -> list[dict]:
    return [
        json.loads(storage.read_bytes(u))
        for u in _list(storage.join(out_uri, DOCUMENTS))
        if u.endswith(".json")
    ]


def read_ledger(out_uri: str) -> LedgerState:
    """The folded ledger of an output (what is committed, source by source)."""
    return Ledger(out_uri).load()
