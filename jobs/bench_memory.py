"""`htr bench` (apps/jobs layer): memory. `htr run` on a long PDF (a few synthetic pages repeated,
each image stored once) in a subprocess, its process tree's peak RSS against the 2 GiB target."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jobs.bench_common import REPO, RssMonitor, md_table

MEMORY_TARGET_MB = 2048
MEMORY_DISTINCT, MEMORY_LONG_SIDE = 4, 2339  # memory-run pages: A4 at 200 dpi


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


def memory_run(pdf: Path, run_args: list[str], threads: int, timeout: float) -> MemoryResult:
    """`htr run PDF OUT [run_args]` in a subprocess; psutil polls its process tree's RSS.
    run_args: htr bench's pipeline and decoding flags (batch.options.argv)."""
    out = Path(tempfile.mkdtemp(prefix="htr-bench-mem-"))
    cmd = [sys.executable, "-m", "batch.cli", "run", str(pdf), str(out), "--no-progress", *run_args]
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
