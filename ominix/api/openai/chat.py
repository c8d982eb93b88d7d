"""POST /v1/chat/completions: a GenerateJob per request, its events turned into OpenAI chat
responses or SSE chunks. Reasoning / tool-call parsing (engine/llm/chat.py) is string work and runs
here, per choice, incrementally for streams."""

from __future__ import annotations

import logging
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from ominix import kinds
from ominix.api.openai import vision
from ominix.api.app import APIError
from ominix.api.prompts import message_chars
from ominix.api.schemas import ChatCompletionRequest
from ominix.api.common import (
    FINGERPRINT, auth, bounded_prompt, chat_logprob, engine_error, events_until_done, keep_alive_of,
    read_request, resolve, sampling_fields, sse, start_job, usage_body,
)
from ominix.engine.llm.chat import ChatOutputParser, Delta, build_chat_prompt, prompt_opens_reasoning
from ominix.engine.llm.jobs import ChoiceDone, GenerateJob, TokenEvent
from ominix.engine.worker import Cancelled, Done, Failed

log = logging.getLogger("ominix.api")
router = APIRouter()


@router.post("/v1/chat/completions", dependencies=auth)
async def chat_completions(request: Request):
    req: ChatCompletionRequest = await read_request(request, ChatCompletionRequest)
    ref = await resolve(request, req.model, ("chat", "vlm"))
    messages = [m.model_dump(exclude_none=True) for m in req.messages]
    images = None
    if vision.has_images(messages):  # image content parts: vision models only (api/openai/vision.py)
        if ref.kind != "vlm":
            raise vision.refuse_images(req.model, kinds.KINDS[ref.kind].noun)
        messages, images = await vision.prepare(ref, messages)
    use_tools = bool(req.tools) and req.tool_choice != "none"
    tools = [t.model_dump(exclude_none=True) for t in req.tools] if use_tools else None
    template_kwargs = req.chat_template_kwargs
    response_format = None
    if req.response_format and req.response_format.type != "text":
        response_format = req.response_format.model_dump(by_alias=True, exclude_none=True)
    parse_tools = use_tools and response_format is None
    if req.tool_choice not in (None, "auto", "none") and not req.tools:
        raise APIError(400, "tool_choice requires tools to be given", param="tool_choice")
    if use_tools and req.tool_choice is not None and req.tool_choice != "auto":
        # "required" or {"type": "function", "function": {"name": ...}}: decode exactly one call.
        name = None if req.tool_choice == "required" else req.tool_choice.function.get("name")
        if req.tool_choice != "required" and not name:
            raise APIError(400, "tool_choice.function.name is required", param="tool_choice")
        response_format = {"type": "tool_call", "tools": tools, "name": name}
        parse_tools = True

    def prompt(tokenizer):
        return build_chat_prompt(tokenizer, messages, tools, template_kwargs)

    job = GenerateJob(
        prompts=[await bounded_prompt(request, ref, prompt, message_chars(messages, tools))],
        sampling=sampling_fields(req, req.logprobs, req.top_logprobs or 0),
        max_tokens=req.token_limit(),
        stop=req.stop_list(),
        n=req.n,
        response_format=response_format,
        images=images,
    )
    stream, started = await start_job(request, ref.id, job, keep_alive_of(req))
    meta = {
        "id": "chatcmpl-" + uuid.uuid4().hex[:24],
        "created": int(time.time()),
        "model": req.model,
        "system_fingerprint": FINGERPRINT,
    }
    in_reasoning = prompt_opens_reasoning(started.text)
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        body = chat_stream(request, stream, started, meta, req, parse_tools, in_reasoning, include_usage)
        return StreamingResponse(body, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return await chat_response(request, stream, started, meta, req, parse_tools, in_reasoning)


def _message_from(deltas: list[Delta]) -> dict:
    content = "".join(d.content for d in deltas if d.content is not None)
    reasoning = "".join(d.reasoning for d in deltas if d.reasoning is not None)
    calls = [d.tool_call for d in deltas if d.tool_call is not None]
    message = {"role": "assistant", "content": content or (None if calls else "")}
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ]
    return message


async def chat_response(request, stream, started, meta, req, parse_tools, in_reasoning):
    parsers: dict[int, ChatOutputParser] = {}
    deltas: dict[int, list[Delta]] = {}
    logprobs: dict[int, list] = {}
    finish: dict[int, str] = {}
    usage = None
    async for event in events_until_done(request, stream):
        if isinstance(event, TokenEvent):
            parser = parsers.setdefault(event.choice, ChatOutputParser(parse_tools, in_reasoning=in_reasoning))
            deltas.setdefault(event.choice, []).extend(parser.feed(event.text))
            if req.logprobs and not event.final and event.logprob is not None:
                logprobs.setdefault(event.choice, []).append(chat_logprob(event))
        elif isinstance(event, ChoiceDone):
            parser = parsers.setdefault(event.choice, ChatOutputParser(parse_tools, in_reasoning=in_reasoning))
            deltas.setdefault(event.choice, []).extend(parser.finish())
            finish[event.choice] = "tool_calls" if parser.tool_calls else event.finish_reason
        elif isinstance(event, Failed):
            raise engine_error(event.error)
        elif isinstance(event, Done):
            usage = event.result
    choices = []
    for i in sorted(finish):
        choices.append({
            "index": i,
            "message": _message_from(deltas.get(i, [])),
            "logprobs": {"content": logprobs.get(i, [])} if req.logprobs else None,
            "finish_reason": finish[i],
        })
    return {**meta, "object": "chat.completion", "choices": choices,
            "usage": usage_body(usage)}


def _chunk_delta(d: Delta, tool_index: int) -> dict:
    if d.content is not None:
        return {"content": d.content}
    if d.reasoning is not None:
        return {"reasoning_content": d.reasoning}
    c = d.tool_call
    return {"tool_calls": [{"index": tool_index, "id": c.id, "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments}}]}


async def chat_stream(request, stream, started, meta, req, parse_tools, in_reasoning, include_usage):
    base = {**meta, "object": "chat.completion.chunk"}
    extra = {"usage": None} if include_usage else {}

    def chunk(index, delta, finish=None, logprobs=None):
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return sse({**base, "choices": [choice], **extra})

    parsers: dict[int, ChatOutputParser] = {}
    pending_logprobs: dict[int, list] = {}
    tool_counts: dict[int, int] = {}

    def emit(index, deltas):
        out = []
        for d in deltas:
            lp = pending_logprobs.pop(index, None)
            out.append(chunk(index, _chunk_delta(d, tool_counts.get(index, 0)),
                             logprobs={"content": lp} if lp else None))
            if d.tool_call is not None:
                tool_counts[index] = tool_counts.get(index, 0) + 1
        return out

    try:
        async for event in events_until_done(request, stream, watch=False):
            if isinstance(event, TokenEvent):
                i = event.choice
                if i not in parsers:
                    parsers[i] = ChatOutputParser(parse_tools, in_reasoning=in_reasoning)
                    yield chunk(i, {"role": "assistant", "content": ""})
                if req.logprobs and not event.final and event.logprob is not None:
                    pending_logprobs.setdefault(i, []).append(chat_logprob(event))
                for text in emit(i, parsers[i].feed(event.text)):
                    yield text
            elif isinstance(event, ChoiceDone):
                i = event.choice
                parser = parsers.setdefault(i, ChatOutputParser(parse_tools, in_reasoning=in_reasoning))
                for text in emit(i, parser.finish()):
                    yield text
                lp = pending_logprobs.pop(i, None)
                reason = "tool_calls" if parser.tool_calls else event.finish_reason
                yield chunk(i, {}, reason, {"content": lp} if lp else None)
            elif isinstance(event, Failed):
                if isinstance(event.error, Cancelled):
                    return
                yield sse({"error": engine_error(event.error).body()})
                return
            elif isinstance(event, Done):
                if include_usage:
                    u = event.result
                    yield sse({**base, "choices": [],
                               "usage": usage_body(u)})
        yield "data: [DONE]\n\n"
    finally:
        stream.cancel()
