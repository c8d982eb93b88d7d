"""Mixture-of-experts layers shared by Mixtral, Qwen3-MoE and GLM-4.5 MoE.

All experts of a layer live in one [experts, out, in] tensor; mx.gather_mm / mx.gather_qmm pick
each token's experts inside one kernel, so no Python loop ever runs over experts.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


class SwitchLinear(nn.Module):
    """A bank of `num_experts` linear maps without bias; weight is [experts, out, in]."""

    def __init__(self, input_dims: int, output_dims: int, num_experts: int):
        super().__init__()
        # Placeholder values (lazy, never computed when a checkpoint is loaded over them).
        self.weight = mx.zeros((num_experts, output_dims, input_dims))

    def __call__(self, x: mx.array, indices: mx.array, sorted_indices: bool = False) -> mx.array:
        return mx.gather_mm(
            x, self.weight.swapaxes(-1, -2), rhs_indices=indices, sorted_indices=sorted_indices
        )

    def to_quantized(self, group_size: int = 64, bits: int = 4, mode: str = "affine"):
        """Called by nn.quantize: the same bank with MLX affine-quantized experts."""
        return QuantizedSwitchLinear.from_float(self.weight, group_size, bits, mode)


class QuantizedSwitchLinear(nn.Module):
    """SwitchLinear with `weight` (uint32-packed), `scales` and `biases` per expert."""

    def __init__(self, weight, scales, biases, group_size: int, bits: int, mode: str = "affine"):
        super().__init__()
        self.group_size, self.bits, self.mode = group_size, bits, mode
        self.weight, self.scales, self.biases = weight, scales, biases
        self.freeze()

    @classmethod
    def from_float(cls, weight: mx.array, group_size: int, bits: int, mode: str = "affine"):
        packed, scales, biases = mx.quantize(weight, group_size, bits, mode=mode)
        return cls(packed, scales, biases, group_size, bits, mode)

    def __call__(self, x: mx.array, indices: mx.array, sorted_indices: bool = False) -> mx.array:
        return mx.gather_qmm(
            x, self.weight, self.scales, self.biases, rhs_indices=indices, transpose=True,
            group_size=self.group_size, bits=self.bits, mode=self.mode,
            sorted_indices=sorted_indices,
        )  # fmt: skip


class SwitchGLU(nn.Module):
    """SwiGLU experts: down(silu(gate(x)) * up(x)) through each token's chosen experts.

    x [..., hidden] and indices [..., k] -> [..., k, hidden] (one output per chosen expert).
    """

    # From this many (token, expert) pairs on, sort them by expert so each expert's weights are
    # read once for all its tokens (prefill); a single decode step is cheaper unsorted.
    sort_threshold = 64

    def __init__(self, hidden_size: int, intermediate_size: int, num_experts: int):
        super().__init__()
        self.gate_proj = SwitchLinear(hidden_size, intermediate_size, num_experts)
        self.up_proj = SwitchLinear(hidden_size, intermediate_size, num_experts)
        self.down_proj = SwitchLinear(intermediate_size, hidden_size, num_experts)

    def _experts(self, x: mx.array, indices: mx.array, sorted_indices: bool) -> mx.array:
        gate = self.gate_proj(x, indices, sorted_indices)
        up = self.up_proj(x, indices, sorted_indices)
        return self.down_proj(nn.silu(gate) * up, indices, sorted_indices)

    def __call__(self, x: mx.array, indices: mx.array) -> mx.array:
        indices = mx.stop_gradient(indices)
        k = indices.shape[-1]
        if indices.size < self.sort_threshold:
            # x as [..., 1, 1, hidden]: a 1-row matrix broadcast against the k chosen experts.
            out = self._experts(mx.expand_dims(x, (-2, -3)), indices, False)
            return out.squeeze(-2)
        flat = indices.flatten()
        order = mx.argsort(flat)
        rows = x.reshape(-1, 1, x.shape[-1])[order // k]  # one row per (token, expert) pair
        out = self._experts(rows, flat[order], True)
        out = out[mx.argsort(order)]  # back to token order
        return out.reshape(*indices.shape, x.shape[-1])


def topk_softmax_routing(logits: mx.array, k: int, normalize: bool) -> tuple[mx.array, mx.array]:
    """(expert indices, weights) [..., k]: softmax over all experts (float32), keep the top k,
    optionally renormalized to sum to 1 (Mixtral always; Qwen-MoE when norm_topk_prob)."""
    probs = mx.softmax(logits.astype(mx.float32), axis=-1)
    indices = mx.stop_gradient(mx.argpartition(-probs, kth=k - 1, axis=-1)[..., :k])
    weights = mx.take_along_axis(probs, indices, axis=-1)
    if normalize:
        weights = weights / weights.sum(axis=-1, keepdims=True)
    return indices, weights


def combine_experts(expert_out: mx.array, weights: mx.array) -> mx.array:
    """Weighted sum over the k chosen experts: [..., k, hidden] x [..., k] -> [..., hidden]."""
    return (expert_out * weights[..., None].astype(expert_out.dtype)).sum(axis=-2)


def stack_experts(weights: dict, prefix: str, num_experts: int, renames: dict[str, str],
                  target: str = "switch_mlp") -> None:  # fmt: skip
    """Stack per-expert tensors `{prefix}.experts.{e}.{src}.{kind}` into
    `{prefix}.{target}.{dst}.{kind}` (in place), for kind in weight/scales/biases.

    Hugging Face checkpoints store one Linear per expert; quantized per-expert tensors (early
    mlx-community conversions) are stacked the same way. An incomplete set is left as it is, so
    the loader's weight check names the stacked tensor as missing.
    """
    for src, dst in renames.items():
        for kind in ("weight", "scales", "biases"):
            names = [f"{prefix}.experts.{e}.{src}.{kind}" for e in range(num_experts)]
            if all(n in weights for n in names):
                stacked = mx.stack([weights.pop(n) for n in names])
                weights[f"{prefix}.{target}.{dst}.{kind}"] = stacked


def unfuse_experts(weights: dict, prefix: str, target: str = "switch_mlp") -> None:
    """transformers 5's in-memory expert layout, `{prefix}.experts.gate_up_proj` [experts,
    2 * intermediate, hidden] (gate rows first) and `{prefix}.experts.down_proj`, into the
    switch layer's three stacked tensors (in place). save_pretrained writes per-expert tensors,
    but checkpoints saved from the fused layout exist too."""
    fused = weights.pop(f"{prefix}.experts.gate_up_proj", None)
    if fused is None:
        return
    gate, up = mx.split(fused, 2, axis=1)
    weights[f"{prefix}.{target}.gate_proj.weight"] = gate
    weights[f"{prefix}.{target}.up_proj.weight"] = up
    weights[f"{prefix}.{target}.down_proj.weight"] = weights.pop(f"{prefix}.experts.down_proj")
