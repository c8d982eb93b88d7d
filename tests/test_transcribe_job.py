"""TranscribeJob over any SpeechRecognizer: windows tile long audio with global offsets, cut at the
quietest moment for recognizers that do not report what they consumed; stepped recognizers run one
bounded unit per step; the job always moves forward."""

from __future__ import annotations

import wave

import numpy as np

from ominix.engine.audio.transcribe import SegmentEvent, TranscribeJob, quietest_cut, run_job
from ominix.engine.audio.types import SAMPLE_RATE, Segment


class WindowLog:
    """A fixed-window recognizer (the shape Paraformer-like models have): one segment per window,
    its text naming the window it saw."""

    window_seconds = 10.0

    def __init__(self):
        self.calls = []

    def transcribe_window(self, audio, *, offset=0.0, language=None, prompt=None, task="transcribe",
                          temperature=0.0, word_timestamps=False):
        self.calls.append((offset, len(audio)))
        return [Segment(offset, offset + len(audio) / SAMPLE_RATE, f" w{len(self.calls)}")], "xx"


def _write(path, samples):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())
    return path


def test_fixed_windows_tile_the_audio_and_cut_in_quiet(tmp_path):
    # 35 s of tone with 0.3 s gaps at 9.0 s, 18.5 s and 27.0 s: each window should end in a gap.
    t = np.arange(35 * SAMPLE_RATE) / SAMPLE_RATE
    audio = 0.4 * np.sin(2 * np.pi * 300 * t)
    for gap in (9.0, 18.5, 27.0):
        audio[int(gap * SAMPLE_RATE):int((gap + 0.3) * SAMPLE_RATE)] = 0
    rec = WindowLog()
    events = []
    result = run_job(TranscribeJob(_write(tmp_path / "a.wav", audio)), rec, on_event=events.append)
    offsets = [o for o, _ in rec.calls]
    ends = [o + n / SAMPLE_RATE for o, n in rec.calls]
    assert offsets[0] == 0 and all(abs(e - o) < 1e-9 for e, o in zip(ends, offsets[1:]))  # no gap, no overlap
    assert abs(ends[-1] - 35.0) < 1e-3
    for end, gap in zip(ends, (9.0, 18.5, 27.0)):
        assert gap <= end <= gap + 0.3
    assert result.text == " ".join(f"w{i}" for i in range(1, len(rec.calls) + 1))
    assert result.language == "xx" and abs(result.duration - 35.0) < 1e-3
    assert [e.index for e in events if isinstance(e, SegmentEvent)] == list(range(len(rec.calls)))


def test_quietest_cut_finds_the_pause():
    audio = np.ones(SAMPLE_RATE * 10, np.float32)
    audio[int(9.2 * SAMPLE_RATE):int(9.3 * SAMPLE_RATE)] = 0
    assert 9.2 * SAMPLE_RATE <= quietest_cut(audio) <= 9.3 * SAMPLE_RATE


def test_whisper_runs_one_bounded_unit_per_step(tmp_path):
    from ominix.engine.audio.whisper import load_whisper
    from tests.speech_fixtures import SENTENCES, encode, speak
    from tests.whisper_checkpoints import converted_tiny_en

    samples, rate = speak(SENTENCES[0])
    rec = load_whisper(converted_tiny_en())
    job = TranscribeJob(encode(samples, rate, tmp_path / "a.flac"))

    class Ticket:
        events = []

        def emit(self, event):
            self.events.append(event)

    job.begin(rec, Ticket())
    steps = 1
    while not job.step():
        steps += 1
    text = job.result().text
    job.close()
    tokens = sum(len(s.tokens) for s in job.segments)
    assert steps >= tokens + 1  # the encoder, then a decoder pass per token, each its own step
    assert "fox" in text.lower()


def test_concurrent_jobs_share_decoder_forwards_and_equal_alone(tmp_path):
    from ominix.engine.audio.whisper import load_whisper
    from tests.speech_fixtures import SENTENCES, encode, speak
    from tests.whisper_checkpoints import converted_tiny_en

    rec = load_whisper(converted_tiny_en())
    paths = []
    for i in range(3):
        samples, rate = speak(SENTENCES[i])
        paths.append(encode(samples, rate, tmp_path / f"s{i}.wav"))
    alone = [run_job(TranscribeJob(p), rec) for p in paths]

    class Ticket:
        def emit(self, event):
            pass

    jobs = [TranscribeJob(p) for p in paths]
    for job in jobs:
        job.begin(rec, Ticket())
    before = rec.batcher.forwards
    active = list(jobs)
    while active:  # the worker's turn: every running job one step
        active = [job for job in active if not job.step()]
    together = [job.result() for job in jobs]
    for job in jobs:
        job.close()
    rows = sum(len(s.tokens) + 2 for r in together for s in r.segments)  # at least one row per token
    assert [t.text for t in together] == [a.text for a in alone]
    assert [[(s.start, s.end) for s in t.segments] for t in together] == \
        [[(s.start, s.end) for s in a.segments] for a in alone]
    forwards = rec.batcher.forwards - before
    assert forwards < 0.6 * rows  # three requests' rows ran in shared forwards


def test_segments_stream_as_they_are_decoded(tmp_path):
    from ominix.engine.audio.transcribe import TextEvent
    from ominix.engine.audio.whisper import load_whisper
    from tests.speech_fixtures import SENTENCES, encode, speak
    from tests.whisper_checkpoints import converted_tiny_en

    rec = load_whisper(converted_tiny_en())
    path = encode(*speak(" ".join(SENTENCES)), tmp_path / "three.wav")
    events = []
    result = run_job(TranscribeJob(path, early_text=True), rec, on_event=events.append)
    kinds = [type(e).__name__ for e in events]
    texts = [e for e in events if isinstance(e, TextEvent)]
    assert len(result.segments) >= 2
    # The first segment's text is out while the window is still decoding (before its SegmentEvents).
    assert kinds.index("TextEvent") < kinds.index("SegmentEvent")
    assert sum(1 for k in kinds[:kinds.index("SegmentEvent")] if k == "TextEvent") >= 1
    assert "".join(e.text for e in texts).strip() == result.text
    assert [e.text for e in texts] == [s.text for s in result.segments]
    assert all(len(e.tokens) == len(e.logprobs) > 0 for e in texts)
