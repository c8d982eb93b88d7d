"""The flow-matching Euler sampler (diffusers' FlowMatchEulerDiscreteScheduler) and the shift
schedules of the two pipelines, from scheduler/scheduler_config.json.

Sigmas go from 1 (noise) to 0; a step moves the latents along the predicted velocity:
x <- x + (sigma_next - sigma) * v. Computed in numpy float32 (the reference does the same), so the
schedule is bit-for-bit the published one.
"""

from __future__ import annotations

import math

import numpy as np


def flux2_mu(image_seq_len: int, num_steps: int) -> float:
    """FLUX.2's empirical shift (diffusers' compute_empirical_mu): fit over resolution and steps."""
    a1, b1 = 8.73809524e-05, 1.89833333
    a2, b2 = 0.00016927, 0.45666666
    if image_seq_len > 4300:
        return float(a2 * image_seq_len + b2)
    m_200 = a2 * image_seq_len + b2
    m_10 = a1 * image_seq_len + b1
    a = (m_200 - m_10) / 190.0
    return float(a * num_steps + (m_200 - 200.0 * a))


def linear_mu(image_seq_len: int, config: dict) -> float:
    """diffusers' calculate_shift: mu linear in the token count between base and max."""
    base_len = config.get("base_image_seq_len", 256)
    max_len = config.get("max_image_seq_len", 4096)
    base_shift = config.get("base_shift", 0.5)
    max_shift = config.get("max_shift", 1.15)
    m = (max_shift - base_shift) / (max_len - base_len)
    return image_seq_len * m + (base_shift - m * base_len)


class FlowMatchEuler:
    def __init__(self, config: dict):
        self.config = dict(config)
        self.num_train_timesteps = self.config.get("num_train_timesteps", 1000)
        self.shift = self.config.get("shift", 1.0)
        self.dynamic = bool(self.config.get("use_dynamic_shifting", False))
        self.time_shift_type = self.config.get("time_shift_type", "exponential")
        for flag in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas",
                     "invert_sigmas", "stochastic_sampling"):  # fmt: skip
            if self.config.get(flag):
                raise ValueError(f"scheduler option {flag}=true is not supported")

    def sigmas(self, num_steps: int, mu: float | None = None) -> np.ndarray:
        """num_steps + 1 sigmas (the last is 0) from the pipelines' linspace(1, 1/n, n)."""
        sigmas = np.linspace(1.0, 1.0 / num_steps, num_steps).astype(np.float32)
        if self.dynamic:
            if mu is None:
                raise ValueError("this scheduler shifts dynamically: mu is required")
            if self.time_shift_type == "linear":
                sigmas = mu / (mu + (1 / sigmas - 1))
            else:
                sigmas = math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1))
        else:
            sigmas = self.shift * sigmas / (1 + (self.shift - 1) * sigmas)
        terminal = self.config.get("shift_terminal")
        if terminal:
            one_minus = 1 - sigmas
            sigmas = 1 - one_minus / (one_minus[-1] / (1 - terminal))
        sigmas = sigmas.astype(np.float32)
        return np.concatenate([sigmas, np.zeros(1, np.float32)])

    def timesteps(self, sigmas: np.ndarray) -> np.ndarray:
        return (sigmas[:-1] * self.num_train_timesteps).astype(np.float32)
