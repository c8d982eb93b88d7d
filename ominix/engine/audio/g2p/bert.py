"""GPT-SoVITS's Chinese text features: chinese-roberta-wwm-ext-large (a BERT) hidden states of the
third layer from the top, one vector per character of the normalized text, repeated for each phone
of that character (word2ph).

The model folder is the published layout: config.json, tokenizer.json, and pytorch_model.bin (read
without torch, engine/audio/torch_ckpt.py) or model.safetensors. Its `bert.` prefixed
BertForMaskedLM tensors load through ominix.models.bert (the MLM head is dropped).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np

from ominix.engine.audio import torch_ckpt
from ominix.engine.load import LoadError, read_weights
from ominix.models import bert as bert_model

FROM_TOP = 3  # hidden_states[-3]


class ChineseBert:
    def __init__(self, model: bert_model.Model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.hidden_size = model.args.hidden_size

    @classmethod
    def load(cls, folder: str | Path) -> "ChineseBert":
        from tokenizers import Tokenizer

        folder = Path(folder)
        for name in ("config.json", "tokenizer.json"):
            if not (folder / name).is_file():
                raise LoadError(f"{folder} has no {name} (the Chinese BERT folder needs config.json, "
                                "tokenizer.json and pytorch_model.bin or model.safetensors)")  # fmt: skip
        config = json.loads((folder / "config.json").read_text())
        model = bert_model.Model(bert_model.ModelArgs.from_dict(config))
        if any(folder.glob("*.safetensors")):
            weights, _ = read_weights(folder)
        elif (folder / "pytorch_model.bin").is_file():
            state = torch_ckpt.load(folder / "pytorch_model.bin")
            weights = {k: mx.array(np.ascontiguousarray(v)) for k, v in state.items() if isinstance(v, np.ndarray)}
        else:
            raise LoadError(f"{folder} has no pytorch_model.bin or model.safetensors")
        model.load_weights(list(model.sanitize(weights).items()), strict=True)
        mx.eval(model.parameters())
        return cls(model, Tokenizer.from_file(str(folder / "tokenizer.json")))

    def features(self, text: str, word2ph: list[int]) -> mx.array:
        """[hidden, sum(word2ph)] for normalized Chinese text (one token per character)."""
        if sum(word2ph) == 0:
            return mx.zeros((self.hidden_size, 0), dtype=mx.float32)
        enc = self.tokenizer.encode(text)
        if len(enc.ids) != len(text) + 2 or len(word2ph) != len(text):
            raise ValueError(f"BERT tokens ({len(enc.ids) - 2}) / word2ph ({len(word2ph)}) do not match "
                             f"the {len(text)} characters of {text!r}")  # fmt: skip
        ids = mx.array([enc.ids], dtype=mx.int32)
        types = mx.array([enc.type_ids], dtype=mx.int32)
        layers = self.model.args.num_hidden_layers + 1 - FROM_TOP
        h = self.model(ids, token_type_ids=types, num_layers=layers)[0, 1:-1]
        index = mx.array(np.repeat(np.arange(len(word2ph)), word2ph).astype(np.int32))
        return h[index].T
