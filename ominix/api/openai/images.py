"""/v1/images/generations and /v1/images/edits in OpenAI's wire format, and /v1/files/... for
images returned as URLs.

The handler validates the request, resolves the model without touching MLX and submits an
ImageJob to the worker (one denoising step per turn). Encoding the finished pixels (PNG / JPEG /
WebP) and decoding uploads run in the thread pool, never on the event loop. Streams send
`image_generation.partial_image` events with decoded previews, then one
`image_generation.completed` per image. URLs point at an in-memory store of recent images.
"""

from __future__ import annotations

import base64
import re
import threading
import time
import uuid
from collections import OrderedDict
from email.parser import BytesParser
from email.policy import HTTP

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field, ValidationError, field_validator
from starlette.concurrency import run_in_threadpool

from ominix import kinds
from ominix.api.app import APIError, check_auth, validation_message
from ominix.api.common import (
    MAX_MODEL_NAME, engine_error, events_until_done, final_result, keep_alive_of, read_body, read_request, sse,
    start_job,
)  # fmt: skip
from ominix.engine.pool import ModelNotFoundError
from ominix.engine.job import Done, Failed

router = APIRouter()
auth = [Depends(check_auth)]
FILE_STORE_BYTES = 256 * 1024 * 1024


class ImageParams(BaseModel):
    """The fields generations and edits share (edits send them as multipart form fields)."""

    prompt: str
    model: str = Field(max_length=MAX_MODEL_NAME)
    n: int = Field(1, ge=1, le=8)
    size: str | None = "auto"
    quality: str | None = None  # accepted, not used: quality is steps here
    response_format: str | None = None
    output_format: str = "png"
    output_compression: int | None = Field(None, ge=0, le=100)
    background: str | None = None
    stream: bool = False
    partial_images: int = Field(0, ge=0, le=3)
    user: str | None = None
    moderation: str | None = None
    style: str | None = None
    keep_alive: str | int | float | None = None
    # local extras
    seed: int | None = Field(None, ge=0)
    steps: int | None = Field(None, ge=1, le=100)
    guidance_scale: float | None = Field(None, ge=0, le=30)
    negative_prompt: str | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("prompt must not be empty")
        return v

    @field_validator("response_format")
    @classmethod
    def _response_format(cls, v):
        if v not in (None, "b64_json", "url"):
            raise ValueError("must be 'b64_json' or 'url'")
        return v

    @field_validator("output_format")
    @classmethod
    def _output_format(cls, v: str) -> str:
        if v not in ("png", "jpeg", "webp"):
            raise ValueError("must be one of 'png', 'jpeg', 'webp'")
        return v

    @field_validator("background")
    @classmethod
    def _background(cls, v):
        if v not in (None, "auto", "opaque"):
            raise ValueError("only 'auto' and 'opaque' are supported (no transparency)")
        return v

    def dimensions(self) -> tuple[int, int] | tuple[None, None]:
        if self.size in (None, "auto"):
            return None, None
        match = re.fullmatch(r"(\d{1,5})x(\d{1,5})", self.size)
        if not match:
            raise APIError(400, f"size must be 'WIDTHxHEIGHT' (e.g. 1024x768) or 'auto', got {self.size!r}",
                           param="size")  # fmt: skip
        return int(match.group(1)), int(match.group(2))


# ---- the URL store --------------------------------------------------------------------------


class FileStore:
    """Recent generated images by id, evicted oldest first beyond a byte budget."""

    def __init__(self, budget: int = FILE_STORE_BYTES):
        self.budget = budget
        self.files: OrderedDict[str, tuple[bytes, str, int]] = OrderedDict()
        self.lock = threading.Lock()

    def put(self, data: bytes, media_type: str) -> str:
        file_id = "file-" + uuid.uuid4().hex[:24]
        with self.lock:
            self.files[file_id] = (data, media_type, int(time.time()))
            while sum(len(d) for d, _, _ in self.files.values()) > self.budget and len(self.files) > 1:
                self.files.popitem(last=False)
        return file_id

    def get(self, file_id: str):
        with self.lock:
            return self.files.get(file_id)


def file_store(request: Request) -> FileStore:
    store = getattr(request.app.state, "image_files", None)
    if store is None:
        store = request.app.state.image_files = FileStore()
    return store


@router.get("/v1/files/{file_id}/content")
async def file_content(file_id: str, request: Request):
    """No API key needed: the id is a random 96-bit name handed only to the requester (like a
    signed URL), so browsers and <img> tags can fetch it."""
    found = file_store(request).get(file_id)
    if found is None:
        raise APIError(404, f"No file with id '{file_id}' (generated images are kept in memory for a while).",
                       param="file_id", code="file_not_found")  # fmt: skip
    data, media_type, _ = found
    return Response(data, media_type=media_type)


@router.get("/v1/files/{file_id}", dependencies=auth)
async def file_object(file_id: str, request: Request):
    found = file_store(request).get(file_id)
    if found is None:
        raise APIError(404, f"No file with id '{file_id}'.", param="file_id", code="file_not_found")
    data, _, created = found
    return {"id": file_id, "object": "file", "bytes": len(data), "created_at": created,
            "filename": file_id + ".img", "purpose": "vision", "status": "processed"}  # fmt: skip


# ---- generation -----------------------------------------------------------------------------


async def resolve_image_model(request: Request, name: str):
    pool = request.app.state.pool
    try:
        ref = await run_in_threadpool(pool.resolve, name)
    except ModelNotFoundError as e:
        raise APIError(404, str(e), param="model", code="model_not_found") from None
    if ref.kind != "image":
        error = kinds.mismatch(name, kinds.KINDS[ref.kind], "image generation")
        raise APIError(400, str(error), param="model", code=error.code)
    return ref


def make_job(params: ImageParams, references: list):
    from ominix.engine.image.job import ImageJob, ImageRequest

    width, height = params.dimensions()
    return ImageJob(ImageRequest(
        prompt=params.prompt, n=params.n, width=width, height=height, steps=params.steps,
        seed=params.seed, guidance=params.guidance_scale, negative_prompt=params.negative_prompt,
        references=references, partial_images=params.partial_images if params.stream else 0,
    ))  # fmt: skip


def encode_all(images, params: ImageParams, result, model: str) -> list[bytes]:
    from ominix.engine.image.output import encode_image

    out = []
    for k, pixels in enumerate(images):
        meta = None
        if result is not None:
            meta = {"prompt": params.prompt, "seed": result.seed + k, "steps": result.steps,
                    "size": f"{result.width}x{result.height}", "model": model,
                    "guidance_scale": result.guidance}  # fmt: skip
        out.append(encode_image(pixels, params.output_format, params.output_compression, meta))
    return out


def usage(result) -> dict:
    return {"input_tokens": result.prompt_tokens,
            "input_tokens_details": {"text_tokens": result.prompt_tokens, "image_tokens": 0},
            "output_tokens": result.image_tokens,
            "total_tokens": result.prompt_tokens + result.image_tokens}  # fmt: skip


async def generate(request: Request, params: ImageParams, references: list):
    from ominix.engine.image.job import PartialImage
    from ominix.engine.image.output import MEDIA_TYPES

    ref = await resolve_image_model(request, params.model)
    stream, first = await start_job(request, ref.id, make_job(params, references), keep_alive_of(params))
    common = {"background": params.background or "opaque", "output_format": params.output_format,
              "quality": params.quality or "auto"}  # fmt: skip

    if params.stream:
        async def events():
            event = first
            try:
                async for event in _chain(first, events_until_done(request, stream, watch=False)):
                    if isinstance(event, PartialImage):
                        (data,) = await run_in_threadpool(encode_all, event.images[:1], params, None, ref.id)
                        yield _event("image_generation.partial_image", data, event.index, common)
                    elif isinstance(event, Done):
                        result = event.result
                        files = await run_in_threadpool(encode_all, result.images, params, result, ref.id)
                        size = f"{result.width}x{result.height}"
                        for data in files:
                            yield _event("image_generation.completed", data, None,
                                         {**common, "size": size, "usage": usage(result)})  # fmt: skip
                    elif isinstance(event, Failed):
                        yield sse({"type": "error", "error": engine_error(event.error).body()})
            finally:
                stream.cancel()

        return StreamingResponse(events(), media_type="text/event-stream")

    result = await final_result(request, stream, first)
    files = await run_in_threadpool(encode_all, result.images, params, result, ref.id)
    if params.response_format == "url":
        store, base = file_store(request), str(request.base_url).rstrip("/")
        media = MEDIA_TYPES[params.output_format]
        data = [{"url": f"{base}/v1/files/{store.put(f, media)}/content"} for f in files]
    else:
        data = [{"b64_json": base64.b64encode(f).decode("ascii")} for f in files]
    return JSONResponse({"created": int(time.time()), "data": data, **common,
                         "size": f"{result.width}x{result.height}", "usage": usage(result)})  # fmt: skip


async def _chain(first, rest):
    yield first
    async for event in rest:
        yield event


def _event(kind: str, data: bytes, index, fields: dict) -> str:
    body = {"type": kind, "b64_json": base64.b64encode(data).decode("ascii"),
            "created_at": int(time.time()), "size": fields.get("size", "auto"), **fields}  # fmt: skip
    if index is not None:
        body["partial_image_index"] = index
    return f"event: {kind}\n" + sse(body)


@router.post("/v1/images/generations", dependencies=auth)
async def images_generations(request: Request):
    params: ImageParams = await read_request(request, ImageParams)
    return await generate(request, params, [])


# ---- edits: multipart/form-data -------------------------------------------------------------


async def read_multipart(request: Request) -> tuple[dict, list[tuple[str, bytes]]]:
    """(fields, files) of a multipart/form-data body, within the size limit (stdlib parser)."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise APIError(400, "images/edits expects multipart/form-data (image[] and prompt fields).")
    body = await read_body(request)
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + bytes(body))
    if not message.is_multipart():
        raise APIError(400, "The multipart body could not be parsed.")
    fields: dict = {}
    files: list[tuple[str, bytes]] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            files.append((name, payload))
        else:
            fields[name] = payload.decode("utf-8", errors="replace")
    return fields, files


@router.post("/v1/images/edits", dependencies=auth)
async def images_edits(request: Request):
    from ominix.engine.image.output import decode_image

    fields, files = await read_multipart(request)
    if any(name == "mask" for name, _ in files) or "mask" in fields:
        raise APIError(400, "mask is not supported: FLUX.2 edits condition on whole reference images.",
                       param="mask")  # fmt: skip
    uploads = [data for name, data in files if name in ("image", "image[]")]
    if not uploads:
        raise APIError(400, "At least one image (image or image[]) is required.", param="image")
    data = {k: v for k, v in fields.items() if v != ""}
    data["stream"] = data.get("stream", "false").lower() == "true"
    try:
        params = ImageParams.model_validate(data)
    except ValidationError as e:
        message, param = validation_message(e.errors())
        raise APIError(400, message, param=param) from None
    try:
        references = [await run_in_threadpool(decode_image, u) for u in uploads]
    except ValueError as e:
        raise APIError(400, f"image: {e}", param="image") from None
    return await generate(request, params, references)
