"""Fun-ASR-Nano as a SpeechRecognizer: FunASR's fbank + LFR front end, SenseVoice encoder and
adaptor, then greedy decoding of the prompt FunASR builds:

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n{instruction}
    {audio frames}<|im_end|>\\n<|im_start|>assistant\\n

The instruction is "语音转写：" or "语音转写成{中文|英文|日文}：", preceded by a hotword block when the
request has a prompt (Fun-ASR-Nano's context biasing).
"""

from __future__ import annotations

import re
from pathlib import Path

import mlx.core as mx
import numpy as np

from ominix.engine.audio import fbank as fb
from ominix.engine.audio.types import SAMPLE_RATE, Segment

PROMPT_LANGUAGES = {"zh": "中文", "yue": "中文", "en": "英文", "ja": "日文"}
HOTWORD_HEADER = "请结合上下文信息，更加准确地完成语音转写任务。如果没有相关信息，我们会留空。\n\n\n**上下文信息：**\n\n\n"


def instruction(language: str | None, hotwords: list[str] | None, itn: bool = True) -> str:
    text = (HOTWORD_HEADER + f"热词列表：[{', '.join(hotwords)}]\n") if hotwords else ""
    label = PROMPT_LANGUAGES.get(language or "")
    text += f"语音转写成{label}" if label else "语音转写"
    return text + ("" if itn else "，不进行文本规整") + "："


class FunASRNanoRecognizer:
    window_seconds = 30.0

    def __init__(self, model, tokenizer, cmvn=None, max_new_tokens: int = 512):
        self.model, self.tokenizer, self.cmvn = model, tokenizer, cmvn
        self.options = fb.FbankOptions.from_frontend_conf(model.args.frontend_conf or {"lfr_m": 7, "lfr_n": 6})
        self.max_new_tokens = max_new_tokens
        self.eos = {151643, 151645} | set(tokenizer.eos_token_ids or ())

    def features(self, audio: np.ndarray) -> mx.array:
        return mx.array(fb.frontend(audio, self.options, self.cmvn))[None]

    def prompt_parts(self, language: str | None, hotwords: list[str] | None) -> tuple[list[int], list[int]]:
        before = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                  + instruction(language, hotwords))
        return self.tokenizer.encode(before), self.tokenizer.encode("<|im_end|>\n<|im_start|>assistant\n")

    def generate(self, audio: np.ndarray, language: str | None = None, context: str | None = None) -> dict:
        from ominix.engine.llm.cache import make_cache
        from ominix.models.fun_asr_nano import audio_token_count

        feats = self.features(audio)
        if feats.shape[1] == 0:
            return {"tokens": [], "text": ""}
        frames = self.model.audio_features(feats)
        n = min(audio_token_count(feats.shape[1], self.model.args.use_low_frame_rate), frames.shape[1])
        before, after = self.prompt_parts(language, [context.strip()] if context and context.strip() else None)
        cache = make_cache(self.model)
        logits = self.model.forward_embeddings(self.model.embed(before, frames[:, :n], after), cache)
        out: list[int] = []
        budget = min(self.max_new_tokens, 16 + int(len(audio) / SAMPLE_RATE * 15))
        while len(out) < budget:
            token = int(mx.argmax(logits[0, -1]).item())
            if token in self.eos:
                break
            out.append(token)
            logits = self.model.forward_embeddings(self.model.llm.model.embed_tokens(mx.array([[token]])), cache)
        text = self.tokenizer.decode(out, skip_special_tokens=True)
        return {"prompt": (before, n, after), "tokens": out,
                "text": re.sub(r"\s+", " ", text.replace("/sil", " ")).strip()}

    def transcribe_window(self, audio: np.ndarray, *, offset: float = 0.0, language: str | None = None,
                          prompt: str | None = None, task: str = "transcribe", temperature: float = 0.0,
                          word_timestamps: bool = False) -> tuple[list[Segment], str | None]:
        out = self.generate(audio, language, prompt)
        if not out["text"]:
            return [], language
        end = offset + len(audio) / SAMPLE_RATE
        return [Segment(start=offset, end=end, text=out["text"], tokens=out["tokens"])], language


def load_fun_asr_nano(path: str | Path):
    """The recognizer for an mlx-community (FunASR names) or transformers -hf Fun-ASR-Nano directory."""
    from ominix.engine.llm.tokenizer import TokenizerError, load_tokenizer
    from ominix.engine.load import LoadError, load_model

    path = Path(path)
    model, _ = load_model(path)
    where = path / model.args.tokenizer_path
    try:
        tokenizer = load_tokenizer(where if (where / "tokenizer.json").is_file() else path)
    except TokenizerError as e:
        raise LoadError(str(e)) from None
    cmvn = fb.load_cmvn(path / "am.mvn") if (path / "am.mvn").exists() else None
    return FunASRNanoRecognizer(model, tokenizer, cmvn)
