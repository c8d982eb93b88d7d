"""Ollama's API (/api/...), in its wire format: JSON bodies, NDJSON streams (one JSON object per
line, streaming by default), durations in nanoseconds, errors as {"error": "..."}.

The same engine serves /v1 and /api: requests become the same GenerateJob / EmbedJob on the one
inference thread, under the same residency manager (keep_alive with Ollama's semantics), so the
same model under the same seed answers alike through both. Model names are Ollama's (`qwen3:0.6b`:
a catalog alias or a model pulled from an Ollama registry) or any name /v1 accepts.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ominix.api import ollama_info as info
from ominix.api.app import APIError, check_auth
from ominix.api.ollama_jobs import OllamaError, chat_job, embed_inputs, generate_job, options_of, run_chat
from ominix.engine.pool import ModelNotFoundError
from ominix.engine.budget import parse_keep_alive
from ominix.engine.worker import DEFAULT

router = APIRouter()
auth = [Depends(check_auth)]
VERSION = "0.12.0"  # the Ollama API version whose wire format this follows


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def ollama_errors(handler):
    """Answer OllamaError / APIError raised by a route with Ollama's {"error": ...} body."""
    import functools

    @functools.wraps(handler)
    async def wrapped(*args, **kwargs):
        try:
            return await handler(*args, **kwargs)
        except OllamaError as e:
            return error(e.status, e.message)
        except APIError as e:
            return error(e.status, e.message)

    return wrapped


async def body_of(request: Request) -> dict:
    limit = request.app.state.max_body_bytes
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise OllamaError(413, f"request body too large (limit {limit} bytes)")
    if not raw.strip():
        return {}
    try:
        data = json.loads(bytes(raw))
    except (ValueError, UnicodeDecodeError) as e:
        raise OllamaError(400, f"invalid JSON: {e}") from None
    if not isinstance(data, dict):
        raise OllamaError(400, "the request body must be a JSON object")
    return data


def model_name(body: dict) -> str:
    name = body.get("model") or body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise OllamaError(400, "model is required")
    return name.strip()


# A quantization suffix on an Ollama tag (`qwen3:8b-q4_K_M`, `llama3.2:1b-instruct-fp16`): the
# catalog entry for the bare tag serves it (its own quantization; /api/show says which).
_TAG_VARIANT = re.compile(r"^(?P<base>[^:]+:[^-]+)(?:-instruct|-chat|-it)?-(?:q\d\w*|fp16|f16|bf16|fp32|[48]bit)$",
                          re.IGNORECASE)  # fmt: skip


def candidates(name: str) -> list[str]:
    """The names to try for an Ollama model name, most exact first."""
    out = [name, name.removesuffix(":latest")]
    if m := _TAG_VARIANT.match(name.removeprefix("ollama:")):
        out.append(m.group("base"))
    return list(dict.fromkeys(out))


async def resolve(request: Request, name: str, kind: str | None = None):
    pool = request.app.state.pool
    for candidate in candidates(name):
        try:
            ref = await run_in_threadpool(pool.resolve, candidate)
            break
        except ModelNotFoundError:
            continue
    else:
        raise OllamaError(404, f"model '{name}' not found")
    if kind is not None and ref.kind != kind:
        what = {"chat": "does not support generate", "embedding": "does not support embeddings"}
        raise OllamaError(400, f'"{name}" {what[kind]}')
    return ref


def keep_alive_of(body: dict):
    value = body.get("keep_alive")
    if value is None:
        return DEFAULT
    try:
        return parse_keep_alive(value)
    except ValueError as e:
        raise OllamaError(400, f"invalid keep_alive: {e}") from None


# ---- version, listing, show, ps -------------------------------------------------------------


@router.get("/")
@router.head("/")
async def root():
    return PlainTextResponse("Ollama is running")


@router.get("/api/version")
@router.head("/api/version")
async def version():
    return {"version": VERSION}


def _entry(ref) -> dict:
    path = ref.path
    return {"name": ref.id, "model": ref.id, "modified_at": info.rfc3339(path.stat().st_mtime),
            "size": info.size_of(path), "digest": info.digest_of(ref.id, path),
            "details": info.details(path)}  # fmt: skip


@router.get("/api/tags", dependencies=auth)
async def tags(request: Request):
    def listing():
        refs = [r for r in request.app.state.pool.available() if r.kind in ("chat", "embedding")]
        return [_entry(r) for r in refs]

    return {"models": await run_in_threadpool(listing)}


@router.post("/api/show", dependencies=auth)
@ollama_errors
async def show(request: Request):
    ref = await resolve(request, model_name(await body_of(request)))

    def describe():
        template, parameters, system, license_text = info.template_and_params(ref.path)
        out = {"modelfile": f"FROM {ref.path}\n", "parameters": parameters, "template": template,
               "details": info.details(ref.path), "model_info": info.model_info(ref.path),
               "capabilities": info.capabilities(ref.kind, template),
               "modified_at": info.rfc3339(ref.path.stat().st_mtime)}  # fmt: skip
        if system:
            out["system"] = system
        if license_text:
            out["license"] = license_text
        return out

    return await run_in_threadpool(describe)


@router.get("/api/ps", dependencies=auth)
async def ps(request: Request):
    import mlx.core as mx  # the device type only; no arrays

    on_gpu = mx.default_device().type == mx.DeviceType.gpu
    models = []
    for resident in request.app.state.pool.resident().values():
        ref = resident.ref
        # Never expiring: Ollama shows a far-future time for keep_alive -1.
        expires = resident.expires_at if resident.expires_at is not None else 2 ** 35
        models.append({"name": ref.id, "model": ref.id, "size": resident.nbytes,
                       "digest": info.digest_of(ref.id, ref.path), "details": info.details(ref.path),
                       "expires_at": info.rfc3339(expires),
                       "size_vram": resident.nbytes if on_gpu else 0,
                       "context_length": resident.context_length or 0})  # fmt: skip
    return {"models": models}


# ---- delete, copy, pull ---------------------------------------------------------------------


@router.delete("/api/delete", dependencies=auth)
@ollama_errors
async def delete(request: Request):
    from ominix.hub import ollama, store

    name = model_name(await body_of(request))
    ref = await resolve(request, name)
    pool, worker = request.app.state.pool, request.app.state.worker
    await asyncio.to_thread(worker.call, lambda: pool.unload(ref.id))

    def remove():
        if ollama.local_model(ref.id) is not None:
            return ollama.remove(ref.id)
        return store.remove(name)

    try:
        await run_in_threadpool(remove)
    except Exception as e:  # the store refuses what it does not own (a folder given by path)
        raise OllamaError(400, f"cannot delete '{name}': {e}") from None
    return JSONResponse(None, status_code=200)


@router.post("/api/copy", dependencies=auth)
@ollama_errors
async def copy(request: Request):
    from ominix.hub import ollama

    body = await body_of(request)
    source, destination = body.get("source"), body.get("destination")
    if not isinstance(source, str) or not isinstance(destination, str) or not source or not destination:
        raise OllamaError(400, "source and destination are required")
    ref = await resolve(request, source)
    if ollama.local_model(ref.id) is None:
        raise OllamaError(400, f"'{source}' is not a model pulled from an Ollama registry; only "
                               "those can be copied")  # fmt: skip
    try:
        await run_in_threadpool(ollama.copy, ref.id, destination)
    except ollama.OllamaNameError as e:
        raise OllamaError(400, str(e)) from None
    return JSONResponse(None, status_code=200)


@router.post("/api/pull", dependencies=auth)
@ollama_errors
async def pull(request: Request):
    from ominix.hub import ollama

    body = await body_of(request)
    name = model_name(body)
    try:
        ollama.parse_name(name)
    except ollama.OllamaNameError as e:
        raise OllamaError(400, str(e)) from None
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()

    def run():
        try:
            ollama.pull(name, insecure=bool(body.get("insecure")),
                        on_event=lambda e: loop.call_soon_threadsafe(events.put_nowait, e))
        except Exception as e:  # DownloadError and friends: their message is the answer
            loop.call_soon_threadsafe(events.put_nowait, {"error": str(e)})
        loop.call_soon_threadsafe(events.put_nowait, None)

    task = asyncio.get_running_loop().run_in_executor(None, run)

    async def lines():
        while (event := await events.get()) is not None:
            yield json.dumps(event) + "\n"
        await task

    if body.get("stream", True):
        return StreamingResponse(lines(), media_type="application/x-ndjson")
    last = None
    async for line in lines():
        last = json.loads(line)
    if last is None or "error" in last:
        message = (last or {}).get("error", "pull failed")
        raise OllamaError(404 if "does not exist" in message else 500, message)
    return last


# ---- chat, generate, embed ------------------------------------------------------------------


@router.post("/api/chat", dependencies=auth)
@ollama_errors
async def chat(request: Request):
    body = await body_of(request)
    name = model_name(body)
    ref = await resolve(request, name, "chat")
    messages = body.get("messages")
    if messages is not None and not isinstance(messages, list):
        raise OllamaError(400, "messages must be a list")
    job, context = chat_job(body, options_of(body))
    return await run_chat(request, ref, name, body, job, context, keep_alive_of(body), chat=True,
                          empty=not messages)  # fmt: skip


@router.post("/api/generate", dependencies=auth)
@ollama_errors
async def generate(request: Request):
    body = await body_of(request)
    name = model_name(body)
    ref = await resolve(request, name, "chat")
    job, context = generate_job(body, options_of(body))
    return await run_chat(request, ref, name, body, job, context, keep_alive_of(body), chat=False,
                          empty=not body.get("prompt"))  # fmt: skip


async def _embed(request: Request, body: dict, inputs: list[str]):
    from ominix.api.common import final_result, start_job
    from ominix.engine.embed import EmbedJob

    name = model_name(body)
    ref = await resolve(request, name, "embedding")
    started = time.perf_counter()
    was_resident = ref.id in request.app.state.pool.resident()
    dimensions = body.get("dimensions")
    stream, first = await start_job(request, ref.id, EmbedJob(inputs, dimensions), keep_alive_of(body))
    vectors, tokens = await final_result(request, stream, first)
    resident = request.app.state.pool.resident().get(ref.id)
    load = 0 if was_resident or resident is None else int(resident.load_seconds * 1e9)
    return [[float(x) for x in v] for v in vectors], tokens, load, int((time.perf_counter() - started) * 1e9)


@router.post("/api/embed", dependencies=auth)
@ollama_errors
async def embed(request: Request):
    body = await body_of(request)
    vectors, tokens, load, total = await _embed(request, body, embed_inputs(body.get("input")))
    return {"model": model_name(body), "embeddings": vectors, "total_duration": total,
            "load_duration": load, "prompt_eval_count": tokens}


@router.post("/api/embeddings", dependencies=auth)
@ollama_errors
async def embeddings(request: Request):
    body = await body_of(request)
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise OllamaError(400, "prompt must be a string")
    vectors, _, _, _ = await _embed(request, body, [prompt])
    return {"embedding": vectors[0]}
