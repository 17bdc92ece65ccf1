"""`htr run INPUT OUT`: the batch job.

  list sources -> fetch + rasterise (thread pool, bounded queue) -> batched segment +
  recognise (main thread) -> lines -> records -> outputs

Rasterising the next documents overlaps model work: poppler and Pillow release the GIL,
and the bounded page queue keeps memory flat however long a PDF is. A document that
fails at any stage becomes an error record; the run goes on.
"""
from __future__ import annotations

import argparse
import hashlib
import queue
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from batch import storage
from batch.errors import EXIT_FATAL, EXIT_OK, EXIT_PARTIAL, HtrError
from batch.outputs import OutputWriter
from batch.pipeline import Pipeline, PipelineConfig
from batch.schema import ErrorRecord, Page, doc_id_for, now_ms
from transforms.rasterise import Limits, iter_pages, sniff


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="folder, file, or s3://bucket/prefix/ of PDFs and images")
    p.add_argument("output", help="output folder or s3://bucket/prefix/")
    p.add_argument("--models", help="model folder (default: the shipped models/default)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--dpi", type=int, default=200, help="PDF rasterising resolution")
    p.add_argument("--include", action="append", help="glob on the relative key, repeatable")
    p.add_argument("--exclude", action="append", help="glob on the relative key, repeatable")
    p.add_argument("--seg-batch", type=int, default=4, help="pages per segmenter batch")
    p.add_argument("--rec-batch", type=int, default=256, help="word crops per recogniser batch")
    p.add_argument("--batch-pages", type=int, default=8,
                   help="pages gathered (across documents) before running the models")
    p.add_argument("--decode-workers", type=int, default=2, help="fetch/rasterise threads")
    p.add_argument("--max-pixels", type=int, default=Limits.max_pixels, help="per page")
    p.add_argument("--max-pages", type=int, default=Limits.max_pages, help="per document")
    p.add_argument("--run-id", help="default: a new id per run")
    p.add_argument("--no-progress", action="store_true")
    storage.add_arguments(p)


@dataclass
class RunStats:
    documents: int = 0
    pages: int = 0
    words: int = 0
    errors: int = 0
    started: float = field(default_factory=time.time)

    def summary(self, out: str) -> str:
        dt = max(time.time() - self.started, 1e-9)
        return (f"htr run: {self.documents} documents, {self.pages} pages, {self.words} words, "
                f"{self.errors} errors in {dt:.1f} s ({self.pages / dt:.2f} pages/s) -> {out}")


@dataclass
class _Doc:
    """A document in flight: its pages arrive one by one; done when all are recognised."""
    src: storage.SourceObject
    doc_id: str = ""
    content_type: str = ""
    expected: int | None = None
    pages: dict[int, Page] = field(default_factory=dict)
    failed: bool = False


# ---- producer: fetch + rasterise ---------------------------------------------------------------

_END = object()


def _produce(src: storage.SourceObject, out: queue.Queue, dpi: int, limits: Limits) -> None:
    """Put ('meta'), ('page', i, image)..., ('end', n) or ('error', stage, exc) for one source."""
    stage = "fetch"
    try:
        data = storage.read_bytes(src.uri)
        stage = "decode"
        content_type = sniff(data)
        out.put((src.uri, "meta", doc_id_for(data), content_type))
        n = 0
        for n, image in enumerate(iter_pages(data, dpi, limits, content_type), 1):
            out.put((src.uri, "page", n, image))
        if n == 0:
            raise HtrError("document has no pages", "decode")
        out.put((src.uri, "end", n))
    except Exception as e:  # every failure is the document's error record, never the run's
        out.put((src.uri, "error", getattr(e, "stage", stage), e))


# ---- the run -----------------------------------------------------------------------------------

class Run:
    def __init__(self, pipe: Pipeline, writer: OutputWriter, run_id: str, dpi: int = 200,
                 limits: Limits = Limits(), batch_pages: int = 8, decode_workers: int = 2,
                 progress: bool = True):
        self.pipe, self.writer, self.run_id = pipe, writer, run_id
        self.dpi, self.limits, self.batch_pages = dpi, limits, batch_pages
        self.decode_workers = max(1, decode_workers)
        self.stats = RunStats()
        self.docs: dict[str, _Doc] = {}
        self.pending: list[tuple[str, int, np.ndarray]] = []
        self.bar = tqdm(unit="doc", desc="documents", disable=not progress, file=sys.stderr)

    def run(self, sources) -> RunStats:
        q: queue.Queue = queue.Queue(maxsize=2 * self.batch_pages)
        slots = threading.Semaphore(self.decode_workers + 1)  # documents in flight
        feeder = threading.Thread(target=self._feed, args=(sources, q, slots), daemon=True)
        feeder.start()
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
            if self.pending and (len(self.pending) >= self.batch_pages or idle):
                self._run_models()
            if finished_feeding and not self.docs and not self.pending:
                break
        self.writer.close()
        self.bar.close()
        return self.stats

    def _feed(self, sources, q: queue.Queue, slots: threading.Semaphore) -> None:
        with ThreadPoolExecutor(self.decode_workers, thread_name_prefix="decode") as pool:
            for src in sources:
                slots.acquire()
                q.put((src.uri, "start", src))
                pool.submit(_produce, src, q, self.dpi, self.limits)
        q.put(_END)

    def _handle(self, item: tuple, slots: threading.Semaphore) -> None:
        uri, kind, *rest = item
        if kind == "start":
            self.docs[uri] = _Doc(rest[0])
            return
        doc = self.docs.get(uri)
        if doc is None:
            return
        if kind == "meta":
            doc.doc_id, doc.content_type = rest
        elif kind == "page":
            if not doc.failed:
                self.pending.append((uri, rest[0], rest[1]))
        elif kind == "end":
            doc.expected = rest[0]
            slots.release()
            if doc.failed:  # failed in the models while still rasterising: now it can go
                del self.docs[uri]
            else:
                self._maybe_finish(uri)
        elif kind == "error":
            slots.release()
            if doc.failed:
                del self.docs[uri]
            else:
                self._fail(uri, rest[0], rest[1], producer_done=True)

    def _run_models(self) -> None:
        batch = [(u, i, img) for u, i, img in self.pending if not self.docs[u].failed]
        self.pending = []
        if not batch:
            return
        try:
            pages = self.pipe.process_pages([img for _, _, img in batch])
        except Exception:
            # one bad page must not fail its neighbours: retry page by page to find it
            pages = []
            for u, i, img in batch:
                try:
                    pages.extend(self.pipe.process_pages([img]))
                except Exception as e:
                    pages.append(None)
                    self._fail(u, "model", e)
        for (u, i, _), page in zip(batch, pages):
            doc = self.docs.get(u)
            if page is None or doc is None or doc.failed:
                continue
            doc.pages[i] = page
            self._maybe_finish(u)

    def _maybe_finish(self, uri: str) -> None:
        doc = self.docs[uri]
        if doc.failed or doc.expected is None or len(doc.pages) < doc.expected:
            return
        pages = [doc.pages[i] for i in sorted(doc.pages)]
        record = self.pipe.make_record(pages, b"", doc.src.uri, self.run_id, doc.content_type,
                                       doc.src.etag)
        record.doc_id = doc.doc_id
        try:
            self.writer.add_document(record)
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
        self.pending = [p for p in self.pending if p[0] != uri]
        doc_id = doc.doc_id or hashlib.sha256(uri.encode()).hexdigest()[:24]
        err = ErrorRecord(doc_id=doc_id, source_uri=uri, stage=stage, error_type=type(exc).__name__,
                          message=str(exc)[:2000], run_id=self.run_id, processed_at=now_ms())
        self.writer.add_error(err)
        tqdm.write(f"error: {uri}: {stage}: {type(exc).__name__}: {exc}", file=sys.stderr)
        if producer_done or doc.expected is not None:
            del self.docs[uri]  # else keep it, marked failed, until its producer's last item
        self.stats.documents += 1
        self.stats.errors += 1
        self._tick()

    def _tick(self) -> None:
        self.bar.update(1)
        self.bar.set_postfix(pages=self.stats.pages, words=self.stats.words, errors=self.stats.errors)


def main(args) -> int:
    storage.configure_from_args(args)
    try:
        pipe = Pipeline.load(args.models, args.device,
                             PipelineConfig(seg_batch=args.seg_batch, rec_batch=args.rec_batch))
    except Exception as e:
        print(f"htr run: cannot load models: {e}", file=sys.stderr)
        return EXIT_FATAL
    run_id = args.run_id or time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    limits = Limits(max_pixels=args.max_pixels, max_pages=args.max_pages)
    writer = OutputWriter(args.output, run_id)
    sources = storage.list_objects(args.input, args.include, args.exclude)
    run = Run(pipe, writer, run_id, args.dpi, limits, args.batch_pages, args.decode_workers,
              progress=not args.no_progress)
    try:
        stats = run.run(sources)
    except HtrError as e:  # listing or output failures: nothing sensible can continue
        print(f"htr run: {e.stage}: {e}", file=sys.stderr)
        return EXIT_FATAL
    print(stats.summary(args.output), flush=True)
    return EXIT_PARTIAL if stats.errors else EXIT_OK
