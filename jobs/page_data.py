"""Real pages for the segmenter's line head: python -m jobs.page_data DATA/train --out runs/pages

Every page of every set (except RECOGNISER_ONLY sets, whose polygons are automatic and loose) is
scaled down once to at most MAX_SIDE pixels and stored as a JPEG with all its line polygons (any
number of points, lines dropped from the recogniser's data for their markup included: they are
still ink). Pages are tagged train/val from the same fixed split file as the line crops.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from jobs.line_data import RECOGNISER_ONLY, SPLIT_FILE, read_validation

MAX_SIDE = 1400  # the segmenter sees pages at ~1024 px (x1.25 jitter in training)


def _page_polygons(obj: dict) -> list[list[list[float]]]:
    polys = []
    for t in obj["annotations"]["texts"]:
        poly = [[float(p["x"]), float(p["y"])] for p in t["polygon"]]
        if len(poly) >= 3:
            polys.append(poly)
    return polys


def build_pages(root: str | Path, out: str | Path, split_file: Path = SPLIT_FILE) -> dict:
    """Write out/images/<set>/<page>.jpg and out/index.json; returns a summary."""
    from tqdm import tqdm

    from jobs.manifests import find_manifests

    out = Path(out)
    val = read_validation(split_file)
    todo = []
    for set_name, manifest in find_manifests([root]).items():
        if set_name in RECOGNISER_ONLY:
            continue
        for raw in manifest.read_text(encoding="utf-8").splitlines():
            if raw.strip():
                todo.append((set_name, manifest.parent, json.loads(raw)))
    index = []
    for set_name, folder, obj in tqdm(todo, desc="pages", unit="page"):
        path = folder / obj["source-ref"]
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            print(f"page_data: {path}: unreadable image, skipped", file=sys.stderr)
            continue
        scale = min(1.0, MAX_SIDE / max(img.shape[:2]))
        if scale < 1:
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        name = f"{set_name}/{path.name}"
        target = out / "images" / f"{name}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        polys = [(np.array(p) * scale).round(1).tolist() for p in _page_polygons(obj)]
        index.append(
            {
                "set": set_name,
                "page": path.name,
                "file": f"images/{name}.jpg",
                "split": "val" if name in val else "train",
                "lines": polys,
            }
        )
    (out / "index.json").write_text(json.dumps({"pages": index}))
    summary = {
        "pages": len(index),
        "val": sum(p["split"] == "val" for p in index),
        "lines": sum(len(p["lines"]) for p in index),
    }
    print(
        f"page_data: {summary['pages']} pages ({summary['val']} validation), {summary['lines']} lines -> {out}"
    )
    return summary


class PageCache:
    """The pages of one split: (RGB image, [N x 2 line polygons]) by index."""

    def __init__(self, folder: str | Path, split: str = "train"):
        self.folder = Path(folder)
        meta = json.loads((self.folder / "index.json").read_text())
        self.pages = [p for p in meta["pages"] if p["split"] == split]

    def __len__(self) -> int:
        return len(self.pages)

    def page(self, i: int) -> tuple[np.ndarray, list[np.ndarray]]:
        entry = self.pages[i]
        img = cv2.imread(str(self.folder / entry["file"]), cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(f"page cache {self.folder}: {entry['file']} is missing or unreadable")
        return (cv2.cvtColor(img, cv2.COLOR_BGR2RGB), [np.asarray(p, np.float32) for p in entry["lines"]])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", help="the real sets (e.g. ../shared/data/train)")
    p.add_argument("--out", default="runs/pages")
    args = p.parse_args(argv)
    build_pages(args.root, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
