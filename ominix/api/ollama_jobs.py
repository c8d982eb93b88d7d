"""/api/chat and /api/generate: Ollama's request fields -> a GenerateJob, and the job's events ->
Ollama's NDJSON chunks or one JSON answer (durations in nanoseconds)."""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from ominix.api import ollama_info as info
from ominix.engine.llm.chat import ChatOutputParser, build_chat_prompt, prompt_opens_reasoning
from ominix.engine.llm.jobs import ChoiceDone, GenerateJob, TokenEvent
from ominix.engine.worker import Done, Failed

# Ollama option -> SamplingParams field
SAMPLING = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
            "seed": "seed", "repeat_penalty": "repetition_penalty",
            "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty"}  # fmt: skip


class OllamaError(Exception):
    """Answered as {"error": message} with `status`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def options_of(body: dict) -> dict:
    """`options` (and `format`) -> sampling fields, max_tokens, stop, response_format."""
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise OllamaError(400, "options must be an object")
    sampling = {ours: options[theirs] for theirs, ours in SAMPLING.items()
                if options.get(theirs) is not None}  # fmt: skip
    for key, value in sampling.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OllamaError(400, f"option {key} must be a number")
    if "top_k" in sampling:
        sampling["top_k"] = int(sampling["top_k"])
    if "seed" in sampling:
        sampling["seed"] = int(sampling["seed"])
    num_predict = options.get("num_predict")
    if num_predict is not None and not isinstance(num_predict, int):
        raise OllamaError(400, "option num_predict must be an integer")
    stop = options.get("stop") or []
    stop = [stop] if isinstance(stop, str) else list(stop)
    fmt = body.get("format")
    if fmt in (None, ""):
        response_format = None
    elif fmt == "json":
        response_format = {"type": "json_object"}
    elif isinstance(fmt, dict):
        response_format = {"type": "json_schema", "json_schema": {"name": "format", "schema": fmt}}
    else:
        raise OllamaError(400, f"invalid format {fmt!r}: use \"json\" or a JSON schema")
    return {"sampling": sampling, "max_tokens": num_predict if num_predict and num_predict > 0 else None,
            "stop": stop, "response_format": response_format}


def _messages(raw: list) -> list[dict]:
    """Ollama messages -> the OpenAI-style dicts our chat templates take."""
    out = []
    for m in raw or []:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise OllamaError(400, "each message needs a role")
        if m.get("images"):
            raise OllamaError(400, "this model does not support images")
        content = m.get("content") or ""
        if not isinstance(content, str):
            raise OllamaError(400, "message content must be a string")
        msg = {"role": m["role"], "content": content}
        if m.get("thinking"):
            msg["reasoning_content"] = m["thinking"]
        if m.get("tool_calls"):
            msg["tool_calls"] = [{"type": "function", "function": {
                "name": c.get("function", {}).get("name"),
                "arguments": json.dumps(c.get("function", {}).get("arguments") or {})}}
                for c in m["tool_calls"]]  # fmt: skip
        if m.get("tool_name"):
            msg["name"] = m["tool_name"]
        out.append(msg)
    return out


def _with_default_system(tokenizer, messages: list[dict]) -> list[dict]:
    """An Ollama model's SYSTEM layer applies when the request brings no system message."""
    default = getattr(tokenizer, "default_system", None)
    if default and not any(m["role"] == "system" for m in messages):
        return [{"role": "system", "content": default}] + messages
    return messages


def _think_kwargs(body: dict) -> dict:
    think = body.get("think")
    return {} if think is None else {"enable_thinking": bool(think)}


def chat_job(body: dict, opts: dict) -> tuple[GenerateJob, dict]:
    messages = _messages(body.get("messages"))
    tools = body.get("tools") or None
    if tools is not None and not isinstance(tools, list):
        raise OllamaError(400, "tools must be a list")
    context = {"tools": bool(tools)}

    def prompt(tokenizer):
        return build_chat_prompt(tokenizer, _with_default_system(tokenizer, messages), tools,
                                 _think_kwargs(body))  # fmt: skip

    return _job(prompt, opts), context


def generate_job(body: dict, opts: dict) -> tuple[GenerateJob, dict]:
    text, system = body.get("prompt") or "", body.get("system")
    if not isinstance(text, str) or (system is not None and not isinstance(system, str)):
        raise OllamaError(400, "prompt and system must be strings")
    if body.get("images"):
        raise OllamaError(400, "this model does not support images")
    if body.get("suffix"):
        raise OllamaError(400, "suffix (fill-in-the-middle) is not supported")
    previous = body.get("context") or []
    if not isinstance(previous, list) or not all(isinstance(t, int) for t in previous):
        raise OllamaError(400, "context must be a list of token ids")
    template = body.get("template")
    context: dict = {"tools": False}

    def prompt(tokenizer):
        if body.get("raw") or tokenizer.chat_template is None and not template:
            rendered = text
        else:
            messages = [{"role": "system", "content": system}] if system else []
            messages = _with_default_system(tokenizer, messages + [{"role": "user", "content": text}])
            if template:  # a Go template given with the request, as Ollama allows
                from ominix.engine.gotemplate import Template, TemplateError, ollama_data

                try:
                    rendered = Template(template).render(ollama_data(messages))
                except TemplateError as e:
                    raise ValueError(f"template: {e}") from None
            else:
                rendered = build_chat_prompt(tokenizer, messages, None, _think_kwargs(body))
        if not previous:
            return rendered
        ids = list(previous) + tokenizer.encode(rendered)
        context["prompt_ids"] = ids
        return ids

    return _job(prompt, opts), context


def _job(prompt, opts: dict) -> GenerateJob:
    return GenerateJob(prompts=[prompt], sampling=opts["sampling"], max_tokens=opts["max_tokens"],
                       stop=opts["stop"], response_format=opts["response_format"])  # fmt: skip


def embed_inputs(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise OllamaError(400, "input must be a string or a list of strings")


def _now() -> str:
    return info.rfc3339(time.time())


def _arguments(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


class _Reply:
    """Accumulates one answer and its timings; `piece()` is a streamed chunk's payload."""

    def __init__(self, chat: bool, started: float):
        self.chat, self.t0 = chat, started
        self.content, self.thinking, self.tool_calls, self.tokens = [], [], [], []
        self.first_token = self.prompt_started = None
        self.done_reason, self.eval_count, self.prompt_tokens = "stop", 0, 0

    def piece(self, delta) -> dict | None:
        if delta.content is not None:
            self.content.append(delta.content)
            part = {"content": delta.content}
        elif delta.reasoning is not None:
            self.thinking.append(delta.reasoning)
            part = {"content": "", "thinking": delta.reasoning}
        else:
            call = {"function": {"name": delta.tool_call.name,
                                 "arguments": _arguments(delta.tool_call.arguments)}}
            self.tool_calls.append(call)
            part = {"content": "", "tool_calls": [call]}
        if self.chat:
            return {"message": {"role": "assistant", **part}}
        out = {"response": part["content"]}
        if "thinking" in part:
            out["thinking"] = part["thinking"]
        return out

    def final(self, load_ns: int, context: list[int] | None, whole: bool) -> dict:
        now = time.perf_counter()
        first = self.first_token or now
        out = {"done": True, "done_reason": self.done_reason,
               "total_duration": int((now - self.t0) * 1e9), "load_duration": load_ns,
               "prompt_eval_count": self.prompt_tokens,
               "prompt_eval_duration": int((first - (self.prompt_started or self.t0)) * 1e9),
               "eval_count": self.eval_count, "eval_duration": int((now - first) * 1e9)}  # fmt: skip
        text = "".join(self.content) if whole else ""
        if self.chat:
            message = {"role": "assistant", "content": text}
            if whole and self.thinking:
                message["thinking"] = "".join(self.thinking)
            if whole and self.tool_calls:
                message["tool_calls"] = self.tool_calls
            out["message"] = message
        else:
            out["response"] = text
            if whole and self.thinking:
                out["thinking"] = "".join(self.thinking)
            out["context"] = context or []
        return out


async def _load_only(request: Request, ref, name: str, keep_alive, chat: bool) -> dict:
    """An empty request loads the model (or unloads it with keep_alive 0), as Ollama does."""
    pool, worker = request.app.state.pool, request.app.state.worker
    if keep_alive == 0:
        await asyncio.to_thread(worker.call, lambda: pool.unload(ref.id))
        reason = "unload"
    else:
        ka = "default" if keep_alive is not None and not isinstance(keep_alive, (int, float)) else keep_alive
        future = await asyncio.to_thread(worker.call, lambda: pool.start_load(ref, ka))
        await asyncio.wrap_future(future)
        reason = "load"
    body = {"model": name, "created_at": _now(), "done": True, "done_reason": reason}
    body.update({"message": {"role": "assistant", "content": ""}} if chat else {"response": ""})
    return body


async def run_chat(request: Request, ref, name: str, body: dict, job, context: dict, keep_alive,
                   *, chat: bool, empty: bool):  # fmt: skip
    from ominix.api.common import engine_error, events_until_done, start_job
    from ominix.engine.worker import DEFAULT

    t0 = time.perf_counter()
    stream_out = body.get("stream", True) is not False
    if empty:
        answer = await _load_only(request, ref, name, None if keep_alive is DEFAULT else keep_alive, chat)
        return _ndjson_one(answer) if stream_out else JSONResponse(answer)
    pool = request.app.state.pool
    was_resident = ref.id in pool.resident()
    stream, started = await start_job(request, ref.id, job, keep_alive)
    reply = _Reply(chat, t0)
    reply.prompt_started = time.perf_counter()
    reply.prompt_tokens = started.prompt_tokens
    resident = pool.resident().get(ref.id)
    load_ns = 0 if was_resident or resident is None else int(resident.load_seconds * 1e9)
    parser = ChatOutputParser(context["tools"], in_reasoning=prompt_opens_reasoning(started.text))

    async def events():
        async for event in events_until_done(request, stream, watch=not stream_out):
            if isinstance(event, TokenEvent):
                reply.first_token = reply.first_token or time.perf_counter()
                if not event.final:
                    reply.tokens.append(event.token)
                for delta in parser.feed(event.text):
                    yield reply.piece(delta)
            elif isinstance(event, ChoiceDone):
                for delta in parser.finish():
                    yield reply.piece(delta)
                reply.eval_count = event.completion_tokens
                reply.done_reason = "length" if event.finish_reason == "length" else "stop"
            elif isinstance(event, Failed):
                raise engine_error(event.error)
            elif isinstance(event, Done):
                return

    async def generate_context() -> list[int]:
        """/api/generate's `context`: the prompt's tokens, then the answer's."""
        ids = context.get("prompt_ids")  # set when the request continued an earlier context
        if ids is None and resident is not None:
            from ominix.engine.llm.generate import encode_prompt

            ids = await asyncio.to_thread(encode_prompt, resident.tokenizer, started.text)
        return list(ids or []) + reply.tokens

    if not stream_out:
        async for _ in events():
            pass
        ctx = None if chat else await generate_context()
        return JSONResponse({"model": name, "created_at": _now(), **reply.final(load_ns, ctx, True)})

    async def lines():
        try:
            async for piece in events():
                yield json.dumps({"model": name, "created_at": _now(), **piece, "done": False}) + "\n"
            ctx = None if chat else await generate_context()
            yield json.dumps({"model": name, "created_at": _now(), **reply.final(load_ns, ctx, False)}) + "\n"
        except Exception as e:  # an error after the stream began: Ollama's error line
            yield json.dumps({"error": getattr(e, "message", None) or str(e)}) + "\n"
        finally:
            stream.cancel()

    return StreamingResponse(lines(), media_type="application/x-ndjson")


def _ndjson_one(obj: dict) -> StreamingResponse:
    async def one():
        yield json.dumps(obj) + "\n"

    return StreamingResponse(one(), media_type="application/x-ndjson")
