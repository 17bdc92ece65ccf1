"""Handwriting (and a few printed) fonts for the synthetic engine.

Fonts come from two installable sources, both pinned by the project:
  * Debian `fonts-*` packages (apt-packages.txt), found under /usr/share/fonts and /usr/share/texmf;
  * PyPI `fontpkg-*` packages (requirements-fonts.txt), found through `fontpkg.families()`.

Every font is probed once: which characters of the recogniser charset it really draws (a font
missing `£` must not render a tofu box) and whether its lowercase is only capitals. Callers pick a
font per word and ask `FontLibrary.runs(text, font)` how to split the word between the font and a
per-glyph fallback.
"""

from __future__ import annotations

import functools
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from batch.core.errors import HtrError

# Recogniser charset: printable ASCII plus £ € °.
CHARSET = "".join(chr(c) for c in range(32, 127)) + "£€°"

FONT_DIRS = ("/usr/share/fonts", "/usr/share/texmf/fonts", "/usr/local/share/fonts")


@dataclass(frozen=True)
class FontEntry:
    """One catalogue line: a file name pattern and what we know about its style."""

    name: str
    pattern: str  # file name (Debian) or "fontpkg:<slug>[:<file stem>]"
    kind: str = "H"  # "H" handwriting, "P" printed
    cursive: bool = False  # joined script: render whole runs so connections survive
    weight: float = 1.0  # sampling weight; cursive pen hands matter most for our target letters
    thin: bool = False  # hairline strokes: never erode


# The catalogue. Weights favour joined pen scripts (the 1905 letters we must read) while keeping
# print-like hands (GNHK-style notes) and marker/caps hands for variety.
CATALOGUE: tuple[FontEntry, ...] = (
    # Debian fonts-*
    FontEntry("bwht-build", "BecauseWeBuild-Regular.otf", weight=0.3),
    FontEntry("bwht-connect", "BecauseWeConnect-Regular.otf", weight=0.3),
    FontEntry("bwht-create", "BecauseWeCreate-Regular.otf", weight=0.3),
    FontEntry("bwht-learn", "BecauseWeLearn-Regular.otf", weight=0.3),
    FontEntry("bwht-mentor", "BecauseWeMentor-Regular.otf", weight=0.3),
    FontEntry("bwht-organize", "BecauseWeOrganize-Regular.otf", weight=0.4),
    FontEntry("comic-neue", "ComicNeue-Regular.otf", weight=0.4),
    FontEntry("comic-neue-italic", "ComicNeue-Italic.otf", weight=0.4),
    FontEntry("dancing-script-bold", "DancingScript-Bold.otf", cursive=True, weight=1.0),
    FontEntry("havana", "Havana-Regular.otf", cursive=True, weight=1.2),
    FontEntry("kaushan-script", "KaushanScript-Regular.otf", cursive=True, weight=1.0),
    FontEntry("lobster", "lobster.otf", cursive=True, weight=0.4),
    FontEntry("purisa", "Purisa.otf", weight=0.5),
    FontEntry("purisa-oblique", "Purisa-Oblique.otf", weight=0.5),
    FontEntry("z003-chancery", "Z003-MediumItalic.otf", cursive=True, weight=1.0),
    FontEntry("breip", "Breip.ttf", weight=0.8),
    FontEntry("ecolier-court", "Ecolier-court.ttf", cursive=True, weight=1.5, thin=True),
    FontEntry("femkeklaver", "femkeklaver.ttf", weight=0.3),
    FontEntry("dkg", "dkg.ttf", weight=0.8),
    FontEntry("dkg-italic", "dkgIt.ttf", weight=0.8),
    FontEntry("dkg-bold-italic", "dkgBI.ttf", weight=0.4),
    FontEntry("humor-sans", "Humor-Sans.ttf", weight=0.4),
    FontEntry("kristi", "Kristi.ttf", cursive=True, weight=1.5, thin=True),
    FontEntry("leckerli-one", "LeckerliOne-Regular.ttf", cursive=True, weight=0.3),
    FontEntry("rufscript", "Rufscript010.ttf", weight=0.6),
    FontEntry("delphine", "Delphine.ttf", cursive=True, weight=1.2, thin=True),
    FontEntry("steve-hand", "SteveHand.ttf", weight=0.8),
    FontEntry("tomson-talks", "TomsonTalks.ttf", weight=0.3),
    # PyPI fontpkg-*
    FontEntry("caveat", "fontpkg:caveat", weight=1.2),
    FontEntry("dancing-script", "fontpkg:dancing-script", cursive=True, weight=1.2),
    FontEntry("delius", "fontpkg:delius", weight=0.4),
    FontEntry("great-vibes", "fontpkg:great-vibes", cursive=True, weight=1.5, thin=True),
    FontEntry("indie-flower", "fontpkg:indie-flower", weight=1.0),
    FontEntry("kalam", "fontpkg:kalam:Kalam-Regular", weight=0.8),
    FontEntry("kalam-light", "fontpkg:kalam:Kalam-Light", weight=0.8, thin=True),
    FontEntry("pacifico", "fontpkg:pacifico", cursive=True, weight=0.3),
    FontEntry("permanent-marker", "fontpkg:permanent-marker", weight=0.4),
    FontEntry("satisfy", "fontpkg:satisfy", cursive=True, weight=1.3),
    FontEntry("shadows-into-light", "fontpkg:shadows-into-light", weight=1.0, thin=True),
    FontEntry("yellowtail", "fontpkg:yellowtail", cursive=True, weight=1.0),
    FontEntry("zeyada", "fontpkg:zeyada", weight=1.5, thin=True),
    FontEntry("lobster-two-italic", "fontpkg:lobster-two:LobsterTwo-Italic", cursive=True, weight=0.3),
    FontEntry("oleo-script", "fontpkg:oleo-script:OleoScript-Regular", cursive=True, weight=0.3),
    # Printed: letterheads, form labels, typed lines.
    FontEntry("liberation-serif", "LiberationSerif-Regular.ttf", kind="P"),
    FontEntry("liberation-serif-bold", "LiberationSerif-Bold.ttf", kind="P"),
    FontEntry("liberation-sans", "LiberationSans-Regular.ttf", kind="P"),
    FontEntry("liberation-sans-bold", "LiberationSans-Bold.ttf", kind="P"),
    FontEntry("liberation-mono", "LiberationMono-Regular.ttf", kind="P"),  # typewriter-like
    FontEntry("nimbus-roman", "NimbusRoman-Regular.otf", kind="P"),
    FontEntry("nimbus-roman-italic", "NimbusRoman-Italic.otf", kind="P"),
    FontEntry("nimbus-mono", "NimbusMonoPS-Regular.otf", kind="P"),
    FontEntry("c059-bold", "C059-Bold.otf", kind="P"),
    FontEntry("p052", "P052-Roman.otf", kind="P"),
    FontEntry("urw-bookman", "URWBookman-Light.otf", kind="P"),
    FontEntry("eb-garamond", "EBGaramond12-Regular.otf", kind="P"),
    FontEntry("dejavu-sans", "DejaVuSans.ttf", kind="P"),
    FontEntry("dejavu-serif", "DejaVuSerif.ttf", kind="P"),
    FontEntry("libre-baskerville", "fontpkg:libre-baskerville:LibreBaskerville[wght]", kind="P"),
    FontEntry("pt-serif", "fontpkg:pt-serif:PT_Serif-Web-Regular", kind="P"),
    FontEntry("roboto-slab", "fontpkg:roboto-slab", kind="P"),
)

# Accented letters and typographic punctuation that synthetic lines may carry (drawn by a fallback
# font where the hand's font lacks them). Same as models.charset.LATIN_EXTRA (tests/test_ctc.py).
LATIN_EXTRA = "àâäáçéèêëíîïñóôöúûüùÿœæßÀÂÄÁÇÉÈÊËÍÎÏÑÓÔÖÚÛÜÙŸŒÆ’«»–—½¼¾"

# Glyphs we check in every font; space is always fine.
_PROBE_CHARS = (CHARSET + LATIN_EXTRA).replace(" ", "")


class FontsUnavailable(HtrError):
    """Too few fonts are installed: install apt-packages.txt and requirements-fonts.txt."""

    stage = "fonts"


@dataclass(frozen=True)
class Font:
    """A usable font file with what it can draw."""

    name: str
    path: str
    kind: str
    cursive: bool
    weight: float
    thin: bool
    caps_only: bool
    covered: frozenset[str] = field(repr=False)

    def can_draw(self, text: str) -> bool:
        return all(c in self.covered or c == " " for c in text)

    def missing(self, text: str) -> set[str]:
        return {c for c in text if c != " " and c not in self.covered}


@functools.lru_cache(maxsize=4096)
def truetype(path: str, size: int) -> ImageFont.FreeTypeFont:
    """Cached PIL font object (opening one costs a file read and a FreeType face)."""
    return ImageFont.truetype(path, max(4, int(size)))


def _fontpkg_paths() -> dict[str, list[str]]:
    try:
        import fontpkg
    except ImportError:
        return {}
    out: dict[str, list[str]] = {}
    for slug, fam in fontpkg.families().items():
        out[slug] = sorted(str(f.path) for f in fam.files)
    return out


def _debian_paths() -> dict[str, str]:
    out: dict[str, str] = {}
    for root in FONT_DIRS:
        for p in sorted(glob.glob(os.path.join(root, "**", "*.[ot]tf"), recursive=True)):
            out.setdefault(os.path.basename(p), p)
    return out


def _locate(entry: FontEntry, debian: dict[str, str], pkg: dict[str, list[str]]) -> str | None:
    if not entry.pattern.startswith("fontpkg:"):
        return debian.get(entry.pattern)
    _, slug, *stem = entry.pattern.split(":")
    files = pkg.get(slug, [])
    if stem:
        files = [f for f in files if Path(f).stem == stem[0]]
    return files[0] if files else None


def _mask(font: ImageFont.FreeTypeFont, text: str) -> np.ndarray:
    left, top, right, bottom = font.getbbox(text)
    w, h = max(1, int(right - left)), max(1, int(bottom - top))  # ints already: FreeType boxes
    img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(img).text((-left, -top), text, font=font, fill=255)
    return np.asarray(img)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a, b)


def probe_coverage(path: str) -> frozenset[str]:
    """Characters the font really draws: not empty, not the .notdef box (tofu)."""
    font = truetype(path, 48)
    tofu = [_mask(font, c) for c in ("\ue000", "\U0010fffd", "\uffff")]
    covered = set()
    for ch in _PROBE_CHARS:
        m = _mask(font, ch)
        if m.max() < 128 or any(_same(m, t) for t in tofu):
            continue
        covered.add(ch)
    return frozenset(covered)


def _norm_shape(m: np.ndarray, size: int = 24) -> np.ndarray:
    ys, xs = np.nonzero(m > 96)
    if len(ys) == 0:
        return np.zeros((size, size), bool)
    crop = m[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    return np.asarray(Image.fromarray(crop).resize((size, size))) > 96


def _height(font: ImageFont.FreeTypeFont, ch: str) -> int:
    left, top, right, bottom = font.getbbox(ch)
    return max(1, int(bottom - top))


def probe_caps_only(path: str) -> bool:
    """True when lowercase is drawn as (small) capitals: such a font can't tell 'e' from 'E'.

    Two cues: x-height close to cap height, and lowercase shapes that match their capitals.
    """
    font = truetype(path, 48)
    ratio = float(np.mean([_height(font, c) / _height(font, c.upper()) for c in "xnemuv"]))
    ious = []
    for lo in "abdeghnqr":
        a, b = _norm_shape(_mask(font, lo)), _norm_shape(_mask(font, lo.upper()))
        ious.append(np.logical_and(a, b).sum() / max(1, np.logical_or(a, b).sum()))
    return ratio > 0.9 or (ratio > 0.8 and float(np.mean(ious)) > 0.55)


@dataclass
class FontLibrary:
    """All installed catalogue fonts, split into handwriting and print."""

    fonts: list[Font]

    @property
    def hand(self) -> list[Font]:
        return [f for f in self.fonts if f.kind == "H"]

    @property
    def printed(self) -> list[Font]:
        return [f for f in self.fonts if f.kind == "P"]

    def pick(self, rng: np.random.Generator, kind: str = "H", cursive: bool | None = None) -> Font:
        pool = [f for f in self.fonts if f.kind == kind and (cursive is None or f.cursive == cursive)]
        pool = pool or [f for f in self.fonts if f.kind == kind]
        w = np.array([f.weight for f in pool], float)
        return pool[int(rng.choice(len(pool), p=w / w.sum()))]

    def fallback_for(self, ch: str, font: Font) -> Font | None:
        """Another font of the same kind (cursive first) that draws `ch`; None if nobody does."""
        same_kind = [f for f in self.fonts if f.kind == font.kind and ch in f.covered]
        same_kind.sort(key=lambda f: (f.cursive != font.cursive, f.caps_only, f.name))
        if same_kind:
            return same_kind[0]
        anyone = [f for f in self.fonts if ch in f.covered]
        return anyone[0] if anyone else None

    def suits(self, font: Font, text: str) -> bool:
        """Whether `font` may write `text` at all (caps-only fonts only write text without lowercase)."""
        return not (font.caps_only and any(c.islower() for c in text))

    def runs(self, text: str, font: Font) -> list[tuple[str, Font]]:
        """Split `text` into (substring, font) runs: the font where it has the glyph, else a fallback."""
        out: list[tuple[str, Font]] = []
        for ch in text:
            f = font if (ch == " " or ch in font.covered) else self.fallback_for(ch, font)
            if f is None:
                raise ValueError(f"no installed font draws {ch!r}")
            if out and out[-1][1] is f:
                out[-1] = (out[-1][0] + ch, f)
            else:
                out.append((ch, f))
        return out


def _probe(entry: FontEntry, path: str) -> Font | None:
    try:
        covered = probe_coverage(path)
    except OSError:
        return None
    if not set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") <= covered | set(
        "abcdefghijklmnopqrstuvwxyz"
    ):
        return None  # no usable capitals/digits: not worth the fallbacks
    caps = probe_caps_only(path) if entry.kind == "H" else False
    return Font(entry.name, path, entry.kind, entry.cursive, entry.weight, entry.thin, caps, covered)


@functools.lru_cache(maxsize=1)
def library(min_hand: int = 1) -> FontLibrary:
    """Probe the installed catalogue fonts (cached per process; ~1 s)."""
    debian, pkg = _debian_paths(), _fontpkg_paths()
    fonts = []
    for entry in CATALOGUE:
        path = _locate(entry, debian, pkg)
        font = _probe(entry, path) if path else None
        if font:
            fonts.append(font)
    lib = FontLibrary(fonts)
    if len(lib.hand) < min_hand or not lib.printed:
        raise FontsUnavailable(
            f"only {len(lib.hand)} handwriting / {len(lib.printed)} printed fonts installed; "
            "install apt-packages.txt (apt-get) and requirements-fonts.txt (pip)"
        )
    return lib


def summary() -> str:
    lib = library()
    caps = [f.name for f in lib.hand if f.caps_only]
    return (
        f"{len(lib.hand)} handwriting fonts ({sum(f.cursive for f in lib.hand)} cursive, "
        f"{len(caps)} caps-only), {len(lib.printed)} printed fonts"
    )


if __name__ == "__main__":
    lib = library()
    for f in lib.fonts:
        miss = "".join(sorted(set(_PROBE_CHARS) - f.covered))
        print(f"{f.kind} {f.name:24s} caps={int(f.caps_only)} cursive={int(f.cursive)} missing={miss!r}")
    print(summary())
