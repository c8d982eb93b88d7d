"""The /v1 routes, in OpenAI's wire format: models, chat completions, completions, embeddings.

Handlers validate the request (api/schemas.py), resolve the model name without touching MLX, then
hand a job to the inference thread (engine/worker.py) and turn its plain-Python events into
OpenAI responses or SSE chunks. Reasoning / tool-call parsing (engine/chat.py) is string work and
runs here, per choice, incrementally for streams.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from ominix import kinds
from ominix.api.app import APIError, check_auth, validation_message
from ominix.api.prompts import message_chars
from ominix.api.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, LoadRequest
from ominix.engine.llm.chat import ChatOutputParser, Delta, build_chat_prompt, prompt_opens_reasoning
from ominix.engine.pool import ModelLoadError, ModelNotFoundError, ModelRef, parse_keep_alive
from ominix.engine.llm.jobs import ChoiceDone, ContextLengthError, GenerateJob, PromptStarted, TokenEvent
from ominix.engine.worker import DEFAULT, Cancelled, Done, Failed, JobStream, QueueFull, RequestTimeout, WorkerStopped

log = logging.getLogger("ominix.api")
router = APIRouter()
auth = [Depends(check_auth)]
FINGERPRINT = "ominix-0.1.0"


# ---- plumbing -----------------------------------------------------------------------------


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


def _servable_ref(request: Request, name: str) -> ModelRef:
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


async def resolve(request: Request, name: str, kind: str) -> ModelRef:
    ref = await run_in_threadpool(_servable_ref, request, name)
    if ref.kind != kind:
        error = kinds.mismatch(name, kinds.KINDS[ref.kind], ASKED[kind])
        raise APIError(400, str(error), param="model", code=error.code)
    return ref


ASKED = {"chat": "chat or text completions", "embedding": "embeddings"}  # what each route asks for


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


# ---- models -------------------------------------------------------------------------------


@router.get("/health")
async def health(request: Request):
    import mlx.core as mx  # reading a counter; no arrays are touched

    pool = request.app.state.pool
    worker = request.app.state.worker
    return {"status": "ok", "loaded": sorted(pool.resident()), "loading": pool.loading(),
            "queue_depth": worker.queue_depth, "running_sequences": worker.running_sequences,
            "running_jobs": worker.running_jobs,
            "active_memory_bytes": mx.get_active_memory(),
            "prompt_cache_bytes": worker.prompt_cache.nbytes}


def _expiry(resident) -> str | None:
    if resident.expires_at is None:
        return None
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(resident.expires_at))
    except (TypeError, ValueError, OverflowError, OSError):
        return None  # forever (None), or beyond any clock: one value must not break the listing


def model_card(ref: ModelRef, resident) -> dict:
    try:
        created = int(ref.path.stat().st_mtime)
    except OSError:
        created = 0
    card = {"id": ref.id, "object": "model", "created": created, "owned_by": "ominix",
            "kind": ref.kind, "loaded": resident is not None}
    if resident is not None:
        card["memory_bytes"] = resident.nbytes
        card["expires_at"] = _expiry(resident)  # None: stays loaded
        card["keep_alive"] = resident.keep_alive
        card["active_requests"] = resident.active
        if resident.context_length:
            card["context_length"] = resident.context_length
    return card


@router.get("/v1/models", dependencies=auth)
async def list_models(request: Request):
    pool = request.app.state.pool
    refs = await run_in_threadpool(pool.available)
    resident = pool.resident()
    ids = {r.id for r in refs}
    cards = [model_card(r, resident.get(r.id)) for r in refs]
    cards += [model_card(r.ref, r) for i, r in resident.items() if i not in ids]
    return {"object": "list", "data": cards}


@router.get("/v1/ps", dependencies=auth)
async def running_models(request: Request):
    """What is loaded now (like `ollama ps`), with the memory budget it lives in."""
    pool = request.app.state.pool
    resident = pool.resident()
    return {"object": "list", "data": [model_card(r.ref, r) for r in resident.values()],
            "loading": pool.loading(), "memory_budget_bytes": pool.memory_budget,
            "resident_bytes": sum(r.nbytes for r in resident.values())}


async def _resolve_any(request: Request, model_id: str) -> ModelRef:
    return await run_in_threadpool(_servable_ref, request, model_id)


@router.post("/v1/models/{model_id:path}/load", dependencies=auth)
async def load_model(model_id: str, request: Request):
    """Load a model now (optionally with {"keep_alive": ...}); returns its card once resident."""
    raw = await read_body(request)  # chunked bodies too: no Content-Length does not mean empty
    body = (await read_request(request, LoadRequest, raw)).model_dump() if raw.strip() else {}
    ref = await _resolve_any(request, model_id)
    keep_alive = DEFAULT if body.get("keep_alive") is None else parse_keep_alive(body["keep_alive"])
    worker = request.app.state.worker
    pool = request.app.state.pool
    try:
        # Room is made on the inference thread; the weights load on the loader thread.
        future = await asyncio.to_thread(worker.call, lambda: pool.start_load(ref, keep_alive))
        resident = await asyncio.wrap_future(future)
    except ModelLoadError as e:
        raise APIError(503, str(e), type="server_error", code="model_unavailable") from None
    if keep_alive != DEFAULT:
        resident.keep_alive = keep_alive
        resident.expires_at = None if keep_alive is None else time.time() + keep_alive
    return model_card(ref, resident)


@router.post("/v1/models/{model_id:path}/unload", dependencies=auth)
async def unload_model(model_id: str, request: Request):
    """Unload a model now, or as soon as its running requests finish."""
    ref = await _resolve_any(request, model_id)
    pool = request.app.state.pool

    def unload():
        resident = pool.lookup(ref.id)
        if resident is None:
            return "not_loaded"
        if resident.active:
            resident.keep_alive, resident.expires_at = 0.0, time.time()  # as soon as it is idle
            return "pending"
        return "unloaded" if pool.unload(ref.id) else "not_loaded"

    status = await asyncio.to_thread(request.app.state.worker.call, unload)
    return {"id": ref.id, "object": "model", "status": status}


@router.get("/v1/models/{model_id:path}", dependencies=auth)
async def get_model(model_id: str, request: Request):
    ref = await _resolve_any(request, model_id)
    return model_card(ref, request.app.state.pool.resident().get(ref.id))


# ---- chat completions -----------------------------------------------------------------------


@router.post("/v1/chat/completions", dependencies=auth)
async def chat_completions(request: Request):
    req: ChatCompletionRequest = await read_request(request, ChatCompletionRequest)
    ref = await resolve(request, req.model, "chat")
    messages = [m.model_dump(exclude_none=True) for m in req.messages]
    use_tools = bool(req.tools) and req.tool_choice != "none"
    tools = [t.model_dump(exclude_none=True) for t in req.tools] if use_tools else None
    template_kwargs = req.chat_template_kwargs
    response_format = None
    if req.response_format and req.response_format.type != "text":
        response_format = req.response_format.model_dump(by_alias=True, exclude_none=True)
    parse_tools = use_tools and response_format is None
    if req.tool_choice not in (None, "auto", "none") and not req.tools:
        raise APIError(400, "tool_choice requires tools to be given", param="tool_choice")
    if use_tools and req.tool_choice is not None and req.tool_choice != "auto":
        # "required" or {"type": "function", "function": {"name": ...}}: decode exactly one call.
        name = None if req.tool_choice == "required" else req.tool_choice.function.get("name")
        if req.tool_choice != "required" and not name:
            raise APIError(400, "tool_choice.function.name is required", param="tool_choice")
        response_format = {"type": "tool_call", "tools": tools, "name": name}
        parse_tools = True

    def prompt(tokenizer):
        return build_chat_prompt(tokenizer, messages, tools, template_kwargs)

    job = GenerateJob(
        prompts=[await bounded_prompt(request, ref, prompt, message_chars(messages, tools))],
        sampling=sampling_fields(req, req.logprobs, req.top_logprobs or 0),
        max_tokens=req.token_limit(),
        stop=req.stop_list(),
        n=req.n,
        response_format=response_format,
    )
    stream, started = await start_job(request, ref.id, job, keep_alive_of(req))
    meta = {
        "id": "chatcmpl-" + uuid.uuid4().hex[:24],
        "created": int(time.time()),
        "model": req.model,
        "system_fingerprint": FINGERPRINT,
    }
    in_reasoning = prompt_opens_reasoning(started.text)
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        body = chat_stream(request, stream, started, meta, req, parse_tools, in_reasoning, include_usage)
        return StreamingResponse(body, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return await chat_response(request, stream, started, meta, req, parse_tools, in_reasoning)


def _message_from(deltas: list[Delta]) -> dict:
    content = "".join(d.content for d in deltas if d.content is not None)
    reasoning = "".join(d.reasoning for d in deltas if d.reasoning is not None)
    calls = [d.tool_call for d in deltas if d.tool_call is not None]
    message = {"role": "assistant", "content": content or (None if calls else "")}
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ]
    return message


async def chat_response(request, stream, started, meta, req, parse_tools, in_reasoning):
    parsers: dict[int, ChatOutputParser] = {}
    deltas: dict[int, list[Delta]] = {}
    logprobs: dict[int, list] = {}
    finish: dict[int, str] = {}
    usage = None
    async for event in events_until_done(request, stream):
        if isinstance(event, TokenEvent):
            parser = parsers.setdefault(event.choice, ChatOutputParser(parse_tools, in_reasoning=in_reasoning))
            deltas.setdefault(event.choice, []).extend(parser.feed(event.text))
            if req.logprobs and not event.final and event.logprob is not None:
                logprobs.setdefault(event.choice, []).append(chat_logprob(event))
        elif isinstance(event, ChoiceDone):
            parser = parsers.setdefault(event.choice, ChatOutputParser(parse_tools, in_reasoning=in_reasoning))
            deltas.setdefault(event.choice, []).extend(parser.finish())
            finish[event.choice] = "tool_calls" if parser.tool_calls else event.finish_reason
        elif isinstance(event, Failed):
            raise engine_error(event.error)
        elif isinstance(event, Done):
            usage = event.result
    choices = []
    for i in sorted(finish):
        choices.append({
            "index": i,
            "message": _message_from(deltas.get(i, [])),
            "logprobs": {"content": logprobs.get(i, [])} if req.logprobs else None,
            "finish_reason": finish[i],
        })
    return {**meta, "object": "chat.completion", "choices": choices,
            "usage": usage_body(usage)}


def _chunk_delta(d: Delta, tool_index: int) -> dict:
    if d.content is not None:
        return {"content": d.content}
    if d.reasoning is not None:
        return {"reasoning_content": d.reasoning}
    c = d.tool_call
    return {"tool_calls": [{"index": tool_index, "id": c.id, "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments}}]}


async def chat_stream(request, stream, started, meta, req, parse_tools, in_reasoning, include_usage):
    base = {**meta, "object": "chat.completion.chunk"}
    extra = {"usage": None} if include_usage else {}

    def chunk(index, delta, finish=None, logprobs=None):
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return sse({**base, "choices": [choice], **extra})

    parsers: dict[int, ChatOutputParser] = {}
    pending_logprobs: dict[int, list] = {}
    tool_counts: dict[int, int] = {}

    def emit(index, deltas):
        out = []
        for d in deltas:
            lp = pending_logprobs.pop(index, None)
            out.append(chunk(index, _chunk_delta(d, tool_counts.get(index, 0)),
                             logprobs={"content": lp} if lp else None))
            if d.tool_call is not None:
                tool_counts[index] = tool_counts.get(index, 0) + 1
        return out

    try:
        async for event in events_until_done(request, stream, watch=False):
            if isinstance(event, TokenEvent):
                i = event.choice
                if i not in parsers:
                    parsers[i] = ChatOutputParser(parse_tools, in_reasoning=in_reasoning)
                    yield chunk(i, {"role": "assistant", "content": ""})
                if req.logprobs and not event.final and event.logprob is not None:
                    pending_logprobs.setdefault(i, []).append(chat_logprob(event))
                for text in emit(i, parsers[i].feed(event.text)):
                    yield text
            elif isinstance(event, ChoiceDone):
                i = event.choice
                parser = parsers.setdefault(i, ChatOutputParser(parse_tools, in_reasoning=in_reasoning))
                for text in emit(i, parser.finish()):
                    yield text
                lp = pending_logprobs.pop(i, None)
                reason = "tool_calls" if parser.tool_calls else event.finish_reason
                yield chunk(i, {}, reason, {"content": lp} if lp else None)
            elif isinstance(event, Failed):
                if isinstance(event.error, Cancelled):
                    return
                err = engine_error(event.error)
                yield sse({"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}})
                return
            elif isinstance(event, Done):
                if include_usage:
                    u = event.result
                    yield sse({**base, "choices": [],
                               "usage": usage_body(u)})
        yield "data: [DONE]\n\n"
    finally:
        stream.cancel()


# ---- text completions -----------------------------------------------------------------------


@router.post("/v1/completions", dependencies=auth)
async def completions(request: Request):
    req: CompletionRequest = await read_request(request, CompletionRequest)
    if req.suffix:
        raise APIError(400, "'suffix' (fill-in-the-middle) is not supported.", param="suffix",
                       code="unsupported_parameter")
    if req.best_of is not None and req.best_of != req.n:
        raise APIError(400, "'best_of' is not supported (other than equal to n).", param="best_of",
                       code="unsupported_parameter")
    ref = await resolve(request, req.model, "chat")
    want_logprobs = req.logprobs is not None
    prompts = [p if not isinstance(p, str) else await bounded_prompt(request, ref, lambda tok, p=p: p, len(p))
               for p in req.prompts()]
    job = GenerateJob(
        prompts=prompts,
        sampling=sampling_fields(req, want_logprobs, req.logprobs or 0),
        max_tokens=req.max_tokens,
        stop=req.stop_list(),
        n=req.n,
        echo_logprobs=req.echo and want_logprobs,
    )
    stream, started = await start_job(request, ref.id, job, keep_alive_of(req))
    meta = {"id": "cmpl-" + uuid.uuid4().hex[:24], "created": int(time.time()), "model": req.model,
            "system_fingerprint": FINGERPRINT}
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        body = completion_stream(request, stream, started, meta, req, include_usage)
        return StreamingResponse(body, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return await completion_response(request, stream, started, meta, req)


class _LegacyLogprobs:
    """The completions API's logprobs object, grown token by token."""

    def __init__(self):
        self.tokens, self.token_logprobs, self.top_logprobs, self.text_offset = [], [], [], []
        self.offset = 0

    def add(self, token_text: str, logprob, top) -> None:
        self.tokens.append(token_text)
        self.token_logprobs.append(logprob)
        self.top_logprobs.append(dict(top) if top is not None else None)
        self.text_offset.append(self.offset)
        self.offset += len(token_text)

    def body(self) -> dict:
        return {"tokens": self.tokens, "token_logprobs": self.token_logprobs,
                "top_logprobs": self.top_logprobs, "text_offset": self.text_offset}


def _echo_logprobs(started: PromptStarted) -> _LegacyLogprobs:
    lp = _LegacyLogprobs()
    for text, value in started.prompt_logprobs or []:
        lp.add(text, value, None if value is None else {text: value})
    return lp


async def completion_response(request, stream, started, meta, req):
    n = req.n
    texts: dict[int, list[str]] = {}
    logprobs: dict[int, _LegacyLogprobs] = {}
    finish: dict[int, str] = {}
    prompt_started = {0: started}
    usage = None
    want = req.logprobs is not None

    def first_for(choice):
        texts[choice] = [prompt_started[choice // n].text] if req.echo else []
        logprobs[choice] = _echo_logprobs(prompt_started[choice // n]) if want and req.echo else _LegacyLogprobs()

    async for event in events_until_done(request, stream):
        if isinstance(event, PromptStarted):
            prompt_started[event.prompt] = event
        elif isinstance(event, TokenEvent):
            if event.choice not in texts:
                first_for(event.choice)
            texts[event.choice].append(event.text)
            if want and not event.final:
                logprobs[event.choice].add(event.token_text, event.logprob, event.top_logprobs)
        elif isinstance(event, ChoiceDone):
            if event.choice not in texts:
                first_for(event.choice)
            finish[event.choice] = event.finish_reason
        elif isinstance(event, Failed):
            raise engine_error(event.error)
        elif isinstance(event, Done):
            usage = event.result
    choices = [{"index": i, "text": "".join(texts[i]), "logprobs": logprobs[i].body() if want else None,
                "finish_reason": finish[i]} for i in sorted(finish)]
    return {**meta, "object": "text_completion", "choices": choices,
            "usage": usage_body(usage)}


async def completion_stream(request, stream, started, meta, req, include_usage):
    base = {**meta, "object": "text_completion"}
    extra = {"usage": None} if include_usage else {}
    n = req.n
    want = req.logprobs is not None
    prompts = {0: started}
    begun: set[int] = set()

    def chunk(index, text, finish=None, logprobs=None):
        choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}
        return sse({**base, "choices": [choice], **extra})

    try:
        async for event in events_until_done(request, stream, watch=False):
            if isinstance(event, PromptStarted):
                prompts[event.prompt] = event
            elif isinstance(event, TokenEvent):
                i = event.choice
                if i not in begun:
                    begun.add(i)
                    if req.echo:
                        p = prompts[i // n]
                        yield chunk(i, p.text, logprobs=_echo_logprobs(p).body() if want else None)
                lp = None
                if want and not event.final:
                    one = _LegacyLogprobs()
                    one.add(event.token_text, event.logprob, event.top_logprobs)
                    lp = one.body()
                if event.text or lp:
                    yield chunk(i, event.text, logprobs=lp)
            elif isinstance(event, ChoiceDone):
                yield chunk(event.choice, "", event.finish_reason)
            elif isinstance(event, Failed):
                if isinstance(event.error, Cancelled):
                    return
                err = engine_error(event.error)
                yield sse({"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}})
                return
            elif isinstance(event, Done) and include_usage:
                u = event.result
                yield sse({**base, "choices": [], "usage": usage_body(u)})
        yield "data: [DONE]\n\n"
    finally:
        stream.cancel()


# ---- embeddings -------------------------------------------------------------------------------


@router.post("/v1/embeddings", dependencies=auth)
async def embeddings(request: Request):
    from ominix.engine.embed import EmbedJob

    req: EmbeddingRequest = await read_request(request, EmbeddingRequest)
    ref = await resolve(request, req.model, "embedding")
    stream, first = await start_job(request, ref.id, EmbedJob(req.inputs(), req.dimensions), keep_alive_of(req))
    result = first
    if not isinstance(first, Done):  # EmbedJob emits nothing before its result
        async for event in events_until_done(request, stream):
            result = event
    if isinstance(result, Failed):
        raise engine_error(result.error)
    vectors, tokens = result.result
    data = [{"object": "embedding", "index": i, "embedding": _encode(v, req.encoding_format)}
            for i, v in enumerate(vectors)]
    return JSONResponse({"object": "list", "data": data, "model": req.model,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def _encode(vector: np.ndarray, encoding_format: str):
    if encoding_format == "base64":  # little-endian float32, as OpenAI sends it
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]
