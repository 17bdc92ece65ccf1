"""Real text lines for the line recogniser.

Line-level ground truth (our manifests with `"level": "line"`, converted from ALTO/PAGE exports) goes
through three steps here:
  1. `clean_transcription` maps editorial markup to plain text, or drops a line whose ink the text
     does not describe (unreadable or untranscribed deletions);
  2. `line_quad` turns a polygon of any number of points into the rotated rectangle that the
     pipeline also cuts lines with;
  3. `build_cache` cuts every line once into a compact crop cache (one uint8 .npy of concatenated
     crops + a JSON index), which training memory-maps: decoding 846 JPEG pages per epoch would cost
     more than the model.

The validation split is fixed: whole pages listed in jobs/splits/validation.txt, never trained on.

  python -m jobs.line_data ../shared/data/train --out runs/lines          # build the cache
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from transforms.line_geometry import expand_quad, line_quad

SPLIT_FILE = Path(__file__).resolve().parent / "splits" / "validation.txt"
CACHE_HEIGHT = 48  # crops are cached taller than the model's 32 px so training can jitter margins
CACHE_MARGIN = 0.25  # extra height above and below the line quad, as a fraction of its height
# Sets whose line polygons must not teach a segmenter (automatic and loose, per the set's README).
RECOGNISER_ONLY = {"timeus"}

_DROP = re.compile(r"><|<>|\{|displaystyle")  # unreadable / untranscribed ink, LaTeX debris
_MARKERS = str.maketrans(
    {
        "^": None,
        "⋎": None,
        "#": None,
        "⟦": None,
        "⟧": None,
        "[": None,
        "]": None,
        "<": None,
        ">": None,
        "¬": "-",
        "→": None,
        "─": "-",
    }
)


def clean_transcription(text: str) -> str | None:
    """Editorial markup -> the text on the page; None when the line cannot be used.

    `>x<` / `<x>` / `⟦x⟧` crossed out but readable: keep x (the ink is there); `><`, `<>`: crossed out
    and not transcribed: drop the line; `^` superscript, `#` `⋎` insertion marks, `[ ]` editorial
    brackets: removed; `¬` and a line-final `=` are line-end hyphens."""
    if _DROP.search(text):
        return None
    text = text.translate(_MARKERS)
    text = re.sub(r"=\s*$", "-", text)
    text = re.sub(r"\s+", " ", text).strip()
    return text or None


def cut_line(gray: np.ndarray, quad: np.ndarray, height: int, max_width: int = 4096) -> np.ndarray:
    """Rectify a line quad to `height` px (width follows the aspect ratio, capped)."""
    from transforms.crops import rectify

    return rectify(gray, quad, height, max_width)


# ---- the fixed validation split ------------------------------------------------------------------


def _rank(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()


def choose_validation(pages: dict[str, list[str]], fraction: float = 0.08, minimum: int = 2) -> list[str]:
    """Whole pages per set, chosen by a hash of their name (stable, independent of file order)."""
    out = []
    for set_name, names in sorted(pages.items()):
        k = max(minimum, round(len(names) * fraction))
        out += [f"{set_name}/{n}" for n in sorted(names, key=_rank)[:k]]
    return sorted(out)


def read_page_list(path: str | Path) -> dict[str, set[str]]:
    """A split file (`set_name/image_file_name` per line, '#' comments) -> set -> image names."""
    by_set: dict[str, set[str]] = {}
    for ln in Path(path).read_text(encoding="utf-8").splitlines():
        ln = ln.strip()
        if ln and not ln.startswith("#"):
            set_name, _, image = ln.partition("/")
            by_set.setdefault(set_name, set()).add(Path(image).name)
    return by_set


def read_validation(path: Path = SPLIT_FILE) -> set[str]:
    """The split file's pages as `set/image` keys."""
    return {f"{s}/{name}" for s, names in read_page_list(path).items() for name in names}


# ---- reading the sets ----------------------------------------------------------------------------


@dataclass
class RealLine:
    set_name: str
    page: str  # source-ref inside the set
    quad: np.ndarray  # 4x2, page pixels
    polygon: np.ndarray  # Nx2, page pixels
    text: str  # cleaned


def iter_pages(root: str | Path) -> Iterator[tuple[str, Path, list[RealLine], int]]:
    """(set, image path, cleaned lines, lines dropped) for every page of every set under root."""
    from jobs.manifests import find_manifests

    for set_name, manifest in find_manifests([root]).items():
        for raw in manifest.read_text(encoding="utf-8").splitlines():
            if not raw.strip():
                continue
            obj = json.loads(raw)
            lines, dropped = [], 0
            for t in obj["annotations"]["texts"]:
                poly = np.array([[p["x"], p["y"]] for p in t["polygon"]], np.float32)
                text = clean_transcription(t["text"])
                if text is None or len(poly) < 3:
                    dropped += 1
                    continue
                lines.append(RealLine(set_name, obj["source-ref"], line_quad(poly), poly, text))
            yield set_name, manifest.parent / obj["source-ref"], lines, dropped


def build_cache(
    root: str | Path, out: str | Path, height: int = CACHE_HEIGHT, split_file: Path = SPLIT_FILE
) -> dict:
    """Cut every cleaned line of every set into out/crops.npy + out/index.json. Writes the split
    file when it does not exist yet (first build), and tags each line train or val from it."""
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pages = list(iter_pages(root))
    if not split_file.is_file():
        by_set: dict[str, list[str]] = {}
        for set_name, img, _, _ in pages:
            by_set.setdefault(set_name, []).append(img.name)
        split_file.parent.mkdir(parents=True, exist_ok=True)
        split_file.write_text(
            "# Validation pages (set/image), chosen once by jobs.line_data.choose_validation;"
            " never trained on.\n" + "\n".join(choose_validation(by_set)) + "\n"
        )
    val = read_validation(split_file)
    chunks, index, offset, dropped = [], [], 0, 0
    for set_name, img_path, lines, n_drop in tqdm(pages, desc="cutting lines", unit="page"):
        dropped += n_drop
        gray = cv2.imread(str(img_path), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            print(f"line_data: {img_path}: unreadable image, skipped", file=sys.stderr)
            continue
        split = "val" if f"{set_name}/{img_path.name}" in val else "train"
        for ln in lines:
            quad = expand_quad(ln.quad, CACHE_MARGIN, CACHE_MARGIN, 0.02)
            crop = cut_line(gray, quad, height)
            chunks.append(crop.ravel())
            index.append(
                {
                    "set": set_name,
                    "page": img_path.name,
                    "split": split,
                    "text": ln.text,
                    "offset": offset,
                    "w": int(crop.shape[1]),
                }
            )
            offset += crop.size
    np.save(out / "crops.npy", np.concatenate(chunks) if chunks else np.zeros(0, np.uint8))
    meta = {"height": height, "margin": CACHE_MARGIN, "lines": index}
    (out / "index.json").write_text(json.dumps(meta, ensure_ascii=False))
    summary = {
        "lines": len(index),
        "dropped": dropped,
        "val": sum(i["split"] == "val" for i in index),
        "bytes": offset,
    }
    print(
        f"line_data: {summary['lines']} lines ({summary['val']} validation, {dropped} dropped for "
        f"markup) -> {out} ({offset / 2**20:.0f} MiB)"
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", help="folder of sets (each with manifest.jsonl + images) or one set")
    p.add_argument("--out", required=True)
    p.add_argument("--height", type=int, default=CACHE_HEIGHT)
    a = p.parse_args(argv)
    build_cache(a.root, a.out, a.height)
    return 0


if __name__ == "__main__":
    sys.exit(main())
