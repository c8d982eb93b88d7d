"""Tokenizer: the checkpoint's tokenizer.json, its own chat template, and streaming detokenization.

Chat templates are rendered the way transformers renders them (same Jinja environment, filters,
globals and inputs) so a prompt built here is byte-identical to `AutoTokenizer.apply_chat_template`.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer as _Backend


class TokenizerError(ValueError):
    """The tokenizer files are missing or unreadable."""


class ChatTemplateError(ValueError):
    """The chat template is missing, broken, or rejected the conversation (raise_exception)."""


# The named special tokens transformers hands to every chat template.
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# End-of-turn markers that stop generation even when generation_config.json omits them.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")
# Names a message's reasoning is passed under; templates read the first (as in transformers).
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class Tokenizer:
    def __init__(
        self,
        backend: _Backend,
        *,
        chat_template: str | dict[str, str] | None = None,
        special_tokens: dict[str, str] | None = None,
        eos_token_ids: set[int] | None = None,
        generation_config: dict | None = None,
    ):
        self.backend = backend
        self._templates = chat_template
        self.special_tokens = dict(special_tokens or {})
        self.eos_token_ids = set(eos_token_ids or ())
        self.generation_config = dict(generation_config or {})
        bos = self.special_tokens.get("bos_token")
        self.bos_token_id = backend.token_to_id(bos) if bos else None
        self.vocab_size = backend.get_vocab_size(with_added_tokens=True)

    @property
    def chat_template(self) -> str | None:
        if isinstance(self._templates, dict):
            return self._templates.get("default")
        return self._templates

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def detokenizer(self, skip_special_tokens: bool = False) -> StreamingDetokenizer:
        return StreamingDetokenizer(self, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(
        self,
        messages: list[dict],
        *,
        tools: list[dict] | None = None,
        add_generation_prompt: bool = True,
        tokenize: bool = False,
        chat_template: str | None = None,
        **template_kwargs,
    ) -> str | list[int]:
        """Render `messages` with the checkpoint's template (transformers semantics).

        Extra keyword arguments reach the template as variables (e.g. enable_thinking=False).
        """
        template = self._select_template(chat_template, tools)
        if not messages:
            raise ChatTemplateError("cannot apply the chat template to an empty conversation")
        for message in messages:
            if not isinstance(message, dict):
                raise ChatTemplateError(f"chat messages must be dicts, got {type(message).__name__}")
        if tools is not None and not all(isinstance(t, dict) for t in tools):
            raise ChatTemplateError("tools must be JSON schema dicts")
        # As transformers does: keys whose value is None are dropped (templates test for presence).
        messages = [_alias_reasoning({k: v for k, v in m.items() if v is not None}) for m in messages]
        variables = {**self.special_tokens, **template_kwargs}
        try:
            text = _compile(template).render(
                messages=messages,
                tools=tools,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **variables,
            )
        except ChatTemplateError:
            raise
        except Exception as e:  # jinja2 errors and raise_exception() from the template
            raise ChatTemplateError(f"chat template failed: {e}") from e
        return self.encode(text) if tokenize else text

    def _select_template(self, name: str | None, tools) -> str:
        templates = self._templates
        if isinstance(templates, dict):
            if name is not None and name in templates:
                return templates[name]
            if name is None:
                if tools is not None and "tool_use" in templates:
                    return templates["tool_use"]
                if "default" in templates:
                    return templates["default"]
                raise ChatTemplateError(f"the model has several chat templates and no default: {sorted(templates)}")
        if name is not None:
            return name
        if templates is None:
            raise ChatTemplateError("this model has no chat template (tokenizer_config.json / chat_template.jinja)")
        return templates


def _alias_reasoning(message: dict) -> dict:
    # transformers fills `reasoning_content` (and `thinking`) from whichever reasoning field is set.
    reasoning = next((message[k] for k in REASONING_FIELDS if message.get(k) is not None), None)
    if reasoning is None:
        return message
    return {"thinking": reasoning, **message, "reasoning_content": reasoning}


@lru_cache(maxsize=16)
def _compile(template: str):
    """The same Jinja environment transformers builds for chat templates."""
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(Extension):
        # `{% generation %}...{% endgeneration %}` marks assistant text for training masks; when
        # rendering a prompt it just outputs its body.
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            return caller()

    def raise_exception(message):
        raise ChatTemplateError(str(message))

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # Jinja's own tojson escapes HTML characters; templates expect plain json.dumps.
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    class SafeNamespace(jinja2.utils.Namespace):
        # Templates come from the Hub: refuse underscore names that could reach CPython internals.
        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                SafeNamespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            SafeNamespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"namespace attribute {name!r} is not allowed")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["namespace"] = SafeNamespace
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise ChatTemplateError(f"chat template has a syntax error (line {e.lineno}): {e.message}") from e


# ---- loading -------------------------------------------------------------------------------


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise TokenizerError(f"{path} should hold a JSON object")
    return data


def _token_string(value) -> str | None:
    # Special tokens are stored as plain strings or as AddedToken dicts {"content": ...}.
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _chat_templates(path: Path, config: dict) -> str | dict[str, str] | None:
    jinja_file = path / "chat_template.jinja"
    if jinja_file.is_file():  # newer transformers save the template beside the config; it wins
        return jinja_file.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):  # [{"name": ..., "template": ...}, ...]
        return {t["name"]: t["template"] for t in template if isinstance(t, dict) and "name" in t}
    if isinstance(template, str):
        return template
    json_file = path / "chat_template.json"  # older processors kept it here
    return _read_json(json_file).get("chat_template") if json_file.is_file() else None


def _ids(value) -> list[int]:
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int)]
    return []


def load_tokenizer(path) -> Tokenizer:
    """Load tokenizer.json (+ tokenizer_config.json, special_tokens_map.json, generation_config.json,
    chat_template.jinja) from a checkpoint directory."""
    path = Path(path)
    file = path / "tokenizer.json"
    if not file.is_file():
        raise TokenizerError(f"no tokenizer.json in {path}")
    try:
        backend = _Backend.from_file(str(file))
    except Exception as e:
        raise TokenizerError(f"{file} could not be read as a tokenizer: {e}") from e

    config = _read_json(path / "tokenizer_config.json")
    special_map = _read_json(path / "special_tokens_map.json")
    generation = _read_json(path / "generation_config.json")

    special = {}
    for name in SPECIAL_TOKEN_NAMES:
        token = _token_string(config.get(name)) or _token_string(special_map.get(name))
        if token is not None:
            special[name] = token

    eos = set(_ids(generation.get("eos_token_id")))
    if "eos_token" in special and backend.token_to_id(special["eos_token"]) is not None:
        eos.add(backend.token_to_id(special["eos_token"]))
    for token in END_OF_TURN_TOKENS:
        if backend.token_to_id(token) is not None:
            eos.add(backend.token_to_id(token))

    return Tokenizer(
        backend,
        chat_template=_chat_templates(path, config),
        special_tokens=special,
        eos_token_ids=eos,
        generation_config=generation,
    )


# ---- streaming detokenization --------------------------------------------------------------


class StreamingDetokenizer:
    """Turns tokens into text as they arrive; the pieces concatenate to the full decode.

    Each step decodes only a short window: tokens already emitted that give context (so a
    SentencePiece "▁" or byte-level "Ġ" space comes out right) plus the tokens not yet emitted.
    Text is held back while it ends in U+FFFD, i.e. while a multi-byte character is incomplete.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = False):
        self._decode = tokenizer.backend.decode
        self.skip_special_tokens = skip_special_tokens
        self._tokens: list[int] = []  # window: context tokens + pending tokens
        self._context = 0  # how many leading window tokens were already emitted
        self._pieces: list[str] = []
        self.tokens: list[int] = []

    def add_token(self, token: int) -> str:
        """Add one token; return the text that became final (possibly "")."""
        self.tokens.append(token)
        self._tokens.append(token)
        new = self._decode(self._tokens, skip_special_tokens=self.skip_special_tokens)
        if new.endswith("\ufffd"):
            return ""
        piece = self._new_text(new)
        # What was pending becomes context for the next step; older context is dropped.
        self._tokens = self._tokens[self._context :]
        self._context = len(self._tokens)
        self._pieces.append(piece)
        return piece

    def finalize(self) -> str:
        """Flush whatever is still held back (e.g. an incomplete character at the very end)."""
        if len(self._tokens) == self._context:
            return ""
        piece = self._new_text(self._decode(self._tokens, skip_special_tokens=self.skip_special_tokens))
        self._tokens = self._tokens[self._context :]
        self._context = len(self._tokens)
        self._pieces.append(piece)
        return piece

    def _new_text(self, window_text: str) -> str:
        context = self._decode(self._tokens[: self._context], skip_special_tokens=self.skip_special_tokens)
        return window_text[len(context) :]

    @property
    def text(self) -> str:
        return "".join(self._pieces)


class StopMatcher:
    """Finds stop strings in streamed text, even when they span tokens.

    `feed(delta)` returns (text safe to emit, stopped). Text that could be the start of a stop
    string is held back until it either completes the stop string or cannot any more.
    """

    def __init__(self, stops: list[str] | None):
        self.stops = [s for s in (stops or []) if s]
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        if not self.stops:
            return text, False
        buffer = self._held + text
        hits = [i for i in (buffer.find(s) for s in self.stops) if i >= 0]
        if hits:
            self._held = ""
            return buffer[: min(hits)], True
        keep = self._partial_suffix(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held

    def _partial_suffix(self, buffer: str) -> int:
        """Length of the longest suffix of buffer that is a proper prefix of some stop string."""
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(buffer)), best, -1):
                if buffer.endswith(stop[:n]):
                    best = n
                    break
        return best
