"""Training jobs for the segmenter and the recogniser.

Follows the SageMaker training contract, so the same script runs locally and as a
SageMaker training job:
  data     SM_CHANNEL_TRAIN / SM_CHANNEL_TEST (a manifest.jsonl + images), or --synthetic
  init     SM_CHANNEL_INIT or --init (fine-tuning: a model folder, a model.tar.gz, s3://...)
  model    SM_MODEL_DIR      (<kind>.safetensors + <kind>.json: the best model so far)
  extras   SM_OUTPUT_DATA_DIR (metrics.json)
  resume   /opt/ml/checkpoints or --checkpoint-dir (state.pt, loaded with weights_only=True);
           it holds the best weights too, so a spot restart (whose SM_MODEL_DIR starts empty)
           still ends with the best model
  GPUs     under torchrun (torch_distributed) one process per GPU: LOCAL_RANK picks the device,
           each rank draws its own data, rank 0 evaluates, logs metrics and writes the files
Log lines are `key=value` pairs (`step=120 train_loss=0.53`, `step=500 test_cer=0.071`) so
SageMaker metric regexes can read them (see jobs.sagemaker.training).

  htr train segmenter --synthetic --steps 5000 --model-dir runs/seg
  python jobs/train.py --model recogniser --train data/train --test data/test
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a plain script (SageMaker entry point)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler

from jobs import datasets as ds
from jobs.metrics import DetectionScore, ErrorRate, match
from models import checkpoints, recogniser, segmenter
from models.charset import Codec
from models.recogniser.crnn import greedy_decode
from models.segmenter.postprocess import LINE_POST, boxes_from_prob

DEFAULT_ARCH = {"segmenter": "db_mobilenet_v3_small_lite", "recogniser": "crnn_small"}  # as shipped


def _arch(args, kind: str) -> str:
    """--arch, else the --init model's own arch (fine-tuning keeps it), else the shipped default."""
    if args.arch:
        return args.arch
    if args.init:
        return checkpoints.read_meta(args.init, kind)["arch"]
    return DEFAULT_ARCH[kind]


def configure(p: argparse.ArgumentParser, with_model_positional: bool = True) -> None:
    if with_model_positional:
        p.add_argument("model", choices=["segmenter", "recogniser"])
    p.add_argument("--arch", help="config name from models/<kind>/__init__.py CONFIGS")
    p.add_argument(
        "--train",
        default=os.environ.get("SM_CHANNEL_TRAIN"),
        help="manifest.jsonl or a folder holding one (default: $SM_CHANNEL_TRAIN)",
    )
    p.add_argument("--test", default=os.environ.get("SM_CHANNEL_TEST"))
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="train on synthetic data generated on the fly (also used when no --train)",
    )
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--crop-size", type=int, default=512, help="segmenter training crop")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR", "runs/model"))
    p.add_argument(
        "--checkpoint-dir",
        default=None,
        help="resume/save state here (default /opt/ml/checkpoints when present)",
    )
    p.add_argument("--output-data-dir", default=os.environ.get("SM_OUTPUT_DATA_DIR"))
    p.add_argument(
        "--init",
        default=os.environ.get("SM_CHANNEL_INIT"),
        help="start from these weights (fine-tuning): a model folder, a model.tar.gz "
        "or a folder holding one (a SageMaker channel), or s3://.../model.tar.gz "
        "(default: $SM_CHANNEL_INIT)",
    )
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--eval-size", type=int, default=None, help="synthetic test pages / crops")
    p.add_argument("--workers", type=int, default=1, help="data loader processes")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--pages",
        help="segmenter: a real page cache (python -m jobs.page_data) for the "
        "line head of a *_lines arch, mixed with synthetic pages at --synthetic-share",
    )
    p.add_argument(
        "--lines",
        help="recogniser: a line-crop cache (python -m jobs.line_data) to train "
        "on text lines, mixed with synthetic lines",
    )
    p.add_argument(
        "--synthetic-share",
        type=float,
        default=0.3,
        help="with --lines or --pages: fraction of synthetic lines (pages) in each batch",
    )
    p.add_argument(
        "--synthetic-print-share",
        type=float,
        default=0.2,
        help="with --lines: fraction of the synthetic lines in a printed or typewritten hand",
    )


# ---- shared plumbing ---------------------------------------------------------------------------


def _log(**kv) -> None:
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in kv.items()), flush=True)


def _checkpoint_dir(args) -> Path:
    if args.checkpoint_dir:
        return Path(args.checkpoint_dir)
    # On SageMaker never inside SM_MODEL_DIR: state.pt would ship in model.tar.gz
    if Path("/opt/ml/checkpoints").is_dir() or os.environ.get("SM_MODEL_DIR"):
        return Path("/opt/ml/checkpoints")
    return Path(args.model_dir) / "checkpoints"


@dataclass
class Best:
    """The best model so far: its error, metrics and weights (a CPU copy), kept in state.pt."""

    error: float = math.inf
    metrics: dict = field(default_factory=dict)
    weights: dict | None = None

    def take(self, net: torch.nn.Module, error: float, metrics: dict) -> None:
        self.error, self.metrics = error, dict(metrics)
        self.weights = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}


def _save_state(path: Path, model, opt, sched, step: int, best: Best) -> None:
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / "state.pt.tmp"
    torch.save(
        {
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "sched": sched.state_dict(),
            "step": step,
            "best": best.error,
            "best_metrics": json.dumps(best.metrics),
            "best_weights": best.weights,
        },
        tmp,
    )
    os.replace(tmp, path / "state.pt")  # atomic: a kill mid-save keeps the previous state


def _load_state(path: Path, model, opt, sched) -> tuple[int, Best]:
    f = path / "state.pt"
    if not f.is_file():
        return 0, Best()
    state = torch.load(f, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    print(f"resumed from {f} at step {state['step']}", flush=True)
    best = Best(
        float(state["best"]), json.loads(state.get("best_metrics") or "{}"), state.get("best_weights")
    )
    return int(state["step"]), best


def _schedule(opt, steps: int, warmup: int = 200):
    # Linear warm-up, then cosine. Short runs (tests, smoke jobs) warm up for a fifth of their steps
    # so they ever reach the set learning rate; runs of 1000+ steps keep the 200-step warm-up.
    warmup = max(1, min(warmup, steps // 5))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


@dataclass(frozen=True)
class Dist:
    """This process's place under torchrun (one process per GPU); rank 0 of 1 otherwise."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Dist:
        return cls(
            int(os.environ.get("RANK", "0")),
            int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")),
        )


def _device(name: str, dist: Dist = Dist()) -> torch.device:
    """auto: this rank's own GPU (LOCAL_RANK), else the CPU. Set as the current CUDA device so
    NCCL and every bare .cuda() land on it, not on cuda:0 for all ranks."""
    if name == "auto":
        name = f"cuda:{dist.local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def _init_distributed(dist: Dist, device: torch.device) -> None:
    if dist.world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")


def _ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=ids, output_device=device.index if ids else None
    )


def _worker_init(_: int) -> None:
    import cv2

    cv2.setNumThreads(1)  # OpenCV's pool would fight the training process for the cores
    torch.set_num_threads(1)


def _loader(data, workers: int, **kwargs) -> DataLoader:
    """Data workers are spawned, not forked: a fork taken while the parent's OpenMP/OpenCV pools are
    live (they are, after rendering the test set) can leave the child blocked on a copied lock."""
    if workers == 0:
        return DataLoader(data, **kwargs)
    return DataLoader(
        data,
        num_workers=workers,
        persistent_workers=True,
        worker_init_fn=_worker_init,
        multiprocessing_context="spawn",
        **kwargs,
    )


def _crop_loader(
    data, workers: int, bs: int, seed: int, dist: Dist
) -> tuple[DataLoader, DistributedSampler | None]:
    """A map-style dataset (manifest crops) under torchrun: each rank its own share of the items
    (DistributedSampler: one shuffle for all ranks, reshuffled by set_epoch in _infinite). The
    iterable datasets (synthetic, lines, pages) are not split: each rank draws from its own seed."""
    sampler: DistributedSampler | None = None
    if dist.world > 1:
        sampler = DistributedSampler(data, dist.world, dist.rank, seed=seed)
    loader = _loader(
        data,
        workers,
        batch_size=bs,
        shuffle=sampler is None,
        sampler=sampler,
        collate_fn=ds.collate_crops,
        drop_last=len(data) > bs * dist.world,
    )
    return loader, sampler


def _infinite(loader, sampler: DistributedSampler | None = None):
    epoch = 0
    while True:
        if sampler is not None:
            sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every rank
        yield from loader
        epoch += 1


def _code_version() -> str:
    """The git commit the training code came from, so a checkpoint names its recipe."""
    import subprocess

    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _data_name(args) -> str:
    if getattr(args, "lines", None):
        return f"lines {args.lines} + {args.synthetic_share:.0%} synthetic lines"
    if getattr(args, "pages", None):
        return f"pages {args.pages} (line polygons) + {args.synthetic_share:.0%} synthetic pages"
    return args.train or "synthetic"


def _export(model, kind: str, arch: str, cfg: dict, args, metrics: dict) -> None:
    net = model.module if hasattr(model, "module") else model
    checkpoints.save(
        net,
        kind,
        arch,
        cfg,
        args.model_dir,
        {
            "train": {
                "steps": metrics.get("step"),
                "seed": args.seed,
                "code": _code_version(),
                "data": _data_name(args),
                "metrics": metrics,
            }
        },
    )
    if args.output_data_dir:
        Path(args.output_data_dir).mkdir(parents=True, exist_ok=True)
        Path(args.output_data_dir, f"{kind}_metrics.json").write_text(json.dumps(metrics, indent=1))


class Bookkeeper:
    """What both training loops do after each step: log the mean loss, evaluate now and then,
    export the best model so far, and save resumable state (best weights included). Rank 0 only."""

    def __init__(
        self,
        args,
        kind: str,
        arch: str,
        cfg: dict,
        model,
        opt,
        sched,
        ckpt_dir: Path,
        best: Best,
        evaluate,
        rank: int,
    ):
        self.args, self.kind, self.arch, self.cfg = args, kind, arch, cfg
        self.net = model.module if hasattr(model, "module") else model
        self.opt, self.sched, self.ckpt_dir, self.best = opt, sched, ckpt_dir, best
        self.evaluate, self.rank = evaluate, rank  # evaluate(net) -> (metrics, error to minimise)
        self.metrics: dict = {}
        self.t0, self.running = time.time(), 0.0

    def after_step(self, step: int, loss: float) -> None:
        if self.rank != 0:
            return
        a = self.args
        self.running += loss
        if step % a.log_every == 0:
            _log(
                step=step,
                train_loss=self.running / a.log_every,
                lr=self.sched.get_last_lr()[0],
                sec_per_step=(time.time() - self.t0) / a.log_every,
            )
            self.running, self.t0 = 0.0, time.time()
        if step % a.eval_every == 0 or step == a.steps:
            metrics, error = self.evaluate(self.net)
            self.metrics = {"step": step, **metrics}
            _log(**self.metrics)
            if error <= self.best.error:
                self.best.take(self.net, error, self.metrics)
                _export(self.net, self.kind, self.arch, self.cfg, a, self.metrics)
            _save_state(self.ckpt_dir, self.net, self.opt, self.sched, step, self.best)

    def export_best(self) -> None:
        """The best weights into the model dir: after a resume the dir may be empty (a new spot
        instance) or hold nothing newer, and the job must still end with its best model."""
        if self.rank != 0 or self.best.weights is None:
            return
        net = copy.deepcopy(self.net).cpu()
        net.load_state_dict(self.best.weights)
        _export(net, self.kind, self.arch, self.cfg, self.args, self.best.metrics)


def _warm_start(model: torch.nn.Module, source: torch.nn.Module) -> None:
    """Copy every tensor whose name and shape match (all of them when the arch is the same; only the
    backbone when e.g. a narrower FPN is trained from a wider model's backbone)."""
    own = model.state_dict()
    found = {k: v for k, v in source.state_dict().items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(found, strict=False)
    print(f"warm start: {len(found)} of {len(own)} tensors copied", flush=True)
    if not found:
        raise ValueError("--init model shares no tensors with this arch")


def _resolve_init(args, kind: str) -> None:
    """--init as a model folder: a model.tar.gz, a channel folder holding one, or an s3:// URI
    is unpacked first (batch.packaging.unpack_model)."""
    if not args.init or Path(args.init, f"{kind}.json").is_file():
        return
    from batch.packaging import unpack_model

    source = str(args.init)
    if Path(source).is_dir():
        tarballs = sorted(Path(source).glob("*.tar.gz"))
        if not tarballs:
            raise ValueError(f"--init {source}: no {kind}.json and no model.tar.gz in it")
        source = str(tarballs[0])
    args.init = str(unpack_model(source, kind, Path(tempfile.mkdtemp(prefix="htr-init-"))))


def _prepare(model, kind: str, args) -> tuple:
    """Seed, optional warm start (--init), device, and DDP under torchrun: the same for both jobs.
    Returns (model, device, dist)."""
    dist = Dist.from_env()
    device = _device(args.device, dist)
    _init_distributed(dist, device)
    torch.manual_seed(args.seed + dist.rank)
    if args.init:
        _warm_start(model, checkpoints.load(args.init, kind)[0])
    model.to(device).train()
    if dist.world > 1:
        model = _ddp(model, device)
    print(f"rank={dist.rank} world={dist.world} local_rank={dist.local_rank} device={device}", flush=True)
    return model, device, dist


# ---- segmenter ---------------------------------------------------------------------------------


def _balanced_bce(logits: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BCE over the masked pixels: every positive and the hardest negatives, 3 per positive."""
    bce = F.binary_cross_entropy_with_logits(logits, gt, reduction="none")
    pos = (gt * mask).bool()
    neg = ((1 - gt) * mask).bool()
    n_pos = int(pos.sum())
    n_neg = min(int(neg.sum()), max(3 * n_pos, 1000))
    neg_loss = bce[neg].topk(n_neg).values if n_neg else bce.new_zeros(1)
    return (bce[pos].sum() + neg_loss.sum()) / (n_pos + n_neg + 1e-6)


def _dice(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return 1 - 2 * (pred * gt * mask).sum() / ((pred * mask).sum() + (gt * mask).sum() + 1e-6)


def db_loss(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """DB loss: balanced BCE (hard negatives 3:1) on P + dice on the binary map + 10 x L1 on T."""
    gt, mask = batch["gt"], batch["mask"]
    l_prob = _balanced_bce(out["prob_logits"][:, 0], gt, mask)
    l_bin = _dice(out["binary"][:, 0], gt, mask)
    tm = batch["thresh_mask"]
    l_thr = (torch.abs(out["thresh"][:, 0] - batch["thresh"]) * tm).sum() / (tm.sum() + 1e-6)
    return l_prob + l_bin + 10 * l_thr


def line_loss(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The line head (channel 1): balanced BCE (hard negatives 3:1) + dice, where line_mask is set."""
    gt, mask = batch["line_gt"], batch["line_mask"]
    logits = out["prob_logits"][:, 1]
    if not mask.any():  # no sample in the batch has lines
        return logits.sum() * 0
    return _balanced_bce(logits, gt, mask) + _dice(torch.sigmoid(logits), gt, mask)


def _segmenter_test_pages(args, long_side: int) -> list[tuple[np.ndarray, list[dict]]]:
    if args.test:
        return ds.load_manifest_pages(ds._manifest_or_dir(args.test))
    from transforms.synth import render_page

    rng = np.random.default_rng(args.seed + 10_000)  # never a training seed
    pages = []
    for _ in range(args.eval_size or 12):
        page, anns = render_page(rng)
        pages.append(
            (
                np.asarray(page),
                [
                    {
                        "text": a["text"],
                        "polygon": np.array([[p["x"], p["y"]] for p in a["polygon"]], np.float32),
                    }
                    for a in anns
                ],
            )
        )
    return pages


def _page_maps(model, image: np.ndarray, long_side: int, device) -> tuple[np.ndarray, float]:
    """The segmenter's maps (C x H x W) for one page at the pipeline's scale, and that scale."""
    from models.segmenter.runner import resize_for_segmenter

    small, scale = resize_for_segmenter(image, long_side)
    h, w = small.shape[:2]
    canvas = np.full((-(-h // 32) * 32, -(-w // 32) * 32, 3), 255, np.uint8)
    canvas[:h, :w] = small
    x = torch.from_numpy(canvas).permute(2, 0, 1)[None].float().div(255).to(device)
    return model(x, with_threshold=False)["prob"][0, :, :h, :w].float().cpu().numpy(), scale


@torch.no_grad()
def evaluate_segmenter(model, pages, long_side: int, device) -> DetectionScore:
    """Word detection on pages with word boxes."""
    model.eval()
    score = DetectionScore()
    for image, anns in pages:
        prob, scale = _page_maps(model, image, long_side, device)
        preds = [q / scale for q, _ in boxes_from_prob(prob[0])]
        gts = [a["polygon"] for a in anns]
        score.add(len(match(preds, gts, 0.5)), len(preds), len(gts))
    model.train()
    return score


@torch.no_grad()
def evaluate_lines(model, pages, long_side: int, device) -> DetectionScore:
    """Line detection (the line head) on real pages: (image, [line polygons])."""
    model.eval()
    score = DetectionScore()
    for image, lines in pages:
        prob, scale = _page_maps(model, image, long_side, device)
        preds = [q / scale for q, _ in boxes_from_prob(prob[1], LINE_POST)]
        score.add(len(match(preds, lines, 0.5)), len(preds), len(lines))
    model.train()
    return score


def _line_test_pages(args) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """The page cache's validation pages (whole pages never trained on), up to --eval-size."""
    from jobs.page_data import PageCache

    cache = PageCache(args.pages, "val")
    step = max(1, len(cache) // (args.eval_size or 24))
    return [cache.page(i) for i in range(0, len(cache), step)][: args.eval_size or 24]


def train_segmenter(args) -> dict:
    _resolve_init(args, "segmenter")
    arch = _arch(args, "segmenter")
    cfg = dict(segmenter.CONFIGS[arch])
    model, device, dist = _prepare(segmenter.build(arch, cfg), "segmenter", args)
    rank = dist.rank
    bs = args.batch_size or 8
    lines = bool(cfg.get("line_channels"))
    if lines and not args.pages:
        raise ValueError(f"--arch {arch} has a line head: give --pages (python -m jobs.page_data)")
    data: torch.utils.data.IterableDataset
    if lines:
        data = ds.RealLinePages(
            args.pages, args.seed + rank, args.crop_size, cfg["input_long_side"], args.synthetic_share
        )
    elif args.train and not args.synthetic:
        data = ds.ManifestPages(args.train, args.seed + rank, args.crop_size, cfg["input_long_side"])
    else:
        data = ds.SyntheticPages(args.seed + rank, args.crop_size, cfg["input_long_side"])
    loader = _loader(data, args.workers, batch_size=bs, collate_fn=ds.collate_pages)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr or 2e-3, weight_decay=1e-4)
    sched = _schedule(opt, args.steps)
    ckpt_dir = _checkpoint_dir(args)
    step, best = _load_state(ckpt_dir, model, opt, sched)
    test_pages = _segmenter_test_pages(args, cfg["input_long_side"]) if rank == 0 else []
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler(enabled=use_amp)

    line_pages = _line_test_pages(args) if rank == 0 and lines else []

    def evaluate(net):
        sc = evaluate_segmenter(net, test_pages, cfg["input_long_side"], device)
        metrics = {"test_precision": sc.precision, "test_recall": sc.recall, "test_f1": sc.f1}
        if not lines:
            return metrics, 1 - sc.f1
        ln = evaluate_lines(net, line_pages, cfg["input_long_side"], device)
        metrics.update(line_precision=ln.precision, line_recall=ln.recall, line_f1=ln.f1)
        return metrics, 1 - (sc.f1 + ln.f1) / 2  # both heads count

    book = Bookkeeper(args, "segmenter", arch, cfg, model, opt, sched, ckpt_dir, best, evaluate, rank)
    book.export_best()  # resumed: the model dir holds the best model from the start
    for batch in _infinite(loader):
        if step >= args.steps:
            break
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device.type, enabled=use_amp):
            out = model(batch["image"], with_threshold=True)
        out = {k: v.float() for k, v in out.items()}
        loss = db_loss(out, batch) + (line_loss(out, batch) if lines else 0)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        scaler.step(opt)
        scaler.update()
        sched.step()
        step += 1
        book.after_step(step, loss.item())
    return _finish(book, model)


# ---- recogniser --------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_recogniser(model, samples, codec: Codec, device, bs: int = 128) -> tuple[float, float]:
    """(CER, WER) on (tensor, target, text) samples (word crops or text lines)."""
    model.eval()
    cer, wer = ErrorRate(), ErrorRate()
    for i in range(0, len(samples), bs):
        x, widths, _, _, texts = ds.collate_crops(samples[i : i + bs])
        lp = model(x.to(device)).float().cpu()
        seqs, _ = greedy_decode(lp, (widths + 3) // 4)
        for seq, text in zip(seqs, texts):
            pred = codec.decode_greedy(seq)
            cer.add(pred, text)
            wer.add(pred.split(), text.split())
    model.train()
    return cer.rate, wer.rate


def _recogniser_test_samples(args, codec: Codec, max_width: int) -> list:
    if args.lines and not args.test:
        return ds.line_eval_samples(args.lines, max_width, codec, args.eval_size or 800)
    if args.test:
        d = ds.ManifestCrops(args.test, max_width, codec, jitter=False)
        return [d[i] for i in range(len(d))]
    it = iter(ds.SyntheticCrops(args.seed + 10_000, max_width, codec))
    return [next(it) for _ in range(args.eval_size or 1000)]


def train_recogniser(args) -> dict:
    _resolve_init(args, "recogniser")
    arch = _arch(args, "recogniser")
    cfg = dict(recogniser.CONFIGS[arch])
    codec = Codec()
    model, device, dist = _prepare(recogniser.build(arch, cfg, codec.charset), "recogniser", args)
    rank = dist.rank
    sampler: DistributedSampler | None = None
    bs = args.batch_size or 64
    data: torch.utils.data.Dataset
    if args.lines:
        data = ds.LineCrops(
            args.lines,
            codec,
            cfg["max_width"],
            bs,
            args.seed + rank,
            args.synthetic_share,
            print_share=args.synthetic_print_share,
        )
        loader = _loader(data, args.workers, batch_size=None)
    elif args.train and not args.synthetic:
        data = ds.ManifestCrops(args.train, cfg["max_width"], codec, seed=args.seed + rank)
        loader, sampler = _crop_loader(data, args.workers, bs, args.seed, dist)
    else:
        data = ds.SyntheticCrops(args.seed + rank, cfg["max_width"], codec, batch_size=bs)
        loader = _loader(data, args.workers, batch_size=None)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr or 1e-3, weight_decay=1e-4)
    sched = _schedule(opt, args.steps)
    ckpt_dir = _checkpoint_dir(args)
    step, best = _load_state(ckpt_dir, model, opt, sched)
    test = _recogniser_test_samples(args, codec, cfg["max_width"]) if rank == 0 else []
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)

    def evaluate(net):
        cer, wer = evaluate_recogniser(net, test, codec, device)
        return {"test_cer": cer, "test_wer": wer}, cer

    book = Bookkeeper(args, "recogniser", arch, cfg, model, opt, sched, ckpt_dir, best, evaluate, rank)
    book.export_best()  # resumed: the model dir holds the best model from the start
    for x, widths, targets, target_lengths, _ in _infinite(loader, sampler):
        if step >= args.steps:
            break
        lp = model(x.to(device))  # B x T x C
        input_lengths = ((widths + 3) // 4).clamp(max=lp.shape[1])
        loss = ctc(lp.float().permute(1, 0, 2), targets, input_lengths, target_lengths)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        step += 1
        book.after_step(step, loss.item())
    return _finish(book, model)


def _weights_digest(model: torch.nn.Module) -> str:
    """A short hash of the parameters: equal on every rank when DDP kept them in sync (not the
    BatchNorm statistics: each rank's last forward pass updates its own)."""
    import hashlib

    h = hashlib.sha256()
    for name, value in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(value.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


def _finish(book: Bookkeeper, model: torch.nn.Module) -> dict:
    """The best model into the model dir (rank 0), every rank's weights digest, and DDP's end."""
    book.export_best()
    if torch.distributed.is_initialized():
        _log(rank=book.rank, weights=_weights_digest(book.net))
        torch.distributed.barrier()  # no rank leaves while rank 0 still writes the model
        torch.distributed.destroy_process_group()
    return book.metrics or book.best.metrics


def main(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    run = train_segmenter if args.model == "segmenter" else train_recogniser
    metrics = run(args)
    print(f"done: {args.model} {json.dumps(metrics)} -> {args.model_dir}", flush=True)
    return 0


if __name__ == "__main__":  # SageMaker: `python train.py --model segmenter --steps ...`
    parser = argparse.ArgumentParser(description="htr-batch training job")
    parser.add_argument("--model", choices=["segmenter", "recogniser"], required=True)
    configure(parser, with_model_positional=False)
    sys.exit(main(parser.parse_args()))
