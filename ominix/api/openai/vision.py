"""Images in chat messages (OpenAI `image_url` content parts) for vision models.

Images come as `data:` URLs (base64), several per message and across messages. Remote http(s)
URLs are refused with a 400: the server does not fetch what a client points it at (no requests
to internal addresses on a client's behalf); clients send the bytes. Decoding and preprocessing
run in the thread pool, never on the event loop; a corrupt or oversized image is a 400.
"""

from __future__ import annotations

import base64
import binascii

from starlette.concurrency import run_in_threadpool

from ominix.api.app import APIError
from ominix.engine.images import MAX_IMAGE_BYTES, ImageError, decode_image, image_placement, processor_for

MAX_IMAGES = 16  # per request
IMAGE_TYPES = ("image_url", "input_image", "image")


def _is_image(part) -> bool:
    return isinstance(part, dict) and part.get("type") in IMAGE_TYPES


def has_images(messages: list[dict]) -> bool:
    return any(_is_image(p) for m in messages if isinstance(m.get("content"), list) for p in m["content"])


def vision_models_hint() -> str:
    """Catalog vision models this build runs, to name in the error for a text-only model."""
    try:
        from ominix import registry

        ids = [e.id for e in registry.load_catalog().by_category("vlm") if registry_runs(e)]
    except Exception:
        ids = []
    return f" (for example {', '.join(ids[:3])})" if ids else ""


def registry_runs(entry) -> bool:
    from ominix.models import can_run

    return can_run(entry)


def refuse_images(name: str, kind_noun: str) -> APIError:
    return APIError(400, f"The model '{name}' is {kind_noun}; it does not take images. Use a vision model"
                         f"{vision_models_hint()}.", param="messages", code="model_not_supported")


def _url_of(part: dict) -> str:
    value = part.get("image_url")
    if value is None:
        value = part.get("image")
    if isinstance(value, dict):
        value = value.get("url")
    if not isinstance(value, str) or not value:
        raise APIError(400, "an image content part needs image_url.url", param="messages")
    return value


def _data_url_bytes(url: str) -> bytes:
    if url.startswith(("http://", "https://")):
        raise APIError(400, "image URLs are not fetched by this server; send the image as a data URL "
                            "(data:image/png;base64,...)", param="messages", code="invalid_image_url")
    if not url.startswith("data:"):
        raise APIError(400, "an image_url must be a data URL (data:image/png;base64,...)", param="messages",
                       code="invalid_image_url")
    header, sep, payload = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        raise APIError(400, "an image data URL must be base64 encoded (data:image/png;base64,...)",
                       param="messages", code="invalid_image_url")
    if len(payload) > (MAX_IMAGE_BYTES * 4) // 3 + 4:
        raise APIError(400, f"an image is larger than {MAX_IMAGE_BYTES} bytes", param="messages", code="image_too_large")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, "an image data URL is not valid base64", param="messages", code="invalid_image") from None


def process_images(path, blobs: list[bytes], param: str = "messages") -> list:
    """Image bytes -> the checkpoint's processed images (blocking: call it in the thread pool).
    Also what an `images` field of base64 strings (Ollama's API) needs after decoding them."""
    processor = processor_for(path)
    out = []
    for n, data in enumerate(blobs, start=1):
        try:
            out.append(processor(decode_image(data)))
        except ImageError as e:
            raise APIError(400, f"image {n}: {e}", param=param, code="invalid_image") from None
    return out


def _prepare_sync(path, urls: list[str]):
    return process_images(path, [_data_url_bytes(url) for url in urls])


async def prepare(ref, messages: list[dict]) -> tuple[list[dict], list]:
    """(messages with each image part as {"type": "image"} for the chat template, the processed
    images in prompt order)."""
    urls, rendered = [], []
    text_only = image_placement(ref.path) == "after_bos"  # the model puts the picture itself
    for m in messages:
        content = m.get("content")
        if isinstance(content, list) and any(_is_image(p) for p in content):
            parts = []
            for p in content:
                if _is_image(p):
                    urls.append(_url_of(p))
                    if not text_only:
                        parts.append({"type": "image"})
                else:
                    parts.append(p)
            m = {**m, "content": parts}
        rendered.append(m)
    if text_only and len(urls) > 1:
        raise APIError(400, f"this model takes one image per conversation; {len(urls)} were sent", param="messages")
    if len(urls) > MAX_IMAGES:
        raise APIError(400, f"{len(urls)} images in one request; the limit is {MAX_IMAGES}", param="messages")
    images = await run_in_threadpool(_prepare_sync, ref.path, urls)
    return rendered, images
