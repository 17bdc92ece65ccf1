"""Evaluation metrics on constructed cases with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from batch.lines import group_lines
from batch.schema import Page, Point, Word
from jobs.evaluate import EvalPage, GtItem, bow_tokens, chance_bow, clean_text, evaluate
from jobs.metrics import DetectionScore, ErrorRate, bag_of_words_f1, levenshtein, match, polygon_iou


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
    assert [(i, j) for i, j, _ in m] == [(0, 0)]      # one-to-one: the duplicate is a false positive
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
        return Page(1, 200, 100, group_lines([_word("hello", 10, 10, 60, 30),
                                              _word("world", 70, 10, 130, 30)]))

    def wrong(_):
        return Page(1, 200, 100, group_lines([_word("xxxxx", 10, 60, 60, 80)]))

    m = evaluate([page], perfect, progress=False)
    assert m["word_det_f1"] == 1.0 and m["page_cer"] == 0.0 and m["bow_f1"] == 1.0
    m = evaluate([page], wrong, progress=False)
    assert m["word_det_f1"] == 0.0 and m["bow_f1"] == 0.0 and m["page_cer"] > 0.5


def test_line_level_scores_handwritten_lines_only():
    gt = [GtItem("Dear Sir", box(10, 10, 200, 40), handwritten=True),
          GtItem("PRINTED HEAD", box(10, 60, 200, 90), handwritten=False)]
    page = EvalPage("unused", gt, "line", _image=np.zeros((100, 220, 3), np.uint8))

    def predict(_):
        return Page(1, 220, 100, group_lines([_word("Dear", 10, 10, 90, 40), _word("Sir", 100, 10, 200, 40),
                                              _word("junk", 10, 60, 200, 90)]))

    m = evaluate([page], predict, progress=False)
    assert m["hw_bow_f1"] == 1.0          # the printed line's words are not counted
    assert m["hw_line_cer"] == 0.0
    assert m["line_det_f1"] == 1.0


def test_chance_baseline():
    same = [EvalPage("a", [GtItem("the cat", box(0, 0, 1, 1))], "line"),
            EvalPage("b", [GtItem("the cat", box(0, 0, 1, 1))], "line")]
    assert chance_bow(same) == 1.0
    diff = [EvalPage("a", [GtItem("the cat", box(0, 0, 1, 1))], "line"),
            EvalPage("b", [GtItem("a dog", box(0, 0, 1, 1))], "line")]
    assert chance_bow(diff) == 0.0
