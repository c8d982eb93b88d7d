"""FLUX.2 ([klein]) as diffusers' Flux2KleinPipeline runs it, one denoising step at a time.

Prompts: Qwen3 chat template (thinking off), padded to 512 tokens, hidden states of layers
(9, 18, 27) concatenated per token. Latents: 2x2-patchified VAE latents normalised by the VAE's
batch-norm statistics, as (B, h * w, 4C) tokens with positions (t, h, w, l). Reference images for
edits are encoded the same way and appended as extra tokens at t = 10, 20, ... (the model attends
to them; their outputs are dropped). klein is step-distilled: no classifier-free guidance.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from ominix.engine.image.pipeline import ImagePipeline
from ominix.engine.image.scheduler import flux2_mu
from ominix.models import flux2

MAX_SEQUENCE_LENGTH = 512
TEXT_LAYERS = (9, 18, 27)
REFERENCE_MAX_AREA = 1024 * 1024


@dataclass
class Flux2State:
    latents: mx.array  # (B, N, 4C) float32
    prompt: mx.array  # (B, L, joint_dim)
    negative: mx.array | None
    rope: tuple
    neg_rope: tuple | None
    sigmas: np.ndarray
    timesteps: np.ndarray
    h: int
    w: int
    guidance: float
    ref_tokens: mx.array | None = None
    index: int = 0
    denoised: mx.array | None = None  # the current estimate of the clean latents (previews)

    @property
    def steps(self) -> int:
        return len(self.timesteps)


def grid_ids(h: int, w: int, t: int = 0) -> mx.array:
    rows = mx.repeat(mx.arange(h), w)
    cols = mx.tile(mx.arange(w), h)
    return mx.stack([mx.full((h * w,), t), rows, cols, mx.zeros(h * w, mx.int32)], axis=-1)


def text_ids(length: int) -> mx.array:
    zeros = mx.zeros(length, mx.int32)
    return mx.stack([zeros, zeros, zeros, mx.arange(length)], axis=-1)


class Flux2Pipeline(ImagePipeline):
    family = "flux2"
    default_steps = 4
    default_guidance = 1.0

    def __init__(self, path, index, options):
        super().__init__(path, index, flux2, options)
        self.distilled = bool(index.get("is_distilled", False))
        if not self.distilled:
            self.default_steps, self.default_guidance = 50, 4.0

    def latent_shape(self, width: int, height: int):
        c = self.transformer.args.in_channels
        return (height // self.multiple, width // self.multiple, c)

    def uses_guidance(self, guidance: float) -> bool:
        return not self.distilled and guidance > 1.0

    # --- prompts ---------------------------------------------------------------------------

    def encode(self, te, prompts: list[str]) -> mx.array:
        ids, valid = te.tokenize(prompts, MAX_SEQUENCE_LENGTH, enable_thinking=False)
        states = te.hidden_states(ids, valid, list(TEXT_LAYERS))
        return mx.concatenate(states, axis=-1).astype(self.dtype)

    # --- reference images ------------------------------------------------------------------

    def encode_references(self, images: list[mx.array]) -> tuple[mx.array, mx.array]:
        """Preprocessed NHWC images in [-1, 1] -> (tokens (1, N, 4C), ids (N, 4))."""
        tokens, ids = [], []
        mean, std = self.vae.bn_stats()
        for i, image in enumerate(images):
            z = self.vae.encode(image.astype(self.vae_dtype)[None])
            b, hh, ww, c = z.shape
            z = z.reshape(b, hh // 2, 2, ww // 2, 2, c).transpose(0, 1, 3, 5, 2, 4)
            z = (z.reshape(b, hh // 2, ww // 2, 4 * c) - mean) / std
            tokens.append(z.reshape(1, -1, 4 * c))
            ids.append(grid_ids(hh // 2, ww // 2, t=10 + 10 * i))
        return mx.concatenate(tokens, axis=1), mx.concatenate(ids, axis=0)

    # --- denoising -------------------------------------------------------------------------

    def start(self, prompt, negative, noise, steps: int, guidance: float, references=None):
        """prompt/negative: encoded (B, L, D); noise (B, h, w, 4C) -> the state before step 0."""
        b, h, w, c = noise.shape
        latents = noise.reshape(b, h * w, c).astype(mx.float32)
        mu = flux2_mu(h * w, steps)
        sigmas = self.scheduler.sigmas(steps, mu)
        img_ids = grid_ids(h, w)
        ref_tokens = None
        if references:
            ref_tokens, ref_ids = self.encode_references(references)
            ref_tokens = mx.broadcast_to(ref_tokens, (b,) + ref_tokens.shape[1:])
            img_ids = mx.concatenate([img_ids, ref_ids], axis=0)
        rope = self.transformer.rope(text_ids(prompt.shape[1]), img_ids)
        neg_rope = None
        if negative is not None:
            neg_rope = self.transformer.rope(text_ids(negative.shape[1]), img_ids)
        state = Flux2State(latents, prompt, negative, rope, neg_rope, sigmas,
                           self.scheduler.timesteps(sigmas), h, w, guidance, ref_tokens)  # fmt: skip
        mx.eval(state.latents, state.rope, state.ref_tokens if ref_tokens is not None else [])
        return state

    def velocity(self, state: Flux2State, context: mx.array, rope) -> mx.array:
        x = state.latents.astype(self.dtype)
        if state.ref_tokens is not None:
            x = mx.concatenate([x, state.ref_tokens.astype(self.dtype)], axis=1)
        t = mx.full((x.shape[0],), float(state.timesteps[state.index]) / 1000, mx.float32)
        out = self.transformer(x, context, t.astype(self.dtype), rope)
        return out[:, : state.latents.shape[1]].astype(mx.float32)

    def step(self, state: Flux2State) -> None:
        v = self.velocity(state, state.prompt, state.rope)
        if state.negative is not None and self.uses_guidance(state.guidance):
            neg = self.velocity(state, state.negative, state.neg_rope)
            v = neg + state.guidance * (v - neg)
        i = state.index
        sigma, dt = float(state.sigmas[i]), float(state.sigmas[i + 1]) - float(state.sigmas[i])
        state.denoised = state.latents - sigma * v
        state.latents = state.latents + dt * v
        mx.eval(state.latents)
        state.index += 1

    def repeat(self, prompt: mx.array | None, n: int) -> mx.array | None:
        return None if prompt is None else mx.repeat(prompt, n, axis=0)

    def preview(self, state: Flux2State) -> mx.array:
        return self.decode(state, state.denoised)

    def decode(self, state: Flux2State, latents: mx.array | None = None) -> mx.array:
        latents = state.latents if latents is None else latents
        b, c = latents.shape[0], latents.shape[-1]
        mean, std = self.vae.bn_stats()
        z = latents.reshape(b, state.h, state.w, c) * std + mean
        z = z.reshape(b, state.h, state.w, c // 4, 2, 2).transpose(0, 1, 4, 2, 5, 3)
        z = z.reshape(b, 2 * state.h, 2 * state.w, c // 4)
        return self.to_pixels(self.vae.decode(z.astype(self.vae_dtype)))
