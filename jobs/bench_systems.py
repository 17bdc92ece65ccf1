"""`htr bench` (apps/jobs layer): the head-to-head. Every system reads the same pages chunk by
chunk, systems interleaved and their order rotated per chunk; then jobs.evaluate scores all of
them with the same code. Also the test sets (synthetic pages, the real dev set) and the speed and
accuracy rows of the report."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from jobs.bench_common import RssMonitor
from jobs.bench_hosts import Worker


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
