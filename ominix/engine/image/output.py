"""Generated images -> file bytes: PNG (with text chunks recording how the image was made),
JPEG or WebP (quality from output_compression, 0-100). Pillow does the encoding."""

from __future__ import annotations

import io

import numpy as np

FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp"}


def encode_image(pixels: np.ndarray, fmt: str = "png", compression: int | None = None,
                 metadata: dict | None = None) -> bytes:  # fmt: skip
    from PIL import Image, PngImagePlugin

    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise ValueError(f"output_format must be one of png, jpeg, webp; got {fmt!r}")
    image = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    out = io.BytesIO()
    if FORMATS[fmt] == "PNG":
        info = PngImagePlugin.PngInfo()
        for key, value in (metadata or {}).items():
            info.add_text(str(key), str(value))
        # output_compression for PNG is zlib effort (OpenAI: 0-100); 6 is Pillow's default
        level = 6 if compression is None else max(0, min(9, round(compression * 9 / 100)))
        image.save(out, "PNG", pnginfo=info, compress_level=level)
    else:
        quality = 90 if compression is None else max(1, min(100, 100 - compression))
        image.save(out, FORMATS[fmt], quality=quality)
    return out.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """Uploaded file bytes -> uint8 RGB (H, W, 3); ValueError if it is not an image Pillow reads."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"the upload is not an image Pillow can read: {e}") from None
