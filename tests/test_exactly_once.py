"""Exactly once in words/, pages/, documents/, errors/ after kill -9 at any commit step (the
real `htr run`, and a model-free writer child for every step), with two writers racing
for the same ledger entry, and with ledger checkpoints. S3 is moto's real server."""

from __future__ import annotations

import json
import signal

import pytest

from batch import outputs, storage
from batch.ledger import Ledger, LedgerState, Shard
from batch.outputs import CRASH_ENV, OutputWriter, read_ledger, read_table
from batch.storage import SourceObject
from tests.worker_helpers import (
    BAD,
    DOCS,
    assert_clean,
    assert_exactly_once,
    htr_inprocess,
    htr_subprocess,
    listing,
    python_subprocess,
    upload,
)
from tests.writer_child import Version, expected_after, phase_versions, record, write_phase

KILLED = -signal.SIGKILL


# ---- the real worker, killed mid-run -------------------------------------------------------------


@pytest.mark.parametrize(
    "point",
    [
        "part-after:3",  # before a ledger write: batch 1 committed, batch 2 has an orphan part
        "commit-after:2",  # after a ledger write: batch 2 committed, its JSON not yet published
    ],
)
def test_kill9_worker_then_rerun(point, s3_endpoint, s3_bucket, one_word_models, capsys, fresh_storage):
    upload(s3_endpoint, s3_bucket, "in/", DOCS)
    inp, out = f"s3://{s3_bucket}/in/", f"s3://{s3_bucket}/out/"
    sources = {inp + k: v for k, v in DOCS.items()}
    bad = {inp + k for k, v in DOCS.items() if v == BAD}
    args = [
        "run",
        inp,
        out,
        "--models",
        one_word_models,
        "--part-docs",
        2,
        "--decode-workers",
        1,
        "--no-progress",
    ]

    killed = htr_subprocess(args, **{CRASH_ENV: point})
    assert killed.returncode == KILLED, killed.stderr[-3000:]
    committed = set(read_ledger(out).sources)
    assert 0 < len(committed) < len(sources)
    # what is committed is exact even before any recovery (reading the ledger's parts)
    assert_exactly_once(out, {u: sources[u] for u in committed}, bad & committed, committed_only=True)

    rc, summary = htr_inprocess(capsys, *args, "--skip-failed")
    assert rc in (0, 3)
    assert (summary["skipped"], summary["documents"]) == (len(committed), len(sources) - len(committed))
    assert_exactly_once(out, sources, bad)
    assert_clean(out)


# ---- every commit step, killed (writer child, no models: a second each) -----------------------------


@pytest.mark.parametrize(
    "phase,point",
    [
        ("base", "part-after:2"),  # a batch's parts written, no marker, no entry
        ("change", "rewrite-after:1"),  # superseding: an old part rewritten, not committed
        ("change", "commit-before:1"),  # rewrites and marker written, no entry
        ("change", "commit-after:1"),  # committed; old parts not deleted, JSON not published
        ("change", "publish-after:2"),  # half published
    ],
)
def test_kill9_writer_then_rerun(phase, point, s3_bucket, fresh_storage):
    """base: 8 sources, 2 fail. change: one changed, one ok -> failed, one failed -> ok, one
    reprocessed with the same bytes; each of those must end up exactly once, as its new self."""
    out = f"s3://{s3_bucket}/out/"
    if phase == "change":
        write_phase(out, "base", "base-run")
    killed = python_subprocess(["-m", "tests.writer_child", out, phase], **{CRASH_ENV: point})
    assert killed.returncode == KILLED, killed.stderr[-3000:]

    write_phase(out, phase, "rerun")
    sources, bad = expected_after(phase)
    assert_exactly_once(out, sources, bad)
    assert_clean(out)
    if phase == "change":  # the one reprocessed with the same bytes has only new rows
        same = [x.uri for x in phase_versions("change") if x.etag.endswith("again")][0]
        runs = {r["run_id"] for r in read_table(out, "pages").to_pylist() if r["source_uri"] == same}
        assert runs <= {"child-change", "rerun"} and len(runs) == 1


# ---- two writers, one ledger -----------------------------------------------------------------------


def test_racing_writers_replan_and_lose_nothing(s3_bucket, monkeypatch, fresh_storage):
    """Shard A and shard B each supersede a source held in the same (unsharded) part. B plans
    its rewrite of that part, then A commits first: B's put-if-absent of the same entry
    number fails, and B plans again on top of A's rewrite instead of resurrecting A's rows."""
    out = f"s3://{s3_bucket}/out/"
    write_phase(out, "base", "base-run", docs_per_part=8)  # one batch: every part is shared
    shared = set(read_ledger(out).parts)
    a, b = OutputWriter(out, "run-a", shard=Shard(0, 2)), OutputWriter(out, "run-b", shard=Shard(1, 2))
    a.open(), b.open()
    va, vb = _new_version(1), _new_version(4)
    a.add_document(record(va, "run-a"), SourceObject(va.uri, va.uri, 1, va.etag, 0.0))
    b.add_document(record(vb, "run-b"), SourceObject(vb.uri, vb.uri, 1, vb.etag, 0.0))

    raced = []

    def a_commits_first(name: str) -> None:
        if name == "commit-before" and not raced:
            raced.append(name)
            a.flush()

    monkeypatch.setattr(outputs, "crash_point", a_commits_first)
    b.flush()

    state = read_ledger(out)
    assert raced and state.seq == 3
    third = Ledger(out).read_entry(3)
    assert third["writer"] == b.writer_id and not set(third["removed"]) & shared  # re-planned
    sources, bad = expected_after("base")
    sources.update({va.uri: va.data, vb.uri: vb.data})
    assert_exactly_once(out, sources, bad)
    assert_clean(out)


def _new_version(i: int) -> Version:
    uri = f"s3://archive/scans/doc-{i}.pdf"
    return Version(uri, f"etag-{i}-race", f"{uri}@race".encode())


# ---- checkpoints ------------------------------------------------------------------------------------


def test_checkpoints_fold_to_the_same_state(tmp_path, monkeypatch):
    """A local OUT (hard-link put-if-absent) with a checkpoint every 2 entries: loading from
    the latest checkpoint gives exactly the state of folding every entry."""
    out = str(tmp_path / "out")
    monkeypatch.setattr(Ledger.__init__, "__defaults__", (2,))  # checkpoint_every
    write_phase(out, "base", "r1", docs_per_part=3)  # entries 1-3
    write_phase(out, "change", "r2", docs_per_part=1)  # entries 4-7
    names = sorted(u.rsplit("/", 1)[-1] for u in listing(storage.join(out, "_ledger", "checkpoints")))
    assert names == [f"{n:010d}.json.gz" for n in (2, 4, 6)]

    from_checkpoint = Ledger(out).load()
    from_entries = Ledger(out)
    from_entries.state = LedgerState()
    from_entries.refresh()
    assert from_checkpoint.seq == from_entries.state.seq == 7
    assert json.dumps(from_checkpoint.to_json(), sort_keys=True) == json.dumps(
        from_entries.state.to_json(), sort_keys=True
    )
    assert_exactly_once(out, *expected_after("change"))
    assert_clean(out)


# ---- overlapping runs of one shard ----------------------------------------------------------------


def test_overlapping_run_of_the_same_shard_stops_before_committing(s3_bucket, fresh_storage):
    """Last night's run is still going when tonight's starts: tonight's takes the shard's lease
    and cleans up; last night's must then stop rather than commit parts that are gone."""
    out = f"s3://{s3_bucket}/out/"
    old = OutputWriter(out, "last-night")
    old.open()
    [x] = [v for v in phase_versions("base") if v.uri.endswith("doc-0.pdf")]
    old.add_document(record(x, "last-night"), SourceObject(x.uri, x.uri, 1, x.etag, 0.0))

    write_phase(out, "base", "tonight")  # takes the lease, recovers, commits everything
    with pytest.raises(outputs.CommitFailed, match="took over"):
        old.close()
    assert {s.run_id for s in read_ledger(out).sources.values()} == {"tonight"}

    assert write_phase(out, "base", "tomorrow") == 0  # nothing to do, but it cleans up
    assert_exactly_once(out, *expected_after("base"))
    assert_clean(out)
