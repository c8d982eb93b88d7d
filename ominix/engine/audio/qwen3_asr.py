"""Qwen3-ASR as a SpeechRecognizer: Whisper-style log-mel (numpy), the audio encoder, then greedy
decoding of the chat prompt Qwen3-ASR was trained on:

    <|im_start|>system\\n{context}<|im_end|>\\n<|im_start|>user\\n<|audio_start|><|audio_pad|>*N
    <|audio_end|><|im_end|>\\n<|im_start|>assistant\\n[language {Name}<asr_text>]

The model answers "language {Name}<asr_text>{text}"; given a language, that prefix is forced. The
request's prompt is the context (names, terms) Qwen3-ASR uses to bias recognition.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import mlx.core as mx
import numpy as np

from ominix.engine.audio.types import SAMPLE_RATE, Segment

LANGUAGES = {
    "zh": "Chinese", "en": "English", "yue": "Cantonese", "ar": "Arabic", "de": "German", "fr": "French",
    "es": "Spanish", "pt": "Portuguese", "id": "Indonesian", "it": "Italian", "ko": "Korean", "ru": "Russian",
    "th": "Thai", "vi": "Vietnamese", "ja": "Japanese", "tr": "Turkish", "hi": "Hindi", "ms": "Malay",
    "nl": "Dutch", "sv": "Swedish", "da": "Danish", "fi": "Finnish", "pl": "Polish", "cs": "Czech",
    "fil": "Filipino", "fa": "Persian", "el": "Greek", "ro": "Romanian", "hu": "Hungarian", "mk": "Macedonian",
}
CODES = {name.lower(): code for code, name in LANGUAGES.items()}
ASR_TEXT = "<asr_text>"


def _slaney_mel(f):
    f = np.asarray(f, dtype=np.float64)
    log_region = f >= 1000.0
    mel = 3.0 * f / 200.0
    return np.where(log_region, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) * (27.0 / np.log(6.4)), mel)


def _slaney_hz(m):
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((m - 15.0) * (np.log(6.4) / 27.0)), 200.0 * m / 3.0)


@lru_cache(maxsize=4)
def mel_filters(n_mels: int, n_fft: int = 400, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(n_fft//2 + 1, n_mels) Slaney-scale, Slaney-normalised triangles over 0..Nyquist (librosa's)."""
    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = _slaney_hz(np.linspace(_slaney_mel(0.0), _slaney_mel(sample_rate / 2), n_mels + 2))
    widths = np.diff(edges)
    slopes = edges[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    banks = np.maximum(0.0, np.minimum(down, up))
    return (banks * (2.0 / (edges[2:] - edges[:-2]))).astype(np.float32)


def log_mel(audio: np.ndarray, n_mels: int = 128, frames: int | None = None, n_fft: int = 400,
            hop: int = 160, reflect_tail: bool = False) -> np.ndarray:
    """Whisper's log-mel (periodic Hann, centred STFT, power, log10 floored 8 below the max,
    (x + 4) / 4) of `audio`, for `frames` frames.

    Past the end, the audio is followed by silence (transformers' Qwen3ASRFeatureExtractor pads the
    clip to 30 s), or with `reflect_tail` reflected as WhisperFeatureExtractor does for an unpadded
    clip (qwen-asr's processor, one request): only the last frame or two differ."""
    audio = np.asarray(audio, dtype=np.float32)
    frames = frames if frames is not None else -(-len(audio) // hop)
    half = n_fft // 2
    # the clamp uses the loudest frame: with silence after the clip, two frames past the last still
    # overlap the audio; the reflected clip has len // hop frames and no more
    count = len(audio) // hop if reflect_tail else frames + 2
    padded = np.zeros(max(count, frames) * hop + n_fft, dtype=np.float32)
    padded[half:half + len(audio)] = audio
    padded[:half] = audio[1:half + 1][::-1] if len(audio) > half else 0.0  # reflect
    if reflect_tail and len(audio) > half:
        padded[half + len(audio):2 * half + len(audio)] = audio[-half - 1:-1][::-1]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    strided = np.lib.stride_tricks.as_strided(padded, shape=(max(count, frames), n_fft),
                                              strides=(padded.strides[0] * hop, padded.strides[0]))
    spectrum = np.fft.rfft(strided * window, axis=1)
    power = (spectrum.real ** 2 + spectrum.imag ** 2).astype(np.float32)
    mel = np.log10(np.maximum(power @ mel_filters(n_mels, n_fft), 1e-10))
    mel = np.maximum(mel, mel[:count].max() - 8.0)
    return ((mel + 4.0) / 4.0)[:frames].T.astype(np.float32)


class Qwen3ASRRecognizer:
    window_seconds = 30.0
    min_samples = 8000  # Qwen3-ASR pads clips shorter than 0.5 s

    def __init__(self, model, tokenizer, config: dict, max_new_tokens: int = 448, reflect_tail: bool = False):
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.reflect_tail = reflect_tail
        self.max_new_tokens = max_new_tokens
        args = model.config
        self.n_mels = args.audio.num_mel_bins
        self.eos = set(args.eos_token_ids) | set(getattr(tokenizer, "eos_token_ids", ()) or ())

    def prompt_ids(self, audio_tokens: int, language: str | None, context: str | None) -> list[int]:
        prefix = f"language {language}{ASR_TEXT}" if language else ""
        text = (f"<|im_start|>system\n{context or ''}<|im_end|>\n<|im_start|>user\n<|audio_start|>"
                f"{'<|audio_pad|>' * audio_tokens}<|audio_end|><|im_end|>\n<|im_start|>assistant\n{prefix}")
        return self.tokenizer.encode(text)

    def features(self, audio: np.ndarray) -> tuple[mx.array, int]:
        if len(audio) < self.min_samples:
            audio = np.pad(audio, (0, self.min_samples - len(audio)))
        frames = -(-len(audio) // 160)
        return mx.array(log_mel(audio, self.n_mels, frames, reflect_tail=self.reflect_tail)), frames

    def generate(self, audio: np.ndarray, language: str | None = None, context: str | None = None) -> dict:
        from ominix.engine.llm.cache import make_cache

        mel, frames = self.features(audio)
        audio_embeds = self.model.audio_tower(mel, frames)
        name = LANGUAGES.get(language, language) if language else None
        ids = self.prompt_ids(audio_embeds.shape[0], name, context)
        cache = make_cache(self.model)
        logits = self.model.forward_embeddings(self.model.embed(mx.array([ids]), audio_embeds), cache)
        out: list[int] = []
        budget = min(self.max_new_tokens, 16 + int(len(audio) / SAMPLE_RATE * 12))
        while len(out) < budget:
            token = int(mx.argmax(logits[0, -1]).item())
            if token in self.eos:
                break
            out.append(token)
            logits = self.model.forward_embeddings(self.model.model.embed_tokens(mx.array([[token]])), cache)
        raw = self.tokenizer.decode(out)
        if name:
            raw = f"language {name}{ASR_TEXT}" + raw
        return {"prompt": ids, "tokens": out, "raw": raw, **parse_answer(raw)}

    def transcribe_window(self, audio: np.ndarray, *, offset: float = 0.0, language: str | None = None,
                          prompt: str | None = None, task: str = "transcribe", temperature: float = 0.0,
                          word_timestamps: bool = False) -> tuple[list[Segment], str | None]:
        out = self.generate(audio, language, prompt)
        found = language or out["language"]
        if not out["text"]:
            return [], found
        end = offset + len(audio) / SAMPLE_RATE
        return [Segment(start=offset, end=end, text=out["text"], tokens=out["tokens"])], found


def collapse_repeats(text: str, times: int = 20, longest: int = 20) -> str:
    """Qwen3-ASR's clean-up of a looping answer (as qwen-asr does it): a character repeated more
    than `times` times in a row, then the first pattern of up to `longest` characters repeated
    `times` times or more, is kept once (and so on after it)."""
    text = re.sub(r"(.)\1{%d,}" % times, r"\1", text, flags=re.S)
    return _collapse_patterns(text, times, longest)


def _collapse_patterns(text: str, times: int, longest: int) -> str:
    n, i = len(text), 0
    while i <= n - 2 * times:
        for k in range(1, longest + 1):
            if i + k * times > n:
                break
            pattern = text[i:i + k]
            if text[i:i + k * times] == pattern * times:
                end = i + k * times
                while text[end:end + k] == pattern:
                    end += k
                return text[:i] + pattern + _collapse_patterns(text[end:], times, longest)
        i += 1
    return text


def parse_answer(raw: str) -> dict:
    """'language English<asr_text>hello' -> {'language': 'en', 'text': 'hello'}."""
    raw = collapse_repeats(raw.strip())
    if ASR_TEXT in raw:
        head, _, text = raw.partition(ASR_TEXT)
        name = head.strip().removeprefix("language").strip()
        return {"language": CODES.get(name.lower(), name.lower() or None) if name.lower() != "none" else None,
                "text": text.strip()}
    return {"language": None, "text": raw.strip()}


def load_qwen3_asr(path: str | Path):
    """The recognizer for an mlx-community, Qwen original or transformers -hf Qwen3-ASR directory."""
    from ominix.engine.llm.tokenizer import TokenizerError, load_tokenizer
    from ominix.engine.load import LoadError, load_model

    path = Path(path)
    model, config = load_model(path)
    try:
        tokenizer = load_tokenizer(path) if (path / "tokenizer.json").is_file() else vocab_tokenizer(path)
    except TokenizerError as e:
        raise LoadError(str(e)) from None
    for token in ("<|audio_start|>", "<|audio_pad|>", "<|audio_end|>", "<|im_start|>"):
        if tokenizer.token_to_id(token) is None:
            raise LoadError(f"the tokenizer has no {token} token (not a Qwen3-ASR tokenizer)")
    # Qwen's own repos (and mlx-community's copies) declare WhisperFeatureExtractor, whose unpadded
    # clip ends reflected; transformers' -hf repos declare Qwen3ASRFeatureExtractor (silence after)
    pre = path / "preprocessor_config.json"
    extractor = json.loads(pre.read_text(encoding="utf-8")).get("feature_extractor_type") if pre.is_file() else None
    return Qwen3ASRRecognizer(model, tokenizer, config, reflect_tail=extractor == "WhisperFeatureExtractor")


# Qwen2's pre-tokenizer split, as its tokenizer.json carries it.
_QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def vocab_tokenizer(path: Path):
    """The tokenizer of a repo that ships Qwen2's slow files only (vocab.json, merges.txt and the
    added tokens in tokenizer_config.json), as Qwen's Qwen3-ASR repos do."""
    from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
    from tokenizers import Tokenizer as Backend

    from ominix.engine.llm.tokenizer import END_OF_TURN_TOKENS, Tokenizer, TokenizerError

    vocab, merges = path / "vocab.json", path / "merges.txt"
    if not (vocab.is_file() and merges.is_file()):
        raise TokenizerError(f"no tokenizer.json (or vocab.json + merges.txt) in {path}")
    backend = Backend(models.BPE.from_file(str(vocab), str(merges), unk_token=None, fuse_unk=False))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_QWEN_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    backend.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    added = sorted(((int(i), t) for i, t in (config.get("added_tokens_decoder") or {}).items()), key=lambda x: x[0])
    for index, token in added:
        piece = AddedToken(token["content"], special=bool(token.get("special")), normalized=False,
                           lstrip=False, rstrip=False, single_word=False)
        backend.add_special_tokens([piece]) if token.get("special") else backend.add_tokens([piece])
        if backend.token_to_id(token["content"]) != index:
            raise TokenizerError(f"added token {token['content']!r} should have id {index}")
    generation_file = path / "generation_config.json"
    generation = json.loads(generation_file.read_text(encoding="utf-8")) if generation_file.is_file() else {}
    eos = generation.get("eos_token_id") or []
    eos = set(eos if isinstance(eos, list) else [eos])
    eos |= {backend.token_to_id(t) for t in END_OF_TURN_TOKENS if backend.token_to_id(t) is not None}
    return Tokenizer(backend, eos_token_ids=eos, generation_config=generation)
