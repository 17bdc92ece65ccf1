"""`htr run INPUT OUT`: the batch job, incremental and exactly-once (nightly runs on S3).

  recover OUT -> list sources -> skip what the ledger has done -> fetch + rasterise (thread
  pool, bounded queue) -> batched segment + recognise (main thread) -> lines -> records
  -> outputs, committed a batch at a time

Rasterising the next documents overlaps model work: poppler and Pillow release the GIL,
and the bounded page queue keeps memory flat however long a PDF is: at most
`decode_workers + 1` documents are in flight, each yielding pages one render chunk at a
time, and objects over --stream-mb are downloaded to a temp file and memory-mapped instead
of held in RAM. A document that fails at any stage (storage retries exhausted, object
deleted since the listing, corrupt, ...) becomes an error record; the run goes on. Only an
outage stops it: `OUTAGE_AFTER` documents in a row whose fetch failed transiently after all
retries (their error rows are not committed), a failed listing, or a commit that storage
refuses after its retry rounds (batch.outputs.CommitFailed); each exits 4 with everything
committed so far intact and nothing half-published, and the next run picks up from there.

Which sources a run processes (new, changed, failed before, --reprocess, ...) is decided
against the ledger (batch.ledger); how results are committed exactly once, superseding
older rows, is batch.outputs' business.
"""

from __future__ import annotations

import argparse
import hashlib
import mmap
import os
import queue
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
from tqdm import tqdm

from batch import exports, options, storage
from batch.core.errors import (
    EXIT_BAD_ARGS,
    EXIT_FATAL,
    EXIT_OK,
    EXIT_PARTIAL,
    HtrError,
    MissingDependency,
    StorageError,
    scrub,
)
from batch.core.ids import doc_id_for
from batch.core.schema import ErrorRecord, Page, now_ms
from batch.ledger import LedgerState, Policy, Shard
from batch.outputs import COMPRESSIONS, CommitFailed, OutputWriter
from batch.pipeline import Pipeline
from transforms.rasterise import DEFAULT_LIMITS, Limits, iter_pages, sniff

MiB = 1024 * 1024
OUTAGE_AFTER = 8  # documents in a row failing to fetch transiently: storage is down, stop
# Decoded page bytes allowed between the decode threads and the models (queue + batch). Letter
# pages at 200 dpi (11 MB) fill the queue long before this; 100-megapixel pages (300 MB each)
# go one at a time, so a long document of huge pages stays under the 2 GiB target (#12 item 5).
PAGE_BUDGET = 384 * MiB
_RUN_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # goes into object names


# A SageMaker job's host list (Processing and training): {"current_host": "algo-2", "hosts": [...]}.
RESOURCE_CONFIG = "/opt/ml/config/resourceconfig.json"


def shard_from_resource_config(path: str) -> Shard:
    """--shard auto: this host's place in the job's host list; one shard where there is none."""
    import json

    try:
        with open(path) as f:
            config = json.load(f)
    except FileNotFoundError:
        return Shard()
    hosts = list(config["hosts"])
    return Shard(hosts.index(config["current_host"]), len(hosts))


def _shard_arg(text: str) -> Shard:
    try:
        if text.strip() == "auto":
            return shard_from_resource_config(os.environ.get("HTR_RESOURCE_CONFIG", RESOURCE_CONFIG))
        return Shard.parse(text)
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise argparse.ArgumentTypeError(f"--shard {text}: {e}") from e


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="folder, file, or s3://bucket/prefix/ of PDFs and images")
    p.add_argument("output", help="output folder or s3://bucket/prefix/")
    options.add_arguments(p)  # --models, --device, engine and batches; --dpi, --image-side, limits
    p.add_argument("--include", action="append", help="glob on the relative key, repeatable")
    p.add_argument("--exclude", action="append", help="glob on the relative key, repeatable")
    p.add_argument(
        "--batch-pages",
        type=int,
        default=8,
        help="pages gathered (across documents) before running the models",
    )
    p.add_argument("--decode-workers", type=int, default=2, help="fetch/rasterise threads")
    p.add_argument(
        "--stream-mb",
        type=int,
        default=256,
        help="S3 objects over this size go to a temp file instead of memory",
    )
    p.add_argument("--run-id", help="default: a new id per run ([A-Za-z0-9._-])")
    p.add_argument("--no-progress", action="store_true")
    g = p.add_argument_group("incremental runs (see batch.outputs for the commit protocol)")
    g.add_argument("--reprocess", action="store_true", help="process every source again")
    g.add_argument(
        "--reprocess-on-model-change",
        action="store_true",
        help="process again what an other model version produced",
    )
    g.add_argument(
        "--skip-failed",
        action="store_true",
        help="do not retry sources that failed before (changed ones still run)",
    )
    g.add_argument(
        "--shard",
        type=_shard_arg,
        default=Shard(),
        metavar="I/N",
        help="process only shard I of N (stable hash of the source URI); auto: this "
        "host's place in a SageMaker job's hosts (/opt/ml/config/resourceconfig.json)",
    )
    g.add_argument("--part-docs", type=int, default=1000, help="documents per commit (and per Parquet part)")
    g.add_argument(
        "--part-rows",
        type=int,
        default=200_000,
        help="word rows per commit (and per Parquet part), if reached first",
    )
    g.add_argument("--compression", choices=COMPRESSIONS, default="zstd", help="Parquet codec")
    g.add_argument(
        "--formats",
        type=exports.formats_arg,
        default=(),
        metavar="LIST",
        help="json,parquet (always written) and any of alto,page,hocr,pdf (batch.exports), "
        "committed with the tables, e.g. json,parquet,alto,pdf",
    )
    storage.add_arguments(p)


@dataclass
class RunStats:
    documents: int = 0
    pages: int = 0
    words: int = 0
    errors: int = 0
    skipped: int = 0  # up to date in the ledger
    started: float = field(default_factory=time.time)

    def summary(self, out: str) -> str:
        dt = max(time.time() - self.started, 1e-9)
        return (
            f"htr run: {self.documents} documents, {self.pages} pages, {self.words} words, "
            f"{self.skipped} skipped, {self.errors} errors in {dt:.1f} s "
            f"({self.pages / dt:.2f} pages/s) -> {out}"
        )


# ---- which sources to process ------------------------------------------------------------------


@dataclass
class SourcePicker:
    """Filters a listing down to this shard's sources that the ledger says need work."""

    state: LedgerState
    policy: Policy
    shard: Shard = field(default_factory=Shard)
    skipped: int = 0
    other_shards: int = 0
    reasons: Counter = field(default_factory=Counter)

    def __call__(self, listing: Iterable[storage.SourceObject]) -> Iterator[storage.SourceObject]:
        for src in listing:
            src = canonical(src)
            if not self.shard.owns(src.uri):
                self.other_shards += 1
                continue
            reason = self.state.reason_to_process(src.uri, src.etag, self.policy)
            if reason is None:
                self.skipped += 1
                continue
            self.reasons[reason] += 1
            yield src


class Outage(StorageError):
    """Storage keeps failing for document after document: stop rather than record them all
    as failed (the next run processes them)."""

    transient = True


def canonical(src: storage.SourceObject) -> storage.SourceObject:
    """A local source by its absolute path: the ledger must not see 'in/a.pdf' and
    '/data/in/a.pdf' as two documents."""
    return src if storage.is_s3(src.uri) else replace(src, uri=os.path.abspath(src.uri))


# ---- producer: fetch + rasterise ---------------------------------------------------------------

_END = object()


class _Stopped(BaseException):
    """The run is over (finished or failed): producers stop putting pages."""


class PageBudget:
    """Bytes of decoded pages in flight from the decode threads to the models. A producer
    reserves room for its next page before decoding it (the size of its last page: pages of
    one document are alike) and settles the real size once decoded; the run releases a page's
    bytes when the models are done with it or it is dropped. Room is always there when
    nothing is in flight, so a page over the whole budget still goes through, alone."""

    def __init__(self, limit: int = PAGE_BUDGET):
        self.limit, self.used, self.peak = limit, 0, 0
        self._cond = threading.Condition()

    def reserve(self, n: int, stop: threading.Event) -> None:
        with self._cond:
            while self.used and self.used + n > self.limit:
                if stop.is_set():
                    raise _Stopped
                self._cond.wait(0.1)
            self._add(n)

    def settle(self, reserved: int, actual: int) -> None:
        """The page turned out `actual` bytes, not the `reserved` (it is in memory already)."""
        with self._cond:
            self._add(actual - reserved)
            self._cond.notify_all()

    def release(self, n: int) -> None:
        if n:
            with self._cond:
                self._add(-n)
                self._cond.notify_all()

    def _add(self, n: int) -> None:
        self.used += n
        self.peak = max(self.peak, self.used)


def fetch(src: storage.SourceObject, stream_above: int) -> bytes | mmap.mmap:
    """The object's bytes; a big S3 object as a memory map of a temp file (page cache, not
    process memory; the file is unlinked already and goes when the map is closed)."""
    if not storage.is_s3(src.uri) or src.size <= stream_above:
        return storage.read_bytes(src.uri)
    with tempfile.TemporaryFile(prefix="htr-src-") as f:
        with storage.open_read(src.uri) as body:
            shutil.copyfileobj(body, f, MiB)
        f.flush()
        if f.tell() == 0:
            return b""
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _produce(
    src: storage.SourceObject,
    put: Callable[[tuple], None],
    dpi: int,
    limits: Limits,
    stream_above: int,
    image_side: int | None = None,
    prepare: Callable[[np.ndarray], object] | None = None,
    budget: PageBudget | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Put ('meta'), ('page', i, image, nbytes)..., ('end', n) or ('error', stage, exc) for one
    source. prepare: Pipeline.prepare_page, run here so the page fix is off the model thread
    (#15). budget: room is reserved for each page before it is decoded (PageBudget); the
    consumer releases `nbytes` of each page it takes."""
    stage, data = "fetch", b""
    budget = budget or PageBudget(limit=1 << 62)
    stop = stop or threading.Event()
    reserved = 0
    try:
        data = fetch(src, stream_above)
        stage = "decode"
        content_type = sniff(data if isinstance(data, bytes) else data[:1024])
        put((src.uri, "meta", doc_id_for(data), content_type))
        n, nbytes = 0, 0
        pages = iter(iter_pages(data, dpi, limits, content_type, image_side))
        while True:
            budget.reserve(nbytes, stop)  # room for a page like the last, before decoding it
            reserved = nbytes
            image = next(pages, None)
            if image is None:
                break
            n, nbytes = n + 1, int(image.nbytes)
            budget.settle(reserved, nbytes)
            reserved = nbytes
            page = prepare(image) if prepare else image
            del image  # the prepared page may be a copy: hold one, not both, while waiting
            put((src.uri, "page", n, page, nbytes))
            reserved = 0  # the consumer owns those bytes now
            del page
        budget.release(reserved)
        reserved = 0
        if n == 0:
            raise HtrError("document has no pages", "decode")
        put((src.uri, "end", n))
    except Exception as e:  # every failure is the document's error record, never the run's
        budget.release(reserved)
        put((src.uri, "error", getattr(e, "stage", stage), e))
    finally:
        if isinstance(data, mmap.mmap):
            data.close()


# ---- the run -----------------------------------------------------------------------------------


@dataclass
class _Doc:
    """A document in flight: its pages arrive one by one; done when all are recognised."""

    src: storage.SourceObject
    doc_id: str = ""
    content_type: str = ""
    expected: int | None = None
    pages: dict[int, Page] = field(default_factory=dict)
    failed: bool = False


class Run:
    def __init__(
        self,
        pipe: Pipeline,
        writer: OutputWriter,
        run_id: str,
        dpi: int = 200,
        limits: Limits = DEFAULT_LIMITS,
        batch_pages: int = 8,
        decode_workers: int = 2,
        progress: bool = True,
        stream_above: int = 256 * MiB,
        page_budget: int = PAGE_BUDGET,
    ):
        self.pipe, self.writer, self.run_id = pipe, writer, run_id
        self.dpi, self.limits, self.batch_pages = dpi, limits, batch_pages
        self.decode_workers = max(1, decode_workers)
        self.stream_above = stream_above
        self.stats = RunStats()
        self.docs: dict[str, _Doc] = {}
        self.pending: list[tuple[str, int, np.ndarray, int]] = []  # (uri, page, image, bytes)
        self.budget = PageBudget(page_budget)
        self.stop = threading.Event()
        self.feed_error: BaseException | None = None
        self.fetch_failures = 0  # documents in a row whose fetch failed transiently
        self.bar = tqdm(unit="doc", desc="documents", disable=not progress, file=sys.stderr)

    def run(self, sources: Iterable[storage.SourceObject]) -> RunStats:
        q: queue.Queue = queue.Queue(maxsize=2 * self.batch_pages)
        slots = threading.Semaphore(self.decode_workers + 1)  # documents in flight
        feeder = threading.Thread(target=self._feed, args=(sources, q, slots), daemon=True)
        feeder.start()
        try:
            self._loop(q, slots)
            self.writer.close()  # commits the last batch
        finally:
            self.stop.set()
            self.bar.close()
        if self.feed_error is not None:  # e.g. the listing failed: what was done is committed
            raise self.feed_error
        return self.stats

    def _loop(self, q: queue.Queue, slots: threading.Semaphore) -> None:
        finished_feeding = False
        while True:
            try:
                item = q.get(timeout=0.05)
            except queue.Empty:
                item = None
            if item is _END:
                finished_feeding = True
            elif item is not None:
                self._handle(item, slots)
            idle = item is None or q.empty()
            item = None  # not holding the last page while the models run (PageBudget)
            if self.pending and (len(self.pending) >= self.batch_pages or idle):
                self._run_models()
            if finished_feeding and not self.docs and not self.pending:
                return

    def _put(self, q: queue.Queue, item: object) -> None:
        """q.put that gives up once the run is over (so no thread blocks forever)."""
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                pass
        raise _Stopped

    def _feed(
        self, sources: Iterable[storage.SourceObject], q: queue.Queue, slots: threading.Semaphore
    ) -> None:
        put = lambda item: self._put(q, item)  # noqa: E731
        try:
            with ThreadPoolExecutor(self.decode_workers, thread_name_prefix="decode") as pool:
                for src in sources:
                    while not slots.acquire(timeout=0.1):
                        if self.stop.is_set():
                            return
                    put((src.uri, "start", src))
                    pool.submit(
                        _produce,
                        src,
                        put,
                        self.dpi,
                        self.limits,
                        self.stream_above,
                        self.pipe.config.image_side,
                        getattr(self.pipe, "prepare_page", None),
                        self.budget,
                        self.stop,
                    )
        except _Stopped:
            return
        except Exception as e:  # listing failed
            self.feed_error = e
        try:
            put(_END)
        except _Stopped:
            pass

    def _handle(self, item: tuple, slots: threading.Semaphore) -> None:
        uri, kind, *rest = item
        if kind == "start":
            self.docs[uri] = _Doc(rest[0])
            return
        doc = self.docs.get(uri)
        if doc is None:
            if kind == "page":
                self.budget.release(rest[2])
            return
        if kind == "meta":
            doc.doc_id, doc.content_type = rest
        elif kind == "page":
            if doc.failed:
                self.budget.release(rest[2])
            else:
                self.pending.append((uri, rest[0], rest[1], rest[2]))
        elif kind == "end":
            self.fetch_failures = 0
            doc.expected = rest[0]
            slots.release()
            if doc.failed:  # failed in the models while still rasterising: now it can go
                del self.docs[uri]
            else:
                self._maybe_finish(uri)
        elif kind == "error":
            slots.release()
            if isinstance(rest[1], MissingDependency):
                raise rest[1]  # the machine's fault, not the document's: stop (exit 4), no row
            self._count_fetch_failure(rest[1])
            if doc.failed:
                del self.docs[uri]
            else:
                self._fail(uri, rest[0], rest[1], producer_done=True)

    def _count_fetch_failure(self, exc: BaseException) -> None:
        if not (isinstance(exc, StorageError) and exc.transient):
            self.fetch_failures = 0
            return
        self.fetch_failures += 1
        if self.fetch_failures >= OUTAGE_AFTER:
            raise Outage(
                f"{self.fetch_failures} documents in a row could not be fetched; storage "
                f"looks down (last: {exc}); this run stops, the next one resumes"
            )

    def _run_models(self) -> None:
        batch = [(u, i, img) for u, i, img, _ in self.pending if not self.docs[u].failed]
        held = sum(nbytes for *_, nbytes in self.pending)
        self.pending = []
        pages: list[tuple[tuple[str, int], Page | None]] = []
        try:
            if batch:
                pages = self._process_batch(batch)
        finally:
            del batch  # the decoded pages go before the next ones are let in
            self.budget.release(held)
        for (u, i), page in pages:
            doc = self.docs.get(u)
            if page is None or doc is None or doc.failed:
                continue
            doc.pages[i] = page
            self._maybe_finish(u)

    def _process_batch(
        self, batch: list[tuple[str, int, np.ndarray]]
    ) -> list[tuple[tuple[str, int], Page | None]]:
        """The models over a batch of pages: ((uri, page number), Page or None if it failed)."""
        try:
            pages: list[Page | None] = list(self.pipe.process_pages([img for _, _, img in batch]))
        except Exception:
            # one bad page must not fail its neighbours: retry page by page to find it
            pages = []
            for u, _i, img in batch:
                try:
                    pages.extend(self.pipe.process_pages([img]))
                except Exception as e:
                    pages.append(None)
                    self._fail(u, "model", e)
        return [((u, i), page) for (u, i, _), page in zip(batch, pages)]

    def _maybe_finish(self, uri: str) -> None:
        doc = self.docs[uri]
        if doc.failed or doc.expected is None or len(doc.pages) < doc.expected:
            return
        pages = [doc.pages[i] for i in sorted(doc.pages)]
        record = self.pipe.make_record(
            pages, doc.doc_id, doc.src.uri, self.run_id, doc.content_type, doc.src.etag
        )
        try:
            self.writer.add_document(record, doc.src)
        except CommitFailed:
            raise  # the output is failing: stop; the next run resumes
        except Exception as e:
            self._fail(uri, "write", e)
            return
        del self.docs[uri]
        self.stats.documents += 1
        self.stats.pages += len(pages)
        self.stats.words += sum(len(p.words) for p in pages)
        self._tick()

    def _fail(self, uri: str, stage: str, exc: BaseException, producer_done: bool = False) -> None:
        doc = self.docs.get(uri)
        if doc is None or doc.failed:
            return
        doc.failed = True
        self.budget.release(sum(p[3] for p in self.pending if p[0] == uri))
        self.pending = [p for p in self.pending if p[0] != uri]
        doc_id = doc.doc_id or hashlib.sha256(uri.encode()).hexdigest()[:24]
        message = scrub(str(exc))
        err = ErrorRecord(
            doc_id=doc_id,
            source_uri=uri,
            stage=stage,
            error_type=type(exc).__name__,
            message=message[:2000],
            run_id=self.run_id,
            processed_at=now_ms(),
        )
        self.writer.add_error(err, doc.src)
        tqdm.write(f"error: {uri}: {stage}: {type(exc).__name__}: {message}", file=sys.stderr)
        if producer_done or doc.expected is not None:
            del self.docs[uri]  # else keep it, marked failed, until its producer's last item
        self.stats.documents += 1
        self.stats.errors += 1
        self._tick()

    def _tick(self) -> None:
        self.bar.update(1)
        self.bar.set_postfix(pages=self.stats.pages, words=self.stats.words, errors=self.stats.errors)


def process(
    pipe: Pipeline,
    writer: OutputWriter,
    listing: Iterable[storage.SourceObject],
    policy: Policy,
    **run_options,
) -> RunStats:
    """Recover the output, then run over the sources of `listing` that need work."""
    recovered = writer.open()
    if recovered:
        print(f"htr run: {recovered.summary()}", file=sys.stderr)
    picker = SourcePicker(writer.ledger.state, policy, writer.shard)
    stats = Run(pipe, writer, writer.run_id, **run_options).run(picker(listing))
    stats.skipped = picker.skipped
    return stats


# Imported on a side thread while the models load and the first pages are read: pyarrow imports
# pandas (where installed) the first time it converts Python rows, i.e. in the first
# add_document, which held the model thread ~0.45 s of CPU in a 1-page run (#15).
WARM_IMPORTS = ("pandas",)


def _warm_imports(names: Iterable[str] = WARM_IMPORTS) -> None:
    import importlib
    import importlib.util

    for name in names:
        try:
            if importlib.util.find_spec(name) is not None:
                importlib.import_module(name)
        except Exception:  # noqa: BLE001 - only a head start: the real import reports any problem
            pass


def main(args) -> int:
    storage.configure_from_args(args)
    run_id = args.run_id or time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    if not _RUN_ID.match(run_id):
        print(f"htr run: --run-id {run_id!r}: use letters, digits, '.', '_', '-'", file=sys.stderr)
        return EXIT_BAD_ARGS
    threading.Thread(target=_warm_imports, name="warm-imports", daemon=True).start()
    decode, predictor = options.from_args(args)
    try:
        pipe = predictor.load()
    except Exception as e:
        print(f"htr run: cannot load models: {scrub(str(e))}", file=sys.stderr)
        return EXIT_FATAL
    writer = OutputWriter(
        args.output,
        run_id,
        rows_per_part=args.part_rows,
        compression=args.compression,
        docs_per_part=args.part_docs,
        shard=args.shard,
        model_version=pipe.model_version,
        exports=exports.renderer(args.formats),
    )
    policy = Policy(
        pipe.model_version,
        reprocess=args.reprocess,
        on_model_change=args.reprocess_on_model_change,
        retry_failed=not args.skip_failed,
    )
    try:
        stats = process(
            pipe,
            writer,
            storage.list_objects(args.input, args.include, args.exclude),
            policy,
            dpi=decode.dpi,
            limits=decode.limits(),
            batch_pages=args.batch_pages,
            decode_workers=args.decode_workers,
            progress=not args.no_progress,
            stream_above=args.stream_mb * MiB,
        )
    except HtrError as e:  # listing or output failures: nothing sensible can continue
        print(f"htr run: {e.stage}: {e}", file=sys.stderr)
        return EXIT_FATAL
    shard = f" [shard {args.shard}]" if args.shard.count > 1 else ""
    print(stats.summary(args.output) + shard, flush=True)
    return EXIT_PARTIAL if stats.errors else EXIT_OK
