"""English text normalization as GPT-SoVITS v2 does it before g2p: ordinals, arithmetic, negative
numbers, times, units, money, decimals, fractions and numbers to words (inflect's wording, written
here: inflect's import alone costs seconds), accents stripped, then only letters, spaces and
' . , ? ! - remain; i.e./e.g. expanded; a capital inside a word starts a new word ("ThinkPad" ->
"Think Pad")."""

from __future__ import annotations

import re
import unicodedata

_MEASURES = {"m": ("meter", "meters"), "km": ("kilometer", "kilometers"),
             "km/h": ("kilometer per hour", "kilometers per hour"), "ft": ("feet", "feet"),
             "L": ("liter", "liters"), "tbsp": ("tablespoon", "tablespoons"), "tsp": ("teaspoon", "teaspoons"),
             "h": ("hour", "hours"), "min": ("minute", "minutes"), "s": ("second", "seconds"),
             "°C": ("degree celsius", "degrees celsius"), "°F": ("degree fahrenheit", "degrees fahrenheit")}  # fmt: skip
_OPERAND = r"((-?)((\d+)(\.\d+)?[⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ]*)|(\.\d+[⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ]*)|([A-Za-z][⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ]*))"
RE_ASMD = re.compile(_OPERAND + r"\s+([\+\-\×÷=])\s+" + _OPERAND)
_ASMD = {"+": " plus ", "-": " minus ", "×": " times ", "÷": " divided by ", "=": " Equals "}
RE_NEGATIVE = re.compile(r"(?:^|\s+)(-)(\d+)")
RE_ORDINAL_DOT = re.compile(r"\b([0-9]+)\. ")
RE_COMMA_NUMBER = re.compile(r"([0-9][0-9\,]+[0-9])")
RE_TIME = re.compile(r"\b([01]?[0-9]|2[0-3]):([0-5][0-9])\b")
RE_MEASURE = re.compile(r"\b([0-9]+(\.[0-9]+)?(m|km|km/h|ft|L|tbsp|tsp|h|min|s|°C|°F))\b")
RE_POUNDS = [re.compile(r"£([0-9\.\,]*[0-9]+)"), re.compile(r"([0-9\.\,]*[0-9]+)£")]
RE_DOLLARS = [re.compile(r"\$([0-9\.\,]*[0-9]+)"), re.compile(r"([(0-9\.\,]*[0-9]+)\$")]
RE_DECIMAL = re.compile(r"([0-9]+\.\s*[0-9]+)")
RE_FRACTION = re.compile(r"([0-9]+/[0-9]+)")
RE_ORDINAL = re.compile(r"[0-9]+(st|nd|rd|th)")
RE_NUMBER = re.compile(r"[0-9]+")


_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ["", " thousand", " million", " billion", " trillion", " quadrillion", " quintillion"]
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                  "nine": "ninth", "twelve": "twelfth"}  # fmt: skip


def _below_100(n: int) -> str:
    if n < 20:
        return _ONES[n]
    return _TENS[n // 10] + ("-" + _ONES[n % 10] if n % 10 else "")


def _below_1000(n: int, andword: str) -> str:
    hundreds, rest = divmod(n, 100)
    if not hundreds:
        return _below_100(rest)
    head = _ONES[hundreds] + " hundred"
    return head + (f" {andword} " if andword else " ") + _below_100(rest) if rest else head


def number_words(n: int, andword: str = "and") -> str:
    """Cardinal words as inflect's number_to_words writes them: thousands groups joined by ", ",
    a last group under 100 joined by `andword` instead ("one thousand and five"), "and" inside a
    group after "hundred"."""
    if n == 0:
        return "zero"
    groups, scale = [], 0
    while n:
        n, g = divmod(n, 1000)
        groups.append((scale, g))
        scale += 1
    words = [(_below_1000(g, andword) + _SCALES[s], s, g) for s, g in reversed(groups) if g]
    out = words[0][0]
    for text, s, g in words[1:]:
        out += (f" {andword} " if andword else " ") + text if s == 0 and g < 100 else ", " + text
    return out


def year_words(n: int) -> str:
    """A four-digit number read in pairs ("nineteen eighty-four", "ten oh one")."""
    hi, lo = divmod(n, 100)
    return _below_100(hi) + " " + ("oh " + _ONES[lo] if lo < 10 else _below_100(lo))


def ordinal_words(words: str) -> str:
    """The ordinal of cardinal words: the last word changes ("twenty-five" -> "twenty-fifth")."""
    head, sep, last = words.rpartition("-") if "-" in words.split(" ")[-1] else words.rpartition(" ")
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return head + sep + last


def ordinal_suffix(digits: str) -> str:
    n = int(digits)
    suffix = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return digits + suffix


def _time(m) -> str:
    hours, minutes = int(m.group(1)), int(m.group(2))
    period = "a.m." if hours < 12 else "p.m."
    hours = hours - 12 if hours > 12 else hours
    words = number_words(hours)
    return f"{words} o'clock {period}" if minutes == 0 else f"{words} {number_words(minutes)} {period}"


def _measure(m) -> str:
    unit = m.group(3)
    one = m.group(2) is None and int(m.group(1).replace(unit, "").replace(".", "")) == 1
    return m.group(1).replace(unit, " " + _MEASURES[unit][0 if one else 1])


def _money(m, unit: tuple[str, str], sub: tuple[str, str], plural: str) -> str:
    parts = m.group(1).split(".")
    if len(parts) > 2:
        return m.group(1) + " " + plural
    whole = int(parts[0]) if parts[0] else 0
    cents = int(parts[1].ljust(2, "0")) if len(parts) > 1 and parts[1] else 0
    name = lambda n, pair: pair[0] if n == 1 else pair[1]  # noqa: E731
    if whole and cents:
        return f"{whole} {name(whole, unit)} and {cents} {name(cents, sub)}"
    if whole:
        return f"{whole} {name(whole, unit)}"
    if cents:
        return f"{cents} {name(cents, sub)}"
    return "zero " + plural


def _decimal(m) -> str:
    whole, frac = m.group(1).split(".")
    return whole + " point " + " ".join(frac)


def _fraction(m) -> str:
    num, den = map(int, m.group(0).split("/"))
    words = number_words(num)
    if den == 2:
        return f"{words} {'half' if num == 1 else 'halves'}"
    if den == 1:
        return words
    return f"{words} {ordinal_words(number_words(den))}{'s' if num > 1 else ''}"


def _number(m) -> str:
    n = int(m.group(0))
    if 1000 < n < 3000:  # years
        if n == 2000:
            return "two thousand"
        if 2000 < n < 2010:
            return "two thousand " + number_words(n % 100)
        if n % 100 == 0:
            return number_words(n // 100) + " hundred"
        return year_words(n)
    return number_words(n, andword="")


def normalize(text: str) -> str:
    text = RE_ORDINAL_DOT.sub(lambda m: ordinal_suffix(m.group(1)) + ", ", text)
    while RE_ASMD.search(text):
        text = RE_ASMD.sub(lambda m: m.group(1) + _ASMD[m.group(8)] + m.group(9), text)
    text = RE_NEGATIVE.sub(lambda m: f"{'negative ' if m.group(1) else ''}{m.group(2)}", text)
    text = RE_COMMA_NUMBER.sub(lambda m: m.group(1).replace(",", ""), text)
    text = RE_TIME.sub(_time, text)
    text = RE_MEASURE.sub(_measure, text)
    for pattern in RE_POUNDS:
        text = pattern.sub(lambda m: _money(m, ("pound", "pounds"), ("penny", "pence"), "pounds"), text)
    for pattern in RE_DOLLARS:
        text = pattern.sub(lambda m: _money(m, ("dollar", "dollars"), ("cent", "cents"), "dollars"), text)
    text = RE_DECIMAL.sub(_decimal, text)
    text = RE_FRACTION.sub(_fraction, text)
    text = RE_ORDINAL.sub(lambda m: ordinal_words(number_words(int(m.group(0)[:-2]))), text)
    text = RE_NUMBER.sub(_number, text)
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    text = text.replace("%", " percent")
    text = re.sub(r"[^ A-Za-z'.,?!-]", "", text)
    text = re.sub(r"(?i)i\.e\.", "that is", text)
    text = re.sub(r"(?i)e\.g\.", "for example", text)
    return re.sub(r"(?<!^)(?<![\s])([A-Z])", r" \1", text)
