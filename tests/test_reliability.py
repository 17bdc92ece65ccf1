"""Overlapping runs, lost parts, S3 faults and outages, against moto's real server behind a
real HTTP proxy (tests.s3_server.FaultProxy): the README's "Reliability" guarantees.

* A run whose ledger write hangs while a second run takes over can never publish, and the
  second run never deletes a part that a committed entry lists (both orders of the race).
* A part that the ledger lists but storage lost is detected; its sources are done again.
* 30 % of S3 requests failing (500/503, resets before and mid-body, error replies cut off,
  replies lost after the write landed) still gives every good document exactly once.
* An outage mid-run stops it with exit 4 and nothing half-published; the next run finishes.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from batch import outputs, storage
from batch.core.errors import EXIT_FATAL
from batch.ledger import Ledger
from batch.outputs import read_ledger
from tests.s3_server import FaultProxy, s3_client
from tests.worker_helpers import (
    BAD,
    DOCS,
    assert_clean,
    assert_exactly_once,
    child_env,
    htr_inprocess,
    upload,
)
from tests.writer_child import expected_after, write_phase


def _entry_put(method: str, path: str) -> bool:
    return method == "PUT" and "/_ledger/entries/" in path


def _start_writer_child(out: str, endpoint: str) -> subprocess.Popen:
    """`python -m tests.writer_child OUT base` (3 sources per commit) talking to `endpoint`."""
    env = child_env(AWS_ENDPOINT_URL=endpoint, HTR_S3_READ_TIMEOUT="300")
    return subprocess.Popen(
        [sys.executable, "-m", "tests.writer_child", out, "base"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# ---- overlapping runs -----------------------------------------------------------------------------


@pytest.mark.parametrize("lands", [False, True], ids=["entry-held-before-s3", "entry-landed-reply-held"])
def test_overlapped_run_with_a_stalled_commit_loses_nothing(lands, s3_endpoint, s3_bucket, fresh_storage):
    """Run A's first ledger entry hangs in the proxy, either before it reaches S3 or after it
    landed; meanwhile run B starts, recovers and commits everything. Then A's request goes
    on. Either way A stops (exit 4) without publishing, and every source is exactly once."""
    out = f"s3://{s3_bucket}/out/"
    proxy = FaultProxy(upstream=s3_endpoint).start()
    gate = proxy.gate(_entry_put, forward_first=lands)
    try:
        a = _start_writer_child(out, proxy.url)
        assert gate.arrived.wait(120), a.communicate(timeout=60)
        # B: straight to S3, while A hangs holding a written batch (parts + staged JSON)
        write_phase(out, "base", "run-b")
        b_state = read_ledger(out)
        if lands:  # A's batch was committed before B started: B kept it and did the rest
            assert {s.run_id for s in b_state.sources.values()} == {"child-base", "run-b"}
        else:  # B took the lease first and cleaned A's uncommitted batch away
            assert {s.run_id for s in b_state.sources.values()} == {"run-b"}
            assert Ledger(out).read_entry(1)["lease"] == "*"
        gate.release()
        _, err = a.communicate(timeout=120)
    finally:
        gate.release()
        proxy.stop()
    assert a.returncode == EXIT_FATAL, err[-3000:]
    assert "took over" in err and "not committed" in err
    assert read_ledger(out).sources == b_state.sources  # A added nothing after B took over
    assert_exactly_once(out, *expected_after("base"))

    assert write_phase(out, "base", "run-c") == 0  # nothing to redo; cleans A's leftovers
    assert_exactly_once(out, *expected_after("base"))
    assert_clean(out)


def test_lost_parts_are_found_and_their_sources_done_again(s3_endpoint, s3_bucket, fresh_storage):
    """A committed part vanishes from storage (deleted by hand, a lifecycle rule, a bug): the
    next run drops it from the ledger, marks its sources "lost" and processes them again,
    instead of skipping documents that have no rows."""
    out = f"s3://{s3_bucket}/out/"
    write_phase(out, "base", "r1", docs_per_part=3)
    state = read_ledger(out)
    victim = sorted(p for p in state.parts if p.startswith("words/"))[0]
    lost = set(state.parts[victim])
    bucket_key = storage.split_s3(storage.join(out, victim))
    s3_client(s3_endpoint).delete_object(Bucket=bucket_key[0], Key=bucket_key[1])

    assert write_phase(out, "base", "r2") == len(lost)
    state = read_ledger(out)
    assert {u for u, s in state.sources.items() if s.run_id == "r2"} == lost
    assert victim not in state.parts
    assert_exactly_once(out, *expected_after("base"))
    assert_clean(out)


# ---- S3 faults --------------------------------------------------------------------------------------

ALL_FAULTS = ("500", "503", "reset", "truncate", "error-reset", "stall")


def test_thirty_percent_faults_every_good_document_exactly_once(
    s3_endpoint, s3_bucket, one_word_models, capsys, monkeypatch, fresh_storage
):
    inp, out = f"s3://{s3_bucket}/in/", f"s3://{s3_bucket}/out/"
    docs = DOCS
    upload(s3_endpoint, s3_bucket, "in/", docs)
    proxy = FaultProxy(upstream=s3_endpoint, stall_s=1.0, max_consecutive=4).start()
    proxy.set_random(0.3, seed=12, kinds=ALL_FAULTS)
    for name, value in {
        "HTR_S3_MAX_ATTEMPTS": "12",
        "HTR_S3_READ_TIMEOUT": "0.5",
        "HTR_S3_CONNECT_TIMEOUT": "2",
        "HTR_S3_BACKOFF_BASE": "0.01",
    }.items():
        monkeypatch.setenv(name, value)
    try:
        rc, s = htr_inprocess(
            capsys,
            "run",
            inp,
            out,
            "--models",
            one_word_models,
            "--no-progress",
            "--s3-endpoint-url",
            proxy.url,
            "--part-docs",
            2,
            "--stream-mb",
            0,
        )
    finally:
        proxy.stop()
        storage.configure(storage.StorageConfig())  # the checks below go straight to moto
    assert set(proxy.faults) == set(ALL_FAULTS), proxy.faults  # every kind was hit
    assert rc == 3 and (s["documents"], s["errors"]) == (len(docs), 1)
    sources = {inp + k: v for k, v in docs.items()}
    assert_exactly_once(out, sources, {inp + k for k, v in docs.items() if v == BAD})
    assert_clean(out)


def test_error_reply_cut_mid_body_is_retried(s3_endpoint, s3_bucket, fresh_storage):
    """A 500 whose body breaks off raises urllib3's ProtocolError inside botocore's parser:
    retried like any transient fault, for reads, listings, writes and conditional writes."""
    proxy = FaultProxy(upstream=s3_endpoint, stall_s=1.0).start()
    storage.configure(storage.StorageConfig(endpoint_url=proxy.url, backoff_base=0.01, read_timeout=0.5))
    uri = f"s3://{s3_bucket}/x/a.bin"
    try:
        proxy.fail_next("error-reset", "error-reset")
        storage.write_bytes(uri, b"abc" * 1000)
        proxy.fail_next("error-reset", "truncate")
        assert storage.read_bytes(uri) == b"abc" * 1000
        proxy.fail_next("error-reset")
        assert [o.key for o in storage.list_objects(f"s3://{s3_bucket}/x/")] == ["a.bin"]
        proxy.fail_next("error-reset")
        assert storage.create_if_absent(f"s3://{s3_bucket}/x/b.json", b"{}")
        assert not storage.create_if_absent(f"s3://{s3_bucket}/x/b.json", b"{}")
        # the reply to a write that landed is lost: the retry finds it there (412), and
        # the ledger tells its own entry by the token inside (batch.ledger.try_commit)
        proxy.fail_next("stall")
        assert not storage.create_if_absent(f"s3://{s3_bucket}/x/c.json", b"[]")
        assert storage.read_bytes(f"s3://{s3_bucket}/x/c.json") == b"[]"
        proxy.fail_next(*["error-reset"] * 5)
        with pytest.raises(storage.StorageError) as failed:
            storage.read_bytes(uri)
        assert failed.value.transient and failed.value.stage == "fetch"
        assert "after 5 attempts" in str(failed.value)
        proxy.fail_next(*["503"] * 5)
        with pytest.raises(storage.StorageError) as failed:
            storage.write_bytes(uri, b"x")
        assert failed.value.stage == "write"
    finally:
        proxy.stop()
    assert proxy.faults.count("error-reset") == 10


class _GoesDown(FaultProxy):
    """Healthy until the first ledger entry is written (after=False: that write fails too;
    after=True: it lands), then every request fails (503)."""

    down = False
    after = False

    def _decide(self, method: str, path: str) -> str | None:
        if self.down:
            with self._lock:
                self.faults.append("503")
            return "503"
        if _entry_put(method, path):
            self.down = True
            if not self.after:
                return self._decide(method, path)
        return super()._decide(method, path)


def test_outage_right_after_the_commit_point_says_committed(s3_endpoint, s3_bucket, fresh_storage):
    """S3 goes down just after a batch's entry landed: the batch is committed, so the error
    says so (stage publish, never "not committed"), and the next run publishes it."""
    out = f"s3://{s3_bucket}/out/"
    proxy = _GoesDown(upstream=s3_endpoint)
    proxy.after = True
    proxy.start()
    storage.configure(storage.StorageConfig(endpoint_url=proxy.url, max_attempts=2, backoff_base=0.01))
    try:
        with pytest.raises(outputs.CommitFailed) as failed:
            write_phase(out, "base", "r1", docs_per_part=8)
    finally:
        proxy.stop()
        storage.configure(storage.StorageConfig())
    assert failed.value.stage == "publish" and "not committed" not in str(failed.value)
    assert "is committed, but publishing" in str(failed.value)
    assert len(read_ledger(out).sources) == 8  # committed, just not published
    assert write_phase(out, "base", "r2") == 0
    assert_exactly_once(out, *expected_after("base"))
    assert_clean(out)


def _run_fails_through(proxy: FaultProxy, args: list, capsys, monkeypatch) -> str:
    """`htr run ARGS` in process with S3 behind `proxy` (2 attempts per call, short backoff): it
    must stop with exit 4. Returns its stderr; the proxy is stopped and storage points straight at
    moto again, for the checks that follow."""
    from batch.cli import main

    monkeypatch.setenv("HTR_S3_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("HTR_S3_BACKOFF_BASE", "0.01")
    try:
        capsys.readouterr()
        rc = main([str(a) for a in [*args, "--s3-endpoint-url", proxy.url]])
        err = capsys.readouterr().err
    finally:
        proxy.stop()
        storage.configure(storage.StorageConfig())
    assert rc == EXIT_FATAL, err[-3000:]
    return err


def test_outage_mid_run_stops_cleanly_and_the_next_run_finishes(
    s3_endpoint, s3_bucket, one_word_models, capsys, monkeypatch, fresh_storage
):
    inp, out = f"s3://{s3_bucket}/in/", f"s3://{s3_bucket}/out/"
    upload(s3_endpoint, s3_bucket, "in/", DOCS)
    proxy = _GoesDown(upstream=s3_endpoint).start()
    args = ["run", inp, out, "--models", one_word_models, "--no-progress", "--part-docs", 2]
    err = _run_fails_through(proxy, args, capsys, monkeypatch)
    assert "htr run: commit: batch" in err and "not committed" in err
    # nothing half-published: no entry, so no document JSON and no part anyone reads as live
    assert read_ledger(out).seq == 0
    assert not [u for u in storage.list_uris(out) if "/documents/" in u]

    monkeypatch.setenv("HTR_S3_MAX_ATTEMPTS", "5")
    rc, s = htr_inprocess(capsys, *args)
    assert rc == 3 and s["documents"] == len(DOCS)
    sources = {inp + k: v for k, v in DOCS.items()}
    assert_exactly_once(out, sources, {inp + k for k, v in DOCS.items() if v == BAD})
    assert_clean(out)


class _Refuses(FaultProxy):
    """`fault` for every request that `refuse(method, path)` picks."""

    fault = "error-reset"  # a 500 whose body breaks off: urllib3's ProtocolError in botocore

    def refuse(self, method: str, path: str) -> bool:
        return True

    def _decide(self, method: str, path: str) -> str | None:
        if self.refuse(method, path):
            with self._lock:
                self.faults.append(self.fault)
            return self.fault
        return super()._decide(method, path)


def _lists_input(method: str, path: str) -> bool:
    return method == "GET" and "list-type=2" in path and "prefix=in" in path


@pytest.mark.parametrize("down", ["everything", "input-listing"])
def test_storage_down_at_start_up_is_exit_4_not_a_traceback(
    down, s3_endpoint, s3_bucket, one_word_models, capsys, monkeypatch, fresh_storage
):
    """S3 fails before anything was processed: the ledger cannot be read (everything down), or
    only the input's listing fails. The run stops with exit 4 and a one-line error naming the
    stage (a raw urllib3 error used to escape as a traceback, exit 1); the next run does all."""
    inp, out = f"s3://{s3_bucket}/in/", f"s3://{s3_bucket}/out/"
    upload(s3_endpoint, s3_bucket, "in/", DOCS)
    proxy = _Refuses(upstream=s3_endpoint)
    if down == "input-listing":
        proxy.refuse = _lists_input
        proxy.fault = "503"
    proxy.start()
    args = ["run", inp, out, "--models", one_word_models, "--no-progress"]
    err = _run_fails_through(proxy, args, capsys, monkeypatch)
    assert len(proxy.faults) >= 2
    assert "Traceback" not in err and "htr run: fetch: " in err and "(after 2 attempts)" in err, err
    assert read_ledger(out).seq == 0  # nothing committed, nothing to undo

    rc, s = htr_inprocess(capsys, *args)
    assert rc == 3 and s["documents"] == len(DOCS)
    assert_exactly_once(
        out, {inp + k: v for k, v in DOCS.items()}, {inp + k for k, v in DOCS.items() if v == BAD}
    )
    assert_clean(out)


def test_documents_failing_transiently_in_a_row_are_an_outage():
    """One object that fails after all retries is that document's error; OUTAGE_AFTER of them
    in a row (nothing fetched in between) means storage is down: the run stops (exit 4)
    instead of writing an error row for every document of the night."""
    from batch.core.errors import CorruptDocument, StorageError
    from batch.worker import OUTAGE_AFTER, Outage, Run

    run = Run(pipe=None, writer=None, run_id="r", progress=False)
    down = StorageError("read failed: SlowDown (after 5 attempts)", transient=True)
    for _ in range(OUTAGE_AFTER - 1):
        run._count_fetch_failure(down)
    run._count_fetch_failure(CorruptDocument("a bad document in between"))  # not storage: reset
    for _ in range(OUTAGE_AFTER - 1):
        run._count_fetch_failure(down)
    run._count_fetch_failure(StorageError("AccessDenied"))  # permanent: that document's own
    for _ in range(OUTAGE_AFTER - 1):
        run._count_fetch_failure(down)
    with pytest.raises(Outage, match=f"{OUTAGE_AFTER} documents in a row") as stopped:
        run._count_fetch_failure(down)
    assert stopped.value.stage == "fetch"
