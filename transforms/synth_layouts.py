"""The synthetic-data engine's page layouts (transforms layer; transforms/synth.py is the map).

Real paperwork, each a function that writes one kind of page on a Page: letters with
letterheads, dates and signatures, notes, lists, forms with printed labels and handwritten
answers, interlinear corrections, margin notes, marks and stamps. LAYOUTS names them."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np

from transforms import augment as A
from transforms import text_source as T
from transforms.fonts import FontLibrary
from transforms.synth_hands import Hand, InkWord, cross_out, make_hand, render_word
from transforms.synth_page import Page, _overlaps, commit_line, draft_line, write_line


@dataclass
class Frame:
    """Writing area and vertical cursor."""

    left: float
    right: float
    top: float
    bottom: float
    y: float


def _words(
    tokens: list[str], hand: Hand, rng: np.random.Generator, lib: FontLibrary, cross_rate: float = 0.015
) -> list[InkWord]:
    out = []
    for t in tokens:
        if hand.font.caps_only and any(c.islower() for c in t):
            t = t.upper()
        if not t.strip():
            continue  # nothing drawable: an empty word would have no ink and no label
        w = render_word(t, hand, rng, lib)
        if hand.kind == "H" and rng.random() < cross_rate:
            w = cross_out(w, rng)
        out.append(w)
    return out


def paragraph(
    page: Page,
    fr: Frame,
    tokens: list[str],
    hand: Hand,
    rng: np.random.Generator,
    lib: FontLibrary,
    indent: float = 0.0,
    rules: np.ndarray | None = None,
) -> None:
    """Wrap tokens into lines inside the frame (ragged right), moving the cursor down. Words are
    rendered a line's worth at a time, so text that will not fit is never drawn."""
    pending, first = list(tokens), True
    words: list[Any] = []
    while (pending or words) and fr.y < fr.bottom:
        while pending and len(words) < 16:
            words += _words([pending.pop(0)], hand, rng, lib)
        fr.y = _snap(fr.y, rules)
        ind = indent if first else rng.normal(0, 0.2) * hand.x_height
        left = fr.left + ind + rng.normal(0, 0.15 * hand.x_height)
        n = write_line(page, words, hand, left, fr.y, fr.right - left, rng)
        words = words[max(1, n) :]
        if hand.kind == "H" and n >= 2 and rng.random() < 0.04:
            interlinear(page, hand, rng, lib)
        fr.y += hand.line_gap * hand.x_height * rng.uniform(0.95, 1.05)
        first = False


def interlinear(page: Page, hand: Hand, rng: np.random.Generator, lib: FontLibrary) -> None:
    """A word squeezed in above the last line, between two of its words, with a caret below:
    its own (short) line, as transcribers mark interlinear additions."""
    line = [w for w in page.words if w.line_idx == page.next_line - 1]
    i = int(rng.integers(len(line) - 1))
    left, right = line[i].polygon, line[i + 1].polygon
    small = replace(hand, x_height=hand.x_height * rng.uniform(0.6, 0.8), skew=0.0, skew_jitter=1.0)
    word = _words([T.english_word(rng, flatten=0.85)], small, rng, lib, cross_rate=0.0)
    gap_x = (left[1, 0] + right[0, 0]) / 2
    top = min(left[:, 1].min(), right[:, 1].min())
    descent = word[0].box[3] - word[0].baseline  # keep descenders clear of the line below
    draft = draft_line(
        word, small, gap_x - (word[0].box[2] - word[0].box[0]) / 2, top - 3 - descent, page.w, rng
    )
    if _overlaps(page, draft.bbox(-1.0)):
        return
    commit_line(page, draft)
    base = float(max(left[:, 1].max(), right[:, 1].max()))
    s = hand.x_height * 0.5
    cv2.polylines(
        page.img,
        [
            np.array(
                [[gap_x - s / 2, base + s * 0.3], [gap_x, base - s * 0.6], [gap_x + s / 2, base + s * 0.3]],
                np.int32,
            )
        ],
        False,
        tuple(float(c) for c in hand.ink),
        max(1, int(hand.x_height / 12)),
        cv2.LINE_AA,
    )


def _snap(y: float, rules: np.ndarray | None) -> float:
    """On ruled paper the baseline sits on the next rule (a little above it, as people write)."""
    if rules is None or len(rules) == 0:
        return y
    nxt = rules[rules >= y - 2]
    return float(nxt[0] - 2) if len(nxt) else y


def single_line(
    page: Page,
    fr: Frame,
    tokens: list[str],
    hand: Hand,
    rng: np.random.Generator,
    lib: FontLibrary,
    align: str = "left",
    gap: float | None = None,
    rules: np.ndarray | None = None,
    indent: float = 0.0,
) -> None:
    """One line aligned left / right / centre (dates, salutations, signatures, headings)."""
    if fr.y >= fr.bottom:
        return
    words = _words(tokens, hand, rng, lib)
    fr.y = _snap(fr.y, rules)
    width = sum(w.box[2] - w.box[0] for w in words) + hand.word_space * hand.x_height * (len(words) - 1)
    span = fr.right - fr.left
    if align == "right":
        x = fr.left + max(0.0, span - width) - rng.uniform(0, 0.15) * span
    elif align == "centre":
        x = fr.left + max(0.0, (span - width) / 2) + rng.normal(0, 0.02) * span
    elif align == "anywhere":
        x = fr.left + rng.uniform(0, max(1.0, span - width))
    else:
        x = fr.left + indent + rng.normal(0, 0.2) * hand.x_height
    x = max(fr.left * 0.5, x)
    write_line(page, words, hand, x, fr.y, fr.right - x + hand.x_height * 2, rng)
    fr.y += (hand.line_gap if gap is None else gap) * hand.x_height


def letterhead(page: Page, fr: Frame, rng: np.random.Generator, lib: FontLibrary) -> Hand:
    """Printed header: organisation name, address, perhaps officers in two columns. Returns the
    small print hand (for a pre-printed date line)."""
    xh = max(7.0, page.w * rng.uniform(1 / 160, 1 / 90))  # small print, but legible at this scan size
    name = [
        t.upper() if rng.random() < 0.5 else t.capitalize()
        for t in T.english_words(rng, int(rng.integers(2, 6)), flatten=0.5)
    ]
    big = make_hand(rng, lib, xh * rng.uniform(1.4, 2.2), "P")
    fr.y = fr.top + big.x_height * 2
    single_line(page, fr, name, big, rng, lib, align=str(rng.choice(["centre", "left"])), gap=2.4)
    small = make_hand(rng, lib, xh, "P")
    small.ink = big.ink
    for line in T.address(rng)[: int(rng.integers(1, 3))]:
        single_line(page, fr, line, small, rng, lib, align="centre", gap=2.4)
    if rng.random() < 0.4:  # officers' columns, left and right
        col = Frame(fr.left, fr.left + (fr.right - fr.left) * 0.3, fr.top, fr.bottom, fr.top + xh * 2)
        col2 = Frame(fr.right - (fr.right - fr.left) * 0.3, fr.right, fr.top, fr.bottom, fr.top + xh * 2)
        caps = rng.random() < 0.5
        for c in (col, col2):
            for _ in range(int(rng.integers(2, 5))):
                single_line(
                    page,
                    c,
                    [rng.choice(["President:", "Secretary:", "Treasurer:", "Office:"])],
                    small,
                    rng,
                    lib,
                    gap=2.0,
                )
                name = T.person(rng)
                single_line(page, c, [t.upper() for t in name] if caps else name, small, rng, lib, gap=2.6)
        fr.y = max(fr.y, col.y, col2.y)
    fr.y += xh * rng.uniform(2, 6)
    return small


def dated_line(
    page: Page, fr: Frame, hand: Hand, printed: Hand, rng: np.random.Generator, lib: FontLibrary
) -> None:
    """A pre-printed 'Town, ______' line on the letterhead with the date written on the rule."""
    span = fr.right - fr.left
    x, y = fr.left + span * rng.uniform(0.3, 0.55), fr.y
    x_end = _words_at(page, [T._pick(rng, T.TOWNS) + ","], printed, x, y, rng, lib)
    rule_end = fr.right - span * rng.uniform(0.0, 0.05)
    cv2.line(
        page.img,
        (int(x_end + printed.x_height * 0.3), int(y + 2)),
        (int(rule_end), int(y + 2)),
        tuple(float(c) for c in printed.ink),
        max(1, int(printed.x_height / 8)),
    )
    start = x_end + hand.x_height * rng.uniform(0.5, 2.0)
    write_line(
        page,
        _words(T.date(rng), hand, rng, lib),
        hand,
        start,
        y - rng.uniform(0, 0.2) * hand.x_height,
        max(hand.x_height * 4, rule_end - start + hand.x_height * 2),
        rng,
    )
    fr.y += hand.line_gap * hand.x_height


def layout_letter(
    page: Page,
    fr: Frame,
    hands: list[Hand],
    rng: np.random.Generator,
    lib: FontLibrary,
    rules: np.ndarray | None,
) -> None:
    h = hands[0]
    printed = letterhead(page, fr, rng, lib) if rules is None and rng.random() < 0.5 else None
    fr.y += h.x_height * 2
    if printed is not None and rng.random() < 0.5:
        dated_line(page, fr, h, printed, rng, lib)
    else:
        single_line(page, fr, T.date(rng), h, rng, lib, align="right", rules=rules)
    if rng.random() < 0.45:  # addressee block, often indented step by step
        step = h.x_height * rng.uniform(1.5, 5) if rng.random() < 0.5 else 0.0
        for i, line in enumerate([T.person(rng)] + T.address(rng)):
            single_line(page, fr, line, h, rng, lib, gap=h.line_gap * 0.9, rules=rules, indent=i * step)
    writer = h
    if rules is None and rng.random() < 0.12:  # typed letter, signed and annotated by hand
        writer = make_hand(rng, lib, h.x_height * rng.uniform(0.6, 0.85), "P", typewriter=True)
    single_line(page, fr, T.salutation(rng), writer, rng, lib, rules=rules)
    body = replace(fr, bottom=fr.bottom - 2.2 * h.line_gap * h.x_height)  # room for closing + signature
    for _ in range(int(rng.integers(2, 7))):  # letters fill the sheet; the frame stops them at the bottom
        paragraph(
            page,
            body,
            T.prose(rng, int(rng.integers(12, 90))),
            writer,
            rng,
            lib,
            indent=writer.x_height * rng.uniform(0, 10),
            rules=rules,
        )
    fr.y = body.y
    single_line(page, fr, T.closing(rng), h, rng, lib, align="right", rules=rules)
    signature(page, fr, h, rng, lib, rules)
    if len(hands) > 1:
        annotate(page, fr, hands[1], rng, lib)


def layout_note(
    page: Page,
    fr: Frame,
    hands: list[Hand],
    rng: np.random.Generator,
    lib: FontLibrary,
    rules: np.ndarray | None,
) -> None:
    h = hands[0]
    if rng.random() < 0.6:
        single_line(
            page,
            fr,
            T.date(rng) if rng.random() < 0.5 else T.prose(rng, int(rng.integers(1, 4))),
            h,
            rng,
            lib,
            align=str(rng.choice(["left", "right", "centre"])),
            rules=rules,
        )
    while fr.y < fr.bottom - h.x_height * 4:
        paragraph(
            page,
            fr,
            T.prose(rng, int(rng.integers(5, 60))),
            h,
            rng,
            lib,
            indent=h.x_height * rng.uniform(0, 3) * (rng.random() < 0.5),
            rules=rules,
        )
        fr.y += h.x_height * rng.uniform(0, 2)
        if rng.random() < 0.25:
            break
    for other in hands[1:]:
        annotate(page, fr, other, rng, lib)


def layout_list(
    page: Page,
    fr: Frame,
    hands: list[Hand],
    rng: np.random.Generator,
    lib: FontLibrary,
    rules: np.ndarray | None,
) -> None:
    h = hands[0]
    single_line(
        page,
        fr,
        [t.capitalize() for t in T.english_words(rng, int(rng.integers(1, 4)))]
        + [":"] * (rng.random() < 0.3),
        h,
        rng,
        lib,
        align=str(rng.choice(["left", "centre"])),
        rules=rules,
    )
    bullet = str(rng.choice(["-", "*", "num", "num)", "none", "o"]))
    priced = rng.random() < 0.4
    i = 1
    while fr.y < fr.bottom and i < 40:
        item = T.prose(rng, int(rng.integers(1, 6)))
        item[-1] = item[-1].rstrip(".") if rng.random() < 0.7 else item[-1]
        if bullet == "num":
            item.insert(0, f"{i}.")
        elif bullet == "num)":
            item.insert(0, f"{i})")
        elif bullet != "none":
            item.insert(0, bullet)
        if priced:
            item.append(T.money(rng))
        single_line(page, fr, item, h, rng, lib, rules=rules)
        i += 1
    for other in hands[1:]:
        annotate(page, fr, other, rng, lib)


FORM_LABELS = [
    "Name:",
    "Surname:",
    "First name:",
    "Address:",
    "Date:",
    "Date of birth:",
    "Tel:",
    "Phone:",
    "Email:",
    "Signature:",
    "Amount:",
    "Ref.",
    "No.",
    "Account:",
    "Occupation:",
    "Town:",
    "Postcode:",
    "Received from:",
    "The sum of:",
    "For:",
    "Remarks:",
    "Order No.",
    "Qty",
    "Item",
]


def layout_form(
    page: Page,
    fr: Frame,
    hands: list[Hand],
    rng: np.random.Generator,
    lib: FontLibrary,
    rules: np.ndarray | None,
) -> None:
    """Printed title and labels with handwritten answers on underlines."""
    h = hands[0]
    label = make_hand(rng, lib, h.x_height * rng.uniform(0.6, 0.9), "P")
    title = make_hand(rng, lib, label.x_height * rng.uniform(1.5, 2.2), "P")
    title.ink = label.ink
    single_line(
        page,
        fr,
        [t.upper() for t in T.english_words(rng, int(rng.integers(1, 5)), flatten=0.5)],
        title,
        rng,
        lib,
        align="centre",
        gap=3.5,
    )
    fr.y += h.x_height * 2
    while fr.y < fr.bottom - h.x_height * 2:
        lab = str(rng.choice(FORM_LABELS))
        row = Frame(fr.left, fr.right, fr.top, fr.bottom, fr.y)
        lab_w = (
            _words_at(page, lab.split(), label, row.left, row.y, rng, lib)
            - row.left
            + h.x_height * rng.uniform(0.5, 1.5)
        )
        line_col = tuple(float(c) for c in label.ink)
        cv2.line(
            page.img,
            (int(row.left + lab_w), int(row.y + h.x_height * 0.4)),
            (int(row.right), int(row.y + h.x_height * 0.4)),
            line_col,
            max(1, int(h.x_height / 15)),
        )
        answer = _form_answer(lab, rng)
        write_line(
            page,
            _words(answer, h, rng, lib),
            h,
            row.left + lab_w + rng.uniform(0, 2) * h.x_height,
            row.y + rng.normal(0, 0.1) * h.x_height,
            row.right - row.left - lab_w,
            rng,
        )
        fr.y += h.x_height * h.line_gap * rng.uniform(1.0, 1.4)
    for other in hands[1:]:
        annotate(page, fr, other, rng, lib)


def _words_at(
    page: Page, tokens: list[str], hand: Hand, x: float, y: float, rng: np.random.Generator, lib: FontLibrary
) -> float:
    """Write tokens on one unskewed line at (x, y); returns the x where their ink ends."""
    n0 = len(page.words)
    write_line(page, _words(tokens, hand, rng, lib), hand, x, y, page.w - x, rng, angle=0.0)
    return max([float(w.polygon[:, 0].max()) for w in page.words[n0:]], default=x)


def _form_answer(label: str, rng: np.random.Generator) -> list[str]:
    lab = label.lower()
    if "date" in lab:
        return T.date(rng)
    if "name" in lab or "from" in lab or "signature" in lab:
        return T.person(rng)
    if "address" in lab:
        return T.address(rng)[-1]
    if "tel" in lab or "phone" in lab:
        return [T.phone(rng)]
    if "email" in lab:
        return [f"{T.english_word(rng)}{int(rng.integers(0, 99))}@{T.english_word(rng)}.com"]
    if "amount" in lab or "sum" in lab:
        return [T.money(rng)]
    if "no" in lab or "ref" in lab or "qty" in lab or "account" in lab:
        return [T.number(rng) if rng.random() < 0.5 else T.rare_token(rng)]
    return T.prose(rng, int(rng.integers(1, 6)))


def annotate(page: Page, fr: Frame, hand: Hand, rng: np.random.Generator, lib: FontLibrary) -> None:
    """A second hand: a P.S. below the text, or a note at an angle in free space (margins, top),
    never over other words: overlapping labels would teach the detector nonsense."""
    words = _words(T.prose(rng, int(rng.integers(1, 7))), hand, rng, lib)
    if rng.random() < 0.35 and fr.y < page.h - hand.x_height * 4:
        y = min(fr.y + hand.x_height * 2, page.h - hand.x_height * 3)
        line = draft_line(_words(["P.S."], hand, rng, lib) + words, hand, fr.left, y, fr.right - fr.left, rng)
        if not _overlaps(page, line.bbox(hand.x_height * 0.3)):
            commit_line(page, line)
        return
    angle = float(rng.choice([rng.uniform(-40, 40), rng.normal(0, 3)]))
    width = page.w * rng.uniform(0.15, 0.35)
    for _ in range(12):  # find a free spot for the whole note, line by line
        x, y = rng.uniform(0.01, 0.8) * page.w, rng.uniform(0.03, 0.97) * page.h
        lines: list[Any] = []
        rest = words
        while rest and len(lines) < 3:
            line = draft_line(rest, hand, x, y, width, rng, angle=angle)
            lines.append(line)
            rest = rest[len(line.words) :]
            y += hand.line_gap * hand.x_height * math.cos(math.radians(angle))
            x -= hand.line_gap * hand.x_height * math.sin(math.radians(angle))
        if not any(_overlaps(page, ln.bbox(hand.x_height * 0.5)) for ln in lines):
            for ln in lines:
                commit_line(page, ln)
            return


def signature(
    page: Page, fr: Frame, hand: Hand, rng: np.random.Generator, lib: FontLibrary, rules: np.ndarray | None
) -> None:
    """The writer's name, bigger and more slanted than the text, often with a flourish under it."""
    sig = Hand(**{**hand.__dict__})
    sig.x_height = hand.x_height * rng.uniform(1.0, 1.7)
    sig.slant = hand.slant + rng.uniform(0.0, 0.25)
    sig.stretch = hand.stretch * rng.uniform(1.0, 1.4)
    n0 = len(page.words)
    single_line(
        page, fr, T.person(rng)[-int(rng.integers(1, 3)) :], sig, rng, lib, align="right", rules=rules
    )
    if len(page.words) > n0 and rng.random() < 0.5:  # unlabelled flourish under the name
        poly = np.concatenate([w.polygon for w in page.words[n0:]])
        (x0, _), (x1, y1) = poly.min(0), poly.max(0)
        t = np.linspace(0, 1, 24)
        xs = x0 + (x1 - x0) * (t * rng.uniform(1.0, 1.2) - rng.uniform(0, 0.1))
        ys = y1 + sig.x_height * (0.3 + rng.uniform(0.1, 0.5) * np.sin(np.pi * t * rng.uniform(1, 3)))
        cv2.polylines(
            page.img,
            [np.stack([xs, ys], 1).astype(np.int32)],
            False,
            tuple(float(c) for c in hand.ink),
            max(1, int(sig.x_height / 12)),
            cv2.LINE_AA,
        )


def marks(page: Page, hands: list[Hand], fr: Frame, rng: np.random.Generator) -> None:
    """Unlabelled pen marks real pages have: ticks, underlines, margin strokes, a stamp."""
    h = hands[0]
    colour = tuple(float(c) for c in h.ink)
    th = max(1, int(h.x_height / 10))
    for _ in range(int(rng.integers(0, 4))):
        s = h.x_height * rng.uniform(0.8, 2.5)
        kind = rng.random()
        if kind < 0.35:  # tick in the margin
            x, y = (
                rng.uniform(0.01, max(0.02, fr.left / page.w - 0.02)) * page.w,
                rng.uniform(0.05, 0.95) * page.h,
            )
            pts = np.array([[x, y], [x + s * 0.3, y + s * 0.4], [x + s, y - s * 0.6]], np.int32)
        elif kind < 0.75 and page.words:  # underline a word
            p = page.words[int(rng.integers(len(page.words)))].polygon
            pts = np.array([p[3] + (0, th * 2), p[2] + (0, th * 2 + rng.normal(0, th))], np.int32)
        else:  # vertical stroke in the left margin
            x, y = fr.left - rng.uniform(0.3, 1.5) * h.x_height, rng.uniform(0.1, 0.8) * page.h
            pts = np.array([[x, y], [x + rng.normal(0, s * 0.1), y + s * rng.uniform(2, 6)]], np.int32)
        cv2.polylines(page.img, [pts], False, colour, th, cv2.LINE_AA)
    if rng.random() < 0.05:
        stamp(page, rng, h.x_height)
    if rng.random() < 0.12:  # a reader's big tick at the top of the sheet
        x, y, s = (
            rng.uniform(0.3, 0.8) * page.w,
            rng.uniform(0.02, 0.06) * page.h,
            h.x_height * rng.uniform(1.5, 3),
        )
        pts = np.array(
            [[x, y + s * 0.3], [x + s * 0.25, y + s], [x + s * rng.uniform(0.8, 1.2), y - s * 0.2]], np.int32
        )
        cv2.polylines(page.img, [pts], False, colour, max(2, th), cv2.LINE_AA)


def stamp(page: Page, rng: np.random.Generator, xh: float) -> None:
    """A round rubber stamp (unlabelled, as archives leave them): two rings and a date bar."""
    r = int(xh * rng.uniform(2.5, 4.5))
    cx, cy = int(rng.uniform(0.5, 0.9) * page.w), int(rng.uniform(0.03, 0.2) * page.h + r)
    colour = [(120, 60, 160), (170, 40, 50), (40, 60, 150)][int(rng.integers(3))]
    layer: np.ndarray = np.zeros((2 * r + 8, 2 * r + 8), np.float32)
    c = (r + 4, r + 4)
    cv2.circle(layer, c, r, 1.0, max(2, r // 14), cv2.LINE_AA)
    cv2.circle(layer, c, int(r * 0.72), 1.0, max(1, r // 20), cv2.LINE_AA)
    cv2.rectangle(
        layer,
        (c[0] - int(r * 0.6), c[1] - r // 6),
        (c[0] + int(r * 0.6), c[1] + r // 6),
        1.0,
        max(1, r // 20),
    )
    layer *= np.clip(0.55 + 0.5 * rng.random(layer.shape, dtype=np.float32), 0, 1)  # uneven inking
    m = cv2.getRotationMatrix2D(c, rng.uniform(-30, 30), 1.0)
    layer = cv2.warpAffine(layer, m, layer.shape[::-1])
    A.composite(page.img, layer * rng.uniform(0.5, 0.9), np.array(colour, np.float32), cx - r - 4, cy - r - 4)


LAYOUTS = {
    "letter": (layout_letter, 0.4),
    "note": (layout_note, 0.25),
    "list": (layout_list, 0.15),
    "form": (layout_form, 0.2),
}
