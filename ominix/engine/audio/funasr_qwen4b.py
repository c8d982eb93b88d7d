"""FunASR-Qwen4B as a SpeechRecognizer, as OminiX-MLX's funasr-qwen4b-mlx crate runs it.

Files (one directory, the crate's search order): the SenseVoice encoder `sensevoice_iic.safetensors`
(or `sensevoice/encoder.safetensors`, `model.safetensors`); the adaptor
`adaptor_phase3_final.safetensors` (or `adaptor_phase2_final`, `adaptor.safetensors`, also under
`models/`); Qwen3-4B in `models/Qwen3-4B-8bit/`, `models/Qwen3-4B-4bit/`, `models/Qwen3-4B/` or
`qwen3-4b/` (any layout our loader reads), which also gives the tokenizer; without one, the
installed `qwen3-4b` catalog entry (the entry's `requires`, which `ominix pull` fetches with it).

No chat template (the crate's phase-3 training format): the embeddings of a bare instruction, the
adapted audio frames, then a suffix, decoded greedily:
    transcribe: "语音转写成中文：" | audio | "只输出转写文字，不要分析或解释："
    translate:  "Translate the speech to English:" | audio | "<think>\\n\\n</think>\\n\\n"
with a budget of 5 (Chinese) or 8 (English) tokens per second of audio, between 30 and 400, and the
crate's stop on a looping tail (a 1-2 token pattern three times, a longer one twice, up to 512).
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np

from ominix.engine.audio import fbank as fb
from ominix.engine.audio.types import SAMPLE_RATE, Segment

PROMPTS = {"transcribe": ("语音转写成中文：", "只输出转写文字，不要分析或解释："),
           "translate": ("Translate the speech to English:", "<think>\n\n</think>\n\n")}
TOKENS_PER_SECOND = {"transcribe": 5.0, "translate": 8.0}
ENCODER_FILES = ("sensevoice_iic.safetensors", "sensevoice/encoder.safetensors", "model.safetensors")
ADAPTOR_FILES = ("adaptor_phase3_final.safetensors", "models/adaptor_phase3_final.safetensors",
                 "adaptor_phase2_final.safetensors", "models/adaptor_phase2_final.safetensors", "adaptor.safetensors")
REQUIRED_LLM = "qwen3-4b"  # the entry `ominix pull funasr-qwen4b` pulls with it (its `requires`)
LLM_DIRS = ("models/Qwen3-4B-8bit", "models/Qwen3-4B-4bit", "models/Qwen3-4B", "qwen3-4b")
EOS = (151643, 151645)


def loop_start(tokens: list[int]) -> int | None:
    """Where a looping tail starts (the crate's rule), or None."""
    for n in range(1, min(512, len(tokens) // 2) + 1):
        reps = 3 if n <= 2 else 2
        if len(tokens) < n * reps:
            continue
        pattern = tokens[-n:]
        if all(tokens[len(tokens) - (i + 1) * n:len(tokens) - i * n] == pattern for i in range(reps)):
            pos = len(tokens)
            while pos >= n and tokens[pos - n:pos] == pattern:
                pos -= n
            return pos  # keep nothing of the repeated pattern, as the crate does
    return None


class FunASRQwen4BRecognizer:
    window_seconds = 30.0  # the crate's transcribe_long chunks

    def __init__(self, audio_model, llm, tokenizer, cmvn=None):
        self.audio_model, self.llm, self.tokenizer, self.cmvn = audio_model, llm, tokenizer, cmvn
        self.options = fb.FbankOptions.from_frontend_conf({"lfr_m": 7, "lfr_n": 6})
        self.eos = set(EOS) | set(getattr(tokenizer, "eos_token_ids", ()) or ())

    def features(self, audio: np.ndarray) -> mx.array:
        return mx.array(fb.frontend(audio, self.options, self.cmvn))[None]

    def prompt_embeddings(self, audio_embeds: mx.array, task: str) -> tuple[mx.array, list[int], list[int]]:
        before, after = (self.tokenizer.encode(t) for t in PROMPTS[task])
        embed = self.llm.model.embed_tokens
        head, tail = embed(mx.array([before])), embed(mx.array([after]))
        return mx.concatenate([head, audio_embeds.astype(head.dtype), tail], axis=1), before, after

    def generate(self, audio: np.ndarray, task: str = "transcribe") -> dict:
        from ominix.engine.llm.cache import make_cache
        from ominix.models.qwen3_asr import run_embeddings

        feats = self.features(audio)
        if feats.shape[1] == 0:
            return {"tokens": [], "text": ""}
        h, before, after = self.prompt_embeddings(self.audio_model(feats), task)
        seconds = len(audio) / SAMPLE_RATE
        budget = min(400, max(30, int(seconds * TOKENS_PER_SECOND[task])))
        cache = make_cache(self.llm)
        logits = run_embeddings(self.llm, h, cache)
        out: list[int] = []
        for _ in range(budget):
            token = int(mx.argmax(logits[0, -1]).item())
            if token in self.eos:
                break
            out.append(token)
            cut = loop_start(out) if len(out) >= 4 else None
            if cut is not None:
                del out[cut:]
                break
            logits = run_embeddings(self.llm, self.llm.model.embed_tokens(mx.array([[token]])), cache)
        text = self.tokenizer.decode(out, skip_special_tokens=True)
        if "</think>" in text:
            text = text.split("</think>", 1)[1]
        return {"prompt": (before, int(feats.shape[1]), after), "tokens": out,
                "text": text.removeprefix("<think>").strip()}

    def transcribe_window(self, audio: np.ndarray, *, offset: float = 0.0, language: str | None = None,
                          prompt: str | None = None, task: str = "transcribe", temperature: float = 0.0,
                          word_timestamps: bool = False) -> tuple[list[Segment], str | None]:
        out = self.generate(audio, "translate" if task == "translate" else "transcribe")
        found = "en" if task == "translate" else "zh"
        if not out["text"]:
            return [], found
        end = offset + len(audio) / SAMPLE_RATE
        return [Segment(start=offset, end=end, text=out["text"], tokens=out["tokens"])], found


def _first(path: Path, names) -> Path | None:
    return next((path / n for n in names if (path / n).exists()), None)


def _llm_dir(path: Path) -> Path | None:
    """Qwen3-4B inside the directory, as the crate lays it out, or else the catalog entry the
    funasr-qwen4b entry requires (pulled with it, so it lives in the HF cache, not in `path`)."""
    from ominix.hub.store import StoreError, locate
    from ominix.registry import RegistryError

    inside = next((path / d for d in LLM_DIRS if (path / d / "config.json").is_file()), None)
    if inside is not None:
        return inside
    try:
        return locate(REQUIRED_LLM).path
    except (StoreError, RegistryError):
        return None


def load_funasr_qwen4b(path: str | Path, adaptor_heads: int = 8):
    """The recognizer for a funasr-qwen4b directory (`adaptor_heads`: the crate's 8; the files do
    not record it)."""
    from ominix.engine.llm.tokenizer import TokenizerError, load_tokenizer
    from ominix.engine.load import LoadError, load_model
    from ominix.models.funasr_qwen4b import AudioModel

    path = Path(path)
    encoder, adaptor = _first(path, ENCODER_FILES), _first(path, ADAPTOR_FILES)
    if adaptor is None:
        adaptor = next(iter(sorted(path.glob("adaptor*.safetensors"))), None)
    llm_dir = _llm_dir(path)
    for what, found in (("SenseVoice encoder (sensevoice_iic.safetensors)", encoder),
                        ("adaptor (adaptor_phase3_final.safetensors)", adaptor),
                        (f"Qwen3-4B directory ({' or '.join(LLM_DIRS)}), and the '{REQUIRED_LLM}' entry "
                         f"is not installed (`ominix pull {REQUIRED_LLM}`)", llm_dir)):
        if found is None:
            raise LoadError(f"{path} has no {what}")
    try:
        audio_model, weights = AudioModel.from_weights(mx.load(str(encoder)), mx.load(str(adaptor)), adaptor_heads)
        audio_model.load_weights(list(weights.items()), strict=True)
    except (KeyError, ValueError) as e:
        raise LoadError(f"the encoder / adaptor files do not match FunASR-Qwen4B: {e}") from None
    mx.eval(audio_model.parameters())
    llm, _ = load_model(llm_dir)
    try:
        tokenizer = load_tokenizer(llm_dir)
    except TokenizerError as e:
        raise LoadError(str(e)) from None
    cmvn = fb.load_cmvn(path / "am.mvn") if (path / "am.mvn").exists() else None
    return FunASRQwen4BRecognizer(audio_model, llm, tokenizer, cmvn)
