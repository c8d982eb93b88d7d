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
from ominix.engine.audio.funasr_text import cif_peaks, cif_timestamps, sentence
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
    try:
        model = module.Model(module.ModelArgs.from_dict(config))
    except (TypeError, ValueError, KeyError) as e:
        raise LoadError(f"config.yaml does not describe a supported model: {e}") from None
    weights = model.sanitize(weights) if hasattr(model, "sanitize") else module.sanitize(weights)
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
    """Paraformer and SeACo-Paraformer; for SeACo the request's prompt is the hotword list."""

    default_language = "zh"

    def __init__(self, model, config: dict, tokens: list[str], cmvn, seg_dict: dict | None = None):
        super().__init__(model, config, tokens, cmvn)
        self.seg_dict = seg_dict
        self.token_ids = {t: i for i, t in enumerate(tokens)}
        self.hotword_capable = hasattr(model, "decode_with_hotwords")

    def hotword_ids(self, prompt: str | None) -> list[list[int]] | None:
        """FunASR's hotword list: one id list per whitespace-separated word (split by seg_dict into
        characters / pieces when the checkpoint ships one), then the no-bias entry [<s>]."""
        words = (prompt or "").split()
        if not self.hotword_capable or not words:
            return None
        unk = self.token_ids.get("<unk>", len(self.tokens) - 1)
        lists = [[self.token_ids.get(t, unk) for t in self._segment(w)] or [unk] for w in words]
        return lists + [[self.model.args.sos]]

    def _segment(self, word: str) -> list[str]:
        if self.seg_dict is None:
            return [word]
        word = word.lower()
        if word in self.seg_dict:
            return self.seg_dict[word]
        if _HANZI_OR_DIGITS.match(word):
            return [p for ch in word for p in self.seg_dict.get(ch, ["<unk>"])]
        return ["<unk>"]

    def recognize(self, audio: np.ndarray, hotwords: str | None = None) -> dict:
        """Everything one window gives: token ids, strings, CIF result, log-probabilities."""
        feats = self.features(audio)
        empty = {"ids": [], "tokens": [], "cif": None, "logits": None, "encoder_out": None}
        if feats.shape[1] == 0:  # shorter than one 25 ms frame
            return empty
        model = self.model
        encoder_out = model.encode(feats)
        cif = model.predict(encoder_out)
        if cif.token_num < 1:
            return {**empty, "cif": cif, "encoder_out": encoder_out}
        if self.hotword_capable:
            logits = model.decode_with_hotwords(encoder_out, cif, self.hotword_ids(hotwords))
        else:
            logits = model.decode(encoder_out, cif)
        ids = np.array(mx.argmax(logits[0], axis=-1)).tolist()
        args = model.args
        ids = [i for i in ids if i not in (args.sos, args.eos, args.blank_id)]
        return {"ids": ids, "tokens": self.token_strings(ids), "cif": cif, "logits": logits,
                "encoder_out": encoder_out}

    def token_timestamps(self, out: dict) -> list[list[int]]:
        """Per-token [start_ms, end_ms]: from the x3 upsampled CIF branch when the predictor has
        one (CifPredictorV3, as FunASR's SeACo does), else from the CIF fires."""
        cif, n = out["cif"], len(out["tokens"])
        predictor = self.model.predictor
        if hasattr(predictor, "upsampled_alphas"):
            frames = out["encoder_out"].shape[1]
            alphas = predictor.upsampled_alphas(out["encoder_out"], cif.token_num)
            alphas = np.array(alphas[0].astype(mx.float32))[: frames * predictor.upsample_times]
            peaks = cif_peaks(alphas, predictor.threshold - 1e-4)
            return cif_timestamps(alphas, peaks, n, upsample_rate=predictor.upsample_times)
        return cif_timestamps(cif.fires, cif.alphas, n)

    def transcribe_window(self, audio: np.ndarray, *, offset: float = 0.0, language: str | None = None,
                          prompt: str | None = None, task: str = "transcribe", temperature: float = 0.0,
                          word_timestamps: bool = False) -> tuple[list[Segment], str | None]:
        duration = len(audio) / SAMPLE_RATE
        out = self.recognize(audio, hotwords=prompt)
        text = sentence(out["tokens"])[0]
        if not text:
            return [], language or self.default_language
        end_of_window = offset + duration  # CIF's last span may run past the audio
        word_list = []
        if word_timestamps:
            token_stamps = self.token_timestamps(out)
            if len(token_stamps) == len(out["tokens"]):  # CIF found one span per token
                _, timed_words, word_stamps = sentence(out["tokens"], token_stamps)
                word_list = [Word(min(offset + s / 1000, end_of_window), min(offset + e / 1000, end_of_window), w)
                             for w, (s, e) in zip(timed_words, word_stamps)]
        start = word_list[0].start if word_list else offset
        end = word_list[-1].end if word_list else end_of_window
        segment = Segment(start=start, end=max(end, start), text=text, tokens=out["ids"], words=word_list)
        return [segment], language or self.default_language


_HANZI_OR_DIGITS = re.compile(r"^[\u4E00-\u9FA50-9]+$")


def read_seg_dict(path: Path) -> dict[str, list[str]] | None:
    """SeACo's `seg_dict`: "word piece piece ..." per line (how hotwords split into tokens)."""
    file = path / "seg_dict"
    if not file.exists():
        return None
    table = {}
    for line in file.read_text(encoding="utf-8").splitlines():
        parts = line.strip().split()
        if parts:
            table[parts[0]] = parts[1:]
    return table


def load_paraformer(path: str | Path) -> ParaformerRecognizer:
    """Paraformer or SeACo-Paraformer (config.yaml `model: SeacoParaformer`)."""
    from ominix.models import paraformer, seaco_paraformer

    path = Path(path)
    config = read_config(path)
    tokens = read_tokens(path, config)
    config.setdefault("vocab_size", len(tokens))
    kind = config.get("model", "Paraformer")
    if kind not in ("Paraformer", "SeacoParaformer"):
        raise LoadError(f"config.yaml model '{kind}' is not supported (Paraformer, SeacoParaformer)")
    module = seaco_paraformer if kind == "SeacoParaformer" else paraformer
    model = build(module, config, read_weights(path))
    cmvn = fb.load_cmvn(path / "am.mvn") if (path / "am.mvn").exists() else None
    return ParaformerRecognizer(model, config, tokens, cmvn, read_seg_dict(path))


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


FAMILIES = {"Paraformer": load_paraformer, "SeacoParaformer": load_paraformer, "SenseVoiceSmall": load_sensevoice}


def load_funasr(path: str | Path):
    """The recognizer for a FunASR directory, by config.yaml's `model`."""
    path = Path(path)
    kind = read_config(path).get("model")
    if kind not in FAMILIES:
        raise LoadError(f"config.yaml model '{kind}' is not a supported FunASR model "
                        f"({', '.join(FAMILIES)})")
    return FAMILIES[kind](path)


def load(path: str | Path):
    """The kinds-table loader shape: (recognizer, None)."""
    return load_funasr(path), None
