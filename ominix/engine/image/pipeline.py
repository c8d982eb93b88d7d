"""A diffusers-layout image checkpoint -> a runnable pipeline (text encoder, transformer, VAE,
scheduler), with the load-time choices: compute dtype, `quantize` bits, text-encoder release,
float32 weights on a CPU with memory to spare.

model_index.json names the pipeline class (an mflux pack's is inferred: mflux_pack.py); the
family modules (flux2.py, zimage.py) say how prompts are encoded, how latents are laid out and what
one denoising step does. Components load name-for-name from their folders through
`ominix.engine.load` (float or MLX-quantized: a component whose config.json carries a
`quantization` block loads quantized, as `ominix convert` writes it).
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from ominix.engine.load import (
    LoadError, apply_compute_dtype, check_weights, checkpoint_float_dtype, dtype_name, parse_dtype,
    quantize_like_checkpoint, read_config, read_quantization, read_weights,
)  # fmt: skip
from ominix.engine.image import mflux_pack
from ominix.engine.image.scheduler import FlowMatchEuler
from ominix.engine.image.text import TextEncoder, load_text_encoder
from ominix.kinds import is_mflux_pack
from ominix.models import autoencoder

PIPELINES = {
    "Flux2KleinPipeline": "flux2",
    "Flux2Pipeline": "flux2",
    "ZImagePipeline": "zimage",
}
GROUP_SIZE = 64
MAX_SIDE = 2048  # pixels; beyond this the attention over all tokens outgrows a 24 GB machine
# On a CPU, 16-bit weights are cast to float32 once at load when the whole pipeline at float32
# takes at most this share of the machine's memory (else they are upcast layer by layer at every
# step: at FLUX.2 width that cast is 17% of a step, 9.2 vs 7.6 s at 512 px on 2 cores).
FLOAT32_MEMORY_SHARE = 0.5


class SizeError(ValueError):
    """A requested image size the model cannot make; the message names the nearest valid one."""


@dataclass
class Options:
    quantize: int | None = None  # 4 / 8: quantize the transformer and text encoder at load
    dtype: str | None = None  # compute dtype override (default: the checkpoint's, see below)
    release_text_encoder: bool | None = None  # None: when memory is short
    float32_weights: bool | None = None  # CPU, 16-bit files: None = when memory allows


def read_index(path: Path) -> dict:
    index_file = Path(path) / "model_index.json"
    if not index_file.is_file() and is_mflux_pack(path):
        return mflux_pack.model_index(path)
    if not index_file.is_file():
        raise LoadError(f"{path} has no model_index.json: not a diffusers image checkpoint")
    try:
        index = json.loads(index_file.read_text())
    except json.JSONDecodeError as e:
        raise LoadError(f"{index_file} is not valid JSON: {e}") from None
    if index.get("_class_name") not in PIPELINES:
        raise LoadError(
            f"pipeline {index.get('_class_name')!r} is not supported; supported: "
            + ", ".join(sorted(PIPELINES))
        )
    return index


def quantize_predicate(bits: int, group_size: int = GROUP_SIZE):
    def predicate(path: str, module: nn.Module) -> bool | dict:
        if not hasattr(module, "to_quantized") or isinstance(module, nn.Embedding):
            return False
        return module.weight.shape[-1] % group_size == 0 and {"bits": bits, "group_size": group_size}

    return predicate


def load_component(folder: Path, arch, quantize: int | None) -> tuple[nn.Module, dict, mx.Dtype]:
    """Build `arch.Model` from folder/config.json and load its safetensors (lazily)."""
    config, weights, origin = read_component(folder)
    try:
        model = arch.Model(arch.ModelArgs.from_dict(config))
    except (TypeError, ValueError, KeyError) as e:
        raise LoadError(f"{folder}/config.json does not describe a valid model: {e}") from None
    stored = checkpoint_float_dtype(weights)
    if hasattr(model, "sanitize"):
        weights = model.sanitize(weights)
    quantization = read_quantization(config)
    if quantization is not None:
        quantize_like_checkpoint(model, quantization, weights)
    check_weights(model, weights, origin)
    model.load_weights(list(weights.items()), strict=True)
    if quantize and quantization is None:
        nn.quantize(model, class_predicate=quantize_predicate(quantize))
    return model, config, stored


def read_component(folder: Path) -> tuple[dict, dict, dict]:
    """(config, tensors, tensor -> file) of a pipeline component: a diffusers folder's
    config.json and safetensors, or an mflux pack's tensors renamed (engine/image/mflux_pack.py)."""
    folder = Path(folder)
    if is_mflux_pack(folder.parent):
        return mflux_pack.read_component(folder)
    return (read_config(folder), *read_weights(folder))


def read_scheduler_config(path: Path) -> dict:
    if is_mflux_pack(path):
        return mflux_pack.scheduler_config(path)
    try:
        return json.loads((Path(path) / "scheduler" / "scheduler_config.json").read_text())
    except (OSError, ValueError) as e:
        raise LoadError(f"{path}/scheduler/scheduler_config.json cannot be read: {e}") from None


def compute_dtypes(stored: mx.Dtype, quantized: bool, override: str | None, device,
                   float32_weights: bool = False) -> tuple[mx.Dtype, mx.Dtype]:
    """(weight dtype, activation dtype). The override sets both. On Metal: the checkpoint's own
    for both. On a CPU activations are float32: MLX's CPU matmul and attention reach BLAS only in
    float32 (measured at FLUX.2 width, 768 tokens: a bf16 linear 26.5 s, the same in float32
    1.6 s; bf16 attention 6.6 s vs 0.9 s). 16-bit weights are then cast to float32 once at load
    when `float32_weights` (memory allows), else stay 16-bit in memory and are upcast one layer
    at a time (engine/compute.py); quantized layers compute in float32."""
    if override:
        return parse_dtype(override), parse_dtype(override)
    if device.type == mx.DeviceType.gpu:
        return stored, stored
    return (mx.float32 if quantized or float32_weights else stored), mx.float32


def component_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


class ImagePipeline:
    """What every family shares: components, sizes, noise, decoding. Families add
    `encode(prompts, negative, guidance)`, `start(...)` and `step(state)`."""

    family = ""
    default_steps = 4
    default_guidance = 1.0

    def __init__(self, path: Path, index: dict, arch, options: Options):
        self.path = Path(path)
        self.index = index
        self.options = options
        self.name = self.path.name
        self.scheduler = FlowMatchEuler(read_scheduler_config(self.path))
        device = mx.default_device()
        self.transformer, tconfig, stored = load_component(self.path / "transformer", arch,
                                                           options.quantize)  # fmt: skip
        quantized = bool(options.quantize or read_quantization(tconfig))
        self.release_text_encoder = self._should_release(options)
        cast = not quantized and self._float32_weights(options)
        self.weight_dtype, self.dtype = compute_dtypes(stored, quantized, options.dtype, device, cast)
        apply_compute_dtype(self.transformer, self.weight_dtype, device)
        self.vae, self.vae_config, _ = load_component(self.path / "vae", autoencoder, None)
        # The VAE is small; float32 keeps its decode exact (diffusers upcasts it too).
        self.vae_dtype = self.dtype if device.type == mx.DeviceType.gpu else mx.float32
        apply_compute_dtype(self.vae, self.vae_dtype, device)
        self.vae_args = self.vae.args
        self.multiple = self.vae_args.scale_factor * 2
        self.text_encoder: TextEncoder | None = None
        self._te_lock = threading.Lock()
        self._te_future: Future | None = None  # a released encoder being loaded or in use
        self._te_users = 0
        mx.eval(self.transformer.parameters(), self.vae.parameters())
        if not self.release_text_encoder:
            self.text_encoder = self._load_text_encoder()

    # --- the text encoder, resident or loaded per request -----------------------------------

    def _stored_bytes(self) -> int:
        return sum(component_bytes(self.path / c) for c in ("transformer", "text_encoder", "vae"))

    def _should_release(self, options: Options) -> bool:
        choice = _choice(options.release_text_encoder, "OMINIX_IMAGE_RELEASE_TEXT_ENCODER")
        if choice is not None:
            return choice
        total = self._stored_bytes()
        if self.options.quantize:
            total = total * self.options.quantize // 16
        memory = physical_memory()
        return bool(memory) and total > 0.6 * memory

    def _float32_weights(self, options: Options) -> bool:
        """Whether 16-bit weights are cast to float32 at load (CPU only, see compute_dtypes):
        when the files at twice their size take at most FLOAT32_MEMORY_SHARE of memory (an
        overestimate for float32 files, which need no cast)."""
        choice = _choice(options.float32_weights, "OMINIX_IMAGE_FLOAT32_WEIGHTS")
        if choice is not None:
            return choice
        return 2 * self._stored_bytes() <= FLOAT32_MEMORY_SHARE * physical_memory()

    def _load_text_encoder(self) -> TextEncoder:
        te = load_text_encoder(self.path / "text_encoder", self.path / "tokenizer")
        if self.options.quantize and read_quantization(te.config) is None:
            nn.quantize(te.body, class_predicate=quantize_predicate(self.options.quantize))
        quantized = bool(self.options.quantize or read_quantization(te.config))
        weights = mx.float32 if quantized and self.dtype == mx.float32 else self.weight_dtype
        apply_compute_dtype(te.body, weights, mx.default_device())
        te.dtype = self.dtype
        mx.eval(te.body.parameters())
        return te

    def request_text_encoder(self) -> Future:
        """The text encoder for one request, as a future: done at once when it is resident;
        else loaded on a thread of its own (never the worker's, which only runs bounded steps)
        and shared by the requests that ask while it loads or encodes. Each call is paired with
        one `done_encoding`."""
        if self.text_encoder is not None:
            done: Future = Future()
            done.set_result(self.text_encoder)
            return done
        with self._te_lock:
            if self._te_future is None:
                self._te_future = _te_loader().submit(self._load_text_encoder_off_thread)
            self._te_users += 1
            return self._te_future

    def _load_text_encoder_off_thread(self) -> TextEncoder:
        with mx.stream(_te_stream()):  # its own stream: it does not queue behind the steps
            te = self._load_text_encoder()
            mx.synchronize()
        return te

    def done_encoding(self) -> None:
        """Called once a request's prompts are encoded (or it ended first): a released text
        encoder is freed when its last user is done, before the denoising loop, so it and the
        transformer's activations never peak together."""
        if self.text_encoder is not None:
            return
        with self._te_lock:
            self._te_users -= 1
            if self._te_users > 0:
                return
            future, self._te_future = self._te_future, None
        if future is not None:
            future.cancel()
            del future
            mx.clear_cache()

    # --- sizes, noise, images ---------------------------------------------------------------

    def check_size(self, width: int, height: int) -> None:
        m = self.multiple
        nearest = [min(max(m, round(v / m) * m), MAX_SIDE - MAX_SIDE % m) for v in (width, height)]
        if [width, height] != nearest:
            raise SizeError(
                f"size {width}x{height} is not supported: sides must be multiples of {m} between "
                f"{m} and {MAX_SIDE}; the nearest valid size is {nearest[0]}x{nearest[1]}"
            )

    def noise(self, seeds: list[int], width: int, height: int) -> mx.array:
        """One standard normal latent per seed (float32, NHWC in the family's latent layout), so
        an image depends only on its own seed, alone or in a batch."""
        shape = self.latent_shape(width, height)
        return mx.stack([mx.random.normal(shape, key=mx.random.key(s)) for s in seeds])

    def latent_shape(self, width: int, height: int) -> tuple[int, int, int]:
        raise NotImplementedError

    def to_pixels(self, image: mx.array) -> mx.array:
        """VAE output in [-1, 1] -> uint8 (as diffusers' postprocess: clamp, *255, round)."""
        x = mx.clip(image.astype(mx.float32) / 2 + 0.5, 0, 1)
        return mx.round(x * 255).astype(mx.uint8)

    def parameters(self) -> dict:
        """The resident arrays (the pool counts their bytes against its memory budget)."""
        params = {"transformer": self.transformer.parameters(), "vae": self.vae.parameters()}
        if self.text_encoder is not None:
            params["text_encoder"] = self.text_encoder.body.parameters()
        return params

    def describe(self) -> dict:
        params = sum(v.nbytes for _, v in tree_flatten(self.transformer.parameters()))
        return {"family": self.family, "dtype": dtype_name(self.dtype),
                "quantize": self.options.quantize, "transformer_bytes": params,
                "release_text_encoder": self.release_text_encoder}  # fmt: skip


def _choice(option: bool | None, env_name: str) -> bool | None:
    """A load-time switch: the option if set, else the environment variable if set (1/0)."""
    if option is not None:
        return option
    env = os.environ.get(env_name)
    return None if env is None else env not in ("0", "false", "no")


_TE_LOADER: ThreadPoolExecutor | None = None
_TE_STREAMS = threading.local()


def _te_loader() -> ThreadPoolExecutor:
    """One thread that loads released text encoders (of any image pipeline)."""
    global _TE_LOADER
    if _TE_LOADER is None:
        _TE_LOADER = ThreadPoolExecutor(1, thread_name_prefix="ominix-text-encoder")
    return _TE_LOADER


def _te_stream():
    if getattr(_TE_STREAMS, "stream", None) is None:
        _TE_STREAMS.stream = mx.new_thread_local_stream(mx.default_device())
    return _TE_STREAMS.stream


def options_from_env() -> Options:
    """The server's load-time choices (`ominix serve --quantize` sets OMINIX_IMAGE_QUANTIZE)."""
    bits = os.environ.get("OMINIX_IMAGE_QUANTIZE") or None
    if bits is not None and bits not in ("4", "8"):
        raise LoadError(f"OMINIX_IMAGE_QUANTIZE must be 4 or 8, got {bits!r}")
    return Options(quantize=int(bits) if bits else None)


def load(path):
    """The image kind's loader (ominix/kinds.py): (pipeline, None)."""
    return load_image_pipeline(path, options_from_env()), None


def load_image_pipeline(path, options: Options | None = None) -> ImagePipeline:
    """The loader for image checkpoints (a diffusers folder with model_index.json)."""
    path = Path(path)
    index = read_index(path)
    family = PIPELINES[index["_class_name"]]
    if family == "flux2":
        from ominix.engine.image.flux2 import Flux2Pipeline as cls
    else:
        from ominix.engine.image.zimage import ZImagePipeline as cls
    return cls(path, index, options or Options())
