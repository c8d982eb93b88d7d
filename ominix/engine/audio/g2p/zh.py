"""Mandarin grapheme-to-phoneme for GPT-SoVITS v2: jieba words + POS, pypinyin, tone sandhi,
erhua, then pinyin -> (initial, toned final) in the opencpop-strict naming of the v2 symbols.

`g2p(norm_text) -> (phones, word2ph)` takes text already through zh_norm.normalize (CJK and v2
punctuation only); word2ph[i] is how many phones character i became (2 for a syllable, 1 for a
punctuation mark), which is how the BERT's per-character features are spread over the phones.

Polyphones are resolved by pypinyin's phrase dictionary (the reference's pypinyin path); the
reference's optional neural polyphone model (g2pW) is not used: its weights are not published in
any package.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

from ominix.engine.audio.g2p import sandhi
from ominix.engine.audio.g2p.symbols import SYMBOL_TO_ID
from ominix.engine.audio.g2p.zh_norm import PUNCTUATION

_PUNCT = set(PUNCTUATION)
_SENTENCE = re.compile(r"(?<=[{0}])\s*".format(PUNCTUATION))
_RETROFLEX_I = {"zh", "ch", "sh", "r"}
_DENTAL_I = {"z", "c", "s"}
_INITIALS = "b p m f d t n l g k h j q x r z c s y w".split()

MUST_ERHUA = {"小院儿", "胡同儿", "范儿", "老汉儿", "撒欢儿", "寻老礼儿", "妥妥儿", "媳妇儿"}
NOT_ERHUA = set("虐儿 为儿 护儿 瞒儿 救儿 替儿 有儿 一儿 我儿 俺儿 妻儿 拐儿 聋儿 乞儿 患儿 幼儿 孤儿 婴儿 婴幼儿 连体儿 脑瘫儿 "
                "流浪儿 体弱儿 混血儿 蜜雪儿 舫儿 祖儿 美儿 应采儿 可儿 侄儿 孙儿 侄孙儿 女儿 男儿 红孩儿 花儿 虫儿 马儿 鸟儿 猪儿 "
                "猫儿 狗儿 少儿".split())  # fmt: skip


@lru_cache(maxsize=None)
def syllable_phones(pinyin: str) -> tuple[str, str]:
    """A toneless pinyin syllable (y/w spelling) as (initial, final) of the v2 table: zero-initial
    syllables get AA/EE/OO, zhi/chi/shi/ri end in "ir", zi/ci/si in "i0", ü is "v", yan/ye are
    y + En/E."""
    if pinyin[0] in "aeo":
        return {"a": "AA", "e": "EE", "o": "OO"}[pinyin[0]], pinyin
    initial = pinyin[:2] if pinyin[:2] in ("zh", "ch", "sh") else pinyin[0]
    if initial not in _INITIALS and initial not in ("zh", "ch", "sh"):
        raise ValueError(f"'{pinyin}' is not a pinyin syllable")
    rest = pinyin[len(initial):]
    if rest == "i" and initial in _RETROFLEX_I:
        rest = "ir"
    elif rest == "i" and initial in _DENTAL_I:
        rest = "i0"
    elif initial in ("j", "q", "x", "y") and rest.startswith("u"):
        rest = "v" + rest[1:]
    elif initial == "y" and rest in ("an", "e"):
        rest = {"an": "En", "e": "E"}[rest]
    if not rest:
        raise ValueError(f"'{pinyin}' is not a pinyin syllable")
    return initial, rest


def _phones(c: str, v: str) -> list[str]:
    """pypinyin's (initial, FINALS_TONE3 final) to v2 phones; punctuation comes back as itself.
    A character pypinyin has no reading for, or a syllable outside the table (m, n, ng, hm: the
    reference fails on these), gives no phones."""
    if c == v:
        return [c] if c in _PUNCT else []
    final, tone = v[:-1], v[-1:]
    if not final or tone not in "12345":
        return []
    if c:
        pinyin = c + {"uei": "ui", "iou": "iu", "uen": "un"}.get(final, final)
    else:  # pypinyin's finals of zero-initial syllables back to their y/w spelling
        pinyin = {"ing": "ying", "i": "yi", "in": "yin", "u": "wu"}.get(final)
        if pinyin is None:
            pinyin = {"v": "yu", "e": "e", "i": "y", "u": "w"}.get(final[0], final[0]) + final[1:]
    try:
        initial, rest = syllable_phones(pinyin)
    except ValueError:
        return []
    return [initial, rest + tone] if initial in SYMBOL_TO_ID and rest + tone in SYMBOL_TO_ID else []


def _erhua(initials: list[str], finals: list[str], word: str, pos: str) -> tuple[list[str], list[str]]:
    last = len(finals) - 1
    if 0 <= last < len(word) and word[last] == "儿" and finals[last] == "er1":
        finals[last] = "er2"
    if word not in MUST_ERHUA and (word in NOT_ERHUA or pos in {"a", "j", "nr"}):
        return initials, finals
    if len(finals) != len(word):
        return initials, finals
    out = []
    for i, phn in enumerate(finals):  # 儿 takes the tone of the syllable before it
        if i == len(finals) - 1 and word[i] == "儿" and phn in {"er2", "er5"} and word[-2:] not in NOT_ERHUA and out:
            phn = "er" + out[-1][-1]
        out.append(phn)
    return initials, out


def _pinyin(word: str) -> tuple[list[str], list[str]]:
    from pypinyin import Style, lazy_pinyin

    initials = lazy_pinyin(word, neutral_tone_with_five=True, style=Style.INITIALS)
    finals = lazy_pinyin(word, neutral_tone_with_five=True, style=Style.FINALS_TONE3)
    return initials, finals


def _words(segment: str) -> list:
    import jieba
    import jieba.posseg

    jieba.setLogLevel(logging.CRITICAL)
    return [(p.word, p.flag) for p in jieba.posseg.cut(segment)]


def g2p(text: str) -> tuple[list[str], list[int]]:
    phones: list[str] = []
    word2ph: list[int] = []
    for segment in (s for s in _SENTENCE.split(text) if s.strip()):
        segment = re.sub("[a-zA-Z]+", "", segment)
        for word, pos in sandhi.merge(_words(segment)):
            if pos == "eng":
                continue
            initials, finals = _pinyin(word)
            try:
                finals = sandhi.apply(word, pos, finals)
            except IndexError:  # the rules index finals; a character without a reading has ""
                pass
            initials, finals = _erhua(initials, finals, word, pos)
            for c, v in zip(initials, finals):
                ph = _phones(c, v)
                phones += ph
                word2ph.append(len(ph))
    return phones, word2ph
