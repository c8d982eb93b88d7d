"""Qwen3-TTS on the engine: load a checkpoint, build prompts, generate frames, decode audio in chunks.

`load_qwen3_tts(path)` returns a `Qwen3TTS` (a `SpeechSynthesizer`, see engine/audio/synth.py);
`Qwen3TTS.synthesis(...)` returns a `Synthesis` whose `step()` does one bounded unit: one 80 ms
frame (a talker step and the code predictor's 15 small steps) or one chunk of decoded audio.

Generation follows qwen-tts 0.1.1 (`Qwen3TTSForConditionalGeneration.generate`): the same prompt
layout, repetition penalty over the first codebook, the last 1024 codec ids suppressed except EOS,
EOS banned for the first two frames; in-context cloning (a voice with reference codes and
transcript) builds the prompt as `generate_icl_prompt` does and decodes with the reference codes as
the codec's left context (qwen-tts decodes them together and cuts their audio off). The codec
decodes as a stream (qwen3_tts_codec.DecoderStream): each decoded chunk is exact, not an
approximation with a fixed left context.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from ominix.engine.audio.synth import SynthesisOptions, VoiceError
from ominix.engine.llm.cache import KVCache
from ominix.engine.load import LoadError, apply_compute_dtype, build_model, check_weights, read_config, read_weights
from ominix.models.qwen3_tts import Model
from ominix.models.qwen3_tts_codec import DecoderArgs, DecoderStream, SpeechTokenizer
from ominix.models.qwen3_tts_encoder import EncoderArgs

SAMPLE_RATE = 24_000


# --- loading ------------------------------------------------------------------------------------


def _load_text_tokenizer(path: Path):
    """tokenizer.json if present; Qwen's TTS repos ship only vocab.json + merges.txt (a Qwen2
    byte-level BPE) and tokenizer_config.json's added tokens, which we assemble the same way."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    if (path / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(path / "tokenizer.json"))
    vocab, merges = path / "vocab.json", path / "merges.txt"
    if not (vocab.is_file() and merges.is_file()):
        raise LoadError(f"{path} has no tokenizer.json nor vocab.json + merges.txt")
    tok = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    split = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")  # fmt: skip
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip
    tok.decoder = decoders.ByteLevel()
    config_file = path / "tokenizer_config.json"
    added = json.loads(config_file.read_text()).get("added_tokens_decoder", {}) if config_file.is_file() else {}
    for _, spec in sorted(added.items(), key=lambda kv: int(kv[0])):
        token = AddedToken(spec["content"], special=spec.get("special", False), normalized=False)
        (tok.add_special_tokens if spec.get("special") else tok.add_tokens)([token])
    return tok


def _load_codec(path: Path) -> SpeechTokenizer:
    folder = path / "speech_tokenizer"
    config = read_config(folder)
    weights, origin = read_weights(folder)
    # The encoder (in-context cloning) only where its tensors ship: decode-only conversions exist.
    has_encoder = any(k.startswith("encoder.") for k in weights)
    codec = SpeechTokenizer(DecoderArgs.from_dict(config), EncoderArgs.from_dict(config) if has_encoder else None)
    weights = codec.sanitize(weights)
    check_weights(codec, weights, origin)
    codec.load_weights(list(weights.items()), strict=True)
    return codec


def load_qwen3_tts(path: str | Path, *, dtype=None) -> "Qwen3TTS":
    path = Path(path)
    config = read_config(path)
    weights, origin = read_weights(path)
    model = build_model(config, weights, origin)
    del weights
    target = mx.float32 if dtype is None else dtype
    apply_compute_dtype(model, target, mx.default_device())
    codec = _load_codec(path)
    mx.eval(model.parameters(), codec.parameters())
    gen_file = path / "generation_config.json"
    defaults = json.loads(gen_file.read_text()) if gen_file.is_file() else {}
    return Qwen3TTS(model, codec, _load_text_tokenizer(path), defaults)


# --- sampling -----------------------------------------------------------------------------------


@dataclass
class Sampling:
    do_sample: bool = True
    temperature: float = 0.9
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.05


def _pick(logits: mx.array, s: Sampling, key) -> mx.array:
    """One id from logits [1, V] (float32, already masked): greedy, or temperature/top-k/top-p."""
    if not s.do_sample or s.temperature <= 0:
        return mx.argmax(logits, axis=-1)
    logits = logits / s.temperature
    if 0 < s.top_k < logits.shape[-1]:
        kth = mx.sort(logits, axis=-1)[:, -s.top_k][:, None]
        logits = mx.where(logits < kth, -mx.inf, logits)
    if s.top_p < 1.0:
        order = mx.argsort(-logits, axis=-1)
        sorted_logits = mx.take_along_axis(logits, order, axis=-1)
        probs = mx.softmax(sorted_logits, axis=-1)
        drop = (mx.cumsum(probs, axis=-1) - probs) > s.top_p
        sorted_logits = mx.where(drop, -mx.inf, sorted_logits)
        logits = mx.put_along_axis(mx.full(logits.shape, -mx.inf), order, sorted_logits, axis=-1)
    return mx.random.categorical(logits, key=key)


# --- the synthesizer ----------------------------------------------------------------------------


class Qwen3TTS:
    sample_rate = SAMPLE_RATE

    def __init__(self, model: Model, codec: SpeechTokenizer, tokenizer, generate_defaults: dict):
        self.model, self.codec, self.tokenizer = model, codec, tokenizer
        self.args = model.args
        self.talker_args = model.args.talker_config
        self.defaults = generate_defaults
        self.frame_samples = codec.decoder.args.samples_per_frame

    def parameters(self) -> dict:
        """Every array the synthesizer holds (the pool sizes resident models by these)."""
        return {"model": self.model.parameters(), "codec": self.codec.parameters()}

    @property
    def voices(self) -> list[str]:
        return sorted(self.talker_args.spk_id)

    @property
    def can_clone(self) -> bool:
        return hasattr(self.model, "speaker_encoder")

    @property
    def can_icl(self) -> bool:
        """Cloning in context (reference codes + transcript) needs the speech tokenizer's encoder."""
        return self.can_clone and "encoder" in self.codec

    def reference_codes(self, audio: np.ndarray) -> np.ndarray:
        """A 24 kHz mono clip -> its codes [frames, codebooks] (qwen-tts' speech_tokenizer.encode)."""
        pieces = self.reference_codes_stages(audio)
        while True:
            try:
                next(pieces)
            except StopIteration as done:
                return done.value

    def reference_codes_stages(self, audio: np.ndarray):
        """`reference_codes` in bounded pieces (a generator returning the codes), for the worker."""
        if not self.can_icl:
            raise VoiceError("this model's speech tokenizer has no encoder: it cannot clone a voice in context")
        codes = yield from self.codec.encoder.stages(mx.array(np.asarray(audio, np.float32))[None])
        return np.array(codes[0].T).astype(np.int32)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def speaker_embedding(self, audio: np.ndarray) -> np.ndarray:
        """The x-vector of a 24 kHz mono clip (Base models), for `voice_embedding`."""
        from ominix.engine.audio.speaker_mel import log_mel

        if not self.can_clone:
            raise VoiceError("this model has no speaker encoder: voice cloning needs a Base model")
        mels = mx.array(log_mel(audio)[None])
        emb = self.model.speaker_encoder(mels)
        return np.array(emb[0].astype(mx.float32))

    def _sampling(self, options: SynthesisOptions, sub: bool) -> Sampling:
        d = self.defaults
        p = "subtalker_" if sub else ""
        greedy = options.temperature is not None and options.temperature <= 0
        return Sampling(
            do_sample=False if greedy else bool(d.get(f"{p}dosample" if sub else "do_sample", True)),
            temperature=options.temperature if options.temperature is not None else d.get(f"{p}temperature", 0.9),
            top_k=int(d.get(f"{p}top_k", 50)),
            top_p=float(d.get(f"{p}top_p", 1.0)),
            repetition_penalty=1.0 if sub else float(d.get("repetition_penalty", 1.05)),
        )

    def synthesis(self, text: str, options: SynthesisOptions) -> "Synthesis":
        return Synthesis(self, text, options)

    # --- prompt (the reference's generate(), one request) --------------------------------------

    def _speaker(self, options: SynthesisOptions):
        a = self.talker_args
        if options.voice_embedding is not None:
            return mx.array(np.asarray(options.voice_embedding, dtype=np.float32)).reshape(1, 1, -1)
        if not options.voice:
            return None
        name = options.voice.lower()
        if name not in a.spk_id:
            raise VoiceError(f"unknown voice '{options.voice}'; this model has: {', '.join(self.voices) or 'none'}")
        ids = a.spk_id[name]
        return self.model.talker.codec([ids] if isinstance(ids, int) else list(ids)).reshape(1, 1, -1)

    def _language_id(self, options: SynthesisOptions):
        a = self.talker_args
        lang = (options.language or "auto").lower()
        if lang != "auto" and lang not in a.codec_language_id:
            raise VoiceError(f"unknown language '{options.language}'")
        lang_id = None if lang == "auto" else a.codec_language_id[lang]
        dialect = a.spk_is_dialect.get((options.voice or "").lower(), False) if options.voice else False
        if lang in ("chinese", "auto") and dialect:
            lang_id = a.codec_language_id[dialect]
        return lang_id

    def prompt(self, text: str, options: SynthesisOptions) -> tuple[mx.array, mx.array, mx.array]:
        """(prefill embeds [1, L, D], trailing text embeds [1, T, D], tts_pad embed [1, 1, D])."""
        a, talker, cfg = self.talker_args, self.model.talker, self.args
        ids = self.encode(f"<|im_start|>assistant\n{text}<|im_end|>\n<|im_start|>assistant\n")
        bos, eos, pad = mx.split(talker.text([cfg.tts_bos_token_id, cfg.tts_eos_token_id, cfg.tts_pad_token_id]), 3, axis=1)
        lang_id = self._language_id(options)
        think = ([a.codec_nothink_id, a.codec_think_bos_id, a.codec_think_eos_id] if lang_id is None
                 else [a.codec_think_id, a.codec_think_bos_id, lang_id, a.codec_think_eos_id])  # fmt: skip
        parts = [talker.codec(think)]
        speaker = self._speaker(options)
        if speaker is not None:
            parts.append(speaker.astype(parts[0].dtype))
        parts.append(talker.codec([a.codec_pad_id, a.codec_bos_id]))
        codec = mx.concatenate(parts, axis=1)
        n = codec.shape[1]
        head = mx.concatenate([mx.repeat(pad, n - 2, axis=1), bos], axis=1) + codec[:, :-1]
        pieces = []
        if options.instructions:
            pieces.append(talker.text(self.encode(f"<|im_start|>user\n{options.instructions}<|im_end|>\n")))
        pieces += [talker.text(ids[:3]), head]
        body = ids[3:-5]
        if options.voice_codes is not None:
            icl, trailing = self._icl(body, options, eos, pad)
            return mx.concatenate(pieces + [icl], axis=1), trailing, pad
        if options.non_streaming_text:
            text_part = mx.concatenate([talker.text(body), eos], axis=1) if body else eos
            pieces.append(text_part + talker.codec([a.codec_pad_id] * (len(body) + 1)))
            pieces.append(pad + talker.codec([a.codec_bos_id]))
            trailing = pad
        else:
            pieces.append(talker.text(ids[3:4]) + codec[:, -1:])
            trailing = mx.concatenate([talker.text(ids[4:-5]), eos], axis=1) if len(ids) > 9 else eos
        return mx.concatenate(pieces, axis=1), trailing, pad

    def _icl(self, body: list[int], options: SynthesisOptions, eos, pad) -> tuple[mx.array, mx.array]:
        """The in-context part of a cloned voice's prompt (qwen-tts' generate_icl_prompt): the
        reference transcript then the text, over codec BOS then the reference clip's frames."""
        a, talker = self.talker_args, self.model.talker
        if not options.voice_text:
            raise VoiceError("in-context cloning needs the reference clip's transcript")
        ref = self.encode(f"<|im_start|>assistant\n{options.voice_text}<|im_end|>\n")[3:-2]
        text = mx.concatenate([talker.text(ref + body), eos], axis=1)
        codes = mx.array(np.asarray(options.voice_codes, np.int32))
        codec = mx.concatenate([talker.codec([a.codec_bos_id]), talker.codes_embedding(codes)], axis=1)
        n_text, n_codec = text.shape[1], codec.shape[1]
        if options.non_streaming_text:
            icl = text + talker.codec([a.codec_pad_id] * n_text)
            return mx.concatenate([icl, codec + pad], axis=1), pad
        if n_text > n_codec:
            return text[:, :n_codec] + codec, text[:, n_codec:]
        return mx.concatenate([text, mx.repeat(pad, n_codec - n_text, axis=1)], axis=1) + codec, pad


class Synthesis:
    """One utterance: step() generates a frame or decodes a chunk; `audio` collects what is new."""

    def __init__(self, tts: Qwen3TTS, text: str, options: SynthesisOptions):
        self.tts, self.options = tts, options
        a = tts.talker_args
        self.talker = tts.model.talker
        self.embeds, self.trailing, self.pad = tts.prompt(text, options)
        self.cache = [KVCache() for _ in self.talker.model.layers]
        self.main = tts._sampling(options, sub=False)
        self.sub = tts._sampling(options, sub=True)
        self.max_frames = options.max_frames or int(tts.defaults.get("max_new_tokens", 2048))
        self.key = mx.random.key(options.seed if options.seed is not None else np.random.randint(2**31))
        vocab = a.vocab_size
        self.suppress = mx.array([i >= vocab - 1024 and i != a.codec_eos_token_id for i in range(vocab)])
        self.eos_mask = mx.arange(vocab) == a.codec_eos_token_id
        self.seen = mx.zeros((vocab,), dtype=mx.bool_)
        self.sampled = 0  # first-codebook ids drawn so far (EOS included)
        self.frames: list[np.ndarray] = []  # [G] codes of each finished frame
        self.decoded = 0  # frames already turned into audio
        self.next_code = None
        self.hidden = None
        self.generating = True
        self.first_chunk = options.first_chunk_frames
        self.chunk = options.chunk_frames
        self.step_frames = max(1, options.decode_chunk_frames)
        self.draining = False  # a chunk is due: decode (step_frames per step) until none is pending
        self.stream: DecoderStream | None = None  # the codec decoder's carried state
        self.decoding = None  # the chunk being decoded: a generator of bounded pieces (Decoder.stages)
        self.trace: dict[str, list] | None = None  # set to {} to keep every step's logits (tests)

    def _record(self, name: str, logits: mx.array) -> None:
        if self.trace is not None:
            self.trace.setdefault(name, []).append(np.array(logits[0].astype(mx.float32)))

    def _next_key(self):
        self.key, sub = mx.random.split(self.key)
        return sub

    def _first_code(self, logits: mx.array) -> mx.array:
        logits = logits.astype(mx.float32)
        self._record("talker", logits)
        p = self.main.repetition_penalty
        if p != 1.0:
            logits = mx.where(self.seen, mx.where(logits < 0, logits * p, logits / p), logits)
        banned = self.suppress | self.eos_mask if self.sampled < 2 else self.suppress
        logits = mx.where(banned, -mx.inf, logits)
        code = _pick(logits, self.main, self._next_key())
        self.sampled += 1
        self.seen = self.seen | (mx.arange(self.seen.shape[0]) == code)
        return code

    def _rest_codes(self, first: mx.array) -> mx.array:
        """Codebooks 1..G-1 for a frame whose first code is `first`, from the code predictor."""
        cp = self.talker.code_predictor
        cache = [KVCache() for _ in cp.model.layers]
        embeds = mx.concatenate([self.hidden, self.talker.model.codec_embedding(first)[None]], axis=1)
        codes = [first]
        for step in range(len(cp.lm_head)):
            logits = cp(embeds, step, cache)[:, 0].astype(mx.float32)
            self._record("predictor", logits)
            code = _pick(logits, self.sub, self._next_key())
            codes.append(code)
            if step + 1 < len(cp.lm_head):
                embeds = cp.model.codec_embedding[step](code)[None]
        return mx.concatenate(codes)

    def _generate(self) -> None:
        if self.next_code is None:  # prefill
            logits, self.hidden = self.talker(self.embeds, self.cache)
            self.next_code = self._first_code(logits)
            return
        code = self.next_code
        if int(code.item()) == self.tts.talker_args.codec_eos_token_id or self.sampled >= self.max_frames:
            self.generating = False  # the reference drops this last id: its frame is never built
            return
        codes = self._rest_codes(code)
        frame = self.talker.frame_embedding(codes)
        j = len(self.frames)
        frame = frame + (self.trailing[:, j : j + 1] if j < self.trailing.shape[1] else self.pad)
        logits, self.hidden = self.talker(frame, self.cache)
        self.next_code = self._first_code(logits)
        mx.eval(self.next_code, codes)
        self.frames.append(np.array(codes))

    def _due(self) -> int:
        """Frames to decode in this step: once a chunk is pending (or generation has ended), the
        pending frames, at most `step_frames` per step, until none is left."""
        pending = len(self.frames) - self.decoded
        if not pending:
            self.draining = False
            return 0
        size = self.first_chunk if self.decoded == 0 else self.chunk
        if not self.generating or pending >= size:
            self.draining = True
        return min(pending, self.step_frames) if self.draining else 0

    def _advance(self) -> np.ndarray | None:
        """One piece of the chunk being decoded; its samples once the last piece is done."""
        try:
            next(self.decoding)
            return None
        except StopIteration as finished:
            self.decoding = None
            wav = finished.value
            if wav is None:  # the warm-up: no audio
                return None
            mx.eval(wav)
            self.stream.evaluate()
            return np.array(wav[0].astype(mx.float32))

    def step(self) -> np.ndarray | None:
        """One unit of work (a frame, or a piece of a chunk's decode); returns new audio samples
        (float32, 24 kHz) when a chunk's decode completes."""
        decoder = self.tts.codec.decoder
        if self.stream is None:
            self.stream = DecoderStream()
            if self.options.voice_codes is not None:  # a cloned voice's clip is the decoder's left context
                ref = mx.array(np.asarray(self.options.voice_codes, np.int32).T[None])  # [1, G, T]
                self.decoding = decoder.warm_stages(ref, self.stream)
        if self.decoding is not None:
            return self._advance()
        due = self._due()
        if due:
            codes = mx.array(np.stack(self.frames[self.decoded : self.decoded + due], axis=1)[None])  # [1, G, n]
            self.decoded += due
            self.decoding = decoder.stages(codes, self.stream)
            return self._advance()
        if self.generating:
            self._generate()
        return None

    @property
    def done(self) -> bool:
        return not self.generating and self.decoded == len(self.frames) and self.decoding is None

    def codes(self) -> np.ndarray:
        """[frames, G] codes generated so far."""
        return np.stack(self.frames) if self.frames else np.zeros((0, self.tts.talker_args.num_code_groups), np.int64)
