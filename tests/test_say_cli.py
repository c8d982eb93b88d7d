"""`ominix say` end to end in a subprocess: argument and stdin text, formats, voices, errors."""

from __future__ import annotations

import io
import subprocess
import sys

import av
import numpy as np

from tests.qwen3_tts_fixture import FRAME_SECONDS, TINY_FRAMES, qwen3_tts_tiny  # noqa: F401


def ominix(*args, input=None):
    return subprocess.run([sys.executable, "-m", "ominix", *args], input=input, capture_output=True, text=True,
                          timeout=180)  # fmt: skip


def _decode(path):
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        return s.rate, s.channels, np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(s)])


def test_say_to_files(qwen3_tts_tiny, tmp_path):
    out = tmp_path / "hello.wav"
    r = ominix("say", "Hello world. How are you?", "--model", str(qwen3_tts_tiny), "--voice", "vivian",
               "--temp", "0", "-o", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "real-time factor" in r.stderr
    rate, channels, samples = _decode(out)
    assert (rate, channels) == (24000, 1)
    assert len(samples) == 2 * TINY_FRAMES * round(FRAME_SECONDS * 24000)  # two sentences
    # stdin, mp3 from the extension, a style instruction
    mp3 = tmp_path / "long.mp3"
    # greedy: a sampled EOS (its logit is 0 in the tiny model) would end a sentence early
    r = ominix("say", "--model", str(qwen3_tts_tiny), "--voice", "dylan", "-i", "happily", "-o", str(mp3),
               "--temp", "0", input="One. Two. Three.")  # fmt: skip
    assert r.returncode == 0, r.stderr
    rate, _, samples = _decode(mp3)
    assert abs(len(samples) / rate - 3 * TINY_FRAMES * FRAME_SECONDS) < 0.1


def test_say_errors(qwen3_tts_tiny, tmp_path):
    r = ominix("say", "Hi.", "--model", str(qwen3_tts_tiny), "--voice", "nobody", "-o", str(tmp_path / "x.wav"))
    assert r.returncode == 1 and "unknown voice 'nobody'" in r.stderr
    r = ominix("say", "Hi.", "--model", str(qwen3_tts_tiny), "-o", str(tmp_path / "x.ogg"))
    assert r.returncode == 1 and "response_format" in r.stderr
    r = ominix("say", "--model", str(qwen3_tts_tiny), input="   ")
    assert r.returncode == 2 and "nothing to say" in r.stderr
