"""Image generation as a stepped job of the engine's worker: encode the prompt, then one
denoising step per turn, then the VAE decode; previews and progress go out as events.

A released text encoder (pipeline.py) is loaded off the worker thread: until it is ready the
encode step only waits a few milliseconds and yields, so other requests keep their turns.

Seeds: image k of a request with seed s starts from the noise of seed s + k, so a batch of n
gives exactly the images n single requests with seeds s..s+n-1 would. Cancelling (or a timeout)
between two steps ends the job; `close` drops the latents and the encoded prompt and returns the
freed buffers to the system.
"""

from __future__ import annotations

import secrets
from concurrent.futures import Future, wait
from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np

from ominix.engine.image.pipeline import ImagePipeline, SizeError
from ominix.engine.job import StepJob

MAX_IMAGES = 8
MAX_STEPS = 100
LOAD_POLL_SECONDS = 0.01  # how long a step waits for a text encoder still loading


class ImageRequestError(ValueError):
    """The request cannot be served as asked (bad size, n, steps, reference image...)."""


@dataclass
class ImageRequest:
    prompt: str
    n: int = 1
    width: int | None = None  # None: the first reference image's size, else 1024
    height: int | None = None
    steps: int | None = None
    seed: int | None = None
    guidance: float | None = None
    negative_prompt: str | None = None
    references: list = field(default_factory=list)  # uint8 HWC numpy arrays
    partial_images: int = 0  # previews to emit during denoising (0-3)


@dataclass
class Progress:
    """Sent after each denoising step."""

    step: int
    steps: int


@dataclass
class PartialImage:
    """A decoded preview of the current estimate of the final images."""

    index: int  # 0-based, as OpenAI's partial_image_index
    images: list  # uint8 HWC arrays, one per image of the request


@dataclass
class ImageResult:
    images: list  # uint8 HWC arrays
    seed: int
    steps: int
    width: int
    height: int
    guidance: float
    prompt_tokens: int = 0
    image_tokens: int = 0  # latent tokens generated, all images


def validate(pipe: ImagePipeline, request: ImageRequest) -> None:
    if not request.prompt or not request.prompt.strip():
        raise ImageRequestError("prompt must not be empty")
    if not 1 <= request.n <= MAX_IMAGES:
        raise ImageRequestError(f"n must be between 1 and {MAX_IMAGES}, got {request.n}")
    if request.steps is not None and not 1 <= request.steps <= MAX_STEPS:
        raise ImageRequestError(f"steps must be between 1 and {MAX_STEPS}, got {request.steps}")
    if not 0 <= request.partial_images <= 3:
        raise ImageRequestError("partial_images must be between 0 and 3")
    if request.seed is not None and not 0 <= request.seed < 2**63:
        raise ImageRequestError("seed must be a non-negative 64-bit integer")
    if request.references and pipe.family != "flux2":
        raise ImageRequestError(f"{pipe.family} models take no reference images (edits)")
    try:
        pipe.check_size(request.width, request.height)
    except SizeError as e:
        raise ImageRequestError(str(e)) from None


def preview_steps(steps: int, partials: int) -> set[int]:
    """After which steps (1-based) to emit previews: evenly spaced, never the last one."""
    if partials <= 0 or steps <= 1:
        return set()
    picks = {max(1, round(steps * (k + 1) / (partials + 1))) for k in range(partials)}
    return {p for p in picks if p < steps}


class ImageJob(StepJob):
    kind = "image"

    def __init__(self, request: ImageRequest):
        self.request = request
        self.pipe: ImagePipeline | None = None
        self.ticket = None
        self.state = None
        self.stage = "encode"
        self.images: list | None = None
        self.references: list = []
        self.partials_sent = 0
        self.text_encoder: Future | None = None  # from pipe.request_text_encoder()

    def begin(self, resident, ticket) -> None:
        pipe = getattr(resident, "model", resident)
        self.pipe, self.ticket = pipe, ticket
        r = self.request
        self.references = [self._reference(img) for img in r.references]
        if r.width is None or r.height is None:
            if self.references:
                r.height, r.width = self.references[0].shape[:2]
            else:
                r.width, r.height = r.width or 1024, r.height or 1024
        validate(pipe, r)
        self.seed = r.seed if r.seed is not None else secrets.randbelow(2**31)
        self.steps = r.steps or pipe.default_steps
        self.guidance = pipe.default_guidance if r.guidance is None else r.guidance
        self.previews = preview_steps(self.steps, r.partial_images)
        self.prompt_tokens = 0

    def _reference(self, pixels: np.ndarray) -> mx.array:
        from ominix.engine.image.references import prepare_reference

        if self.pipe.family != "flux2":
            raise ImageRequestError(f"{self.pipe.family} models take no reference images (edits)")
        try:
            image = prepare_reference(pixels, self.pipe.multiple)
        except ValueError as e:
            raise ImageRequestError(str(e)) from None
        return mx.array(image.astype(np.float32) / 127.5 - 1)

    def _emit(self, event) -> None:
        if self.ticket is not None:
            self.ticket.emit(event)

    def step(self) -> bool:
        if self.stage == "encode":
            if self.text_encoder is None:
                self.text_encoder = self.pipe.request_text_encoder()
            if not self.text_encoder.done():
                # A released encoder loads off this thread: wait a moment, not for the load.
                wait([self.text_encoder], timeout=LOAD_POLL_SECONDS)
                return False
            self._encode()
            self.stage = "denoise"
            return False
        if self.stage == "denoise":
            self.pipe.step(self.state)
            done = self.state.index
            self._emit(Progress(done, self.steps))
            if done in self.previews:
                images = self._pixels(self.pipe.preview(self.state))
                self._emit(PartialImage(self.partials_sent, images))
                self.partials_sent += 1
            if done >= self.steps:
                self.stage = "decode"
            return False
        self.images = self._pixels(self.pipe.decode(self.state))
        self.state = None
        return True

    def _encode(self) -> None:
        pipe, r = self.pipe, self.request
        te = self.text_encoder.result()  # raises what the load raised
        self.prompt_tokens = len(te.tokenizer.encode(r.prompt))
        try:
            prompt = pipe.encode(te, [r.prompt])
            negative = None
            if pipe.uses_guidance(self.guidance):
                negative = pipe.encode(te, [r.negative_prompt or ""])
            mx.eval(prompt, negative if negative is not None else [])
        finally:
            del te
            self._release_text_encoder()
        prompt, negative = pipe.repeat(prompt, r.n), pipe.repeat(negative, r.n)
        noise = pipe.noise([self.seed + k for k in range(r.n)], r.width, r.height)
        self.state = pipe.start(prompt, negative, noise, self.steps, self.guidance,
                                self.references or None)  # fmt: skip

    @staticmethod
    def _pixels(images: mx.array) -> list:
        return list(np.array(images))

    def result(self) -> ImageResult:
        r = self.request
        tokens = r.n * int(np.prod(self.pipe.latent_shape(r.width, r.height)[:2]))
        return ImageResult(self.images or [], self.seed, self.steps, r.width, r.height,
                           self.guidance, self.prompt_tokens, tokens)  # fmt: skip

    def _release_text_encoder(self) -> None:
        if self.text_encoder is not None:
            self.text_encoder = None
            self.pipe.done_encoding()

    def close(self) -> None:
        self._release_text_encoder()
        self.state = None
        self.references = []
        mx.clear_cache()


def run_job(job: StepJob, resident, ticket=None):
    """Drive a job to completion on the calling thread (the CLI without a server, tests)."""
    job.begin(resident, ticket)
    try:
        while not job.step():
            pass
        return job.result()
    finally:
        job.close()
