"""Qwen3-VL (Qwen/Qwen3-VL-*): a ViT with 2D rope and DeepStack taps, a patch merger, and the
Qwen3 decoder with interleaved multimodal rope (mrope).

The module tree is mlx-vlm's layout (`vision_tower.*`, `language_model.model.*`,
`language_model.lm_head`), what mlx-community publishes; `sanitize()` maps the transformers layout
(`model.visual.*`, `model.language_model.*`, `lm_head`) and a PyTorch conv weight onto it.

Images enter through `encode_image()` (one image -> merged features + DeepStack features) and
`media_inputs()` (the prompt's image placeholders -> a `Media`: where each feature goes, the 3D
rope positions of the whole prompt, the rope delta of the text after it). `__call__` takes any
chunk of the prompt with its `Media`, so a prompt with images prefills in chunks like any other.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ominix.models import qwen3
from ominix.models.layers import MLP, Attention, attention_mask

# --- config -----------------------------------------------------------------------------------


@dataclass
class VisionArgs:
    depth: int = 27
    hidden_size: int = 1152
    hidden_act: str = "gelu_pytorch_tanh"
    intermediate_size: int = 4304
    num_heads: int = 16
    in_channels: int = 3
    patch_size: int = 16
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    out_hidden_size: int = 3584
    num_position_embeddings: int = 2304
    deepstack_visual_indexes: list = field(default_factory=lambda: [8, 16, 24])
    rope_theta: float = 10000.0

    @classmethod
    def from_dict(cls, config: dict) -> "VisionArgs":
        known = {f.name for f in dataclasses.fields(cls)}
        args = {k: v for k, v in config.items() if k in known}
        theta = (config.get("rope_parameters") or {}).get("rope_theta")
        if theta:
            args["rope_theta"] = theta
        return cls(**args)


@dataclass
class ModelArgs:
    model_type: str
    text: qwen3.ModelArgs
    vision: VisionArgs
    mrope_section: tuple = (24, 20, 20)
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652

    # What the engine reads from any chat model's args.
    @property
    def vocab_size(self) -> int:
        return self.text.vocab_size

    @property
    def max_position_embeddings(self) -> int:
        return self.text.max_position_embeddings

    @classmethod
    def from_dict(cls, config: dict) -> "ModelArgs":
        text_config = dict(config.get("text_config") or {})
        if "tie_word_embeddings" in config:  # Qwen3-VL sets it at the top level
            text_config.setdefault("tie_word_embeddings", config["tie_word_embeddings"])
        rope = {**(text_config.get("rope_parameters") or {}), **(text_config.get("rope_scaling") or {})}
        section = tuple(rope.get("mrope_section") or (24, 20, 20))
        text_config.pop("rope_scaling", None)  # mrope is handled here, not as a rope scaling
        params = dict(text_config.get("rope_parameters") or {})
        text_config["rope_parameters"] = {"rope_theta": params.get("rope_theta") or rope.get("rope_theta")
                                          or text_config.get("rope_theta") or 5000000.0}
        text = qwen3.ModelArgs.from_dict({"model_type": "qwen3", **text_config})
        vision = VisionArgs.from_dict(config.get("vision_config") or {})
        if sum(section) * 2 != text.head_dim:
            raise ValueError(f"mrope_section {list(section)} does not cover head_dim {text.head_dim}")
        ids = {k: config[k] for k in ("image_token_id", "video_token_id", "vision_start_token_id") if k in config}
        return cls(config.get("model_type", "qwen3_vl"), text, vision, section, **ids)


# --- vision tower -----------------------------------------------------------------------------


def rotate_half(x: mx.array) -> mx.array:
    half = x.shape[-1] // 2
    return mx.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def _act(name: str):
    # transformers' "gelu_pytorch_tanh" is the tanh approximation; "gelu" is exact (erf).
    return {"gelu_pytorch_tanh": nn.gelu_approx, "gelu": nn.gelu, "silu": nn.silu}[name]


class PatchEmbed(nn.Module):
    """Conv3d with stride == kernel over (temporal, patch, patch): one matmul per patch. The
    weight keeps MLX's conv layout [out, T, P, P, C]."""

    def __init__(self, a: VisionArgs):
        super().__init__()
        self._kernel = (a.in_channels, a.temporal_patch_size, a.patch_size, a.patch_size)
        self.proj = nn.Conv3d(a.in_channels, a.hidden_size, self._kernel[1:], stride=self._kernel[1:])

    def __call__(self, patches: mx.array) -> mx.array:
        # patches [N, C*T*P*P] in (C, T, P, P) order -> channels last, like the weight
        x = patches.reshape(-1, *self._kernel).transpose(0, 2, 3, 4, 1).reshape(patches.shape[0], -1)
        w = self.proj.weight.reshape(self.proj.weight.shape[0], -1)
        return x.astype(w.dtype) @ w.T + self.proj.bias


class VisionAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def __call__(self, x: mx.array, cos: mx.array, sin: mx.array) -> mx.array:
        N = x.shape[0]
        q, k, v = self.qkv(x).reshape(N, 3, self.heads, -1).transpose(1, 2, 0, 3)  # each [H, N, D]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        out = mx.fast.scaled_dot_product_attention(q[None], k[None], v[None], scale=self.scale)
        return self.proj(out[0].transpose(1, 0, 2).reshape(N, -1))


class VisionMLP(nn.Module):
    def __init__(self, a: VisionArgs):
        super().__init__()
        self.linear_fc1 = nn.Linear(a.hidden_size, a.intermediate_size)
        self.linear_fc2 = nn.Linear(a.intermediate_size, a.hidden_size)
        self.act = _act(a.hidden_act)

    def __call__(self, x: mx.array) -> mx.array:
        return self.linear_fc2(self.act(self.linear_fc1(x)))


class VisionBlock(nn.Module):
    def __init__(self, a: VisionArgs):
        super().__init__()
        self.norm1 = nn.LayerNorm(a.hidden_size, eps=1e-6)
        self.norm2 = nn.LayerNorm(a.hidden_size, eps=1e-6)
        self.attn = VisionAttention(a.hidden_size, a.num_heads)
        self.mlp = VisionMLP(a)

    def __call__(self, x, cos, sin):
        x = x + self.attn(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nn.Module):
    """merge x merge neighbouring patches -> one token of the decoder's width. The DeepStack
    mergers normalise after concatenating the patches, the final one before."""

    def __init__(self, a: VisionArgs, postshuffle_norm: bool):
        super().__init__()
        self.width = a.hidden_size * a.spatial_merge_size**2
        self.postshuffle_norm = postshuffle_norm
        self.norm = nn.LayerNorm(self.width if postshuffle_norm else a.hidden_size, eps=1e-6)
        self.linear_fc1 = nn.Linear(self.width, self.width)
        self.linear_fc2 = nn.Linear(self.width, a.out_hidden_size)

    def __call__(self, x: mx.array) -> mx.array:
        x = self.norm(x.reshape(-1, self.width)) if self.postshuffle_norm else self.norm(x).reshape(-1, self.width)
        return self.linear_fc2(nn.gelu(self.linear_fc1(x)))


def _merge_order(h: int, w: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of each patch in the processor's order: merge blocks row-major, then the
    m x m patches inside a block."""
    rows = np.arange(h).reshape(h // m, m, 1, 1) + np.zeros((1, 1, w // m, m), np.int64)
    cols = np.arange(w).reshape(1, 1, w // m, m) + np.zeros((h // m, m, 1, 1), np.int64)
    return rows.transpose(0, 2, 1, 3).reshape(-1), cols.transpose(0, 2, 1, 3).reshape(-1)


def _bilinear_taps(index: np.ndarray, size: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """align_corners=True bilinear resampling of a `side`-long table to `size` points: the two
    source rows of each point and their weights."""
    src = index * (side - 1) / max(size - 1, 1)
    floor = np.floor(src)
    taps = np.clip(floor[:, None].astype(np.int64) + np.array([0, 1]), 0, side - 1)
    weights = np.clip(1 - np.abs(src[:, None] - floor[:, None] - np.array([0, 1])), 0, None)
    return taps, weights


class VisionModel(nn.Module):
    def __init__(self, a: VisionArgs):
        super().__init__()
        self.args = a
        self.patch_embed = PatchEmbed(a)
        self.pos_embed = nn.Embedding(a.num_position_embeddings, a.hidden_size)
        self.side = int(a.num_position_embeddings**0.5)
        self.blocks = [VisionBlock(a) for _ in range(a.depth)]
        self.merger = PatchMerger(a, postshuffle_norm=False)
        self.deepstack_merger_list = [PatchMerger(a, postshuffle_norm=True) for _ in a.deepstack_visual_indexes]
        head_dim = a.hidden_size // a.num_heads
        quarter = head_dim // 2
        self._inv_freq = 1.0 / (a.rope_theta ** (np.arange(0, quarter, 2, dtype=np.float32) / quarter))

    def _positions(self, grid: tuple[int, int, int]):
        """Learned position embedding resampled to the grid, and 2D rope cos/sin, per patch."""
        t, h, w = grid
        rows, cols = _merge_order(h, w, self.args.spatial_merge_size)
        h_taps, h_w = _bilinear_taps(rows.astype(np.float32), h, self.side)
        w_taps, w_w = _bilinear_taps(cols.astype(np.float32), w, self.side)
        index = (h_taps[:, :, None] * self.side + w_taps[:, None, :]).reshape(-1, 4)
        weight = (h_w[:, :, None] * w_w[:, None, :]).reshape(-1, 4)
        table = self.pos_embed(mx.array(index))
        pos = (table * mx.array(weight, dtype=table.dtype)[..., None]).sum(axis=1)
        freqs = np.concatenate([rows[:, None] * self._inv_freq, cols[:, None] * self._inv_freq], axis=-1)
        emb = np.concatenate([freqs, freqs], axis=-1)
        pos, cos, sin = (mx.tile(x, (t, 1)) for x in (pos, mx.array(np.cos(emb)), mx.array(np.sin(emb))))
        return pos, cos, sin

    def __call__(self, patches: mx.array, grid: tuple[int, int, int]) -> tuple[mx.array, list[mx.array]]:
        """One image's patches [t*h*w, C*T*P*P] -> (merged features [t*h*w/m^2, out], DeepStack
        features, one per tapped block). Each frame attends only to itself."""
        t, h, w = grid
        x = self.patch_embed(patches)
        pos, cos, sin = self._positions(grid)
        x = x + pos.astype(x.dtype)
        cos, sin = cos.astype(x.dtype), sin.astype(x.dtype)
        frames = [slice(i * h * w, (i + 1) * h * w) for i in range(t)]
        taps = []
        for i, block in enumerate(self.blocks):
            if t == 1:
                x = block(x, cos, sin)
            else:
                x = mx.concatenate([block(x[f], cos[f], sin[f]) for f in frames])
            if i in self.args.deepstack_visual_indexes:
                taps.append(self.deepstack_merger_list[self.args.deepstack_visual_indexes.index(i)](x))
        return self.merger(x), taps


# --- text decoder -----------------------------------------------------------------------------


@dataclass
class Media:
    """A prompt's images, placed: `index[i]` is the feature row of prompt position i (-1 for
    text); `positions` [3, length] the t/h/w rope positions; text after the prompt continues at
    position offset + `rope_delta`."""

    index: mx.array
    embeds: mx.array
    deepstack: list
    positions: mx.array
    rope_delta: int
    length: int


class MRoPEAttention(Attention):
    """Qwen3 attention whose rotation comes precomputed (cos, sin) from the 3D positions."""

    def __call__(self, x: mx.array, mask, cache, rope) -> mx.array:
        B, L, _ = x.shape
        q = self.q_norm(self.q_proj(x).reshape(B, L, self.n_heads, -1)).transpose(0, 2, 1, 3)
        k = self.k_norm(self.k_proj(x).reshape(B, L, self.n_kv_heads, -1)).transpose(0, 2, 1, 3)
        v = self.v_proj(x).reshape(B, L, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        cos, sin = rope
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(B, L, -1))


class DecoderLayer(nn.Module):
    def __init__(self, a: qwen3.ModelArgs):
        super().__init__()
        self.self_attn = MRoPEAttention(a.hidden_size, a.num_attention_heads, a.num_key_value_heads, a.head_dim,
                                        None, **a.attention_options())
        self.mlp = MLP(a.hidden_size, a.intermediate_size)
        self.input_layernorm = nn.RMSNorm(a.hidden_size, eps=a.rms_norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(a.hidden_size, eps=a.rms_norm_eps)

    def __call__(self, x, mask, cache, rope):
        h = x + self.self_attn(self.input_layernorm(x), mask, cache, rope)
        return h + self.mlp(self.post_attention_layernorm(h))


class TextModel(nn.Module):
    def __init__(self, a: qwen3.ModelArgs, section: tuple):
        super().__init__()
        self.embed_tokens = nn.Embedding(a.vocab_size, a.hidden_size)
        self.layers = [DecoderLayer(a) for _ in range(a.num_hidden_layers)]
        self.norm = nn.RMSNorm(a.hidden_size, eps=a.rms_norm_eps)
        half = a.head_dim // 2
        self._inv_freq = mx.array(1.0 / (a.rope_theta ** (np.arange(0, a.head_dim, 2, dtype=np.float32) / a.head_dim)),
                                  dtype=mx.float32)
        # Interleaved mrope: frequency j follows the h axis for j = 1, 4, ... < 3*section[1],
        # the w axis for j = 2, 5, ... < 3*section[2], the t axis otherwise.
        axis = np.zeros(half, np.int64)
        axis[1 : section[1] * 3 : 3] = 1
        axis[2 : section[2] * 3 : 3] = 2
        self._axis_onehot = mx.array(np.eye(3, dtype=np.float32)[axis].T)  # [3, half]

    def rope(self, positions: mx.array, dtype) -> tuple[mx.array, mx.array]:
        """positions [B, 3, L] -> cos, sin [B, 1, L, head_dim]."""
        angles = positions.astype(mx.float32)[..., None] * self._inv_freq  # [B, 3, L, half]
        freqs = (angles * self._axis_onehot[None, :, None, :]).sum(axis=1)
        emb = mx.concatenate([freqs, freqs], axis=-1)[:, None]
        return mx.cos(emb).astype(dtype), mx.sin(emb).astype(dtype)

    def __call__(self, inputs: mx.array, cache=None, media: Media | None = None) -> mx.array:
        B, L = inputs.shape
        h = self.embed_tokens(inputs)
        cache = cache if cache is not None else [None] * len(self.layers)
        first = cache[0]
        offset = first.offset if first is not None else 0
        rows = None
        if media is not None and isinstance(offset, int) and offset < media.length:
            if offset + L > media.length:
                raise ValueError("a chunk may not run past the end of the prompt that carries images")
            rows = media.index[offset : offset + L]
            positions = media.positions[None, :, offset : offset + L]
            visual = (rows >= 0)[None, :, None]
            picked = mx.maximum(rows, 0)
            h = mx.where(visual, media.embeds[picked][None].astype(h.dtype), h)
        else:
            delta = media.rope_delta if media is not None else getattr(first, "rope_delta", 0)
            start = mx.array(offset) + mx.array(delta)
            steps = mx.arange(L)
            positions = (start.reshape(-1, 1) + steps)[:, None, :] * mx.ones((1, 3, 1), mx.int32)
            positions = mx.broadcast_to(positions, (B, 3, L)) if positions.shape[0] == 1 else positions
        rope = self.rope(positions, h.dtype)
        mask = attention_mask(L, first)
        for i, (layer, layer_cache) in enumerate(zip(self.layers, cache)):
            h = layer(h, mask, layer_cache, rope)
            if rows is not None and i < len(media.deepstack):
                # DeepStack: early decoder layers get the vision tower's intermediate features added
                # at the image positions.
                add = media.deepstack[i][picked][None].astype(h.dtype)
                h = mx.where(visual, h + add, h)
        return self.norm(h)


class LanguageModel(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args.text
        self.model = TextModel(args.text, args.mrope_section)
        if not args.text.tie_word_embeddings:
            self.lm_head = nn.Linear(args.text.hidden_size, args.text.vocab_size, bias=False)

    def __call__(self, inputs, cache=None, media=None):
        h = self.model(inputs, cache, media)
        if self.args.tie_word_embeddings:
            return self.model.embed_tokens.as_linear(h)
        return self.lm_head(h)


# --- the whole model ----------------------------------------------------------------------------


class Model(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.model_type = args.model_type
        self.vision_tower = VisionModel(args.vision)
        self.language_model = LanguageModel(args)

    def __call__(self, inputs: mx.array, cache=None, media: Media | None = None) -> mx.array:
        """inputs [B, L] token ids -> logits [B, L, vocab]. With `media`, the chunk starts at the
        cache's offset into the prompt that `media` describes."""
        return self.language_model(inputs, cache, media)

    @property
    def layers(self) -> list:
        return self.language_model.model.layers

    # -- images --

    def image_tokens(self, grid: tuple[int, int, int]) -> int:
        """How many placeholder tokens one image with this patch grid takes in the prompt."""
        t, h, w = grid
        return t * h * w // self.args.vision.spatial_merge_size**2

    def encode_image(self, patches, grid: tuple[int, int, int]) -> tuple[mx.array, list[mx.array]]:
        dtype = self.vision_tower.patch_embed.proj.bias.dtype
        return self.vision_tower(mx.array(patches).astype(dtype), tuple(int(g) for g in grid))

    def media_inputs(self, prompt: list[int], grids: list, features: list) -> Media:
        """Place encoded images (`features`: (embeds, deepstack) per image, in prompt order) at the
        image placeholder tokens of `prompt`."""
        ids = np.asarray(prompt)
        visual = ids == self.args.image_token_id
        total = sum(self.image_tokens(g) for g in grids)
        if int(visual.sum()) != total:
            raise ValueError(f"the prompt has {int(visual.sum())} image tokens, its images need {total}")
        positions, delta = self.rope_index(ids, grids)
        index = np.full(len(ids), -1, np.int64)
        index[visual] = np.arange(total)
        embeds = mx.concatenate([f[0] for f in features])
        deepstack = [mx.concatenate([f[1][i] for f in features]) for i in range(len(features[0][1]))]
        return Media(mx.array(index), embeds, deepstack, mx.array(positions), delta, len(ids))

    def rope_index(self, ids: np.ndarray, grids: list) -> tuple[np.ndarray, int]:
        """3D positions [3, len(ids)]: text advances all three axes together; an image's tokens
        take (start, start + row, start + col), and the text after it resumes at start +
        max(rows, cols). Also the delta between the next position and the prompt length."""
        m = self.args.vision.spatial_merge_size
        out = np.zeros((3, len(ids)), np.int64)
        i, pos, images = 0, 0, iter(grids)
        while i < len(ids):
            if ids[i] != self.args.image_token_id:
                out[:, i] = pos
                i, pos = i + 1, pos + 1
                continue
            t, h, w = (int(g) for g in next(images))
            gh, gw = h // m, w // m
            n = t * gh * gw
            tt, hh, ww = np.meshgrid(np.arange(t), np.arange(gh), np.arange(gw), indexing="ij")
            out[:, i : i + n] = np.stack([tt.ravel(), hh.ravel(), ww.ravel()]) + pos
            i, pos = i + n, pos + max(gh, gw)
        return out, int(out.max()) + 1 - len(ids) if len(ids) else 0

    # -- loading --

    def sanitize(self, weights: dict) -> dict:
        out = {}
        for name, w in weights.items():
            if "rotary_emb.inv_freq" in name or name.endswith("position_ids"):
                continue
            if name.startswith("model.language_model."):
                name = "language_model.model." + name[len("model.language_model."):]
            elif name.startswith("model.visual."):
                name = "vision_tower." + name[len("model.visual."):]
            elif name.startswith("lm_head."):
                name = "language_model." + name
            if name == "vision_tower.patch_embed.proj.weight" and w.shape[1] == self.args.vision.in_channels \
                    and w.shape[-1] != self.args.vision.in_channels:
                w = w.transpose(0, 2, 3, 4, 1)  # PyTorch [out, C, T, P, P] -> MLX [out, T, P, P, C]
            if self.args.text.tie_word_embeddings and name.startswith("language_model.lm_head."):
                continue
            out[name] = w
        return out
