"""GPT-SoVITS v2 end to end: a tiny random model folder in lj1995/GPT-SoVITS' published layout
(tests/gpt_sovits_fixture.py), converted once by the `tts` loader, a voice cloned from a clip and
its transcript over POST /v1/audio/voices, then /v1/audio/speech with the official openai client on
a real uvicorn server; audio decoded back with PyAV."""

from __future__ import annotations

import io

import av
import httpx
import numpy as np
import openai
import pytest

from ominix.api.app import create_app
from ominix.engine.audio.gpt_sovits_tts import PAUSE, SAMPLE_RATE, Voice, load_gpt_sovits
from ominix.engine.audio.speak import SpeakJob, load
from ominix.engine.audio.synth import SynthesisOptions, VoiceError
from ominix.engine.pool import ModelPool
from ominix import kinds
from tests.gpt_sovits_fixture import build_folder, reference_clip
from tests.server_fixtures import ServerThread

GREEDY = {"temperature": 0, "seed": 3}
TRANSCRIPT = "我们今天说一二三四五六七八九十"
TEXT = "你好，世界。今天是一月一日！我们在这个大会上说了不少。"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_folder(tmp_path_factory.mktemp("gsv"))


def wav_bytes(audio: np.ndarray, rate: int) -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format="wav") as c:
        st = c.add_stream("pcm_s16le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray((audio * 32767).astype(np.int16)[None], format="s16", layout="mono")
        frame.sample_rate = rate
        for p in st.encode(frame):
            c.mux(p)
        for p in st.encode(None):
            c.mux(p)
    return out.getvalue()


def test_loader_converts_once_and_synthesizes(folder):
    assert kinds.detect(folder).name == "tts"
    tts, _ = load(folder)
    stamp = (folder / ".ominix" / "source.json").stat().st_mtime_ns
    load_gpt_sovits(folder)  # the second load reuses the conversion
    assert (folder / ".ominix" / "source.json").stat().st_mtime_ns == stamp
    vector = tts.speaker_embedding(reference_clip(4.0), TRANSCRIPT)
    voice = Voice.unpack(vector)
    samples = 4 * 16000 + int(0.3 * 32000)  # the clip at 16 kHz + the reference's padding
    assert len(voice.codes) == ((samples - 400) // 320 + 1) // 2  # cnhubert's 50 Hz frames, halved
    assert voice.bert.shape == (len(voice.phones), 1024) and voice.ge.shape == (512,)
    job = SpeakJob("你好，世界。今天是一月一日！", SynthesisOptions(voice_embedding=vector, temperature=0, seed=1))
    chunks = []

    class Ticket:
        def emit(self, event):
            chunks.append(event)

    class Resident:
        model = tts

    job.begin(Resident(), Ticket())
    steps = 0
    while not job.step():
        steps += 1
    usage = job.result()
    assert [c.sentence for c in chunks] == [0, 1] and steps > usage.output_tokens  # one token per step
    per_token = 2 * 640
    pause = int(PAUSE * SAMPLE_RATE)
    assert sum(len(c.samples) for c in chunks) == usage.output_tokens * per_token + 2 * pause
    assert all(np.abs(c.samples).max() > 1e-3 for c in chunks)
    with pytest.raises(VoiceError, match="3-10 s"):
        tts.speaker_embedding(reference_clip(2.0), TRANSCRIPT)
    with pytest.raises(VoiceError, match="transcript"):
        tts.speaker_embedding(reference_clip(4.0), "")
    with pytest.raises(VoiceError, match="cloned voice"):
        tts.synthesis("你好。", SynthesisOptions())


@pytest.fixture(scope="module")
def server(folder, tmp_path_factory):
    import os

    os.environ["OMINIX_HOME"] = str(tmp_path_factory.mktemp("home"))
    pool = ModelPool()
    pool.register(str(folder), "gsv-tiny")
    with ServerThread(create_app(pool)) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def voice(server):
    files = {"audio_sample": ("me.wav", wav_bytes(reference_clip(4.0, 44100), 44100), "audio/wav")}
    r = httpx.post(server.url + "/v1/audio/voices", data={"model": "gsv-tiny", "name": "me", "text": TRANSCRIPT},
                   files=files, timeout=300)  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["text"] == TRANSCRIPT
    return r.json()["id"]


def decode(data: bytes):
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.audio[0]
        return s.rate, s.channels, np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(s)])


def test_speech_streams_in_the_cloned_voice(client, voice):
    r = client.audio.speech.create(model="gsv-tiny", voice="me", input=TEXT, response_format="wav", extra_body=GREEDY)
    rate, channels, samples = decode(r.content)
    assert (rate, channels) == (SAMPLE_RATE, 1)
    assert len(samples) / rate > 3 * PAUSE and np.abs(samples).max() > 100  # int16 samples, not silence
    whole = client.audio.speech.create(model="gsv-tiny", voice={"id": voice}, input=TEXT, response_format="pcm",
                                       extra_body=GREEDY).content  # fmt: skip
    assert r.content[44:] == whole  # by name or by id, the same voice; wav = header + the pcm
    chunks = []
    with client.audio.speech.with_streaming_response.create(model="gsv-tiny", voice="me", input=TEXT,
                                                            response_format="pcm", extra_body=GREEDY) as s:  # fmt: skip
        for chunk in s.iter_bytes(chunk_size=None):
            chunks.append(chunk)
    assert len(chunks) >= 3 and b"".join(chunks) == whole  # a chunk per sentence, same audio
    flac = client.audio.speech.create(model="gsv-tiny", voice="me", input=TEXT, response_format="flac",
                                      extra_body=GREEDY).content  # fmt: skip
    assert decode(flac)[0] == SAMPLE_RATE and len(decode(flac)[2]) == len(whole) // 2


@pytest.mark.parametrize("body, needle", [
    ({"voice": "nobody"}, "unknown voice"),
    ({"voice": None}, "cloned voice"),
    ({"voice": "me", "language": "klingon"}, "klingon"),
])  # fmt: skip
def test_bad_speech_requests_are_400(server, voice, body, needle):
    full = {"model": "gsv-tiny", "input": "你好。", **body}
    r = httpx.post(server.url + "/v1/audio/speech", json=full, timeout=120)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]["message"]


@pytest.mark.parametrize("files, data, needle", [
    ({"audio_sample": ("x.wav", b"RIFF not really a wave file" * 20, "audio/wav")}, {"text": TRANSCRIPT}, "decoded"),
    ({"audio_sample": ("s.wav", wav_bytes(reference_clip(2.0), 32000), "audio/wav")}, {"text": TRANSCRIPT}, "3-10 s"),
    ({"audio_sample": ("s.wav", wav_bytes(reference_clip(4.0), 32000), "audio/wav")}, {}, "transcript"),
])  # fmt: skip
def test_bad_reference_clips_are_400(server, files, data, needle):
    r = httpx.post(server.url + "/v1/audio/voices", data={"model": "gsv-tiny", "name": "bad", **data}, files=files,
                   timeout=120)  # fmt: skip
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]["message"]


def test_pull_says_which_files_go_where_and_verify_checks_them(folder, tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    from ominix import registry

    entry = registry.load_catalog().get("gpt-sovits")
    env = {**os.environ, "HOME": str(tmp_path), "OMINIX_HOME": str(tmp_path / ".ominix"), "COLUMNS": "200"}
    env.pop("OMINIX_REGISTRY", None)

    def ominix(*args):
        return subprocess.run([sys.executable, "-m", "ominix", *args], env=env, capture_output=True, text=True,
                              timeout=120)  # fmt: skip

    where = tmp_path / ".ominix" / "models" / "gpt-sovits"
    result = ominix("pull", "gpt-sovits")
    assert result.returncode == 1 and "huggingface.co/lj1995/GPT-SoVITS" in result.stderr
    for f in entry.source.files:
        assert str(where / f) in result.stderr
    shutil.copytree(folder, where, ignore=shutil.ignore_patterns(".ominix"))
    assert sorted(str(p.relative_to(where)) for p in where.rglob("*") if p.is_file()) == sorted(
        [*entry.source.files, "chinese-hubert-base/preprocessor_config.json"])  # the fixture is the published layout
    result = ominix("pull", "gpt-sovits")
    assert result.returncode == 0, result.stderr
    result = ominix("verify", "gpt-sovits")
    assert result.returncode == 0, result.stdout + result.stderr
    (where / "chinese-hubert-base" / "pytorch_model.bin").unlink()
    assert ominix("verify", "gpt-sovits").returncode != 0
