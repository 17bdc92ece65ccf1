"""`htr bench` (apps/jobs layer): small helpers shared by its parts: the first page of a file,
process-tree RSS and its monitor, Markdown tables, the machine and commit the report names."""

from __future__ import annotations

import os
import platform
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def decode(uri: str, image_side: int | None = None, dpi: int = 200, limits: Any = None) -> np.ndarray:
    """The first page of the file, as jobs.evaluate sees it (image_side, dpi, limits: as `htr run`
    decodes it; limits None: the defaults)."""
    from batch import storage
    from transforms.rasterise import DEFAULT_LIMITS, iter_pages

    return next(iter_pages(storage.read_bytes(uri), dpi, limits or DEFAULT_LIMITS, image_side=image_side))


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
