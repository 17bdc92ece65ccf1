"""Synthetic handwritten pages and word crops: the only training data the models get.

A page is laid out like real paperwork (letters with letterheads, notes, lists, forms, diary pages),
written by 1-3 "hands" (a font plus personal slant, size, spacing, stroke, wobble and ink), then
aged and captured as a scan or a phone photo. Every word comes with a tight polygon around its ink.

    render_page(rng)            -> (PIL RGB page, [{"text", "polygon", "line_idx", "type"}])
    WordCropSampler(seed)       -> .sample() -> (uint8 grayscale word crop, text), fast
    write_pages / write_crops   -> JPEGs + manifest.jsonl (batch.core.manifest's format)
    htr synth --pages N --out DIR --seed S [--crops N]

Transforms layer (imports batch.core and transforms only). This module renders whole pages (paper,
layout, ageing, capture) and writes the files; the engine's parts live beside it:
synth_hands (hands and words), synth_page (the page being written, its lines), synth_layouts
(letters, notes, lists, forms, ...), synth_crops (word crops without a page). synth_lines
(text-line crops) builds on them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from batch.core.errors import EXIT_BAD_ARGS, EXIT_FATAL, HtrError
from batch.core.manifest import Annotation, Sample, dumps_manifest
from transforms import augment as A
from transforms.fonts import library

# The engine's parts, one module each; every name stays importable from here (other modules, and
# training jobs, import them as transforms.synth.NAME).
from transforms.synth_crops import (  # noqa: F401
    WordCropSampler,
    _stamp,
)
from transforms.synth_hands import (  # noqa: F401
    CROSSED_OUT,
    TYPEWRITER_FONTS,
    Hand,
    InkWord,
    _advance,
    _distort,
    _font_size,
    _glyph_positions,
    _metrics,
    _tighten,
    cross_out,
    make_hand,
    render_word,
    x_ratio,
)
from transforms.synth_layouts import (  # noqa: F401
    FORM_LABELS,
    LAYOUTS,
    Frame,
    _form_answer,
    _snap,
    _words,
    _words_at,
    annotate,
    dated_line,
    interlinear,
    layout_form,
    layout_letter,
    layout_list,
    layout_note,
    letterhead,
    marks,
    paragraph,
    signature,
    single_line,
    stamp,
)
from transforms.synth_page import (  # noqa: F401
    LineDraft,
    Page,
    PlacedWord,
    _composite_warped,
    _overlaps,
    commit_line,
    draft_line,
    write_line,
)

# ---- whole pages -----------------------------------------------------------------------------------

PAPER_SIZES_IN = {
    "a4": (8.27, 11.69),
    "letter": (8.5, 11.0),
    "half": (5.5, 8.5),
    "card": (6.0, 4.0),
    "notebook": (7.0, 9.75),
    "legal_pad": (8.5, 14.0),
}


def _page_size(rng: np.random.Generator) -> tuple[int, int]:
    name = str(rng.choice(list(PAPER_SIZES_IN), p=[0.35, 0.2, 0.15, 0.08, 0.17, 0.05]))
    w_in, h_in = PAPER_SIZES_IN[name]
    dpi = rng.uniform(110, 240)
    w, h = int(w_in * dpi), int(h_in * dpi)
    if max(w, h) > 2800:
        f = 2800 / max(w, h)
        w, h = int(w * f), int(h * f)
    return w, h


def render_page(rng: np.random.Generator) -> tuple[Image.Image, list[dict]]:
    """One synthetic page and its words: (RGB image, [{"text", "polygon", "line_idx", "type"}])."""
    lib = library()
    w, h = _page_size(rng)
    page = Page(A.paper(h, w, rng))
    xh = max(12.0, w / rng.uniform(28, 90))
    hands = [make_hand(rng, lib, xh, cursive=rng.random() < 0.55 or None)]
    for _ in range(int(rng.choice([0, 1, 2], p=[0.6, 0.3, 0.1]))):
        hands.append(make_hand(rng, lib, xh * rng.uniform(0.7, 1.3)))
    fr = Frame(
        w * rng.uniform(0.04, 0.16),
        w * (1 - rng.uniform(0.03, 0.12)),
        h * rng.uniform(0.03, 0.12),
        h * (1 - rng.uniform(0.03, 0.1)),
        0.0,
    )
    fr.y = fr.top + xh * 2
    rules = _paper_rules(page, fr, hands[0], rng)
    if rules is not None:  # on ruled paper people follow the rules
        hands[0].skew, hands[0].skew_jitter = float(rng.normal(0, 0.1)), 0.08
    names = list(LAYOUTS)
    layout = LAYOUTS[names[int(rng.choice(len(names), p=[v[1] for v in LAYOUTS.values()]))]][0]
    layout(page, fr, hands, rng, lib, rules)
    marks(page, hands, fr, rng)
    img, polys = _age_and_capture(page, rng)
    return Image.fromarray(img, "RGB"), _records(page.words, polys, img.shape[1], img.shape[0])


def _paper_rules(page: Page, fr: Frame, hand: Hand, rng: np.random.Generator) -> np.ndarray | None:
    """A third of pages are ruled or squared: rules are spaced for the main hand's line gap."""
    if rng.random() > 0.33:
        return None
    hand.line_gap = float(rng.uniform(2.5, 3.6))  # people size their writing to the rules
    spacing = hand.line_gap * hand.x_height
    grid = rng.random() < 0.25
    margin = fr.left - hand.x_height * rng.uniform(0.5, 2) if rng.random() < 0.5 else None
    return A.ruled_lines(page.img, rng, spacing, fr.top + spacing * rng.uniform(0.5, 1.5), margin, grid)


def _age_and_capture(page: Page, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    img = page.img  # float32: the photometric ops below work on it in place
    polys = np.stack([w.polygon for w in page.words]) if page.words else np.zeros((0, 4, 2), np.float32)
    if rng.random() < 0.3:
        A.show_through(img, rng)
    if rng.random() < 0.25:
        A.stains(img, rng)
    if rng.random() < 0.35:
        A.fold_lines(img, rng)
    if rng.random() < 0.15:
        A.punch_holes(img, rng)
    img = np.clip(img, 0, 255, out=img).astype(np.uint8)
    if rng.random() < 0.3:  # phone photo: tilted, maybe curled page on a desk, uneven light
        if rng.random() < 0.5:
            img, polys = A.curl(img, polys, rng, rng.uniform(0.003, 0.012))
        img, polys = A.perspective(
            img,
            polys,
            rng,
            rng.uniform(0.01, 0.06),
            A.desk(img.shape[0], img.shape[1], rng),
            margin=rng.uniform(0.0, 0.08),
        )
        img = A.lighting(img, rng)
        if rng.random() < 0.5:
            img = A.resample(img, rng, 0.6)
    elif rng.random() < 0.25:  # scan with the sheet's edges showing on the scanner lid
        lid = np.full_like(img, int(rng.choice([rng.uniform(20, 70), rng.uniform(200, 240)])))
        img, polys = A.perspective(
            img, polys, rng, rng.uniform(0.0, 0.012), lid, margin=rng.uniform(0.01, 0.04)
        )
    else:  # flat scan: slight rotation
        if rng.random() < 0.6:
            img, polys = A.rotate(img, polys, float(rng.normal(0, 0.8)), fill=A._edge_fill(img))
    if rng.random() < 0.15:
        img = A.lighting(img, rng)
    if rng.random() < 0.4:
        img = A.blur(img, rng, 1.1)
    img = A.scanner_noise(img, rng, rng.uniform(0.5, 4))
    if rng.random() < 0.3:
        img = A.jpeg(img, rng, 40, 90)
    return img, polys


def _records(words: list[PlacedWord], polys: np.ndarray, w: int, h: int) -> list[dict]:
    """Clip polygons to the image; drop words that ended up mostly outside it."""
    out = []
    for word, poly in zip(words, polys):
        clipped = np.clip(poly, [0, 0], [w - 1, h - 1])
        area = _area(poly)
        if area <= 1 or _area(clipped) < 0.6 * area:
            continue
        out.append(
            {
                "text": word.text,
                "polygon": [{"x": round(float(x), 1), "y": round(float(y), 1)} for x, y in clipped],
                "line_idx": word.line_idx,
                "type": word.kind,
            }
        )
    return out


def _area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


# ---- files + command ---------------------------------------------------------------------------------


def _write_manifest(samples: list[Sample], path: Path) -> Path:
    """The manifest beside the rendered files (always a local folder: the images are written there)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps_manifest(samples), encoding="utf-8")
    return path


def write_pages(n: int, out_dir: str | Path, seed: int) -> Path:
    """Render n pages as JPEGs under out_dir/pages and write out_dir/manifest.jsonl (same seed, same bytes)."""
    from tqdm import tqdm

    out = Path(out_dir)
    (out / "pages").mkdir(parents=True, exist_ok=True)
    samples, t0, n_words = [], time.time(), 0
    for i in tqdm(range(n), desc="pages", unit="page"):
        img, words = render_page(np.random.default_rng([seed, i]))
        name = f"pages/page_{i:06d}.jpg"
        img.save(out / name, quality=int(np.random.default_rng([seed, i, 7]).integers(70, 96)))
        samples.append(
            Sample(name, [Annotation(w["text"], w["polygon"], w["line_idx"], w["type"]) for w in words])
        )
        n_words += len(words)
    path = _write_manifest(samples, out / "manifest.jsonl")
    print(f"synth: {n} pages, {n_words} words in {time.time() - t0:.1f}s -> {path}")
    return path


def write_crops(n: int, out_dir: str | Path, seed: int) -> Path:
    """n word crops as PNGs under out_dir/crops plus out_dir/crops.jsonl, a manifest with one
    annotation per crop (its text, and the word's ink box inside the crop)."""
    from tqdm import tqdm

    out = Path(out_dir)
    (out / "crops").mkdir(parents=True, exist_ok=True)
    sampler, t0, samples = WordCropSampler(seed), time.time(), []
    for i in tqdm(range(n), desc="crops", unit="crop"):
        img, text, (x0, y0, x1, y1) = sampler.sample_with_box()
        name = f"crops/crop_{i:07d}.png"
        cv2.imwrite(str(out / name), img)
        box = [{"x": float(x), "y": float(y)} for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
        samples.append(Sample(name, [Annotation(text, box, 0, "H")]))
    path = _write_manifest(samples, out / "crops.jsonl")
    print(f"synth: {n} word crops in {time.time() - t0:.1f}s -> {path}")
    return path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pages", type=int, default=0, help="number of pages to render")
    parser.add_argument(
        "--crops", type=int, default=0, help="number of word crops to render (recogniser data)"
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="random seed: same seed, same files")


def main(args: argparse.Namespace) -> int:
    if args.pages < 0 or args.crops < 0 or (args.pages == 0 and args.crops == 0):
        print("synth: give --pages N and/or --crops N (N > 0)")
        return EXIT_BAD_ARGS
    try:
        if args.pages:
            write_pages(args.pages, args.out, args.seed)
        if args.crops:
            write_crops(args.crops, args.out, args.seed)
    except HtrError as e:  # e.g. FontsUnavailable: the environment, not the arguments
        print(f"synth: {e.kind}: {e}")
        return EXIT_FATAL
    except OSError as e:
        print(f"synth: cannot write to {args.out}: {e}")
        return EXIT_FATAL
    return 0
