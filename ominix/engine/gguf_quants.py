"""GGML block formats -> MLX tensors, in numpy (no MLX import here; gguf.py wraps the results).

Q4_0, Q4_1 and Q8_0 blocks are 32 values sharing one scale (and a minimum for Q4_1): exactly MLX
affine quantization with group 32, so they are repacked, not dequantized. Q4_K's 32-value
sub-blocks are the same thing one level down (scale d*sc, bias -dmin*m), so it is repacked too.
The other K-quants (16-value sub-blocks with 6- or 4-bit sub-scales) have no MLX form and are
dequantized. The block layouts follow ggml's `ggml-quants.c` reference dequantizers.
"""

from __future__ import annotations

import numpy as np

# ggml type id -> (name, values per block, bytes per block)
TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 30: ("BF16", 1, 2),
    2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34), 10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210),
}  # fmt: skip
# Types kept as MLX affine quantization: name -> bits (group size 32 for all).
AFFINE_BITS = {"Q4_0": 4, "Q4_1": 4, "Q8_0": 8, "Q4_K": 4}


def _f16(blocks: np.ndarray, start: int) -> np.ndarray:
    """The fp16 field at byte `start` of every block, as float32 [..., 1]."""
    return blocks[..., start:start + 2].copy().view(np.float16).astype(np.float32)


def _pack(q: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned codes [..., n] -> MLX's packing: uint32 words, element i at bits (i % k) * bits
    of word i // k, lowest first (k = 32 / bits; 4 and 8 bits only)."""
    per_word = 32 // bits
    q = q.astype(np.uint32).reshape(*q.shape[:-1], -1, per_word)
    shifts = (np.arange(per_word, dtype=np.uint32) * bits)
    return np.bitwise_or.reduce(q << shifts, axis=-1)


def _nibbles_32(qs: np.ndarray) -> np.ndarray:
    """16 bytes -> 32 codes in ggml's Q4_0/Q4_1 order: low nibbles are values 0-15, high 16-31."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _k4_scales(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K's 12 bytes -> 8 six-bit scales and 8 six-bit mins (ggml's get_scale_min_k4)."""
    raw = raw.astype(np.uint8)
    low_sc, low_m, high = raw[..., 0:4], raw[..., 4:8], raw[..., 8:12]
    sc = np.concatenate([low_sc & 63, (high & 0x0F) | ((low_sc >> 6) << 4)], axis=-1)
    m = np.concatenate([low_m & 63, (high >> 4) | ((low_m >> 6) << 4)], axis=-1)
    return sc.astype(np.float32), m.astype(np.float32)


# --- affine (repacked) --------------------------------------------------------------------------


def affine(blocks: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blocks [rows, n_blocks, bytes] -> (packed uint32 [rows, cols*bits/32], scales, biases
    [rows, cols/32] float32), with value = scale * code + bias."""
    rows = blocks.shape[0]
    if kind == "Q8_0":
        d = _f16(blocks, 0)
        q = blocks[..., 2:34].view(np.int8).astype(np.int16) + 128
        scales, biases = d, -128.0 * d
    elif kind == "Q4_0":
        d = _f16(blocks, 0)
        q, scales, biases = _nibbles_32(blocks[..., 2:18]), d, -8.0 * d
    elif kind == "Q4_1":
        q, scales, biases = _nibbles_32(blocks[..., 4:20]), _f16(blocks, 0), _f16(blocks, 2)
    elif kind == "Q4_K":
        d, dmin = _f16(blocks, 0), _f16(blocks, 2)
        sc, m = _k4_scales(blocks[..., 4:16])
        qs = blocks[..., 16:144].reshape(*blocks.shape[:2], 4, 32)
        # Each 32-byte chunk holds sub-block 2j in its low nibbles and 2j+1 in its high ones.
        q = np.stack([qs & 0x0F, qs >> 4], axis=-2).reshape(*blocks.shape[:2], 8, 32)
        scales, biases = (d * sc)[..., None], (-dmin * m)[..., None]
        return (_pack(q.reshape(rows, -1), 4), scales.reshape(rows, -1),
                biases.reshape(rows, -1))  # fmt: skip
    else:
        raise ValueError(f"{kind} has no MLX affine form")
    bits = AFFINE_BITS[kind]
    return _pack(q.reshape(rows, -1), bits), scales.reshape(rows, -1), biases.reshape(rows, -1)


# --- dequantized ------------------------------------------------------------------------------


def _q5_0(b):
    d, qh = _f16(b, 0), b[..., 2:6].copy().view(np.uint32)
    high = ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8) << 4
    return d * ((_nibbles_32(b[..., 6:22]) | high).astype(np.float32) - 16)


def _q5_1(b):
    d, m, qh = _f16(b, 0), _f16(b, 2), b[..., 4:8].copy().view(np.uint32)
    high = ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8) << 4
    return d * (_nibbles_32(b[..., 8:24]) | high).astype(np.float32) + m


def _q2_k(b):
    scales, qs = b[..., 0:16], b[..., 16:80].reshape(*b.shape[:-1], 2, 1, 32)
    d, dmin = _f16(b, 80), _f16(b, 82)
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8)[:, None]
    q = ((qs >> shifts) & 3).reshape(*b.shape[:-1], 16, 16)  # [half, shift, 32] -> 16 of 16
    dl = d * (scales & 0x0F).astype(np.float32)
    ml = dmin * (scales >> 4).astype(np.float32)
    return (dl[..., None] * q - ml[..., None]).reshape(*b.shape[:-1], 256)


def _q3_k_scales(raw: np.ndarray) -> np.ndarray:
    """12 bytes -> 16 signed six-bit scales (ggml's kmask unpacking, written per byte)."""
    low, high = raw[..., 0:8], raw[..., 8:12]
    low4 = np.concatenate([low & 0x0F, low >> 4], axis=-1)  # scales 0-7, then 8-15
    high2 = np.concatenate([(high >> s) & 3 for s in (0, 2, 4, 6)], axis=-1)
    return (low4 | (high2 << 4)).astype(np.float32) - 32


def _q3_k(b):
    hmask, qs = b[..., 0:32], b[..., 32:96].reshape(*b.shape[:-1], 2, 1, 32)
    d = _f16(b, 108)
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8)[:, None]
    low = ((qs >> shifts) & 3).astype(np.int8)  # [2, 4, 32]
    bit = np.arange(8, dtype=np.uint8).reshape(2, 4, 1)
    high = ((hmask[..., None, None, :] >> bit) & 1).astype(np.int8)  # set bit: no -4
    q = (low - 4 * (1 - high)).reshape(*b.shape[:-1], 16, 16).astype(np.float32)
    return (d * _q3_k_scales(b[..., 96:108]))[..., None] * q


def _q5_k(b):
    d, dmin = _f16(b, 0), _f16(b, 2)
    sc, m = _k4_scales(b[..., 4:16])
    qh, qs = b[..., 16:48], b[..., 48:176].reshape(*b.shape[:-1], 4, 32)
    low = np.stack([qs & 0x0F, qs >> 4], axis=-2).reshape(*b.shape[:-1], 8, 32)
    high = (qh[..., None, :] >> np.arange(8, dtype=np.uint8)[:, None]) & 1
    q = (low | (high << 4)).astype(np.float32)
    return (d * sc)[..., None] * q - (dmin * m)[..., None]


def _q6_k(b):
    ql = b[..., 0:128].reshape(*b.shape[:-1], 2, 2, 32)  # [half, first/second 32 bytes, 32]
    qh = b[..., 128:192].reshape(*b.shape[:-1], 2, 1, 32)
    sc = b[..., 192:208].view(np.int8).astype(np.float32).reshape(*b.shape[:-1], 2, 8)
    d = _f16(b, 208)
    low = np.concatenate([ql & 0x0F, ql >> 4], axis=-2)  # [half, 4, 32]: q1, q2, q3, q4
    high = (qh >> np.array([0, 2, 4, 6], dtype=np.uint8)[:, None]) & 3
    q = (low | (high << 4)).astype(np.float32) - 32  # [half, 4, 32]
    # Value l of quarter k uses sub-scale k*2 + l // 16 (scales of 16 values).
    q = q.reshape(*b.shape[:-1], 2, 8, 16)
    return (d[..., None, None] * sc[..., None] * q).reshape(*b.shape[:-1], 256)


_DEQUANT = {"Q5_0": _q5_0, "Q5_1": _q5_1, "Q2_K": _q2_k, "Q3_K": _q3_k, "Q5_K": _q5_k,
            "Q6_K": _q6_k}  # fmt: skip


def dequantize(blocks: np.ndarray, kind: str) -> np.ndarray:
    """Blocks [rows, n_blocks, bytes] -> float32 [rows, n_blocks * block_values]."""
    rows = blocks.shape[0]
    if kind in AFFINE_BITS:
        packed, scales, biases = affine(blocks, kind)
        bits = AFFINE_BITS[kind]
        per_word = 32 // bits
        codes = (packed[..., None] >> (np.arange(per_word, dtype=np.uint32) * bits)) & (
            (1 << bits) - 1)
        codes = codes.reshape(rows, -1, 32).astype(np.float32)
        return (codes * scales[..., None] + biases[..., None]).reshape(rows, -1)
    if kind not in _DEQUANT:
        raise ValueError(f"GGML type {kind} is not supported")
    return _DEQUANT[kind](blocks).reshape(rows, -1)
