"""Images for vision chat, with Pillow and numpy only (no MLX): decoding with limits, and the
Qwen2-VL/Qwen3-VL image processor (resize to the patch grid within min/max pixels, normalise,
cut into patches in the merge-block order the vision tower reads).

Everything here runs off the inference thread (the API's thread pool, the CLI).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_IMAGE_BYTES = 20 * 1024 * 1024  # per image, as OpenAI's limit
MAX_IMAGE_PIXELS = 64 * 1024 * 1024  # decoded size; bigger is refused before decoding the pixels


class ImageError(ValueError):
    """An image that cannot be used (corrupt, too large, unsupported); the API answers 400."""


def decode_image(data: bytes, max_bytes: int | None = None, max_pixels: int | None = None):
    """Bytes of a PNG/JPEG/WebP/GIF/BMP... -> an RGB PIL image (the first frame of an animation)."""
    from PIL import Image, UnidentifiedImageError

    max_bytes = MAX_IMAGE_BYTES if max_bytes is None else max_bytes
    max_pixels = MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    if not data:
        raise ImageError("the image is empty")
    if len(data) > max_bytes:
        raise ImageError(f"the image is {len(data)} bytes; the limit is {max_bytes}")
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        # Checked on the header, before the pixels are decoded (decompression bombs).
        if width * height > max_pixels:
            raise ImageError(f"the image is {width}x{height} pixels; the limit is {max_pixels} pixels")
        image.load()
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageError(f"the image cannot be decoded: {e}") from None
    if image.mode != "RGB":
        image = _to_rgb(image)
    return image


def _to_rgb(image):
    from PIL import Image

    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels over white, as transformers' convert_rgb does.
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The size the processor resizes to: both sides multiples of `factor`, the area within
    [min_pixels, max_pixels], the aspect ratio kept as well as that allows."""
    if max(height, width) / min(height, width) > 200:
        raise ImageError(f"the image's aspect ratio {width}x{height} is more extreme than 200:1")
    h = round(height / factor) * factor
    w = round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


@dataclass
class ProcessedImage:
    patches: np.ndarray  # [t*h*w, C*T*P*P] float32, merge-block order
    grid: tuple[int, int, int]  # (t, h, w) in patches


@dataclass
class ImageProcessor:
    """preprocessor_config.json of a Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoint."""

    patch_size: int = 16
    temporal_patch_size: int = 2
    merge_size: int = 2
    min_pixels: int = 65536
    max_pixels: int = 16777216
    image_mean: tuple = (0.5, 0.5, 0.5)
    image_std: tuple = (0.5, 0.5, 0.5)
    rescale_factor: float = 1 / 255
    resample: int = 3  # bicubic

    @classmethod
    def from_config(cls, config: dict) -> "ImageProcessor":
        size = config.get("size") or {}
        out = cls()
        for key in ("patch_size", "temporal_patch_size", "merge_size", "rescale_factor", "resample"):
            if config.get(key) is not None:
                setattr(out, key, config[key])
        out.min_pixels = config.get("min_pixels") or size.get("shortest_edge") or size.get("min_pixels") or out.min_pixels
        out.max_pixels = config.get("max_pixels") or size.get("longest_edge") or size.get("max_pixels") or out.max_pixels
        if config.get("image_mean") is not None:
            out.image_mean = tuple(config["image_mean"])
        if config.get("image_std") is not None:
            out.image_std = tuple(config["image_std"])
        return out

    @classmethod
    def from_dir(cls, path) -> "ImageProcessor":
        file = Path(path) / "preprocessor_config.json"
        try:
            config = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
        except (OSError, ValueError) as e:
            raise ValueError(f"{file} is not valid JSON: {e}") from None
        return cls.from_config(config if isinstance(config, dict) else {})

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        factor = self.patch_size * self.merge_size
        h, w = smart_resize(height, width, factor, self.min_pixels, self.max_pixels)
        return w, h

    def __call__(self, image) -> ProcessedImage:
        width, height = self.target_size(*image.size)
        if (width, height) != image.size:
            image = image.resize((width, height), resample=self.resample)
        pixels = np.asarray(image, dtype=np.float32) * np.float32(self.rescale_factor)  # [H, W, C]
        mean = np.asarray(self.image_mean, np.float32)
        std = np.asarray(self.image_std, np.float32)
        pixels = ((pixels - mean) / std).transpose(2, 0, 1)  # [C, H, W]
        return ProcessedImage(self.patchify(pixels), (1, height // self.patch_size, width // self.patch_size))

    def patchify(self, pixels: np.ndarray) -> np.ndarray:
        """[C, H, W] -> [h*w, C*T*P*P]: merge blocks row-major, then the patches inside a block;
        a still image is repeated over the temporal patch."""
        C, H, W = pixels.shape
        P, m, T = self.patch_size, self.merge_size, self.temporal_patch_size
        gh, gw = H // P, W // P
        x = pixels.reshape(C, gh // m, m, P, gw // m, m, P).transpose(1, 4, 2, 5, 0, 3, 6)
        x = np.broadcast_to(x[:, :, :, :, :, None], (*x.shape[:5], T, P, P))
        return np.ascontiguousarray(x.reshape(gh * gw, C * T * P * P))


# --- Prismatic (Moxin-VLM): one fixed-size picture for two backbones -----------------------------

PRISMATIC_TYPES = ("moxin_vlm", "prismatic")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class PrismaticProcessor:
    """Prismatic's "resize-naive": bicubic resize to the square input size, then the DINOv2
    (ImageNet statistics) and SigLIP ([-1, 1]) normalisations, stacked as 6 channels."""

    image_size: int = 224
    patch_size: int = 14

    def __call__(self, image) -> ProcessedImage:
        from PIL import Image

        image = image.resize((self.image_size, self.image_size), resample=Image.BICUBIC)
        pixels = np.asarray(image, dtype=np.float32) / np.float32(255)
        dino = (pixels - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
        siglip = (pixels - np.float32(0.5)) / np.float32(0.5)
        side = self.image_size // self.patch_size
        return ProcessedImage(np.concatenate([dino, siglip], axis=-1).transpose(2, 0, 1), (1, side, side))


def _config(path) -> dict:
    try:
        data = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def processor_for(path):
    """The image processor of a vision checkpoint directory."""
    config = _config(path)
    if config.get("model_type") in PRISMATIC_TYPES:
        return PrismaticProcessor(int((config.get("image_sizes") or [224])[0]))
    return ImageProcessor.from_dir(path)


def image_placement(path) -> str:
    """"template": the chat template places each image part; "after_bos": the model takes one
    picture right after BOS and its template sees text only."""
    return "after_bos" if _config(path).get("model_type") in PRISMATIC_TYPES else "template"
