"""POST /v1/audio/transcriptions and /v1/audio/translations, as the official `openai` client sends
them: multipart form (file, model, language, prompt, response_format, temperature,
timestamp_granularities[], stream).

The upload is checked before anything is queued (container, audio stream, first frames decode:
bad audio is a 400 with an OpenAI error body); decoding the rest happens window by window inside
the TranscribeJob on the worker, never on the event loop. `stream=true` answers with the SSE events
the client parses: `transcript.text.delta` per segment as soon as it is decoded, then
`transcript.text.done`. `include[]=logprobs` adds each text token's log-probability ({token,
logprob, bytes}, as the openai client types them) to json bodies and to both event types.
`response_format=diarized_json` is a 400: this build has no speaker-diarization model.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ominix.api.app import APIError
from ominix.api.common import auth, engine_error, events_until_done, final_result, resolve, sse, start_job
from ominix.engine.audio.decode import AudioError, open_audio
from ominix.engine.audio.formats import FORMATS, render_text, to_json, to_verbose_json
from ominix.engine.audio.whisper_tokenizer import language_code
from ominix.engine.job import Done, Failed

router = APIRouter()

TEXT_TYPES = {"text": "text/plain; charset=utf-8", "srt": "text/plain; charset=utf-8",
              "vtt": "text/vtt; charset=utf-8"}


def _bad(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


async def _form(request: Request):
    limit = request.app.state.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"Request body too large: {declared} bytes (limit {limit}).", code="request_too_large")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise _bad("Send the audio as multipart/form-data with a 'file' field.", "file")
    try:
        return await request.form(max_files=1, max_fields=64)
    except Exception as e:  # malformed multipart bodies
        raise _bad(f"We could not parse the multipart body: {e}") from None


def _options(form, translate: bool) -> dict:
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise _bad("Missing required parameter: 'file' (the audio file).", "file")
    model = form.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _bad("Missing required parameter: 'model'.", "model")
    fmt = form.get("response_format") or "json"
    if fmt == "diarized_json":
        raise _bad("response_format 'diarized_json' needs a speaker-diarization model, and this "
                   f"server has none; use one of {', '.join(FORMATS)}.", "response_format",
                   "unsupported_response_format")
    if fmt not in FORMATS:
        raise _bad(f"response_format must be one of {', '.join(FORMATS)}; got '{fmt}'.", "response_format")
    try:
        temperature = float(form.get("temperature") or 0.0)
    except ValueError:
        raise _bad("temperature must be a number between 0 and 1.", "temperature") from None
    if not 0.0 <= temperature <= 1.0:
        raise _bad("temperature must be between 0 and 1.", "temperature")
    language = None
    if not translate:
        try:
            language = language_code(form.get("language") or None)
        except ValueError as e:
            raise _bad(str(e), "language") from None
    granularities = set(form.getlist("timestamp_granularities[]")) | set(form.getlist("timestamp_granularities"))
    unknown = granularities - {"word", "segment"}
    if unknown:
        raise _bad(f"timestamp_granularities takes 'word' and/or 'segment', not {sorted(unknown)}.",
                   "timestamp_granularities")
    include = set(form.getlist("include[]")) | set(form.getlist("include"))
    if include - {"logprobs"}:
        raise _bad(f"include takes 'logprobs', not {sorted(include - {'logprobs'})}.", "include")
    logprobs = "logprobs" in include
    if logprobs and (translate or fmt != "json"):
        raise _bad("include[]=logprobs works with /v1/audio/transcriptions and response_format json.",
                   "include")
    stream = str(form.get("stream") or "false").lower() in ("true", "1")
    if stream and fmt not in ("json", "text"):
        raise _bad("stream=true returns text events; use response_format json or text.", "stream")
    return {"upload": upload, "model": model.strip(), "format": fmt, "temperature": temperature,
            "language": language, "prompt": form.get("prompt") or None,
            "words": "word" in granularities and fmt == "verbose_json",
            "segments": "segment" in granularities or not granularities, "stream": stream,
            "task": "translate" if translate else "transcribe", "logprobs": logprobs,
            "decoding": _decoding(form)}


def _decoding(form) -> dict:
    """Whisper decoding options beyond OpenAI's (the client sends them with extra_body):
    beam_size, patience, length_penalty, condition_on_previous_text."""
    out = {}
    for name, kind, low, high in (("beam_size", int, 1, 16), ("patience", float, 0.01, 10.0),
                                  ("length_penalty", float, 0.0, 10.0)):
        raw = form.get(name)
        if raw in (None, ""):
            continue
        try:
            value = kind(raw)
        except ValueError:
            raise _bad(f"{name} must be a number.", name) from None
        if not low <= value <= high:
            raise _bad(f"{name} must be between {low} and {high}.", name)
        out[name] = value
    cond = form.get("condition_on_previous_text")
    if cond not in (None, ""):
        if str(cond).lower() not in ("true", "false", "1", "0"):
            raise _bad("condition_on_previous_text must be true or false.", "condition_on_previous_text")
        out["condition_on_previous_text"] = str(cond).lower() in ("true", "1")
    return out


async def _audio(request: Request, upload: UploadFile):
    """Open and check the upload off the event loop; AudioError -> 400 with its code."""
    limits = {"max_bytes": request.app.state.max_body_bytes}
    try:
        return await run_in_threadpool(open_audio, upload.file, **limits)
    except AudioError as e:
        raise _bad(f"Invalid audio file '{upload.filename}': {e}", "file", e.code) from None


async def _speech(request: Request, translate: bool):
    from ominix.engine.audio.transcribe import TranscribeJob

    form = await _form(request)
    opts = _options(form, translate)
    ref = await resolve(request, opts["model"], "asr")
    audio = await _audio(request, opts["upload"])
    job = TranscribeJob(audio, language=opts["language"], prompt=opts["prompt"], task=opts["task"],
                        temperature=opts["temperature"], word_timestamps=opts["words"],
                        early_text=opts["stream"], **opts["decoding"])
    try:
        stream, first = await start_job(request, ref.id, job)
    except BaseException:
        audio.close()  # never begun: the job did not take ownership
        raise
    if opts["stream"]:
        return StreamingResponse(_sse(request, stream, first, ref.id, opts["logprobs"]),
                                 media_type="text/event-stream")
    transcript = await final_result(request, stream, first)
    fmt = opts["format"]
    if fmt == "json":
        body = to_json(transcript)
        if opts["logprobs"]:
            tok = _tokenizer(request, ref.id)
            eot = getattr(tok, "eot", 1 << 62)
            body["logprobs"] = _logprobs(request, ref.id, [
                (t, lp) for seg in transcript.segments
                for t, lp in zip([t for t in seg.tokens if t < eot], seg.token_logprobs)])
        return JSONResponse(body)
    if fmt == "verbose_json":
        return JSONResponse(to_verbose_json(transcript, opts["task"], words=opts["words"],
                                            segments=opts["segments"]))
    return PlainTextResponse(render_text(transcript, fmt), media_type=TEXT_TYPES[fmt])


def _logprobs(request, model_id: str, pairs) -> list[dict]:
    """OpenAI's logprobs entries ({token, logprob, bytes}) for (token id, logprob) pairs."""
    tok = _tokenizer(request, model_id)
    if tok is None or not hasattr(tok, "token_bytes"):  # logprobs come from Whisper's decoder
        return []
    out = []
    for token, logprob in pairs:
        if token >= tok.eot:
            continue
        raw = tok.token_bytes(token)
        out.append({"token": raw.decode("utf-8", errors="replace"), "logprob": round(float(logprob), 6),
                    "bytes": list(raw)})
    return out


def _tokenizer(request, model_id: str):
    resident = request.app.state.pool.lookup(model_id)
    model = getattr(resident, "model", None)
    return getattr(model, "tok", None)


async def _sse(request, stream, first, model_id: str, logprobs: bool):
    """transcript.text.delta for each piece of text as soon as it is decoded (a segment when its
    closing timestamp is decoded), then transcript.text.done."""
    from ominix.engine.audio.transcribe import TextEvent

    pieces: list[str] = []
    choices: list[dict] = []

    async def delta(event) -> str:
        text = event.text
        if not pieces:
            text = text.lstrip()
        pieces.append(text)
        body = {"type": "transcript.text.delta", "delta": text}
        if logprobs:
            entries = _logprobs(request, model_id, zip(event.tokens, event.logprobs))
            choices.extend(entries)
            body["logprobs"] = entries
        return sse(body)

    try:
        event = first
        if isinstance(event, TextEvent):
            yield await delta(event)
        if not isinstance(event, (Done, Failed)):
            async for event in events_until_done(request, stream, watch=False):
                if isinstance(event, TextEvent):
                    yield await delta(event)
        if isinstance(event, Failed):  # the status line is sent already: an error event instead
            yield sse({"type": "error", "error": engine_error(event.error).body()})
        elif isinstance(event, Done):
            body = {"type": "transcript.text.done", "text": event.result.text}
            if logprobs:
                body["logprobs"] = choices
            yield sse(body)
    finally:
        stream.cancel()


@router.post("/v1/audio/transcriptions", dependencies=auth)
async def transcriptions(request: Request):
    return await _speech(request, translate=False)


@router.post("/v1/audio/translations", dependencies=auth)
async def translations(request: Request):
    return await _speech(request, translate=True)

