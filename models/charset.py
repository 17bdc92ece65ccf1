"""The recogniser's alphabet: printable ASCII (GNHK's 95 + space), £ € °, and the accented Latin
letters and typographic punctuation of real (French, German, Spanish, English) documents.

Index 0 is the CTC blank; character i of CHARSET has class i + 1. A model stores its charset in its
metadata, so older models (ASCII_CHARSET) keep decoding with their own.
"""

from __future__ import annotations

import unicodedata

ASCII_CHARSET = "".join(chr(c) for c in range(32, 127)) + "£€°"
LATIN_EXTRA = (
    "àâäáçéèêëíîïñóôöúûüùÿœæßÀÂÄÁÇÉÈÊËÍÎÏÑÓÔÖÚÛÜÙŸŒÆ"  # letters
    "’«»–—½¼¾"
)  # punctuation, fractions
CHARSET = ASCII_CHARSET + LATIN_EXTRA

# Look-alikes seen in real transcriptions, folded to what the recogniser can emit.
_FOLD = {
    "‘": "'",
    "’": "'",
    "“": '"',
    "”": '"',
    "–": "-",
    "—": "-",
    "…": "...",
    "ſ": "s",
    "\u00a0": " ",
    "´": "'",
    "`": "'",
}


def normalise(text: str, charset: str = CHARSET) -> str:
    """Fold a transcription into the charset: NFKD, look-alikes, drop what is left over."""
    out = []
    for ch in text:
        if ch not in charset:
            ch = _FOLD.get(ch, ch)
        if all(c in charset for c in ch):
            out.append(ch)
            continue
        base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
        out.append("".join(c for c in base if c in charset))
    return "".join(out)


class Codec:
    def __init__(self, charset: str = CHARSET):
        self.charset = charset
        self.index = {c: i + 1 for i, c in enumerate(charset)}
        self._chars = frozenset(charset)
        self._encoded: dict[str, list[int]] = {}  # lexicon rescoring encodes the same words over and over

    @property
    def num_classes(self) -> int:
        return len(self.charset) + 1

    def encode(self, text: str) -> list[int]:
        hit = self._encoded.get(text)
        if hit is None:
            if len(self._encoded) > 200_000:
                self._encoded.clear()
            # text already in the charset: normalise would give it back as it is
            folded = text if self._chars.issuperset(text) else normalise(text, self.charset)
            hit = self._encoded[text] = [self.index[c] for c in folded]
        return list(hit)

    def decode_greedy(self, best: list[int]) -> str:
        """Collapse repeats, drop blanks: the CTC best-path reading."""
        out, prev = [], 0
        for k in best:
            if k != prev and k != 0:
                out.append(self.charset[k - 1])
            prev = k
        return "".join(out)
