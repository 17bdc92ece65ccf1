"""The synthetic engine: fonts, text, determinism, polygons around ink, word crops, the command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from batch.cli import main as htr
from batch.core.errors import EXIT_BAD_ARGS
from transforms import augment as A
from transforms import text_source as T
from transforms.fonts import CHARSET, library
from transforms.synth import WordCropSampler, render_page, write_crops, write_pages


@pytest.fixture(scope="module")
def pages() -> list[tuple]:
    return [render_page(np.random.default_rng(s)) for s in (11, 12)]


# ---- fonts and text -------------------------------------------------------------------------------


def test_enough_handwriting_fonts_and_no_tofu():
    lib = library()
    assert len(lib.hand) >= 25 and len(lib.printed) >= 3
    assert any(f.caps_only for f in lib.hand) and any(f.cursive for f in lib.hand)
    for font in lib.fonts:  # every character is drawable: by the font or by a fallback that has it
        for text, f in lib.runs(CHARSET.replace(" ", ""), font):
            assert all(c in f.covered for c in text)


def test_missing_fonts_are_a_typed_error():
    from batch.core.errors import HtrError
    from transforms.fonts import FontsUnavailable

    with pytest.raises(FontsUnavailable, match="apt-packages.txt") as e:
        library(min_hand=10_000)
    assert isinstance(e.value, HtrError)


def test_tokens_cover_the_charset_and_never_hold_spaces():
    rng = np.random.default_rng(0)
    tokens = [T.token(rng) for _ in range(6000)]
    assert all(t and " " not in t for t in tokens)
    assert set("".join(tokens)) == set(CHARSET) - {" "}
    prose = T.prose(rng, 50)
    assert len(prose) == 50 and not prose[0][0].islower() and prose[-1][-1] in ".?!"


# ---- pages --------------------------------------------------------------------------------------


def test_render_page_is_deterministic_by_seed(pages):
    again, _ = render_page(np.random.default_rng(11))
    assert np.array_equal(np.asarray(again), np.asarray(pages[0][0]))
    assert render_page(np.random.default_rng(11))[1] == pages[0][1]
    assert pages[0][1] != pages[1][1]


def test_page_words_are_well_formed(pages):
    for img, words in pages:
        assert img.mode == "RGB" and words
        w, h = img.size
        for word in words:
            assert word["type"] in ("H", "P") and isinstance(word["line_idx"], int)
            assert word["text"] and " " not in word["text"]
            pts = np.array([[p["x"], p["y"]] for p in word["polygon"]])
            assert pts.shape == (4, 2)
            assert (pts >= 0).all() and (pts[:, 0] <= w - 1).all() and (pts[:, 1] <= h - 1).all()
            x, y = pts[:, 0], pts[:, 1]  # clockwise on screen (y down) = positive shoelace sum
            assert float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) > 0
            assert np.argmin(x + y) == 0  # starts at the top-left corner


def test_polygons_sit_on_ink(pages):
    """Inside each polygon there is ink (clearly darker than the paper around the word)."""
    for img, words in pages:
        gray = np.asarray(img.convert("L"), np.float32)
        inked = 0
        for word in words:
            pts = np.array([[p["x"], p["y"]] for p in word["polygon"]])
            x0, y0 = np.floor(pts.min(0)).astype(int)
            x1, y1 = np.ceil(pts.max(0)).astype(int) + 1
            inside = gray[y0:y1, x0:x1]
            pad = max(4, (y1 - y0) // 2)
            around = gray[max(0, y0 - pad) : y1 + pad, max(0, x0 - pad) : x1 + pad]
            inked += float(inside.min()) < float(np.median(around)) - 25
        assert inked >= 0.9 * len(words)


def test_write_pages_same_seed_same_bytes(tmp_path):
    a = write_pages(1, tmp_path / "a", seed=5)
    b = write_pages(1, tmp_path / "b", seed=5)
    c = write_pages(1, tmp_path / "c", seed=6)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    img = "pages/page_000000.jpg"
    assert (tmp_path / "a" / img).read_bytes() == (tmp_path / "b" / img).read_bytes()
    line = json.loads(a.read_text().splitlines()[0])
    assert line["source-ref"] == img and line["annotations"]["texts"]


def test_page_geometry_moves_polygons_with_the_image():
    rng = np.random.default_rng(0)
    img = np.full((200, 300, 3), 255, np.uint8)
    img[80:100, 120:180] = 0
    poly = np.array([[[120, 80], [180, 80], [180, 100], [120, 100]]], np.float32)
    for out, moved in (
        A.rotate(img, poly, 10.0),
        A.perspective(img, poly, rng, 0.05),
        A.curl(img, poly, rng, 0.03),
    ):
        centre = moved[0].mean(0).round().astype(int)
        assert out[centre[1], centre[0]].mean() < 80  # the polygon still covers the dark block


# ---- crops --------------------------------------------------------------------------------------


def test_word_crops_are_deterministic_and_sane():
    a, b, c = WordCropSampler(3), WordCropSampler(3), WordCropSampler(4)
    sa = [a.sample() for _ in range(40)]
    sb = [b.sample() for _ in range(40)]
    sc = [c.sample() for _ in range(40)]
    assert all(np.array_equal(x[0], y[0]) and x[1] == y[1] for x, y in zip(sa, sb))
    assert [t for _, t in sa] != [t for _, t in sc]
    for img, text in sa:
        assert img.dtype == np.uint8 and img.ndim == 2
        assert 8 <= img.shape[0] <= 160 and img.shape[1] >= 4
        assert text and " " not in text and set(text) <= set(CHARSET)


def test_caps_only_fonts_only_write_capitals():
    sampler = WordCropSampler(9)
    lib = library()
    caps = [f for f in lib.hand if f.caps_only]
    rng = np.random.default_rng(0)
    from transforms.synth import _words, make_hand

    hand = make_hand(rng, lib, 20.0)
    hand.font = caps[0]
    words = _words(["hello", "World"], hand, rng, lib, cross_rate=0.0)
    assert [w.text for w in words] == ["HELLO", "WORLD"]
    assert sampler.sample()  # and the sampler still runs


def test_write_crops_manifest(tmp_path):
    path = write_crops(5, tmp_path, seed=1)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 5
    from jobs.manifests import read_manifest

    samples = read_manifest(path)
    assert all(len(s.annotations) == 1 and (tmp_path / s.source_ref).exists() for s in samples)


# ---- command --------------------------------------------------------------------------------------


def test_htr_synth_command(tmp_path):
    assert htr(["synth", "--pages", "1", "--crops", "3", "--out", str(tmp_path), "--seed", "2"]) == 0
    assert (tmp_path / "manifest.jsonl").exists() and (tmp_path / "crops.jsonl").exists()
    assert htr(["synth", "--out", str(tmp_path)]) == EXIT_BAD_ARGS
    assert htr(["synth", "--pages", "-1", "--out", str(tmp_path)]) == EXIT_BAD_ARGS


def test_augment_chains_for_real_data_are_deterministic():
    rng = np.random.default_rng(0)
    page = (A.paper(300, 200, rng)).astype(np.uint8)
    page[100:130, 40:160] = 30
    poly = np.array([[[40, 100], [160, 100], [160, 130], [40, 130]]], np.float32)
    a = A.augment_page(page, [poly[0]], np.random.default_rng(7))
    b = A.augment_page(page, poly, np.random.default_rng(7))
    assert np.array_equal(a[0], b[0]) and np.allclose(a[1], b[1]) and a[1].shape == (1, 4, 2)
    crop = page[90:140, 30:170, 0].copy()
    for seed in range(5):
        out = A.augment_crop(crop, np.random.default_rng(seed))
        assert out.dtype == np.uint8 and out.ndim == 2 and out.shape[0] == crop.shape[0]
        assert np.array_equal(out, A.augment_crop(crop, np.random.default_rng(seed)))


def test_heading_lines_are_names_addresses_or_titles_often_in_capitals():
    from transforms.synth_lines import heading_tokens

    rng = np.random.default_rng(3)
    printed = [heading_tokens(rng, printed=True) for _ in range(200)]
    written = [heading_tokens(rng, printed=False) for _ in range(200)]
    assert all(tokens and all(t.strip() == t and t for t in tokens) for tokens in printed + written)
    caps = lambda lines: sum(" ".join(t).isupper() for t in lines)  # noqa: E731
    assert caps(printed) > 60  # letterheads and form labels: often all capitals
    assert caps(written) < caps(printed) / 3


def test_every_part_of_the_engine_is_importable_from_transforms_synth():
    """transforms/synth.py was split into parts (#16 item 4): each name the parts define is still
    transforms.synth.NAME, the same object (other modules and running training jobs import them so)."""
    import ast
    import importlib

    import transforms.synth as synth

    parts = ("synth_hands", "synth_page", "synth_layouts", "synth_crops")
    seen = 0
    for part in parts:
        module = importlib.import_module(f"transforms.{part}")
        tree = ast.parse(open(module.__file__, encoding="utf-8").read())
        names = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        names += [
            t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
        ]
        assert names, part
        for name in names:
            assert getattr(synth, name, None) is getattr(module, name), f"transforms.synth.{name} ({part})"
            seen += 1
    assert seen >= 40  # 43 at the split
    for name in (
        "render_page",
        "WordCropSampler",
        "write_pages",
        "write_crops",
        "make_hand",
        "render_word",
        "_words",
        "_stamp",
        "Page",
        "LAYOUTS",
        "CROSSED_OUT",
    ):
        assert hasattr(synth, name), name
