"""The speak job and audio encoding: sentence splitting, streamed chunks, every output format."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from ominix.engine.audio.encode import FORMATS, AudioEncoder
from ominix.engine.audio.speak import SpeakJob, split_sentences
from ominix.engine.audio.synth import SynthesisOptions, VoiceError
from tests.qwen3_tts_fixture import qwen3_tts_tiny  # noqa: F401  (fixture)


def test_split_sentences():
    assert split_sentences("Hello there. How are you? Fine!") == ["Hello there.", "How are you?", "Fine!"]
    assert split_sentences("你好。今天天气很好！我们走吧") == ["你好。", "今天天气很好！", "我们走吧"]
    assert split_sentences("one\n\ntwo ...") == ["one", "two ..."]
    assert split_sentences("Dr. Who") == ["Dr.", "Who"]  # plain rule: a period then space ends it
    assert split_sentences("   ") == []
    long = ", ".join(["word"] * 200)
    parts = split_sentences(long, limit=100)
    assert all(len(p) <= 100 for p in parts) and " ".join(parts).replace(",", " ").split() == ["word"] * 200


def _decode(data: bytes):
    c = av.open(io.BytesIO(data))
    s = c.streams.audio[0]
    samples = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(s)])
    return s.rate, s.channels, samples


def _tone(seconds: float, rate: int = 24000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "pcm"])
@pytest.mark.parametrize("speed", [1.0, 0.5, 2.0])
def test_formats_decode_back(fmt, speed):
    audio = _tone(1.5)
    enc = AudioEncoder(fmt, 24000, speed=speed, streaming=True)
    data = b"".join(enc.feed(audio[i : i + 4800]) for i in range(0, len(audio), 4800)) + enc.finish()
    rate, channels, samples = _decode(data)
    assert channels == 1
    assert rate == (48000 if fmt == "opus" else 24000)
    assert abs(len(samples) / rate - 1.5 / speed) < 0.08 + 0.02 / speed


def test_pcm_and_wav_are_exact_and_streamed_equals_whole():
    audio = _tone(0.7)
    chunks = np.array_split(audio, 7)
    enc = AudioEncoder("pcm", 24000)
    streamed = b"".join(enc.feed(c) for c in chunks) + enc.finish()
    whole = AudioEncoder("pcm", 24000)
    assert streamed == whole.feed(audio) + whole.finish()
    ints = np.frombuffer(streamed, "<i2")
    np.testing.assert_allclose(ints / 32767.0, audio, atol=1 / 32767)
    wav = AudioEncoder("wav", 24000, streaming=False)
    data = b"".join(wav.feed(c) for c in chunks) + wav.finish()
    assert data[44:] == streamed and int.from_bytes(data[40:44], "little") == len(streamed)


def test_bad_format_and_speed():
    with pytest.raises(ValueError, match="response_format"):
        AudioEncoder("ogg", 24000)
    with pytest.raises(ValueError, match="speed"):
        AudioEncoder("mp3", 24000, speed=5.0)


def test_speak_job_streams_sentence_by_sentence(qwen3_tts_tiny):
    """Driven directly (no server): begin, step until done, chunks arrive before the job ends."""
    from ominix.engine.audio.qwen3_tts import load_qwen3_tts

    tts = load_qwen3_tts(qwen3_tts_tiny)

    class Ticket:
        events = []

        def emit(self, e):
            self.events.append(e)

    class Resident:
        model = tts

    text = "Hello world. The quick brown fox jumps! Fine?"
    opts = SynthesisOptions(voice="vivian", temperature=0, max_frames=12, first_chunk_frames=3, chunk_frames=5)
    job = SpeakJob(text, opts)
    ticket = Ticket()
    job.begin(Resident, ticket)
    steps, first_chunk_step = 0, None
    while not job.step():
        steps += 1
        if ticket.events and first_chunk_step is None:
            first_chunk_step = steps
    usage = job.result()
    job.close()
    assert [e.sentence for e in ticket.events][0] == 0 and ticket.events[-1].sentence == 2
    assert first_chunk_step is not None and first_chunk_step < steps / 3  # audio long before the end
    total = sum(len(e.samples) for e in ticket.events)
    assert total == usage.output_tokens * tts.frame_samples and usage.sentences == 3
    # the same request in one go gives the same samples (greedy): chunking does not change audio
    again = SpeakJob(text, opts)
    t2 = Ticket()
    t2.events = []
    again.begin(Resident, t2)
    while not again.step():
        pass
    np.testing.assert_array_equal(np.concatenate([e.samples for e in ticket.events]),
                                  np.concatenate([e.samples for e in t2.events]))
    with pytest.raises(VoiceError, match="unknown voice"):
        SpeakJob("hi", SynthesisOptions(voice="nobody")).begin(Resident, Ticket())
