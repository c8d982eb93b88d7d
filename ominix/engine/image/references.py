"""Reference images for FLUX.2 edits, prepared as Flux2KleinPipeline does: at least 64 px a side,
aspect ratio at most 8:1, shrunk (Lanczos) to about one megapixel when larger, then center-cropped
to multiples of the VAE x patch factor."""

from __future__ import annotations

import math

import numpy as np

MAX_AREA = 1024 * 1024
MIN_SIDE = 64
MAX_ASPECT = 8


def prepare_reference(pixels: np.ndarray, multiple: int) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (H', W', 3) ready for the VAE encoder."""
    from PIL import Image

    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"a reference image must be RGB (H, W, 3), got shape {pixels.shape}")
    height, width = pixels.shape[:2]
    if min(width, height) < MIN_SIDE:
        raise ValueError(f"reference image {width}x{height} is too small: both sides must be at "
                         f"least {MIN_SIDE} px")  # fmt: skip
    if max(width / height, height / width) > MAX_ASPECT:
        raise ValueError(f"reference image {width}x{height} is too elongated (at most {MAX_ASPECT}:1)")
    image = Image.fromarray(pixels)
    if width * height > MAX_AREA:
        scale = math.sqrt(MAX_AREA / (width * height))
        image = image.resize((int(width * scale), int(height * scale)), Image.Resampling.LANCZOS)
        width, height = image.size
    w, h = width // multiple * multiple, height // multiple * multiple
    left, top = (width - w) // 2, (height - h) // 2
    return np.asarray(image.crop((left, top, left + w, top + h)))
