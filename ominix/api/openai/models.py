"""GET /health, /v1/models, /v1/ps and explicit loading and unloading of models."""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from ominix.api.app import APIError
from ominix.api.schemas import LoadRequest
from ominix.api.common import (
    auth, read_body, read_request, servable_ref,
)
from ominix.engine.pool import ModelLoadError, ModelRef
from ominix.engine.budget import parse_keep_alive
from ominix.engine.worker import DEFAULT

log = logging.getLogger("ominix.api")
router = APIRouter()


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
    return await run_in_threadpool(servable_ref, request, model_id)


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
