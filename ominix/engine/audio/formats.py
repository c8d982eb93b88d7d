"""Transcripts as files and response bodies: text, SRT, WebVTT, json and OpenAI's verbose_json.
(No MLX: the CLI and the API both render with these.)"""

from __future__ import annotations

from ominix.engine.audio.types import Transcript
from ominix.engine.audio.whisper_tokenizer import LANGUAGES

FORMATS = ("json", "text", "srt", "vtt", "verbose_json")


def _clock(seconds: float, sep: str) -> str:
    ms = int(round(max(0.0, seconds) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(t: Transcript) -> str:
    blocks = [f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n"
              for i, s in enumerate(t.segments, 1)]
    return "\n".join(blocks)


def to_vtt(t: Transcript) -> str:
    blocks = [f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n" for s in t.segments]
    return "WEBVTT\n\n" + "\n".join(blocks)


def language_name(code: str | None) -> str:
    return LANGUAGES.get(code or "", code or "")


def to_json(t: Transcript) -> dict:
    return {"text": t.text, "usage": {"type": "duration", "seconds": round(t.duration, 3)}}


def to_verbose_json(t: Transcript, task: str = "transcribe", words: bool = False,
                    segments: bool = True) -> dict:
    """OpenAI's verbose_json: language as a name ("english"), segments with decoding details,
    `words` when word timestamps were asked for."""
    body = {"task": task, "language": language_name(t.language), "duration": round(t.duration, 3),
            "text": t.text}
    if segments:
        body["segments"] = [{
            "id": i, "seek": int(round(s.start * 100)), "start": s.start, "end": s.end, "text": s.text,
            "tokens": list(s.tokens), "temperature": s.temperature or 0.0,
            "avg_logprob": s.avg_logprob if s.avg_logprob is not None else 0.0,
            "compression_ratio": s.compression_ratio if s.compression_ratio is not None else 0.0,
            "no_speech_prob": s.no_speech_prob if s.no_speech_prob is not None else 0.0,
        } for i, s in enumerate(t.segments)]
    if words:
        body["words"] = [{"word": w.word.strip(), "start": w.start, "end": w.end}
                         for s in t.segments for w in s.words]
    body["usage"] = {"type": "duration", "seconds": round(t.duration, 3)}
    return body


def render_text(t: Transcript, fmt: str) -> str:
    """text / srt / vtt bodies (txt is text)."""
    if fmt in ("text", "txt"):
        return t.text + "\n"
    if fmt == "srt":
        return to_srt(t)
    if fmt == "vtt":
        return to_vtt(t)
    raise ValueError(f"unknown text format {fmt!r}")
