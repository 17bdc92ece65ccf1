"""`make bench-gpu` / `python -m jobs.bench_gpu`: our throughput on a CUDA machine at several batch
sizes, with the GPU's busy fraction and the stage breakdown, in one table (under ~8 minutes).

Pages are rendered ahead (synthetic, CPU-bound: a process pool over all cores, saved as JPEG), then
the real batch worker (batch.worker.Run) reads them with decode threads = cores, so the numbers
are the ones `htr run` gets. GPU busy: `nvidia-smi` utilisation sampled every 200 ms (pynvml when
installed). Stage seconds come from timers wrapped around the Pipeline from outside (jobs.bench);
decode seconds are summed over the decode threads, so they overlap the model work.

Writes bench-out/bench-gpu.json (`htr bench --gpu-json FILE` turns it into GPU cost rows).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from jobs.bench import StageClock, instrument, machine_info

GPU_NAMES = ("H200", "H100", "A100", "A10G", "L40S", "L4", "T4", "V100")
STAGE_COLS = ("decode", "seg_model", "postprocess", "crop", "rec_model", "lines", "write")


# ---- GPU utilisation -------------------------------------------------------------------------------


class GpuSampler(threading.Thread):
    """GPU utilisation % (device 0), sampled every `interval` s while running."""

    def __init__(self, interval: float = 0.2):
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[float] = []
        self._stop_evt = threading.Event()
        self._read = self._reader()

    def _reader(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:
            pass
        if shutil.which("nvidia-smi"):
            cmd = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"]
            return lambda: float(
                subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout.split()[0]
            )
        return None

    def run(self) -> None:
        while self._read and not self._stop_evt.wait(self.interval):
            try:
                self.samples.append(self._read())
            except Exception:
                pass

    def stop(self) -> float | None:
        """Mean utilisation as a fraction, None when it could not be read."""
        self._stop_evt.set()
        self.join()
        return float(np.mean(self.samples)) / 100 if self.samples else None


# ---- pages rendered ahead ----------------------------------------------------------------------------


def _render_one(job: tuple[int, int, str]) -> str:
    from transforms.synth import render_page

    seed, i, out = job
    img, _ = render_page(np.random.default_rng([seed, i]))
    path = Path(out) / f"page_{i:05d}.jpg"
    img.save(path, quality=85)
    return str(path)


def render_ahead(n: int, seed: int, out: Path, workers: int) -> Path:
    """n synthetic pages as JPEGs under out/, rendered in a process pool (kept between runs)."""
    out.mkdir(parents=True, exist_ok=True)
    todo = [(seed, i, str(out)) for i in range(n) if not (out / f"page_{i:05d}.jpg").is_file()]
    if todo:
        with get_context("spawn").Pool(workers) as pool:
            for _ in tqdm(
                pool.imap_unordered(_render_one, todo, chunksize=2),
                total=len(todo),
                desc="render pages",
                unit="page",
                file=sys.stderr,
            ):
                pass
    return out


# ---- one configuration -------------------------------------------------------------------------------


@dataclass
class Result:
    seg_batch: int
    rec_batch: int
    pages: int
    seconds: float
    gpu_busy: float | None
    gpu_mem_gib: float
    stages_ms: dict[str, float] = field(default_factory=dict)  # per page

    @property
    def pages_per_s(self) -> float:
        return self.pages / self.seconds if self.seconds else 0.0


def _time_decode(clock: StageClock) -> None:
    """Wrap the worker's page iterator so every page's rasterising is timed (in its thread)."""
    import batch.worker as bw

    inner = bw.iter_pages

    def timed_pages(*args, **kwargs):
        it = inner(*args, **kwargs)
        while True:
            with clock.stage("decode"):
                page = next(it, None)
            if page is None:
                return
            yield page

    bw.iter_pages = timed_pages


def _time_write(clock: StageClock, writer) -> None:
    writer.add_document = clock.wrap(writer.add_document, "write")
    writer.flush = clock.wrap(writer.flush, "write")


def run_config(
    pipe, clock: StageClock, pages_dir: Path, seg_batch: int, rec_batch: int, decode_workers: int
) -> Result:
    import torch

    from batch import storage
    from batch.outputs import OutputWriter
    from batch.worker import Run

    pipe.config.seg_batch, pipe.config.rec_batch = seg_batch, rec_batch
    out = tempfile.mkdtemp(prefix="htr-bench-gpu-")
    writer = OutputWriter(out, "bench-gpu")
    _time_write(clock, writer)
    run = Run(
        pipe,
        writer,
        "bench-gpu",
        batch_pages=max(16, 2 * seg_batch),
        decode_workers=decode_workers,
        progress=False,
    )
    clock.reset()
    cuda = pipe.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sampler = GpuSampler()
    sampler.start()
    t = time.perf_counter()
    stats = run.run(storage.list_objects(str(pages_dir), include=["*.jpg"]))
    seconds = time.perf_counter() - t
    busy = sampler.stop()
    shutil.rmtree(out, ignore_errors=True)
    per_page = {k: 1000 * v / max(1, stats.pages) for k, v in clock.seconds.items()}
    mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    return Result(seg_batch, rec_batch, stats.pages, seconds, busy, mem, per_page)


def plan(seg_batches: list[int], rec_batches: list[int], rec_default: int) -> list[tuple[int, int]]:
    """Segmenter sweep at the default recogniser batch first, then the recogniser sweep at the
    best segmenter batch (filled in at run time: None), then the rest of the grid."""
    first = [(s, rec_default) for s in seg_batches]
    rest = [(s, r) for s in seg_batches for r in rec_batches if (s, r) not in first]
    return first + [(-1, r) for r in rec_batches if r != rec_default] + rest


def gpu_short(name: str) -> str:
    return next((g for g in GPU_NAMES if g in name.upper()), name)


def table(results: list[Result]) -> str:
    head = (
        f"{'seg':>4} {'rec':>5} {'pages':>5} {'wall s':>7} {'pages/s':>8} {'GPU busy':>8} {'GPU GiB':>7}  "
        + " ".join(f"{k:>11}" for k in STAGE_COLS)
        + "   (stage columns: ms per page)"
    )
    lines = [head]
    for r in results:
        busy = f"{100 * r.gpu_busy:.0f} %" if r.gpu_busy is not None else "n/a"
        lines.append(
            f"{r.seg_batch:>4} {r.rec_batch:>5} {r.pages:>5} {r.seconds:>7.1f} {r.pages_per_s:>8.2f} "
            f"{busy:>8} {r.gpu_mem_gib:>7.2f}  "
            + " ".join(f"{r.stages_ms.get(k, 0.0):>11.1f}" for k in STAGE_COLS)
        )
    return "\n".join(lines)


# ---- command -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.bench_gpu", description=__doc__.splitlines()[0])
    p.add_argument("--pages", type=int, default=256, help="synthetic pages per configuration")
    p.add_argument("--seed", type=int, default=778, help="synthetic seed (no training run used it)")
    p.add_argument("--models", help="model folder (default: the shipped models/default)")
    p.add_argument("--seg-batches", default="4,8,16,32")
    p.add_argument("--rec-batches", default="256,512,1024")
    p.add_argument("--budget-s", type=float, default=420, help="stop starting configurations after this")
    p.add_argument("--work", default="bench-out/gpu-pages", help="rendered pages (kept for reruns)")
    p.add_argument("--json", default="bench-out/bench-gpu.json")
    p.add_argument(
        "--cpu-smoke", action="store_true", help="run on CPU to check the script (numbers meaningless)"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import torch

    args = parse_args(argv)
    if not torch.cuda.is_available() and not args.cpu_smoke:
        print(
            "bench-gpu: no CUDA device here (torch.cuda.is_available() is False). Run it on a machine "
            "with an NVIDIA GPU and a CUDA build of torch; CPU numbers come from `make bench`.",
            file=sys.stderr,
        )
        return 2
    from batch.pipeline import Pipeline

    t0 = time.perf_counter()
    cores = os.cpu_count() or 1
    pages_dir = render_ahead(args.pages, args.seed, Path(args.work), cores)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    clock = StageClock(sync=torch.cuda.synchronize if device == "cuda" else None)
    pipe = Pipeline.load(args.models, device)
    instrument(pipe, clock)
    _time_decode(clock)
    seg = [int(x) for x in args.seg_batches.split(",")]
    rec = [int(x) for x in args.rec_batches.split(",")]
    run_config(pipe, clock, pages_dir, seg[0], rec[0], cores)  # warm-up: CUDA context, kernels
    results: list[Result] = []
    skipped = []
    rec_default = 512 if 512 in rec else rec[0]
    for s, r in tqdm(plan(seg, rec, rec_default), desc="configurations", file=sys.stderr):
        if s == -1:  # the recogniser sweep runs at the best segmenter batch so far
            swept = [x for x in results if x.rec_batch == rec_default]
            s = max(swept, key=lambda x: x.pages_per_s).seg_batch if swept else seg[0]
        if any((x.seg_batch, x.rec_batch) == (s, r) for x in results):
            continue
        last = results[-1].seconds if results else 0.0
        if time.perf_counter() - t0 + last > args.budget_s:
            skipped.append((s, r))
            continue
        results.append(run_config(pipe, clock, pages_dir, s, r, cores))
    info = machine_info()
    best = max(results, key=lambda x: x.pages_per_s)
    print(
        f"\nbench-gpu: {info.get('gpu')}, {cores} cores, torch {info['torch']}, commit {info['git commit']}, "
        f"models {pipe.model_version}, {args.pages} synthetic pages (seed {args.seed}) per row, "
        f"decode threads {cores}"
    )
    print(table(results))
    if skipped:
        print(f"(skipped for time: {', '.join(f'seg {s}/rec {r}' for s, r in skipped)})")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": info,
                "gpu_short": gpu_short(info.get("gpu", "")),
                "model_version": pipe.model_version,
                "pages": args.pages,
                "best_pages_per_s": best.pages_per_s,
                "best": {"seg_batch": best.seg_batch, "rec_batch": best.rec_batch},
                "results": [{**asdict(x), "pages_per_s": x.pages_per_s} for x in results],
            },
            indent=1,
        )
    )
    print(
        f"bench-gpu: best {best.pages_per_s:.2f} pages/s at seg batch {best.seg_batch}, rec batch "
        f"{best.rec_batch} ({len(results)} configurations in {time.perf_counter() - t0:.0f} s) -> {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
