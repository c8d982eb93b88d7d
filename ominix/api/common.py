"""What every /v1 route shares: reading and bounding request bodies, resolving a model name
without touching MLX, handing a job to the inference thread (engine/worker.py), waiting on its
events while watching for a gone client, and wording engine errors as OpenAI error bodies."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from ominix import kinds
from ominix.api.app import APIError, check_auth, validation_message
from ominix.engine.pool import ModelLoadError, ModelNotFoundError, ModelRef
from ominix.engine.budget import parse_keep_alive
from ominix.engine.llm.jobs import ContextLengthError, PromptStarted, TokenEvent
from ominix.engine.worker import DEFAULT, Cancelled, Done, Failed, JobStream, QueueFull, RequestTimeout, WorkerStopped

log = logging.getLogger("ominix.api")
auth = [Depends(check_auth)]
FINGERPRINT = "ominix-0.1.0"


MAX_JSON_DEPTH = 64  # far beyond any real request (a json_schema included), far below recursion limits
MAX_MODEL_NAME = 255  # one path component: longer cannot name a model


def json_problem(data) -> str | None:
    """What makes a parsed body unusable however it validates: nesting deeper than MAX_JSON_DEPTH
    (pydantic, jsonschema and the grammar compiler recurse), or a lone surrogate in a string (no
    tokenizer or UTF-8 encoder takes it)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return f"The JSON body is nested too deeply (at most {MAX_JSON_DEPTH} levels)."
        if isinstance(value, dict):
            stack.extend((k, depth) for k in value)
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                return (f"The JSON body has a lone surrogate ({value[e.start]!r} escaped as \\u"
                        f"{ord(value[e.start]):04x}) in a string: send valid UTF-16 pairs or plain UTF-8.")
    return None


def require_json(request: Request) -> None:
    """JSON routes take only application/json: a page's text/plain or form POST (sent without a
    CORS preflight) never reaches them."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        shown = content_type or "none"
        raise APIError(415, f"Send the request body as JSON with 'Content-Type: application/json' (got {shown}).",
                       code="unsupported_media_type")


async def read_body(request: Request) -> bytes:
    """The whole body within the size limit, chunked or not; a client silent for BODY_TIMEOUT
    seconds gets a 408, one that hangs up is logged in one line."""
    from starlette.requests import ClientDisconnect

    limit = request.app.state.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"Request body too large: {declared} bytes (limit {limit}).", code="request_too_large")
    body = bytearray()
    chunks = request.stream().__aiter__()
    timeout = getattr(request.app.state, "body_timeout", None)
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(chunks.__anext__(), timeout)
            except StopAsyncIteration:
                return bytes(body)
            body += chunk
            if len(body) > limit:
                raise APIError(413, f"Request body too large (limit {limit} bytes).", code="request_too_large")
    except asyncio.TimeoutError:
        raise APIError(408, f"The request body stopped arriving (nothing for {timeout:g}s).",
                       code="request_timeout") from None
    except ClientDisconnect:
        client = request.client
        log.info("client %s disconnected during the upload to %s", f"{client.host}:{client.port}" if client
                 else "?", request.url.path)
        raise APIError(400, "The client disconnected before the request body arrived.") from None


async def read_request(request: Request, schema: type[BaseModel], body: bytes | None = None) -> BaseModel:
    """Read the body within the size limit, parse JSON, validate; every failure is a 4xx."""
    require_json(request)
    if body is None:
        body = await read_body(request)
    try:
        data = json.loads(bytes(body))
    except RecursionError:
        raise APIError(400, f"The JSON body is nested too deeply (at most {MAX_JSON_DEPTH} levels).") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise APIError(400, f"We could not parse the JSON body of your request: {e}") from None
    if not isinstance(data, dict):
        raise APIError(400, "The request body must be a JSON object.")
    problem = json_problem(data)
    if problem:
        raise APIError(400, problem)
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        message, param = validation_message(e.errors())
        raise APIError(400, message, param=param) from None


def servable_ref(request: Request, name: str) -> ModelRef:
    """pool.resolve, then: a directory nobody registered is refused unless --allow-load-paths, and a
    path naming a model already known (`/a/../a/tiny`) is that model, so it is resident once."""
    from ominix import config

    if len(name) > MAX_MODEL_NAME:
        raise APIError(400, f"The model name is too long ({len(name)} characters; at most {MAX_MODEL_NAME}).",
                       param="model", code="invalid_model_name")
    pool = request.app.state.pool
    try:
        ref = pool.resolve(name)
    except ModelNotFoundError as e:
        raise APIError(404, str(e), param="model", code="model_not_found") from None
    if ref.entry is not None:
        return ref
    known = list(pool.available()) + [r.ref for r in pool.resident().values()]
    if any(r.id == ref.id for r in known):
        return ref
    same = [r for r in known if r.path is not None and Path(r.path).resolve() == Path(ref.path).resolve()]
    if same:
        return same[0]
    real = Path(ref.path).resolve()
    if any(real.is_relative_to(root.resolve()) for root in (config.hf_hub_cache(), config.models_dir())):
        return ref
    if not request.app.state.allow_load_paths:
        raise APIError(403, f"The model '{name}' is a directory this server was not started with; clients "
                       "may load catalog, installed and --model models only. Start the server with "
                       "--model PATH, or --allow-load-paths to let clients load any directory.",
                       param="model", code="model_path_not_allowed")
    return ref


async def resolve(request: Request, name: str, kind: str | tuple[str, ...]) -> ModelRef:
    ref = await run_in_threadpool(servable_ref, request, name)
    accepted = (kind,) if isinstance(kind, str) else kind
    if ref.kind not in accepted:
        kind = accepted[0]
        error = kinds.mismatch(name, kinds.KINDS[ref.kind], ASKED[kind])
        raise APIError(400, str(error), param="model", code=error.code)
    return ref


ASKED = {"chat": "chat or text completions", "embedding": "embeddings",
         "asr": "audio transcriptions and translations"}  # what each route asks for


async def bounded_prompt(request: Request, ref: ModelRef, render, chars: int):
    """`render` itself for a small prompt (the worker renders and tokenizes it); for a big one, its
    token ids made off the event loop and the worker; past the context, a 400 (api/prompts.py)."""
    from ominix.api import prompts

    ctx = await run_in_threadpool(prompts.context_length, ref.path)
    prompts.check_chars(ctx, chars)
    if chars <= prompts.PRETOKENIZE_CHARS:
        return render
    try:
        return await prompts.pretokenize(request, ref, render, ctx)
    except APIError:
        raise
    except Exception as e:  # a load failure, a template error: as the worker would report it
        raise engine_error(e) from None


def engine_error(e: BaseException) -> APIError:
    """Map an exception raised on the inference thread to the HTTP error the client sees."""
    if isinstance(e, ModelNotFoundError):
        return APIError(404, str(e), param="model", code="model_not_found")
    if isinstance(e, ModelLoadError):
        return APIError(503, str(e), type="server_error", code="model_unavailable")
    if isinstance(e, MemoryError):
        return APIError(503, "Not enough memory to serve this request.", type="server_error")
    if isinstance(e, ContextLengthError):
        return APIError(400, context_message(e), param=e.param, code=e.code)
    if isinstance(e, ValueError):  # request-shaped problems: template, schema, context, params
        return APIError(400, str(e), param=getattr(e, "param", None), code=getattr(e, "code", None))
    if isinstance(e, RequestTimeout):
        return APIError(504, str(e), type="server_error", code="timeout")
    if isinstance(e, WorkerStopped):
        return APIError(503, str(e), type="server_error", code="server_shutting_down")
    if isinstance(e, Cancelled):  # the client went away; nobody reads this
        return APIError(499, "Request cancelled: the client closed the connection.")
    # Unexpected: the worker has logged the traceback already.
    return APIError(500, f"Inference failed: {type(e).__name__}: {e}", type="server_error")


def context_message(e: ContextLengthError) -> str:
    """OpenAI's wording, which clients (LangChain and others) match on."""
    if e.max_tokens is None:
        return (f"This model's maximum context length is {e.limit} tokens. However, your prompt has "
                f"{e.prompt_tokens} tokens. Please reduce the length of the messages or prompt.")
    return (f"This model's maximum context length is {e.limit} tokens. However, you requested "
            f"{e.prompt_tokens + e.max_tokens} tokens ({e.prompt_tokens} in the prompt, {e.max_tokens} for the "
            "completion). Please reduce the prompt or max_tokens.")


def keep_alive_of(req) -> object:
    value = getattr(req, "keep_alive", None)
    return DEFAULT if value is None else parse_keep_alive(value)


async def start_job(request: Request, model: str, job, keep_alive=DEFAULT) -> tuple[JobStream, PromptStarted | None]:
    """Submit the job and wait for its first event, so errors become proper HTTP statuses."""
    try:
        stream = request.app.state.worker.stream(model, job, keep_alive)
    except QueueFull as e:
        raise APIError(429, str(e), type="requests", code="rate_limit_exceeded") from None
    except WorkerStopped as e:
        raise APIError(503, str(e), type="server_error", code="server_shutting_down") from None
    try:
        first = await stream.__anext__()
    except BaseException:
        stream.cancel()  # the client went away while the request waited
        raise
    if isinstance(first, Failed):
        raise engine_error(first.error)
    return stream, first


async def events_until_done(request: Request, stream: JobStream, watch: bool = True):
    """Iterate a job's events; cancel the job if the client disconnects meanwhile.

    Streaming responses pass watch=False: Starlette already listens for the disconnect and
    cancels the body iterator, whose `finally` cancels the job.
    """

    async def watch_disconnect():
        while not stream.finished:
            if await request.is_disconnected():
                stream.cancel()
                return
            await asyncio.sleep(0.25)

    watcher = asyncio.create_task(watch_disconnect()) if watch else None
    try:
        async for event in stream:
            yield event
    finally:
        if watcher is not None:
            watcher.cancel()
        stream.cancel()


async def final_result(request: Request, stream: JobStream, first):
    """A non-streamed job's value: wait past its events (cancelling it if the client goes) and
    raise its failure as the OpenAI error it maps to."""
    last = first
    if not isinstance(first, Done):
        async for event in events_until_done(request, stream):
            last = event
    if isinstance(last, Failed):
        raise engine_error(last.error)
    return last.result


def sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def sampling_fields(req, logprobs: bool, top_logprobs: int) -> dict:
    fields = {}
    for name in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty",
                 "presence_penalty", "frequency_penalty", "seed"):
        value = getattr(req, name)
        if value is not None:
            fields[name] = value
    if req.logit_bias:
        fields["logit_bias"] = {int(k): v for k, v in req.logit_bias.items()}
    fields["logprobs"] = logprobs
    fields["top_logprobs"] = top_logprobs
    return fields


def usage_body(usage: dict) -> dict:
    prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": usage.get("cached_tokens", 0)}}


def _bytes(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def chat_logprob(event: TokenEvent) -> dict:
    top = [{"token": t, "logprob": lp, "bytes": _bytes(t)} for t, lp in (event.top_logprobs or [])]
    return {"token": event.token_text, "logprob": event.logprob, "bytes": _bytes(event.token_text),
            "top_logprobs": top}
