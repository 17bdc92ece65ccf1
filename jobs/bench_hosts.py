"""`htr bench` (apps/jobs layer): each system under test in a process of its own. A host builds
one system (htr-batch on its automatic engine, htr-onnx, htr-torch, Tesseract, RapidOCR) and
answers (method, argument) requests from the bench's Worker: read pages, write records, read
ground-truth crops, report stage seconds."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from typing import Any

import numpy as np

from batch.core.clock import StageClock
from batch.options import DecodeOptions, PipelineOptions
from jobs.bench_common import decode


class HtrHost:
    """htr-batch as shipped: the Pipeline on CPU with its automatic engine choice, T threads, stages timed."""

    backend: str | None = None  # None: --backend / --precision as given to htr bench (default auto)
    precision: str | None = None

    def __init__(
        self,
        threads: int,
        models: str | None,
        predictor: PipelineOptions | None = None,
        decoding: DecodeOptions | None = None,
    ):
        """`predictor`, `decoding`: htr bench's pipeline and decoding flags (default: the defaults,
        on `models`). On the CPU unless --device names another device."""
        import cv2
        import torch

        from batch.outputs import OutputWriter

        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
        predictor = predictor or PipelineOptions(models)
        config = replace(
            predictor.config,
            backend=self.backend or predictor.config.backend,
            precision=self.precision or predictor.config.precision,
        )
        device = "cpu" if predictor.device == "auto" else predictor.device
        self.decoding = decoding or DecodeOptions()
        self.clock = StageClock()
        self.pipe = replace(predictor, device=device, config=config).load(clock=self.clock)
        self.decoders = ThreadPoolExecutor(threads, thread_name_prefix="decode")
        self.out = tempfile.mkdtemp(prefix="htr-bench-out-")
        self.writer = OutputWriter(self.out, "bench")
        self.last: list[tuple[str, Any]] = []

    def version(self, _=None) -> str:
        precision = "bf16" if self.pipe.bf16_cpu else "fp32"
        return f"{self.pipe.model_version} ({self.pipe.backend} {precision})"

    def ocr(self, uris: list[str]) -> list:
        with self.clock.stage("decode"):  # on the thread budget, as `htr run`'s decode workers do
            images = list(self.decoders.map(self._decode, uris))
        pages = self.pipe.process_pages(images)
        self.last = list(zip(uris, pages))
        return pages

    def _decode(self, uri: str):
        """A page as `htr run`'s decode workers hand it over: decoded, then put right (prepare_page)."""
        d = self.decoding
        return self.pipe.prepare_page(decode(uri, self.pipe.config.image_side, d.dpi, d.limits()))

    def write(self, _=None) -> None:
        from batch.core.ids import doc_id_for_uri

        with self.clock.stage("write"):
            for uri, page in self.last:
                record = self.pipe.make_record([page], doc_id_for_uri(uri), uri, "bench")
                self.writer.add_document(record)
            self.writer.flush()

    def stages(self, _=None) -> dict[str, float]:
        return dict(self.clock.seconds)

    def close(self) -> None:
        self.decoders.shutdown()
        shutil.rmtree(self.out, ignore_errors=True)

    def reset(self, _=None) -> None:
        self.clock.reset()

    def read_crops(self, crops: list[np.ndarray]) -> list[str]:
        self.clock.enabled = False  # scoring work is not a stage of the timed run
        try:
            return [t for t, _ in self.pipe.recognise(crops)]
        finally:
            self.clock.enabled = True

    def read_lines(self, page: tuple[np.ndarray, list[np.ndarray]]) -> list[str]:
        """GT line crops (gray page, quads) as `htr eval` reads them: a line model reads the
        pipeline's own line crops (pipe.line_crop + pipe.read_lines, words joined by spaces), a
        word model reads each line in slices of its max width (jobs.evaluate.pipeline_line_reader)."""
        from jobs.evaluate import pipeline_line_reader

        self.clock.enabled = False
        try:
            return pipeline_line_reader(self.pipe)(*page)
        finally:
            self.clock.enabled = True


class HtrOnnxHost(HtrHost):
    """The same weights on ONNX Runtime in fp32: the shipped CPU path before bf16 PyTorch."""

    backend, precision = "onnxruntime", "fp32"


class HtrTorchHost(HtrHost):
    """The same weights on eager PyTorch in fp32: the first CPU path."""

    backend, precision = "torch", "fp32"


def peer_line_crops(gray: np.ndarray, quads: list[np.ndarray]) -> list[np.ndarray]:
    """GT line crops for the peers: each quad rectified at the page's own resolution (no squeeze to
    our 32 px; Tesseract's crop reader rescales to 64 px with a margin, RapidOCR's recogniser to its
    own input height)."""
    from transforms.crops import quad_size, rectify

    return [rectify(gray, q, max(8, round(quad_size(np.asarray(q, np.float32))[1])), 1 << 16) for q in quads]


class PeerLines:
    def read_crops(self, crops: list[np.ndarray]) -> list[str]:
        raise NotImplementedError

    def read_lines(self, page: tuple[np.ndarray, list[np.ndarray]]) -> list[str]:
        """One GT text line per crop, read by the peer's crop reader (Tesseract: `--psm 7`, single
        text line; RapidOCR: its recogniser alone, no detection or angle classifier)."""
        return self.read_crops(peer_line_crops(*page))


class TesseractHost(PeerLines):
    """Tesseract: T tesseract processes at a time, one page each, OMP_THREAD_LIMIT=1."""

    def __init__(self, threads: int, models: str | None = None):
        from concurrent.futures import ThreadPoolExecutor

        self.threads = threads
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="tesseract")

    def version(self, _=None) -> str:
        from jobs.peers import tesseract_version

        return tesseract_version()

    def ocr(self, uris: list[str]) -> list:
        from jobs.peers import tesseract_page

        return list(self.pool.map(lambda u: tesseract_page(decode(u)), uris))

    def read_crops(self, crops: list[np.ndarray]) -> list[str]:
        from jobs.peers import tesseract_read_crops

        parts = [crops[i :: self.threads] for i in range(self.threads)]
        texts = list(self.pool.map(tesseract_read_crops, parts))
        out: list[str] = [""] * len(crops)
        for i, part in enumerate(texts):
            out[i :: self.threads] = part
        return out


class RapidHost(PeerLines):
    """RapidOCR with its shipped models, onnxruntime intra-op threads = T."""

    def __init__(self, threads: int, models: str | None = None):
        import cv2

        from jobs.peers import RapidPeer

        cv2.setNumThreads(threads)
        self.peer = RapidPeer(threads)

    def version(self, _=None) -> str:
        from jobs.peers import rapidocr_version

        return rapidocr_version()

    def ocr(self, uris: list[str]) -> list:
        return [self.peer(decode(u)) for u in uris]

    def read_crops(self, crops: list[np.ndarray]) -> list[str]:
        return self.peer.read_crops(crops)


HOSTS = {
    "htr-batch": HtrHost,
    "htr-onnx": HtrOnnxHost,
    "htr-torch": HtrTorchHost,
    "tesseract": TesseractHost,
    "rapidocr": RapidHost,
}


def _serve(system: str, conn, threads: int, models: str | None, options: tuple = ()) -> None:
    """Worker process main: build the system, then answer (method, argument) requests.
    `options`: (PipelineOptions, DecodeOptions) for the htr-* systems."""
    t = time.perf_counter()
    try:
        host = (
            HOSTS[system](threads, models, *options)
            if system.startswith("htr")
            else HOSTS[system](threads, models)
        )
    except Exception as e:
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ok", time.perf_counter() - t))
    while True:
        method, arg = conn.recv()
        if method == "stop":
            getattr(host, "close", lambda: None)()
            break
        try:
            conn.send(("ok", getattr(host, method)(arg)))
        except Exception as e:
            conn.send(("error", f"{type(e).__name__}: {e}"))


class Worker:
    """One system in a spawned process."""

    def __init__(
        self,
        system: str,
        threads: int,
        models: str | None,
        predictor: PipelineOptions | None = None,
        decoding: DecodeOptions | None = None,
    ):
        ctx = get_context("spawn")
        self.system = system
        self.conn, child = ctx.Pipe()
        env_threads = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        old = {k: os.environ.get(k) for k in env_threads}
        os.environ.update(env_threads)  # inherited by the spawned interpreter at start
        try:
            self.proc = ctx.Process(
                target=_serve, args=(system, child, threads, models, (predictor, decoding)), daemon=True
            )
            self.proc.start()
        finally:
            for k, v in old.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        self.load_seconds = self._answer()

    def _answer(self) -> Any:
        status, value = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"{self.system}: {value}")
        return value

    def call(self, method: str, arg: Any = None) -> Any:
        self.conn.send((method, arg))
        return self._answer()

    def close(self) -> None:
        try:
            self.conn.send(("stop", None))
        except OSError:
            pass
        self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.kill()
