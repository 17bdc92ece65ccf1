"""jobs.bench helpers that decide reported numbers (the benchmark itself is `make bench`, not a test)."""

from __future__ import annotations

import os
import subprocess
import time

import numpy as np
import psutil

from jobs.bench import tree_rss


def test_tree_rss_skips_a_child_that_has_not_exec_d_yet():
    """A forked copy shares the parent's pages; counting its RSS would double the peak."""
    ballast = np.ones(200 << 20 >> 3)  # 200 MiB, touched
    me = psutil.Process()
    pid = os.fork()
    if pid == 0:  # the copy: never execs, just waits
        time.sleep(3)
        os._exit(0)
    try:
        time.sleep(0.3)
        assert psutil.Process(pid).memory_info().rss > 150 << 20  # psutil alone would count it
        assert tree_rss(me) < me.memory_info().rss + (50 << 20)
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    del ballast


def test_tree_rss_counts_a_real_child_process():
    """A child that has exec'd (sleep under sh) counts. The tree is rooted at sh, not at pytest,
    which may have children of its own (multiprocessing's resource tracker after a spawn)."""
    parent = subprocess.Popen(["sh", "-c", "sleep 5 & wait"])
    try:
        time.sleep(0.3)
        sh = psutil.Process(parent.pid)
        (child,) = sh.children()
        assert tree_rss(sh, include_self=False) == child.memory_info().rss > 0
    finally:
        for p in psutil.Process(parent.pid).children():
            p.kill()
        parent.kill()
        parent.wait()
