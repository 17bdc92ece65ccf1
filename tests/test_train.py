"""Training jobs on tiny models: losses fall, checkpoints resume, exports load."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from batch.core.manifest import Annotation, Sample
from jobs import train
from jobs.manifests import write_manifest
from models import checkpoints

WORDS = ["ink", "paper", "letter", "Dear", "1905", "from", "the", "archive", "£12", "notes"]


def _page(rng: np.random.Generator, path: Path) -> Sample:
    """A page of large printed words with exact word boxes: fast to make, easy to learn."""
    font = ImageFont.load_default(size=40)
    im = Image.new("RGB", (640, 640), "white")
    d = ImageDraw.Draw(im)
    anns = []
    for li in range(6):
        x: float = 20
        for _ in range(3):
            w = WORDS[int(rng.integers(len(WORDS)))]
            x0, y0, x1, y1 = d.textbbox((x, 30 + li * 100), w, font=font)
            d.text((x, 30 + li * 100), w, font=font, fill="black")
            anns.append(
                Annotation(
                    w, [{"x": x0, "y": y0}, {"x": x1, "y": y0}, {"x": x1, "y": y1}, {"x": x0, "y": y1}], li
                )
            )
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
    args = _args(
        [
            "recogniser",
            "--arch",
            "crnn_tiny",
            "--train",
            str(manifest_dir),
            "--test",
            str(manifest_dir),
            "--steps",
            "60",
            "--batch-size",
            "16",
            "--lr",
            "3e-3",
            "--log-every",
            "10",
            "--eval-every",
            "60",
            "--workers",
            "0",
            "--model-dir",
            str(tmp_path / "rec"),
        ]
    )
    assert train.main(args) == 0
    out = capsys.readouterr().out
    losses = _losses(out)
    assert len(losses) == 6
    assert losses[-1] < 0.7 * losses[0], losses
    assert re.search(r"step=60 test_cer=[\d.]+ test_wer=[\d.]+", out)
    model, meta = checkpoints.load(tmp_path / "rec", "recogniser")
    assert meta["arch"] == "crnn_tiny" and meta["train"]["steps"] == 60


def test_segmenter_loss_falls_on_manifest(manifest_dir, tmp_path, capsys):
    args = _args(
        [
            "segmenter",
            "--arch",
            "db_tiny",
            "--train",
            str(manifest_dir),
            "--test",
            str(manifest_dir),
            "--steps",
            "40",
            "--batch-size",
            "2",
            "--crop-size",
            "256",
            "--lr",
            "5e-3",
            "--log-every",
            "10",
            "--eval-every",
            "40",
            "--workers",
            "0",
            "--model-dir",
            str(tmp_path / "seg"),
        ]
    )
    assert train.main(args) == 0
    out = capsys.readouterr().out
    losses = _losses(out)
    assert losses[-1] < losses[0], losses
    assert re.search(r"step=40 test_precision=[\d.]+ test_recall=[\d.]+ test_f1=[\d.]+", out)
    checkpoints.load(tmp_path / "seg", "segmenter")


def test_checkpoint_resume(manifest_dir, tmp_path, capsys):
    common = [
        "recogniser",
        "--arch",
        "crnn_tiny",
        "--train",
        str(manifest_dir),
        "--test",
        str(manifest_dir),
        "--batch-size",
        "8",
        "--log-every",
        "5",
        "--eval-every",
        "10",
        "--workers",
        "0",
        "--model-dir",
        str(tmp_path / "m"),
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
    ]
    assert train.main(_args(common + ["--steps", "10"])) == 0
    assert (tmp_path / "ckpt" / "state.pt").is_file()
    capsys.readouterr()
    assert train.main(_args(common + ["--steps", "15"])) == 0
    out = capsys.readouterr().out
    assert "at step 10" in out  # resumed, not restarted
    steps = [int(s) for s in re.findall(r"^step=(\d+) train_loss", out, re.M)]
    assert steps == [15]  # only the remaining steps ran
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
        return {"prob_logits": logits, "prob": p, "thresh": t["thresh"][:, None], "binary": p}

    good = train.db_loss(out(right), t)
    bad = train.db_loss(out(1 - right), t)
    assert float(good) < float(bad)


def test_init_keeps_the_init_models_arch_and_weights(manifest_dir, tmp_path, capsys):
    """Fine-tuning without --arch trains the --init model's own arch, starting from all its tensors."""
    base = [
        "recogniser",
        "--train",
        str(manifest_dir),
        "--test",
        str(manifest_dir),
        "--batch-size",
        "8",
        "--log-every",
        "5",
        "--eval-every",
        "5",
        "--workers",
        "0",
        "--steps",
        "5",
    ]
    assert train.main(_args(base + ["--arch", "crnn_tiny", "--model-dir", str(tmp_path / "a")])) == 0
    capsys.readouterr()
    assert train.main(_args(base + ["--init", str(tmp_path / "a"), "--model-dir", str(tmp_path / "b")])) == 0
    out = capsys.readouterr().out
    _, meta = checkpoints.load(tmp_path / "b", "recogniser")
    assert meta["arch"] == "crnn_tiny"
    n = len(checkpoints.load(tmp_path / "a", "recogniser")[0].state_dict())
    assert f"warm start: {n} of {n} tensors copied" in out


def test_resumed_job_ends_with_the_best_model(manifest_dir, tmp_path, capsys, monkeypatch):
    """A spot restart: new instance, empty SM_MODEL_DIR, same checkpoint dir. The best model
    (step 5 here: its CER is the lowest) must come back from the checkpoint, not stay lost."""
    cers = iter([0.2, 0.5, 0.6])  # evaluations at steps 5, 10 and 15: the first is the best
    monkeypatch.setattr(train, "evaluate_recogniser", lambda *a, **k: (next(cers), 1.0))
    common = [
        "recogniser",
        "--arch",
        "crnn_tiny",
        "--train",
        str(manifest_dir),
        "--test",
        str(manifest_dir),
        "--batch-size",
        "8",
        "--log-every",
        "5",
        "--eval-every",
        "5",
        "--workers",
        "0",
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
    ]
    assert train.main(_args(common + ["--steps", "10", "--model-dir", str(tmp_path / "first")])) == 0
    best_weights = (tmp_path / "first" / "recogniser.safetensors").read_bytes()
    assert checkpoints.read_meta(tmp_path / "first", "recogniser")["train"]["steps"] == 5
    capsys.readouterr()
    # interrupted after step 10; the restarted job has a fresh, empty model dir
    assert train.main(_args(common + ["--steps", "15", "--model-dir", str(tmp_path / "second")])) == 0
    assert "at step 10" in capsys.readouterr().out
    assert (tmp_path / "second" / "recogniser.safetensors").read_bytes() == best_weights
    meta = checkpoints.read_meta(tmp_path / "second", "recogniser")
    assert meta["train"]["steps"] == 5 and meta["train"]["metrics"]["test_cer"] == 0.2


def test_killed_job_resumes_from_its_checkpoint(manifest_dir, tmp_path, subprocess_env):
    """A real kill -9 mid-run (as a spot interruption), then the same command again."""
    import signal
    import subprocess
    import sys

    argv = [
        sys.executable,
        "jobs/train.py",
        "--model",
        "recogniser",
        "--arch",
        "crnn_tiny",
        "--train",
        str(manifest_dir),
        "--test",
        str(manifest_dir),
        "--batch-size",
        "4",
        "--steps",
        "400",
        "--log-every",
        "2",
        "--eval-every",
        "2",
        "--eval-size",
        "4",
        "--workers",
        "0",
        "--threads",
        "1",
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
    ]
    state = tmp_path / "ckpt" / "state.pt"
    proc = subprocess.Popen(
        argv + ["--model-dir", str(tmp_path / "a")],
        cwd=train.Path(__file__).parents[1],
        env=subprocess_env,
        stdout=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:  # the first evaluation has saved its state: interrupt now
        if line.startswith("step=2 test_cer") and _wait_for(state):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = subprocess.run(
        argv[: argv.index("--steps") + 1]
        + ["8"]
        + argv[argv.index("--steps") + 2 :]
        + ["--model-dir", str(tmp_path / "b")],
        cwd=train.Path(__file__).parents[1],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"resumed from .* at step \d+", done.stdout)
    checkpoints.load(tmp_path / "b", "recogniser")


def _wait_for(path: Path) -> bool:
    import time

    while not path.is_file():
        time.sleep(0.05)
    return True


def test_torchrun_two_ranks_one_model(tmp_path, subprocess_env):
    """torch_distributed on the CPU: 2 processes (gloo), each on its own data, weights kept in
    sync by DDP, one model written (by rank 0)."""
    import subprocess
    import sys

    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "jobs/train.py",
        "--model",
        "recogniser",
        "--arch",
        "crnn_tiny",
        "--synthetic",
        "--steps",
        "4",
        "--batch-size",
        "4",
        "--log-every",
        "2",
        "--eval-every",
        "4",
        "--eval-size",
        "8",
        "--workers",
        "0",
        "--threads",
        "1",
        "--model-dir",
        str(tmp_path / "model"),
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
    ]
    # each rank's stdout to its own file: on one shared pipe the ranks' lines can interleave
    argv[3:3] = ["--log-dir", str(tmp_path / "logs"), "--redirects", "1"]
    import torch

    gpus = torch.cuda.device_count() >= 2  # one process per GPU (NCCL) there; else gloo on the CPU
    if not gpus:
        argv += ["--device", "cpu"]  # a 1-GPU machine: rank 1 has no cuda:1 of its own
    proc = subprocess.run(
        argv,
        cwd=train.Path(__file__).parents[1],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = sorted((tmp_path / "logs").rglob("stdout.log"))
    assert len(logs) == 2, logs
    out = "".join(p.read_text() for p in logs)
    assert {int(r) for r in re.findall(r"^rank=(\d) world=2 ", out, re.M)} == {0, 1}
    devices = dict(re.findall(r"^rank=(\d) world=2 local_rank=\d device=(\S+)$", out, re.M))
    assert devices == ({"0": "cuda:0", "1": "cuda:1"} if gpus else {"0": "cpu", "1": "cpu"})
    digests = dict(re.findall(r"^rank=(\d) weights=(\w+)$", out, re.M))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"]  # in sync
    assert len(re.findall(r"^step=4 test_cer", out, re.M)) == 1  # rank 0 evaluates
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "recogniser.json",
        "recogniser.safetensors",
    ]
    checkpoints.load(tmp_path / "model", "recogniser")


def test_manifest_crops_are_split_between_ranks(manifest_dir):
    """Under torchrun each rank trains on its own share of the labelled crops: together the two
    ranks see every crop of an epoch once, and a new epoch reshuffles them for both."""
    from jobs import datasets as ds
    from models.charset import Codec

    data = ds.ManifestCrops(manifest_dir, 512, Codec(), jitter=False)
    n = len(data)
    assert n >= 8

    def epoch(rank: int, number: int) -> list[int]:
        loader, sampler = train._crop_loader(data, 0, 4, 0, train.Dist(rank, 2, rank))
        assert sampler is not None and loader.sampler is sampler
        sampler.set_epoch(number)
        return list(loader.sampler)

    first = [epoch(r, 0) for r in (0, 1)]
    assert set(first[0]) | set(first[1]) == set(range(n))
    assert len(first[0]) == len(first[1]) == -(-n // 2)
    assert len(set(first[0]) & set(first[1])) == n % 2  # an odd count repeats one item to even up
    assert [epoch(r, 1) for r in (0, 1)] != first  # set_epoch reshuffles
    loader, sampler = train._crop_loader(data, 0, 4, 0, train.Dist())
    assert sampler is None and len(list(loader.sampler)) == n  # one process: all of it


def test_init_from_a_training_output(tmp_path):
    """--init as SageMaker hands it over: an `init` channel folder holding a model.tar.gz."""
    import tarfile

    from models.checkpoints import make_tiny_models

    models = make_tiny_models(tmp_path / "tiny")
    channel = tmp_path / "input" / "data" / "init"
    channel.mkdir(parents=True)
    with tarfile.open(channel / "model.tar.gz", "w:gz") as tar:
        for name in ("recogniser.safetensors", "recogniser.json"):
            tar.add(models / name, arcname=name)
    args = argparse.Namespace(init=str(channel))
    train._resolve_init(args, "recogniser")
    assert (Path(args.init) / "recogniser.safetensors").read_bytes() == (
        models / "recogniser.safetensors"
    ).read_bytes()
    train._resolve_init(args, "recogniser")  # a model folder stays as it is
    assert Path(args.init).parent != channel
    with pytest.raises(ValueError, match="no recogniser.json"):
        train._resolve_init(argparse.Namespace(init=str(tmp_path / "input")), "recogniser")
