"""`htr serve`: the SageMaker inference container contract, on the standard library's HTTP server.

  GET  /ping                  200 once the models are loaded (503 while loading or stopping)
  POST /invocations           one document (PDF, JPEG, PNG, TIFF; application/x-image is
                              sniffed) -> its DocumentRecord JSON, as in documents/*.json
  GET  /execution-parameters  what Batch Transform should send: concurrency, strategy, payload

Errors are JSON, `{"error": {"type", "stage", "message"}, "doc_id"}`: 413 over the payload
limit (decided from Content-Length, before reading the body), 415 for a content type we do not
take, 400 for a corrupt / encrypted / empty document, 500 for a model failure. Under Batch
Transform (SAGEMAKER_BATCH=true) document failures are answered 200 with that error body
instead: SageMaker fails the whole job on one non-200 answer, while an error body lands in the
document's .out file and `htr sagemaker collect` turns it into an errors row.

Dynamic batching: each request is rasterised in its own handler thread; its pages go to one
model thread that gathers pages from concurrent requests (for a few ms, up to a page budget)
and calls `Pipeline.process_pages` once for all of them, so the GPU stays busy when SageMaker
sends several documents at a time (MaxConcurrentTransforms > 1).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from batch import exports, options
from batch.core.errors import EXIT_FATAL, EXIT_OK, HtrError, InputError, MissingDependency, UnsupportedType
from batch.core.ids import doc_id_for, new_run_id
from transforms.rasterise import Limits

log = logging.getLogger("htr.serve")

# Every type `htr run` reads (transforms.rasterise.SUPPORTED), and common aliases of them.
DOCUMENT_TYPES = {
    "application/pdf",
    "image/jpeg",
    "image/png",
    "image/tiff",
    "image/bmp",
    "image/webp",
    "image/jpg",
    "image/pjpeg",
    "image/tif",
    "image/x-ms-bmp",
    "image/x-bmp",
}
SNIFFED_TYPES = {"application/x-image", "application/octet-stream"}  # the bytes decide
REALTIME_MAX_PAYLOAD_MB = 6  # SageMaker real-time endpoints cap requests at 6 MB
BATCH_MAX_PAYLOAD_MB = 100  # Batch Transform's ceiling
DRAIN_LIMIT = 64 * 1024 * 1024  # an oversize body up to this is read and dropped, so the
# client sees the 413 rather than a reset connection
MB = 1024 * 1024


# ---- settings ----------------------------------------------------------------------------------


def _env_true(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def _default_concurrency() -> int:
    return max(2, min(8, os.cpu_count() or 2))


@dataclass(frozen=True)
class ServeSettings:
    batch: bool = False  # running under Batch Transform
    max_payload_mb: float = REALTIME_MAX_PAYLOAD_MB
    max_concurrent: int = 4  # documents processed at once (the rest wait)
    max_batch_pages: int = 16  # page budget of one process_pages call
    batch_wait_ms: float = 5.0  # how long the model thread waits for more pages
    dpi: int = 200
    max_pixels: int = Limits.max_pixels  # per page
    max_pages: int = 500  # per document (HTR_SERVE_MAX_PAGES): bounds its time
    chunk_pages: int = 4  # pages rasterised ahead of the model, per request

    @property
    def max_payload_bytes(self) -> int:
        return int(self.max_payload_mb * MB)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, **overrides: Any) -> ServeSettings:
        """SAGEMAKER_BATCH, SAGEMAKER_MAX_PAYLOAD_IN_MB, SAGEMAKER_MAX_CONCURRENT_TRANSFORMS."""
        batch = _env_true(env.get("SAGEMAKER_BATCH"))
        default_mb = BATCH_MAX_PAYLOAD_MB if batch else REALTIME_MAX_PAYLOAD_MB
        payload = float(env.get("SAGEMAKER_MAX_PAYLOAD_IN_MB") or default_mb)
        concurrent = int(env.get("SAGEMAKER_MAX_CONCURRENT_TRANSFORMS") or _default_concurrency())
        if env.get("HTR_SERVE_MAX_PAGES"):
            overrides.setdefault("max_pages", int(env["HTR_SERVE_MAX_PAGES"]))
        if payload <= 0 or concurrent < 1 or overrides.get("max_pages", 1) < 1:
            raise ValueError(
                "SAGEMAKER_MAX_PAYLOAD_IN_MB, SAGEMAKER_MAX_CONCURRENT_TRANSFORMS and "
                "HTR_SERVE_MAX_PAGES must be positive"
            )
        return cls(batch=batch, max_payload_mb=payload, max_concurrent=concurrent, **overrides)

    def execution_parameters(self) -> dict[str, Any]:
        # The API's own limits: MaxPayloadInMB <= 100, and x MaxConcurrentTransforms <= 100 too
        concurrent = min(self.max_concurrent, BATCH_MAX_PAYLOAD_MB)
        payload = min(int(self.max_payload_mb), BATCH_MAX_PAYLOAD_MB // concurrent)
        return {
            "MaxConcurrentTransforms": concurrent,
            "BatchStrategy": "SINGLE_RECORD",
            "MaxPayloadInMB": max(1, payload),
        }


# ---- errors as HTTP answers --------------------------------------------------------------------


class UnsupportedMediaType(UnsupportedType):
    """The request's Content-Type is not one we take (HTTP 415)."""


class PayloadTooLarge(InputError):
    """Over SAGEMAKER_MAX_PAYLOAD_IN_MB (HTTP 413)."""


def error_body(exc: BaseException, doc_id: str = "") -> dict[str, Any]:
    stage = exc.stage if isinstance(exc, HtrError) else "model"
    body: dict[str, Any] = {"error": {"type": type(exc).__name__, "stage": stage, "message": str(exc)[:2000]}}
    if doc_id:
        body["doc_id"] = doc_id
    return body


def error_doc_id(data: bytes) -> str:
    """The worker's rule for an error's doc_id: the content's id when its type could be told,
    else none (collect then uses the hash of the source URI, as the worker does)."""
    from transforms.rasterise import sniff

    try:
        sniff(data)
    except InputError:
        return ""
    return doc_id_for(data)


def status_for(exc: BaseException, batch: bool) -> int:
    """HTTP status of a failed invocation; see the module docstring for the batch rule."""
    if isinstance(exc, PayloadTooLarge):
        return 413
    if isinstance(exc, UnsupportedMediaType):
        return 415
    if isinstance(exc, MissingDependency):
        return 500  # the machine's fault: fail the transform, never a 200 error row that hides it
    if batch:
        return 200
    return 400 if isinstance(exc, InputError) else 500


def check_content_type(header: str | None) -> None:
    """Raise UnsupportedMediaType unless the declared type is one we take (or absent)."""
    declared = (header or "").split(";", 1)[0].strip().lower()
    if declared and declared not in DOCUMENT_TYPES | SNIFFED_TYPES:
        raise UnsupportedMediaType(
            f"content type {declared!r} not supported: send one of "
            f"{', '.join(sorted(DOCUMENT_TYPES | SNIFFED_TYPES))}",
            stage="request",
        )


def resolve_content_type(header: str | None, data: bytes) -> str:
    """The document's real type: the header must be one we take; the bytes then decide."""
    from transforms.rasterise import sniff

    check_content_type(header)
    return sniff(data)  # a mislabelled file is read as what it is


# ---- dynamic batching --------------------------------------------------------------------------


@dataclass
class _Job:
    images: list  # HxWx3 uint8 RGB arrays of one document
    result: Future = field(default_factory=Future)


class PageBatcher:
    """One model thread; callers hand it a document's pages and block for that document's Pages.

    Pages of requests that arrive within `wait_s` of each other (up to `max_pages`) share one
    `process_pages` call. If a shared call fails, each document is retried alone so one bad
    page only fails its own request.
    """

    def __init__(self, process_pages: Callable[[list], list], max_pages: int = 16, wait_s: float = 0.005):
        self.process_pages, self.max_pages, self.wait_s = process_pages, max_pages, wait_s
        self.batches: list[tuple[int, int]] = []  # (requests, pages) of each call, for logs
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="htr-model", daemon=True)
        self._thread.start()

    def submit(self, images: list) -> list:
        if not images:
            return []
        job = _Job(images)
        self._queue.put(job)
        return job.result.result()

    def close(self, timeout: float = 30.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (first := self._queue.get()) is not None:
            jobs, stopping = self._gather(first)
            self._process(jobs)
            if stopping:
                return

    def _gather(self, first: _Job) -> tuple[list[_Job], bool]:
        jobs, pages = [first], len(first.images)
        deadline = time.monotonic() + self.wait_s
        while pages < self.max_pages:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
            pages += len(job.images)
        return jobs, False

    def _process(self, jobs: list[_Job]) -> None:
        images = [im for job in jobs for im in job.images]
        try:
            pages = self.process_pages(images)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting request
            if len(jobs) > 1:
                for job in jobs:
                    self._process([job])
            else:
                jobs[0].result.set_exception(e)
            return
        self.batches.append((len(jobs), len(images)))
        log.debug("model batch: %d requests, %d pages", len(jobs), len(images))
        start = 0
        for job in jobs:
            job.result.set_result(pages[start : start + len(job.images)])
            start += len(job.images)


# ---- the service: models + batching, shared with code/inference.py -----------------------------


class Service:
    """Loaded models and the page batcher; thread-safe `process` of one document."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.run_id = new_run_id("serve-")
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.load_error: BaseException | None = None
        self.pipe: Any = None  # a batch.pipeline.Pipeline once loaded (torch: imported late)
        self.batcher: PageBatcher | None = None
        self._slots = threading.BoundedSemaphore(settings.max_concurrent)
        self._active = 0
        self._idle = threading.Condition()

    def load(
        self,
        models_dir: str | None = None,
        device: str = "auto",
        *,
        predictor: options.PipelineOptions | None = None,
    ) -> None:
        """Load the models: `predictor` (htr serve's --models, --device and pipeline flags), else
        `models_dir` on `device` with the default config. batch.pipeline (cv2, the models) is
        imported only here, after /ping is up."""
        try:
            self.pipe = (predictor or options.PipelineOptions(models_dir, device)).load()
            self.batcher = PageBatcher(
                self.pipe.process_pages, self.settings.max_batch_pages, self.settings.batch_wait_ms / 1000
            )
        except BaseException as e:
            self.load_error = e
            raise
        log.info("models loaded: %s on %s", self.pipe.model_version, self.pipe.device)
        self.ready.set()

    def process(self, data: bytes, content_type: str | None, source_uri: str = ""):
        """One document -> DocumentRecord. Raises InputError subclasses for bad documents
        (TooLarge over `max_pages`, counted before any page is rendered).

        Pages stream: at most `chunk_pages` rasterised pages of a request wait for the model
        at a time, and only their (small) results are kept, so memory does not grow with
        the page count; at most max_concurrent requests rasterise at once."""
        from transforms.rasterise import iter_pages

        ctype = resolve_content_type(content_type, data)
        limits = Limits(max_pixels=self.settings.max_pixels, max_pages=self.settings.max_pages)
        pages: list[Any] = []
        chunk: list[Any] = []
        with self._slots:
            batcher = self.batcher
            assert batcher is not None, "process() before load()"
            for image in iter_pages(
                data, self.settings.dpi, limits, ctype, image_side=self.pipe.config.image_side
            ):
                chunk.append(image)
                if len(chunk) >= self.settings.chunk_pages:
                    pages.extend(batcher.submit(chunk))
                    chunk = []
            pages.extend(batcher.submit(chunk))
            del chunk
        return self.pipe.make_record(pages, doc_id_for(data), source_uri, self.run_id, ctype)

    def __enter__(self) -> Service:
        with self._idle:
            self._active += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        with self._idle:
            self._active -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait for in-flight invocations to finish (graceful shutdown)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout)

    def close(self) -> None:
        if self.batcher:
            self.batcher.close()


# ---- HTTP --------------------------------------------------------------------------------------


class Server(ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections never hold up shutdown
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], service: Service):
        super().__init__(address, Handler)
        self.service = service


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as SageMaker's front end uses
    server: Server
    timeout = 300  # an idle or stalled client frees its thread eventually

    def log_message(self, fmt: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), fmt % args)

    def _send_json(self, status: int, body: dict[str, Any] | str | tuple[str, bytes]) -> None:
        content: dict[str, Any] | str | bytes
        media, content = (
            body if isinstance(body, tuple) else ("application/json", body)
        )  # (type, bytes): exports
        payload = (
            content
            if isinstance(content, bytes)
            else content.encode()
            if isinstance(content, str)
            else json.dumps(content, ensure_ascii=False).encode("utf-8")
        )
        self.send_response(status)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _send_empty(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        service = self.server.service
        if self.path == "/ping":
            healthy = service.ready.is_set() and not service.stopping.is_set()
            return self._send_empty(200 if healthy else 503)
        if self.path == "/execution-parameters":
            return self._send_json(200, service.settings.execution_parameters())
        self._send_json(
            404, {"error": {"type": "NotFound", "stage": "request", "message": f"no route GET {self.path}"}}
        )

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/invocations":
            self._send_json(
                404,
                {"error": {"type": "NotFound", "stage": "request", "message": f"no route POST {self.path}"}},
            )
            return self._drain(self._content_length() or 0)
        self._invoke()

    def _content_length(self) -> int | None:
        try:
            return int(self.headers.get("Content-Length", ""))
        except ValueError:
            return None

    def _drain(self, length: int) -> None:
        """Read and drop a body we will not use (or give up on the connection if huge)."""
        if length > DRAIN_LIMIT:
            self.close_connection = True
            return
        while length > 0:
            chunk = self.rfile.read(min(length, MB))
            if not chunk:
                break
            length -= len(chunk)

    def handle_expect_100(self) -> bool:
        """`Expect: 100-continue`: refuse an oversize body before the client sends it."""
        length = self._content_length()
        if (
            self.path == "/invocations"
            and length is not None
            and length > self.server.service.settings.max_payload_bytes
        ):
            self._reject(PayloadTooLarge(f"payload is {length} bytes, over the limit", stage="request"))
            self.close_connection = True
            return False
        return super().handle_expect_100()

    def _reject(self, exc: HtrError) -> None:
        self._send_json(status_for(exc, batch=False), error_body(exc))

    def _invoke(self) -> None:
        service = self.server.service
        length = self._content_length()
        if length is None or length < 0:
            self.close_connection = True  # we cannot tell where this body ends
            return self._send_json(
                411,
                {
                    "error": {
                        "type": "LengthRequired",
                        "stage": "request",
                        "message": "send a Content-Length header",
                    }
                },
            )
        if length > service.settings.max_payload_bytes:  # decided before reading any body
            self._reject(
                PayloadTooLarge(
                    f"payload is {length} bytes, over the {service.settings.max_payload_mb:g} MB "
                    "limit (SAGEMAKER_MAX_PAYLOAD_IN_MB)",
                    stage="request",
                )
            )
            return self._drain(length)  # keeps the connection usable, or closes it
        data = self.rfile.read(length)
        if not service.ready.is_set() or service.stopping.is_set():
            return self._send_json(
                503,
                {"error": {"type": "NotReady", "stage": "load-models", "message": "models are not loaded"}},
            )
        with service:
            status, body = self._process(service, data)
        self._send_json(status, body)

    def _process(self, service: Service, data: bytes) -> tuple[int, dict[str, Any] | str | tuple[str, bytes]]:
        source_uri = _custom_attribute(self.headers.get("X-Amzn-SageMaker-Custom-Attributes"), "source_uri")
        try:
            record = service.process(data, self.headers.get("Content-Type"), source_uri)
        except Exception as e:  # noqa: BLE001 - every failure is an answer, never a crash
            if not isinstance(e, InputError):
                log.error("invocation failed:\n%s", traceback.format_exc())
            return status_for(e, service.settings.batch), error_body(e, error_doc_id(data))
        fmt = exports.negotiate(self.headers.get("Accept"))  # ALTO, PAGE, hOCR or PDF by Accept
        if fmt:
            return exports.response(record, fmt, data)
        return 200, json.dumps(record.to_json(), ensure_ascii=False)


def _custom_attribute(header: str | None, name: str) -> str:
    """`source_uri=...` from SageMaker's custom-attributes header (real-time callers only)."""
    for part in (header or "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return ""


# ---- command line ------------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8080, help="0 = any free port (logged)")
    parser.add_argument("--host", default="0.0.0.0")
    options.add_arguments(parser)  # --models, --device, engine and batches; --dpi, --image-side, limits
    parser.add_argument(
        "--max-batch-pages",
        type=int,
        default=16,
        help="pages per model call when requests are batched together",
    )
    parser.add_argument(
        "--batch-wait-ms", type=float, default=5.0, help="how long the model thread waits to fill a batch"
    )
    parser.add_argument(
        "--grace", type=float, default=30.0, help="seconds in-flight requests get to finish after SIGTERM"
    )
    parser.add_argument("--log-level", default="INFO")


def settings_from_args(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> ServeSettings:
    """The service's settings: SageMaker's environment, then the flags (--max-pages beats
    HTR_SERVE_MAX_PAGES; without either, 500 pages)."""
    decode = options.DecodeOptions.from_args(args)
    overrides: dict[str, Any] = {} if decode.max_pages is None else {"max_pages": decode.max_pages}
    return ServeSettings.from_env(
        env,
        max_batch_pages=args.max_batch_pages,
        batch_wait_ms=args.batch_wait_ms,
        dpi=decode.dpi,
        max_pixels=decode.max_pixels,
        **overrides,
    )


def _load_in_background(service: Service, args: argparse.Namespace, stop: threading.Event) -> None:
    def load() -> None:
        try:
            service.load(predictor=options.PipelineOptions.from_args(args))
        except BaseException as e:  # noqa: BLE001 - reported by main, which exits non-zero
            log.error("cannot load models: %s", e)
            stop.set()

    threading.Thread(target=load, name="htr-load", daemon=True).start()


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.models:  # missing files: say so now, not after binding a port and loading torch
            from batch.packaging import check_models_dir

            check_models_dir(Path(args.models))
        settings = settings_from_args(args)
        service = Service(settings)
        server = Server((args.host, args.port), service)
    except (ValueError, OSError, HtrError) as e:
        log.error("htr serve: %s", e)
        return EXIT_FATAL
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="htr-http", daemon=True
    ).start()
    host, port = server.server_address[:2]
    log.info(
        "listening on http://%s:%d (batch=%s, max payload %g MB, max concurrent %d)",
        host,
        port,
        settings.batch,
        settings.max_payload_mb,
        settings.max_concurrent,
    )
    _load_in_background(service, args, stop)
    while not stop.wait(0.5):  # a bare wait() may not wake for the signal handler
        pass
    return _shutdown(server, service, args.grace)


def _shutdown(server: Server, service: Service, grace: float) -> int:
    """Stop taking requests, let in-flight ones finish, then stop the model thread."""
    service.stopping.set()
    server.shutdown()
    if not service.wait_idle(grace):
        log.warning("shutting down with requests still in flight after %gs", grace)
    service.close()
    server.server_close()
    log.info("stopped")
    return EXIT_FATAL if service.load_error else EXIT_OK
