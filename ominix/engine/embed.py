"""Sentence embeddings: BERT encoders (mean pooling) and Qwen3-Embedding (last-token pooling).

The pooling comes from the checkpoint's sentence-transformers files (modules.json,
1_Pooling/config.json) when present, else from the architecture's usual choice. Every vector is
L2-normalized, as OpenAI's embeddings are; `dimensions` truncates Matryoshka-trained models
(Qwen3-Embedding) and renormalizes.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np

from ominix.engine.load import (
    LoadError,
    apply_compute_dtype,
    load_model,
    quantize_like_checkpoint,
    read_config,
    read_quantization,
    read_weights,
)
from ominix.engine.worker import StepJob
from ominix.models import get_architecture

BATCH = 16  # sequences per forward pass


class EmbeddingInputError(ValueError):
    """An input the model cannot embed (too long, token id out of range, dims not allowed)."""

    def __init__(self, message: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.code = code
        self.param = param


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}


def _pooling(path: Path, default: str) -> str:
    """sentence-transformers pooling mode: 'mean', 'cls' or 'lasttoken'."""
    modules = path / "modules.json"
    pooling_dir = "1_Pooling"
    if modules.is_file():
        for module in json.loads(modules.read_text(encoding="utf-8")):
            if module.get("type", "").endswith("Pooling"):
                pooling_dir = module.get("path") or pooling_dir
    config = _read_json(path / pooling_dir / "config.json")
    for key, mode in (
        ("pooling_mode_lasttoken", "lasttoken"),
        ("pooling_mode_cls_token", "cls"),
        ("pooling_mode_mean_tokens", "mean"),
    ):
        if config.get(key):
            return mode
    return default


class Embedder:
    """A loaded embedding model. `embed(token_lists)` -> [N, dims] float32, L2-normalized."""

    def __init__(self, encoder, tokenizer, pooling: str, max_length: int, dims: int,
                 matryoshka: bool, kind: str, vocab_size: int):
        self.encoder = encoder
        self.tokenizer = tokenizer  # a `tokenizers.Tokenizer`
        self.pooling = pooling
        self.max_length = max_length
        self.dims = dims
        self.matryoshka = matryoshka
        self.kind = kind  # "bert" or "decoder"
        self.vocab_size = vocab_size

    def parameters(self):
        return self.encoder.parameters()

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=True).ids

    def check_tokens(self, ids: list[int], index: int) -> None:
        if len(ids) > self.max_length:
            raise EmbeddingInputError(
                f"input {index} has {len(ids)} tokens; this model's maximum context length is "
                f"{self.max_length} tokens",
                code="context_length_exceeded",
                param="input",
            )
        bad = [t for t in ids if not 0 <= t < self.vocab_size]
        if bad:
            raise EmbeddingInputError(
                f"input {index} has token id {bad[0]} outside the vocabulary (0..{self.vocab_size - 1})",
                param="input",
            )

    def check_dimensions(self, dimensions: int | None) -> None:
        if dimensions is None or dimensions == self.dims:
            return
        if not self.matryoshka:
            raise EmbeddingInputError(
                f"this model only produces {self.dims}-dimensional embeddings; "
                "'dimensions' is not supported for it",
                param="dimensions",
            )
        if dimensions > self.dims:
            raise EmbeddingInputError(
                f"dimensions must be at most {self.dims} for this model", param="dimensions"
            )

    def embed(self, token_lists: list[list[int]], dimensions: int | None = None) -> np.ndarray:
        """All at once (for scripts and tests; the server steps through EmbedJob instead)."""
        out = np.zeros((len(token_lists), self.dims), dtype=np.float32)
        order = sorted(range(len(token_lists)), key=lambda i: len(token_lists[i]))
        for start in range(0, len(order), BATCH):
            idx = order[start : start + BATCH]
            out[idx] = self._embed_batch([token_lists[i] for i in idx])
        return self.finish(out, dimensions)

    def finish(self, vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
        """Truncate to `dimensions` (Matryoshka) and L2-normalize."""
        if dimensions is not None and dimensions < self.dims:
            vectors = vectors[:, :dimensions]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    def _embed_batch(self, batch: list[list[int]]) -> np.ndarray:
        lengths = mx.array([len(ids) for ids in batch])
        width = max(len(ids) for ids in batch)
        pad = 0
        ids = mx.array([ids + [pad] * (width - len(ids)) for ids in batch])
        mask = mx.arange(width)[None, :] < lengths[:, None]
        if self.kind == "bert":
            hidden = self.encoder(ids, attention_mask=mask)
        else:  # causal decoder, right-padded: padding never influences real positions
            hidden = self.encoder(ids)
        hidden = hidden.astype(mx.float32)
        if self.pooling == "mean":
            m = mask[..., None].astype(mx.float32)
            pooled = (hidden * m).sum(axis=1) / mx.maximum(m.sum(axis=1), 1.0)
        elif self.pooling == "cls":
            pooled = hidden[:, 0]
        else:  # last token
            pooled = hidden[mx.arange(len(batch)), lengths - 1]
        return np.array(pooled)


def load_embedder(path) -> Embedder:
    path = Path(path)
    config = read_config(path)
    model_type = config.get("model_type")
    if model_type == "bert":
        return _load_bert(path)
    if model_type in ("qwen3", "qwen2"):
        return _load_decoder(path, config)
    raise LoadError(f"model_type '{model_type}' is not supported for embeddings (bert, qwen3, qwen2)")


def _backend_tokenizer(path: Path, max_length: int):
    from tokenizers import Tokenizer

    file = path / "tokenizer.json"
    if not file.is_file():
        raise LoadError(f"no tokenizer.json in {path}")
    tok = Tokenizer.from_file(str(file))
    tok.no_padding()  # some checkpoints ship fixed padding; we pad per batch ourselves
    tok.enable_truncation(max_length)  # as sentence-transformers does (keeps [CLS]/[SEP])
    return tok


def _load_bert(path: Path) -> Embedder:
    model, _ = load_model(path)
    args = model.args
    st = _read_json(path / "sentence_bert_config.json")
    max_length = min(st.get("max_seq_length") or args.max_position_embeddings, args.max_position_embeddings)
    tok = _backend_tokenizer(path, max_length)
    return Embedder(model, tok, _pooling(path, "mean"), max_length, args.hidden_size,
                    matryoshka=False, kind="bert", vocab_size=args.vocab_size)


def _load_decoder(path: Path, config: dict) -> Embedder:
    """Qwen3-Embedding: a Qwen3 body, named with or without the `model.` prefix; no lm_head."""
    weights, _ = read_weights(path)
    body_weights = {}
    for key, value in weights.items():
        if key.startswith("lm_head.") or "rotary_emb.inv_freq" in key:
            continue  # embeddings never use the head
        body_weights[key[len("model.") :] if key.startswith("model.") else key] = value
    del weights
    try:
        arch = get_architecture(config["model_type"])
        args = arch.ModelArgs.from_dict(config)
        body = arch.Model(args).model
    except (TypeError, ValueError, KeyError) as e:
        raise LoadError(f"config.json does not describe a valid embedding model: {e}") from None
    quantization = read_quantization(config)
    if quantization is not None:
        quantize_like_checkpoint(body, quantization, body_weights)
    try:
        body.load_weights(list(body_weights.items()), strict=True)
    except ValueError as e:
        raise LoadError(f"weights in {path} do not fit a {config['model_type']} body: {e}") from None
    if quantization is not None:
        apply_compute_dtype(body, mx.float32, mx.default_device())
    mx.eval(body.parameters())
    max_length = int(config.get("max_position_embeddings") or 32768)
    tok = _backend_tokenizer(path, max_length)
    return Embedder(body, tok, _pooling(path, "lasttoken"), max_length, args.hidden_size,
                    matryoshka=True, kind="decoder", vocab_size=args.vocab_size)


def load(path) -> tuple[Embedder, object]:
    """The embedding kind's loader (ominix/kinds.py)."""
    embedder = load_embedder(path)
    return embedder, embedder.tokenizer


class EmbedJob(StepJob):
    """Embed every input (text or token ids) of one request; the result is (vectors [N, D],
    token count). Stepped: each step tokenizes up to TOKENIZE_STEP inputs, then each step embeds
    one batch, so a request of thousands of inputs never holds the worker for long."""

    kind = "embedding"
    TOKENIZE_STEP = 64

    def __init__(self, inputs: list, dimensions: int | None = None):
        self.inputs = inputs
        self.dimensions = dimensions
        self.token_lists: list[list[int]] = []
        self.order: list[int] = []
        self.done = 0
        self.vectors = None

    def begin(self, resident, ticket) -> None:
        self.embedder: Embedder = resident.model
        self.embedder.check_dimensions(self.dimensions)

    def step(self) -> bool:
        if len(self.token_lists) < len(self.inputs):
            self._tokenize_some()
            return False
        if self.vectors is None:
            self.vectors = np.zeros((len(self.inputs), self.embedder.dims), dtype=np.float32)
            self.order = sorted(range(len(self.inputs)), key=lambda i: len(self.token_lists[i]))
        idx = self.order[self.done : self.done + BATCH]
        self.vectors[idx] = self.embedder._embed_batch([self.token_lists[i] for i in idx])
        self.done += len(idx)
        return self.done == len(self.inputs)

    def _tokenize_some(self) -> None:
        start = len(self.token_lists)
        for i in range(start, min(start + self.TOKENIZE_STEP, len(self.inputs))):
            x = self.inputs[i]
            ids = self.embedder.tokenize(x) if isinstance(x, str) else list(x)
            if not ids:
                raise EmbeddingInputError(f"input {i} is empty", param="input")
            self.embedder.check_tokens(ids, i)
            self.token_lists.append(ids)

    def result(self):
        return self.embedder.finish(self.vectors, self.dimensions), sum(len(ids) for ids in self.token_lists)

    def close(self) -> None:
        self.vectors = None
