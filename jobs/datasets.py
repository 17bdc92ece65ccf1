"""Training data for both models, from synthetic generators or labelled manifests.

Each dataset yields ready-to-batch samples; the training loops in jobs/train.py stay plain.
Synthetic data is generated on the fly and is deterministic per (seed, worker).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from models.charset import Codec
from models.segmenter.targets import make_line_targets, make_targets
from transforms.crops import CROP_HEIGHT, normalise_ink, rectify


def _worker_seed(seed: int) -> int:
    info = get_worker_info()
    return seed * 1000 + (info.id if info else 0)


# ---- labelled pages (manifest) -----------------------------------------------------------------


def load_manifest_pages(manifest: str | Path) -> list[tuple[np.ndarray, list[dict]]]:
    """All pages of a manifest in memory: (RGB image, [{"text", "polygon": 4x2, "type"}])."""
    from batch import storage
    from jobs.manifests import read_manifest, resolve_source
    from transforms.rasterise import iter_pages

    pages = []
    for sample in read_manifest(manifest):
        data = storage.read_bytes(resolve_source(sample, manifest))
        image = next(iter_pages(data))
        anns = [
            {
                "text": a.text,
                "type": getattr(a, "type", "H"),
                "polygon": np.array(
                    [[p["x"], p["y"]] if isinstance(p, dict) else [p.x, p.y] for p in a.polygon], np.float32
                ),
            }
            for a in sample.annotations
        ]
        pages.append((image, anns))
    return pages


def _manifest_or_dir(path: str | Path) -> Path:
    p = Path(path)
    return p / "manifest.jsonl" if p.is_dir() else p


# ---- segmenter ---------------------------------------------------------------------------------


def segmenter_sample(
    image: np.ndarray,
    anns: list[dict] | None,
    size: int,
    long_side: int,
    rng: np.random.Generator,
    train: bool = True,
    lines: list[np.ndarray] | None = None,
    jitter: tuple[float, float] = (0.75, 1.25),
) -> dict[str, torch.Tensor]:
    """Scale the page as the pipeline would (long side ~ long_side, jittered in training), take a
    size x size crop around text, and build DB targets for it.

    anns: the page's words, or None where it has no word boxes (real pages: the word maps are
    masked out). lines: its line polygons for the line head, or None (that head is masked out)."""
    h, w = image.shape[:2]
    scale = long_side / max(h, w) * (rng.uniform(*jitter) if train else 1.0)
    img = cv2.resize(
        image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
    )
    ih, iw = img.shape[:2]
    if train:
        x0 = int(rng.integers(0, max(1, iw - size + 1)))
        y0 = int(rng.integers(0, max(1, ih - size + 1)))
    else:
        x0 = y0 = 0
    canvas = np.full((size, size, 3), 255, np.uint8)
    part = img[y0 : y0 + size, x0 : x0 + size]
    canvas[: part.shape[0], : part.shape[1]] = part
    shift = np.array([x0, y0], np.float32)
    if anns is None:
        t = {
            "gt": np.zeros((size, size), np.float32),
            "mask": np.zeros((size, size), np.float32),
            "thresh": np.zeros((size, size), np.float32),
            "thresh_mask": np.zeros((size, size), np.float32),
        }
    else:
        ignore = [a["text"] in ("%NA%",) for a in anns]
        t = make_targets(size, size, [a["polygon"] * scale - shift for a in anns], ignore)
    if lines is None:
        t.update(line_gt=np.zeros((size, size), np.float32), line_mask=np.zeros((size, size), np.float32))
    else:
        t.update(make_line_targets(size, size, [p * scale - shift for p in lines]))
    x = torch.from_numpy(canvas).permute(2, 0, 1).float().div_(255)
    return {"image": x, **{k: torch.from_numpy(v) for k, v in t.items()}}


def word_lines(anns: list[dict], gap: float = 2.5) -> list[np.ndarray]:
    """Line polygons for synthetic words: each line_idx's word quads, cut where the gap between two
    words exceeds `gap` word heights (two columns share a line_idx), each piece's convex hull."""
    by_line: dict[int, list[np.ndarray]] = {}
    for a in anns:
        if "line_idx" in a and a["text"] != "%NA%":
            by_line.setdefault(int(a["line_idx"]), []).append(a["polygon"])
    out = []
    for quads in by_line.values():
        quads.sort(key=lambda q: float(q[:, 0].min()))
        height = float(np.median([np.ptp(q[:, 1]) for q in quads]))
        pieces = [[quads[0]]]
        for prev, q in zip(quads, quads[1:]):
            if q[:, 0].min() - prev[:, 0].max() > gap * height:
                pieces.append([])
            pieces[-1].append(q)
        out += [cv2.convexHull(np.concatenate(p).astype(np.float32)).reshape(-1, 2) for p in pieces]
    return out


class SyntheticPages(IterableDataset):
    """Rendering a page costs seconds, a crop milliseconds: keep a pool of rendered pages,
    render one new page per `crops_per_render` crops, and take random crops from the pool."""

    def __init__(
        self,
        seed: int,
        size: int,
        long_side: int,
        pool: int = 32,
        crops_per_render: int = 4,
        lines: bool = False,
    ):
        self.seed, self.size, self.long_side, self.lines = seed, size, long_side, lines
        self.pool_size, self.crops_per_render = pool, crops_per_render

    def _render(self, rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
        from transforms.synth import render_page

        page, anns = render_page(rng)
        return np.asarray(page), [
            {
                "text": a["text"],
                "type": a.get("type", "H"),
                "line_idx": a.get("line_idx", 0),
                "polygon": np.array([[p["x"], p["y"]] for p in a["polygon"]], np.float32),
            }
            for a in anns
        ]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng(_worker_seed(self.seed))
        pool: list = []
        while True:
            page = self._render(rng)
            if len(pool) < self.pool_size:
                pool.append(page)
            else:
                pool[int(rng.integers(len(pool)))] = page
            yield self._sample(page, rng)  # the newest page once
            for _ in range(self.crops_per_render - 1):
                yield self._sample(pool[int(rng.integers(len(pool)))], rng)

    def _sample(
        self, page: tuple[np.ndarray, list[dict]], rng: np.random.Generator
    ) -> dict[str, torch.Tensor]:
        image, anns = page
        return segmenter_sample(
            image, anns, self.size, self.long_side, rng, lines=word_lines(anns) if self.lines else None
        )


class ManifestPages(IterableDataset):
    """Labelled pages (a user's data), augmented with the synthetic engine's page distortions."""

    def __init__(self, manifest: str | Path, seed: int, size: int, long_side: int, augment: bool = True):
        self.pages = load_manifest_pages(_manifest_or_dir(manifest))
        self.seed, self.size, self.long_side, self.augment = seed, size, long_side, augment

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng(_worker_seed(self.seed))
        while True:
            image, anns = self.pages[int(rng.integers(len(self.pages)))]
            if self.augment:
                image, anns = _augment_page(image, anns, rng)
            yield segmenter_sample(image, anns, self.size, self.long_side, rng)


# Real pages are scaled wider than synthetic ones: archives' line heights at the segmenter's input
# range over 2x (24-53 px page medians at 1024 px on the training sets), other archives' further.
REAL_SCALES = (0.6, 1.5)


class RealLinePages(IterableDataset):
    """Real pages with line polygons only (jobs.page_data cache), mixed with synthetic pages
    (words and lines) at `synthetic_share`, so the word head keeps learning while the line head
    learns real layouts. Real pages get photometric jitter (the polygons stay valid)."""

    def __init__(self, cache: str | Path, seed: int, size: int, long_side: int, synthetic_share: float = 0.4):
        from jobs.page_data import PageCache

        self.pages = PageCache(cache, "train")
        self.synthetic = SyntheticPages(seed + 500, size, long_side, pool=16, lines=True)
        self.seed, self.size, self.long_side, self.share = seed, size, long_side, synthetic_share

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng(_worker_seed(self.seed))
        synthetic = iter(self.synthetic)
        while True:
            if rng.random() < self.share:
                yield next(synthetic)
                continue
            image, lines = self.pages.page(int(rng.integers(len(self.pages))))
            yield segmenter_sample(
                _jitter_colours(image, rng),
                None,
                self.size,
                self.long_side,
                rng,
                lines=lines,
                jitter=REAL_SCALES,
            )


def _jitter_colours(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Contrast, brightness, grey scans and blur: what differs between archives' cameras."""
    img = image.astype(np.float32) * rng.uniform(0.7, 1.3) + rng.uniform(-40, 40)
    if rng.random() < 0.3:
        img[:] = img.mean(2, keepdims=True)
    out = img.clip(0, 255).astype(np.uint8)
    if rng.random() < 0.2:
        out = np.asarray(cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.5)), np.uint8)
    return out


def _augment_page(image: np.ndarray, anns: list[dict], rng: np.random.Generator):
    try:
        from transforms.augment import augment_page
    except ImportError:
        return image, anns
    polys = [a["polygon"] for a in anns]
    if any(len(p) != 4 for p in polys):  # the geometric page ops take quads
        return image, anns
    image, moved = augment_page(image, polys, rng)
    return image, [{**a, "polygon": np.asarray(p, np.float32)} for a, p in zip(anns, moved)]


def collate_pages(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


# ---- recogniser --------------------------------------------------------------------------------


def crop_tensor(crop: np.ndarray, max_width: int) -> torch.Tensor:
    """uint8 gray crop of any size -> 1 x 32 x W ink map, as the pipeline feeds the model."""
    h, w = crop.shape[:2]
    new_w = int(np.clip(round(w * CROP_HEIGHT / max(h, 1)), 8, max_width))
    crop = cv2.resize(
        crop, (new_w, CROP_HEIGHT), interpolation=cv2.INTER_AREA if h > CROP_HEIGHT else cv2.INTER_LINEAR
    )
    return torch.from_numpy(normalise_ink(crop))[None]


def width_batches(samples: Iterator, batch_size: int, pool_batches: int, seed: int) -> Iterator:
    """Collated batches of similar widths: a pool of samples sorted by width, cut into batches, the
    batches shuffled. Padding a short crop to the longest in a random batch would waste most of
    the compute."""
    rng = random.Random(seed)
    while True:
        pool = sorted((next(samples) for _ in range(batch_size * pool_batches)), key=lambda s: s[0].shape[-1])
        batches = [pool[i : i + batch_size] for i in range(0, len(pool), batch_size)]
        rng.shuffle(batches)
        for b in batches:
            yield collate_crops(b)


class SyntheticCrops(IterableDataset):
    """Yields single samples, or with `batch_size` whole batches of similar widths: padding a
    short word to the longest in a random batch would waste most of the compute."""

    def __init__(
        self, seed: int, max_width: int, codec: Codec, batch_size: int | None = None, pool_batches: int = 8
    ):
        self.seed, self.max_width, self.codec = seed, max_width, codec
        self.batch_size, self.pool_batches = batch_size, pool_batches

    def _samples(self) -> Iterator[tuple[torch.Tensor, list[int], str]]:
        from transforms.synth import WordCropSampler

        sampler = WordCropSampler(_worker_seed(self.seed))
        while True:
            crop, text = sampler.sample()
            target = self.codec.encode(text)
            if target:
                yield crop_tensor(crop, self.max_width), target, text

    def __iter__(self):
        samples = self._samples()
        if not self.batch_size:
            yield from samples
            return
        yield from width_batches(samples, self.batch_size, self.pool_batches, _worker_seed(self.seed))


class ManifestCrops(Dataset):
    """Word crops cut from labelled pages the way the pipeline cuts them (rectified quads),
    with the quad jittered in training so the recogniser tolerates imperfect detections."""

    def __init__(
        self, manifest: str | Path, max_width: int, codec: Codec, jitter: bool = True, seed: int = 0
    ):
        from batch.core.manifest import is_recognition_target

        self.items = []
        for image, anns in load_manifest_pages(_manifest_or_dir(manifest)):
            gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
            for a in anns:
                if is_recognition_target(a["text"]) and codec.encode(a["text"]):
                    self.items.append((gray, a["polygon"], a["text"]))
        self.max_width, self.codec, self.jitter = max_width, codec, jitter
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, list[int], str]:
        gray, quad, text = self.items[i]
        quad = np.asarray(quad, np.float32)
        if self.jitter:
            h = np.linalg.norm(quad[3] - quad[0])
            quad = quad + np.array(
                [[self.rng.uniform(-0.15, 0.15) * h for _ in range(2)] for _ in range(4)], np.float32
            )
        crop = rectify(gray, quad, CROP_HEIGHT, self.max_width)
        if self.jitter:  # the synthetic engine's distortions, applied to real crops
            from transforms.augment import augment_crop

            crop = augment_crop(crop, self.np_rng)
            return crop_tensor(crop, self.max_width), self.codec.encode(text), text
        return torch.from_numpy(normalise_ink(crop))[None], self.codec.encode(text), text


def collate_crops(samples: list[tuple[torch.Tensor, list[int], str]]):
    """Pad to the widest crop in the batch (ink 0 = paper); CTC targets concatenated."""
    width = max(s[0].shape[-1] for s in samples)
    width = -(-width // 4) * 4
    x = torch.zeros(len(samples), 1, CROP_HEIGHT, width)
    for i, (t, _, _) in enumerate(samples):
        x[i, :, :, : t.shape[-1]] = t
    widths = torch.tensor([s[0].shape[-1] for s in samples])
    targets = torch.tensor([k for s in samples for k in s[1]], dtype=torch.long)
    target_lengths = torch.tensor([len(s[1]) for s in samples], dtype=torch.long)
    texts = [s[2] for s in samples]
    return x, widths, targets, target_lengths, texts


# ---- line recogniser ---------------------------------------------------------------------------


class LineCache:
    """The crop cache written by jobs.line_data.build_cache, memory-mapped (cheap to share with
    spawned data workers: each maps the file again instead of unpickling a gigabyte)."""

    def __init__(self, folder: str | Path, split: str | None = "train", sets: set[str] | None = None):
        import json

        self.folder = Path(folder)
        meta = json.loads((self.folder / "index.json").read_text(encoding="utf-8"))
        self.height, self.margin = int(meta["height"]), float(meta["margin"])
        self.lines = [
            ln
            for ln in meta["lines"]
            if (split is None or ln["split"] == split) and (sets is None or ln["set"] in sets)
        ]
        self._crops: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.lines)

    def crop(self, i: int) -> np.ndarray:
        if self._crops is None:
            self._crops = np.load(self.folder / "crops.npy", mmap_mode="r")
        ln = self.lines[i]
        n = self.height * ln["w"]
        return np.asarray(self._crops[ln["offset"] : ln["offset"] + n]).reshape(self.height, ln["w"])

    def __getstate__(self):
        return {**self.__dict__, "_crops": None}

    def line_crop(self, i: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """The line cut at its quad (rng None) or with jittered top/bottom margins, at CROP_HEIGHT."""
        crop = self.crop(i)
        h = self.height / (1 + 2 * self.margin)  # the quad's own height inside the cached crop
        top, bottom = self.height * self.margin / (1 + 2 * self.margin), None
        bottom = top + h
        if rng is not None:
            top += rng.uniform(-0.2, 0.1) * h
            bottom += rng.uniform(-0.1, 0.2) * h
        t, b = int(max(0, round(top))), int(min(self.height, round(bottom)))
        return crop[t:b]


def line_tensor(crop: np.ndarray, max_width: int, stretch: float = 1.0) -> torch.Tensor:
    """uint8 gray line crop -> 1 x 32 x W ink map (width capped: very long lines are squeezed)."""
    h, w = crop.shape[:2]
    new_w = int(np.clip(round(w * stretch * CROP_HEIGHT / max(h, 1)), 16, max_width))
    crop = cv2.resize(
        crop, (new_w, CROP_HEIGHT), interpolation=cv2.INTER_AREA if h > CROP_HEIGHT else cv2.INTER_LINEAR
    )
    return torch.from_numpy(normalise_ink(crop))[None]


class LineCrops(IterableDataset):
    """Real cached lines mixed with synthetic lines (`synthetic` = their share), in batches of
    similar widths. Real crops get jittered margins, width stretch and the engine's crop distortions."""

    def __init__(
        self,
        cache: str | Path | None,
        codec: Codec,
        max_width: int,
        batch_size: int,
        seed: int,
        synthetic: float = 0.3,
        pool_batches: int = 8,
        print_share: float = 0.2,
    ):
        self.cache = LineCache(cache) if cache else None
        self.print_share = print_share  # of the synthetic lines: printed or typewritten
        self.codec, self.max_width, self.batch_size = codec, max_width, batch_size
        self.seed, self.synthetic, self.pool_batches = seed, synthetic if cache else 1.0, pool_batches

    def _samples(self) -> Iterator[tuple[torch.Tensor, list[int], str]]:
        from transforms.augment import augment_crop
        from transforms.synth_lines import LineCropSampler

        rng = np.random.default_rng(_worker_seed(self.seed))
        synth = LineCropSampler(_worker_seed(self.seed) + 7) if self.synthetic > 0 else None
        if synth is not None:
            synth.print_share = self.print_share
        while True:
            if synth is not None and rng.random() < self.synthetic:
                crop, text = synth.sample()
            else:
                assert self.cache is not None  # synthetic == 1 when there is no cache
                i = int(rng.integers(len(self.cache)))
                crop, text = self.cache.line_crop(i, rng), self.cache.lines[i]["text"]
                if rng.random() < 0.5:
                    crop = augment_crop(crop, rng)
            target = self.codec.encode(text)
            if target:
                yield line_tensor(crop, self.max_width, float(np.exp(rng.normal(0, 0.12)))), target, text

    def __iter__(self):
        samples = self._samples()
        yield from width_batches(samples, self.batch_size, self.pool_batches, _worker_seed(self.seed))


def line_eval_samples(
    cache: str | Path, max_width: int, codec: Codec, limit: int | None = None, sets: set[str] | None = None
) -> list[tuple[torch.Tensor, list[int], str]]:
    """Validation lines cut at their quads, no jitter (every k-th line when limited)."""
    c = LineCache(cache, "val", sets)
    step = max(1, len(c) // limit) if limit else 1
    return sorted(
        [
            (line_tensor(c.line_crop(i), max_width), codec.encode(c.lines[i]["text"]), c.lines[i]["text"])
            for i in range(0, len(c), step)
        ],
        key=lambda s: s[0].shape[-1],
    )  # batches of similar width
