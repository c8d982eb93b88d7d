"""Constrained decoding for `response_format` json_object / json_schema, with llguidance.

llguidance compiles a JSON schema into a grammar and, at every step, says which tokens may come next.
`JSONConstraint` is a logits processor `(tokens, logits) -> logits`: it feeds the grammar the tokens
sampled since its last call and masks every token the grammar forbids to -inf, so whatever sampler
runs after it (greedy, temperature, top-p) can only pick tokens that keep the output valid.

llguidance reads the checkpoint's own tokenizer.json (the `tokenizers` library format): no torch and
no transformers at run time.
"""

from __future__ import annotations

import json
import threading
import weakref

import mlx.core as mx
import numpy as np


class ConstraintError(ValueError):
    """The schema cannot be used for constrained decoding (message says why)."""


_ll_tokenizers: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _ll_tokenizer(tokenizer, vocab_size: int):
    """llguidance's view of our tokenizer; built once per tokenizer (it takes ~1 s for 150k ids)."""
    import llguidance

    with _lock:
        cached = _ll_tokenizers.get(tokenizer)
        if cached is not None and cached[0] == vocab_size:
            return cached[1]
        backend = tokenizer.backend
        eos = sorted(tokenizer.eos_token_ids) or None
        ll = llguidance.LLTokenizer(backend.to_str(), n_vocab=vocab_size, eos_token=eos)
        _ll_tokenizers[tokenizer] = (vocab_size, ll)
        return ll


def check_schema(schema: dict) -> None:
    """Reject schemas that are not valid JSON Schema (Draft 2020-12 meta-schema)."""
    import jsonschema

    if not isinstance(schema, dict):
        raise ConstraintError("json_schema.schema must be a JSON object")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise ConstraintError(f"invalid JSON schema: {e.message}") from e


def json_grammar(schema: dict | None) -> str:
    """A llguidance grammar for JSON matching `schema` (any JSON object when None).

    Whitespace is not flexible: the output is compact JSON, so a model cannot stall in an endless
    run of spaces, which random or weak models otherwise do.
    """
    import llguidance

    if schema is None:
        schema = {"type": "object"}
    else:
        check_schema(schema)
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(
            schema, overrides={"whitespace_flexible": False}
        )
    except ValueError as e:
        raise ConstraintError(f"invalid JSON schema: {e}") from e
    error = llguidance.LLMatcher.validate_grammar(grammar)
    if error and not error.startswith("WARNING"):
        raise ConstraintError(f"JSON schema not supported for constrained decoding: {error}")
    return grammar


class JSONConstraint:
    """Logits processor that keeps the sampled tokens inside a grammar."""

    def __init__(self, tokenizer, vocab_size: int, grammar: str):
        import llguidance

        self.vocab_size = vocab_size
        self.matcher = llguidance.LLMatcher(_ll_tokenizer(tokenizer, vocab_size), grammar, log_level=0)
        if self.matcher.is_error():
            raise ConstraintError(f"grammar rejected: {self.matcher.get_error()}")
        self._seen: int | None = None  # length of the token history at the previous call

    def __call__(self, tokens, logits: mx.array) -> mx.array:
        self._consume_new(tokens)
        allowed = self.allowed_mask()
        vocab = logits.shape[-1]
        if allowed.shape[0] < vocab:  # lm_head padded beyond the tokenizer: those ids are never valid
            allowed = np.concatenate([allowed, np.zeros(vocab - allowed.shape[0], dtype=bool)])
        mask = mx.array(allowed[:vocab])
        return mx.where(mask, logits, mx.array(-float("inf"), dtype=logits.dtype))

    def _consume_new(self, tokens) -> None:
        history = _as_list(tokens)
        if self._seen is None:  # first step: everything so far is the prompt
            self._seen = len(history)
            return
        for token in history[self._seen :]:
            self.accept(token)
        self._seen = len(history)

    def accept(self, token: int) -> None:
        if self.matcher.is_stopped():
            return  # the EOS that ended the grammar
        if not self.matcher.consume_token(int(token)):
            raise ConstraintError(f"token {token} violates the grammar: {self.matcher.get_error()}")

    def allowed_mask(self) -> np.ndarray:
        bias = np.frombuffer(self.matcher.compute_logit_bias(), dtype=np.uint8)
        allowed = bias > 0
        if not allowed.any():  # grammar finished or broken: only ending is possible
            raise ConstraintError(self.matcher.get_error() or "grammar allows no further token")
        return allowed

    @property
    def finished(self) -> bool:
        return self.matcher.is_stopped() or self.matcher.is_accepting()


def _as_list(tokens) -> list[int]:
    if tokens is None:
        return []
    if isinstance(tokens, mx.array):
        return tokens.reshape(-1).tolist()
    return list(tokens)


def _lark_tag(tokenizer, text: str) -> str:
    """A tag as a lark terminal: by token id when it is one token (Qwen's <tool_call> is), else text."""
    token = tokenizer.token_to_id(text)
    return f"<[{token}]>" if token is not None else json.dumps(text)


def tool_call_grammar(tokenizer, tools: list[dict], name: str | None = None) -> str:
    """Grammar for exactly one Qwen-style call: <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>,
    restricted to the tool `name` (tool_choice names a function) or to any of `tools` ("required")."""
    import llguidance

    functions = [t["function"] for t in tools if name is None or t["function"]["name"] == name]
    if not functions:
        raise ConstraintError(f"tool_choice names the function '{name}', which is not in tools")
    variants = []
    for fn in functions:
        parameters = fn.get("parameters") or {"type": "object"}
        check_schema(parameters)
        variants.append({
            "type": "object",
            "properties": {"name": {"const": fn["name"]}, "arguments": parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        })
    schema = variants[0] if len(variants) == 1 else {"anyOf": variants}
    schema = {**schema, "x-guidance": {"whitespace_flexible": False}}
    lark = (
        f'start: {_lark_tag(tokenizer, "<tool_call>")} "\\n" call "\\n" {_lark_tag(tokenizer, "</tool_call>")}\n'
        f"call: %json {json.dumps(schema)}"
    )
    grammar = llguidance.LLMatcher.grammar_from_lark(lark)
    error = llguidance.LLMatcher.validate_grammar(grammar)
    if error and not error.startswith("WARNING"):
        raise ConstraintError(f"tool parameters not supported for constrained decoding: {error}")
    return grammar


def make_constraint(tokenizer, vocab_size: int, response_format: dict | None) -> JSONConstraint | None:
    """The constraint for an OpenAI `response_format`, or None for plain text.

    Besides OpenAI's types, {"type": "tool_call", "tools": [...], "name": str | None} forces one
    tool call (tool_choice "required" or a named function).
    """
    if not response_format or response_format.get("type", "text") == "text":
        return None
    kind = response_format["type"]
    if kind == "tool_call":
        grammar = tool_call_grammar(tokenizer, response_format["tools"], response_format.get("name"))
        return JSONConstraint(tokenizer, vocab_size, grammar)
    if kind == "json_object":
        return JSONConstraint(tokenizer, vocab_size, json_grammar(None))
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema")
        if isinstance(schema, str):
            schema = json.loads(schema)
        return JSONConstraint(tokenizer, vocab_size, json_grammar(schema))
    raise ConstraintError(f"response_format type '{kind}' is not supported")
