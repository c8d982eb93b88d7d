"""/v1/audio/speech and voices end to end: a real uvicorn server, the official openai client, a tiny
Qwen3-TTS checkpoint (CustomVoice and Base layouts), audio decoded back with PyAV."""

from __future__ import annotations

import base64
import io
import json

import av
import httpx
import numpy as np
import openai
import pytest

from ominix.api.app import create_app
from ominix.engine.pool import ModelPool
from tests.qwen3_tts_fixture import (  # noqa: F401
    FRAME_SECONDS, TINY_FRAMES, qwen3_tts_tiny, qwen3_tts_tiny_base, ref_audio,
)
from tests.server_fixtures import ServerThread

GREEDY = {"temperature": 0, "seed": 1}


@pytest.fixture(scope="module")
def server(qwen3_tts_tiny, qwen3_tts_tiny_base, tmp_path_factory):
    import os

    os.environ["OMINIX_HOME"] = str(tmp_path_factory.mktemp("home"))
    pool = ModelPool()
    pool.register(str(qwen3_tts_tiny), "tts-tiny")
    pool.register(str(qwen3_tts_tiny_base), "tts-tiny-base")
    with ServerThread(create_app(pool)) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)


def decode(data: bytes):
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.audio[0]
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(s)])
        return s.rate, s.channels, samples


def speak(client, text, fmt="wav", speed=1.0, **extra):
    r = client.audio.speech.create(model="tts-tiny", voice="vivian", input=text, response_format=fmt,
                                   speed=speed, extra_body={**GREEDY, **extra})  # fmt: skip
    return r.content


def test_every_format_decodes_back(client):
    for fmt in ("mp3", "opus", "aac", "flac", "wav"):
        rate, channels, samples = decode(speak(client, "Hello world.", fmt))
        assert channels == 1 and rate == (48000 if fmt == "opus" else 24000), fmt
        assert len(samples) / rate > 0.2, fmt
    pcm = speak(client, "Hello world.", "pcm")
    wav = speak(client, "Hello world.", "wav")
    assert wav[44:] == pcm and len(pcm) % 2 == 0  # wav = header + the same 16-bit samples


def _seconds(client, text, speed=1.0):
    return len(speak(client, text, "pcm", speed)) / 2 / 24000


def test_duration_follows_input_length_and_speed(client):
    short, long = "Hello world.", "Hello world. " * 3 + "How are you today?"
    one, four = _seconds(client, short), _seconds(client, long)
    # greedy tiny models run to max_new_tokens: each sentence is a fixed number of frames
    assert four == pytest.approx(4 * one, rel=0.01)
    assert _seconds(client, long, speed=2.0) == pytest.approx(four / 2, rel=0.06)
    assert _seconds(client, long, speed=0.5) == pytest.approx(four * 2, rel=0.06)


def test_streamed_chunks_concatenate_to_the_whole(client, server):
    text = "Hello world. The quick brown fox! Fine?"
    whole = speak(client, text, "pcm")
    chunks = []
    with client.audio.speech.with_streaming_response.create(
        model="tts-tiny", voice="vivian", input=text, response_format="pcm", extra_body=GREEDY
    ) as r:
        for chunk in r.iter_bytes(chunk_size=None):
            chunks.append(chunk)
    assert len(chunks) > 1 and b"".join(chunks) == whole
    # SSE: deltas carry the encoded bytes, done carries usage
    body = {"model": "tts-tiny", "voice": "vivian", "input": text, "response_format": "pcm",
            "stream_format": "sse", **GREEDY}  # fmt: skip
    events = []
    with httpx.stream("POST", server.url + "/v1/audio/speech", json=body, timeout=120) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert events[-1]["type"] == "speech.audio.done"
    usage = events[-1]["usage"]
    assert usage["output_tokens"] > 0 and usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    assert audio == whole
    assert usage["output_tokens"] * FRAME_SECONDS == pytest.approx(len(whole) / 2 / 24000)


def test_instructions_and_language_change_the_audio(client):
    plain = speak(client, "Hello world.", "pcm")
    styled = client.audio.speech.create(model="tts-tiny", voice="vivian", input="Hello world.", response_format="pcm",
                                        instructions="Whisper, very sadly.", extra_body=GREEDY).content  # fmt: skip
    assert styled != plain
    assert speak(client, "Hello world.", "pcm", language="english") != plain


def _wav_clip(samples: np.ndarray) -> bytes:
    clip = io.BytesIO()
    with av.open(clip, "w", format="wav") as c:
        st = c.add_stream("pcm_s16le", rate=24000, layout="mono")
        frame = av.AudioFrame.from_ndarray((samples * 32767).astype(np.int16)[None], format="s16", layout="mono")
        frame.sample_rate = 24000
        for p in st.encode(frame):
            c.mux(p)
        for p in st.encode(None):
            c.mux(p)
    return clip.getvalue()


def test_clone_in_context_with_a_transcript(client, server):
    """A clip with its transcript makes an in-context voice (reference codes + transcript in the
    prompt); the same clip without one, an x-vector voice; they speak differently."""
    files = {"audio_sample": ("me.wav", _wav_clip(ref_audio()[:36000]), "audio/wav")}
    r = httpx.post(server.url + "/v1/audio/voices", files=files, timeout=60,
                   data={"model": "tts-tiny-base", "name": "icl", "text": "The quick brown fox."})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["mode"] == "icl" and r.json()["text"] == "The quick brown fox."
    r = httpx.post(server.url + "/v1/audio/voices", files=files, timeout=60,
                   data={"model": "tts-tiny-base", "name": "xvec"})  # fmt: skip
    assert r.status_code == 200 and r.json()["mode"] == "x_vector"
    listed = {v["name"]: v for v in httpx.get(server.url + "/v1/audio/voices", params={"model": "tts-tiny-base"}).json()["data"]}
    assert listed["icl"]["mode"] == "icl" and listed["xvec"]["mode"] == "x_vector"

    def say(voice):
        return client.audio.speech.create(model="tts-tiny-base", voice=voice, input="Hello world. How are you?",
                                          response_format="pcm", extra_body=GREEDY).content  # fmt: skip

    icl, xvec = say("icl"), say("xvec")
    assert icl == say("icl") and len(icl) > 0  # greedy: the same audio again
    assert icl != xvec
    # two sentences of TINY_FRAMES frames each (EOS unreachable in the tiny checkpoint)
    assert len(icl) == 2 * 2 * TINY_FRAMES * 1920
    r = httpx.post(server.url + "/v1/audio/voices", files=files, timeout=60,
                   data={"model": "tts-tiny-base", "name": "long", "text": "x" * 5000})  # fmt: skip
    assert r.status_code == 400 and "text" in r.json()["error"]["message"]
    for v in ("icl", "xvec"):
        assert httpx.delete(server.url + f"/v1/audio/voices/{listed[v]['id']}").json()["deleted"] is True


def test_voices_list_and_clone(client, server):
    r = httpx.get(server.url + "/v1/audio/voices", params={"model": "tts-tiny"})
    names = {v["name"] for v in r.json()["data"]}
    assert names == {"vivian", "dylan"}
    clip = io.BytesIO()
    with av.open(clip, "w", format="wav") as c:
        st = c.add_stream("pcm_s16le", rate=24000, layout="mono")
        frame = av.AudioFrame.from_ndarray((ref_audio() * 32767).astype(np.int16)[None], format="s16", layout="mono")
        frame.sample_rate = 24000
        for p in st.encode(frame):
            c.mux(p)
        for p in st.encode(None):
            c.mux(p)
    files = {"audio_sample": ("me.wav", clip.getvalue(), "audio/wav")}
    r = httpx.post(server.url + "/v1/audio/voices", data={"model": "tts-tiny-base", "name": "me"}, files=files, timeout=60)
    assert r.status_code == 200, r.text
    voice_id = r.json()["id"]
    listed = httpx.get(server.url + "/v1/audio/voices", params={"model": "tts-tiny-base"}).json()["data"]
    assert [v["id"] for v in listed] == [voice_id]
    a = client.audio.speech.create(model="tts-tiny-base", voice="me", input="Hello world.", response_format="pcm",
                                   extra_body=GREEDY).content  # fmt: skip
    b = client.audio.speech.create(model="tts-tiny-base", voice={"id": voice_id}, input="Hello world.",
                                   response_format="pcm", extra_body=GREEDY).content  # fmt: skip
    assert a == b and len(a) > 0
    # the custom-voice model has no speaker encoder
    r = httpx.post(server.url + "/v1/audio/voices", data={"model": "tts-tiny", "name": "me"}, files=files, timeout=60)
    assert r.status_code == 400 and "clone" in r.json()["error"]["message"]
    r = httpx.post(server.url + "/v1/audio/voices", data={"model": "tts-tiny-base", "name": "x"},
                   files={"audio_sample": ("x.wav", b"not audio at all" * 10, "audio/wav")}, timeout=60)  # fmt: skip
    assert r.status_code == 400 and "decoded" in r.json()["error"]["message"]
    assert httpx.delete(server.url + f"/v1/audio/voices/{voice_id}").json()["deleted"] is True


@pytest.mark.parametrize("body, needle", [
    ({"input": ""}, "input"),
    ({"input": "   "}, "input"),
    ({"input": "x" * 4097}, "input"),
    ({"voice": "nobody"}, "unknown voice"),
    ({"response_format": "ogg"}, "response_format"),
    ({"speed": 4.5}, "speed"),
    ({"speed": 0.1}, "speed"),
])  # fmt: skip
def test_bad_input_is_a_400(server, body, needle):
    full = {"model": "tts-tiny", "voice": "vivian", "input": "Hello.", **body}
    r = httpx.post(server.url + "/v1/audio/speech", json=full, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert needle in err["message"] and err["type"] == "invalid_request_error"


def test_unknown_model_is_a_404(client):
    with pytest.raises(openai.NotFoundError):
        client.audio.speech.create(model="nope", voice="vivian", input="Hello.")
