"""Helpers for the server tests: tiny Qwen3 checkpoints in the Hugging Face layout, a "scripted"
checkpoint whose greedy decoding spells a chosen token sequence, and a real uvicorn server on a free
127.0.0.1 port running in a thread.

The scripted checkpoint is a real Qwen3 model, loaded through the normal path: every attention and
MLP output projection is zero, so the residual stream at each position is just the embedding of the
current token; lm_head row `next(t)` is the embedding of `t`, so greedy decoding from token t picks
next(t). A chain of distinct tokens therefore plays back exactly, then ends with <|im_end|>.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from tests.tokenizer_fixture import VOCAB_SIZE, make_tokenizer

CONFIG = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": VOCAB_SIZE,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
}


def qwen3_weights(config: dict, seed: int = 0, std: float = 0.05) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    H, I, V = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    D, nq, nkv = config["head_dim"], config["num_attention_heads"], config["num_key_value_heads"]

    def w(*shape):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    weights = {"model.embed_tokens.weight": w(V, H), "model.norm.weight": np.ones(H, np.float32),
               "lm_head.weight": w(V, H)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        weights.update({
            p + "self_attn.q_proj.weight": w(nq * D, H),
            p + "self_attn.k_proj.weight": w(nkv * D, H),
            p + "self_attn.v_proj.weight": w(nkv * D, H),
            p + "self_attn.o_proj.weight": w(H, nq * D),
            p + "self_attn.q_norm.weight": np.ones(D, np.float32),
            p + "self_attn.k_norm.weight": np.ones(D, np.float32),
            p + "mlp.gate_proj.weight": w(I, H),
            p + "mlp.up_proj.weight": w(I, H),
            p + "mlp.down_proj.weight": w(H, I),
            p + "input_layernorm.weight": np.ones(H, np.float32),
            p + "post_attention_layernorm.weight": np.ones(H, np.float32),
        })
    return weights


def write_checkpoint(path: Path, weights: dict, config: dict) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    make_tokenizer(path)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def random_qwen3(path: Path, seed: int = 0, **overrides) -> Path:
    config = {**CONFIG, **overrides}
    return write_checkpoint(path, qwen3_weights(config, seed), config)


def distinct_token_path(tokenizer, text: str, avoid: set[int]) -> list[int] | None:
    """Token ids that decode to `text` with no id used twice (and none from `avoid`)."""
    pieces = {}
    for i in range(tokenizer.vocab_size):
        s = tokenizer.decode([i])
        if s and "\ufffd" not in s:
            pieces.setdefault(s, []).append(i)
    by_start: dict[str, list[tuple[str, int]]] = {}
    for s, ids in pieces.items():
        for i in ids:
            by_start.setdefault(s[0], []).append((s, i))
    for lst in by_start.values():
        lst.sort(key=lambda x: -len(x[0]))
    used = set(avoid)

    def dfs(pos: int, out: list[int]) -> list[int] | None:
        if pos == len(text):
            return list(out)
        for s, i in by_start.get(text[pos], []):
            if i in used or not text.startswith(s, pos):
                continue
            used.add(i)
            out.append(i)
            found = dfs(pos + len(s), out)
            if found:
                return found
            out.pop()
            used.discard(i)
        return None

    return dfs(0, [])


class ServerThread:
    """uvicorn serving `app` on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self, app, **serving):
        import uvicorn

        from ominix.api.serving import server_config

        self.app = app
        config = server_config(app, "127.0.0.1", 0, log_level="warning", **serving)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.time() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)


# Quote-bearing fragments as added tokens: the byte-level vocabulary has only four tokens with a
# quote in them, and a scripted chain cannot use a token twice.
TOOL_FRAGMENTS = ['{"name": "', '", "arguments": {"', '": "', '"}}']
SCRIPTED_REPLY = (
    '<think>Hm</think>\n\nOK.<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
)


def scripted_tool_call_checkpoint(path: Path) -> Path:
    """A checkpoint that answers any chat prompt with SCRIPTED_REPLY (greedy), then <|im_end|>."""
    from tokenizers import AddedToken, Tokenizer

    from ominix.engine.llm.tokenizer import load_tokenizer

    path.mkdir(parents=True, exist_ok=True)
    make_tokenizer(path)
    backend = Tokenizer.from_file(str(path / "tokenizer.json"))
    backend.add_tokens([AddedToken(s, normalized=False, special=False) for s in TOOL_FRAGMENTS])
    backend.save(str(path / "tokenizer.json"))
    tokenizer = load_tokenizer(path)
    prompt_end = tokenizer.encode("<|im_start|>assistant\n")[-1]  # every generation prompt ends so
    chain = distinct_token_path(tokenizer, SCRIPTED_REPLY, {prompt_end})
    assert chain is not None, "no distinct-token spelling of the scripted reply"
    config = {**CONFIG, "vocab_size": tokenizer.vocab_size}
    weights = qwen3_weights(config, seed=1)
    for name in weights:
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            weights[name][:] = 0.0
    emb = weights["model.embed_tokens.weight"]
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    head = np.zeros_like(weights["lm_head.weight"])
    sequence = [prompt_end] + chain + [tokenizer.token_to_id("<|im_end|>")]
    for current, following in zip(sequence, sequence[1:]):
        head[following] = 4.0 * unit[current]
    weights["lm_head.weight"] = head
    (path / "config.json").write_text(json.dumps(config, indent=2))
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def qwen3_embedding(path: Path, prefixed: bool, seed: int = 2) -> Path:
    """A tiny Qwen3-Embedding checkpoint: Qwen3Model body only, sentence-transformers files with
    last-token pooling; tensors named with `model.` (prefixed) or bare, as both layouts exist."""
    config = {**CONFIG, "architectures": ["Qwen3Model"], "tie_word_embeddings": True}
    weights = qwen3_weights(config, seed)
    del weights["lm_head.weight"]
    if not prefixed:
        weights = {k[len("model."):]: v for k, v in weights.items()}
    write_checkpoint(path, weights, config)
    (path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]))
    (path / "1_Pooling").mkdir(exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": config["hidden_size"], "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": False, "pooling_mode_lasttoken": True}))
    return path
