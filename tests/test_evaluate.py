"""Evaluation metrics on constructed cases with known answers."""

from __future__ import annotations

import json
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from batch.core.schema import Page, Point, Word
from batch.lines import group_lines
from jobs.evaluate import (
    EvalPage,
    GtItem,
    bow_tokens,
    chance_bow,
    clean_text,
    evaluate,
    find_manifests,
    load_eval_set,
    normalise_text,
    pipeline_line_reader,
    read_page_list,
    reference_text,
)
from jobs.metrics import DetectionScore, ErrorRate, bag_of_words_f1, levenshtein, match, polygon_iou
from tests.test_metrics import wavy_line


def box(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


def test_levenshtein_and_rates():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    r = ErrorRate()
    r.add("helo", "hello")
    r.add("world", "world")
    assert r.rate == pytest.approx(1 / 10)


def test_iou_and_matching():
    assert polygon_iou(box(0, 0, 10, 10), box(0, 0, 10, 10)) == pytest.approx(1.0)
    assert polygon_iou(box(0, 0, 10, 10), box(5, 0, 15, 10)) == pytest.approx(1 / 3, rel=1e-3)
    assert polygon_iou(box(0, 0, 10, 10), box(20, 20, 30, 30)) == 0.0
    preds = [box(0, 0, 10, 10), box(1, 0, 11, 10), box(50, 50, 60, 60)]
    gts = [box(0, 0, 10, 10), box(100, 100, 110, 110)]
    m = match(preds, gts, 0.5)
    assert [(i, j) for i, j, _ in m] == [(0, 0)]  # one-to-one: the duplicate is a false positive
    s = DetectionScore()
    s.add(len(m), len(preds), len(gts))
    assert (s.precision, s.recall) == (pytest.approx(1 / 3), 0.5)
    assert s.f1 == pytest.approx(0.4)


def test_bag_of_words_and_normalisation():
    assert bag_of_words_f1(["a", "b", "b"], ["b", "a", "b"]) == 1.0
    assert bag_of_words_f1(["a"], ["b"]) == 0.0
    assert clean_text("March 21^st 1905") == "March 21st 1905"
    assert clean_text("it’s  ⟦struck⟧") == "it's struck"
    assert bow_tokens("Dear Sir, (the) end.") == ["dear", "sir", "the", "end"]


def _word(text, x0, y0, x1, y1):
    return Word(text, 0.9, 0.9, [Point(x0, y0), Point(x1, y0), Point(x1, y1), Point(x0, y1)])


def test_evaluate_perfect_and_wrong_predictions():
    gt = [GtItem("hello", box(10, 10, 60, 30)), GtItem("world", box(70, 10, 130, 30))]
    page = EvalPage("unused", gt, "word", _image=np.zeros((100, 200, 3), np.uint8))

    def perfect(_):
        return Page(
            1, 200, 100, group_lines([_word("hello", 10, 10, 60, 30), _word("world", 70, 10, 130, 30)])
        )

    def wrong(_):
        return Page(1, 200, 100, group_lines([_word("xxxxx", 10, 60, 60, 80)]))

    m = evaluate([page], perfect, progress=False)
    assert m["word_det_f1"] == 1.0 and m["page_cer"] == 0.0 and m["bow_f1"] == 1.0
    m = evaluate([page], wrong, progress=False)
    assert m["word_det_f1"] == 0.0 and m["bow_f1"] == 0.0 and m["page_cer"] > 0.5


def test_line_level_scores_handwritten_lines_only():
    gt = [
        GtItem("Dear Sir", box(10, 10, 200, 40), handwritten=True),
        GtItem("PRINTED HEAD", box(10, 60, 200, 90), handwritten=False),
    ]
    page = EvalPage("unused", gt, "line", _image=np.zeros((100, 220, 3), np.uint8))

    def predict(_):
        return Page(
            1,
            220,
            100,
            group_lines(
                [
                    _word("Dear", 10, 10, 90, 40),
                    _word("Sir", 100, 10, 200, 40),
                    _word("junk", 10, 60, 200, 90),
                ]
            ),
        )

    m = evaluate([page], predict, progress=False)
    assert m["bow_f1_handwritten"] == 1.0  # the printed line's words are not counted
    assert m["bow_f1_printed"] == 0.0  # ... but scored as printed
    assert m["line_det_f1"] == 1.0


def test_chance_baseline():
    same = [
        EvalPage("a", [GtItem("the cat", box(0, 0, 1, 1))], "line"),
        EvalPage("b", [GtItem("the cat", box(0, 0, 1, 1))], "line"),
    ]
    assert chance_bow(same) == 1.0
    diff = [
        EvalPage("a", [GtItem("the cat", box(0, 0, 1, 1))], "line"),
        EvalPage("b", [GtItem("a dog", box(0, 0, 1, 1))], "line"),
    ]
    assert chance_bow(diff) == 0.0


# ---- line-level ground truth: full polygons, GT line crops, sets ---------------------------------


def test_normalisation_is_the_same_for_prediction_and_reference():
    assert normalise_text("“Quote” – it’s\u00a0 e\u0301te\u0301\n  next") == '"Quote" - it\'s été next'
    assert clean_text("S^t Roch >crossed< ⟦out⟧ it’s") == "St Roch crossed out it's"
    # look-alike decorative capitals (stanford_memorials: "ORGᗅNIZEᗞ", "ᑕalifornia") are letters
    assert normalise_text("ORGᗅNIZEᗞ 1888. ᑕalifornia") == "ORGANIZED 1888. California"
    assert reference_text("struck and not transcribed ><") is None
    assert bow_tokens("L’Homme, «vite» — 1,000$!") == ["l'homme", "vite", "1,000"]
    gt = [GtItem("it’s “fine” —", box(10, 10, 200, 40))]
    page = EvalPage("unused", gt, "line", _image=np.zeros((60, 220, 3), np.uint8))
    m = evaluate(
        [page],
        lambda _: Page(
            1,
            220,
            60,
            group_lines(
                [
                    _word("it's", 10, 10, 60, 40),
                    _word('"fine"', 70, 10, 150, 40),
                    _word("-", 160, 10, 200, 40),
                ]
            ),
        ),
        progress=False,
    )
    assert m["page_cer"] == 0.0 and m["bow_f1"] == 1.0


def _poly_json(poly):
    return [{"x": float(x), "y": float(y)} for x, y in poly]


def _write_set(folder, pages, level="line", types=None):
    """pages: {image name: [(text, polygon)]}; draws a blank page per image."""
    folder.mkdir(parents=True, exist_ok=True)
    rows, type_rows = [], []
    for name, lines in pages.items():
        cv2.imwrite(str(folder / name), np.full((400, 600, 3), 255, np.uint8))
        row = {
            "source-ref": name,
            "annotations": {
                "texts": [
                    {"text": t, "polygon": _poly_json(p), "line_idx": k} for k, (t, p) in enumerate(lines)
                ]
            },
        }
        if level:
            row["level"] = level
        rows.append(json.dumps(row))
        if types:
            type_rows.append(json.dumps({"source-ref": name, "line_types": types[name]}))
    (folder / "manifest.jsonl").write_text("\n".join(rows) + "\n")
    if types:
        (folder / "line_types.jsonl").write_text("\n".join(type_rows) + "\n")
    return folder / "manifest.jsonl"


def test_load_eval_set_keeps_every_polygon_point_level_and_types(tmp_path):
    lines = [("One", wavy_line(top=50)), ("Two", wavy_line(top=120)), ("Three", wavy_line(top=190))]
    manifest = _write_set(
        tmp_path / "letters",
        {"a.png": lines, "b.png": lines[:1]},
        types={
            "a.png": ["DefaultLine:Handwritten", "DefaultLine:Print", "DefaultLine:Signature"],
            "b.png": ["untyped"],
        },
    )
    pages = load_eval_set(manifest)
    assert [p.level for p in pages] == ["line", "line"]  # from the manifest: the words have no spaces
    assert pages[0].set_name == "letters"
    assert [it.polygon.shape for it in pages[0].items] == [(40, 2)] * 3
    np.testing.assert_allclose(pages[0].items[1].polygon, lines[1][1])
    assert [it.line_type for it in pages[0].items] == ["handwritten", "printed", "signature"]
    assert pages[1].items[0].line_type == "other"
    assert [p.uri.endswith("b.png") for p in load_eval_set(manifest, pages={"b.png"})] == [True]


def _line_words(poly, texts):
    """Word boxes laid side by side across a GT line polygon's extent."""
    (x0, y0), (x1, y1) = poly.min(0), poly.max(0)
    step = (x1 - x0) / len(texts)
    return [_word(t, x0 + k * step, y0, x0 + (k + 1) * step - 4, y1) for k, t in enumerate(texts)]


def test_line_detection_scores_full_non_convex_polygons():
    polys = [wavy_line(top=40 + 70 * k, skew=0.0) for k in range(3)]
    page = EvalPage(
        "unused",
        [GtItem(f"line {k}", p) for k, p in enumerate(polys)],
        "line",
        _image=np.zeros((300, 450, 3), np.uint8),
    )
    words = [w for k, p in enumerate(polys) for w in _line_words(p, ["line", str(k)])]
    stray = _word("noise", 100, 260, 300, 290)

    m = evaluate([page], lambda _: Page(1, 450, 300, group_lines(words + [stray])), progress=False)
    assert m["line_det_recall"] == 1.0 and m["line_det_precision"] == 0.75
    assert "bow_f1_chance" not in m  # one page: no other page to draw chance from


def test_gt_line_crops_are_read_per_type_and_unusable_lines_left_out():
    polys = [wavy_line(top=40 + 70 * k, skew=0.0) for k in range(3)]
    items = [
        GtItem("Dear S^ir", polys[0], kind="handwritten"),
        GtItem("PRINTED", polys[1], kind="printed"),
        GtItem("struck out ><", polys[2], kind="handwritten"),
    ]
    page = EvalPage("unused", items, "line", _image=np.full((300, 450, 3), 255, np.uint8))
    seen = []

    def read_lines(gray, quads):
        seen.append((gray.shape, [q.copy() for q in quads]))
        return ["Dear Sir", "PRINTEX"]

    words = [
        w
        for p, ts in zip(polys, [["Dear", "Sir"], ["PRINTED"], ["struck", "out"]])
        for w in _line_words(p, ts)
    ]
    m = evaluate(
        [page], lambda _: Page(1, 450, 300, group_lines(words)), progress=False, read_lines=read_lines
    )
    ((shape, quads),) = seen
    assert shape == (300, 450) and len(quads) == 2  # the unusable line is not read
    (qx0, qy0), (qx1, qy1) = quads[0].min(0), quads[0].max(0)
    (px0, py0), (px1, py1) = polys[0].min(0), polys[0].max(0)
    assert qx0 < px0 and qy0 < py0 and qx1 > px1 and qy1 > py1  # the polygon's box with a margin
    assert m["crop_cer"] == pytest.approx(1 / 15)
    assert m["crop_cer_handwritten"] == 0.0 and m["crop_cer_printed"] == pytest.approx(1 / 7)
    assert m["line_det_f1"] == 1.0  # ... but its polygon is detected
    assert m["unusable_lines"] == 1
    assert m["bow_f1_handwritten"] == 1.0 and m["bow_f1_printed"] == 1.0


def test_word_crops_are_read_for_word_level_pages():
    gt = [GtItem("hello", box(10, 10, 60, 30)), GtItem("%math%", box(70, 10, 130, 30))]
    page = EvalPage("unused", gt, "word", _image=np.zeros((100, 200, 3), np.uint8))
    empty = lambda _: Page(1, 200, 100, [])  # noqa: E731
    m = evaluate([page], empty, lambda crops: ["hellp"] * len(crops), progress=False)
    assert m["crop_cer"] == pytest.approx(1 / 5) and m["crop_wer"] == 1.0


def test_split_files_and_set_folders(tmp_path):
    split = tmp_path / "validation.txt"
    split.write_text("# chosen once\nalpha/p1.png\nalpha/p3.png\nbeta/x.jpg\n\n")
    assert read_page_list(split) == {"alpha": {"p1.png", "p3.png"}, "beta": {"x.jpg"}}
    line = [("a b", wavy_line())]
    for name in ("alpha", "beta"):
        _write_set(tmp_path / "sets" / name, {"p1.png": line})
    assert list(find_manifests([tmp_path / "sets"])) == ["alpha", "beta"]
    assert list(find_manifests([tmp_path / "sets" / "beta"])) == ["beta"]
    assert list(
        find_manifests([tmp_path / "sets" / "beta" / "manifest.jsonl", tmp_path / "sets" / "alpha"])
    ) == ["beta", "alpha"]
    with pytest.raises(FileNotFoundError):
        find_manifests([tmp_path])


def test_word_models_read_gt_lines_in_slices_line_models_whole():
    gray = np.full((100, 400), 255, np.uint8)
    quad = box(0, 0, 300, 32)
    word_pipe = SimpleNamespace(
        line_mode=False,
        crop_height=32,
        max_width=64,
        recognise=lambda crops: [(f"[{c.shape[1]}]", 0.9) for c in crops],
    )
    assert pipeline_line_reader(word_pipe)(gray, [quad, box(0, 0, 50, 32)]) == [
        "[64][64][64][64][44]",
        "[50]",
    ]
    cut = []
    line_pipe = SimpleNamespace(
        line_mode=True,
        crop_height=32,
        max_width=2048,
        line_crop=lambda g, q: cut.append(q) or np.zeros((32, 300), np.uint8),
        read_lines=lambda crops: [[("Dear", 0.9, 0.0, 0.4), ("Sir", 0.8, 0.5, 1.0)] for _ in crops],
    )
    assert pipeline_line_reader(line_pipe)(gray, [quad]) == ["Dear Sir"]
    assert len(cut) == 1 and cut[0] is quad


@pytest.mark.slow  # builds and runs a line recogniser
def test_tiny_line_model_reads_gt_line_crops(tmp_path):
    from batch.pipeline import Pipeline, PipelineConfig
    from models.checkpoints import make_tiny_models

    pipe = Pipeline.load(
        make_tiny_models(tmp_path, lines=True), "cpu", PipelineConfig(lexicon=False, backend="torch")
    )
    assert pipe.line_mode
    gray = np.full((200, 600), 255, np.uint8)
    cv2.putText(gray, "Dear Sir", (20, 80), cv2.FONT_HERSHEY_SIMPLEX, 1.5, 0, 3)
    texts = pipeline_line_reader(pipe)(gray, [box(10, 40, 400, 100), box(10, 120, 300, 180)])
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_htr_eval_scores_each_set_and_overall(tmp_path, constant_models, capsys):
    """The constant models read every page as one word "x" covering the page, and every line crop
    narrower than 512 px as "x": the numbers below follow from that."""
    from batch.cli import main

    line = lambda top: wavy_line(x0=40, x1=340, top=top, height=40, skew=0.0)  # noqa: E731
    _write_set(
        tmp_path / "sets" / "alpha",
        {"p1.png": [("ax by", line(60)), ("cx dx", line(160))], "p2.png": [("never scored", line(60))]},
    )
    _write_set(
        tmp_path / "sets" / "beta",
        {"q.png": [("xx", line(60)), ("HEAD", line(160))]},
        types={"q.png": ["DefaultLine:Handwritten", "DefaultLine:Print"]},
    )
    split = tmp_path / "val.txt"
    split.write_text("# validation\nalpha/p1.png\n")
    out = tmp_path / "eval.json"
    rc = main(
        [
            "eval",
            "--manifest",
            str(tmp_path / "sets"),
            "--models",
            str(constant_models),
            "--backend",
            "torch",
            "--no-lexicon",
            "--device",
            "cpu",
            "--pages-from",
            str(split),
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    alpha, beta, overall = res["sets"]["alpha"], res["sets"]["beta"], res["overall"]
    assert (alpha["pages"], beta["pages"], overall["pages"]) == (1, 1, 2)  # p2 is not in the split
    assert alpha["page_cer"] == pytest.approx(10 / 11)  # "x" vs "ax by cx dx"
    assert alpha["crop_cer"] == pytest.approx(8 / 10)  # "x" vs "ax by", "x" vs "cx dx"
    assert beta["page_cer"] == pytest.approx(6 / 7)  # "x" vs "xx HEAD"
    assert beta["crop_cer_handwritten"] == pytest.approx(1 / 2)
    assert beta["crop_cer_printed"] == 1.0
    assert "crop_cer_handwritten" not in alpha  # no line types there
    assert overall["page_cer"] == pytest.approx(16 / 18)  # micro-average over both sets
    assert overall["crop_cer"] == pytest.approx(13 / 16)
    assert alpha["line_det_recall"] == 0.0  # one box over the whole page
    printed = capsys.readouterr().out
    assert "alpha" in printed and "overall" in printed and "crop_cer" in printed
    assert "htr eval: overall: 2 pages" in printed.splitlines()[-1]
