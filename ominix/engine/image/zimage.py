"""Z-Image (Turbo) as diffusers' ZImagePipeline runs it, one denoising step at a time.

Prompts: Qwen3 chat template (thinking on), the second-to-last layer's hidden states of the
prompt's own tokens (no padding). Latents: plain VAE latents (B, H/8, W/8, 16), decoded as
z / scaling_factor + shift_factor. The model predicts the negated velocity at t = 1 - sigma.
Classifier-free guidance (guidance_scale > 0) runs the negative prompt in the same batch; Turbo
is distilled to 8-9 steps without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from ominix.engine.image.pipeline import ImagePipeline
from ominix.engine.image.scheduler import linear_mu
from ominix.models import zimage

MAX_SEQUENCE_LENGTH = 512


@dataclass
class ZImageState:
    latents: mx.array  # (B, H, W, C) float32
    caps: mx.array  # refined caption tokens, (B or 2B, width, dim)
    layout: dict
    sigmas: np.ndarray
    timesteps: np.ndarray
    guidance: float
    index: int = 0
    denoised: mx.array | None = None  # the current estimate of the clean latents (previews)

    @property
    def steps(self) -> int:
        return len(self.timesteps)


class ZImagePipeline(ImagePipeline):
    family = "zimage"
    default_steps = 9
    default_guidance = 0.0

    def __init__(self, path, index, options):
        super().__init__(path, index, zimage, options)

    def latent_shape(self, width: int, height: int):
        f = self.multiple // 2
        return (height // f, width // f, self.transformer.args.in_channels)

    def uses_guidance(self, guidance: float) -> bool:
        return guidance > 0

    def encode(self, te, prompts: list[str]) -> list[mx.array]:
        """One (L_i, D) array per prompt: its valid tokens only."""
        ids, valid = te.tokenize(prompts, MAX_SEQUENCE_LENGTH, enable_thinking=True)
        (states,) = te.hidden_states(ids, valid, [-2])
        lengths = valid.sum(axis=1).tolist()
        return [states[i, :n].astype(self.dtype) for i, n in enumerate(lengths)]

    def start(self, prompt, negative, noise, steps: int, guidance: float, references=None):
        if references:
            raise ValueError("Z-Image takes no reference images")
        b, hh, ww, _ = noise.shape
        caps = list(prompt) + (list(negative) if negative is not None and self.uses_guidance(guidance) else [])
        p = self.transformer.args.patch
        layout = self.transformer.prepare([c.shape[0] for c in caps], hh // p, ww // p)
        width = layout["caps"]["width"]
        padded = mx.stack([mx.pad(c, [(0, width - c.shape[0]), (0, 0)]) for c in caps])
        cap_tokens = self.transformer.embed_captions(padded, layout)
        seq = (hh // p) * (ww // p)
        mu = linear_mu(seq, self.scheduler.config)
        sigmas = self.scheduler.sigmas(steps, mu)
        state = ZImageState(noise.astype(mx.float32), cap_tokens, layout, sigmas,
                            self.scheduler.timesteps(sigmas), guidance)  # fmt: skip
        mx.eval(state.latents, state.caps)
        return state

    def step(self, state: ZImageState) -> None:
        i = state.index
        t = (1000 - float(state.timesteps[i])) / 1000
        x = state.latents.astype(self.dtype)
        guided = state.caps.shape[0] > x.shape[0]
        if guided:
            x = mx.concatenate([x, x], axis=0)
        out = self.transformer(x, mx.full((x.shape[0],), t, mx.float32), state.caps, state.layout)
        out = out.astype(mx.float32)
        if guided:
            pos, neg = mx.split(out, 2, axis=0)
            out = pos + state.guidance * (pos - neg)
        sigma, dt = float(state.sigmas[i]), float(state.sigmas[i + 1]) - float(state.sigmas[i])
        state.denoised = state.latents + sigma * out
        state.latents = state.latents + dt * (-out)
        mx.eval(state.latents)
        state.index += 1

    def repeat(self, prompt: list | None, n: int) -> list | None:
        return None if prompt is None else [p for p in prompt for _ in range(n)]

    def preview(self, state: ZImageState) -> mx.array:
        return self.decode(state, state.denoised)

    def decode(self, state: ZImageState, latents: mx.array | None = None) -> mx.array:
        a = self.vae_args
        latents = state.latents if latents is None else latents
        z = latents / a.scaling_factor + (a.shift_factor or 0.0)
        return self.to_pixels(self.vae.decode(z.astype(self.vae_dtype)))
