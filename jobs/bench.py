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
- Our stage breakdown: the Pipeline times its stages through its clock hook (batch/core/clock.py).
- Memory: `htr run` on a long PDF in a subprocess, its peak RSS against the 2 GiB target.
- Cost per 1000 pages from measured throughput and a small list-price table.

Apps/jobs layer. This module is the command (flags, the order of the runs, the report file); the
parts: bench_stages (stage timing), bench_common (helpers), bench_hosts (the systems, each in its
own process), bench_systems (the head-to-head and the test sets), bench_memory, bench_report
(sections and cost), bench_e2e (the headline), bench_real (the real validation sets).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

# The parts, one module each (their names are importable from here, as before the split):
from batch import options
from batch.core.clock import StageClock  # noqa: F401
from jobs.bench_common import REPO, RssMonitor, decode, git_commit, machine_info, md_table, tree_rss  # noqa: F401
from jobs.bench_hosts import (  # noqa: F401
    HOSTS,
    HtrHost,
    HtrOnnxHost,
    HtrTorchHost,
    PeerLines,
    RapidHost,
    TesseractHost,
    Worker,
    peer_line_crops,
)
from jobs.bench_memory import (  # noqa: F401
    MEMORY_DISTINCT,
    MEMORY_LONG_SIDE,
    MEMORY_TARGET_MB,
    MemoryResult,
    memory_pdf,
    memory_run,
    memory_section,
    repeated_pdf,
)
from jobs.bench_report import (  # noqa: F401
    INSTANCES,
    PRICES_AS_OF,
    TEXTRACT,
    Report,
    cost_rows,
    run_dataset,
    usd_per_1000,
)
from jobs.bench_stages import STAGE_NOTES, STAGES, instrument, stage_rows  # noqa: F401
from jobs.bench_systems import (  # noqa: F401
    TYPED_KEY,
    TYPED_LABEL,
    Dataset,
    Timing,
    dev_set,
    metric_rows,
    our_systems,
    score_systems,
    speed_rows,
    summarise_scores,
    synthetic_set,
    system_scores,
    time_systems,
)

DEV_MANIFEST = REPO.parent / "shared" / "data" / "stanford_memorials" / "manifest.jsonl"
# htr-onnx / htr-torch: our same weights on ONNX Runtime fp32 / eager PyTorch fp32 (before/after references)
SYSTEMS = ("htr-batch", "tesseract", "rapidocr", "htr-onnx", "htr-torch")
PROTOTYPES: tuple[str, ...] = ()  # only when named in --systems


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
    options.add_arguments(p)  # --models, --device, engine and batches; --dpi, --image-side, limits
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
    decoding, predictor = options.from_args(args)
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
        n: Worker(n, threads, args.models, predictor, decoding)
        for n in tqdm(names, desc="starting systems", file=sys.stderr)
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
        res = memory_run(pdf, options.argv(decoding, predictor), threads, args.memory_timeout)
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


if __name__ == "__main__":  # python -m jobs.bench [flags]: the same as `htr bench [flags]`
    parser = argparse.ArgumentParser(prog="htr bench", description=__doc__.split("\n")[0])
    configure(parser)
    sys.exit(main(parser.parse_args()))
