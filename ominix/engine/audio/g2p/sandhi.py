"""Mandarin tone sandhi over jieba words, as GPT-SoVITS (after PaddleSpeech) applies it.

Two passes. `merge(words)` regroups jieba's (word, pos) list so that the rules see the right
units: 不 + next word, V一V, reduplications, runs of third tones, 儿 onto its word. `apply(word,
pos, finals)` then rewrites the toned finals of one word: 不 (bu2 before a fourth tone), 一 (yi2 /
yi4 / yi1 / yi5), the neutral tone (particles, suffixes, reduplicated nouns and verbs, the lexicon
in data/neutral_tone_words.txt) and third-tone chains (3-3 -> 2-3, split by word structure).
Finals are pypinyin FINALS_TONE3 strings with "5" for the neutral tone ("ao3", "e5").

data/neutral_tone_words.txt and data/not_neutral_tone_words.txt are the word lists of PaddleSpeech's
tone sandhi (Apache-2.0), as GPT-SoVITS (MIT) uses them: data, one word a line.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

DATA = Path(__file__).parent / "data"
PUNC = "：，；。？！“”‘’':,;.?!"


@lru_cache(maxsize=1)
def _lexicons() -> tuple[frozenset, frozenset]:
    read = lambda name: frozenset((DATA / name).read_text(encoding="utf-8").split())  # noqa: E731
    return read("neutral_tone_words.txt"), read("not_neutral_tone_words.txt")


def _retone(final: str, tone: str) -> str:
    return final[:-1] + tone


def _all_three(finals: list[str]) -> bool:
    return all(f[-1] == "3" for f in finals)


def _finals(word: str) -> list[str]:
    from pypinyin import Style, lazy_pinyin

    return lazy_pinyin(word, neutral_tone_with_five=True, style=Style.FINALS_TONE3)


def _split_word(word: str) -> list[str]:
    """Two parts around the shortest sub-word jieba's search mode finds (e.g. 纸/老虎)."""
    import jieba

    first = sorted(jieba.cut_for_search(word), key=len)[0]
    if word.find(first) == 0:
        return [first, word[len(first):]]
    return [word[: -len(first)], first]


def _bu(word: str, finals: list[str]) -> list[str]:
    if len(word) == 3 and word[1] == "不":  # 看不懂
        finals[1] = _retone(finals[1], "5")
        return finals
    for i, ch in enumerate(word):
        if ch == "不" and i + 1 < len(word) and finals[i + 1][-1] == "4":  # 不怕
            finals[i] = _retone(finals[i], "2")
    return finals


def _yi(word: str, finals: list[str]) -> list[str]:
    if "一" in word and all(ch.isnumeric() for ch in word if ch != "一"):  # 一零零: digits read as is
        return finals
    if len(word) == 3 and word[1] == "一" and word[0] == word[-1]:  # 看一看
        finals[1] = _retone(finals[1], "5")
    elif word.startswith("第一"):  # ordinal
        finals[1] = _retone(finals[1], "1")
    else:
        for i, ch in enumerate(word):
            if ch == "一" and i + 1 < len(word):
                if finals[i + 1][-1] == "4":  # 一段
                    finals[i] = _retone(finals[i], "2")
                elif word[i + 1] not in PUNC:  # 一天; before punctuation it stays yi1
                    finals[i] = _retone(finals[i], "4")
    return finals


def _neutral(word: str, pos: str, finals: list[str]) -> list[str]:
    neutral, not_neutral = _lexicons()
    for j in range(1, len(word)):  # reduplicated nouns / verbs / adjectives: 奶奶, 试试
        if word[j] == word[j - 1] and pos[0] in "nva" and word not in not_neutral:
            finals[j] = _retone(finals[j], "5")
    ge = word.find("个")
    last = word[-1] if word else ""
    if last and last in "吧呢哈啊呐噻嘛吖嗨呐哦哒额滴哩哟喽啰耶喔诶":
        finals[-1] = _retone(finals[-1], "5")
    elif last and last in "的地得":
        finals[-1] = _retone(finals[-1], "5")
    elif len(word) == 1 and word in "了着过" and pos in {"ul", "uz", "ug"}:  # 走了, 看着
        finals[-1] = _retone(finals[-1], "5")
    elif len(word) > 1 and last in "们子" and pos in {"r", "n"} and word not in not_neutral:
        finals[-1] = _retone(finals[-1], "5")
    elif len(word) > 1 and last in "上下里" and pos in {"s", "l", "f"}:  # 桌上, 家里
        finals[-1] = _retone(finals[-1], "5")
    elif len(word) > 1 and last in "来去" and word[-2] in "上下进出回过起开":  # 上来, 下去
        finals[-1] = _retone(finals[-1], "5")
    elif (ge >= 1 and (word[ge - 1].isnumeric() or word[ge - 1] in "几有两半多各整每做是")) or word == "个":
        finals[ge] = _retone(finals[ge], "5")  # 个 as a measure word
    elif word in neutral or word[-2:] in neutral:
        finals[-1] = _retone(finals[-1], "5")
    parts = _split_word(word)
    split = len(parts[0])
    halves = [finals[:split], finals[split:]]
    for i, part in enumerate(parts):
        if part in neutral or part[-2:] in neutral:
            halves[i][-1] = _retone(halves[i][-1], "5")
    return halves[0] + halves[1]


def _three(word: str, finals: list[str]) -> list[str]:
    if len(word) == 2 and _all_three(finals):
        finals[0] = _retone(finals[0], "2")
    elif len(word) == 3:
        parts = _split_word(word)
        if _all_three(finals):
            if len(parts[0]) == 2:  # 蒙古/包
                finals[0], finals[1] = _retone(finals[0], "2"), _retone(finals[1], "2")
            elif len(parts[0]) == 1:  # 纸/老虎
                finals[1] = _retone(finals[1], "2")
        else:
            halves = [finals[: len(parts[0])], finals[len(parts[0]):]]
            for i, sub in enumerate(halves):
                if _all_three(sub) and len(sub) == 2:  # 所有/人
                    sub[0] = _retone(sub[0], "2")
                elif i == 1 and not _all_three(sub) and sub[0][-1] == "3" and halves[0][-1][-1] == "3":
                    halves[0][-1] = _retone(halves[0][-1], "2")  # 好/喜欢
                finals = halves[0] + halves[1]
    elif len(word) == 4:  # idioms: two pairs
        out = []
        for sub in (finals[:2], finals[2:]):
            if _all_three(sub):
                sub[0] = _retone(sub[0], "2")
            out += sub
        finals = out
    return finals


def apply(word: str, pos: str, finals: list[str]) -> list[str]:
    finals = _bu(word, finals)
    finals = _yi(word, finals)
    finals = _neutral(word, pos, finals)
    return _three(word, finals)


def _merge_bu(seg: list) -> list:
    out, last = [], ""
    for word, pos in seg:
        if last == "不":
            word = last + word
        if word != "不":
            out.append((word, pos))
        last = word
    if last == "不":
        out.append((last, "d"))
    return out


def _merge_yi(seg: list) -> list:
    out, i = [], 0
    while i < len(seg):  # V 一 V -> one word
        word, pos = seg[i]
        if i >= 1 and word == "一" and i + 1 < len(seg):
            prev = out[-1] if out else list(seg[i - 1])
            if prev[0] == seg[i + 1][0] and prev[1] == "v" and seg[i + 1][1] == "v":
                out[-1] = [prev[0] + "一" + seg[i + 1][0], prev[1]]
                i += 2
                continue
        out.append([word, pos])
        i += 1
    merged = []
    for word, pos in out:  # a lone 一 takes the next word
        if merged and merged[-1][0] == "一":
            merged[-1][0] += word
        else:
            merged.append([word, pos])
    return merged


def _is_reduplication(word: str) -> bool:
    return len(word) == 2 and word[0] == word[1]


def _merge_three_tones(seg: list, whole: bool) -> list:
    """Join neighbours in third tone (whole words when `whole`, else the touching syllables) while
    the result stays within three characters."""
    finals = [_finals(word) for word, _ in seg]
    out, merged_last = [], [False] * len(seg)
    for i, (word, pos) in enumerate(seg):
        if i >= 1 and not merged_last[i - 1] and (
                (_all_three(finals[i - 1]) and _all_three(finals[i])) if whole
                else (finals[i - 1][-1][-1] == "3" and finals[i][0][-1] == "3")):  # fmt: skip
            if not _is_reduplication(seg[i - 1][0]) and len(seg[i - 1][0]) + len(word) <= 3:
                out[-1][0] += word
                merged_last[i] = True
                continue
        out.append([word, pos])
    return out


def _merge_er(seg: list) -> list:
    out = []
    for i, (word, pos) in enumerate(seg):
        if i >= 1 and word == "儿" and seg[i - 1][0] != "#":
            out[-1][0] += word
        else:
            out.append([word, pos])
    return out


def _merge_reduplication(seg: list) -> list:
    out = []
    for word, pos in seg:
        if out and word == out[-1][0]:
            out[-1][0] += word
        else:
            out.append([word, pos])
    return out


def merge(seg: list) -> list:
    """jieba (word, pos) pairs regrouped for the sandhi rules; a step that fails on odd input
    (e.g. an empty pinyin) is skipped, as the reference does."""
    seg = _merge_bu(seg)
    for step in (_merge_yi, _merge_reduplication, lambda s: _merge_three_tones(s, True),
                 lambda s: _merge_three_tones(s, False)):  # fmt: skip
        try:
            seg = step(seg)
        except (IndexError, TypeError):
            pass
    return _merge_er(seg)
