"""Real line data: markup clean-up, the fixed validation split, the crop cache and the line
training stream."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from jobs import line_data
from jobs.datasets import LineCache, LineCrops, line_eval_samples
from models.charset import Codec


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("la >maison< bleue", "la maison bleue"),  # crossed out but readable: the ink is there
        ("un <mot> barré", "un mot barré"),
        ("le ⟦texte⟧ rayé", "le texte rayé"),
        ("15^ne jour", "15ne jour"),  # superscript marker
        ("à la fin de la ligne¬", "à la fin de la ligne-"),  # line-end hyphen
        ("coupé au bout =", "coupé au bout -"),
        ("[note] en #marge⋎", "note en marge"),  # editorial brackets, insertion marks
        ("mot >< illisible", None),  # unreadable: the line cannot be learned
        ("texte <> biffé", None),
        ("{-displaystyle x}", None),  # LaTeX debris
        ("  ", None),
    ],
)
def test_clean_transcription(raw, clean):
    assert line_data.clean_transcription(raw) == clean


def test_validation_split_is_whole_pages_stable_and_per_set():
    pages = {"a": [f"p{i}.jpg" for i in range(50)], "b": ["x.jpg", "y.jpg", "z.jpg"]}
    val = line_data.choose_validation(pages)
    assert val == line_data.choose_validation({k: v[::-1] for k, v in pages.items()})  # order-free
    assert sum(v.startswith("a/") for v in val) == 4 and sum(v.startswith("b/") for v in val) == 2


def test_the_repo_split_file_lists_pages_of_every_real_set():
    val = line_data.read_validation()
    sets = {v.split("/")[0] for v in val}
    assert {"copiste_dun_jour", "timeus", "cremma_mss19", "peraire", "testaments_poilus"} <= sets
    assert all("/" in v and v.endswith((".jpg", ".png")) for v in val)


def _tiny_set(root, name="toy", pages=3):
    d = root / name
    (d / "images").mkdir(parents=True)
    rows = []
    for p in range(pages):
        img = np.full((300, 500), 240, np.uint8)
        texts = []
        for k, y in enumerate((60, 140, 220)):
            cv2.putText(img, f"line {p}{k}", (40, y), cv2.FONT_HERSHEY_SIMPLEX, 1.2, 20, 2)
            poly = [
                {"x": 30, "y": y - 35},
                {"x": 250, "y": y - 38},
                {"x": 260, "y": y + 12},
                {"x": 140, "y": y + 14},
                {"x": 30, "y": y + 10},
            ]  # 5 points, not a quad
            texts.append(
                {"text": f"line {p}{k}" if k != 2 else "mot >< illisible", "polygon": poly, "line_idx": k}
            )
        cv2.imwrite(str(d / "images" / f"page{p}.jpg"), img)
        rows.append({"source-ref": f"images/page{p}.jpg", "annotations": {"texts": texts}, "level": "line"})
    (d / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_cache_cuts_every_usable_line_and_tags_validation_pages(tmp_path):
    root = _tiny_set(tmp_path / "data")
    split = tmp_path / "validation.txt"
    split.write_text("# test split\ntoy/page1.jpg\n")
    summary = line_data.build_cache(root, tmp_path / "cache", split_file=split)
    assert summary == {"lines": 6, "dropped": 3, "val": 2, "bytes": summary["bytes"]}
    train, val = LineCache(tmp_path / "cache"), LineCache(tmp_path / "cache", "val")
    assert len(train) == 4 and len(val) == 2
    assert {ln["text"] for ln in val.lines} == {"line 10", "line 11"}
    crop = train.line_crop(0)  # the line at its quad: text inside, paper around
    assert crop.shape[0] == round(train.height / (1 + 2 * train.margin))
    assert crop.min() < 100 and np.median(crop) > 200
    codec = Codec()
    samples = line_eval_samples(tmp_path / "cache", 2048, codec)
    assert [s[2] for s in samples] and all(s[0].shape[1] == 32 for s in samples)
    stream = iter(
        LineCrops(tmp_path / "cache", codec, 2048, batch_size=4, seed=0, synthetic=0.0, pool_batches=2)
    )
    x, widths, targets, lengths, texts = next(stream)
    assert x.shape[0] == 4 and x.shape[2] == 32 and set(texts) <= {ln["text"] for ln in train.lines}
    assert int(lengths.sum()) == len(targets)
