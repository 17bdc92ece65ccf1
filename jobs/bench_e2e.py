"""`htr bench`'s headline: `htr run IN OUT` end to end, timed as a user runs it, against Tesseract and
RapidOCR run as commands on the same files, in the same run.

- htr run: the real command in a fresh process (`python -m batch.cli run IN OUT --no-progress`):
  start-up, decoding, models, Parquet/JSON and the commit are all inside its wall clock. Its own
  summary line ("... in X s (Y pages/s)", timed from after model loading to the last commit) gives
  the steady-state pages/s; the 1-page set's wall clock is its start-up as a user sees it.
- Tesseract: `tesseract IMG OUT --psm 3` per page image, OMP_THREAD_LIMIT=1, 2 at a time (like
  `xargs -P 2`).
- RapidOCR: 2 worker processes (`python -m jobs.bench_e2e --rapidocr-worker`, onnxruntime 1 thread
  each), started inside the timed region, each reading page files and writing JSON results.
- Peers and PDFs: a PDF is rasterised with `pdftoppm -r 200` (as `htr run` does, 200 dpi) by whichever
  lane takes it, inside the peer's time, and its pages go back on the shared queue; the lanes pull
  files from one queue, so a long PDF does not leave a lane idle at the end.
- Sets: 1 page; 24 pages (the dev letters when `../shared/data/stanford_memorials` exists, else 24
  synthetic pages); a mixed set of `--e2e-pages` pages (synthetic engine, fixed seed) as multi-page
  PDFs and JPEG/PNG/TIFF files. Every system runs on the same folder; the order of the systems is
  rotated from set to set so machine noise hits all alike; one untimed warm-up per system first
  (fills the OS file cache and the ONNX export cache as any second run would find them).

Apps/jobs layer (the top: may import anything below it); part of `htr bench` (jobs/bench.py).
"""

from __future__ import annotations

import io
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LANES = 2  # peers: 2 single-threaded processes (the machine has 2 cores)
PDF_DPI = 200  # htr run's default --dpi
MIXED_DISTINCT = 50  # rendered pages behind the mixed set; the rest are rescaled variants
STARTUP_TARGET_S, WALL_TARGET, STEADY_TARGET = 3.0, 3.0, 5.0  # issue #15: s, × Tesseract, × Tesseract
SUMMARY = re.compile(r"(\d+) pages.* in ([\d.]+) s \(([\d.]+) pages/s\)")
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".pdf"}


# ---- results -------------------------------------------------------------------------------------


@dataclass
class PageSet:
    name: str
    folder: Path
    pages: int
    note: str
    repeats: int = 1  # timed runs per system; the median wall clock is reported


@dataclass
class Timed:
    system: str
    pages: int = 0
    seconds: float = 0.0
    steady_pps: float | None = None  # htr run's own summary
    error: str | None = None

    @property
    def pages_per_s(self) -> float:
        return self.pages / self.seconds if self.seconds else 0.0


@dataclass
class E2eRun:
    sets: list[PageSet]
    results: dict[str, dict[str, Timed]] = field(default_factory=dict)  # set name -> system -> Timed
    skipped: dict[str, str] = field(default_factory=dict)  # system -> why


# ---- the systems, each run as a command ----------------------------------------------------------


@dataclass
class Env:
    """How to start the commands: htr's argv prefix, extra `htr run` arguments, environment, timeout."""

    htr: list[str] = field(default_factory=lambda: [sys.executable, "-m", "batch.cli"])
    run_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    timeout: float = 3600.0


def time_htr_run(folder: Path, env: Env) -> Timed:
    """Wall clock of `htr run folder OUT` in a fresh process, outputs in a throw-away folder."""
    out = Path(tempfile.mkdtemp(prefix="htr-e2e-out-"))
    cmd = [*env.htr, "run", str(folder), str(out / "out"), "--no-progress", *env.run_args]
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env.env, capture_output=True, text=True, timeout=env.timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return Timed("htr run", error=f"timed out after {env.timeout:.0f} s")
    finally:
        seconds = time.perf_counter() - t
        shutil.rmtree(out, ignore_errors=True)
    text = proc.stdout + proc.stderr
    m = SUMMARY.search(next((ln for ln in text.splitlines()[::-1] if ln.startswith("htr run:")), ""))
    if proc.returncode != 0 or m is None:
        return Timed("htr run", seconds=seconds, error=f"exit {proc.returncode}: {text.strip()[-300:]}")
    return Timed("htr run", int(m[1]), seconds, float(m[3]))


def rasterise_pdf(pdf: Path, tmp: Path) -> list[Path]:
    """`pdftoppm -r 200` into PPM files (no encoding cost), one per page, in page order."""
    dest = Path(tempfile.mkdtemp(prefix=pdf.stem + "-", dir=tmp))
    subprocess.run(
        ["pdftoppm", "-r", str(PDF_DPI), str(pdf), str(dest / "p")], check=True, capture_output=True
    )
    return sorted(dest.glob("p*.ppm"))


def run_lanes(files: list[Path], readers: list[Callable[[Path], None]], tmp: Path) -> int:
    """Read every page of `files` with one thread per reader (each drives one OCR process), all
    pulling from one queue; the lane that takes a PDF rasterises it and queues its pages. Returns
    the pages read; the first error stops all lanes and is raised."""
    q: queue.Queue[Path] = queue.Queue()
    for f in files:
        q.put(f)
    state = {"pending": len(files), "pages": 0}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def lane(read: Callable[[Path], None]) -> None:
        while not errors:
            with lock:
                if state["pending"] == 0:
                    return
            try:
                item = q.get(timeout=0.02)
            except queue.Empty:
                continue
            try:
                pages = rasterise_pdf(item, tmp) if item.suffix.lower() == ".pdf" else None
                for p in pages or ():
                    q.put(p)
                if pages is None:
                    read(item)
                with lock:  # the PDF's pages replace it in the count; a page is done
                    state["pending"] += len(pages) - 1 if pages is not None else -1
                    state["pages"] += 0 if pages is not None else 1
            except Exception as e:  # noqa: BLE001 - reported as this system's error
                errors.append(e)

    threads = [threading.Thread(target=lane, args=(r,), daemon=True) for r in readers]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    return state["pages"]


def tesseract_reader(out: Path) -> Callable[[Path], None]:
    """`tesseract IMG OUTBASE --psm 3` (text output), one single-threaded process per page."""
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    counter = iter(range(1 << 30))

    def read(image: Path) -> None:
        base = out / f"{next(counter):06d}-{image.stem}"
        subprocess.run(
            ["tesseract", str(image), str(base), "--psm", "3"], env=env, check=True, capture_output=True
        )

    return read


class RapidProcess:
    """One RapidOCR worker process (see rapidocr_worker): a page path in on stdin, "@@ok" or
    "@@error ..." back on stdout when its JSON result is written; its stderr goes to a file."""

    def __init__(self, out: Path, env: dict[str, str], k: int):
        self.err = out / f"rapidocr-{k}.stderr"
        with open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jobs.bench_e2e", "--rapidocr-worker", str(out)],
                cwd=REPO,
                env={**env, "OMP_NUM_THREADS": "1"},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                bufsize=1,
            )

    def __call__(self, image: Path) -> None:
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None  # both PIPE
        stdin.write(f"{image}\n")
        stdin.flush()
        for line in stdout:  # skip anything the library prints on stdout
            if line.startswith("@@ok"):
                return
            if line.startswith("@@error"):
                raise RuntimeError(f"rapidocr: {line[7:].strip()}")
        tail = self.err.read_text(errors="replace").strip()[-300:]
        raise RuntimeError(f"rapidocr worker exited ({self.proc.wait()}): {tail}")

    def close(self) -> None:
        """End of input: the worker exits once its last page is done."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def rapidocr_worker(out: Path) -> None:
    """The RapidOCR command line process: shipped models, onnxruntime 1 thread; for each page path
    on stdin, its boxes/text/scores as JSON in `out`."""
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1)
    for k, line in enumerate(sys.stdin):
        path = line.strip()
        try:
            result, _ = engine(path)
            rows = [
                [[list(map(float, p)) for p in box], text, float(score)] for box, text, score in result or []
            ]
            (out / f"{os.getpid()}-{k:06d}.json").write_text(json.dumps({"source": path, "lines": rows}))
            print("@@ok", flush=True)
        except Exception as e:  # noqa: BLE001 - the parent reports it
            print(f"@@error {type(e).__name__}: {e}".replace("\n", " "), flush=True)


def time_peer(system: str, folder: Path, env: Env) -> Timed:
    """Wall clock of one peer over every file of `folder` on LANES lanes, process start-up included."""
    tmp = Path(tempfile.mkdtemp(prefix=f"htr-e2e-{system}-"))
    rapid: list[RapidProcess] = []
    t = time.perf_counter()
    try:
        if system == "tesseract":
            readers = [tesseract_reader(tmp)] * LANES
        else:
            rapid = [RapidProcess(tmp, env.env, k) for k in range(LANES)]
            readers = list(rapid)
        pages = run_lanes(input_files(folder), readers, tmp)
        for r in rapid:
            r.close()
        return Timed(system, pages, time.perf_counter() - t)
    except Exception as e:  # noqa: BLE001 - one system failing must not lose the others' numbers
        return Timed(system, seconds=time.perf_counter() - t, error=f"{type(e).__name__}: {e}"[:300])
    finally:
        for r in rapid:
            if r.proc.poll() is None:
                r.proc.kill()
                r.proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def time_system(system: str, folder: Path, env: Env) -> Timed:
    return time_htr_run(folder, env) if system == "htr run" else time_peer(system, folder, env)


def available_systems() -> tuple[list[str], dict[str, str]]:
    """Systems that can run here, and why the others cannot."""
    from jobs.peers import rapidocr_available, tesseract_available

    why = {"tesseract": tesseract_available(), "rapidocr": rapidocr_available()}
    if shutil.which("pdftoppm") is None:  # both peers need it for PDFs
        why = {k: v or "pdftoppm (poppler-utils) is not installed" for k, v in why.items()}
    return ["htr run"] + [k for k, v in why.items() if not v], {k: v for k, v in why.items() if v}


# ---- the page sets -------------------------------------------------------------------------------


def input_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXT)


def one_page_set(source: Path, work: Path, repeats: int) -> PageSet:
    folder = work / "e2e-1-page"
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / source.name
    if not dest.exists():
        shutil.copyfile(source, dest)
    return PageSet("1 page", folder, 1, f"one page ({source.name}): start-up dominates", repeats)


def dev_page_set(manifest: Path, work: Path) -> PageSet:
    """The dev letters' images (manifest `source-ref`s), copied into a folder of their own."""
    folder = work / "e2e-dev"
    folder.mkdir(parents=True, exist_ok=True)
    refs = [json.loads(ln)["source-ref"] for ln in manifest.read_text().splitlines() if ln.strip()]
    for ref in refs:
        if not (folder / Path(ref).name).exists():
            shutil.copyfile(manifest.parent / ref, folder / Path(ref).name)
    return PageSet(
        f"{len(refs)} dev letters",
        folder,
        len(refs),
        f"the real 1905 letters of {manifest.parent.name} (JPEG)",
    )


def synthetic_page_set(n: int, seed: int, work: Path) -> PageSet:
    """n synthetic JPEG pages (the in-process bench's synthetic set, shared when the sizes match)."""
    from transforms.synth import write_pages

    root = work / f"synthetic-{seed}"
    manifest = root / "manifest.jsonl"
    if not manifest.is_file() or len(manifest.read_text().splitlines()) != n:
        write_pages(n, root, seed)
    return PageSet(f"{n} synthetic pages", root / "pages", n, f"synthetic pages, seed {seed} (JPEG)")


def _variant(page, i: int, seed: int):
    """Page i of the mixed set: a rendered page, or past the rendered ones a rescaled copy of one
    (other pixels and bytes, the same kind of content)."""
    import numpy as np
    from PIL import Image

    f = float(np.random.default_rng([seed, 61_000, i]).uniform(0.85, 1.0))
    return page.resize((round(page.width * f), round(page.height * f)), Image.Resampling.LANCZOS)


def _save_image(img, path: Path, quality: int) -> None:
    formats: dict[str, tuple[str, dict[str, Any]]] = {
        ".jpg": ("JPEG", {"quality": quality}),
        ".png": ("PNG", {}),
        ".tif": ("TIFF", {"compression": "tiff_lzw"}),
    }
    name, options = formats[path.suffix]
    img.save(path, name, **options)


def mixed_page_set(n: int, seed: int, work: Path, distinct: int = MIXED_DISTINCT) -> PageSet:
    """About n pages as documents: ~15 % multi-page PDFs (2-12 pages, each page its own JPEG image
    at 200 dpi), the rest single JPEG, PNG and LZW TIFF files. `distinct` pages are rendered by the
    synthetic engine; the others are rescaled variants of them. Same seed, same files."""
    import numpy as np

    from jobs.bench_memory import repeated_pdf
    from transforms.synth import render_page

    folder = work / f"e2e-mixed-{n}-{seed}-{distinct}"
    done = folder.with_name(folder.name + ".complete")  # outside the folder: htr run lists all of it
    rng = np.random.default_rng([seed, 60_000])
    if not done.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        from tqdm import tqdm

        bases = [
            render_page(np.random.default_rng([seed, 62_000 + i]))[0].convert("RGB")
            for i in tqdm(range(min(n, distinct)), desc="mixed set: rendering", file=sys.stderr)
        ]
        i = doc = 0
        while i < n:
            kind = str(rng.choice(["pdf", "jpg", "png", "tif"], p=[0.15, 0.4, 0.2, 0.25]))
            count = min(n - i, int(rng.integers(2, 13))) if kind == "pdf" else 1
            kind = "jpg" if count == 1 and kind == "pdf" else kind  # the set's last page
            pages = [
                _variant(bases[(i + k) % len(bases)], i + k, seed) if i + k >= len(bases) else bases[i + k]
                for k in range(count)
            ]
            quality = int(rng.integers(70, 96))
            if kind == "pdf":
                jpegs = []
                for p in pages:
                    buf = io.BytesIO()
                    p.save(buf, "JPEG", quality=quality)
                    jpegs.append((buf.getvalue(), p.width, p.height))
                repeated_pdf(jpegs, count, folder / f"doc_{doc:04d}.pdf", dpi=PDF_DPI)
            else:
                _save_image(pages[0], folder / f"doc_{doc:04d}.{kind}", quality)
            i, doc = i + count, doc + 1
        done.write_text(json.dumps({"pages": n, "documents": doc}))
    docs = input_files(folder)
    by_kind = {k: sum(p.suffix == f".{k}" for p in docs) for k in ("pdf", "jpg", "png", "tif")}
    kinds = ", ".join(
        f"{v} {k.upper()}" + (" (2-12 pages each)" if k == "pdf" else "") for k, v in by_kind.items() if v
    )
    return PageSet(
        f"{n} mixed pages",
        folder,
        n,
        f"{len(docs)} documents ({kinds}), synthetic, seed {seed}; "
        f"{min(n, distinct)} rendered pages, the rest rescaled variants of them",
    )


# ---- the run and its report ---------------------------------------------------------------------


def run_e2e(sets: list[PageSet], env: Env, warm: bool = True, log: Callable[[str], None] = print) -> E2eRun:
    """Every available system on every set, order rotated per set; median of `repeats` runs."""
    systems, skipped = available_systems()
    for name, why in skipped.items():
        log(f"htr bench e2e: skipping {name}: {why}")
    run = E2eRun(sets, skipped=skipped)
    if warm and sets:  # untimed: file cache, ONNX export cache, Python bytecode
        for s in systems:
            time_system(s, sets[0].folder, env)
    for k, ps in enumerate(sets):
        order = systems[k % len(systems) :] + systems[: k % len(systems)]
        tries: dict[str, list[Timed]] = {s: [] for s in systems}
        for _ in range(ps.repeats):
            for s in order:
                tries[s].append(time_system(s, ps.folder, env))
                r = tries[s][-1]
                log(f"htr bench e2e: {ps.name}: {s}: " + (r.error or f"{r.pages} pages in {r.seconds:.1f} s"))
        run.results[ps.name] = {s: _median(tries[s]) for s in systems}
    return run


def _median(tries: list[Timed]) -> Timed:
    """The run with the median wall clock (the upper one of an even count); a failure only if all failed."""
    ok = sorted((t for t in tries if not t.error), key=lambda t: t.seconds)
    return ok[len(ok) // 2] if ok else tries[-1]


def table_rows(run: E2eRun) -> list[list[str]]:
    """One row per (set, system): pages, wall s, pages/s, speed against Tesseract's wall clock,
    htr run's steady-state pages/s."""
    rows = []
    for ps in run.sets:
        res = run.results.get(ps.name, {})
        tess = res.get("tesseract")
        for system, r in res.items():
            if r.error:
                rows.append([ps.name, system, "-", "-", "-", "-", "-", f"failed: {r.error}"])
                continue
            ratio = f"{tess.seconds / r.seconds:.2f}×" if tess and not tess.error and r.seconds else "-"
            steady = f"{r.steady_pps:.2f}" if r.steady_pps is not None else "-"
            note = "" if r.pages == ps.pages else f"{ps.pages} pages expected"
            rows.append(
                [
                    ps.name,
                    system,
                    str(r.pages),
                    f"{r.seconds:.1f}",
                    f"{r.pages_per_s:.2f}",
                    ratio,
                    steady,
                    note,
                ]
            )
    return rows


def target_rows(run: E2eRun) -> list[list[str]]:
    """Issue #15's targets against this run's numbers (reported, never asserted)."""
    rows = []

    def add(what: str, value: float | None, target: float, higher: bool = True) -> None:
        if value is None:
            rows.append([what, "-", f"{'≥' if higher else '≤'} {target:g}", "not measured"])
            return
        met = value >= target if higher else value <= target
        rows.append(
            [what, f"{value:.2f}", f"{'≥' if higher else '≤'} {target:g}", "met" if met else "NOT met"]
        )

    for ps in run.sets:
        res = run.results.get(ps.name, {})
        h, t = res.get("htr run"), res.get("tesseract")
        if h is not None and h.error:
            h = None  # failed: nothing measured
        if ps.pages == 1:
            add(
                "start-up: 1-page `htr run` wall (s)",
                h.seconds if h is not None else None,
                STARTUP_TARGET_S,
                higher=False,
            )
            continue
        ratio = t.seconds / h.seconds if h is not None and t is not None and not t.error else None
        add(f"{ps.name}: Tesseract wall ÷ `htr run` wall", ratio, WALL_TARGET)
        if h is not None and h.steady_pps and t is not None and not t.error:
            add(
                f"{ps.name}: steady state (htr run's own pages/s) ÷ Tesseract's pages/s",
                h.steady_pps / t.pages_per_s,
                STEADY_TARGET,
            )
    return rows


def section(run: E2eRun) -> list[str]:
    from jobs.bench_common import md_table

    head = [
        "set",
        "system",
        "pages",
        "wall (s)",
        "pages/s",
        "speed vs Tesseract (its wall ÷ this wall)",
        "steady-state pages/s (htr run's summary)",
        "note",
    ]
    lines = [
        "## Headline: `htr run` end to end against Tesseract and RapidOCR",
        "",
        "Wall clock of each system's whole command on the same folder, in the same run, as a user "
        "runs it. `htr run IN OUT` in a fresh process (start-up, page decoding, models, Parquet + "
        "JSON, the commit); Tesseract as `tesseract IMG OUT --psm 3` per page, 2 single-threaded "
        f"processes at a time (OMP_THREAD_LIMIT=1, like `xargs -P {LANES}`); RapidOCR as "
        f"{LANES} worker processes (shipped PP-OCRv4 models, onnxruntime 1 thread each), their "
        "start-up timed. The peers' PDFs are rasterised with `pdftoppm -r 200` inside their time "
        "(`htr run` rasterises at 200 dpi too); the peers' lanes pull pages from one queue. One "
        "untimed warm-up run per system first; systems take turns, order rotated per set; "
        "the 1-page set is timed several times (median).",
        "",
        md_table(head, table_rows(run)),
        "",
    ]
    lines += [
        f"- {ps.name}: {ps.note}" + (f"; median of {ps.repeats} runs" if ps.repeats > 1 else "")
        for ps in run.sets
    ]
    lines += [f"- {name} not run: {why}" for name, why in run.skipped.items()]
    lines += [
        "",
        "Issue #15's targets (this run's numbers; not asserted by tests):",
        "",
        md_table(["target", "measured", "goal", ""], target_rows(run)),
        "",
    ]
    return lines


# ---- `htr bench` wiring ---------------------------------------------------------------------------


def configure_e2e(p) -> None:
    p.add_argument("--no-e2e", action="store_true", help="skip the end-to-end `htr run` headline")
    p.add_argument(
        "--e2e-pages",
        type=int,
        default=200,
        help="pages in the end-to-end mixed set of PDFs and images (0: no mixed set)",
    )
    p.add_argument(
        "--e2e-distinct",
        type=int,
        default=MIXED_DISTINCT,
        help="pages of the mixed set rendered by the synthetic engine (the rest are rescaled copies)",
    )
    p.add_argument(
        "--e2e-repeat", type=int, default=3, help="timed runs per system on the 1-page set (median)"
    )
    p.add_argument(
        "--e2e-timeout", type=float, default=3600, help="seconds before one system's run is stopped"
    )


def e2e_sets(args, work: Path, dev_manifest: Path | None) -> list[PageSet]:
    """1 page, 24 pages (dev letters or synthetic) and the mixed set, from `htr bench` arguments."""
    mid = (
        dev_page_set(dev_manifest, work)
        if dev_manifest is not None and dev_manifest.is_file()
        else synthetic_page_set(24, args.seed, work)
    )
    sets = [one_page_set(input_files(mid.folder)[0], work, max(1, args.e2e_repeat)), mid]
    if args.e2e_pages > 0:
        sets.append(mixed_page_set(args.e2e_pages, args.seed, work, args.e2e_distinct))
    return sets


def bench_e2e(args, work: Path, dev_manifest: Path | None) -> list[str]:
    """The headline section of BENCHMARKS.md."""
    from batch import options

    env = Env(run_args=options.argv(*options.from_args(args)), timeout=args.e2e_timeout)
    run = run_e2e(e2e_sets(args, work, dev_manifest), env, log=lambda s: print(s, file=sys.stderr))
    return section(run)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--rapidocr-worker":
        rapidocr_worker(Path(sys.argv[2]))
    else:
        sys.exit("usage: python -m jobs.bench_e2e --rapidocr-worker OUT_DIR")
