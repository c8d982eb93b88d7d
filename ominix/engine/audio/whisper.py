"""Whisper as a `SpeechRecognizer`: load a checkpoint directory (mlx-community / mlx-whisper layout
or the transformers layout), then transcribe or translate one 30 s window per call.

`load_whisper(path)` is the ASR kind's loader for Whisper checkpoints. The recognizer holds no
per-request state, so one resident model serves every request; a window's result says how many
seconds it consumed (Whisper stops at the last complete segment and the next window starts there).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlx.core as mx
import numpy as np

from ominix.engine.audio.alignment import find_words
from ominix.engine.audio.features import N_SAMPLES, log_mel
from ominix.engine.audio.types import SAMPLE_RATE, Segment
from ominix.engine.audio.whisper_batch import Batcher, Encode, drain
from ominix.engine.audio.whisper_beam import beam_steps
from ominix.engine.audio.whisper_decode import (
    FALLBACK_TEMPERATURES, TIME_PRECISION, LogitRules, decode_steps, is_silence, max_new_tokens,
    needs_fallback, pick_fallback, split_segments)
from ominix.engine.audio.whisper_tokenizer import TokenizerError, WhisperTokenizer, language_code
from ominix.engine.llm.cache import KVCache
from ominix.models.whisper import MultiHeadAttention
from ominix.engine.load import (
    LoadError, apply_compute_dtype, build_model, checkpoint_float_dtype, dtype_name, parse_dtype,
    read_config, read_weights)

TOKENIZER_HINT = (
    "mlx-community Whisper repositories carry no tokenizer: put the tokenizer.json of the matching "
    "openai/whisper-* repository next to the weights (`ominix pull` does this for catalog models)")


class HostSoftmaxAttention(MultiHeadAttention):
    """The encoder's self-attention with its core on the host (numpy): on a CPU, MLX computes the
    exp of a [heads, 1500, 1500] softmax ~6x slower than numpy's vectorised exp, and this is most of
    the encoder's time. The projections stay in MLX; swapped in at load time on CPUs only."""

    def __call__(self, x, mask=None, cache=None, kv=None):
        if cache is not None or kv is not None or mask is not None:
            return super().__call__(x, mask=mask, cache=cache, kv=kv)
        B, L, D = x.shape
        q, k, v = self.query(x), self.key(x), self.value(x)
        mx.eval(q, k, v)
        q, k, v = (np.asarray(memoryview(a.astype(mx.float32))).reshape(B, L, self.n_head, -1)
                   .transpose(0, 2, 1, 3) for a in (q, k, v))
        s = np.matmul(q, k.transpose(0, 1, 3, 2))
        s *= np.float32((D // self.n_head) ** -0.5)
        s -= s.max(axis=-1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=-1, keepdims=True)
        out = np.matmul(s, v).transpose(0, 2, 1, 3).reshape(B, L, D)
        return self.out(mx.array(out).astype(x.dtype))


class WhisperRecognizer:
    window_seconds = 30.0
    reports_consumed = True  # transcribe_window returns the seconds it consumed (see transcribe.py)

    def __init__(self, model, tokenizer: WhisperTokenizer, *, suppress: list[int] | None = None,
                 dtype=mx.float32, config: dict | None = None, max_encode: int = 1):
        self.model = model
        self.args = model.args
        self.tok = tokenizer
        self.suppress = suppress if suppress is not None else tokenizer.suppress_tokens()
        self.dtype = dtype
        self.config = config or {}
        self.multilingual = self.args.is_multilingual
        # The model's lane: encoder windows and decoder rows of concurrent requests share forwards.
        self.batcher = Batcher(model, dtype=dtype, max_encode=max_encode)

    # --- the pieces ---------------------------------------------------------------------------

    def encode(self, audio: np.ndarray) -> list:
        """One window of samples -> the decoder's cross-attention keys/values (evaluated)."""
        mel = log_mel(audio[:N_SAMPLES], self.args.n_mels)
        features = self.model.embed_audio(mx.array(mel)[None].astype(self.dtype))
        cross_kv = self.model.cross_kv(features)
        mx.eval(cross_kv)
        return cross_kv

    def detect_language(self, cross_kv) -> tuple[str, dict[str, float]]:
        logits = self.model.decode(mx.array([[self.tok.sot]]), cross_kv)[0, -1].astype(mx.float32)
        logits = np.array(logits)
        codes = list(self.tok.language_tokens)
        ids = np.array([self.tok.language_tokens[c] for c in codes])
        scores = logits[ids] - logits[ids].max()
        probs = np.exp(scores) / np.exp(scores).sum()
        return codes[int(np.argmax(probs))], dict(zip(codes, probs.tolist()))

    def encode_prompt(self, prompt: str | None) -> list[int]:
        """A request's prompt text as the tokens that condition its first window."""
        return self.tok.encode(" " + prompt.strip()) if prompt and prompt.strip() else []

    def _initial_tokens(self, language: str | None, task: str, previous: list[int]) -> list[int]:
        sot = self.tok.sot_sequence(language if self.multilingual else None,
                                    task if self.multilingual else "transcribe")
        if not previous:
            return sot
        return [self.tok.sot_prev, *previous[-(self.args.n_text_ctx // 2 - 1):], *sot]

    def make_cache(self) -> list[KVCache]:
        return [KVCache() for _ in range(self.args.n_text_layer)]

    # --- SpeechRecognizer -----------------------------------------------------------------------

    def transcribe_window(self, audio: np.ndarray, **options) -> tuple[list[Segment], str | None, float]:
        return drain(self.window_steps(audio, **options), self.batcher)

    def window_steps(self, audio: np.ndarray, *, offset: float = 0.0, language: str | None = None,
                     prompt: str | None = None, task: str = "transcribe", temperature: float = 0.0,
                     word_timestamps: bool = False, previous: list[int] | None = None,
                     beam_size: int = 1, patience: float = 1.0, length_penalty: float = 1.0,
                     on_segment=None):
        """`transcribe_window` as a generator: it yields an Encode request for the window, a pause
        after each prompt, a Row (greedy) or a list of Rows (beam search) for every decoding step
        (the caller gets them run, batched with other requests, and sends back their values; see
        whisper_batch.py) and a pause before word alignment. Returns (segments, language, seconds
        consumed).

        `previous`: tokens of earlier windows (and the prompt) to condition on; when None, the
        `prompt` text alone. `on_segment(text, tokens, logprobs)` hears each segment of the first
        (greedy) attempt as soon as its closing timestamp is decoded, before the window ends."""
        if task not in ("transcribe", "translate"):
            raise ValueError(f"task must be 'transcribe' or 'translate', not {task!r}")
        seconds = min(len(audio), N_SAMPLES) / SAMPLE_RATE
        lang = language_code(language)
        if self.multilingual and lang is not None and lang not in self.tok.language_tokens:
            raise ValueError(f"this model does not know language '{lang}'")
        cross_kv = yield Encode(log_mel(audio[:N_SAMPLES], self.args.n_mels))
        if not self.multilingual:
            lang = "en"
        elif lang is None:
            lang, _ = self.detect_language(cross_kv)
        initial = self._initial_tokens(lang, task, self.encode_prompt(prompt) if previous is None else previous)
        result = yield from self._decode_with_fallback(
            cross_kv, initial, temperature, offset, beam_size=beam_size, patience=patience,
            length_penalty=length_penalty, on_segment=on_segment)
        if is_silence(result):
            return [], lang, seconds
        segments, consumed = self._segments(result, seconds, offset)
        if word_timestamps and segments:
            yield
            self._add_words(segments, cross_kv, lang, task, len(audio), offset)
        return segments, lang, consumed if consumed > 0 else seconds

    def _decode_with_fallback(self, cross_kv, initial, temperature, offset, *, beam_size, patience,
                              length_penalty, on_segment):
        tb = self.tok.timestamp_begin
        rules = LogitRules(self.tok, len(initial), self.suppress,
                           max_timestamp=tb + int(round(self.window_seconds / TIME_PRECISION)))
        temperatures = FALLBACK_TEMPERATURES if temperature == 0 else (float(temperature),)
        rng = np.random.default_rng(int(offset * 1000))
        common = dict(max_new=max_new_tokens(len(initial), self.args.n_text_ctx),
                      make_cache=self.make_cache, sot_index=initial.index(self.tok.sot))
        tried = []
        for t in temperatures:
            if t == 0 and beam_size > 1:
                result = yield from beam_steps(self.model, self.tok, cross_kv, initial, rules,
                                               beam_size=beam_size, patience=patience,
                                               length_penalty=length_penalty, **common)
            else:
                # Only the first attempt streams: a fallback's segments arrive with the window.
                tap = SegmentTap(self.tok, on_segment) if on_segment is not None and not tried else None
                result = yield from decode_steps(self.model, self.tok, cross_kv, initial, rules,
                                                 temperature=t, rng=rng, on_token=tap, **common)
            tried.append(result)
            if not needs_fallback(result):
                return result
        return pick_fallback(tried) if len(tried) > 1 else tried[-1]

    def _segments(self, result, seconds: float, offset: float) -> tuple[list[Segment], float]:
        tb = self.tok.timestamp_begin
        parts, consumed = split_segments(result.tokens, tb, seconds)
        segments = []
        for start, end, text_tokens, (lo, hi) in parts:
            text = self.tok.decode(text_tokens)
            if not text.strip() or start == end:  # faster-whisper keeps neither
                continue
            start, end = min(start, seconds), min(end, seconds)
            # Token log-probabilities of this segment's text tokens (sampled order).
            logprobs = [lp for t, lp in zip(result.tokens[lo:hi], result.token_logprobs[lo:hi]) if t < tb]
            segments.append(Segment(
                start=round(offset + start, 3), end=round(offset + max(start, end), 3), text=text,
                tokens=list(result.tokens[lo:hi]), avg_logprob=result.avg_logprob,
                no_speech_prob=result.no_speech_prob, temperature=result.temperature,
                compression_ratio=result.compression_ratio, token_logprobs=logprobs))
        return segments, consumed

    def _add_words(self, segments: list[Segment], cross_kv, lang, task, n_samples: int, offset: float):
        all_tokens, owner = [], []
        for k, seg in enumerate(segments):
            text_tokens = [t for t in seg.tokens if t < self.tok.eot]  # without timestamps
            all_tokens.extend(text_tokens)
            owner.extend([k] * len(text_tokens))
        sot = self.tok.sot_sequence(lang if self.multilingual else None,
                                    task if self.multilingual else "transcribe")
        num_frames = min(n_samples, N_SAMPLES) // 160
        for word, first in find_words(self.model, self.tok, sot, all_tokens, cross_kv, num_frames,
                                      lang, offset):
            seg = segments[owner[min(first, len(owner) - 1)]]
            # Words stay inside their segment's span (DTW can drift by a frame or two).
            word.start = min(max(word.start, seg.start), seg.end)
            word.end = min(max(word.end, word.start), seg.end)
            seg.words.append(word)
        durations = [w.end - w.start for seg in segments for w in seg.words if w.end > w.start]
        max_duration = 2 * min(0.7, float(np.median(durations))) if durations else 0.0
        for seg in segments:  # as openai-whisper does: a segment spans its words
            if seg.words and max_duration and seg.words[0].end - seg.words[0].start > max_duration:
                # DTW gives a pause before the first word to that word: keep it word-sized.
                seg.words[0].start = round(seg.words[0].end - max_duration, 3)
            if seg.words:
                seg.start, seg.end = seg.words[0].start, max(seg.words[-1].end, seg.words[0].start)


class SegmentTap:
    """Sees a window's tokens as they are decoded and reports each segment when it closes (two
    timestamps in a row), with the text and token choices split_segments will give it."""

    def __init__(self, tok: WhisperTokenizer, on_segment):
        self.tok, self.on_segment = tok, on_segment
        self.tokens: list[int] = []
        self.logprobs: list[float] = []
        self.start = 0  # where the open segment's tokens begin

    def __call__(self, token: int, logprob: float) -> None:
        tb = self.tok.timestamp_begin
        self.tokens.append(token)
        self.logprobs.append(logprob)
        if len(self.tokens) < 2 or token < tb or self.tokens[-2] < tb:
            return
        end = len(self.tokens) - 1  # the pair's second timestamp opens the next segment
        part, lps = self.tokens[self.start:end], self.logprobs[self.start:end]
        self.start = end
        text = self.tok.decode([t for t in part if t < tb])
        if text.strip() and part[0] != part[-1]:
            self.on_segment(text, [t for t in part if t < tb], [lp for t, lp in zip(part, lps) if t < tb])


# --- loading -----------------------------------------------------------------------------------


def _weights(path: Path) -> tuple[dict, dict]:
    if any(path.glob("*.safetensors")):
        return read_weights(path)
    npz = path / "weights.npz"
    if npz.is_file():
        try:
            weights = mx.load(str(npz))
        except Exception as e:
            raise LoadError(f"{npz} cannot be read: {e}") from None
        return weights, {k: npz.name for k in weights}
    raise LoadError(f"no weights in {path}: expected *.safetensors or weights.npz")


def _generation_config(path: Path) -> dict:
    f = path / "generation_config.json"
    try:
        return json.loads(f.read_text()) if f.is_file() else {}
    except json.JSONDecodeError as e:
        raise LoadError(f"{f} is not valid JSON: {e}") from None


def load_whisper(path: str | Path, *, dtype: str | None = None) -> WhisperRecognizer:
    """A Whisper checkpoint directory -> a ready recognizer (weights evaluated).

    Compute dtype: the checkpoint's own on Metal; float32 on a CPU (the encoder's large matmuls go
    through BLAS in float32, several times faster than MLX's CPU fp16 kernels); OMINIX_DTYPE or
    `dtype` overrides."""
    path = Path(path)
    config = read_config(path)
    if "n_audio_state" in config:
        config.setdefault("model_type", "whisper")  # early mlx-whisper configs carry no model_type
    if config.get("model_type") != "whisper":
        raise LoadError(f"{path} is not a Whisper checkpoint (model_type {config.get('model_type')!r})")
    weights, origin = _weights(path)
    stored = checkpoint_float_dtype(weights)
    gen = _generation_config(path)
    stored_heads = "alignment_heads" in weights
    model = build_model(config, weights, origin)
    if not stored_heads and gen.get("alignment_heads"):  # transformers keeps them here
        model.set_alignment_heads(gen["alignment_heads"])
    del weights
    device = mx.default_device()
    override = dtype or os.environ.get("OMINIX_DTYPE")
    if override:
        target = parse_dtype(override)
    else:
        target = stored if device.type == mx.DeviceType.gpu else mx.float32
    if override or device.type != mx.DeviceType.gpu:
        apply_compute_dtype(model, target, device)
    if device.type != mx.DeviceType.gpu:
        for block in model.encoder.blocks:
            block.attn.__class__ = HostSoftmaxAttention  # same parameters, host softmax
    mx.eval(model.parameters())
    from ominix.hub.whisper import find_tokenizer, needs_tokenizer

    tokenizer_file = find_tokenizer(path)
    if tokenizer_file is None:
        repo = needs_tokenizer(path) or "openai/whisper-*"
        raise LoadError(f"no tokenizer.json in {path}: {TOKENIZER_HINT} (run `ominix pull {repo} "
                        f"--include tokenizer.json`)")
    try:
        tok = WhisperTokenizer(tokenizer_file, model.args.n_vocab)
    except TokenizerError as e:
        raise LoadError(str(e)) from None
    suppress = None
    if isinstance(gen.get("suppress_tokens"), list) and gen["suppress_tokens"]:
        suppress = tok.suppress_tokens(non_speech=gen["suppress_tokens"])
    # Windows of concurrent requests per encoder forward: a GPU fills up with a larger batch; on a
    # 2-core CPU 4 windows at once still took 4 requests from 1.6x to 2.1x one request's
    # throughput (benchmarks/bench_asr.py measures encoder batches 1 and 4 side by side).
    max_encode = int(os.environ.get("OMINIX_WHISPER_ENCODE_BATCH") or (8 if device.type == mx.DeviceType.gpu else 4))
    config["_ominix"] = {"checkpoint_dtype": dtype_name(stored), "compute_dtype": dtype_name(target),
                         "device": device.type.name, "encode_batch": max_encode}
    return WhisperRecognizer(model, tok, suppress=suppress, dtype=target, config=config,
                             max_encode=max_encode)
