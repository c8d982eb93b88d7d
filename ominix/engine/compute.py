"""How layers compute: the activation dtype and, on a CPU, the BLAS path for prefill.

Quantized layers. Checkpoints published by mlx-community store quantization scales and biases in
bf16. MLX's CPU kernels are ~8x slower for quantized matmuls whose scales are bf16, and quantized
matmuls never go through BLAS. Measured on a small Qwen3 (4-bit, group 64, CPU with OpenBLAS):

  scales cast to float32 once at load    decode 10.4 tok/s, +11% weight memory
  scales kept, cast to float32 at use    decode 10.3 tok/s, weight memory unchanged
  prefill through quantized_matmul       49 tok/s
  prefill through dequantize + matmul    780 tok/s (the dense matmul runs on BLAS)

So quantized layers keep the stored arrays, cast scales and biases to the activation dtype inside
each call (free next to reading the packed weights), and, where the loader asks for it (the CPU),
compute inputs of many rows by dequantizing the weight for a dense matmul.

bf16/fp16 layers. MLX's CPU matmul only reaches BLAS in float32, so on a CPU a prefill chunk runs
its dense layers in float32 (weight upcast per call, one layer at a time) and casts the result back:
measured 90 -> 340 tok/s prefill; decoding (one row) stays in the checkpoint's dtype.

On Metal the loader passes the checkpoint's own dtype and no dense path, so nothing changes there.
The classes below are swapped onto already-loaded modules (`__class__`): they add behaviour and two
plain attributes, and never copy the weights.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ominix.models.moe import QuantizedSwitchLinear


class _Compute:
    """The two settings every compute-dtype quantized layer carries."""

    compute_dtype: mx.Dtype = mx.float32
    dense_min_rows: int = 0  # 0: never dequantize; else from this many input rows on

    def _scales_biases(self) -> tuple[mx.array, mx.array | None]:
        biases = self.get("biases")
        scales = self["scales"].astype(self.compute_dtype)
        return scales, None if biases is None else biases.astype(self.compute_dtype)

    def _matmul(self, x: mx.array) -> mx.array:
        """x @ W.T for the quantized W, in the compute dtype."""
        x = x.astype(self.compute_dtype)
        scales, biases = self._scales_biases()
        if self.dense_min_rows and x.size >= self.dense_min_rows * x.shape[-1]:
            w = mx.dequantize(self["weight"], scales, biases, self.group_size, self.bits, mode=self.mode)
            return x @ w.T
        return mx.quantized_matmul(
            x, self["weight"], scales=scales, biases=biases, transpose=True,
            group_size=self.group_size, bits=self.bits, mode=self.mode,
        )  # fmt: skip


class ComputeQuantizedLinear(_Compute, nn.QuantizedLinear):
    def __call__(self, x: mx.array) -> mx.array:
        y = self._matmul(x)
        return y + self["bias"] if "bias" in self else y


class ComputeQuantizedEmbedding(_Compute, nn.QuantizedEmbedding):
    def __call__(self, x: mx.array) -> mx.array:
        biases = self.get("biases")
        return mx.dequantize(
            self["weight"][x], self["scales"][x].astype(self.compute_dtype),
            None if biases is None else biases[x].astype(self.compute_dtype),
            group_size=self.group_size, bits=self.bits, mode=self.mode,
        )  # fmt: skip

    def as_linear(self, x: mx.array) -> mx.array:
        return self._matmul(x)


class ComputeQuantizedSwitchLinear(_Compute, QuantizedSwitchLinear):
    def __call__(self, x: mx.array, indices: mx.array, sorted_indices: bool = False) -> mx.array:
        scales, biases = self._scales_biases()
        return mx.gather_qmm(
            x.astype(self.compute_dtype), self["weight"], scales, biases, rhs_indices=indices,
            transpose=True, group_size=self.group_size, bits=self.bits, mode=self.mode,
            sorted_indices=sorted_indices,
        )  # fmt: skip


class UpcastLinear(_Compute, nn.Linear):
    """A bf16/fp16 Linear whose many-row inputs are multiplied in float32 (BLAS on a CPU)."""

    def __call__(self, x: mx.array) -> mx.array:
        if not self.dense_min_rows or x.size < self.dense_min_rows * x.shape[-1]:
            return super().__call__(x)
        y = x.astype(mx.float32) @ self["weight"].astype(mx.float32).T
        if "bias" in self:
            y = y + self["bias"]
        return y.astype(x.dtype)


_QUANTIZED_CLASS = {
    nn.QuantizedLinear: ComputeQuantizedLinear,
    nn.QuantizedEmbedding: ComputeQuantizedEmbedding,
    QuantizedSwitchLinear: ComputeQuantizedSwitchLinear,
}


def _swap(model: nn.Module, classes: dict, dtype: mx.Dtype, dense_min_rows: int) -> int:
    changed = 0
    for _, module in model.named_modules():
        cls = classes.get(type(module))
        if cls is None:
            continue
        module.__class__ = cls
        module.compute_dtype = dtype
        module.dense_min_rows = dense_min_rows
        changed += 1
    return changed


def use_compute_dtype(model: nn.Module, dtype: mx.Dtype, dense_min_rows: int = 0) -> int:
    """Make every quantized layer of `model` compute in `dtype`; returns how many were changed."""
    return _swap(model, _QUANTIZED_CLASS, dtype, dense_min_rows)


def upcast_prefill(model: nn.Module, dense_min_rows: int) -> int:
    """Let every plain Linear run inputs of `dense_min_rows` rows or more in float32."""
    return _swap(model, {nn.Linear: UpcastLinear}, mx.float32, dense_min_rows)


def is_quantization_param(path: str, params: dict) -> bool:
    """True for the scales/biases of a quantized layer (`params` is the flat parameter dict)."""
    layer, _, leaf = path.rpartition(".")
    return leaf in ("scales", "biases") and f"{layer}.weight" in params and (
        params[f"{layer}.weight"].dtype == mx.uint32
    )
