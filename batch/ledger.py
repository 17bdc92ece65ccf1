"""The ledger: what an output location holds, as a log of commits stored in the output itself.

  OUT/_ledger/entries/0000000001.json       one entry per committed batch (the commit point)
  OUT/_ledger/checkpoints/0000000100.json.gz  the folded state after entry 100 (for loading fast)
  OUT/_ledger/pending/<batch>/...           a batch's staged document JSON + marker (batch.outputs)

An entry records, for each source of its batch, the object's uri/ETag/size, doc_id, model
version, run id and status (ok | error), the part files holding its rows, and for the whole
batch the parts it adds (with the sources each holds) and the parts it removes. Folding the
entries in order gives `LedgerState`: the latest processing of every source and the set of
live parts, which is exactly what words/, pages/ and errors/ must contain.

Entries are numbered 1, 2, 3, ... and created with put-if-absent (S3 `If-None-Match: *`, a
hard link locally). A writer computes entry N+1 against the state after entry N; if another
writer took N+1 first, the create fails, the writer reads the new entries and plans again
(optimistic concurrency, as in Delta Lake's log). So every entry sees the full history, and
two shards committing into one output at once can never lose each other's changes.

Leases (fencing). Which writer may commit for a shard is itself in the log: an entry with
`"lease": key` hands the shard (`key` = its tag, or "*" for an unsharded writer, which takes
every shard) to its writer; the lease's epoch is that entry's seq. `try_commit` checks the
writer's claim against the state after entry N before it creates entry N+1, so the check and
the put-if-absent are one atomic step: a run that lost its lease can never commit, however long
its request was stalled, and a part that a later run deleted as an orphan can never be listed.
A writer takes the lease before it deletes anything (start-up recovery), or with its first
commit if the epoch is still the one it saw when it started (else someone may have cleaned
its parts away, and it stops).

Status "lost" marks a source whose committed rows are gone (a live part missing from storage,
found by start-up recovery): it is processed again by the next run, whatever the policy.

Sources are identified by their URI (S3 uri, or absolute local path); `Shard` assigns each
one to a worker by a stable hash of that URI.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from batch import storage
from batch.core.errors import StorageError

LEDGER_DIR = "_ledger"
ENTRIES = f"{LEDGER_DIR}/entries"
CHECKPOINTS = f"{LEDGER_DIR}/checkpoints"
PENDING = f"{LEDGER_DIR}/pending"
ALL_SHARDS = "*"  # the lease key of an unsharded writer: it takes over every shard
FORMAT_VERSION = 1
_SEQ_DIGITS = 10


# ---- shards ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    """Worker `index` of `count`: owns the sources whose URI hashes to index (mod count)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"bad shard {self.index}/{self.count}: need 0 <= i < n")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """'i/n' -> Shard(i, n) (argparse type)."""
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
        if not m:
            raise ValueError(f"--shard wants i/n (e.g. 0/2), not {text!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    @property
    def tag(self) -> str:
        """Goes into the names of everything this shard writes (parts, pending batches)."""
        return f"s{self.index}of{self.count}"

    @property
    def lease_key(self) -> str:
        """An unsharded writer cleans up after every shard, so it leases them all."""
        return ALL_SHARDS if self.count == 1 else self.tag

    def owns(self, source_uri: str) -> bool:
        if self.count == 1:
            return True
        digest = hashlib.sha256(source_uri.encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


# Names written by a writer end in -<shard tag>-<6 hex nonce>-<5 digit seq> (see batch.outputs).
_TAGGED_NAME = re.compile(r"-(s\d+of\d+)-[0-9a-f]{6}-\d{5,}(?:\.parquet)?$")


def tag_of(name: str) -> str | None:
    """The shard tag in a part or pending-batch name; None for names this code did not write."""
    m = _TAGGED_NAME.search(name)
    return m.group(1) if m else None


# ---- what to process ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """Which listed sources a run processes, given what the ledger says about them."""

    model_version: str = ""
    reprocess: bool = False  # --reprocess: everything
    on_model_change: bool = False  # --reprocess-on-model-change
    retry_failed: bool = True  # off with --skip-failed


# ---- the folded state --------------------------------------------------------------------------


@dataclass
class SourceState:
    """The latest committed processing of one source."""

    uri: str
    etag: str
    size: int
    doc_id: str
    status: str  # ok | error | lost (rows missing from storage: process again)
    model_version: str
    run_id: str
    seq: int = 0  # the entry that committed it: its rows carry this generation
    pages: int = 0
    words: int = 0


@dataclass
class LedgerState:
    seq: int = 0  # last entry folded in
    sources: dict[str, SourceState] = field(default_factory=dict)  # by source uri
    parts: dict[str, dict[str, int]] = field(default_factory=dict)  # live part -> {uri: seq}
    batches: dict[str, int] = field(default_factory=dict)  # committed batch id -> seq
    where: dict[str, set[str]] = field(default_factory=dict)  # derived: uri -> live parts
    doc_refs: Counter = field(default_factory=Counter)  # derived: doc_id -> ok sources
    leases: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> {writer, seq}

    def lease_epoch(self, key: str) -> int:
        """Seq of the last lease entry that took `key` (an unsharded lease takes every key)."""
        own = int(self.leases.get(key, {}).get("seq", 0))
        return own if key == ALL_SHARDS else max(own, int(self.leases.get(ALL_SHARDS, {}).get("seq", 0)))

    def lease_holder(self, key: str) -> str | None:
        """The writer that holds `key` now, None if nobody (or an unsharded run took it)."""
        lease = self.leases.get(key)
        if lease is None or int(lease["seq"]) != self.lease_epoch(key):
            return None
        return lease["writer"]

    def apply(self, entry: dict[str, Any]) -> None:
        """Fold one entry in (entries must come in sequence order)."""
        seq = int(entry["seq"])
        if seq != self.seq + 1:
            raise StorageError(f"ledger entry {seq} read after entry {self.seq}: the log has a gap")
        for s in entry["sources"]:
            self._set_source(
                SourceState(
                    s["uri"],
                    s["etag"],
                    int(s["size"]),
                    s["doc_id"],
                    s["status"],
                    s["model_version"],
                    s["run_id"],
                    seq,
                    int(s.get("pages", 0)),
                    int(s.get("words", 0)),
                )
            )
        for part in entry["removed"]:
            for uri in self.parts.pop(part, {}):
                self.where.get(uri, set()).discard(part)
        for part, contents in entry["added"].items():
            self.parts[part] = {u: int(g) for u, g in contents.items()}
            for uri in contents:
                self.where.setdefault(uri, set()).add(part)
        if entry.get("lease"):
            self.leases[entry["lease"]] = {"writer": entry["writer"], "seq": seq}
        self.batches[entry["batch"]] = seq
        self.seq = seq

    def _set_source(self, new: SourceState) -> None:
        old = self.sources.get(new.uri)
        if old is not None and old.status == "ok":
            self.doc_refs[old.doc_id] -= 1
            if self.doc_refs[old.doc_id] <= 0:
                del self.doc_refs[old.doc_id]
        if new.status == "ok":
            self.doc_refs[new.doc_id] += 1
        self.sources[new.uri] = new

    def reason_to_process(self, uri: str, etag: str, policy: Policy) -> str | None:
        """Why a listed source needs processing ('new', 'changed', ...), or None to skip it."""
        old = self.sources.get(uri)
        if old is None:
            return "new"
        if policy.reprocess:
            return "forced"
        if old.etag != etag:
            return "changed"  # also for a failed source: new bytes deserve a new try
        if old.status == "lost":
            return "lost"  # committed once, rows gone since: never skipped
        if old.status == "error":
            return "retry" if policy.retry_failed else None
        if policy.on_model_change and old.model_version != policy.model_version:
            return "model"
        return None

    def superseded(self, uris: set[str]) -> dict[str, set[str]]:
        """Live parts holding rows of these sources -> the sources to drop from each.

        The rows of a part are always current when it is committed (that is what this
        plan ensures), so only the sources being committed again make rows stale."""
        plan: dict[str, set[str]] = {}
        for uri in uris:
            for part in self.where.get(uri, ()):
                plan.setdefault(part, set()).add(uri)
        return plan

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "seq": self.seq,
            "sources": [asdict(s) for s in self.sources.values()],
            "parts": self.parts,
            "batches": self.batches,
            "leases": self.leases,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LedgerState:
        state = cls(seq=int(d["seq"]), batches=dict(d["batches"]), leases=dict(d.get("leases", {})))
        for s in d["sources"]:
            state._set_source(SourceState(**s))
        for part, contents in d["parts"].items():
            state.parts[part] = {u: int(g) for u, g in contents.items()}
            for uri in contents:
                state.where.setdefault(uri, set()).add(part)
        return state


# ---- leases -------------------------------------------------------------------------------------


class LeaseLost(StorageError):
    """Another run took this writer's shard: it must not commit (its parts may be gone)."""

    stage = "commit"
    transient = False


@dataclass
class Claim:
    """What a writer may commit as: it holds `key`, or (take=True) takes it over, which is only
    allowed while the lease epoch is still the one it saw before writing anything."""

    key: str
    writer: str
    epoch: int = 0  # the lease epoch this writer's files are safe under
    held: bool = False  # it took the lease (then every entry must find it still the holder)

    def check(self, state: LedgerState) -> None:
        """Raise LeaseLost unless an entry after `state` may be committed under this claim."""
        if self.held:
            holder = state.lease_holder(self.key)
            if holder != self.writer:
                raise LeaseLost(
                    f"another run ({holder or 'an unsharded run'}) took over shard "
                    f"{self.key} at ledger entry {state.lease_epoch(self.key)}; "
                    "this run stops without committing"
                )
        elif state.lease_epoch(self.key) != self.epoch:
            holder = state.lease_holder(self.key)
            raise LeaseLost(
                f"another run ({holder or 'an unsharded run'}) took over shard "
                f"{self.key} at ledger entry {state.lease_epoch(self.key)} after this "
                "run started (it may have cleaned up this run's files); this run "
                "stops without committing"
            )


# ---- the ledger in storage ---------------------------------------------------------------------


class Ledger:
    """Reads and extends the commit log under OUT/_ledger/."""

    def __init__(self, out_uri: str, checkpoint_every: int = 100):
        self.out_uri = out_uri
        self.checkpoint_every = checkpoint_every
        self.state = LedgerState()
        self.loaded = False

    def uri(self, *parts: str) -> str:
        return storage.join(self.out_uri, *parts)

    def entry_uri(self, seq: int) -> str:
        return self.uri(ENTRIES, f"{seq:0{_SEQ_DIGITS}d}.json")

    def load(self) -> LedgerState:
        """The latest checkpoint, then every entry after it."""
        self.state = self._latest_checkpoint() or LedgerState()
        self.loaded = True
        self.refresh()
        return self.state

    def refresh(self) -> int:
        """Fold in entries other writers committed since; returns how many."""
        n = 0
        while (entry := self.read_entry(self.state.seq + 1)) is not None:
            self.state.apply(entry)
            n += 1
        return n

    def read_entry(self, seq: int) -> dict[str, Any] | None:
        try:
            return json.loads(storage.read_bytes(self.entry_uri(seq)))
        except storage.NotFound:
            return None

    def try_commit(self, entry: dict[str, Any], claim: Claim | None = None) -> dict[str, Any] | None:
        """Create entry state.seq+1 unless another writer did first (then None); on success
        fold it in and return it as written. With a claim, the lease is checked against the
        very state the entry extends (LeaseLost if lost), and taken if not held yet."""
        if claim is not None:
            claim.check(self.state)
            if not claim.held:
                entry = {**entry, "lease": claim.key}
        entry = {**entry, "seq": self.state.seq + 1, "token": uuid.uuid4().hex}
        body = json.dumps(entry, ensure_ascii=False, indent=1).encode()
        if not storage.create_if_absent(self.entry_uri(entry["seq"]), body):
            theirs = self.read_entry(entry["seq"])  # a retried PUT may have been ours after all
            if theirs is None or theirs.get("token") != entry["token"]:
                return None
        self.state.apply(entry)
        if claim is not None and not claim.held:
            claim.held, claim.epoch = True, entry["seq"]
        if self.checkpoint_every and self.state.seq % self.checkpoint_every == 0:
            self.write_checkpoint()
        return entry

    def write_checkpoint(self) -> None:
        """Same bytes whoever writes it, so a plain (idempotent) write is enough."""
        body = json.dumps(self.state.to_json(), ensure_ascii=False, separators=(",", ":"))
        storage.write_bytes(
            self.uri(CHECKPOINTS, f"{self.state.seq:0{_SEQ_DIGITS}d}.json.gz"),
            gzip.compress(body.encode(), mtime=0),
            "application/gzip",
        )

    def _latest_checkpoint(self) -> LedgerState | None:
        try:
            names = [u for u in storage.list_uris(self.uri(CHECKPOINTS)) if u.endswith(".json.gz")]
        except storage.NotFound:
            return None
        if not names:
            return None
        return LedgerState.from_json(json.loads(gzip.decompress(storage.read_bytes(max(names)))))
