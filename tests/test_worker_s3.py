"""`htr run` against moto's real S3 server: incremental reruns, superseding, model changes,
retries and faults, missing objects, shards, bounded memory, and local folders.

Most runs are in-process (`batch.cli.main`; no torch import per run); the first one is a
real subprocess, as a nightly job would start it."""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq
import pytest

from batch import storage, worker
from batch.ledger import Policy, Shard
from batch.outputs import OutputWriter, read_ledger, read_table
from tests.s3_server import FaultProxy, s3_client
from tests.worker_helpers import (
    BAD,
    DOCS,
    assert_clean,
    assert_exactly_once,
    doc_id,
    htr_inprocess,
    htr_subprocess,
    listing,
    pdf,
    png,
    summary,
    upload,
)


@pytest.fixture
def models(one_word_models):
    """Models that find one word on every page (see tests.worker_helpers)."""
    return one_word_models


@pytest.fixture
def s3_io(s3_endpoint, s3_bucket, fresh_storage):
    """(input prefix, output prefix, upload(docs)) in a fresh bucket."""
    inp, out = f"s3://{s3_bucket}/in/", f"s3://{s3_bucket}/out/"
    return inp, out, lambda docs: upload(s3_endpoint, s3_bucket, "in/", docs)


def sources_of(inp: str, docs: dict[str, bytes]) -> tuple[dict[str, bytes], set[str]]:
    return {inp + k: v for k, v in docs.items()}, {inp + k for k, v in docs.items() if v == BAD}


def codecs(out: str) -> set[str]:
    """The compression of every Parquet part in OUT."""
    parts = [u for u in listing(out) if u.endswith(".parquet")]
    return {
        pq.ParquetFile(io.BytesIO(storage.read_bytes(u))).metadata.row_group(0).column(0).compression
        for u in parts
    }


def outputs_and_ledger(out: str) -> dict[str, str]:
    """Every object in OUT but the shard lease (each run takes it) -> its ETag."""
    return {u: etag for u, etag in listing(out).items() if "/_ledger/writers/" not in u}


def run_args(inp: str, out: str, models, *extra) -> list:
    return ["run", inp, out, "--models", models, "--no-progress", *extra]


# ---- the nightly cycle ---------------------------------------------------------------------------


def test_s3_run_then_rerun_does_nothing_new(s3_io, models, capsys):
    inp, out, put = s3_io
    put(DOCS)
    proc = htr_subprocess(run_args(inp, out, models, "--part-docs", 2))
    assert proc.returncode == 3, proc.stderr[-3000:]  # 3: finished, with an error record
    first = summary(proc.stdout)
    assert (first["documents"], first["pages"], first["errors"], first["skipped"]) == (6, 6, 1, 0)
    assert first["words"] >= 6  # a word on every page
    sources, bad = sources_of(inp, DOCS)
    assert_exactly_once(out, sources, bad)
    assert_clean(out)
    state = read_ledger(out)
    assert state.seq == 3  # 6 documents, 2 per commit
    assert all(len(held) <= 2 for held in state.parts.values())
    assert codecs(out) == {"ZSTD"}

    before = outputs_and_ledger(out)
    rc, again = htr_inprocess(capsys, *run_args(inp, out, models, "--skip-failed"))
    assert rc == 0 and (again["documents"], again["skipped"]) == (0, 6)
    assert outputs_and_ledger(out) == before  # no entry, no part, no document written

    rc, retry = htr_inprocess(capsys, *run_args(inp, out, models))  # failures are retried
    assert rc == 3 and (retry["documents"], retry["errors"], retry["skipped"]) == (1, 1, 5)
    assert_exactly_once(out, sources, bad)
    assert_clean(out)


def test_new_and_changed_objects_then_forced(s3_io, models, capsys):
    inp, out, put = s3_io
    docs = {"a.png": png(1), "b.png": png(2), "e.pdf": pdf(5)}
    put(docs)
    assert htr_inprocess(capsys, *run_args(inp, out, models))[0] == 0
    old_a = doc_id(docs["a.png"])

    docs.update({"a.png": png(11), "f.png": png(6)})  # a changed under the same key, f is new
    put({"a.png": docs["a.png"], "f.png": docs["f.png"]})
    rc, s = htr_inprocess(capsys, *run_args(inp, out, models))
    assert rc == 0 and (s["documents"], s["skipped"]) == (2, 2)
    assert_exactly_once(out, *sources_of(inp, docs))  # a's old rows and JSON are gone
    assert old_a not in {r["doc_id"] for r in read_table(out, "words").to_pylist()}
    assert_clean(out)

    rc, s = htr_inprocess(
        capsys, *run_args(inp, out, models, "--reprocess", "--run-id", "forced", "--compression", "snappy")
    )
    assert rc == 0 and (s["documents"], s["skipped"]) == (4, 0)
    assert_exactly_once(out, *sources_of(inp, docs))
    assert_clean(out)
    pages = read_table(out, "pages")
    assert set(pages.column("run_id").to_pylist()) == {"forced"}
    assert codecs(out) == {"SNAPPY"}  # every part was rewritten by the forced run


def test_new_model_version_needs_opt_in(s3_io, tiny_models, models, capsys):
    inp, out, put = s3_io
    docs = {"a.png": png(1)}
    put(docs)
    assert htr_inprocess(capsys, *run_args(inp, out, tiny_models))[0] == 0
    rc, s = htr_inprocess(capsys, *run_args(inp, out, models))
    assert rc == 0 and (s["documents"], s["skipped"]) == (0, 1)
    rc, s = htr_inprocess(capsys, *run_args(inp, out, models, "--reprocess-on-model-change"))
    assert rc == 0 and (s["documents"], s["skipped"]) == (1, 0)
    assert_exactly_once(out, *sources_of(inp, docs))
    versions = set(read_table(out, "pages").column("model_version").to_pylist())
    assert versions == {read_ledger(out).sources[inp + "a.png"].model_version} and len(versions) == 1
    assert "+rec-" in versions.pop()


# ---- faults -----------------------------------------------------------------------------------------


@dataclass
class BrokenObjects(FaultProxy):
    """A fault proxy whose GETs of some keys always fail (503): retries cannot save them."""

    broken: tuple[str, ...] = ()

    def _decide(self, method: str, path: str) -> str | None:
        if method == "GET" and path.split("?")[0].endswith(self.broken):
            with self._lock:
                self.requests.append((method, path))
                self.faults.append("503")
            return "503"
        return super()._decide(method, path)


def test_object_failing_after_retries_is_an_error_then_retried(
    s3_endpoint, s3_io, models, capsys, monkeypatch
):
    inp, out, put = s3_io
    docs = {"a.png": png(1), "b.png": png(2), "c.png": png(3)}
    put(docs)
    proxy = BrokenObjects(upstream=s3_endpoint, broken=("/in/b.png",)).start()
    monkeypatch.setenv("HTR_S3_MAX_ATTEMPTS", "2")  # keep botocore's backoff short
    try:
        rc, s = htr_inprocess(capsys, *run_args(inp, out, models, "--s3-endpoint-url", proxy.url))
    finally:
        proxy.stop()
    assert rc == 3 and (s["documents"], s["errors"]) == (3, 1)
    assert proxy.faults.count("503") >= 2  # the first try and the retry
    sources, _ = sources_of(inp, docs)
    assert_exactly_once(out, sources, {inp + "b.png"})
    [err] = read_table(out, "errors").to_pylist()
    assert (err["stage"], err["error_type"]) == ("fetch", "StorageError")

    rc, s = htr_inprocess(capsys, *run_args(inp, out, models))  # S3 is well again
    assert rc == 0 and (s["documents"], s["skipped"]) == (1, 2)
    assert_exactly_once(out, sources)  # out of errors/, into words/ and pages/
    assert read_table(out, "errors").num_rows == 0
    assert_clean(out)


def test_transient_faults_are_retried_and_nothing_is_lost(s3_io, fault_proxy, models, capsys, monkeypatch):
    inp, out, put = s3_io
    docs = {"a.png": png(1), "b.png": png(2), "e.pdf": pdf(5), "f.pdf": pdf(6, pages=1)}
    put(docs)
    fault_proxy.set_random(0.05, seed=3, kinds=("500", "503", "reset", "truncate"))
    monkeypatch.setenv("HTR_S3_MAX_ATTEMPTS", "10")
    rc, s = htr_inprocess(
        capsys,
        *run_args(inp, out, models, "--s3-endpoint-url", fault_proxy.url, "--part-docs", 1, "--stream-mb", 0),
    )
    assert fault_proxy.faults, "no fault was injected: the test proves nothing"
    assert rc == 0 and (s["documents"], s["errors"]) == (4, 0)
    assert_exactly_once(out, *sources_of(inp, docs))
    assert_clean(out)


def test_object_deleted_after_listing_is_an_error_record(
    s3_endpoint, s3_bucket, s3_io, models, capsys, monkeypatch
):
    inp, out, put = s3_io
    docs = {"a.png": png(1), "b.png": png(2)}
    put(docs)
    real_list = storage.list_objects

    def list_then_delete(root, *args, **kwargs):
        for obj in real_list(root, *args, **kwargs):
            if obj.uri == inp + "b.png":
                s3_client(s3_endpoint).delete_object(Bucket=s3_bucket, Key="in/b.png")
            yield obj

    monkeypatch.setattr(storage, "list_objects", list_then_delete)
    rc, s = htr_inprocess(capsys, *run_args(inp, out, models))
    assert rc == 3 and (s["documents"], s["errors"]) == (2, 1)
    sources, _ = sources_of(inp, docs)
    assert_exactly_once(out, sources, bad={inp + "b.png"})
    [err] = read_table(out, "errors").to_pylist()
    assert (err["source_uri"], err["stage"], err["error_type"]) == (inp + "b.png", "fetch", "NotFound")


# ---- shards -----------------------------------------------------------------------------------------


def test_two_shards_at_once_write_the_union_exactly_once(s3_endpoint, s3_io, models, capsys):
    """Two workers (threads here, each with its own pipeline and writer) split one input and
    commit into one OUT at the same time, one document per commit, so they contend for
    ledger entries."""
    _, out, _ = s3_io
    bucket = storage.split_s3(out)[0]

    def split(prefix: str) -> list[int]:  # the bucket name is random: so is the hash split
        return [sum(Shard(i, 2).owns(f"s3://{bucket}/{prefix}{k}") for k in DOCS) for i in (0, 1)]

    prefix = next(p for p in (f"in{n}/" for n in range(200)) if all(split(p)))
    upload(s3_endpoint, bucket, prefix, DOCS)
    inp = f"s3://{bucket}/{prefix}"
    sources, bad = sources_of(inp, DOCS)
    mine = split(prefix)
    assert all(mine) and sum(mine) == len(sources)  # both shards have work, none shared

    stats: dict[int, worker.RunStats] = {}

    def shard(i: int) -> None:
        pipe = worker.Pipeline.load(models, "cpu")
        writer = OutputWriter(out, f"shard{i}", docs_per_part=1, shard=Shard(i, 2))
        stats[i] = worker.process(
            pipe, writer, storage.list_objects(inp), Policy(pipe.model_version), progress=False
        )

    threads = [threading.Thread(target=shard, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [stats[i].documents for i in (0, 1)] == mine
    assert read_ledger(out).seq == len(sources)
    assert_exactly_once(out, sources, bad)
    assert_clean(out)
    tags = {u.rsplit("/", 1)[-1].split("-")[-3] for u in listing(out) if u.endswith(".parquet")}
    assert tags == {"s0of2", "s1of2"}

    rc, s = htr_inprocess(capsys, *run_args(inp, out, models, "--skip-failed"))  # unsharded
    assert rc == 0 and (s["documents"], s["skipped"]) == (0, len(sources))


# ---- memory -----------------------------------------------------------------------------------------


def _slow_pipeline(models, monkeypatch) -> tuple[Any, dict[str, int], list[int]]:
    """A pipeline whose model is slow, so an unbounded producer would run far ahead, and a count of
    the pages decoded and not yet through the model at each model call (`ahead`)."""
    lock, counts, ahead = threading.Lock(), {"decoded": 0, "done": 0}, []
    real_iter_pages = worker.iter_pages

    def counting_pages(*args, **kwargs):
        for page in real_iter_pages(*args, **kwargs):
            with lock:
                counts["decoded"] += 1
            yield page

    monkeypatch.setattr(worker, "iter_pages", counting_pages)
    pipe = worker.Pipeline.load(models, "cpu")
    real_process = pipe.process_pages

    def slow_process(images):
        with lock:
            ahead.append(counts["decoded"] - counts["done"])
        time.sleep(0.05)
        pages = real_process(images)
        with lock:
            counts["done"] += len(images)
        return pages

    pipe.process_pages = slow_process  # type: ignore[method-assign]  # the slow model stands in
    return pipe, counts, ahead


def test_long_pdf_flows_through_a_bounded_queue(s3_io, tiny_models, monkeypatch):
    """A 24-page PDF, streamed to a temp file (--stream-mb 0), its pages rasterised while a
    slow model consumes them: never more than a queue's worth of pages is decoded ahead."""
    inp, out, put = s3_io
    put({"long.pdf": pdf(7, pages=24)})
    pipe, counts, ahead = _slow_pipeline(tiny_models, monkeypatch)
    stats = worker.process(
        pipe,
        OutputWriter(out, "long"),
        storage.list_objects(inp),
        Policy(),
        dpi=72,
        batch_pages=2,
        decode_workers=1,
        progress=False,
        stream_above=0,
    )
    assert (stats.documents, stats.pages) == (1, 24)
    # in flight: the batch (2) + the queue (2 x 2) + one page blocked in put (1)
    assert max(ahead) <= 7, ahead


def test_decoded_pages_in_flight_are_bounded_in_bytes(tmp_path, tiny_models, monkeypatch):
    """The pages between the decode threads and the models are bounded in bytes too
    (worker.PageBudget), not only by the queue's length: with room for two pages, a slow model
    never has more than two decoded pages ahead of it (the queue alone lets seven in, and a
    PDF of 100-megapixel pages then needs 2 GB). A page over the whole budget still goes
    through, alone."""
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    (inp / "long.pdf").write_bytes(pdf(8, pages=12))
    page_bytes = next(worker.iter_pages((inp / "long.pdf").read_bytes(), 72)).nbytes
    pipe, counts, ahead = _slow_pipeline(tiny_models, monkeypatch)
    options = dict(dpi=72, batch_pages=2, decode_workers=1, progress=False)
    for budget, most in ((page_bytes * 5 // 2, 2), (page_bytes // 2, 1)):
        counts.update(decoded=0, done=0)
        ahead.clear()
        writer = OutputWriter(str(out), f"budget{most}")
        stats = worker.process(
            pipe,
            writer,
            storage.list_objects(str(inp)),
            Policy(reprocess=True),
            page_budget=budget,
            **options,
        )
        assert (stats.documents, stats.pages, stats.errors) == (1, 12, 0)
        assert max(ahead) <= most, ahead


# ---- local folders ----------------------------------------------------------------------------------


def test_local_folders_work_the_same_way(tmp_path, models, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    (inp / "sub").mkdir(parents=True)
    docs = {"a.png": png(1), "sub/c.png": png(3), "zz-bad.pdf": BAD}
    for key, data in docs.items():
        (inp / key).write_bytes(data)
    rc, s = htr_inprocess(capsys, *run_args(inp, out, models))
    assert rc == 3 and (s["documents"], s["errors"]) == (3, 1)
    sources = {str(inp / k): v for k, v in docs.items()}
    assert_exactly_once(str(out), sources, {str(inp / "zz-bad.pdf")})

    docs["a.png"] = png(11)
    (inp / "a.png").write_bytes(docs["a.png"])
    rc, s = htr_inprocess(capsys, *run_args(inp, out, models, "--skip-failed"))
    assert rc == 0 and (s["documents"], s["skipped"]) == (1, 2)
    sources[str(inp / "a.png")] = docs["a.png"]
    assert_exactly_once(str(out), sources, {str(inp / "zz-bad.pdf")})
    assert_clean(str(out))
