"""GPT-SoVITS v2 as a `SpeechSynthesizer` (engine/audio/synth.py) for the `tts` kind.

A folder in the published layout (lj1995/GPT-SoVITS: the GPT `.ckpt`, the SoVITS `s2G*.pth`,
chinese-hubert-base/ and chinese-roberta-wwm-ext-large/) is converted once into `.ominix/` inside
it (config.json + safetensors per part, no torch), then loaded from there.

A voice is a reference clip (3-10 s) plus its transcript. Cloning it (`speaker_embedding`, one
worker step) computes what every sentence then reuses: the clip's semantic codes (cnhubert features
of the 16 kHz clip + 0.3 s of silence, quantized by SoVITS), its style vector (the 32 kHz clip's
spectrogram through `ref_enc`), and the transcript's phonemes and BERT features. They are packed
into one float32 vector, which the voices file keeps (engine/audio/voices.py).

Per sentence (`Synthesis.step()`): the text front end (phonemes + BERT features) in one step, then
one GPT semantic token per step, then the SoVITS decode of the sentence in one step, which returns
its audio followed by 0.3 s of silence (the reference's fragment interval).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from ominix.engine.audio import gpt_sovits as gs
from ominix.engine.audio.g2p import PAUSE_MARKS
from ominix.engine.audio.synth import SynthesisOptions, VoiceError
from ominix.engine.load import LoadError

SAMPLE_RATE = 32_000
SSL_RATE = 16_000
MIN_REFERENCE, MAX_REFERENCE = 3.0, 10.0  # seconds, the reference's bounds
PAUSE = 0.3  # silence after each sentence (fragment_interval)
CONVERTED = ".ominix"
HUBERT_DIR, BERT_DIR = "chinese-hubert-base", "chinese-roberta-wwm-ext-large"
_MAGIC = 7051.0  # marks (and versions) the packed voice layout; exact in float32

_LANGUAGES = {None: "zh", "auto": "zh", "zh": "zh", "chinese": "zh", "all_zh": "zh", "en": "en", "english": "en"}


class FrontEnd:
    """The text front end (engine/audio/g2p): text -> (phoneme ids, BERT features [len(ids), 1024]).
    `language` None / "auto" / "zh" reads Chinese with English words mixed in; "en" all English."""

    def __init__(self, bert):
        self.bert = bert  # g2p.bert.ChineseBert, or None for zero features

    @staticmethod
    def language(language: str | None) -> str:
        key = language.lower() if isinstance(language, str) else None
        if key not in _LANGUAGES:
            raise VoiceError(f"GPT-SoVITS speaks zh (Chinese, with English words) or en, not '{language}'")
        return _LANGUAGES[key]

    def phones(self, text: str, language: str | None = None) -> list[int]:
        from ominix.engine.audio.g2p import text_features

        return list(text_features(text, self.language(language), None)[0])

    def __call__(self, text: str, language: str | None = None, first: bool | None = None) -> tuple[list[int], np.ndarray]:
        """`first`: a sentence of a request (True for its first), prepared as the reference's
        TextPreprocessor does; None: the text as it is (the voice's transcript)."""
        from ominix.engine.audio.g2p import prepare_sentence, text_features

        lang = self.language(language)
        if first is not None:
            text = prepare_sentence(text, lang, first)
        phones, features, _ = text_features(text, lang, self.bert)
        return list(phones), np.array(features.astype(mx.float32)).T


# --- files and the one-time conversion -------------------------------------------------------



def _one(path: Path, pattern: str, preferred: str, what: str) -> Path:
    found = sorted(p for p in path.rglob(pattern) if CONVERTED not in p.parts)
    best = [p for p in found if p.name.startswith(preferred)] or found
    if not best:
        raise LoadError(f"{path} has no {what} ({pattern})")
    if len(best) > 1:
        raise LoadError(f"{path} has several {what}s ({', '.join(p.name for p in best)}); keep one")
    return best[0]


def source_files(path: Path) -> dict[str, Path]:
    return {"gpt": _one(path, "*.ckpt", "s1", "GPT checkpoint"), "sovits": _one(path, "*.pth", "s2G", "SoVITS checkpoint"),
            "hubert": path / HUBERT_DIR, "bert": path / BERT_DIR}  # fmt: skip


def _stamp(files: dict[str, Path]) -> dict:
    def one(p: Path):
        target = p / "pytorch_model.bin" if p.is_dir() else p
        st = target.stat() if target.exists() else None
        return [str(p.name), st.st_size if st else 0, int(st.st_mtime) if st else 0]

    return {k: one(v) for k, v in files.items() if k != "bert"}


def prepare(path: str | Path) -> Path:
    """Convert the published files once (again only when they change); returns the converted folder."""
    path = Path(path)
    files = source_files(path)
    out = path / CONVERTED
    stamp = _stamp(files)
    try:
        if json.loads((out / "source.json").read_text()) == stamp:
            return out
    except (OSError, ValueError):
        pass
    tmp = Path(tempfile.mkdtemp(prefix=".ominix-", dir=path))
    try:
        gs.convert_gpt(files["gpt"], tmp / "gpt")
        gs.convert_sovits(files["sovits"], tmp / "sovits")
        gs.convert_hubert(files["hubert"], tmp / "hubert")
        (tmp / "source.json").write_text(json.dumps(stamp))
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
    except (gs.torch_ckpt.CheckpointError, OSError, KeyError, ValueError) as e:  # missing or malformed files
        raise LoadError(f"cannot convert the GPT-SoVITS files in {path}: {e}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


# --- voices ------------------------------------------------------------------------------------


@dataclass
class Voice:
    codes: list[int]  # the clip's semantic tokens (the GPT's prompt)
    ge: np.ndarray  # [gin] style vector
    phones: list[int]  # the transcript's phonemes
    bert: np.ndarray  # [len(phones), 1024]

    def pack(self) -> np.ndarray:
        head = [_MAGIC, len(self.codes), len(self.ge), len(self.phones), self.bert.shape[-1]]
        parts = [head, self.codes, self.ge, self.phones, self.bert.reshape(-1)]
        return np.concatenate([np.asarray(p, np.float64) for p in parts]).astype(np.float32)

    @classmethod
    def unpack(cls, vector: np.ndarray) -> "Voice":
        v = np.asarray(vector, np.float32).reshape(-1)
        if len(v) < 5 or float(v[0]) != _MAGIC:
            raise VoiceError("this voice was not made by GPT-SoVITS: clone it again for this model")
        n, g, p, d = (int(x) for x in v[1:5])
        if len(v) != 5 + n + g + p + p * d:
            raise VoiceError("this voice's file is damaged: clone it again")
        at = np.cumsum([5, n, g, p])
        return cls(v[at[0] : at[1]].astype(np.int64).tolist(), v[at[1] : at[2]].copy(),
                   v[at[2] : at[3]].astype(np.int64).tolist(), v[at[3] :].reshape(p, d).copy())  # fmt: skip


def resample(audio: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Mono float32 resampling with PyAV (libswresample)."""
    import av

    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio, np.float32)[None], format="flt", layout="mono")
    frame.sample_rate = src
    resampler = av.AudioResampler(format="flt", layout="mono", rate=dst)
    parts = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


# --- the synthesizer -------------------------------------------------------------------------


class GPTSoVITS:
    sample_rate = SAMPLE_RATE
    voices: list[str] = []  # no built-in speakers: every voice is cloned from a clip
    can_clone = True
    needs_transcript = True

    def __init__(self, gpt, sovits, hubert, front: FrontEnd, max_tokens: int = 1500):
        self.gpt, self.sovits, self.hubert, self.front = gpt, sovits, hubert, front
        self.max_tokens = max_tokens

    def parameters(self) -> dict:
        return {"gpt": self.gpt.parameters(), "sovits": self.sovits.parameters(), "hubert": self.hubert.parameters()}

    def encode(self, text: str) -> list[int]:
        """The phoneme ids (usage counts them; no BERT run)."""
        return self.front.phones(text)

    def reference_codes(self, wav16: np.ndarray) -> list[int]:
        """The prompt's semantic tokens: cnhubert of the clip + 0.3 * 32000 zeros (as the reference pads)."""
        padded = np.concatenate([wav16, np.zeros(int(0.3 * SAMPLE_RATE), np.float32)])
        ssl = self.hubert(mx.array(padded)[None])
        return np.array(self.sovits.extract_latent(ssl)[0]).astype(np.int64).tolist()

    def style(self, wav32: np.ndarray) -> np.ndarray:
        peak = float(np.abs(wav32).max()) if len(wav32) else 0.0
        if peak > 1:
            wav32 = wav32 / min(2.0, peak)
        spec = gs.linear_spectrogram(wav32)
        return np.array(self.sovits.style(mx.array(spec)[None])[0, 0])

    def speaker_embedding(self, audio: np.ndarray, text: str | None = None) -> np.ndarray:
        """A voice from a 32 kHz mono clip and its transcript, packed (see `Voice`)."""
        seconds = len(audio) / SAMPLE_RATE
        if not MIN_REFERENCE <= seconds <= MAX_REFERENCE:
            raise VoiceError(f"GPT-SoVITS needs a {MIN_REFERENCE:g}-{MAX_REFERENCE:g} s reference clip; it lasts {seconds:.2f} s")
        text = (text or "").strip()
        if not text:
            raise VoiceError("GPT-SoVITS needs the reference clip's transcript: send it as form field 'text'")
        if text[-1] not in PAUSE_MARKS:
            text += "。"  # the reference ends an unpunctuated transcript so
        phones, bert = self.front(text, None)
        codes = self.reference_codes(resample(audio, SAMPLE_RATE, SSL_RATE))
        return Voice(codes, self.style(audio), list(phones), np.asarray(bert, np.float32)).pack()

    def synthesis(self, text: str, options: SynthesisOptions) -> "Synthesis":
        if options.voice_embedding is None:
            raise VoiceError("GPT-SoVITS speaks in a cloned voice: create one with POST /v1/audio/voices "
                             "(a 3-10 s clip and its transcript) and name it as `voice`")  # fmt: skip
        return Synthesis(self, text, Voice.unpack(options.voice_embedding), options)


class Synthesis:
    """One sentence: front end, then semantic tokens one per step, then one SoVITS decode."""

    def __init__(self, tts: GPTSoVITS, text: str, voice: Voice, options: SynthesisOptions):
        self.tts, self.text, self.voice, self.options = tts, text, voice, options
        self.decoder: gs.SemanticDecoder | None = None
        self.phones: list[int] = []
        self.frames: list[int] = []  # the sentence's semantic tokens (usage counts them)
        self.done = False
        seed = options.seed if options.seed is not None else int(np.random.randint(2**31))
        self.key = mx.random.key(seed + 7919)  # the flow's noise: independent of the GPT's draws
        self.seed = seed

    def _start(self) -> None:
        phones, bert = self.tts.front(self.text, self.options.language, first=self.options.sentence == 0)
        self.phones = list(phones)
        v = self.voice
        all_bert = np.concatenate([v.bert, np.asarray(bert, np.float32)], axis=0)
        greedy = self.options.temperature is not None and self.options.temperature <= 0
        self.decoder = gs.SemanticDecoder(
            self.tts.gpt, v.phones + self.phones, all_bert, v.codes, top_k=1 if greedy else 15,
            temperature=self.options.temperature or 1.0, max_tokens=self.options.max_frames or self.tts.max_tokens,
            seed=self.seed,
        )  # fmt: skip

    def _decode(self) -> np.ndarray:
        self.done = True
        tokens = self.decoder.tokens
        self.frames = list(tokens)
        if not tokens or not self.phones:
            return np.zeros(int(PAUSE * SAMPLE_RATE), np.float32)
        sovits = self.tts.sovits
        noise = mx.random.normal((1, 2 * len(tokens), sovits.args.inter_channels), key=self.key)
        ge = mx.array(self.voice.ge)[None, None]
        wav = np.array(sovits.decode(mx.array([tokens]), mx.array([self.phones]), ge, noise)[0].astype(mx.float32))
        peak = float(np.abs(wav).max())
        if peak > 1:  # the reference's clipping guard
            wav = wav / peak
        return np.concatenate([wav, np.zeros(int(PAUSE * SAMPLE_RATE), np.float32)])

    def step(self) -> np.ndarray | None:
        if self.done:
            return None
        if self.decoder is None:
            self._start()
            return None
        if self.decoder.step() is not None:
            return None
        return self._decode()


def load_gpt_sovits(path: str | Path, front: FrontEnd | None = None) -> GPTSoVITS:
    path = Path(path)
    converted = prepare(path)
    gpt = gs.load_gpt(converted / "gpt")
    config = json.loads((converted / "gpt" / "config.json").read_text())
    max_sec = (config.get("data") or {}).get("max_sec", 54)
    if front is None:
        front = default_front_end(path / BERT_DIR)
    return GPTSoVITS(gpt, gs.load_sovits(converted / "sovits"), gs.load_hubert(converted / "hubert"), front,
                     max_tokens=int(50 * max_sec))  # fmt: skip


def default_front_end(bert_dir: Path) -> FrontEnd:
    from ominix.engine.audio.g2p import warm
    from ominix.engine.audio.g2p.bert import ChineseBert

    warm()  # the dictionaries now, on the loader thread, not in the first request's step
    return FrontEnd(ChineseBert.load(bert_dir))
