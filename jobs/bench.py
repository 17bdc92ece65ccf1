"""`htr bench`: htr-batch vs Tesseract and RapidOCR on the same pages, in one run -> BENCHMARKS.md.

- Headline (jobs/bench_e2e.py): `htr run` end to end, the wall clock of the real command, against
  the peers run as commands on the same folders. The in-process sections below explain it.
- Test sets: synthetic pages from a seed no training run used (word-level ground truth), and the
  real dev set (line-level) when `../shared/data/stanford_memorials/manifest.jsonl` exists.
- Each system runs in its own process (so its peak RSS is its own), fed the same page files chunk
  by chunk, systems interleaved and their order rotated per chunk so machine noise hits all alike.
  Same thread budget T: us with torch.set_num_threads(T); RapidOCR with onnxruntime intra-op
  threads = T; Tesseract as T single-threaded processes at a time (OMP_THREAD_LIMIT=1).
  Every system's time includes decoding the page file (the same decoder for all; htr-batch asks it
  for large JPEGs reduced, as `htr run` does).
- Accuracy: `jobs.evaluate.evaluate` scores the three systems' pages with the same code.
- Our stage breakdown: the Pipeline's models and helpers are wrapped with timers from outside.
- Memory: `htr run` on a long PDF in a subprocess, its peak RSS against the 2 GiB target.
- Cost per 1000 pages from measured throughput and a small list-price table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import io
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
DEV_MANIFEST = REPO.parent / "shared" / "data" / "stanford_memorials" / "manifest.jsonl"
# htr-onnx / htr-torch: our same weights on ONNX Runtime fp32 / eager PyTorch fp32 (before/after references)
SYSTEMS = ("htr-batch", "tesseract", "rapidocr", "htr-onnx", "htr-torch")
PROTOTYPES: tuple[str, ...] = ()  # only when named in --systems
MEMORY_TARGET_MB = 2048
MEMORY_DISTINCT, MEMORY_LONG_SIDE = 4, 2339  # memory-run pages: A4 at 200 dpi

# ---- stage timing (also used by jobs/bench_gpu.py) ---------------------------------------------------


@dataclass
class StageClock:
    """Seconds spent per named stage, summed over calls."""

    sync: Callable[[], None] | None = None  # e.g. torch.cuda.synchronize for device work
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    enabled: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)  # decode threads time stages too

    @contextmanager
    def stage(self, name: str, sync: bool = False):
        t = time.perf_counter()
        try:
            yield
        finally:
            if self.enabled:
                if sync and self.sync:
                    self.sync()
                with self.lock:
                    self.seconds[name] += time.perf_counter() - t

    def wrap(self, fn: Callable, name: str, sync: bool = False) -> Callable:
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            with self.stage(name, sync):
                return fn(*args, **kwargs)

        return timed

    def reset(self) -> None:
        self.seconds = defaultdict(float)


# Leaf stages inside Pipeline.process_pages, in pipeline order; "other" is the rest of its time.
STAGES = (
    "decode",
    "seg_resize",
    "seg_model",
    "postprocess",
    "crop",
    "rec_pack",
    "rec_model",
    "ctc_decode",
    "lexicon",
    "lines",
    "other",
    "write",
)
STAGE_NOTES = {
    "decode": "read + rasterise the page file and put it right (iter_pages, Pipeline.prepare_page), on the "
    "decode threads",
    "seg_resize": "resize each page for the segmenter",
    "seg_model": "segmenter forward (DB probability map)",
    "postprocess": "DB post-processing: probability map -> word quads",
    "crop": "rectify each word quad to a 32 px crop",
    "rec_pack": "pack crops into width-bucketed batches",
    "rec_model": "recogniser forward (CRNN)",
    "ctc_decode": "greedy CTC decoding",
    "lexicon": "lexicon rescoring of out-of-vocabulary readings (CTC likelihood of candidates)",
    "lines": "group words into lines, reading order",
    "other": "the rest of process_pages (batch assembly, gray conversion, records)",
    "write": "JSON + Parquet records (OutputWriter); not in the head-to-head time",
}


def instrument(pipe, clock: StageClock) -> Callable[[], None]:
    """Time a Pipeline's stages from outside: its two models (instance attributes) and the module
    functions batch.pipeline calls. Returns an undo for the module-level patches."""
    import batch.pipeline as bp
    import transforms.crops as crops_mod

    sync = pipe.device.type == "cuda"
    pipe.segmenter = clock.wrap(pipe.segmenter, "seg_model", sync)
    pipe.recogniser = clock.wrap(pipe.recogniser, "rec_model", sync)
    pipe.process_pages = clock.wrap(pipe.process_pages, "_process_pages")
    if getattr(pipe, "lexicon", None) is not None:
        pipe.lexicon.rescore = clock.wrap(pipe.lexicon.rescore, "lexicon")
    patches = [
        (bp, "_resize_for_segmenter", "seg_resize"),
        (bp, "boxes_from_prob", "postprocess"),
        (bp, "greedy_decode", "ctc_decode"),
        (bp, "group_lines", "lines"),
        (crops_mod, "rectify", "crop"),
        (crops_mod, "pack", "rec_pack"),
    ]
    originals = [(mod, attr, getattr(mod, attr)) for mod, attr, _ in patches]
    for mod, attr, stage in patches:
        setattr(mod, attr, clock.wrap(getattr(mod, attr), stage))

    def undo() -> None:
        for mod, attr, fn in originals:
            setattr(mod, attr, fn)

    return undo


def stage_rows(seconds: dict[str, float], pages: int) -> list[list[str]]:
    """Markdown rows: stage, seconds, share of the OCR time, ms/page (leaves + 'other')."""
    s = dict(seconds)
    total_pp = s.pop("_process_pages", 0.0)
    leaves = [k for k in STAGES if k not in ("decode", "other", "write")]
    s["other"] = max(0.0, total_pp - sum(s.get(k, 0.0) for k in leaves))
    ocr_total = s.get("decode", 0.0) + total_pp
    rows = []
    for k in STAGES:
        if k not in s:
            continue
        share = f"{100 * s[k] / ocr_total:.1f} %" if k != "write" and ocr_total else "-"
        rows.append([k, f"{s[k]:.2f}", share, f"{1000 * s[k] / max(1, pages):.0f}", STAGE_NOTES[k]])
    return rows


# ---- small helpers -------------------------------------------------------------------------------


def decode(uri: str, image_side: int | None = None) -> np.ndarray:
    """The first page of the file, as jobs.evaluate sees it (image_side: as `htr run` decodes it)."""
    from batch import storage
    from transforms.rasterise import iter_pages

    return next(iter_pages(storage.read_bytes(uri), image_side=image_side))


def tree_rss(proc, include_self: bool = True) -> int:
    """RSS bytes of a process and all its descendants (processes that vanish count 0).

    A child caught between fork/vfork and exec still runs its parent's program on the parent's
    pages, and its RSS repeats the parent's: counting it doubled the peak of `htr run` (3228 MiB
    once, against 1610 MiB before and after) whenever a poll met a pdftoppm being started. Such a
    child (same executable and command line as its parent) is skipped."""
    import psutil

    total = 0
    try:
        procs = ([proc] if include_self else []) + proc.children(recursive=True)
    except psutil.Error:
        return 0
    for p in procs:
        try:
            if p is not proc and _unexeced(p):
                continue
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def _unexeced(child) -> bool:
    parent = child.parent()
    return parent is not None and child.exe() == parent.exe() and child.cmdline() == parent.cmdline()


class RssMonitor(threading.Thread):
    """Peak tree RSS of named processes, sampled every `interval` seconds."""

    def __init__(self, interval: float = 0.05):
        super().__init__(daemon=True)
        self.interval = interval
        self.watch: dict[str, tuple[Any, bool]] = {}
        self.peak: dict[str, int] = defaultdict(int)
        self.trace: list[tuple[float, int]] = []  # (seconds, bytes) of the first watched tree
        self._stop_evt = threading.Event()
        self.t0 = time.perf_counter()

    def add(self, name: str, pid: int, include_self: bool = True) -> None:
        import psutil

        self.watch[name] = (psutil.Process(pid), include_self)

    def run(self) -> None:
        while not self._stop_evt.wait(self.interval):
            for k, (name, (proc, me)) in enumerate(list(self.watch.items())):
                rss = tree_rss(proc, me)
                self.peak[name] = max(self.peak[name], rss)
                if k == 0:
                    self.trace.append((time.perf_counter() - self.t0, rss))

    def stop(self) -> None:
        self._stop_evt.set()
        self.join()


def md_table(head: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def git_commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        return sha + (" (tree has uncommitted changes)" if dirty else "")
    except OSError:
        return "unknown"


def machine_info() -> dict[str, str]:
    import psutil
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "git commit": git_commit(),
        "load average (1/5/15 min) at start": " / ".join(f"{v:.2f}" for v in os.getloadavg()),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# ---- system hosts (each in its own process) ----------------------------------------------------------


class HtrHost:
    """htr-batch as shipped: the Pipeline on CPU with its automatic engine choice, T threads, stages timed."""

    backend, precision = "auto", "auto"

    def __init__(self, threads: int, models: str | None):
        import cv2
        import torch

        from batch.outputs import OutputWriter
        from batch.pipeline import Pipeline, PipelineConfig

        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
        self.clock = StageClock()
        self.pipe = Pipeline.load(
            models, "cpu", PipelineConfig(backend=self.backend, precision=self.precision)
        )
        instrument(self.pipe, self.clock)
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
        return self.pipe.prepare_page(decode(uri, self.pipe.config.image_side))

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


def _serve(system: str, conn, threads: int, models: str | None) -> None:
    """Worker process main: build the system, then answer (method, argument) requests."""
    t = time.perf_counter()
    try:
        host = HOSTS[system](threads, models)
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

    def __init__(self, system: str, threads: int, models: str | None):
        ctx = get_context("spawn")
        self.system = system
        self.conn, child = ctx.Pipe()
        env_threads = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        old = {k: os.environ.get(k) for k in env_threads}
        os.environ.update(env_threads)  # inherited by the spawned interpreter at start
        try:
            self.proc = ctx.Process(target=_serve, args=(system, child, threads, models), daemon=True)
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


# ---- the head-to-head ----------------------------------------------------------------------------


@dataclass
class Dataset:
    name: str
    pages: list  # jobs.evaluate.EvalPage
    note: str


@dataclass
class Timing:
    pages: int = 0
    seconds: float = 0.0
    peak_rss: int = 0

    @property
    def pages_per_s(self) -> float:
        return self.pages / self.seconds if self.seconds else 0.0


def time_systems(
    ds: Dataset, workers: dict[str, Worker], chunk: int, warm: bool = True
) -> tuple[dict[str, Timing], dict[str, list], dict[str, dict[str, float]]]:
    """Run every system on every page, chunk by chunk, order rotated per chunk; returns timings,
    each system's pages (in order) and our stage seconds. warm: one untimed page first."""
    uris = [p.uri for p in ds.pages]
    names = list(workers)
    for w in workers.values() if warm else ():  # warm-up on the first page: lazy init, first-call allocations
        w.call("ocr", uris[:1])
    for name in our_systems(workers):
        workers[name].call("reset")
    monitor = RssMonitor()
    for name, w in workers.items():
        assert w.proc.pid is not None  # started
        monitor.add(name, w.proc.pid, include_self=name != "tesseract")  # tesseract: its processes only
    monitor.start()
    timing = {n: Timing() for n in names}
    outputs: dict[str, list] = {n: [] for n in names}
    chunks = [uris[i : i + chunk] for i in range(0, len(uris), chunk)]
    for k, part in enumerate(tqdm(chunks, desc=f"{ds.name}: timed runs", unit="chunk", file=sys.stderr)):
        for name in names[k % len(names) :] + names[: k % len(names)]:
            t = time.perf_counter()
            outputs[name].extend(workers[name].call("ocr", part))
            timing[name].seconds += time.perf_counter() - t
            timing[name].pages += len(part)
            if name.startswith("htr"):
                workers[name].call("write")  # timed as a stage, outside the head-to-head
    monitor.stop()
    for n in names:
        timing[n].peak_rss = monitor.peak[n]
    stages = {name: workers[name].call("stages") for name in our_systems(workers)}
    return timing, outputs, stages


def our_systems(names) -> list[str]:
    return [n for n in names if n.startswith("htr")]


def system_scores(ds: Dataset, workers: dict[str, Worker], outputs: dict[str, list]) -> dict[str, Any]:
    """jobs.evaluate's counts (Scores) per system, the same scoring for all: predictions replayed in
    page order; each system reads the ground-truth word crops (word-level pages) or line crops
    (line-level pages) itself."""
    from jobs.evaluate import score_pages

    scores = {}
    for name, w in workers.items():
        scores[name] = score_pages(
            ds.pages, *_replayed(w, iter(outputs[name])), desc=f"{ds.name}: score {name}"
        )
    return scores


def _replayed(worker: Any, replay: Iterator[Any]) -> tuple[Callable, Callable, Callable]:
    """score_pages' page reader (the recorded outputs, in order), crop reader and line reader
    (both asked of the worker)."""

    def read_page(_image: Any) -> Any:
        return next(replay)

    def read_crops(crops: Any) -> Any:
        return worker.call("read_crops", crops)

    def read_lines(gray: Any, quads: Any) -> Any:
        return worker.call("read_lines", (gray, quads))

    return read_page, read_crops, read_lines


def summarise_scores(ds: Dataset, scores: dict[str, Any]) -> dict[str, dict]:
    from jobs.evaluate import summarise

    results = {}
    for name, s in scores.items():
        metrics = summarise(s, ds.pages)
        metrics.pop("seconds_per_page", None)  # replayed predictions: timed above instead
        results[name] = metrics
    return results


def score_systems(ds: Dataset, workers: dict[str, Worker], outputs: dict[str, list]) -> dict[str, dict]:
    """The same jobs.evaluate scoring for every system (jobs.evaluate.evaluate, predictions replayed)."""
    return summarise_scores(ds, system_scores(ds, workers, outputs))


def speed_rows(timing: dict[str, Timing], load: dict[str, float]) -> list[list[Any]]:
    ours = timing.get("htr-batch")
    rows = [
        ["pages", *[t.pages for t in timing.values()]],
        ["wall time (s)", *[t.seconds for t in timing.values()]],
        ["pages/s", *[t.pages_per_s for t in timing.values()]],
        ["s/page", *[t.seconds / max(1, t.pages) for t in timing.values()]],
    ]
    if ours:
        rows.append(
            [
                "our pages/s ÷ theirs",
                *[ours.pages_per_s / t.pages_per_s if t.pages_per_s else "-" for t in timing.values()],
            ]
        )
    rows.append(["peak RSS (MiB)", *[t.peak_rss / 2**20 for t in timing.values()]])
    rows.append(["start-up (s)", *[load[n] for n in timing]])
    return rows


TYPED_KEY = re.compile(r"(crop_cer|bow_f1)_(?!chance$)([a-z]+?)(_chance)?")  # crop_cer_printed, ...


def _typed(key: str) -> tuple[str, str, str | None]:
    """(metric, kind, "_chance" or None) of a key TYPED_KEY matches."""
    m = TYPED_KEY.fullmatch(key)
    assert m is not None, key
    return m[1], m[2], m[3]


TYPED_LABEL = {"crop_cer": "crop CER (GT line crops)", "bow_f1": "BoW F1 (words in its GT lines)"}


def metric_rows(results: dict[str, dict], typed: bool = False) -> list[list[Any]]:
    """Metrics as rows, systems as columns: the per-line-type keys (crop_cer_<type>,
    bow_f1_<type>[_chance]) only with typed=True, as (type, metric) rows, the others without."""
    keys: list[str] = []
    for r in results.values():
        keys += [
            k
            for k in r
            if k not in keys and k not in ("pages", "level") and bool(TYPED_KEY.fullmatch(k)) == typed
        ]
    if not typed:
        return [[k, *[r.get(k, "") for r in results.values()]] for k in keys]
    rows = []
    for k in sorted(keys, key=lambda k: (_typed(k)[1], k.startswith("bow"), k)):
        metric, kind, chance = _typed(k)
        rows.append(
            [
                kind,
                TYPED_LABEL[metric] + (", chance" if chance else ""),
                *[r.get(k, "") for r in results.values()],
            ]
        )
    return rows


# ---- test sets ---------------------------------------------------------------------------------------


def synthetic_set(n: int, seed: int, work: Path) -> Dataset:
    from jobs.evaluate import load_eval_set
    from transforms.synth import write_pages

    manifest = work / "manifest.jsonl"
    if not manifest.is_file() or len(manifest.read_text().splitlines()) != n:
        write_pages(n, work, seed)
    return Dataset(
        f"synthetic-{seed}",
        load_eval_set(manifest),
        f"{n} synthetic pages, seed {seed} (training used seeds 0-5 and +10000), word-level ground truth",
    )


def dev_set(manifest: Path, limit: int | None) -> Dataset:
    from jobs.evaluate import load_eval_set

    pages = load_eval_set(manifest, limit=limit)
    return Dataset(
        "dev",
        pages,
        f"{len(pages)} real handwritten letter pages (1905, {manifest.parent.name}), line-level ground truth",
    )


# ---- memory: htr run on a long PDF -------------------------------------------------------------


def repeated_pdf(jpegs: list[tuple[bytes, int, int]], n_pages: int, path: Path, dpi: int = 200) -> Path:
    """A PDF of n_pages cycling through a few JPEG pages; each image is stored once and shared by
    its pages, so the file stays small however many pages it has. Page size = image at `dpi`."""
    objs: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>", b""]  # 1, 2 (pages: filled below)
    shared = []
    for data, w, h in jpegs:
        img = (
            b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceRGB "
            b"/BitsPerComponent 8 /Filter /DCTDecode /Length %d >>\nstream\n"
            % (w, h, len(data))
            + data
            + b"\nendstream"
        )
        pw, ph = w * 72 / dpi, h * 72 / dpi
        content = b"q %.2f 0 0 %.2f 0 0 cm /Im0 Do Q" % (pw, ph)
        objs += [img, b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content)]
        shared.append((len(objs) - 1, len(objs), pw, ph))  # object numbers of image, content
    kids = []
    for k in range(n_pages):
        img_no, content_no, pw, ph = shared[k % len(shared)]
        objs.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %.2f %.2f] /Resources << /XObject "
            b"<< /Im0 %d 0 R >> >> /Contents %d 0 R >>" % (pw, ph, img_no, content_no)
        )
        kids.append(b"%d 0 R" % len(objs))
    objs[1] = b"<< /Type /Pages /Kids [" + b" ".join(kids) + b"] /Count %d >>" % n_pages
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for no, body in enumerate(objs, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % no + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1))
    out.write(b"".join(b"%010d 00000 n \n" % o for o in offsets))
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref))
    path.write_bytes(out.getvalue())
    return path


def memory_pdf(n_pages: int, seed: int, work: Path, distinct: int = 4, long_side: int = 2339) -> Path:
    """A long PDF of `distinct` synthetic pages, each at most `long_side` px (2339: A4 at 200 dpi)."""
    from PIL import Image

    from transforms.synth import render_page

    jpegs = []
    for i in range(distinct):
        page, _ = render_page(np.random.default_rng([seed, 50_000 + i]))
        scale = long_side / max(page.size)
        if scale < 1:
            page = page.resize(
                (round(page.width * scale), round(page.height * scale)), Image.Resampling.LANCZOS
            )
        buf = io.BytesIO()
        page.convert("RGB").save(buf, "JPEG", quality=70)
        jpegs.append((buf.getvalue(), page.width, page.height))
    work.mkdir(parents=True, exist_ok=True)
    return repeated_pdf(jpegs, n_pages, work / f"long-{n_pages}-pages.pdf")


@dataclass
class MemoryResult:
    pages: int
    pdf_bytes: int
    peak_rss: int
    seconds: float
    returncode: int
    summary: str
    rss_at: list[tuple[str, float]]  # (fraction of the run, MiB)


def memory_run(pdf: Path, models: str | None, threads: int, timeout: float) -> MemoryResult:
    """`htr run PDF OUT` in a subprocess; psutil polls its process tree's RSS."""
    out = Path(tempfile.mkdtemp(prefix="htr-bench-mem-"))
    cmd = [sys.executable, "-m", "batch.cli", "run", str(pdf), str(out), "--no-progress"]
    cmd += ["--models", models] if models else []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    monitor = RssMonitor(interval=0.2)
    t = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    monitor.add("htr run", proc.pid)
    monitor.start()
    try:
        text, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        text, _ = proc.communicate()
        text += f"\n(killed after {timeout:.0f} s)"
    seconds = time.perf_counter() - t
    monitor.stop()
    shutil.rmtree(out, ignore_errors=True)
    trace = monitor.trace or [(0.0, 0)]
    rss_at = []
    for frac in (0.1, 0.25, 0.5, 0.75, 1.0):
        upto = [r for s, r in trace if s <= frac * trace[-1][0]] or [0]
        rss_at.append((f"{int(frac * 100)} %", max(upto) / 2**20))
    summary = next((ln for ln in text.splitlines()[::-1] if ln.startswith("htr run:")), text.strip()[-300:])
    found = re.search(r"(\d+) pages", summary)
    n = int(found.group(1)) if found else 0
    return MemoryResult(
        n, pdf.stat().st_size, monitor.peak["htr run"], seconds, proc.returncode, summary, rss_at
    )


# ---- cost ---------------------------------------------------------------------------------------------

# SageMaker on-demand list prices, us-east-1, USD per hour (real-time inference / batch transform).
# Written from the public price page as last known (2025); no internet here to re-check: check current.
PRICES_AS_OF = "2025 list prices (SageMaker on-demand, us-east-1), not re-checked: check current"
INSTANCES = [  # name, vCPUs, GPU, USD/hour
    ("ml.c5.xlarge", 4, None, 0.204),
    ("ml.m5.xlarge", 4, None, 0.23),
    ("ml.g4dn.xlarge", 4, "T4", 0.736),
    ("ml.g5.xlarge", 4, "A10G", 1.408),
]
TEXTRACT = (
    "Amazon Textract DetectDocumentText",
    1.50,
    "published list price, USD 1.50 per 1000 pages for the first million pages a month "
    "(0.60 after), us-east-1, 2025: check current",
)


def usd_per_1000(usd_hour: float, pages_per_s: float) -> float:
    return usd_hour / (pages_per_s * 3600) * 1000


def cost_rows(throughput: dict[str, float], threads: int, gpu: dict[str, float]) -> list[list[Any]]:
    """throughput: pages/s per system measured here with `threads` threads; gpu: {gpu name: our
    pages/s} from `make bench-gpu` runs."""
    rows = []
    for name, vcpu, gpu_name, price in INSTANCES:
        if gpu_name is None:
            cells = []
            for pps in throughput.values():
                guess = pps * vcpu / threads
                cells.append(f"{usd_per_1000(price, guess):.3f} (guess: {guess:.2f} p/s)" if pps else "-")
            basis = f"CPU guess: this machine's pages/s x {vcpu}/{threads} vCPU"
        else:
            pps_gpu = gpu.get(gpu_name)
            ours = f"{usd_per_1000(price, pps_gpu):.3f} ({pps_gpu:.1f} p/s)" if pps_gpu else "not measured"
            cells = [ours if sys_name == "htr-batch" else "-" for sys_name in throughput]
            basis = (
                f"measured on a {gpu_name} (bench-gpu)" if pps_gpu else "needs `make bench-gpu` on this GPU"
            )
        rows.append([name, f"{price:.3f}", *cells, basis])
    return rows


# ---- report -----------------------------------------------------------------------------------------


@dataclass
class Report:
    command: str
    started: str
    machine: dict[str, str]
    threads: int
    versions: dict[str, str]
    sections: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    headline: list[str] = field(default_factory=list)  # jobs.bench_e2e: before the notes

    def markdown(self) -> str:
        head = [
            "# Benchmarks",
            "",
            f"Generated by `{self.command}` on {self.started} (UTC). Rerun with `make bench`.",
            "",
            md_table(
                ["machine", ""],
                [[k, v] for k, v in self.machine.items()]
                + [["thread budget", f"{self.threads} per system"]]
                + [[f"{k} version", v] for k, v in self.versions.items()],
            ),
            "",
        ]
        notes = ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        return "\n".join(head + self.headline + notes + self.sections) + "\n"


def run_dataset(
    ds: Dataset, workers: dict[str, Worker], chunk: int, threads: int, report: Report
) -> tuple[dict[str, Timing], dict[str, dict[str, float]], dict[str, dict]]:
    timing, outputs, stages = time_systems(ds, workers, chunk)
    results = score_systems(ds, workers, outputs)
    load = {n: w.load_seconds for n, w in workers.items()}
    names = list(workers)
    from jobs.evaluate import format_table

    print(f"\n{ds.name}: {ds.note}")
    print(
        format_table(
            {
                n: {
                    **results[n],
                    "pages_per_s": timing[n].pages_per_s,
                    "peak_rss_mib": timing[n].peak_rss / 2**20,
                }
                for n in names
            }
        )
    )
    sec = [
        f"## {ds.name}: {ds.note}",
        "",
        f"Speed: {threads} threads per system, page files decoded by each system's timed code.",
        "",
        md_table(["speed", *names], speed_rows(timing, load)),
        "",
        "Accuracy (jobs.evaluate, the same scoring for every system):",
        "",
        md_table(["metric", *names], metric_rows(results)),
        "",
    ]
    if typed := metric_rows(results, typed=True):
        sec += [
            "By line type (line_types.jsonl; printed = Print and Typewritten lines): recognition "
            "alone on the GT line crops of each type, and the bag of words of each system's page "
            "reading inside the GT lines of that type (chance: another page's lines of that type).",
            "",
            md_table(["line type", "metric", *names], typed),
            "",
        ]
    for name, st in stages.items():
        rows = stage_rows(st, timing[name].pages)
        print(
            f"\n{name} stages:\n"
            + "\n".join(f"  {r[0]:<12} {r[1]:>8} s {r[2]:>8} {r[3]:>6} ms/page" for r in rows)
        )
        sec += [
            f"Where {name}'s time goes ({ds.name}, {timing[name].pages} pages):",
            "",
            md_table(["stage", "seconds", "share", "ms/page", "what"], rows),
            "",
        ]
    report.sections += sec
    return timing, stages, results


def memory_section(res: MemoryResult, requested: int) -> list[str]:
    ok = "within" if res.peak_rss <= MEMORY_TARGET_MB * 2**20 else "OVER"
    rows: list[list[Any]] = [
        ["pages in the PDF", requested],
        ["PDF size (MB)", res.pdf_bytes / 1e6],
        ["pages processed", res.pages],
        ["wall time (s)", res.seconds],
        ["peak RSS, process tree (MiB)", res.peak_rss / 2**20],
        ["target (MiB)", f"{MEMORY_TARGET_MB} ({ok} target)"],
        ["exit code", res.returncode],
    ]
    rows += [[f"peak RSS up to {frac} of the run (MiB)", mib] for frac, mib in res.rss_at]
    return [
        f"## Memory: `htr run` on a {requested}-page PDF",
        "",
        f"One PDF of {MEMORY_DISTINCT} synthetic pages (long side up to {MEMORY_LONG_SIDE} px) repeated, each "
        "image stored once, rasterised at 200 dpi; "
        "RSS of `htr run` and its children (pdftoppm) polled every 0.2 s with psutil.",
        "",
        md_table(["", "value"], rows),
        "",
        f"Its summary line: `{res.summary}`",
        "",
    ]


# ---- command --------------------------------------------------------------------------------------


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--synthetic-pages",
        type=int,
        default=24,
        help="synthetic test pages (0: none); 24 keep the speed ratios steadier than 12 did",
    )
    p.add_argument("--seed", type=int, default=777, help="synthetic seed; training used 0-5 and +10000")
    p.add_argument(
        "--dev",
        help=f"folder with manifest.jsonl of a real dev set (default: {DEV_MANIFEST.parent} when present)",
    )
    p.add_argument("--no-dev", action="store_true", help="skip the real dev set")
    p.add_argument("--dev-limit", type=int, help="first N dev pages only")
    from jobs.bench_e2e import configure_e2e
    from jobs.bench_real import configure_real

    configure_e2e(p)
    configure_real(p)
    p.add_argument("--out", default="BENCHMARKS.md", help="report file")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="thread budget per system")
    p.add_argument("--chunk", type=int, help="pages per interleaved turn (default max(threads, 4))")
    p.add_argument("--models", help="model folder (default: the shipped models/default)")
    p.add_argument(
        "--systems", default=",".join(SYSTEMS), help="comma-separated, from " + ",".join(SYSTEMS + PROTOTYPES)
    )
    p.add_argument("--work", help="folder for the generated test data (default: a temporary folder)")
    p.add_argument("--skip-memory", action="store_true", help="skip the long-PDF memory run")
    p.add_argument("--memory-pages", type=int, default=1000, help="pages in the memory-run PDF")
    p.add_argument(
        "--memory-timeout", type=float, default=3600, help="seconds before the memory run is stopped"
    )
    p.add_argument(
        "--gpu-json",
        action="append",
        default=[],
        help="bench-gpu result JSON (repeatable): fills the GPU cost rows",
    )
    p.add_argument("--note", action="append", default=[], help="extra line for the report's notes")


def _check_systems(names: list[str]) -> list[str]:
    from jobs.peers import rapidocr_available, tesseract_available

    why = {"tesseract": tesseract_available(), "rapidocr": rapidocr_available()}
    keep = []
    for n in names:
        if n not in SYSTEMS + PROTOTYPES:
            raise SystemExit(f"htr bench: unknown system {n!r}")
        if why.get(n):
            print(f"htr bench: skipping {n}: {why[n]}", file=sys.stderr)
        else:
            keep.append(n)
    return keep


def _headline(args, work: Path, dev: Path | None) -> list[str]:
    """The end-to-end section (jobs.bench_e2e), run before the in-process systems start."""
    from jobs.bench_e2e import bench_e2e

    print("\nheadline: htr run end to end vs Tesseract and RapidOCR ...", file=sys.stderr)
    return bench_e2e(args, work, dev)


def _gpu_throughput(paths: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for p in paths:
        d = json.loads(Path(p).read_text())
        out[d["gpu_short"]] = max(out.get(d["gpu_short"], 0.0), float(d["best_pages_per_s"]))
    return out


def main(args) -> int:
    from batch.core.errors import EXIT_BAD_ARGS

    started = dt.datetime.now(dt.UTC)
    names = _check_systems([s.strip() for s in args.systems.split(",") if s.strip()])
    if not names:
        print("htr bench: no system can run", file=sys.stderr)
        return EXIT_BAD_ARGS
    threads = max(1, args.threads)
    chunk = args.chunk or max(threads, 4)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="htr-bench-"))
    dev = Path(args.dev) / "manifest.jsonl" if args.dev else DEV_MANIFEST
    headline = [] if args.no_e2e else _headline(args, work, None if args.no_dev else dev)
    workers = {
        n: Worker(n, threads, args.models) for n in tqdm(names, desc="starting systems", file=sys.stderr)
    }
    report = Report(
        "htr " + shlex.join(sys.argv[1:]) if "bench" in sys.argv else "htr bench",
        started.strftime("%Y-%m-%d %H:%M"),
        machine_info(),
        threads,
        {n: w.call("version") for n, w in workers.items()},
    )
    report.notes += list(args.note) + [
        "Each system runs in its own process on the same page files; systems take turns chunk by chunk "
        f"({chunk} pages), their order rotated each chunk, so background load hits all of them alike.",
        f"Same thread budget ({threads}): htr-batch onnxruntime/torch threads {threads}; RapidOCR onnxruntime "
        f"intra-op threads {threads}; Tesseract {threads} single-threaded processes (OMP_THREAD_LIMIT=1) at a time.",
        "Times include decoding the page file (the same Pillow/poppler decoder for all; ours asks libjpeg "
        "for large JPEGs at reduced size, as `htr run` does, the peers get them in full; ours decodes a chunk's "
        f"files on {threads} threads, like `htr run`'s decode workers) and exclude model loading "
        "(start-up) and a one-page warm-up. Peak RSS: the system's process tree (for Tesseract its "
        "tesseract processes only, not the bench's host process).",
        "Peers run with their default settings: Tesseract `--psm 3` (eng); RapidOCR's shipped PP-OCRv4 "
        "models. RapidOCR gives line boxes: words are cut from them by character position.",
        "crop_cer/crop_wer: recognition only, on ground-truth crops. Word-level sets: word crops (32 px "
        "high; Tesseract gets them upscaled to 64 px with a margin, `--psm 7`). Line-level sets: line crops "
        "(the GT polygon's rectangle, margins as in training), each read as one text line: ours by the "
        "pipeline's line reader (a line recogniser reads the whole line; a word recogniser reads it in "
        "slices of its max width), the peers get the line at the page's resolution (Tesseract upscaled to "
        "64 px with a margin, `--psm 7`; RapidOCR's recogniser alone, no detection).",
    ]
    if "htr-onnx" in names or "htr-torch" in names:
        report.notes.append(
            "htr-batch picks its CPU engine itself: PyTorch with bf16 autocast where the CPU "
            "has native bf16 (AVX512-BF16/AMX), else ONNX Runtime fp32 (its version row says "
            "which). htr-onnx (ONNX Runtime fp32, exported from the same weights at start-up) "
            "and htr-torch (eager PyTorch fp32) are the same Pipeline and weights, kept as "
            "before/after references."
        )
    timings: dict[str, dict[str, Timing]] = {}
    try:
        sets = []
        if args.synthetic_pages > 0:
            sets.append(synthetic_set(args.synthetic_pages, args.seed, work / f"synthetic-{args.seed}"))
        if args.no_dev:
            pass
        elif dev.is_file():
            sets.append(dev_set(dev, args.dev_limit))
        else:
            report.notes.append(f"Real dev set skipped: {dev} not found.")
        results: dict[str, dict[str, dict]] = {}
        for ds in sets:
            timings[ds.name], _, results[ds.name] = run_dataset(ds, workers, chunk, threads, report)
        if not args.no_real:
            from jobs.bench_real import bench_real

            dev_run = (timings["dev"], results["dev"]) if "dev" in results else None
            if real := bench_real(args, workers, chunk, report, dev_run, warm=not sets):
                timings["real validation"] = real
    finally:
        for w in workers.values():
            w.close()
    if not args.skip_memory:
        pdf = memory_pdf(args.memory_pages, args.seed, work / "memory", MEMORY_DISTINCT, MEMORY_LONG_SIDE)
        print(f"\nmemory run: htr run on {pdf} ({args.memory_pages} pages) ...", file=sys.stderr)
        res = memory_run(pdf, args.models, threads, args.memory_timeout)
        report.sections += memory_section(res, args.memory_pages)
        print(
            f"memory: peak RSS {res.peak_rss / 2**20:.0f} MiB over {res.pages} pages "
            f"(target {MEMORY_TARGET_MB} MiB); {res.summary}"
        )
    if timings:
        main_set = next(iter(timings.values()))
        pps = {n: t.pages_per_s for n, t in main_set.items()}
        rows = cost_rows(pps, threads, _gpu_throughput(args.gpu_json))
        report.sections += [
            f"## Cost per 1000 pages (USD) from the {next(iter(timings))} throughput",
            "",
            f"Instance prices: {PRICES_AS_OF}. Cost = price per hour / pages per hour x 1000, "
            "compute only (no start-up, storage or requests). CPU rows are a guess: this machine's "
            "pages/s scaled linearly by vCPU count. GPU rows only from a real `make bench-gpu` run.",
            "",
            md_table(["instance", "USD/hour", *[f"{n} USD/1000 pages" for n in pps], "basis"], rows),
            "",
            f"For comparison, {TEXTRACT[0]}: USD {TEXTRACT[1]:.2f} per 1000 pages ({TEXTRACT[2]}).",
            "",
        ]
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    if headline and report.sections:
        report.sections[:0] = [
            "## In process: where `htr run`'s time goes",
            "",
            "The pipeline loop alone, after start-up and a warm-up, outputs written "
            "outside the timed loop (its `write` stage), against the peers in their "
            "own processes: what the headline's wall clocks are made of.",
            "",
        ]
    report.headline = headline
    report.machine["load average (1/5/15 min) at end"] = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    Path(args.out).write_text(report.markdown())
    took = (dt.datetime.now(dt.UTC) - started).total_seconds()
    summary = ", ".join(
        f"{ds}: " + " ".join(f"{n} {t.pages_per_s:.3f} p/s" for n, t in tm.items())
        for ds, tm in timings.items()
    )
    print(f"htr bench: {summary}; report -> {args.out} ({took:.0f} s)")
    return 0
