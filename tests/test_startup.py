"""Start-up (#15 item 2): with the exported ONNX graphs cached, `htr run` never imports torch (about
3 s of a 1-page run on 2 cores), nor do `htr --help` and `htr query`; and the numpy read-outs that
replaced torch's on that path compute what torch computes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import REPO


def imported_torch(stderr: str) -> list[str]:
    """The torch/torchvision modules a `python -X importtime` run's stderr says it imported."""
    names = [ln.rsplit("|", 1)[1].strip() for ln in stderr.splitlines() if ln.startswith("import time:")]
    return [n for n in names if n.split(".")[0] in ("torch", "torchvision")]


def htr(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "batch.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_importtime_parsing_sees_torch(subprocess_env):
    """The check below can fail: a process that imports torch is caught."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import torch.nn"],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "torch" in imported_torch(proc.stderr) and "torch.nn" in imported_torch(proc.stderr)


@pytest.fixture()
def one_page(tmp_path):
    from PIL import Image, ImageDraw

    folder = tmp_path / "in"
    folder.mkdir()
    img = Image.new("RGB", (480, 320), "white")
    draw = ImageDraw.Draw(img)
    for k, text in enumerate(["Dear friend, the letter", "came on the day after", "Yours, Anne"]):
        draw.text((30, 40 + 60 * k), text, fill="black")
    img.save(folder / "page.png")
    return folder


def test_warm_cache_htr_run_never_imports_torch(tiny_line_models, one_page, tmp_path, subprocess_env):
    """First run: exports the graphs (torch) into the cache. Second run, a new output: the same pages
    read from the cached graphs, with the lexicon and the line path, and no torch module loaded."""
    env = dict(subprocess_env, HTR_CACHE_DIR=str(tmp_path / "cache"))
    args = ["run", str(one_page), "", "--models", str(tiny_line_models), "--no-progress", "--device", "cpu"]
    cold = htr([*args[:2], str(tmp_path / "out1"), *args[3:]], env)
    assert cold.returncode == 0, cold.stderr[-2000:]
    assert "torch" in imported_torch(cold.stderr)  # a cache miss exports: torch is needed there
    warm = htr([*args[:2], str(tmp_path / "out2"), *args[3:]], env)
    assert warm.returncode == 0, warm.stderr[-2000:]
    assert "1 documents, 1 pages" in warm.stdout
    assert imported_torch(warm.stderr) == []
    query = htr(["query", str(tmp_path / "out2"), "select count(*) as n from pages"], env)
    assert query.returncode == 0, query.stderr[-2000:]
    assert imported_torch(query.stderr) == []


def test_help_never_imports_torch(subprocess_env):
    for args in (["--help"], ["run", "--help"]):
        proc = htr(args, subprocess_env)
        assert proc.returncode == 0 and imported_torch(proc.stderr) == [], args


def test_pipeline_in_process_stays_off_torch(tiny_line_models, tmp_path, subprocess_env):
    """Pipeline.load + process_pages on the CPU default (ONNX Runtime, warm cache): no torch."""
    env = dict(subprocess_env, HTR_CACHE_DIR=str(tmp_path / "cache"))
    code = f"""
import sys
import numpy as np
from batch.pipeline import Pipeline
page = np.full((200, 300, 3), 255, np.uint8); page[80:100, 40:260] = 0
Pipeline.load({str(tiny_line_models)!r}, "cpu").process_pages([page])
print("torch" in sys.modules, Pipeline.load({str(tiny_line_models)!r}, "cpu").backend)
"""
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True, timeout=300)  # warms
    again = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.split() == ["False", "onnxruntime"]


# ---- the numpy read-outs against torch --------------------------------------------------------------


def _old_greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor | None = None):
    """The torch implementation the numpy one replaced (models/recogniser/crnn.py before #15)."""
    best_lp, best = log_probs.max(-1)
    b, t = best.shape
    n = lengths.clamp(max=t) if lengths is not None else torch.full((b,), t)
    inside = torch.arange(t).unsqueeze(0) < n.unsqueeze(1)
    new = torch.ones_like(best, dtype=torch.bool)
    new[:, 1:] = best[:, 1:] != best[:, :-1]
    emits = (best != 0) & new & inside
    use = torch.where(emits.any(1, keepdim=True), emits, inside)
    lp = best_lp.float()
    mean = (lp * use).sum(1) / use.sum(1).clamp(min=1)
    confs = torch.where(use.any(1), mean.exp(), torch.zeros_like(mean)).tolist()
    rows = best.tolist()
    return [row[:k] for row, k in zip(rows, n.tolist())], confs


def test_greedy_decode_matches_the_torch_version():
    from models.recogniser.ctc import greedy_decode

    g = torch.Generator().manual_seed(3)
    lp = (torch.randn(6, 40, 9, generator=g) * 3).log_softmax(-1)
    lp[:, :, 0] += 1.5  # plenty of blanks and repeats
    lengths = torch.tensor([40, 31, 1, 0, 17, 60])
    for lens in (lengths, None):
        want_seqs, want_confs = _old_greedy_decode(lp, lens)
        got_seqs, got_confs = greedy_decode(lp.numpy(), None if lens is None else lens.numpy())
        assert got_seqs == want_seqs
        np.testing.assert_allclose(got_confs, want_confs, rtol=1e-5)


def test_ctc_likelihoods_match_torch_ctc_loss():
    """Repeated letters (a blank between them is required), targets too long for the frames,
    samples of different lengths in one batch."""
    from models.recogniser.ctc import ctc_log_likelihoods

    g = torch.Generator().manual_seed(7)
    lp = (torch.randn(3, 30, 7, generator=g) * 2).log_softmax(-1)
    lengths = torch.tensor([30, 9, 4])
    targets = [[1, 2, 3], [2, 2, 2, 2], [5], [1, 1], [6, 5, 4, 3, 2, 1, 1], [3, 3, 3], [4, 4], [2, 3, 4, 5]]
    rows = [0, 0, 0, 1, 1, 2, 2, 2]
    got = ctc_log_likelihoods(lp.numpy(), targets, np.array(rows), lengths.numpy())
    for k, (tg, r) in enumerate(zip(targets, rows)):
        n = int(lengths[r])
        ref = -torch.nn.functional.ctc_loss(
            lp[r, :n].unsqueeze(1),
            torch.tensor([tg]),
            torch.tensor([n]),
            torch.tensor([len(tg)]),
            reduction="none",
        ).item()
        if ref == float("-inf") or ref < -1e20:  # impossible: [3,3,3] needs 5 frames, [2,3,4,5] 4 of 4 ok
            assert got[k] == float("-inf"), (tg, got[k])
        else:
            assert abs(got[k] - ref) < 1e-4 * max(1.0, abs(ref)), (tg, got[k], ref)
