"""Line reading: line geometry, segments, CTC word placement, per-line lexicon choice, and the
pipeline end to end with a line recogniser."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from batch.core.schema import Point, Word
from batch.pipeline import PageDetections, Pipeline, PipelineConfig, number_lines, split_segments
from models.charset import CHARSET, Codec
from models.recogniser.lexicon import Lexicon, pick_lexicon
from transforms.line_geometry import expand_quad, line_quad, span_polygon


def _word(x0, y0, x1, y1, text=""):
    return Word(text, 1.0, 1.0, [Point(x0, y0), Point(x1, y0), Point(x1, y1), Point(x0, y1)])


def test_line_quad_of_a_rotated_many_point_polygon():
    # a 400 x 30 line turned by 5 degrees, outlined by 40 points along its edges
    t = np.radians(5)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    xs = np.linspace(0, 400, 20)
    outline = np.concatenate([np.stack([xs, np.zeros(20)], 1), np.stack([xs[::-1], np.full(20, 30)], 1)])
    poly = outline @ rot.T + [100, 200]
    q = line_quad(poly)
    assert np.allclose(q[0], [100, 200], atol=1.0)  # TL first
    top = q[1] - q[0]
    assert np.degrees(np.arctan2(top[1], top[0])) == pytest.approx(5, abs=0.5)
    assert np.linalg.norm(top) == pytest.approx(400, abs=1.5)
    assert np.linalg.norm(q[3] - q[0]) == pytest.approx(30, abs=1.5)


def test_expand_and_span_polygon():
    q = np.array([[0, 0], [100, 0], [100, 20], [0, 20]], np.float32)
    e = expand_quad(q, 0.5, 0.25, 0.1)
    assert np.allclose(e, [[-2, -10], [102, -10], [102, 25], [-2, 25]])
    word = span_polygon(q, 0.25, 0.5)
    assert np.allclose(word, [[25, 0], [50, 0], [50, 20], [25, 20]])


def test_split_segments_at_wide_gaps_only():
    words = [_word(0, 0, 50, 20), _word(60, 0, 100, 20), _word(400, 0, 450, 20), _word(455, 0, 480, 20)]
    segs = split_segments(words)
    assert [len(s) for s in segs] == [2, 2]
    assert split_segments([]) == []


def test_number_lines_drops_empty_lines_and_numbers_words_across_the_page():
    a, b, c = _word(0, 0, 1, 1, "a"), _word(0, 0, 1, 1, "b"), _word(0, 0, 1, 1, "c")
    lines = number_lines({0: [a], 3: [b, c]})
    assert [ln.line_idx for ln in lines] == [0, 1]
    assert [(w.line_idx, w.word_idx) for w in (a, b, c)] == [(0, 0), (1, 1), (1, 2)]


def _line_log_probs(text: str, codec: Codec, frames_per_char: int = 2) -> torch.Tensor:
    """Confident frames spelling `text`, a blank between characters."""
    seq = []
    for ch in text:
        seq += [codec.index[ch]] * frames_per_char + [0]
    lp = torch.full((len(seq), codec.num_classes), -12.0)
    for t, k in enumerate(seq):
        lp[t, k] = -0.001
    return lp


def test_lexicon_rescores_a_misread_english_word_on_an_english_line():
    codec = Codec()
    text = "we went to tke market"
    lp = _line_log_probs(text, codec)
    # the smudged letter: 'h' nearly as likely as 'k' in the frames of "tke"
    k = text.index("tke") * 3 + 3
    lp[k : k + 2, codec.index["h"]] = -0.3
    en = Lexicon.english()
    from models.recogniser.crnn import word_spans

    spans = word_spans(lp, lp.shape[0], codec.index[" "])
    words = [(codec.decode_greedy(c), conf, f0, f1) for c, f0, f1, conf in spans]
    assert [w[0] for w in words] == text.split()
    lexicon = pick_lexicon([en, Lexicon.for_language("fr")], [w[0] for w in words])
    assert lexicon is en
    fixed = lexicon.rescore_line(words, lp, codec)
    assert [w[0] for w in fixed] == ["we", "went", "to", "the", "market"]
    assert [w[2:] for w in fixed] == [w[2:] for w in words]  # frames unchanged


def test_no_lexicon_for_lines_in_other_languages_or_of_names():
    en, fr = Lexicon.english(), Lexicon.for_language("fr")
    assert pick_lexicon([en, fr], ["la même localité est un sauteur à ski"]) is fr
    assert pick_lexicon([en, fr], ["Xqzt Brvlk Hjörn"]) is None
    # a badly read English page: a quarter of its words known is enough to pick English...
    assert pick_lexicon([en, fr], ["huy dear Mr Ledrap the Comreile of Lathrp"]) is en
    # ...but one known word among names and misreadings is not
    assert pick_lexicon([en, fr], ["Xqzt Brvlk Hjörn Pklr Wmnt the"]) is None
    assert pick_lexicon([], ["the cat"]) is None


def test_pipeline_reads_lines_with_a_line_recogniser(tiny_line_models):
    pipe = Pipeline.load(
        tiny_line_models, "cpu", PipelineConfig(lexicon="off", backend="torch", precision="fp32")
    )
    assert pipe.line_mode and pipe.codec.charset == CHARSET
    # two dark text-like bars on white paper
    page = np.full((300, 400, 3), 255, np.uint8)
    page[50:70, 40:360] = 30
    page[150:170, 40:300] = 30
    pages = pipe.process_pages([page])
    assert len(pages) == 1 and pages[0].width == 400 and pages[0].height == 300
    for line in pages[0].lines:
        for w in line.words:  # words lie on the page, in reading order
            x0, y0, x1, y1 = w.bbox
            assert -50 <= x0 < x1 <= 450 and -50 <= y0 < y1 <= 350
            assert 0.0 <= w.confidence <= 1.0
    idx = [w.word_idx for w in pages[0].words]
    assert idx == list(range(len(idx)))
    crop = pipe.line_crop(page[..., 0], np.array([[40, 50], [360, 50], [360, 70], [40, 70]], np.float32))
    assert crop.shape[0] == pipe.crop_height
    (read,) = pipe.read_lines([crop])
    assert all(0.0 <= u0 <= u1 <= 1.0 for _, _, u0, u1 in read)


def _dets(height: float, n: int = 5, lines: bool = False) -> PageDetections:
    found = [(np.array([[0, 0], [50, 0], [50, height], [0, height]], np.float32), 0.9)] * n
    return PageDetections([], found) if lines else PageDetections(found)


def test_text_far_from_the_learned_size_is_segmented_again_at_a_better_scale(tiny_line_models):
    pipe = Pipeline.load(
        tiny_line_models, "cpu", PipelineConfig(lexicon="off", backend="torch", precision="fp32")
    )
    page = np.zeros((4 * pipe.long_side, 3 * pipe.long_side, 3), np.uint8)  # the segmenter sees it at 1/4
    assert pipe._rescaled_side(page, _dets(96)) is None  # 24 px at the segmenter: as learned
    small = pipe._rescaled_side(page, _dets(16))  # 4 px: a 100-dpi form, tiny print
    assert small is not None and small > pipe.long_side
    large = pipe._rescaled_side(page, _dets(400))  # 100 px: a close-up photo
    assert large is not None and large < pipe.long_side
    assert (
        pipe._rescaled_side(page, _dets(0, 0)) == 2 * pipe.long_side
    )  # nothing found on a big page: look closer
    # a line head's lines are measured against the line heights it learned (36 px, not 24)
    assert pipe._rescaled_side(page, _dets(160, lines=True)) is None  # 40 px lines: as learned
    assert pipe._rescaled_side(page, _dets(320, lines=True)) < pipe.long_side  # 80 px lines
    tiny_page = np.zeros((pipe.long_side, pipe.long_side // 2, 3), np.uint8)
    assert pipe._rescaled_side(tiny_page, _dets(0, 0)) is None  # no pixels to gain


def _text_page() -> np.ndarray:
    import cv2

    page = np.full((800, 600, 3), 235, np.uint8)
    words = "the quick brown fox jumps over a lazy dog while many letters dance".split()
    for k, y in enumerate(range(60, 740, 40)):
        line = " ".join(words[(k + i) % len(words)] for i in range(4))
        cv2.putText(page, line, (30, y), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (20, 20, 20), 2)
    return page


def test_words_read_on_a_corrected_page_are_reported_in_source_pixels():
    from batch.core.schema import Line, Page
    from batch.pipeline import _to_source
    from transforms.page_normalise import PageFix, normalise_page

    page = _text_page()
    turned = np.ascontiguousarray(np.rot90(page))  # the scan came in sideways
    fixed, fix = normalise_page(turned)
    assert fixed.shape == page.shape and fix.quarter_turns % 2 == 1
    # a word at the first block of the upright page, wherever the corrected page put it
    ys, xs = np.nonzero(fixed[..., 0] < 100)
    x0, y0 = int(xs[len(xs) // 2]), int(ys[len(ys) // 2])  # one ink pixel, a tiny box around it
    w = _word(x0 - 1, y0 - 1, x0 + 1, y0 + 1, "a")
    p = Page(1, fixed.shape[1], fixed.shape[0], [Line(0, [w])])
    _to_source(p, fix, (2.0, 2.0))
    assert (p.width, p.height) == (2 * turned.shape[1], 2 * turned.shape[0])
    for pt in w.polygon:  # on the ink of the sideways scan
        x, y = int(pt.x / 2), int(pt.y / 2)
        assert 0 <= x < turned.shape[1] and 0 <= y < turned.shape[0]
    cx = int(np.mean([pt.x for pt in w.polygon]) / 2)
    cy = int(np.mean([pt.y for pt in w.polygon]) / 2)
    assert turned[cy - 1 : cy + 2, cx - 1 : cx + 2, 0].min() < 100
    half = PageFix.identity(300, 400).half_turned(300, 400)  # 180 degrees on its own
    assert np.allclose(half.to_source(np.array([[0, 0], [299, 399]])), [[299, 399], [0, 0]])
    h, w = fixed.shape[:2]  # composed with the sideways fix
    pts = np.array([[10.0, 20.0], [w - 5.0, h - 7.0]])
    assert np.allclose(fix.half_turned(w, h).to_source(pts), fix.to_source([w - 1, h - 1] - pts))


def test_pipeline_keeps_page_size_and_bounds_for_negative_and_sideways_scans(tiny_line_models):
    pipe = Pipeline.load(
        tiny_line_models, "cpu", PipelineConfig(lexicon="off", backend="torch", precision="fp32")
    )
    page = _text_page()
    for img in (255 - page, np.ascontiguousarray(np.rot90(page, 3))):
        (out,) = pipe.process_pages([img])
        assert (out.width, out.height) == (img.shape[1], img.shape[0])
        for w in out.words:
            x0, y0, x1, y1 = w.bbox
            assert -40 <= x0 and x1 <= img.shape[1] + 40 and -40 <= y0 and y1 <= img.shape[0] + 40


def test_words_take_the_segmenter_boxes_inside_their_ctc_stretch():
    from batch.pipeline import place_words

    quad = np.array([[0, 0], [200, 0], [200, 20], [0, 20]], np.float32)
    boxes = [_word(2, 3, 60, 17), _word(80, 2, 120, 18), _word(125, 2, 150, 18)]
    boxes[0].det_score, boxes[1].det_score, boxes[2].det_score = 0.9, 0.7, 0.5
    words = [("one", 0.8, 0.0, 0.32), ("two", 0.7, 0.38, 0.77), ("three", 0.6, 0.85, 0.99)]
    placed = place_words(words, quad, boxes)
    assert np.allclose(placed[0][2], [[2, 3], [60, 3], [60, 17], [2, 17]]) and placed[0][3] == 0.9
    x0, y0 = placed[1][2].min(0)  # two boxes in its stretch: one quad around both
    x1, y1 = placed[1][2].max(0)
    assert (x0, y0, x1, y1) == pytest.approx((80, 2, 150, 18), abs=0.5) and placed[1][3] == pytest.approx(0.6)
    assert np.allclose(placed[2][2], [[170, 0], [198, 0], [198, 20], [170, 20]])  # no box: its stretch
    assert placed[2][3] == pytest.approx(0.7)


def test_a_page_prepared_ahead_reads_like_the_page_itself(tiny_line_models):
    """htr run puts pages right on its decode threads (prepare_page): the same Page, in source
    pixels and with the source dpi, as when process_pages does it."""
    from dataclasses import asdict

    from transforms.rasterise import Raster

    pipe = Pipeline.load(
        tiny_line_models, "cpu", PipelineConfig(lexicon="off", backend="torch", precision="fp32")
    )
    img = np.ascontiguousarray(np.rot90(_text_page(), 3)).view(Raster)
    img.source_size, img.decoded_shape, img.dpi = (img.shape[1] * 2, img.shape[0] * 2), img.shape[:2], 150.0
    (direct,) = pipe.process_pages([img])
    (ahead,) = pipe.process_pages([pipe.prepare_page(img)])
    assert asdict(ahead) == asdict(direct)
    assert (ahead.width, ahead.height, ahead.dpi) == (img.shape[1] * 2, img.shape[0] * 2, 150.0)
