"""Lexicon rescoring: snap an out-of-vocabulary reading to a nearby dictionary word when the
recogniser's own probabilities find that word about as likely.

One lexicon per language (wordfreq's lists ship in its wheel: English, French, German, ...). A text
line is rescored only with the lexicon that already covers most of its words (`pick_lexicon`), so an
English dictionary is never forced onto a French or unknown line.

Greedy CTC reads each frame independently, so one smudged letter turns "the" into "tke".
For a word the lexicon does not know, candidates within edit distance 2 are found with a
symmetric-delete index (SymSpell's idea), each is scored by its CTC log-likelihood under the
crop's frame probabilities plus a word-frequency prior, and the best wins if it beats the
greedy reading scored the same way. Numbers, short tokens and known words are left alone.

numpy only (no torch: `htr run` on ONNX Runtime never imports it); torch tensors are accepted.
A language's word list is kept in the cache folder (models.onnx_backend.cache_dir) after its first
use: importing wordfreq and unpacking its lists cost ~0.5 s of every start-up.

Models layer: imports models, transforms and batch.core only (tests/test_layers.py). Used by the
recogniser runner (models/recogniser/runner.py).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import OSA

from models.charset import Codec
from models.recogniser.ctc import as_numpy, ctc_log_likelihoods

_LETTER = r"[^\W\d_]"  # any Unicode letter
_CORE = re.compile(rf"^([\W\d_]*?)({_LETTER}(?:{_LETTER}|')*{_LETTER}|{_LETTER})([\W\d_]*)$")
_WORD = re.compile(rf"{_LETTER}+")  # elisions (l'homme) count as two words
# share of a page's (or line's) words a lexicon must know before it may correct the rest. 0.2, not
# 0.5: a page read at 30-40 % CER has fewer than half its words right even in its own language, and
# 0.5 left such pages uncorrected (validation pages, 8 French sets: BoW F1 0.383 -> 0.440 at 0.2,
# better in every set; the English dev letters: 0.143 -> 0.210). The better-covering language wins.
MIN_COVERAGE = 0.2
SCAN_LOOKUPS = 1000  # distinct unknown words looked up by scanning before the index pays for itself


def _deletes(word: str, depth: int) -> set[str]:
    out, frontier = {word}, {word}
    for _ in range(depth):
        frontier = {w[:i] + w[i + 1 :] for w in frontier for i in range(len(w))}
        out |= frontier
    return out


def _match_case(candidate: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return candidate.upper()
    if like[:1].isupper():
        return candidate[:1].upper() + candidate[1:]
    return candidate


@dataclass
class Lexicon:
    words: list[str]  # lower case, most frequent first
    max_distance: int = 2
    prior_weight: float = 1.0  # nats per unit of log word frequency
    min_length: int = 3

    language: str = "en"

    @classmethod
    def english(cls, size: int = 30000) -> Lexicon:
        return cls.for_language("en", size)

    @classmethod
    def for_language(cls, language: str, size: int = 30000) -> Lexicon:
        return cls(_word_list(language, size), language=language)

    def coverage(self, texts: list[str]) -> float:
        """Share of the words (letters only, 2+ long) in `texts` that this lexicon knows."""
        words = [m.lower() for t in texts for m in _WORD.findall(t.replace("’", "'")) if len(m) > 1]
        return sum(w in self.rank for w in words) / len(words) if words else 0.0

    def rescore_line(
        self, words: list[tuple[str, float, int, int]], log_probs: Any, codec: Codec
    ) -> list[tuple[str, float, int, int]]:
        """Words of one line as (text, confidence, first frame, end frame) over the line's
        T x C log-probabilities: each unknown word is rescored over its own frames (one frame of
        context either side)."""
        return self.rescore_lines([(words, log_probs)], codec)[0]

    def rescore_lines(
        self, lines: list[tuple[list[tuple[str, float, int, int]], Any]], codec: Codec
    ) -> list[list[tuple[str, float, int, int]]]:
        """rescore_line for many lines at once (a page's, a batch's): the unknown words of all of
        them are scored in one CTC pass, not one per line (#15: a Python loop over frames each)."""
        jobs = [
            (li, i)
            for li, (words, _) in enumerate(lines)
            for i, (text, *_) in enumerate(words)
            if self._correctable(text)
        ]
        out = [words for words, _ in lines]
        if not jobs:
            return out  # most lines: nothing to copy
        arrays = {li: as_numpy(lines[li][1]) for li in {li for li, _ in jobs}}
        spans = []
        for li, i in jobs:
            t, (_, _, f0, f1) = arrays[li].shape[0], lines[li][0][i]
            spans.append((max(0, f0 - 1), min(t, f1 + 1)))
        width = max(b - a for a, b in spans)
        first = arrays[jobs[0][0]]
        batch = np.full((len(jobs), width, first.shape[1]), -1e4, first.dtype)
        batch[:, :, 0] = 0.0  # padding frames: certain blanks
        for row, ((li, _), (a, b)) in enumerate(zip(jobs, spans)):
            batch[row, : b - a] = arrays[li][a:b]
        lengths = np.array([b - a for a, b in spans])
        texts = self.rescore([lines[li][0][i][0] for li, i in jobs], batch, lengths, codec)
        out = [list(words) for words in out]
        for (li, i), text in zip(jobs, texts):
            out[li][i] = (text, *lines[li][0][i][1:])
        return out

    def _correctable(self, text: str) -> bool:
        """A word rescore() would look at (its own test): alphabetic core long enough, not known."""
        parts = self.split(text)
        return parts is not None and parts[1].lower() not in self.rank

    @cached_property
    def rank(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}

    @cached_property
    def _index(self) -> dict[str, list[str]]:
        """Built after SCAN_LOOKUPS distinct lookups (about 2 s of CPU), so short runs never pay."""
        index: dict[str, list[str]] = {}
        for w in self.words:
            for d in _deletes(w, self.max_distance):
                index.setdefault(d, []).append(w)
        return index

    def log_prior(self, word: str | None) -> float:
        """Zipf-like: log(1 / (rank + 10)); unknown words rank below the whole list."""
        r = self.rank.get(word, len(self.words) * 4) if word else len(self.words) * 4
        return -math.log(r + 10)

    @cached_property
    def _seen(self) -> dict[str, list[str]]:
        return {}

    @cached_property
    def _by_length(self) -> dict[int, list[str]]:
        return {}

    @cached_property
    def _lengths(self) -> np.ndarray:
        return np.array([len(w) for w in self.words])

    def _near_length(self, n: int) -> list[str]:
        """The words at most max_distance letters longer or shorter than n, in list order: no other
        word is within max_distance edits (the distance is at least the length difference), so
        scanning these finds the same candidates in the same order, ~4x sooner."""
        hit = self._by_length.get(n)
        if hit is None:
            near = np.flatnonzero(np.abs(self._lengths - n) <= self.max_distance)
            hit = self._by_length[n] = [self.words[i] for i in near.tolist()]
        return hit

    def candidates(self, word: str) -> list[str]:
        if word in self._seen:  # the same misreadings recur page after page
            return self._seen[word]
        k = self.max_distance
        if len(self._seen) < SCAN_LOOKUPS and "_index" not in self.__dict__:
            # a short run: scanning the list in C (~2 ms a word) beats building the index (~2 s)
            found = [
                m[0]
                for m in process.extract(
                    word, self._near_length(len(word)), scorer=OSA.distance, score_cutoff=k, limit=None
                )
            ]
        else:
            near: set[str] = set()
            for d in _deletes(word, k):
                near.update(self._index.get(d, ()))
            found = [c for c in near if OSA.distance(word, c, score_cutoff=k) <= k]
        if len(self._seen) > 100_000:
            self._seen.clear()
        self._seen[word] = found
        return found

    def split(self, text: str) -> tuple[str, str, str] | None:
        """(leading punctuation, alphabetic core, trailing punctuation) of a correctable word."""
        m = _CORE.match(text)
        if not m or len(m.group(2)) < self.min_length:
            return None
        return m.group(1), m.group(2), m.group(3)

    def rescore(self, readings: list[str], log_probs: Any, lengths: Any, codec: Codec) -> list[str]:
        """readings: greedy texts of a batch; log_probs: B x T x C; lengths: frames per sample."""
        jobs = []  # (sample, prefix, suffix, core-as-read, candidate cores)
        for i, text in enumerate(readings):
            parts = self.split(text)
            if parts is None or parts[1].lower() in self.rank:
                continue
            cands = self.candidates(parts[1].lower())
            if cands:
                jobs.append((i, parts, cands))
        if not jobs:
            return readings
        # every candidate of every word in the batch is scored by one ctc_loss call
        texts, samples, options = [], [], []
        for i, (pre, core, post), cands in jobs:
            opts = [core] + [_match_case(c, core) for c in cands]
            options.append(opts)
            texts += [pre + o + post for o in opts]
            samples += [i] * len(opts)
        scores = _ctc_scores(texts, log_probs, lengths, samples, codec)
        out, start = list(readings), 0
        for (i, _, _), opts in zip(jobs, options):
            ranked = [
                scores[start + k] + self.prior_weight * self.log_prior(o.lower() if k else None)
                for k, o in enumerate(opts)
            ]
            out[i] = texts[start + max(range(len(opts)), key=ranked.__getitem__)]
            start += len(opts)
        return out


def pick_lexicon(
    lexicons: list[Lexicon], texts: list[str], min_coverage: float = MIN_COVERAGE
) -> Lexicon | None:
    """The lexicon that knows most of the line's words, if it knows at least min_coverage of them;
    None for a line in none of their languages (names, numbers, another language)."""
    coverage = [lx.coverage(texts) for lx in lexicons]
    if not coverage or max(coverage) < min_coverage:
        return None
    return lexicons[coverage.index(max(coverage))]  # ties: the first listed


def _ctc_scores(
    texts: list[str], log_probs: Any, lengths: Any, samples: list[int], codec: Codec
) -> list[float]:
    """log P(text | frames of its sample) for each text.
    log_probs: B x T x C; lengths: frames per sample; samples: each text's row in log_probs.

    One forward pass for all texts of all samples, each over its own sample's frames
    (models.recogniser.ctc.ctc_log_likelihoods: what torch's ctc_loss computes)."""
    log_probs, lengths = as_numpy(log_probs), as_numpy(lengths)
    targets = [codec.encode(t) for t in texts]
    scores = [-math.inf] * len(texts)
    ks = [k for k, s in enumerate(samples) if 0 < len(targets[k]) <= int(lengths[s])]
    if ks:
        got = ctc_log_likelihoods(
            log_probs, [targets[k] for k in ks], np.array([samples[k] for k in ks]), lengths
        )
        for k, v in zip(ks, got.tolist()):
            scores[k] = v
    return scores


def _distance(a: str, b: str) -> int:
    """Optimal string alignment distance (adjacent swaps count one); rapidfuzz's C version."""
    return OSA.distance(a, b)


def _word_list(language: str, size: int) -> list[str]:
    """wordfreq's top `size` words of a language (apostrophes straightened, letters only), most
    frequent first; kept as a text file in the cache folder, keyed by the wordfreq version."""
    from importlib.metadata import version

    from models.onnx_backend import cache_dir

    path = cache_dir() / "lexicon" / f"{language}-{size}-wordfreq{version('wordfreq')}.txt"
    try:
        text = path.read_text(encoding="utf-8")
        return text.split("\n") if text else []
    except OSError:
        pass
    import wordfreq  # ships its frequency lists: nothing is downloaded

    words = [w.replace("’", "'") for w in wordfreq.top_n_list(language, size)]
    words = [w for w in words if w.replace("'", "").isalpha()]
    try:  # write-then-rename: a concurrent run never reads half a list
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text("\n".join(words), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass
    return words
