"""`ominix transcribe` and `ominix bench` on a speech model, through the real CLI entry point,
with the real Whisper tiny.en and Piper speech."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.server_fixtures import random_qwen3
from tests.speech_fixtures import SENTENCES, encode, speak, wer
from tests.whisper_checkpoints import converted_tiny_en


def ominix(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ominix", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    out = []
    for i, suffix in ((0, "ogg"), (2, "flac")):
        samples, rate = speak(SENTENCES[i])
        out.append((SENTENCES[i], encode(samples, rate, root / f"clip{i}.{suffix}")))
    return out


def test_transcribe_several_files_and_formats(clips, tmp_path):
    model = converted_tiny_en()
    r = ominix("transcribe", clips[0][1], clips[1][1], "--model", model)
    assert r.returncode == 0, r.stderr
    parts = r.stdout.split("== ")[1:]
    assert len(parts) == 2
    for (spoken, path), part in zip(clips, parts):
        header, text = part.split("\n", 1)
        assert header == str(path) and wer(spoken, text) <= 0.2, text
    r = ominix("transcribe", clips[1][1], "--model", model, "-f", "json", "-o", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    body = json.loads((tmp_path / "out" / "clip2.json").read_text())
    assert body["language"] == "english" and body["segments"] and body["words"]
    assert wer(clips[1][0], body["text"]) <= 0.2


def test_transcribe_errors_are_one_line(clips, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really")
    r = ominix("transcribe", bad, "--model", converted_tiny_en())
    assert r.returncode == 1 and "error:" in r.stderr and "Traceback" not in r.stderr
    chat = random_qwen3(tmp_path / "chat")
    r = ominix("transcribe", clips[0][1], "--model", chat)
    assert r.returncode == 1 and "chat model" in r.stderr and "Traceback" not in r.stderr
    r = ominix("transcribe", clips[0][1], "--model", converted_tiny_en(), "-f", "docx")
    assert r.returncode == 1 and "--format" in r.stderr


def test_bench_speech_model(clips):
    r = ominix("bench", converted_tiny_en(), "--audio", clips[0][1], "-n", "1", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["kind"] == "asr" and 0 < result["rtf"] and result["peak_memory_gb"] > 0.05
    assert 0 < result["first_segment_s"] <= result["wall_s"]
    assert 0 < result["first_text_s"] <= result["first_segment_s"]  # streamed text comes no later
    r = ominix("bench", converted_tiny_en())
    assert r.returncode == 1 and "--audio" in r.stderr
