"""Training jobs on tiny models: losses fall, checkpoints resume, exports load."""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from jobs import train
from jobs.manifests import Annotation, Sample, write_manifest
from models import checkpoints

WORDS = ["ink", "paper", "letter", "Dear", "1905", "from", "the", "archive", "£12", "notes"]


def _page(rng: np.random.Generator, path: Path) -> Sample:
    """A page of large printed words with exact word boxes: fast to make, easy to learn."""
    font = ImageFont.load_default(size=40)
    im = Image.new("RGB", (640, 640), "white")
    d = ImageDraw.Draw(im)
    anns = []
    for li in range(6):
        x = 20
        for _ in range(3):
            w = WORDS[int(rng.integers(len(WORDS)))]
            x0, y0, x1, y1 = d.textbbox((x, 30 + li * 100), w, font=font)
            d.text((x, 30 + li * 100), w, font=font, fill="black")
            anns.append(Annotation(w, [{"x": x0, "y": y0}, {"x": x1, "y": y0}, {"x": x1, "y": y1},
                                       {"x": x0, "y": y1}], li))
            x = x1 + 40
    im.save(path)
    return Sample(path.name, anns)


@pytest.fixture(scope="module")
def manifest_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(0)
    write_manifest([_page(rng, d / f"p{i}.png") for i in range(4)], d / "manifest.jsonl")
    return d


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    train.configure(p)
    return p.parse_args(argv)


def _losses(out: str) -> list[float]:
    return [float(m) for m in re.findall(r"train_loss=([\d.]+)", out)]


def test_recogniser_loss_falls_and_exports(manifest_dir, tmp_path, capsys):
    args = _args(["recogniser", "--arch", "crnn_tiny", "--train", str(manifest_dir), "--test",
                  str(manifest_dir), "--steps", "60", "--batch-size", "16", "--lr", "3e-3",
                  "--log-every", "10", "--eval-every", "60", "--workers", "0",
                  "--model-dir", str(tmp_path / "rec")])
    assert train.main(args) == 0
    out = capsys.readouterr().out
    losses = _losses(out)
    assert len(losses) == 6
    assert losses[-1] < 0.7 * losses[0], losses
    assert re.search(r"step=60 test_cer=[\d.]+ test_wer=[\d.]+", out)
    model, meta = checkpoints.load(tmp_path / "rec", "recogniser")
    assert meta["arch"] == "crnn_tiny" and meta["train"]["steps"] == 60


def test_segmenter_loss_falls_on_manifest(manifest_dir, tmp_path, capsys):
    args = _args(["segmenter", "--arch", "db_tiny", "--train", str(manifest_dir), "--test",
                  str(manifest_dir), "--steps", "40", "--batch-size", "2", "--crop-size", "256",
                  "--lr", "5e-3", "--log-every", "10", "--eval-every", "40", "--workers", "0",
                  "--model-dir", str(tmp_path / "seg")])
    assert train.main(args) == 0
    out = capsys.readouterr().out
    losses = _losses(out)
    assert losses[-1] < losses[0], losses
    assert re.search(r"step=40 test_precision=[\d.]+ test_recall=[\d.]+ test_f1=[\d.]+", out)
    checkpoints.load(tmp_path / "seg", "segmenter")


def test_checkpoint_resume(manifest_dir, tmp_path, capsys):
    common = ["recogniser", "--arch", "crnn_tiny", "--train", str(manifest_dir), "--test",
              str(manifest_dir), "--batch-size", "8", "--log-every", "5", "--eval-every", "10",
              "--workers", "0", "--model-dir", str(tmp_path / "m"),
              "--checkpoint-dir", str(tmp_path / "ckpt")]
    assert train.main(_args(common + ["--steps", "10"])) == 0
    assert (tmp_path / "ckpt" / "state.pt").is_file()
    capsys.readouterr()
    assert train.main(_args(common + ["--steps", "15"])) == 0
    out = capsys.readouterr().out
    assert "at step 10" in out                      # resumed, not restarted
    steps = [int(s) for s in re.findall(r"^step=(\d+) train_loss", out, re.M)]
    assert steps == [15]                            # only the remaining steps ran
    done = json.loads(out.strip().splitlines()[-1].split(" ", 2)[2].rsplit(" -> ", 1)[0])
    assert done["step"] == 15


def test_db_loss_is_lower_for_the_right_answer():
    import torch

    from models.segmenter.targets import make_targets

    quad = np.array([[20, 20], [100, 20], [100, 50], [20, 50]], np.float32)
    t = {k: torch.from_numpy(v)[None] for k, v in make_targets(64, 128, [quad]).items()}
    right = t["gt"].clone()[:, None]

    def out(p):
        logits = torch.logit(p.clamp(1e-4, 1 - 1e-4))
        return {"prob_logits": logits, "prob": p, "thresh": t["thresh"][:, None],
                "binary": p}

    good = train.db_loss(out(right), t)
    bad = train.db_loss(out(1 - right), t)
    assert float(good) < float(bad)


def test_init_keeps_the_init_models_arch_and_weights(manifest_dir, tmp_path, capsys):
    """Fine-tuning without --arch trains the --init model's own arch, starting from all its tensors."""
    base = ["recogniser", "--train", str(manifest_dir), "--test", str(manifest_dir), "--batch-size", "8",
            "--log-every", "5", "--eval-every", "5", "--workers", "0", "--steps", "5"]
    assert train.main(_args(base + ["--arch", "crnn_tiny", "--model-dir", str(tmp_path / "a")])) == 0
    capsys.readouterr()
    assert train.main(_args(base + ["--init", str(tmp_path / "a"), "--model-dir", str(tmp_path / "b")])) == 0
    out = capsys.readouterr().out
    _, meta = checkpoints.load(tmp_path / "b", "recogniser")
    assert meta["arch"] == "crnn_tiny"
    n = len(checkpoints.load(tmp_path / "a", "recogniser")[0].state_dict())
    assert f"warm start: {n} of {n} tensors copied" in out
