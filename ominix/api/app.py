"""The FastAPI application: errors as OpenAI error bodies, API-key auth, CORS, body-size limit, and
the guard against web pages and rebinding DNS names (api/guard.py).

`create_app()` wires a ModelPool and the Worker (the one inference thread: stepped jobs, continuous batching)
into the OpenAI routes (api/openai/) and GET /metrics (api/metrics.py). The worker starts with the
app; the `preload` models load at start and stay resident (keep_alive forever).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ominix.engine.pool import ModelPool
from ominix.engine.worker import Worker

log = logging.getLogger("ominix.api")

MAX_BODY_BYTES = 32 * 1024 * 1024


class APIError(Exception):
    """An error answered with OpenAI's body: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        message = hide_paths(message)
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict:
        """The inner object of OpenAI's error body; also what a stream sends when it fails midway."""
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.type, self.param, self.code)


_ABSOLUTE = re.compile(r"(?<![\w.~:/-])/[^\s'\"`,;()]+")


def hide_paths(message: str) -> str:
    """Absolute paths of this machine's files become `…/name` in messages sent to clients: the file
    name helps, where the server keeps its models is nobody else's business."""

    def short(match: re.Match) -> str:
        path = match.group(0).rstrip(".:")
        tail = match.group(0)[len(path):]
        if not (os.path.exists(path) or os.path.exists(os.path.dirname(path))):
            return match.group(0)  # not a path here (a route, a pattern): leave it
        return "…/" + os.path.basename(path.rstrip("/")) + tail

    return _ABSOLUTE.sub(short, message)


def error_response(status: int, message: str, type: str = "invalid_request_error",
                   param: str | None = None, code: str | None = None, headers=None) -> JSONResponse:
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def validation_message(errors: list[dict]) -> tuple[str, str | None]:
    """pydantic errors -> one readable sentence and the offending parameter."""
    parts, param = [], None
    for err in errors[:3]:
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body",)]
        # Union members add their type name to the location; drop those for readability.
        loc = [x for x in loc if not x.startswith(("list[", "str", "int", "function-", "literal["))]
        where = ".".join(loc)
        param = param or (loc[0] if loc else None)
        msg = err.get("msg", "invalid value")
        parts.append(f"{where}: {msg}" if where else msg)
    if len(errors) > 3:
        parts.append(f"and {len(errors) - 3} more problems")
    return "Invalid request: " + "; ".join(parts), param


def create_app(
    pool: ModelPool | None = None,
    *,
    api_key: str | None = None,
    cors_origins: list[str] | None = None,
    preload: list[str] | tuple = (),
    max_body_bytes: int = MAX_BODY_BYTES,
    max_batch: int = 32,
    max_queue: int = 256,
    request_timeout: float | None = None,
    prompt_cache_bytes: int = 1 << 30,
    host: str = "127.0.0.1",
    allowed_hosts: list[str] | None = None,
    allow_load_paths: bool = False,
    metrics_open: bool = False,
    body_timeout: float | None = None,
) -> FastAPI:
    """max_batch: sequences decoded together per model; max_queue: requests waiting beyond that
    before new ones get 429; request_timeout: seconds before a request is stopped (504);
    prompt_cache_bytes: memory for reusable prompt prefixes (0 disables the prompt cache);
    host: the bound address (the Host header must name it, a loopback name or `allowed_hosts`);
    allow_load_paths: clients may load any checkpoint directory they name (else only catalog,
    installed and registered models); metrics_open: /metrics needs no key; body_timeout: seconds of
    silence before a request body read gives up (408; api/serving.py BODY_TIMEOUT by default)."""
    from ominix.api.guard import Guard
    from contextlib import asynccontextmanager

    from ominix.api import metrics as metrics_routes
    from ominix.api import ollama as ollama_routes
    from ominix.api.openai import ROUTE_MODULES

    pool = pool or ModelPool()
    metrics = metrics_routes.Metrics()
    worker = Worker(pool, max_batch=max_batch, max_queue=max_queue, request_timeout=request_timeout,
                          prompt_cache_bytes=prompt_cache_bytes, metrics=metrics)
    metrics.attach(worker, pool)
    api_key = api_key if api_key is not None else (os.environ.get("OMINIX_API_KEY") or None)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        for name in preload:
            try:
                ref = await asyncio.to_thread(pool.resolve, name)
                future = await asyncio.to_thread(worker.call, lambda ref=ref: pool.start_load(ref, None))
                await asyncio.wrap_future(future)
                log.info("loaded %s", name)
            except Exception as e:  # keep serving: requests for it get a 503 that says why
                log.error("could not load %s: %s", name, e)
        yield
        worker.stop()

    app = FastAPI(title="OminiX", version="0.1.0", lifespan=lifespan)
    app.state.pool = pool
    app.state.worker = worker
    app.state.api_key = api_key
    app.state.max_body_bytes = max_body_bytes
    app.state.metrics = metrics
    app.state.allow_load_paths = allow_load_paths
    from ominix.api.serving import BODY_TIMEOUT

    app.state.body_timeout = BODY_TIMEOUT if body_timeout is None else body_timeout
    app.add_middleware(_CountRequests, metrics=metrics)

    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            allow_credentials="*" not in cors_origins,
        )

    # Added last, so it runs first: nothing reaches a route (or CORS) from a foreign Host or Origin.
    app.add_middleware(Guard, host=host, allowed_hosts=allowed_hosts, cors_origins=cors_origins,
                       api_key=api_key, metrics_open=metrics_open)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        message, param = validation_message(exc.errors())
        return error_response(400, message, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            message = f"Unknown route: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return error_response(500, f"Internal error: {type(exc).__name__}", type="server_error")

    for routes in ROUTE_MODULES:  # the OpenAI /v1 routes (api/openai/)
        app.include_router(routes.router)
    app.include_router(metrics_routes.router)
    app.include_router(ollama_routes.router)  # Ollama's /api routes, beside /v1
    return app


class _CountRequests:
    """ASGI middleware counting responses by route template and status (streams included)."""

    def __init__(self, app, metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = {"code": 500}

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(route, str(status["code"])).inc()


def check_auth(request: Request) -> None:
    """FastAPI dependency: with an API key configured, require `Authorization: Bearer <key>`."""
    key = request.app.state.api_key
    if not key:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
        raise APIError(
            401,
            "Incorrect API key provided." if header else "Missing API key: send 'Authorization: Bearer <key>'.",
            code="invalid_api_key",
        )
