"""Lexicon rescoring on constructed CTC frame probabilities."""

from __future__ import annotations

import torch

from models.charset import Codec
from models.recogniser.lexicon import Lexicon, _distance

CODEC = Codec()
LEX = Lexicon(["the", "they", "then", "sympathy", "letter", "dear"])


def frames(spelling: list[str], alternatives: dict[int, tuple[str, float]] | None = None) -> torch.Tensor:
    """1 x T x C log-probs: each frame strongly one symbol ('' = blank), some frames with a
    weaker second choice."""
    lp = torch.full((1, len(spelling), CODEC.num_classes), -9.0)
    for f, ch in enumerate(spelling):
        lp[0, f, CODEC.index[ch] if ch else 0] = -0.05
    for f, (ch, v) in (alternatives or {}).items():
        lp[0, f, CODEC.index[ch]] = v
    return lp.log_softmax(-1)


def rescore(text: str, lp: torch.Tensor) -> str:
    return LEX.rescore([text], lp, torch.tensor([lp.shape[1]]), CODEC)[0]


def test_unsure_letter_snaps_to_the_word_the_frames_allow():
    lp = frames(["T", "", "k", "", "e", "", ","], {2: ("h", -1.0)})
    assert rescore("Tke,", lp) == "The,"  # case and punctuation kept


def test_confident_unknown_word_is_kept():
    lp = frames(["Q", "", "z", "", "x"])
    assert rescore("Qzx", lp) == "Qzx"  # "the" would need 3 confident frames wrong


def test_known_words_numbers_and_short_tokens_are_left_alone():
    lp = frames(["1", "9", "0", "5"])
    assert rescore("1905", lp) == "1905"
    assert rescore("then", frames(["t", "h", "e", "n"])) == "then"
    assert rescore("tk", frames(["t", "k"])) == "tk"


def test_candidates_within_two_edits():
    assert "sympathy" in LEX.candidates("symhathy")
    assert "sympathy" not in LEX.candidates("smhthy")
    assert _distance("teh", "the") == 1 and _distance("kitten", "sitting") == 3


def test_ctc_scores_match_a_full_width_reference():
    """Scores over each sample's own frames and used classes equal plain ctc_loss on the full rows."""
    from models.recogniser.lexicon import _ctc_scores

    g = torch.Generator().manual_seed(0)
    lp = torch.randn(3, 12, CODEC.num_classes, generator=g).log_softmax(-1)
    lengths = torch.tensor([12, 7, 3])
    texts, samples = ["the", "tke", "dear", "de", "a", "abcd", ""], [0, 0, 1, 1, 2, 2, 2]
    got = _ctc_scores(texts, lp, lengths, samples, CODEC)
    for text, s, score in zip(texts, samples, got):
        target = CODEC.encode(text)
        if not target or len(target) > int(lengths[s]):
            assert score == float("-inf")  # empty, or longer than the frames allow
            continue
        ref = torch.nn.functional.ctc_loss(
            lp[s : s + 1, : int(lengths[s])].transpose(0, 1),
            torch.tensor([target]),
            lengths[s : s + 1],
            torch.tensor([len(target)]),
            reduction="none",
        )
        assert abs(score + float(ref[0])) < 1e-4, text


def test_scan_and_index_find_the_same_candidates():
    """Short runs scan the word list, long ones build the delete index: same answers."""
    from models.recogniser.lexicon import Lexicon

    words = ["house", "horse", "mouse", "hose", "letter", "better", "lettre", "the", "they"]
    queries = ["hause", "hourse", "leter", "tke", "bettre", "xyzzy"]
    scanned = Lexicon(list(words))
    found = {q: sorted(scanned.candidates(q)) for q in queries}
    assert "_index" not in scanned.__dict__ and found["hause"] == ["horse", "hose", "house", "mouse"]
    indexed = Lexicon(list(words))
    _ = indexed._index  # built up front: every lookup goes through it
    assert {q: sorted(indexed.candidates(q)) for q in queries} == found
