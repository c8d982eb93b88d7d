"""Chat output parsing: split model text into reasoning, content and tool calls, incrementally.

Qwen3 writes its reasoning as `<think>\\n...\\n</think>\\n\\n` before the answer and calls tools with
`<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>` (Qwen2.5 uses the same tool format).
`ChatOutputParser.feed(text)` takes detokenized pieces as they come and returns the deltas that are
safe to send; text that might be the start of a tag is held back until it is decided. Parsing a whole
reply is `feed(text) + finish()`, so streamed and non-streamed replies come out the same.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"


@dataclass
class ToolCall:
    name: str
    arguments: str  # JSON text, as OpenAI sends it
    id: str = field(default_factory=lambda: "call_" + uuid.uuid4().hex[:24])


@dataclass
class Delta:
    """One piece of the reply: exactly one of the fields is set."""

    content: str | None = None
    reasoning: str | None = None
    tool_call: ToolCall | None = None


def parse_tool_call(body: str) -> ToolCall | None:
    """Parse the JSON between <tool_call> tags; None when it is not a well-formed call."""
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # some models already encode the arguments as a JSON string
        try:
            json.loads(args)
        except ValueError:
            return None
        return ToolCall(obj["name"], args)
    return ToolCall(obj["name"], json.dumps(args, ensure_ascii=False))


def _partial_tag_len(text: str, tags: tuple[str, ...]) -> int:
    """Length of the longest suffix of text that is a proper prefix of one of the tags."""
    best = 0
    for tag in tags:
        for n in range(min(len(tag) - 1, len(text)), best, -1):
            if text.endswith(tag[:n]):
                best = n
                break
    return best


class ChatOutputParser:
    """State machine over the reply text: content, reasoning (inside <think>) or a tool call."""

    def __init__(self, parse_tools: bool = True, parse_reasoning: bool = True, in_reasoning: bool = False):
        self.parse_tools = parse_tools
        self.parse_reasoning = parse_reasoning
        # Templates that open <think> in the prompt make the reply start inside the reasoning.
        self.state = "reasoning" if in_reasoning else "content"
        self.buf = ""
        self.started = False  # anything other than whitespace emitted or consumed yet
        # Drop whitespace at the start of each section after a tag (not of the reply itself).
        self.strip_leading = in_reasoning
        self.tool_calls: list[ToolCall] = []

    def feed(self, text: str) -> list[Delta]:
        self.buf += text
        out: list[Delta] = []
        while True:
            progressed = self._step(out, final=False)
            if not progressed:
                return out

    def finish(self) -> list[Delta]:
        out: list[Delta] = []
        while self._step(out, final=True):
            pass
        if self.state == "tool_call":  # cut off inside a call: try it, else give back the text
            self._close_tool_call(self.buf, out, unterminated=True)
        elif self.buf:
            self._emit(out, self.buf, keep_trailing=True)
        self.buf = ""
        return out

    # One decision over the buffer; returns True if it consumed something and should run again.
    def _step(self, out: list[Delta], final: bool) -> bool:
        if self.state == "tool_call":
            end = self.buf.find(TOOL_CLOSE)
            if end < 0:
                return False
            body, self.buf = self.buf[:end], self.buf[end + len(TOOL_CLOSE) :]
            self._close_tool_call(body, out)
            return True
        tags = self._tags()
        hits = [(self.buf.find(t), t) for t in tags if t in self.buf]
        # <think> only opens reasoning at the very start of the reply.
        hits = [(p, t) for p, t in hits if t != THINK_OPEN or not self.buf[:p].strip()]
        if hits:
            pos, tag = min(hits)
            before, self.buf = self.buf[:pos], self.buf[pos + len(tag) :]
            self._emit(out, before, keep_trailing=False)
            self._enter(tag)
            return True
        if final:
            return False
        hold = _partial_tag_len(self.buf, tags)
        ready = self.buf[: len(self.buf) - hold]
        # Hold trailing whitespace too: it is dropped if a tag follows.
        cut = len(ready.rstrip())
        if cut:
            self._emit(out, ready[:cut], keep_trailing=True)
            self.buf = self.buf[cut:]
        return False

    def _tags(self) -> tuple[str, ...]:
        if self.state == "reasoning":
            return (THINK_CLOSE,)
        tags = []
        if self.parse_reasoning and not self.started:
            tags.append(THINK_OPEN)
        if self.parse_tools:
            tags.append(TOOL_OPEN)
        return tuple(tags)

    def _enter(self, tag: str) -> None:
        self.started = True
        self.strip_leading = True
        if tag == THINK_OPEN:
            self.state = "reasoning"
        elif tag == THINK_CLOSE:
            self.state = "content"
        elif tag == TOOL_OPEN:
            self.state = "tool_call"

    def _emit(self, out: list[Delta], text: str, keep_trailing: bool) -> None:
        if self.strip_leading:
            text = text.lstrip()
        if not keep_trailing:
            text = text.rstrip()
        if not text:
            return
        self.strip_leading = False
        self.started = True
        if self.state == "reasoning":
            out.append(Delta(reasoning=text))
        else:
            out.append(Delta(content=text))

    def _close_tool_call(self, body: str, out: list[Delta], unterminated: bool = False) -> None:
        call = parse_tool_call(body.strip())
        self.state = "content"
        self.strip_leading = True
        if call is None:  # not a real call: it is text the user should see
            raw = TOOL_OPEN + body + ("" if unterminated else TOOL_CLOSE)
            out.append(Delta(content=raw))
            self.strip_leading = False
            return
        self.tool_calls.append(call)
        out.append(Delta(tool_call=call))


@dataclass
class ChatReply:
    content: str | None
    reasoning: str | None
    tool_calls: list[ToolCall]


def parse_reply(text: str, parse_tools: bool = True, in_reasoning: bool = False) -> ChatReply:
    """Parse a whole reply at once (the non-streaming path)."""
    parser = ChatOutputParser(parse_tools=parse_tools, in_reasoning=in_reasoning)
    deltas = parser.feed(text) + parser.finish()
    return collect(deltas)


def collect(deltas: list[Delta]) -> ChatReply:
    content = "".join(d.content for d in deltas if d.content is not None)
    reasoning = "".join(d.reasoning for d in deltas if d.reasoning is not None)
    calls = [d.tool_call for d in deltas if d.tool_call is not None]
    return ChatReply(content or None, reasoning or None, calls)


def prompt_opens_reasoning(prompt: str) -> bool:
    """True when the chat template already opened a <think> block for the reply."""
    tail = prompt.rstrip()
    return tail.endswith(THINK_OPEN)


def to_template_messages(messages: list[dict]) -> list[dict]:
    """OpenAI request messages -> the plain dicts Hugging Face chat templates expect.

    Content-part arrays become one string (text parts only), `developer` becomes `system`, and an
    assistant turn with tool calls gets "" content instead of null (templates call string methods).
    """
    result = []
    for m in messages:
        role = "system" if m["role"] == "developer" else m["role"]
        msg = {"role": role, "content": content_text(m.get("content"))}
        if m.get("tool_calls"):
            msg["tool_calls"] = m["tool_calls"]
        if m.get("reasoning_content"):
            msg["reasoning_content"] = m["reasoning_content"]
        for key in ("name", "tool_call_id"):
            if m.get(key) is not None:
                msg[key] = m[key]
        result.append(msg)
    return result


def content_text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if part.get("type") not in ("text", "input_text"):
            raise ValueError(f"content part type '{part.get('type')}' is not supported by this model")
        parts.append(part.get("text", ""))
    return "".join(parts)


_RESERVED_TEMPLATE_ARGS = {"messages", "tools", "add_generation_prompt", "tokenize", "chat_template", "documents"}


def build_chat_prompt(tokenizer, messages: list[dict], tools: list[dict] | None = None,
                      template_kwargs: dict | None = None) -> str:
    """Render OpenAI messages (and tools) with the checkpoint's own chat template."""
    kwargs = dict(template_kwargs or {})
    reserved = _RESERVED_TEMPLATE_ARGS.intersection(kwargs)
    if reserved:
        raise ValueError(f"chat_template_kwargs may not set {', '.join(sorted(reserved))}")
    return tokenizer.apply_chat_template(
        to_template_messages(messages), tools=tools or None, add_generation_prompt=True, **kwargs
    )
