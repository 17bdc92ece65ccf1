"""batch.lines.group_lines on constructed layouts."""

from __future__ import annotations

import math
import random

import pytest

from batch.core.schema import Point, Word
from batch.lines import group_lines


def word(text: str, x0: float, y0: float, x1: float, y1: float) -> Word:
    return Word(
        text=text,
        confidence=0.9,
        det_score=0.9,
        polygon=[Point(x0, y0), Point(x1, y0), Point(x1, y1), Point(x0, y1)],
    )


def layout(
    lines: list[list[str]], top=100.0, pitch=50.0, height=30.0, left=40.0, gap=18.0, char_w=14.0
) -> list[Word]:
    """Words of each line laid out left to right; line k centred at top + k * pitch."""
    out = []
    for k, texts in enumerate(lines):
        cy, x = top + k * pitch, left
        for t in texts:
            w = char_w * len(t)
            out.append(word(t, x, cy - height / 2, x + w, cy + height / 2))
            x += w + gap
    return out


def rotate(words: list[Word], degrees: float, cx: float = 400, cy: float = 300) -> list[Word]:
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    for w in words:
        w.polygon = [
            Point(cx + (p.x - cx) * c - (p.y - cy) * s, cy + (p.x - cx) * s + (p.y - cy) * c)
            for p in w.polygon
        ]
    return words


def texts(lines) -> list[list[str]]:
    return [[w.text for w in ln.words] for ln in lines]


TEXT = [
    ["The", "quick", "brown", "fox", "jumps"],
    ["over", "the", "lazy", "dog", "and", "then"],
    ["runs", "far", "away", "again"],
]


def check_indices(lines):
    k = 0
    for li, ln in enumerate(lines):
        assert ln.line_idx == li
        for w in ln.words:
            assert w.line_idx == li and w.word_idx == k
            k += 1


@pytest.mark.parametrize("seed", range(5))
def test_shuffled_words_come_back_in_lines_and_reading_order(seed):
    words = layout(TEXT)
    random.Random(seed).shuffle(words)
    lines = group_lines(words)
    assert texts(lines) == TEXT
    check_indices(lines)
    assert [ln.text for ln in lines] == [" ".join(t) for t in TEXT]


@pytest.mark.parametrize("degrees", [5, -5, 3])
def test_skewed_page_still_groups_right(degrees):
    # long lines: at 5 degrees the right end of a line is lower than the next line's left end
    text = [[f"w{k}{j}" for j in range(10)] for k in range(4)]
    words = rotate(layout(text, pitch=45, char_w=20), degrees)
    ys = {w.text: sum(p.y for p in w.polygon) / 4 for w in words}
    if degrees == 5:
        assert ys["w09"] > ys["w10"]  # the layout really does defeat a plain y sort
    random.Random(1).shuffle(words)
    lines = group_lines(words)
    assert texts(lines) == text
    check_indices(lines)


def test_tall_ascenders_reaching_into_the_line_above_do_not_merge_lines():
    words = layout(TEXT, pitch=40, height=30)  # 10 px between line boxes
    # "lazy" (line 2) has a tall first letter: its box reaches 28 px up into line 1's box
    lazy = next(w for w in words if w.text == "lazy")
    for p in lazy.polygon[:2]:
        p.y -= 28
    lines = group_lines(list(reversed(words)))
    assert texts(lines) == TEXT


def test_long_descenders_reaching_into_the_line_below_do_not_merge_lines():
    words = layout(TEXT, pitch=40, height=30)
    # "brown" (line 1) has a deep descender: its box reaches 28 px down into line 2; "lazy",
    # below it, sits 2 px high (a wavering baseline), so it is the first of line 2 to be placed
    by_text = {w.text: w for w in words}
    for p in by_text["brown"].polygon[2:]:
        p.y += 28
    for p in by_text["lazy"].polygon:
        p.y -= 2
    lines = group_lines(words)
    assert texts(lines) == TEXT


def test_a_heading_of_tall_words_is_its_own_line():
    body = layout(TEXT, top=160, pitch=40, height=30)
    heading = layout([["Minutes", "of", "Meeting"]], top=80, height=64, char_w=28)
    lines = group_lines(heading[::-1] + body[::-1])
    assert texts(lines) == [["Minutes", "of", "Meeting"]] + TEXT
    check_indices(lines)


def test_small_punctuation_joins_its_line():
    words = layout([["Hello", "world"], ["next", "line"]])
    # a comma after "Hello": small, sitting low on the baseline of line 1
    hello = words[0]
    x1 = hello.polygon[1].x
    words.append(word(",", x1 + 1, 108, x1 + 7, 118))
    words.append(word(".", 400, 158, 405, 163))  # a full stop at the end of line 2
    lines = group_lines(words)
    assert texts(lines) == [["Hello", ",", "world"], ["next", "line", "."]]


def test_empty_and_single_word():
    assert group_lines([]) == []
    (line,) = group_lines([word("alone", 10, 10, 80, 40)])
    assert line.line_idx == 0 and texts([line]) == [["alone"]]
    assert line.words[0].word_idx == 0 and line.words[0].line_idx == 0


def test_words_on_one_line_far_apart_stay_one_line():
    words = [
        word("left", 20, 100, 90, 130),
        word("right", 700, 102, 790, 132),
        word("middle", 350, 98, 440, 128),
    ]
    lines = group_lines(words)
    assert texts(lines) == [["left", "middle", "right"]]
