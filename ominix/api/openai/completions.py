"""POST /v1/completions, the legacy text-completion route (echo and its prompt logprobs included)."""

from __future__ import annotations

import logging
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from ominix.api.app import APIError
from ominix.api.schemas import CompletionRequest
from ominix.api.common import (
    FINGERPRINT, auth, bounded_prompt, engine_error, events_until_done, keep_alive_of, read_request,
    resolve, sampling_fields, sse, start_job, usage_body,
)
from ominix.engine.llm.jobs import ChoiceDone, GenerateJob, PromptStarted, TokenEvent
from ominix.engine.worker import Cancelled, Done, Failed

log = logging.getLogger("ominix.api")
router = APIRouter()


@router.post("/v1/completions", dependencies=auth)
async def completions(request: Request):
    req: CompletionRequest = await read_request(request, CompletionRequest)
    if req.suffix:
        raise APIError(400, "'suffix' (fill-in-the-middle) is not supported.", param="suffix",
                       code="unsupported_parameter")
    if req.best_of is not None and req.best_of != req.n:
        raise APIError(400, "'best_of' is not supported (other than equal to n).", param="best_of",
                       code="unsupported_parameter")
    ref = await resolve(request, req.model, ("chat", "vlm"))
    want_logprobs = req.logprobs is not None
    prompts = [p if not isinstance(p, str) else await bounded_prompt(request, ref, lambda tok, p=p: p, len(p))
               for p in req.prompts()]
    job = GenerateJob(
        prompts=prompts,
        sampling=sampling_fields(req, want_logprobs, req.logprobs or 0),
        max_tokens=req.max_tokens,
        stop=req.stop_list(),
        n=req.n,
        echo_logprobs=req.echo and want_logprobs,
    )
    stream, started = await start_job(request, ref.id, job, keep_alive_of(req))
    meta = {"id": "cmpl-" + uuid.uuid4().hex[:24], "created": int(time.time()), "model": req.model,
            "system_fingerprint": FINGERPRINT}
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        body = completion_stream(request, stream, started, meta, req, include_usage)
        return StreamingResponse(body, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return await completion_response(request, stream, started, meta, req)


class _LegacyLogprobs:
    """The completions API's logprobs object, grown token by token."""

    def __init__(self):
        self.tokens, self.token_logprobs, self.top_logprobs, self.text_offset = [], [], [], []
        self.offset = 0

    def add(self, token_text: str, logprob, top) -> None:
        self.tokens.append(token_text)
        self.token_logprobs.append(logprob)
        self.top_logprobs.append(dict(top) if top is not None else None)
        self.text_offset.append(self.offset)
        self.offset += len(token_text)

    def body(self) -> dict:
        return {"tokens": self.tokens, "token_logprobs": self.token_logprobs,
                "top_logprobs": self.top_logprobs, "text_offset": self.text_offset}


def _echo_logprobs(started: PromptStarted) -> _LegacyLogprobs:
    lp = _LegacyLogprobs()
    for text, value in started.prompt_logprobs or []:
        lp.add(text, value, None if value is None else {text: value})
    return lp


async def completion_response(request, stream, started, meta, req):
    n = req.n
    texts: dict[int, list[str]] = {}
    logprobs: dict[int, _LegacyLogprobs] = {}
    finish: dict[int, str] = {}
    prompt_started = {0: started}
    usage = None
    want = req.logprobs is not None

    def first_for(choice):
        texts[choice] = [prompt_started[choice // n].text] if req.echo else []
        logprobs[choice] = _echo_logprobs(prompt_started[choice // n]) if want and req.echo else _LegacyLogprobs()

    async for event in events_until_done(request, stream):
        if isinstance(event, PromptStarted):
            prompt_started[event.prompt] = event
        elif isinstance(event, TokenEvent):
            if event.choice not in texts:
                first_for(event.choice)
            texts[event.choice].append(event.text)
            if want and not event.final:
                logprobs[event.choice].add(event.token_text, event.logprob, event.top_logprobs)
        elif isinstance(event, ChoiceDone):
            if event.choice not in texts:
                first_for(event.choice)
            finish[event.choice] = event.finish_reason
        elif isinstance(event, Failed):
            raise engine_error(event.error)
        elif isinstance(event, Done):
            usage = event.result
    choices = [{"index": i, "text": "".join(texts[i]), "logprobs": logprobs[i].body() if want else None,
                "finish_reason": finish[i]} for i in sorted(finish)]
    return {**meta, "object": "text_completion", "choices": choices,
            "usage": usage_body(usage)}


async def completion_stream(request, stream, started, meta, req, include_usage):
    base = {**meta, "object": "text_completion"}
    extra = {"usage": None} if include_usage else {}
    n = req.n
    want = req.logprobs is not None
    prompts = {0: started}
    begun: set[int] = set()

    def chunk(index, text, finish=None, logprobs=None):
        choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}
        return sse({**base, "choices": [choice], **extra})

    try:
        async for event in events_until_done(request, stream, watch=False):
            if isinstance(event, PromptStarted):
                prompts[event.prompt] = event
            elif isinstance(event, TokenEvent):
                i = event.choice
                if i not in begun:
                    begun.add(i)
                    if req.echo:
                        p = prompts[i // n]
                        yield chunk(i, p.text, logprobs=_echo_logprobs(p).body() if want else None)
                lp = None
                if want and not event.final:
                    one = _LegacyLogprobs()
                    one.add(event.token_text, event.logprob, event.top_logprobs)
                    lp = one.body()
                if event.text or lp:
                    yield chunk(i, event.text, logprobs=lp)
            elif isinstance(event, ChoiceDone):
                yield chunk(event.choice, "", event.finish_reason)
            elif isinstance(event, Failed):
                if isinstance(event.error, Cancelled):
                    return
                yield sse({"error": engine_error(event.error).body()})
                return
            elif isinstance(event, Done) and include_usage:
                u = event.result
                yield sse({**base, "choices": [], "usage": usage_body(u)})
        yield "data: [DONE]\n\n"
    finally:
        stream.cancel()
