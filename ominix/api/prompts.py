"""Big prompts, before they reach the inference thread.

A prompt far longer than the model's context is refused by its length in characters, before any
tokenizing: no token is shorter than a character, and none in a real vocabulary is longer than
MAX_CHARS_PER_TOKEN, so a text over `context x MAX_CHARS_PER_TOKEN` characters cannot fit.

A big prompt within that bound (over PRETOKENIZE_CHARS) is rendered and tokenized here, on a thread
of its own with `encode_batch`, which releases the GIL (`encode` holds it for the whole text: a
10 MB prompt froze the event loop, /health included, for a minute on a busy 2-core machine). The
job then gets token ids, and a prompt over the context is refused before the worker sees it.
Small prompts are left as they were: rendered and tokenized on the worker, which is cheap.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from ominix.api.app import APIError

MAX_CHARS_PER_TOKEN = 64
PRETOKENIZE_CHARS = 32_768
_CONTEXT_KEYS = ("max_position_embeddings", "max_seq_len", "seq_length", "n_positions")


def context_length(path: Path) -> int | None:
    """The context a checkpoint declares in config.json (text_config too), without loading it."""
    try:
        config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for block in (config, config.get("text_config") if isinstance(config, dict) else None):
        if isinstance(block, dict):
            for key in _CONTEXT_KEYS:
                value = block.get(key)
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    return value
    return None


def message_chars(messages: list[dict], tools: list | None) -> int:
    total = len(json.dumps(tools)) if tools else 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(part.get("text") or "") for part in content if isinstance(part, dict))
        for key in ("reasoning_content", "name"):
            total += len(message.get(key) or "")
        total += len(json.dumps(message["tool_calls"])) if message.get("tool_calls") else 0
    return total


def too_long(ctx: int, what: str) -> APIError:
    return APIError(400, f"This model's maximum context length is {ctx} tokens. However, your {what}. "
                    "Please reduce the length of the messages or prompt.", param="messages",
                    code="context_length_exceeded")


def check_chars(ctx: int | None, chars: int) -> None:
    """Refuse by length in characters alone: more than any `ctx` tokens could spell."""
    if ctx and chars > ctx * MAX_CHARS_PER_TOKEN:
        raise too_long(ctx, f"prompt has {chars} characters, more than {ctx} tokens can hold")


def _encode(tokenizer, text: str) -> list[int]:
    # The same specials rule as engine.llm.generate.encode_prompt, through encode_batch (GIL released).
    bos = tokenizer.special_tokens.get("bos_token")
    add = not (bos and text.startswith(bos))
    return tokenizer.backend.encode_batch([text], add_special_tokens=add)[0].ids


async def pretokenize(request, ref, render, ctx: int | None):
    """Token ids of `render(tokenizer)` (a str), made on a thread; refused if over the context."""
    pool, worker = request.app.state.pool, request.app.state.worker
    future = await asyncio.to_thread(worker.call, lambda: pool.start_load(ref, "default"))
    resident = await asyncio.wrap_future(future)
    tokenizer = resident.tokenizer
    ctx = resident.context_length or ctx

    def work() -> list[int]:
        return _encode(tokenizer, render(tokenizer))

    ids = await asyncio.to_thread(work)
    if ctx and len(ids) >= ctx:
        from ominix.engine.llm.jobs import ContextLengthError

        raise ContextLengthError(ctx, len(ids), None)  # worded by api/common.py, as from the worker
    return ids
