"""CTC pieces: the charset codec (encode, best-path decode, normalise) and greedy_decode."""

from __future__ import annotations

import math

import pytest
import torch

from models import recogniser
from models.charset import CHARSET, Codec, normalise
from models.recogniser.crnn import Pool, greedy_decode

codec = Codec()


def ids(text: str) -> list[int]:
    return [CHARSET.index(c) + 1 for c in text]


# ---- Codec ---------------------------------------------------------------------------------------


def test_charset_and_classes():
    assert len(set(CHARSET)) == len(CHARSET) == 153
    assert " " in CHARSET and "£" in CHARSET and "€" in CHARSET and "°" in CHARSET
    assert all(c in CHARSET for c in "éèêàçôûïëüöäßœæ’«»–—½")  # real documents' letters and marks
    assert codec.num_classes == len(CHARSET) + 1  # + the CTC blank at index 0
    assert 0 not in codec.encode(CHARSET)


def test_encode_uses_class_index_plus_one():
    assert codec.encode("Ab 1") == ids("Ab 1")
    assert codec.encode("a") == [CHARSET.index("a") + 1]
    assert codec.encode("") == []


def test_decode_collapses_repeats_and_drops_blanks():
    h, e, l, o = ids("helo")  # noqa: E741 (the letter l)
    assert codec.decode_greedy([h, h, 0, e, e, e, l, l, 0, 0, l, o, o]) == "hello"
    assert codec.decode_greedy([l, l, l]) == "l"  # a repeat is one letter...
    assert codec.decode_greedy([l, 0, l]) == "ll"  # ...a blank between makes two
    assert codec.decode_greedy([0, 0, 0]) == ""
    assert codec.decode_greedy([]) == ""


def test_encode_decode_round_trip_with_blanks_between():
    text = "Meet me at 10:30, by the £5 stall (50% off) -- 'ok'?"
    path = []
    for k in codec.encode(text):
        path += [k, k, 0]  # each letter held 2 frames, then blank
    assert codec.decode_greedy(path) == text


@pytest.mark.parametrize(
    "raw, folded",
    [
        ("it’s", "it’s"),  # in the charset: kept
        ("‘quoted’ “twice”", '\'quoted’ "twice"'),
        ("well…", "well..."),
        ("1990–2000 — done", "1990–2000 — done"),
        ("café naïve Ångström", "café naïve Angström"),  # Å is not in the charset: A
        ("ﬁne", "fine"),  # ligature, decomposed by NFKD
        ("ſome", "some"),
        ("a\u00a0b", "a b"),
        ("€5 £3 20°", "€5 £3 20°"),  # in the charset: kept as is
        ("日本 ok", " ok"),  # nothing to fold to: dropped
        ("emoji 🙂!", "emoji !"),
    ],
)
def test_normalise_folds_look_alikes_and_drops_unknowns(raw, folded):
    assert normalise(raw) == folded
    assert codec.encode(raw) == ids(folded)
    assert all(c in CHARSET for c in normalise(raw))


def test_codec_with_a_custom_charset():
    small = Codec("abc")
    assert small.num_classes == 4
    assert small.encode("cab d") == [3, 1, 2]  # space and d are not in this charset
    assert small.decode_greedy([3, 3, 0, 1, 2]) == "cab"


# ---- greedy_decode -------------------------------------------------------------------------------


def log_probs_for(paths: list[list[int]], peak: float, num_classes: int = 10) -> torch.Tensor:
    """B x T x C log-probabilities whose best class at each frame is paths[b][t], with
    probability `peak` there and the rest spread evenly."""
    T = max(len(p) for p in paths)
    probs = torch.full((len(paths), T, num_classes), (1 - peak) / (num_classes - 1))
    for b, path in enumerate(paths):
        for t in range(T):
            probs[b, t, path[t] if t < len(path) else 0] = peak
    return probs.log()


def test_greedy_decode_best_paths():
    paths = [[0, 3, 3, 0, 5, 0], [2, 2, 2, 0, 0, 2]]
    seqs, confs = greedy_decode(log_probs_for(paths, 0.8))
    assert seqs == paths
    assert Codec("abcdefghi").decode_greedy(seqs[0]) == "ce"
    assert Codec("abcdefghi").decode_greedy(seqs[1]) == "bb"
    assert all(0 < c <= 1 for c in confs)


def test_confidence_is_geometric_mean_of_emitting_frames():
    path = [0, 3, 3, 0, 5, 0]
    lp = log_probs_for([path], 0.9)
    # make the first emitting frame less sure; the repeated frame and blanks do not count
    p = lp.exp()
    p[0, 1] = 0.1 / 9
    p[0, 1, 3] = 0.6
    p[0, 2, 3] = 0.95
    p[0, 2] = p[0, 2] / p[0, 2].sum()
    lp = p.log()
    (seq,), (conf,) = greedy_decode(lp)
    assert seq == path
    assert conf == pytest.approx(math.sqrt(0.6 * 0.9), rel=1e-4)  # frames 1 and 4 only


def test_confidence_is_higher_for_a_peaked_distribution():
    path = [0, 4, 0, 7, 7, 0, 2]
    confs = [greedy_decode(log_probs_for([path], peak))[1][0] for peak in (0.3, 0.6, 0.99)]
    assert confs == sorted(confs) and confs[0] < confs[-1]
    assert confs[0] == pytest.approx(0.3, rel=1e-4) and confs[-1] == pytest.approx(0.99, rel=1e-4)
    assert all(0 < c <= 1 for c in confs)


def test_all_blank_uses_all_frames_and_lengths_cut_padding():
    (seq,), (conf,) = greedy_decode(log_probs_for([[0, 0, 0, 0]], 0.7))
    assert seq == [0, 0, 0, 0] and conf == pytest.approx(0.7, rel=1e-4)
    # sample 0 is 3 frames long; its padding frames hold a confident letter that must not count
    lp = torch.cat([log_probs_for([[0, 6, 0]], 0.5), log_probs_for([[9]], 0.99)], dim=1)
    seqs, confs = greedy_decode(lp, torch.tensor([3]))
    assert seqs == [[0, 6, 0]] and confs[0] == pytest.approx(0.5, rel=1e-4)
    seqs, confs = greedy_decode(lp, None)
    assert seqs == [[0, 6, 0, 9]]
    assert confs[0] == pytest.approx(math.sqrt(0.5 * 0.99), rel=1e-4)


def test_batch_with_different_lengths():
    a, b = [0, 1, 1, 0, 2], [3, 0, 3]
    lp = log_probs_for([a, b + [0, 0]], 0.8)
    seqs, confs = greedy_decode(lp, torch.tensor([5, 3]))
    assert seqs == [a, b]
    assert Codec("xyz").decode_greedy(seqs[0]) == "xy" and Codec("xyz").decode_greedy(seqs[1]) == "zz"


def test_tiny_crnn_output_shape_and_decodes():
    torch.manual_seed(0)
    model = recogniser.build("crnn_tiny").eval()
    x = torch.rand(3, 1, 32, 64)
    with torch.inference_mode():
        lp = model(x)
    assert lp.shape == (3, 64 // 4, len(CHARSET) + 1)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(3, 16), atol=1e-5)
    seqs, confs = greedy_decode(lp, torch.tensor([16, 8, 1]))
    assert [len(s) for s in seqs] == [16, 8, 1]
    assert all(0 < c <= 1 for c in confs)
    assert all(isinstance(codec.decode_greedy(s), str) for s in seqs)


@pytest.mark.parametrize("kernel", [(2, 2), (2, 1)])
@pytest.mark.parametrize("width", [64, 37])
def test_pool_is_max_pooling(kernel, width):
    """The CRNN's strided-view pooling must give exactly what nn.MaxPool2d gives (odd sizes floor)."""
    x = torch.randn(3, 5, 33, width).contiguous(memory_format=torch.channels_last)
    assert torch.equal(Pool(*kernel)(x), torch.nn.functional.max_pool2d(x, kernel))


def test_normalise_keeps_what_the_charset_has_and_folds_the_rest():
    assert normalise("l’été — « ça »") == "l’été — « ça »"
    assert normalise("“quoted”") == '"quoted"'  # not in the charset: folded
    assert normalise("Ĵ") == "J"  # accent stripped when absent
    from models.charset import ASCII_CHARSET

    assert normalise("l’été", ASCII_CHARSET) == "l'ete"  # an older model's charset


def test_word_spans_split_a_line_at_spaces_with_frames():
    from models.recogniser.crnn import word_spans

    space = CHARSET.index(" ") + 1
    seq = [ids("a")[0], ids("a")[0], 0, ids("b")[0], space, space, 0, ids("c")[0], 0]
    lp = torch.full((len(seq), len(CHARSET) + 1), -10.0)
    for t, k in enumerate(seq):
        lp[t, k] = -0.01
    words = word_spans(lp, len(seq), space)
    assert [codec.decode_greedy(w[0]) for w in words] == ["ab", "c"]
    assert [(w[1], w[2]) for w in words] == [(0, 4), (7, 8)]
    assert all(0.98 < w[3] <= 1.0 for w in words)
    assert word_spans(lp, 0, space) == []


def test_the_synthetic_engine_probes_fonts_for_every_extra_class():
    from models.charset import LATIN_EXTRA
    from transforms import fonts

    assert fonts.LATIN_EXTRA == LATIN_EXTRA  # kept apart (transforms do not import models), kept equal
