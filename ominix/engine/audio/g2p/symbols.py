"""GPT-SoVITS v2 phone symbols and their ids (the index of a symbol is the id the GPT embeds).

The published v2 checkpoints index a table built as: the sorted set of the pad "_", the Mandarin
initials and toned finals (opencpop-strict naming, with "AA"/"EE"/"OO" for zero initials), the
Japanese phones, punctuation + SP/UNK, and ARPAbet; then "[" and "]" (Japanese pitch marks), the
Korean jamo and the Cantonese symbols. Only the first block matters for Mandarin and English; the
Korean and Cantonese tails are not listed here (they do not shift any id below them).
"""

from __future__ import annotations

PUNCTUATION = ["!", "?", "…", ",", ".", "-"]
SPECIAL = ["SP", "SP2", "SP3", "UNK"]
PAD = "_"

INITIALS = ["AA", "EE", "OO", "b", "c", "ch", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "q", "r",
            "s", "sh", "t", "w", "x", "y", "z", "zh"]  # fmt: skip
FINALS = ["E", "En", "a", "ai", "an", "ang", "ao", "e", "ei", "en", "eng", "er", "i", "i0", "ia", "ian",
          "iang", "iao", "ie", "in", "ing", "iong", "ir", "iu", "o", "ong", "ou", "u", "ua", "uai", "uan",
          "uang", "ui", "un", "uo", "v", "van", "ve", "vn"]  # fmt: skip
JAPANESE = ["I", "N", "U", "a", "b", "by", "ch", "cl", "d", "dy", "e", "f", "g", "gy", "h", "hy", "i", "j",
            "k", "ky", "m", "my", "n", "ny", "o", "p", "py", "r", "ry", "s", "sh", "t", "ts", "u", "v", "w",
            "y", "z"]  # fmt: skip
_VOWELS = {"AA": 3, "AE": 3, "AH": 3, "AO": 3, "AW": 3, "AY": 3, "EH": 3, "ER": 3, "EY": 3, "IH": 3,
           "IY": 3, "OW": 3, "OY": 3, "UH": 3, "UW": 3}  # fmt: skip
# ARPAbet as CMUdict writes it: vowels carry stress 0-2; "ER" and "IH" also appear bare.
ARPABET = sorted({v + str(s) for v in _VOWELS for s in range(3)} | {"ER", "IH"} | {
    "B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG", "P", "R", "S", "SH", "T", "TH",
    "V", "W", "Y", "Z", "ZH"})  # fmt: skip
KOREAN = "ㄱㄴㄷㄹㅁㅂㅅㅇㅈㅊㅋㅌㅍㅎㄲㄸㅃㅆㅉㅏㅓㅗㅜㅡㅣㅐㅔ空停"

_toned = [f + str(t) for f in FINALS for t in range(1, 6)]
SYMBOLS: list[str] = sorted(set([PAD] + INITIALS + _toned + JAPANESE + PUNCTUATION + SPECIAL + ARPABET))
SYMBOLS += ["[", "]"] + sorted(KOREAN)
SYMBOL_TO_ID = {s: i for i, s in enumerate(SYMBOLS)}


def to_ids(phones: list[str]) -> list[int]:
    """Phone symbols to ids; a symbol outside the table is a bug upstream (the cleaners map unknown
    phones to "UNK" before this)."""
    return [SYMBOL_TO_ID[p] for p in phones]
