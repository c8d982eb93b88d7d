"""The Qwen3 text encoder of the image pipelines: prompts -> hidden states of chosen layers.

The weights are text_encoder/ (a Qwen3ForCausalLM or a bare Qwen3Model), run through
ominix.models.qwen3's decoder body without its head. Prompts are wrapped in the chat template as
the pipelines do, right-padded to a fixed length with the pad token, and masked so no token
attends to padding (padding rows still see the prompt, as in transformers).
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

from ominix.engine.load import LoadError, check_weights
from ominix.engine.llm.tokenizer import load_tokenizer
from ominix.models import qwen3


class TextEncoder:
    def __init__(self, body: nn.Module, tokenizer, config: dict):
        self.body = body
        self.tokenizer = tokenizer
        self.config = config
        self.dtype = None  # activation dtype (None: the weights'), set by the pipeline
        pad = tokenizer.special_tokens.get("pad_token") or "<|endoftext|>"
        self.pad_id = tokenizer.token_to_id(pad)
        if self.pad_id is None:
            raise LoadError(f"the tokenizer has no pad token {pad!r}")

    @property
    def num_layers(self) -> int:
        return len(self.body.layers)

    def tokenize(self, prompts: list[str], max_length: int, **template) -> tuple[mx.array, mx.array]:
        rows = []
        for prompt in prompts:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, **template
            )
            rows.append(self.tokenizer.encode(text)[:max_length])
        lengths = [len(r) for r in rows]
        ids = [r + [self.pad_id] * (max_length - len(r)) for r in rows]
        valid = mx.arange(max_length)[None] < mx.array(lengths)[:, None]
        return mx.array(ids), valid

    def hidden_states(self, ids: mx.array, valid: mx.array, layers: list[int]) -> list[mx.array]:
        """transformers' `hidden_states[k]` for each k: the input of layer k (k = num_layers:
        the final norm's output; negative k counts from the end). Runs only the layers needed."""
        n = self.num_layers
        wanted = [k + n + 1 if k < 0 else k for k in layers]
        if any(not 0 <= k <= n for k in wanted):
            raise ValueError(f"hidden state layers {layers} out of range for {n} layers")
        length = ids.shape[1]
        causal = mx.arange(length)[:, None] >= mx.arange(length)[None]
        mask = (causal[None] & valid[:, None, :])[:, None]  # (B, 1, L, L)
        h = self.body.embed_tokens(ids)
        if self.dtype is not None:
            h = h.astype(self.dtype)
        states = {0: h}
        for i, layer in enumerate(self.body.layers[: max(wanted)]):
            h = layer(h, mask)
            states[i + 1] = h
        if n in wanted:
            states[n] = self.body.norm(h)
        return [states[k] for k in wanted]


def load_text_encoder(path: Path, tokenizer_path: Path) -> TextEncoder:
    from ominix.engine.image.pipeline import read_component

    config, weights, origin = read_component(path)
    if config.get("model_type") != "qwen3":
        raise LoadError(f"{path}: text encoder model_type {config.get('model_type')!r}; expected qwen3")
    args = qwen3.ModelArgs.from_dict(config)
    body = qwen3.Qwen3Model(args)
    weights = {name.removeprefix("model."): w for name, w in weights.items()
               if not name.startswith("lm_head.")}  # fmt: skip
    from ominix.engine.load import quantize_like_checkpoint, read_quantization

    quantization = read_quantization(config)
    if quantization is not None:
        quantize_like_checkpoint(body, quantization, weights)
    check_weights(body, weights, origin)
    body.load_weights(list(weights.items()), strict=True)
    return TextEncoder(body, load_tokenizer(tokenizer_path), config)
