"""Speech out, in OpenAI's wire format: POST /v1/audio/speech, and voices (list, clone, delete).

`POST /v1/audio/speech` answers with the audio bytes as they are made (chunked), or with SSE events
when `stream_format` is "sse" (`speech.audio.delta` {audio: base64 of the encoded bytes}, then
`speech.audio.done` {usage}). The handler waits for the first audio chunk before it answers, so a
bad voice or an unusable model is still a 400/404 with an OpenAI error body. Encoding (PyAV) runs
in the thread pool, never on the event loop; MLX only runs on the worker.
"""

from __future__ import annotations

import base64
import json
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, field_validator
from starlette.concurrency import run_in_threadpool

from ominix import kinds
from ominix.api.app import APIError
from ominix.api.common import auth, engine_error, read_request, sse, start_job
from ominix.engine.audio import voices
from ominix.engine.audio.encode import FORMATS, MAX_SPEED, MIME, MIN_SPEED, AudioEncoder
from ominix.engine.audio.speak import AudioChunk, CloneVoiceJob, SpeakJob, clip_sample_rate
from ominix.engine.audio.synth import SynthesisOptions, VoiceError
from ominix.engine.pool import ModelNotFoundError, ModelRef
from ominix.engine.worker import Done, Failed

router = APIRouter()
MAX_INPUT_CHARS = 4096  # OpenAI's limit
MAX_CLIP_BYTES = 20 * 1024 * 1024


class VoiceRef(BaseModel):
    id: str


class SpeechRequest(BaseModel):
    model: str
    input: str = Field(max_length=MAX_INPUT_CHARS)
    voice: str | VoiceRef | None = None
    instructions: str | None = Field(default=None, max_length=MAX_INPUT_CHARS)
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(default=1.0, ge=MIN_SPEED, le=MAX_SPEED)
    stream_format: Literal["audio", "sse"] = "audio"
    # OminiX extensions (extra_body): the model's language tag, sampling
    language: str | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    seed: int | None = None

    @field_validator("input")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("input must contain text to speak")
        return v

    def voice_name(self) -> str | None:
        return self.voice.id if isinstance(self.voice, VoiceRef) else self.voice


async def resolve_tts(request: Request, name: str) -> ModelRef:
    try:
        ref = await run_in_threadpool(request.app.state.pool.resolve, name)
    except ModelNotFoundError as e:
        raise APIError(404, str(e), param="model", code="model_not_found") from None
    if ref.kind != "tts":
        error = kinds.mismatch(name, kinds.KINDS[ref.kind], "text to speech")
        raise APIError(400, str(error), param="model", code=error.code)
    return ref


def _options(ref: ModelRef, req: SpeechRequest) -> SynthesisOptions:
    name = req.voice_name()
    cloned = (voices.clone_options(ref.id, name) if name else None) or {"voice": name}
    return SynthesisOptions(
        **cloned, instructions=req.instructions or None, language=req.language, temperature=req.temperature,
        seed=req.seed,
    )  # fmt: skip


@router.post("/v1/audio/speech", dependencies=auth)
async def speech(request: Request):
    req: SpeechRequest = await read_request(request, SpeechRequest)
    ref = await resolve_tts(request, req.model)
    try:
        job = SpeakJob(req.input, await run_in_threadpool(_options, ref, req))
    except VoiceError as e:
        raise APIError(400, str(e), param="input") from None
    stream, first = await start_job(request, ref.id, job)
    if isinstance(first, Done):  # nothing was spoken (the model ended at once)
        first_rate = 24000
    else:
        first_rate = first.sample_rate
    encoder = AudioEncoder(req.response_format, first_rate, speed=req.speed, streaming=True)

    async def events():
        event = first
        try:
            while True:
                if isinstance(event, AudioChunk):
                    yield "audio", await run_in_threadpool(encoder.feed, event.samples)
                elif isinstance(event, Done):
                    yield "audio", await run_in_threadpool(encoder.finish)
                    yield "done", event.result
                    return
                elif isinstance(event, Failed):
                    yield "failed", engine_error(event.error)
                    return
                event = await stream.__anext__()
        finally:
            stream.cancel()

    if req.stream_format == "sse":
        async def body_sse():
            async for what, value in events():
                if what == "audio" and value:
                    yield sse({"type": "speech.audio.delta", "audio": base64.b64encode(value).decode()})
                elif what == "done":
                    yield sse({"type": "speech.audio.done", "usage": value.body()})
                elif what == "failed":
                    yield sse({"type": "error", "error": value.body()})

        return StreamingResponse(body_sse(), media_type="text/event-stream")

    async def body_audio():
        async for what, value in events():
            if what == "audio" and value:
                yield value

    return StreamingResponse(body_audio(), media_type=MIME[req.response_format])


# ---- voices -------------------------------------------------------------------------------------


def _builtin_voices(ref: ModelRef) -> list[str]:
    """Named speakers from config.json (read without loading the model)."""
    try:
        config = json.loads((ref.path / "config.json").read_text())
    except (OSError, ValueError):
        return []
    return sorted((config.get("talker_config") or {}).get("spk_id") or {})


def _clip_rate(ref: ModelRef) -> int:
    return clip_sample_rate(ref.path)


async def _tts_refs(request: Request, model: str | None) -> list[ModelRef]:
    if model:
        return [await resolve_tts(request, model)]
    refs = await run_in_threadpool(request.app.state.pool.available)
    return [r for r in refs if r.kind == "tts"]


@router.get("/v1/audio/voices", dependencies=auth)
async def list_voices(request: Request, model: str | None = None):
    data = []
    for ref in await _tts_refs(request, model):
        data += [{"id": name, "object": "audio.voice", "name": name, "model": ref.id, "type": "builtin"}
                 for name in await run_in_threadpool(_builtin_voices, ref)]  # fmt: skip
        data += [{**meta, "type": "cloned"} for meta in await run_in_threadpool(voices.list_voices, ref.id)]
    return {"object": "list", "data": data}


@router.post("/v1/audio/voices", dependencies=auth)
async def create_voice(request: Request):
    try:
        form = await request.form(max_part_size=MAX_CLIP_BYTES)
    except Exception as e:
        raise APIError(400, f"expected a multipart form (model, name, audio_sample): {e}") from None
    # fields: model, name, audio_sample (the clip) and, optional, text: the clip's transcript, which
    # makes the voice clone in context (Qwen3-TTS Base: the clip's codes + transcript in the prompt)
    model, name = form.get("model"), form.get("name")
    clip = next((form.get(k) for k in ("audio_sample", "audio", "file") if form.get(k) is not None), None)
    if not isinstance(model, str) or not model:
        raise APIError(400, "missing form field 'model'", param="model")
    if not isinstance(name, str):
        raise APIError(400, "missing form field 'name'", param="name")
    if clip is None or isinstance(clip, str):
        raise APIError(400, "missing the reference clip: upload it as form file 'audio_sample'", param="audio_sample")
    text = form.get("text") if isinstance(form.get("text"), str) else None
    ref = await resolve_tts(request, model)
    data = await clip.read()
    try:
        voices.check_name(name)
        audio = await run_in_threadpool(voices.decode_clip, data, _clip_rate(ref))
    except VoiceError as e:
        raise APIError(400, str(e), param="audio_sample" if "clip" in str(e) else "name") from None
    text = text.strip() if text and text.strip() else None
    if text is not None and len(text) > MAX_INPUT_CHARS:
        raise APIError(400, f"the transcript 'text' is over {MAX_INPUT_CHARS} characters", param="text")
    stream, first = await start_job(request, ref.id, CloneVoiceJob(audio, text))
    if not isinstance(first, Done):
        raise APIError(500, "voice cloning ended without a result", type="server_error")
    seconds = len(audio) / _clip_rate(ref)
    result = first.result
    meta = await run_in_threadpool(voices.save, ref.id, name, result.vector, seconds, text, result.codes,
                                   result.mode)
    return JSONResponse({**meta, "type": "cloned"})


@router.delete("/v1/audio/voices/{voice_id}", dependencies=auth)
async def delete_voice(voice_id: str, request: Request, model: str | None = None):
    for ref in await _tts_refs(request, model):
        if await run_in_threadpool(voices.delete, ref.id, voice_id):
            return {"id": voice_id, "object": "audio.voice.deleted", "deleted": True}
    raise APIError(404, f"no cloned voice '{voice_id}'", param="voice_id", code="voice_not_found")


__all__ = ["router", "FORMATS"]
