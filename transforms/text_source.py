"""Text for synthetic pages and crops: a real English word distribution plus everything else people write.

Words come from wordfreq's offline English list (frequency-weighted, flattened so rarer words still
appear). Around them: names, addresses, dates, times, money, numbers, punctuation glued to words,
capitalised / ALL-CAPS words and a trickle of rare symbols, so every character of the recogniser
charset (printable ASCII + £€°) shows up. Every generator returns tokens; a token never holds a space.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from transforms.fonts import CHARSET

T = TypeVar("T")

MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
MONTH_ABBR = [
    "Jan.",
    "Feb.",
    "Mar.",
    "Mch.",
    "Apr.",
    "May",
    "Jun.",
    "Jul.",
    "Aug.",
    "Sept.",
    "Sep.",
    "Oct.",
    "Nov.",
    "Dec.",
]
WEEKDAYS = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "Mon.",
    "Tues.",
    "Wed.",
    "Thurs.",
    "Fri.",
    "Sat.",
    "Sun.",
]
FIRST_NAMES = """James John Robert Michael William David Richard Joseph Thomas Charles Henry George Edward
Arthur Albert Frederick Walter Harry Frank Samuel Daniel Peter Paul Mark Andrew Stephen Kevin Brian Alan
Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah Karen Nancy Margaret Alice Helen Ruth
Dorothy Florence Edith Clara Emma Anna Grace Lucy Jane Ellen Martha Louisa Harriet Amelia Priya Aisha
Mohammed Ahmed Fatima Wei Chen Yuki Hiroshi Olga Ivan Pierre Marie Hans Greta Luis Carmen Diego Sofia
Kwame Amara Sean Siobhan Rhys Morag Ewan Isla Oliver Jack Noah Leo Oscar Mia Ava Chloe Zoe Ethan""".split()
SURNAMES = """Smith Jones Williams Brown Taylor Davies Evans Wilson Thomas Johnson Roberts Walker Wright
Robinson Thompson White Hughes Edwards Green Hall Wood Harris Lewis Martin Jackson Clarke Clark Turner
Hill Scott Cooper Morris Ward Moore King Watson Baker Harrison Morgan Patel Young Allen Mitchell James
Anderson Phillips Lee Bell Parker Davis Miller Murphy Kelly O'Brien O'Neill McDonald MacLeod Fitzgerald
Sullivan Campbell Stewart Henderson Fraser Reid Ross Graham Hamilton Crawford Garcia Martinez Rodriguez
Nguyen Kim Singh Khan Ali Chowdhury Okafor Mensah Schmidt Muller Dubois Rossi Kowalski Novak Ivanova
Larsen Jensen Hoffman Whitfield Ashworth Pemberton Blackwood Hargreaves Fairbanks Woodward Thornton""".split()
TOWNS = """London Manchester Birmingham Leeds Glasgow Edinburgh Bristol Liverpool Sheffield Cardiff Belfast
Dublin Oxford Cambridge York Bath Norwich Brighton Leicester Nottingham Aberdeen Dundee Exeter Chester
Boston Chicago Philadelphia Baltimore Denver Seattle Portland Sacramento Cleveland Detroit Milwaukee
Pittsburgh Richmond Savannah Omaha Toledo Albany Hartford Toronto Montreal Ottawa Sydney Melbourne
Auckland Wellington Dunedin Springfield Newport Hastings Salem Lincoln Windsor Kingston""".split()
STREET_TYPES = [
    "Street",
    "St.",
    "Avenue",
    "Ave.",
    "Road",
    "Rd.",
    "Lane",
    "Place",
    "Court",
    "Drive",
    "Terrace",
    "Square",
    "Way",
    "Crescent",
    "Gardens",
    "Blvd.",
]
STATES = [
    "Cal.",
    "N.Y.",
    "Mass.",
    "Ill.",
    "Penn.",
    "Ohio",
    "Mich.",
    "Wis.",
    "Md.",
    "Va.",
    "Tex.",
    "Ore.",
    "Wash.",
    "Conn.",
    "CA",
    "NY",
    "MA",
    "IL",
    "TX",
    "WA",
    "NSW",
    "Vic.",
    "Kent",
    "Surrey",
    "Yorks.",
    "Lancs.",
    "Devon",
    "Fife",
]
TITLES = [
    "Mr",
    "Mr.",
    "Mrs",
    "Mrs.",
    "Miss",
    "Ms",
    "Dr",
    "Dr.",
    "Prof.",
    "Rev.",
    "Messrs.",
    "Sir",
    "Madam",
    "Capt.",
    "Col.",
    "Hon.",
]
SALUTATIONS = [
    ["Dear", "Sir,"],
    ["Dear", "Madam,"],
    ["My", "dear", "{first},"],
    ["Dear", "{title}", "{surname},"],
    ["Dear", "{first},"],
    ["Dear", "Sirs,"],
    ["Hi", "{first},"],
    ["Hello", "{first}!"],
    ["My", "dear", "{title}", "{surname}:"],
    ["Gentlemen:"],
    ["Dear", "Friend,"],
]
CLOSINGS = [
    ["Yours", "truly,"],
    ["Very", "truly", "yours,"],
    ["Yours", "sincerely,"],
    ["Sincerely", "yours,"],
    ["Respectfully,"],
    ["Yours", "faithfully,"],
    ["With", "kind", "regards,"],
    ["Best", "wishes,"],
    ["Love,"],
    ["Cordially", "yours,"],
    ["I", "remain,"],
    ["Thanks,"],
    ["Cheers,"],
    ["Faithfully", "yours,"],
    ["Affectionately,"],
]
# Rare characters get tokens of their own so the recogniser sees each of them in context.
RARE_TEMPLATES = [
    "#{n}",
    "No.{n}",
    "{w}&{w}",
    "&",
    "*",
    "{w}*",
    "{n}+{n}",
    "+{n}",
    "{n}<{n}",
    "<{w}>",
    "{n}>{n}",
    "={n}",
    "{n}={n}",
    "{w}@{w}.com",
    "@{w}",
    "[{w}]",
    "[sic]",
    "[{n}]",
    "{w}\\{w}",
    "C:\\{w}",
    "{n}^{n}",
    "x^2",
    "{w}_{w}",
    "_{w}_",
    "`{w}`",
    "{{{w}}}",
    "{w}|{w}",
    "|",
    "~{n}",
    "~",
    "{n}°",
    "{n}°C",
    "{n}°F",
    "€{n}",
    "{n}€",
    "£{n}",
    "£{n}.{c}",
    "{n}%",
    "{n}/{n}",
    "{w}/{w}",
    "{w};",
    "{w}:",
    "{w}!",
    "{w}?",
    "{w}!?",
    "...",
    "--",
    "-",
    "({n})",
    "'{w}'",
    '"{w}"',
    "{w}-{w}",
    "({w})",
    "%",
    "$",
    "{n}'",
    '{n}"',
    "{w}'s",
    "{w}s'",
    "{w}.",
    "{w},",
    "a.m.",
    "p.m.",
    "e.g.",
    "i.e.",
    "etc.",
    "&c.",
]


# Web-frequency lists carry profanity and slurs; synthetic letters should not (people look at them).
BLOCKED_PREFIXES = (
    "fuck",
    "shit",
    "cunt",
    "bitch",
    "nigg",
    "fag",
    "whore",
    "slut",
    "porn",
    "horny",
    "dick",
    "pussy",
    "rape",
    "rapist",
    "retard",
    "wank",
    "twat",
    "bastard",
    "asshole",
    "boob",
    "nude",
    "naked",
    "sexy",
    "sexual",
    "piss",
    "dildo",
    "hooker",
    "tranny",
    "douche",
    "jizz",
    "orgasm",
    "penis",
    "vagina",
    "milf",
    "xxx",
    "nazi",
    "hitler",
    "kill",
    "murder",
    "suicid",
    "terroris",
    "cocaine",
    "heroin",
)
BLOCKED_WORDS = {
    "sex",
    "cum",
    "cums",
    "anal",
    "tits",
    "spic",
    "cock",
    "cocks",
    "kike",
    "chink",
    "dyke",
    "weed",
}


def _clean(word: str) -> bool:
    return word not in BLOCKED_WORDS and not word.startswith(BLOCKED_PREFIXES)


@functools.lru_cache(maxsize=4)
def vocabulary(flatten: float = 0.5, n: int = 40000) -> tuple[list[str], np.ndarray]:
    """Top-n English words (ASCII letters and apostrophes) and the cumulative sampling distribution.

    Probabilities are frequency**flatten: 1.0 is running text, 0.5 lets rarer words appear far
    more often (what a recogniser needs to see).
    """
    from wordfreq import top_n_list, word_frequency

    words = [w for w in top_n_list("en", n) if w.replace("'", "").isalpha() and w.isascii() and _clean(w)]
    p = np.array([word_frequency(w, "en") for w in words], float) ** flatten
    cdf = np.cumsum(p)
    return words, cdf / cdf[-1]


def _i_fix(w: str) -> str:
    """wordfreq lowercases everything; 'i' and its contractions are always capital."""
    return "I" + w[1:] if w == "i" or w.startswith("i'") else w


def english_word(rng: np.random.Generator, flatten: float = 0.5) -> str:
    words, cdf = vocabulary(flatten)
    return _i_fix(words[min(int(np.searchsorted(cdf, rng.random())), len(words) - 1)])


def english_words(rng: np.random.Generator, n: int, flatten: float = 0.85) -> list[str]:
    words, cdf = vocabulary(flatten)
    idx = np.minimum(np.searchsorted(cdf, rng.random(n)), len(words) - 1)
    return [_i_fix(words[i]) for i in idx]


def _pick(rng: np.random.Generator, items: Sequence[T]) -> T:
    return items[int(rng.integers(len(items)))]


def number(rng: np.random.Generator) -> str:
    kind = rng.random()
    if kind < 0.4:
        return str(int(rng.integers(0, 100)))
    if kind < 0.6:
        return str(int(rng.integers(100, 10000)))
    if kind < 0.75:
        return f"{int(rng.integers(1, 100000)):,}"
    if kind < 0.9:
        return f"{rng.uniform(0, 100):.{int(rng.integers(1, 3))}f}"
    d = int(rng.integers(1, 32))
    return f"{d}{ordinal_suffix(d)}"


def ordinal_suffix(d: int) -> str:
    if 10 <= d % 100 <= 20:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(d % 10, "th")


def date(rng: np.random.Generator) -> list[str]:
    d, m = int(rng.integers(1, 29)), int(rng.integers(1, 13))
    y = int(rng.choice([rng.integers(1880, 1950), rng.integers(1950, 2030)]))
    fmt = int(rng.integers(8))
    if fmt == 0:
        return [MONTHS[m - 1], f"{d}{ordinal_suffix(d)},", str(y)]
    if fmt == 1:
        return [f"{d}/{m}/{y % 100:02d}" if rng.random() < 0.5 else f"{d:02d}/{m:02d}/{y}"]
    if fmt == 2:
        return [f"{m}-{d}-{y % 100:02d}"]
    if fmt == 3:
        return [str(d), MONTHS[m - 1], str(y)]
    if fmt == 4:
        return [_pick(rng, MONTH_ABBR), f"{d}{ordinal_suffix(d)}", f"{y}."]
    if fmt == 5:
        return [f"{y}-{m:02d}-{d:02d}"]
    if fmt == 6:
        return [_pick(rng, WEEKDAYS) + ",", f"{d}{ordinal_suffix(d)}", MONTHS[m - 1]]
    return [f"{d}.{m}.{y}"]


def clock(rng: np.random.Generator) -> list[str]:
    h, mi = int(rng.integers(0, 24)), int(rng.integers(0, 60))
    fmt = int(rng.integers(4))
    if fmt == 0:
        return [f"{h:02d}:{mi:02d}"]
    if fmt == 1:
        return [f"{h % 12 or 12}:{mi:02d}", _pick(rng, ["am", "pm", "a.m.", "p.m.", "AM", "PM"])]
    if fmt == 2:
        return [f"{h % 12 or 12}{_pick(rng, ['am', 'pm', 'p.m.', 'A.M.'])}"]
    return [f"{h % 12 or 12}.{mi:02d}"]


def money(rng: np.random.Generator) -> str:
    cur = _pick(rng, ["£", "$", "$", "€", "£"])
    amount = rng.choice([rng.integers(1, 100), rng.integers(100, 5000)])
    if rng.random() < 0.5:
        text = f"{cur}{amount}"
    else:
        text = f"{cur}{amount:,}.{int(rng.integers(0, 100)):02d}"
    if cur == "€" and rng.random() < 0.3:
        text = text[1:].replace(".", ",") + "€"
    return text


def person(rng: np.random.Generator) -> list[str]:
    first, last = _pick(rng, FIRST_NAMES), _pick(rng, SURNAMES)
    style = int(rng.integers(5))
    if style == 0:
        return [_pick(rng, TITLES), last]
    if style == 1:
        return [first, last]
    if style == 2:
        return [f"{first[0]}.", last]
    if style == 3:
        return [_pick(rng, TITLES), first, f"{_pick(rng, string.ascii_uppercase)}.", last]
    return [first, f"{_pick(rng, string.ascii_uppercase)}.", last]


def address(rng: np.random.Generator) -> list[list[str]]:
    """2-3 address lines."""
    street = [str(int(rng.integers(1, 3000))), _pick(rng, SURNAMES), _pick(rng, STREET_TYPES) + ","]
    town = [_pick(rng, TOWNS) + ",", _pick(rng, STATES)]
    if rng.random() < 0.5:
        town.append(postcode(rng))
    lines = [street, town]
    if rng.random() < 0.3:
        lines.insert(
            0, ["Apt.", str(int(rng.integers(1, 80)))] if rng.random() < 0.5 else ["c/o", *person(rng)]
        )
    return lines


def postcode(rng: np.random.Generator) -> str:
    if rng.random() < 0.5:
        return f"{int(rng.integers(10000, 99999))}"
    letters = string.ascii_uppercase
    return (
        f"{_pick(rng, list(letters))}{_pick(rng, list(letters))}{int(rng.integers(1, 20))}"
        f"-{int(rng.integers(1, 9))}{_pick(rng, list(letters))}{_pick(rng, list(letters))}"
    )


def phone(rng: np.random.Generator) -> str:
    a, b, c = rng.integers(100, 999), rng.integers(100, 999), rng.integers(1000, 9999)
    return _pick(rng, [f"({a}){b}-{c}", f"{a}-{b}-{c}", f"0{a}{b}{c}", f"+44{a}{b}{c}"])


def rare_token(rng: np.random.Generator) -> str:
    """A token built around a rarely written character."""
    t = _pick(rng, RARE_TEMPLATES)
    while "{n}" in t or "{w}" in t or "{c}" in t:
        t = (
            t.replace("{n}", str(int(rng.integers(0, 100))), 1)
            .replace("{w}", english_word(rng)[:8], 1)
            .replace("{c}", f"{int(rng.integers(0, 100)):02d}", 1)
        )
    return t


def random_chars(rng: np.random.Generator) -> str:
    """Letters with no language prior: keeps the recogniser from guessing words it half sees."""
    pool = CHARSET.replace(" ", "")
    alpha = string.ascii_letters + string.digits
    n = int(rng.integers(1, 10))
    src = pool if rng.random() < 0.3 else alpha
    return "".join(src[int(i)] for i in rng.integers(0, len(src), n))


def decorate(word: str, rng: np.random.Generator) -> str:
    """Case and punctuation glued to a word, at roughly the rates of running text."""
    r = rng.random()
    if r < 0.12:
        word = word[:1].upper() + word[1:]
    elif r < 0.15:
        word = word.upper()
    r = rng.random()
    if r < 0.10:
        word += ","
    elif r < 0.15:
        word += "."
    elif r < 0.17:
        word += _pick(rng, [";", ":", "?", "!", "'s", "-"])
    elif r < 0.19:
        word = _pick(rng, ['"{}"', "({})", "'{}'", '"{}', '{}"', "({}", "{})", "{}),", '{},"']).format(word)
    return word


def prose(rng: np.random.Generator, n: int, sentence_start: bool = True) -> list[str]:
    """n tokens of running text: sentences, commas, a few numbers and names."""
    out: list[str] = []
    start = sentence_start
    words = english_words(rng, n)
    for w in words:
        r = rng.random()
        if r < 0.025:
            tok = [number(rng)]
        elif r < 0.035:
            tok = person(rng)[-1:]
        elif r < 0.04:
            tok = [money(rng)]
        elif r < 0.045:
            tok = [rare_token(rng)]
        else:
            tok = [w]
        if start:
            tok[0] = tok[0][:1].upper() + tok[0][1:]
            start = False
        end = rng.random()
        if end < 0.08:
            tok[-1] += rng.choice([".", ".", ".", "?", "!"])
            start = True
        elif end < 0.16:
            tok[-1] += ","
        out.extend(tok)
    if out and out[-1][-1] not in ".?!":
        out[-1] += "."
    return out[: max(n, 1)]


def token(rng: np.random.Generator) -> str:
    """One word-crop label: the mix the recogniser trains on."""
    r = rng.random()
    if r < 0.62:
        return decorate(english_word(rng), rng)
    if r < 0.70:
        return number(rng) if rng.random() < 0.7 else money(rng)
    if r < 0.76:
        return _pick(rng, date(rng) + clock(rng))
    if r < 0.82:
        return decorate(_pick(rng, person(rng) + [_pick(rng, TOWNS), _pick(rng, STATES)]), rng)
    if r < 0.89:
        return rare_token(rng)
    if r < 0.95:
        return random_chars(rng)
    return _pick(
        rng,
        [phone(rng), postcode(rng), _pick(rng, TITLES), _pick(rng, MONTH_ABBR), english_word(rng).upper()],
    )


def fill(template: list[str], rng: np.random.Generator) -> list[str]:
    """Expand {first} / {surname} / {title} placeholders in a salutation or closing."""
    return [
        t.replace("{first}", _pick(rng, FIRST_NAMES))
        .replace("{surname}", _pick(rng, SURNAMES))
        .replace("{title}", _pick(rng, TITLES))
        for t in template
    ]


def salutation(rng: np.random.Generator) -> list[str]:
    return fill(_pick(rng, SALUTATIONS), rng)


def closing(rng: np.random.Generator) -> list[str]:
    return fill(_pick(rng, CLOSINGS), rng)
