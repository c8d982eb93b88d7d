"""FunASR checkpoints (ModelScope layout) as SpeechRecognizers: Paraformer, SenseVoice.

A FunASR directory holds `config.yaml`, `am.mvn`, `tokens.json` (or `tokens.txt`) and `model.pt`;
`pull` converts `model.pt` to `model.safetensors` once (ominix/hub/torch_pickle.py, numpy only) and
a directory that was copied in by hand is converted here on first load. Torch is never needed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlx.core as mx
import numpy as np

from ominix.engine.audio import fbank as fb
from ominix.engine.audio.funasr_text import cif_timestamps, sentence
from ominix.engine.audio.types import SAMPLE_RATE, Segment, Word
from ominix.engine.load import LoadError, check_weights
from ominix.hub import torch_pickle


def read_config(path: Path) -> dict:
    import yaml  # PyYAML comes with huggingface_hub

    file = path / "config.yaml"
    if not file.exists():
        raise LoadError(f"{path} has no config.yaml (not a FunASR model directory)")
    try:
        config = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise LoadError(f"config.yaml does not parse: {e}") from None
    if not isinstance(config, dict):
        raise LoadError("config.yaml is not a mapping")
    return config


def read_tokens(path: Path, config: dict) -> list[str]:
    listed = (config.get("tokenizer_conf") or {}).get("token_list")
    if isinstance(listed, list):
        return [str(t) for t in listed]
    if (path / "tokens.json").exists():
        return [str(t) for t in json.loads((path / "tokens.json").read_text(encoding="utf-8"))]
    if (path / "tokens.txt").exists():
        return [line.split()[0] if line.split() else line
                for line in (path / "tokens.txt").read_text(encoding="utf-8").splitlines()]
    raise LoadError(f"{path} has no tokens.json or tokens.txt")


def read_weights(path: Path) -> dict[str, mx.array]:
    try:
        file = torch_pickle.convert_dir(path)
    except (torch_pickle.TorchCheckpointError, OSError) as e:
        raise LoadError(f"cannot convert model.pt: {e}") from None
    if file is None:
        raise LoadError(f"{path} has neither model.safetensors nor model.pt")
    return mx.load(str(file))


def build(module, config: dict, weights: dict):
    model = module.Model(module.ModelArgs.from_dict(config))
    weights = module.sanitize(weights)
    check_weights(model, weights, {})
    model.load_weights(list(weights.items()), strict=True)
    mx.eval(model.parameters())
    return model


class FunASRRecognizer:
    """What both families share: the WavFrontend and the id -> token map."""

    window_seconds = 30.0

    def __init__(self, model, config: dict, tokens: list[str], cmvn):
        self.model, self.config, self.tokens = model, config, tokens
        self.options = fb.FbankOptions.from_frontend_conf(config.get("frontend_conf") or {})
        self.cmvn = cmvn

    def features(self, audio: np.ndarray) -> mx.array:
        return mx.array(fb.frontend(audio, self.options, self.cmvn))[None]

    def token_strings(self, ids: list[int]) -> list[str]:
        return [self.tokens[i] if 0 <= i < len(self.tokens) else "<unk>" for i in ids]


class ParaformerRecognizer(FunASRRecognizer):
    default_language = "zh"

    def recognize(self, audio: np.ndarray) -> dict:
        """Everything one window gives: token ids, strings, CIF result, decoder logits."""
        feats = self.features(audio)
        if feats.shape[1] == 0:  # shorter than one 25 ms frame
            return {"ids": [], "tokens": [], "cif": None, "logits": None}
        logits, cif = self.model(feats)
        ids = [] if cif.token_num < 1 else np.array(mx.argmax(logits[0], axis=-1)).tolist()
        args = self.model.args
        ids = [i for i in ids if i not in (args.sos, args.eos, args.blank_id)]
        return {"ids": ids, "tokens": self.token_strings(ids), "cif": cif, "logits": logits}

    def transcribe_window(self, audio: np.ndarray, *, offset: float = 0.0, language: str | None = None,
                          prompt: str | None = None, task: str = "transcribe", temperature: float = 0.0,
                          word_timestamps: bool = False) -> tuple[list[Segment], str | None]:
        duration = len(audio) / SAMPLE_RATE
        out = self.recognize(audio)
        text = sentence(out["tokens"])[0]
        if not text:
            return [], language or self.default_language
        cif = out["cif"]
        token_stamps = cif_timestamps(cif.fires, cif.alphas, len(out["tokens"]))
        timed_words, word_stamps = [], []
        if len(token_stamps) == len(out["tokens"]):  # CIF found one span per token
            _, timed_words, word_stamps = sentence(out["tokens"], token_stamps)
        end_of_window = offset + duration  # CIF's last span may run past the audio
        word_list = [Word(min(offset + s / 1000, end_of_window), min(offset + e / 1000, end_of_window), w)
                     for w, (s, e) in zip(timed_words, word_stamps)]
        start = word_list[0].start if word_list else offset
        end = word_list[-1].end if word_list else end_of_window
        segment = Segment(start=start, end=max(end, start), text=text, tokens=out["ids"],
                          words=word_list if word_timestamps else [])
        return [segment], language or self.default_language


def load_paraformer(path: str | Path) -> ParaformerRecognizer:
    from ominix.models import paraformer

    path = Path(path)
    config = read_config(path)
    tokens = read_tokens(path, config)
    config.setdefault("vocab_size", len(tokens))
    model = build(paraformer, config, read_weights(path))
    cmvn = fb.load_cmvn(path / "am.mvn") if (path / "am.mvn").exists() else None
    return ParaformerRecognizer(model, config, tokens, cmvn)


_TAG = re.compile(r"<\|([^|]*)\|>")
SENSEVOICE_LANGUAGES = ("zh", "en", "yue", "ja", "ko")


class SenseVoiceRecognizer(FunASRRecognizer):
    """CTC greedy decoding; the leading tags say the language, emotion and audio event."""

    def __init__(self, model, config: dict, decoder, cmvn):
        super().__init__(model, config, decoder.pieces, cmvn)
        self.decoder = decoder

    def recognize(self, audio: np.ndarray, language: str | None = None, use_itn: bool = False) -> dict:
        feats = self.features(audio)
        if feats.shape[1] == 0:
            return {"ids": [], "raw": "", "text": "", "tags": [], "logprobs": None}
        query = language if language in SENSEVOICE_LANGUAGES else "auto"
        logprobs = self.model(feats, language=query, use_itn=use_itn)
        best = np.array(mx.argmax(logprobs[0], axis=-1)).tolist()
        ids = [t for i, t in enumerate(best) if (i == 0 or t != best[i - 1]) and t != self.model.args.blank_id]
        raw = self.decoder.decode(ids)
        tags = _TAG.findall(raw)
        return {"ids": ids, "raw": raw, "text": _TAG.sub("", raw).strip(), "tags": tags, "logprobs": logprobs}

    def transcribe_window(self, audio: np.ndarray, *, offset: float = 0.0, language: str | None = None,
                          prompt: str | None = None, task: str = "transcribe", temperature: float = 0.0,
                          word_timestamps: bool = False) -> tuple[list[Segment], str | None]:
        out = self.recognize(audio, language)
        detected = next((t for t in out["tags"] if t in SENSEVOICE_LANGUAGES), None)
        found = language or detected
        if not out["text"]:
            return [], found
        end = offset + len(audio) / SAMPLE_RATE
        return [Segment(start=offset, end=end, text=out["text"], tokens=out["ids"])], found


def load_sensevoice(path: str | Path) -> SenseVoiceRecognizer:
    from ominix.engine.audio.spm import SentencePieceDecoder
    from ominix.models import sensevoice

    path = Path(path)
    config = read_config(path)
    models = sorted(path.glob("*.bpe.model")) or sorted(path.glob("*.model"))
    if not models:
        raise LoadError(f"{path} has no SentencePiece model (chn_jpn_yue_eng_ko_spectok.bpe.model)")
    try:
        decoder = SentencePieceDecoder.from_file(models[0])
    except (ValueError, UnicodeDecodeError, IndexError) as e:
        raise LoadError(f"{models[0].name} is not a SentencePiece model: {e}") from None
    config.setdefault("vocab_size", len(decoder))
    model = build(sensevoice, config, read_weights(path))
    cmvn = fb.load_cmvn(path / "am.mvn") if (path / "am.mvn").exists() else None
    return SenseVoiceRecognizer(model, config, decoder, cmvn)
